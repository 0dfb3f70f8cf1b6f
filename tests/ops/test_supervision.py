"""supervision.py against a real supervisord, with stand-in nodes.

The nodes are tiny Python processes, so these tests check the supervision
(config, restarts, stop/start, clean shutdown) and not the nodes themselves.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tomli_w
from supervisor.datatypes import RestartWhenExitUnexpected
from supervisor.options import ServerOptions

from miniupi.ops import supervision
from miniupi.config import ClusterConfig, parse_config
from miniupi.ops.supervision import ClusterRunning, Supervisor, SupervisorUnavailable
from miniupi.ops.testing import LocalCluster
from conftest import alive, PLUGIN_DIR, wait_for



# Exits by itself once orphaned (checked every second), so a test that dies
# half-way leaks nothing for long, yet a supervisord that forgot to stop its
# nodes is still caught the moment it exits.
STAND_IN = """\
import os, time
parent = os.getppid()
while os.getppid() == parent:
    time.sleep(1)
"""
NODES = ["gateway", "bank_a", "bank_b"]


@pytest.fixture
def cluster() -> Iterator[ClusterConfig]:
    # Short, for the socket path; '%' and ' ' exercise the config escaping.
    tmp = Path(tempfile.mkdtemp(prefix="mu% "))
    raw = {
        "cluster": {"data_dir": str(tmp / "data")},
        "gateway": {"port": 50050},
        "banks": {"bank_a": {"port": 50051}, "bank_b": {"port": 50052}},
    }
    try:
        yield parse_config(raw, tmp / "cluster.toml")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def supervised(cluster: ClusterConfig, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[subprocess.Popen, Supervisor]]:
    """supervisord started the way run() starts it, with every stand-in RUNNING."""
    # In the cluster's temp dir, so the command carries its '%' and ' ' too.
    script = cluster.path.parent / "stand_in.py"
    script.write_text(STAND_IN)
    monkeypatch.setattr(supervision, "node_command", lambda cluster, node: [sys.executable, str(script)])
    supervision.write_supervisord_conf(cluster)
    out = open(cluster.data_dir / "foreground.log", "wb")
    proc = subprocess.Popen(supervision.supervisord_argv(cluster), stdout=out, stderr=subprocess.STDOUT)
    sup = Supervisor(cluster)
    try:
        wait_for("every node RUNNING", lambda: sup.is_running() and all(s.state == "RUNNING" for s in sup.status()),
                 timeout_s=10)
        yield proc, sup
    finally:
        # SIGKILL, not SIGTERM: a clean shutdown costs supervisord ~2 s of poll
        # ticks, and test_sigterm_... checks that path once.
        pids = [s.pid for s in sup.status() if s.pid] if sup.is_running() else []
        proc.kill()
        proc.wait(timeout=10)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        out.close()


def test_conf_has_a_program_per_node_that_supervisor_reads_back(cluster: ClusterConfig) -> None:
    conf = supervision.write_supervisord_conf(cluster)
    assert conf == cluster.data_dir / "supervisord.conf"
    assert cluster.data_dir.stat().st_mode & 0o777 == 0o700

    options = ServerOptions()
    options.realize(args=["-c", str(conf)])
    assert [g.name for g in options.process_group_configs] == [supervision.GROUP]
    programs = {p.name: p for g in options.process_group_configs for p in g.process_configs}
    assert sorted(programs) == sorted(NODES)
    for name, program in programs.items():
        # Round-trips despite the '%' and ' ' in the paths.
        assert shlex.split(program.command) == supervision.node_command(cluster, cluster.node(name))
        assert program.directory == os.getcwd()
        # Restarted after any exit but a refusal to start; FATAL after a few quick exits in a row.
        assert program.autorestart is RestartWhenExitUnexpected
        assert program.exitcodes == list(supervision.REFUSED_EXIT_CODES)
        assert (program.startsecs, program.startretries) == (supervision.STARTSECS, supervision.START_RETRIES)
        assert program.stderr_logfile == str(supervision.stderr_path(cluster, cluster.node(name)))
        assert program.stopasgroup and program.killasgroup
        assert program.environment["PYTHONUNBUFFERED"] == "1"
    assert options.server_configs[0]["file"] == str(supervision.socket_path(cluster))
    assert options.logfile == str(cluster.data_dir / "supervisord.log")


def test_conf_refuses_what_supervisor_would_misread(cluster: ClusterConfig) -> None:
    # ';' after a space starts a comment in supervisor's ini, even in quotes.
    odd = parse_config({**cluster.raw, "cluster": {"data_dir": str(cluster.data_dir) + " ;x"}}, cluster.path)
    with pytest.raises(supervision.SupervisionError, match="cannot write"):
        supervision.write_supervisord_conf(odd)


def test_node_command_runs_miniupi_with_the_cluster_file(cluster: ClusterConfig) -> None:
    gateway = supervision.node_command(cluster, cluster.gateway)
    bank = supervision.node_command(cluster, cluster.node("bank_a"))
    assert gateway == [sys.executable, "-m", "miniupi", "gateway", "--config", str(cluster.path)]
    assert bank == [sys.executable, "-m", "miniupi", "bank", "--name", "bank_a", "--config", str(cluster.path)]


def test_each_gateway_is_a_program_of_its_own_told_which_one_it_is(cluster: ClusterConfig) -> None:
    replicated = parse_config({**{k: v for k, v in cluster.raw.items() if k != "gateway"},
                               "gateways": {"gw1": {"port": 50050}, "gw2": {"port": 50060}}}, cluster.path)
    options = ServerOptions()
    options.realize(args=["-c", str(supervision.write_supervisord_conf(replicated))])
    programs = {p.name: p for g in options.process_group_configs for p in g.process_configs}
    assert sorted(programs) == ["bank_a", "bank_b", "gw1", "gw2"]
    assert shlex.split(programs["gw2"].command) == [
        sys.executable, "-m", "miniupi", "gateway", "--name", "gw2", "--config", str(cluster.path)]
    # Banks are spawned first, and every gateway is signalled before them.
    assert programs["gw1"].priority == programs["gw2"].priority > programs["bank_a"].priority


def test_socket_path_falls_back_to_a_short_stable_name(cluster: ClusterConfig) -> None:
    assert supervision.socket_path(cluster) == cluster.data_dir / "supervisor.sock"
    deep = parse_config({**cluster.raw, "cluster": {"data_dir": "/tmp/" + "d" * 120}}, cluster.path)
    path = supervision.socket_path(deep)
    assert path.parent == Path(tempfile.gettempdir())
    assert len(os.fsencode(path)) <= supervision.MAX_SOCKET_PATH
    assert path == supervision.socket_path(deep)


def test_status_lists_every_node_running(supervised: tuple[subprocess.Popen, Supervisor]) -> None:
    _, sup = supervised
    status = sup.status()
    assert [s.name for s in status] == NODES
    assert [s.address for s in status] == ["127.0.0.1:50050", "127.0.0.1:50051", "127.0.0.1:50052"]
    for s in status:
        assert s.state == "RUNNING"
        assert s.pid is not None and alive(s.pid)
        assert s.pid == sup.pid(s.name)
        assert "uptime" in s.description


def test_stop_then_start_a_node(supervised: tuple[subprocess.Popen, Supervisor]) -> None:
    _, sup = supervised
    old = sup.pid("bank_a")
    assert old is not None

    sup.stop("bank_a")
    assert {s.name: s.state for s in sup.status()}["bank_a"] == "STOPPED"
    assert sup.pid("bank_a") is None
    assert not alive(old)
    sup.stop("bank_a")  # already stopped: nothing to do

    sup.start("bank_a")
    new = sup.pid("bank_a")
    assert {s.name: s.state for s in sup.status()}["bank_a"] == "RUNNING"
    assert new is not None and new != old and alive(new)
    sup.start("bank_a")  # already running: nothing to do
    assert sup.pid("bank_a") == new

    sup.restart("bank_a")
    assert sup.pid("bank_a") not in (None, new)


def test_a_killed_node_is_restarted(supervised: tuple[subprocess.Popen, Supervisor]) -> None:
    _, sup = supervised
    old = sup.pid("gateway")
    assert old is not None
    os.kill(old, signal.SIGKILL)

    def restarted() -> bool:
        status = {s.name: s for s in sup.status()}["gateway"]
        return status.state == "RUNNING" and status.pid not in (None, old)

    wait_for("the gateway to be restarted", restarted, timeout_s=10)
    assert alive(sup.pid("gateway") or 0)


def test_sigterm_stops_every_node_and_supervisord(supervised: tuple[subprocess.Popen, Supervisor]) -> None:
    proc, sup = supervised
    pids = [s.pid for s in sup.status()]
    assert all(pids)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert [pid for pid in pids if pid and alive(pid)] == []
    assert not sup.is_running()
    with pytest.raises(SupervisorUnavailable):
        sup.status()


def test_unknown_node_names_the_known_ones(supervised: tuple[subprocess.Popen, Supervisor]) -> None:
    _, sup = supervised
    with pytest.raises(ValueError, match="gateway, bank_a, bank_b"):
        sup.stop("bank_z")


def test_no_supervisor_means_unavailable(cluster: ClusterConfig) -> None:
    sup = Supervisor(cluster)
    expected = (
        f"cluster not running (no supervisor at {supervision.socket_path(cluster)}); "
        f"start it with: miniupi run {cluster.path}"
    )
    assert not sup.is_running()
    for call in (sup.status, lambda: sup.start("gateway"), lambda: sup.stop("bank_a"), lambda: sup.pid("gateway")):
        with pytest.raises(SupervisorUnavailable) as caught:
            call()
        assert str(caught.value) == expected

    # A socket left behind by a killed supervisord: there, but nobody answers.
    _stale_socket(supervision.socket_path(cluster))
    with pytest.raises(SupervisorUnavailable, match="cluster not running"):
        sup.status()


def test_run_refuses_a_second_supervisor(
    supervised: tuple[subprocess.Popen, Supervisor], monkeypatch: pytest.MonkeyPatch
) -> None:
    proc, sup = supervised
    monkeypatch.setattr(supervision, "_spawn", _no_spawn)
    with pytest.raises(ClusterRunning, match=rf"cluster already running \(pid {proc.pid}\)"):
        supervision.run(sup.cluster)
    assert sup.is_running()


def test_run_clears_a_stale_socket_and_spawns_supervisord(
    cluster: ClusterConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sock = supervision.socket_path(cluster)
    _stale_socket(sock)
    spawned: list[list[str]] = []

    def fake_spawn(argv: list[str]) -> None:
        spawned.append(list(argv))
        raise _Spawn

    monkeypatch.setattr(supervision, "_spawn", fake_spawn)
    with pytest.raises(_Spawn):
        supervision.run(cluster)
    assert spawned == [supervision.supervisord_argv(cluster)]
    assert not sock.exists()
    assert (cluster.data_dir / "supervisord.conf").exists()
    out = capsys.readouterr().out
    assert "gateway  127.0.0.1:50050" in out and "bank_b   127.0.0.1:50052" in out
    assert "Ctrl-C" in out


class _Spawn(Exception):
    """Stands in for starting supervisord, so run() stops there."""


def _no_spawn(argv: list[str]) -> None:
    raise _Spawn(argv)


def _no_exec(path: str, argv: list[str]) -> None:
    raise _Spawn(argv)


def test_a_node_killed_again_and_again_just_after_it_started_is_restarted_each_time(
        supervised: tuple[subprocess.Popen, Supervisor]) -> None:
    """Only a node that says it cannot start is given up on; one killed within its first second,
    more times in a row than supervisord's startretries, comes back each time."""
    _, sup = supervised
    for _ in range(supervision.START_RETRIES + 2):
        old = sup.pid("bank_a")
        assert old is not None
        os.kill(old, signal.SIGKILL)
        wait_for("bank_a to be restarted", lambda: sup.pid("bank_a") not in (None, old), timeout_s=10)
    wait_for("bank_a RUNNING", lambda: {s.name: s.state for s in sup.status()}["bank_a"] == "RUNNING",
             timeout_s=10)


