"""`miniupi bench` and `miniupi audit` as a user runs them (the figures live in docs/BENCHMARKS.md)."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from miniupi.ops.bench import percentile, summary, Result
from miniupi.ops.testing import LocalCluster
from conftest import alive

BENCH = [sys.executable, "-m", "miniupi", "bench"]


def bench_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a user's shell, with the temporary directory where the test can look into it."""
    tmp.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "MINIUPI_CONFIG"}
    return {**env, "TMPDIR": str(tmp), **extra}


def left_behind(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.glob("miniupi-bench-*"))


def test_percentiles_pick_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, .5), percentile(values, .99), percentile(values, 1.0)) == (50.0, 99.0, 100.0)
    assert percentile([], .5) == 0.0


def test_summary_counts_only_acknowledged_payments_in_the_throughput() -> None:
    result = summary([Result(ok=90, failed=10, latencies_ms=[1.0] * 90, elapsed_s=2.0, errors={"ABORTED": 10})], 2.0)
    assert (result["payments"], result["ok"], result["failed"], result["throughput_per_s"]) == (100, 90, 10, 45.0)
    assert set(result["latency_ms"]) == {"p50", "p90", "p99", "p999", "max"}


def test_bench_boots_a_cluster_pays_across_banks_audits_and_leaves_no_folder_behind(tmp_path) -> None:
    tmp = tmp_path / "tmp"
    run = subprocess.run(
        [*BENCH, "--payments", "300", "--concurrency", "8",
         "--accounts", "50", "--banks", "3", "--storage", "json", "--seed", "1", "--json"],
        capture_output=True, text=True, timeout=180, cwd=tmp_path, env=bench_env(tmp))
    assert run.returncode == 0, run.stderr[-2000:]
    assert left_behind(tmp) == []
    result = json.loads(run.stdout)
    assert (result["payments"], result["ok"], result["failed"]) == (300, 300, 0)
    assert result["throughput_per_s"] > 0 and 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["max"]
    assert result["audit_ok"] is True and result["audit_violations"] == []
    assert "seed 1" in run.stderr  # the figure can be reproduced


def test_bench_on_postgres_with_two_gateways_loads_both_reports_cpu_per_process_kind_and_audits() -> None:
    # Run as root, PostgreSQL runs as the postgres user, who must be able to enter the temporary directory.
    tmp = Path(tempfile.mkdtemp(prefix="miniupi-bench-test-"))
    os.chmod(tmp, 0o711)
    try:
        run = subprocess.run(
            [*BENCH, "--payments", "400", "--concurrency", "8", "--accounts", "20", "--storage", "postgres",
             "--bank-storage", "sqlite", "--gateways", "2", "--seed", "1", "--json"],
            capture_output=True, text=True, timeout=240, cwd=tmp, env=bench_env(tmp))
        assert run.returncode == 0, run.stderr[-2000:]
        assert sorted(p.name for p in tmp.iterdir()) == []  # the cluster's folder and PostgreSQL's both gone
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = json.loads(run.stdout)
    assert (result["ok"], result["failed"], result["audit_ok"]) == (400, 0, True)
    assert (result["gateways"], result["storage"], result["bank_storage"]) == (2, "postgres", "sqlite")
    cpu = result["cpu"]
    assert list(cpu["ms_per_payment"]) == ["gateways", "banks", "postgres", "load", "all"]
    assert all(ms > 0 for ms in cpu["ms_per_payment"].values())
    assert cpu["ms_per_payment"]["all"] == pytest.approx(sum(
        ms for kind, ms in cpu["ms_per_payment"].items() if kind != "all"), abs=0.01)
    # Payers start at gateway i % 2, so both replicas carry load.
    assert cpu["seconds"]["gw1"] > 0.1 and cpu["seconds"]["gw2"] > 0.1
    assert result["postgres"]["commits_per_payment"] > 0 and result["postgres"]["wal_syncs_per_payment"] > 0
    assert set(result["load_average_1m"]) == {"before", "after"}


