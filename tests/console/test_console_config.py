"""The [console] table and `miniupi console`'s refusals: loopback unless the operator says public, one line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

from miniupi.config import CONSOLE_PORT, ConfigError, ConsoleConfig, load_config, parse_config
from miniupi.ops.supervision import program_names, write_supervisord_conf

ROOT = Path(__file__).resolve().parent.parent.parent
MINIMAL = {"cluster": {}, "gateway": {"port": 1}, "banks": {"bank_a": {"port": 2}}}


def test_the_demo_cluster_runs_a_console_on_loopback() -> None:
    cluster = load_config(ROOT / "config" / "cluster.toml")
    assert cluster.console == ConsoleConfig(host="127.0.0.1", port=8700, public=False)
    assert program_names(cluster)[-1] == "console"


def test_an_empty_console_table_listens_on_loopback_at_the_default_port() -> None:
    cluster = parse_config({**MINIMAL, "console": {}}, Path("c.toml"))
    assert cluster.console == ConsoleConfig(host="127.0.0.1", port=CONSOLE_PORT, public=False)
    assert cluster.console.url == f"http://127.0.0.1:{CONSOLE_PORT}/"
    assert parse_config(MINIMAL, Path("c.toml")).console is None  # no table: `run` runs no console
    for host in ("localhost", "::1", "127.0.0.2"):
        assert parse_config({**MINIMAL, "console": {"host": host}}, Path("c.toml")).console.host == host
    assert parse_config({**MINIMAL, "console": {"host": "::1"}}, Path("c.toml")).console.url.startswith("http://[::1]:")


@pytest.mark.parametrize("console, words", [
    ({"host": "0.0.0.0"}, ["c.toml", "console.host", "loopback", "public = true"]),
    ({"host": "192.168.1.5"}, ["console.host", "loopback"]),
    ({"host": "console.example.com"}, ["console.host", "loopback"]),
    ({"public": "yes"}, ["console.public", "true or false"]),
    ({"port": 0}, ["console.port", "port number"]),
    ({"port": 1}, ["gateway and console both use 127.0.0.1:1"]),
    ({"prot": 8000}, ["console.prot", "unknown key"]),
])
def test_a_wrong_console_table_is_one_line_naming_the_key(console: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({**MINIMAL, "console": console}, Path("c.toml"))
    assert all(w in str(e.value) for w in words), str(e.value)
    assert "\n" not in str(e.value)


def test_beyond_loopback_only_when_the_file_says_public() -> None:
    cluster = parse_config({**MINIMAL, "console": {"host": "0.0.0.0", "public": True}}, Path("c.toml"))
    assert cluster.console == ConsoleConfig(host="0.0.0.0", port=CONSOLE_PORT, public=True)


def test_no_node_may_take_the_console_programs_name() -> None:
    spec = {**MINIMAL, "banks": {"console": {"port": 2}}, "console": {}}
    with pytest.raises(ConfigError, match="banks.console"):
        parse_config(spec, Path("c.toml"))
    parse_config({**MINIMAL, "banks": {"console": {"port": 2}}}, Path("c.toml"))  # without a console, it may


def test_run_supervises_the_console_after_every_node(tmp_path: Path) -> None:
    cluster = parse_config({**MINIMAL, "cluster": {"data_dir": str(tmp_path)}, "console": {}}, tmp_path / "c.toml")
    conf = write_supervisord_conf(cluster).read_text()
    program = conf[conf.index("[program:console]"):]
    assert f"-m miniupi console {tmp_path / 'c.toml'}" in program
    assert "priority = 300" in program and "autorestart = unexpected" in program
    assert "programs = gateway,bank_a,console" in conf


def console(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "miniupi", "console", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd, stdin=subprocess.DEVNULL)


def one_line_refusal(r: subprocess.CompletedProcess[str], code: int) -> str:
    assert r.returncode == code, (r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("miniupi: "), r.stderr
    return lines[0]


def test_the_console_refuses_to_listen_beyond_loopback_unless_told(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps({**MINIMAL, "cluster": {"data_dir": str(tmp_path / "data")}}))
    line = one_line_refusal(console(str(path), "--host", "0.0.0.0", cwd=tmp_path), 2)
    assert "loopback" in line and "--public" in line
    path.write_text(tomli_w.dumps({**MINIMAL, "cluster": {"data_dir": str(tmp_path / "data")},
                                   "console": {"host": "0.0.0.0"}}))
    line = one_line_refusal(console(str(path), cwd=tmp_path), 2)
    assert "console.host" in line and "public = true" in line
    assert not (tmp_path / "data").exists()  # refused before it made its key or anything else


def test_a_port_taken_is_one_line_and_the_exit_of_a_program_that_cannot_start(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "c.toml"
        path.write_text(tomli_w.dumps({**MINIMAL, "cluster": {"data_dir": str(tmp_path / "data")},
                                       "console": {"port": port}}))
        line = one_line_refusal(console(str(path), cwd=tmp_path), 3)
    assert f"console cannot listen on 127.0.0.1:{port}" in line


def test_the_console_key_is_made_once_readable_by_its_owner_alone(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps({**MINIMAL, "cluster": {"data_dir": str(tmp_path / "data")}, "console": {}}))
    first = console(str(path), "--url", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    key = (tmp_path / "data" / "console.token")
    assert key.stat().st_mode & 0o777 == 0o600
    assert first.stdout.strip() == f"http://127.0.0.1:{CONSOLE_PORT}/?token={key.read_text().strip()}"
    assert console(str(path), "--url", cwd=tmp_path).stdout == first.stdout  # kept: a restart signs no page out
    key.chmod(0o644)
    line = one_line_refusal(console(str(path), "--url", cwd=tmp_path), 2)
    assert "open to others" in line and "chmod 600" in line