# Refuses to start as a node does (cli.main): one line on stderr, then exit 3 (NodeStartError).
REFUSER = """\
import sys, time
time.sleep(SLEEP)
print("miniupi: bank_b: refusing to start: the store is damaged", file=sys.stderr)
sys.exit(3)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sleep_s", [0, 1.5], ids=["refuses-at-once", "refuses-late"])
def test_run_stops_everything_and_names_a_node_that_cannot_start(
        cluster: ClusterConfig, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
        sleep_s: float) -> None:
    """However soon or late a node refuses, run stops every node at once and quotes its line."""
    scripts = cluster.path.parent
    (scripts / "stand_in.py").write_text(STAND_IN)
    (scripts / "refuser.py").write_text(REFUSER.replace("SLEEP", str(sleep_s)))
    monkeypatch.setattr(supervision, "node_command", lambda cluster, node: [
        sys.executable, str(scripts / ("refuser.py" if node.name == "bank_b" else "stand_in.py"))])
    monkeypatch.setattr(os, "execv", _no_exec)  # a run() that replaced its process would take pytest along
    started = time.monotonic()
    with pytest.raises(supervision.NodeFailedToStart) as failed:
        supervision.run(cluster)
    assert time.monotonic() - started < 30
    assert str(failed.value) == "bank_b failed to start: bank_b: refusing to start: the store is damaged"
    assert not Supervisor(cluster).is_running()
    assert "refusing to start" in capfd.readouterr().err  # the node's stderr was shown as it came
    assert _processes_running(str(scripts)) == []


def damage_snapshot(local: LocalCluster) -> str:
    snapshot = local.config.data_dir / "bank_b" / "snapshot.json"
    snapshot.parent.mkdir(parents=True)
    snapshot.write_text("this is not a snapshot\n")
    return f"bank_b: refusing to start: {snapshot}: not a snapshot this store wrote"


def use_broken_storage(local: LocalCluster) -> str:
    spec = tomllib.loads(local.config_path.read_text())
    spec["banks"]["bank_b"]["storage"] = "broken"
    spec["plugins"] = {"load": ["broken_storage"]}
    local.config_path.write_text(tomli_w.dumps(spec))
    return "crashed while starting: RuntimeError: this store has a bug"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("spoil", [damage_snapshot, use_broken_storage], ids=["damaged-store", "bug-at-start"])
def test_miniupi_run_exits_with_the_error_of_a_bank_that_cannot_start(
        tmp_path: Path, spoil: Callable[[LocalCluster], str]) -> None:
    """The real command and nodes: no crash loop, one line naming the node and its error, nothing left."""
    local = LocalCluster(tmp_path, {"cluster": {}, "gateway": {}, "banks": {"bank_a": {}, "bank_b": {"storage": "json"}}})
    error = spoil(local)
    proc = subprocess.Popen([sys.executable, "-m", "miniupi", "run", str(local.config_path)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(PLUGIN_DIR)})
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:  # a crash loop: stop it as Ctrl-C would, then look for leftovers
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert err.splitlines()[-1] == f"miniupi: bank_b failed to start: {error}"
    assert _processes_running(str(local.config_path)) == []
    assert not local.supervisor.is_running()


def _processes_running(text: str) -> list[int]:
    """Pids of live processes whose command line mentions `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _stale_socket(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # bound but never listening, like one a dead process left