def test_bench_refuses_a_single_bank_in_one_line(tmp_path) -> None:
    run = subprocess.run([sys.executable, "-m", "miniupi", "bench", "--banks", "1"], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.strip().startswith("miniupi:") and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("options, why", [
    (["--payments", "10", "--rate", "5"], "--payments (closed loop) cannot go with --rate or --duration"),
    (["--payments", "10", "--duration", "5"], "--payments (closed loop) cannot go with --rate or --duration"),
    (["--duration", "5"], "--duration needs --rate"),
    (["--live", "--banks", "3"],
     "--banks, --gateways, --storage, --bank-storage and --metrics shape a throw-away cluster"),
    (["--live", "--gateways", "2"], "shape a throw-away cluster; with --live the cluster file does"),
    (["--gateways", "2"], "--gateways 2 needs --storage postgres: several gateways share one store"),
    (["--gateways", "2", "--storage", "json"], "--gateways 2 needs --storage postgres"),
    (["--live", "--storage", "json"], "shape a throw-away cluster"),
    (["--live", "--metrics"], "shape a throw-away cluster"),
    (["--config", "elsewhere.toml"], "drives only with --live"),
    # float() and int() would take these; nan once reached the accounts' funding and raised there.
    (["--rate", "5", "--duration", "nan"], "--duration: not a number above 0"),
    (["--rate", "-5"], "--rate: not a number above 0"),
    (["--rate", "1e3"], "--rate: not a number above 0"),
    (["--accounts", "-1"], "--accounts: not a count"),
    (["--payments", "1_000"], "--payments: not a count"),
])
def test_bench_refuses_contradictory_or_malformed_options_in_one_line_and_boots_nothing(
        tmp_path, options, why) -> None:
    tmp = tmp_path / "tmp"
    run = subprocess.run([*BENCH, *options], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                         env=bench_env(tmp))
    assert run.returncode == 2
    assert run.stderr.startswith("miniupi: ") and why in run.stderr and len(run.stderr.splitlines()) == 1
    assert run.stdout == "" and left_behind(tmp) == []


def test_bench_interrupted_stops_its_cluster_and_removes_its_folder(tmp_path) -> None:
    tmp = tmp_path / "tmp"
    err = tmp_path / "stderr"
    with open(err, "w") as stderr:
        # An open loop long enough to be interrupted in the middle of its load.
        proc = subprocess.Popen([*BENCH, "--rate", "20", "--duration", "120", "--concurrency", "2",
                                 "--accounts", "4", "--seed", "1", "--json"], stdout=subprocess.DEVNULL, stderr=stderr,
                                cwd=tmp_path, env=bench_env(tmp), start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "bench: opened" not in err.read_text():
            assert proc.poll() is None, err.read_text()[-2000:]
            assert time.monotonic() < deadline, "the bench never got to its load"
            time.sleep(0.2)
        [folder] = left_behind(tmp)
        supervisord_pid = int((tmp / folder / "data" / "supervisord.pid").read_text())
        proc.send_signal(signal.SIGINT)  # Ctrl-C, to the bench alone: it must stop what it started itself
        assert proc.wait(60) == 130
        assert not alive(supervisord_pid)  # checked before the clean-up below could kill it
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever the bench left running, on a failure
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert left_behind(tmp) == []
    assert "miniupi: interrupted" in err.read_text()


def audited(cluster: LocalCluster) -> dict:
    run = cluster.cli("audit", "--json", "--wait", "5")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_bench_drives_a_running_cluster_only_with_live_and_says_what_it_leaves_there(tmp_path) -> None:
    tmp = tmp_path / "tmp"
    with LocalCluster(tmp_path / "cluster") as cluster:
        before = audited(cluster)
        small = ["--payments", "20", "--concurrency", "2", "--accounts", "3", "--seed", "1", "--json"]

        # $MINIUPI_CONFIG names the running cluster; without --live it is left alone.
        run = subprocess.run([*BENCH, *small], capture_output=True, text=True, timeout=180, cwd=tmp_path,
                             env=bench_env(tmp, MINIUPI_CONFIG=str(cluster.config_path)))
        assert run.returncode == 0, run.stderr[-2000:]
        assert "benched only with --live" in run.stderr
        assert json.loads(run.stdout)["ok"] == 20
        assert audited(cluster)["accounts"] == before["accounts"] and left_behind(tmp) == []

        run = subprocess.run([*BENCH, "--live", *small], capture_output=True, text=True, timeout=180,
                             cwd=tmp_path, env=bench_env(tmp, MINIUPI_CONFIG=str(cluster.config_path)))
        assert run.returncode == 0, run.stderr[-2000:]
        result = json.loads(run.stdout)
        assert (result["ok"], result["audit_ok"]) == (20, True)
        [warning] = [line for line in run.stderr.splitlines() if "--live" in line]
        opened = re.search(r"opening 6 accounts \((bench_[0-9a-f]{8}_)0 to \1(2) at bank_a, bank_b\) "
                           r"in the running cluster of (\S+), and issuing (\S+) INR", warning)
        assert opened, warning
        assert Path(opened.group(3)) == cluster.config_path.resolve()
        after = audited(cluster)
        assert after["ok"] and after["accounts"] == before["accounts"] + 6
        # The figure in the warning is exactly what the treasury issued: 6 accounts, 20 paise each.
        assert opened.group(4) == "1.20" and after["issued_minor"] - before["issued_minor"] == 120
        assert left_behind(tmp) == []  # nothing was booted


def test_bench_with_metrics_gives_every_node_a_metrics_port_of_its_own() -> None:
    from miniupi.ops.bench import bench_spec

    spec = bench_spec(3, "sqlite", metrics=True)
    ports = [spec["gateway"]["metrics_port"], *(bank["metrics_port"] for bank in spec["banks"].values())]
    assert len(set(ports)) == 4 and all(0 < port < 65536 for port in ports)
    assert "metrics_port" not in bench_spec(2, "sqlite")["gateway"]
