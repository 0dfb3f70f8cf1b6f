"""The registry: storage and auth kinds chosen by name, refused before anything starts.

A name or a plugin setting that no plugin provides is one line naming the
file, the node, the key, the bad name and what exists; `miniupi run`,
`miniupi bank` and `miniupi gateway` exit 2 on it having started and
created nothing: no supervisord, no node, no data or certificate directory.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from miniupi.config import ConfigError, parse_config
from miniupi.contract.manager import PluginError
from miniupi.contract.registry import PluginChoiceError, Register, StorageKind, check_plugins
from miniupi.ops.supervision import socket_path
from conftest import PLUGIN_DIR

COMMANDS = {
    "run": ["run"],
    "bank": ["bank", "--name", "bank_a"],
    "gateway": ["gateway"],
}
# (where in the spec, key, bad name, the line's middle)
TYPOS = {
    "bank auth": ("bank_a", "auth", "sesion", "banks.bank_a.auth: no auth plugin named 'sesion' (have: session)"),
    "bank storage": ("bank_b", "storage", "sqlit",
                     "banks.bank_b.storage: no storage plugin named 'sqlit' (have: json, postgres, sqlite)"),
    "gateway auth": ("gateway", "auth", "none", "gateway.auth: no auth plugin named 'none' (have: session)"),
    "gateway storage": ("gateway", "storage", "jsn",
                        "gateway.storage: no storage plugin named 'jsn' (have: json, postgres, sqlite)"),
}


def spec(tmp_path: Path) -> dict[str, Any]:
    return {
        "cluster": {"data_dir": str(tmp_path / "data"), "certs_dir": str(tmp_path / "certs")},
        "gateway": {"port": 1},
        "banks": {"bank_a": {"port": 2}, "bank_b": {"port": 3, "storage": "json"}},
    }


def node_table(raw: dict[str, Any], where: str) -> dict[str, Any]:
    return raw["gateway"] if where == "gateway" else raw["banks"][where]


@pytest.mark.parametrize("typo", list(TYPOS))
def test_an_unknown_kind_names_the_file_node_key_name_and_what_exists(tmp_path: Path, typo: str) -> None:
    where, key, bad, line = TYPOS[typo]
    raw = spec(tmp_path)
    node_table(raw, where)[key] = bad
    with pytest.raises(PluginChoiceError) as refused:
        check_plugins(parse_config(raw, tmp_path / "c.toml"))
    assert str(refused.value) == f"{tmp_path / 'c.toml'}: {line}"


@pytest.mark.parametrize(("table", "line"), [
    ({"compact_aftr": 5}, "banks.bank_b.json.compact_aftr: no setting 'compact_aftr' for the json plugin "
                          "(it has: compact_after, journal_share)"),
    ({"compact_after": 0}, "banks.bank_b.json.compact_after: expected a whole number, at least 1"),
    ({"compact_after": 2.5}, "banks.bank_b.json.compact_after: expected a whole number, at least 1"),
    ({"journal_share": float("nan")}, "banks.bank_b.json.journal_share: expected a number, at least 0"),
])
def test_a_plugin_setting_is_checked_against_what_the_plugin_declares(
        tmp_path: Path, table: dict[str, Any], line: str) -> None:
    raw = spec(tmp_path)
    raw["banks"]["bank_b"]["json"] = table
    with pytest.raises(PluginChoiceError) as refused:
        check_plugins(parse_config(raw, tmp_path / "c.toml"))
    assert str(refused.value) == f"{tmp_path / 'c.toml'}: {line}"


def test_settings_of_a_plugin_the_node_does_not_use_are_an_unknown_table_naming_its_kinds(tmp_path: Path) -> None:
    raw = spec(tmp_path)
    raw["banks"]["bank_a"]["json"] = {"compact_after": 5}  # bank_a stores in sqlite
    with pytest.raises(ConfigError, match=r"unknown table 'banks\.bank_a\.json': .* its storage or auth kind "
                                          r"\(sqlite, session\)"):
        parse_config(raw, tmp_path / "c.toml")


def test_a_plugin_without_settings_takes_none(tmp_path: Path) -> None:
    raw = spec(tmp_path)
    raw["gateway"]["session"] = {"idle": 5}
    with pytest.raises(PluginChoiceError, match=r"gateway\.session\.idle: no setting 'idle' for the session "
                                                r"plugin \(it has none\)"):
        check_plugins(parse_config(raw, tmp_path / "c.toml"))


def test_two_plugins_may_not_register_one_name() -> None:
    register = Register()
    register.add_storage(StorageKind("sqlite", lambda node, path, settings: None))  # type: ignore[arg-type,return-value]
    with pytest.raises(PluginError, match="two plugins register the storage kind 'sqlite'"):
        register.add_storage(StorageKind("sqlite", lambda node, path, settings: None))  # type: ignore[arg-type,return-value]


def test_a_plugin_from_the_cluster_file_adds_its_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    raw = spec(tmp_path)
    raw["banks"]["bank_a"]["auth"] = "open"
    raw["plugins"] = {"load": ["open_auth"]}
    plugins = check_plugins(parse_config(raw, tmp_path / "c.toml"))
    assert sorted(plugins.kinds.auth) == ["open", "session"]


# -- the commands ---------------------------------------------------------------


def miniupi(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a miniupi command; one that does not stop by itself is killed with its process group."""
    proc = subprocess.Popen([sys.executable, "-m", "miniupi", *args], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, **(env or {})})
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def assert_refused_having_started_nothing(tmp_path: Path, result: subprocess.CompletedProcess[str],
                                          line: str) -> None:
    config = parse_config(spec(tmp_path), tmp_path / "c.toml")
    assert (result.returncode, result.stderr) == (2, f"miniupi: {tmp_path / 'c.toml'}: {line}\n")
    assert not config.data_dir.exists() and not config.certs_dir.exists()
    assert not socket_path(config).exists()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("typo", list(TYPOS))
