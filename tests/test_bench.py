"""`miniupi bench` and `miniupi audit` as a user runs them (the figures live in docs/BENCHMARKS.md)."""
from __future__ import annotations

import json
import subprocess
import sys

from miniupi.ops.bench import percentile, summary, Result


def test_percentiles_pick_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, .5), percentile(values, .99), percentile(values, 1.0)) == (50.0, 99.0, 100.0)
    assert percentile([], .5) == 0.0


def test_summary_counts_only_acknowledged_payments_in_the_throughput() -> None:
    result = summary([Result(ok=90, failed=10, latencies_ms=[1.0] * 90, elapsed_s=2.0, errors={"ABORTED": 10})], 2.0)
    assert (result["payments"], result["ok"], result["failed"], result["throughput_per_s"]) == (100, 90, 10, 45.0)
    assert set(result["latency_ms"]) == {"p50", "p90", "p99", "p999", "max"}


def test_bench_boots_a_cluster_pays_across_banks_and_audits(tmp_path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "miniupi", "bench", "--payments", "300", "--concurrency", "8",
         "--accounts", "50", "--banks", "3", "--storage", "json", "--seed", "1", "--json"],
        capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    assert (result["payments"], result["ok"], result["failed"]) == (300, 300, 0)
    assert result["throughput_per_s"] > 0 and 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["max"]
    assert result["audit_ok"] is True and result["audit_violations"] == []
    assert "seed 1" in run.stderr  # the figure can be reproduced


def test_bench_refuses_a_single_bank_in_one_line(tmp_path) -> None:
    run = subprocess.run([sys.executable, "-m", "miniupi", "bench", "--banks", "1"], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.strip().startswith("miniupi:") and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
