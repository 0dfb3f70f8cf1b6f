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
from collections.abc import Iterator
from pathlib import Path

import pytest
from supervisor.options import ServerOptions

from miniupi import supervision
from miniupi.config import ClusterConfig, parse_config
from miniupi.supervision import ClusterRunning, Supervisor, SupervisorUnavailable
from conftest import wait_for


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


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


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
        assert program.autorestart and program.startretries == 1000
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
    monkeypatch.setattr(os, "execv", _no_exec)
    with pytest.raises(ClusterRunning, match=rf"cluster already running \(pid {proc.pid}\)"):
        supervision.run(sup.cluster)
    assert sup.is_running()


def test_run_clears_a_stale_socket_and_execs_supervisord(
    cluster: ClusterConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sock = supervision.socket_path(cluster)
    _stale_socket(sock)
    execs: list[list[str]] = []

    def fake_execv(path: str, argv: list[str]) -> None:
        execs.append(list(argv))
        raise _Exec

    monkeypatch.setattr(os, "execv", fake_execv)
    with pytest.raises(_Exec):
        supervision.run(cluster)
    assert execs == [supervision.supervisord_argv(cluster)]
    assert not sock.exists()
    assert (cluster.data_dir / "supervisord.conf").exists()
    out = capsys.readouterr().out
    assert "gateway  127.0.0.1:50050" in out and "bank_b   127.0.0.1:50052" in out
    assert "Ctrl-C" in out


class _Exec(Exception):
    """Stands in for os.execv so a broken run() cannot replace the test process."""


def _no_exec(path: str, argv: list[str]) -> None:
    raise _Exec(argv)


def _stale_socket(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # bound but never listening, like one a dead process left