def test_each_command_refuses_an_unknown_kind_before_starting_anything(
        tmp_path: Path, command: str, typo: str) -> None:
    where, key, bad, line = TYPOS[typo]
    raw = spec(tmp_path)
    node_table(raw, where)[key] = bad
    (tmp_path / "c.toml").write_text(tomli_w.dumps(raw))
    result = miniupi(tmp_path, *COMMANDS[command], "--config", str(tmp_path / "c.toml"))
    assert_refused_having_started_nothing(tmp_path, result, line)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_refuses_an_unknown_plugin_setting_before_starting_anything(
        tmp_path: Path, command: str) -> None:
    raw = spec(tmp_path)
    raw["banks"]["bank_b"]["json"] = {"compact_aftr": 5}
    (tmp_path / "c.toml").write_text(tomli_w.dumps(raw))
    result = miniupi(tmp_path, *COMMANDS[command], "--config", str(tmp_path / "c.toml"))
    assert_refused_having_started_nothing(
        tmp_path, result, "banks.bank_b.json.compact_aftr: no setting 'compact_aftr' for the json plugin "
                          "(it has: compact_after, journal_share)")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_refuses_a_misnamed_plugin_table_before_starting_anything(
        tmp_path: Path, command: str) -> None:
    """`[banks.bank_b.jsn]` is a cluster-file mistake like any other: one line, exit 2, nothing started."""
    raw = spec(tmp_path)
    raw["banks"]["bank_b"]["jsn"] = {"compact_after": 5}
    (tmp_path / "c.toml").write_text(tomli_w.dumps(raw))
    result = miniupi(tmp_path, *COMMANDS[command], "--config", str(tmp_path / "c.toml"))
    assert_refused_having_started_nothing(
        tmp_path, result, "unknown table 'banks.bank_b.jsn': a node's plugin settings go in a table named after "
                          "its storage or auth kind (json, session)")


@pytest.mark.timeout(60)
def test_an_auth_kind_that_issues_no_sessions_cannot_be_the_gateways(tmp_path: Path) -> None:
    raw = spec(tmp_path)
    raw["gateway"]["auth"] = "open"
    raw["plugins"] = {"load": ["open_auth"]}
    (tmp_path / "c.toml").write_text(tomli_w.dumps(raw))
    result = miniupi(tmp_path, "gateway", "--config", str(tmp_path / "c.toml"),
                     env={"PYTHONPATH": str(PLUGIN_DIR)})
    assert result.returncode == 3
    assert result.stderr == (f"miniupi: {tmp_path / 'c.toml'}: gateway.auth: the auth plugin 'open' issues no "
                             "sessions, and the gateway must authenticate customers\n")
    assert not (tmp_path / "data").exists()
