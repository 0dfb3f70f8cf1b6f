"""Plugins: ours come through the entry point group, and a cluster file can add others."""
from __future__ import annotations

from pathlib import Path

import pytest

from miniupi.config import parse_config
from miniupi.plugin_manager import PluginError, make_plugin_manager

PLUGIN_DIR = Path(__file__).resolve().parent / "plugins"


def test_default_plugins_are_registered_through_the_entry_point_group() -> None:
    pm = make_plugin_manager()
    from_entry_points = {pm.get_name(plugin) for plugin, _ in pm.list_plugin_distinfo()}
    assert {"storage_sqlite", "storage_json", "auth_session", "call_log"} <= from_entry_points


def test_a_node_gets_the_interceptors_its_cluster_file_asks_for(tmp_path: Path) -> None:
    pm = make_plugin_manager()
    cluster = parse_config({"cluster": {}, "gateway": {"port": 1},
                            "banks": {"bank_a": {"port": 2, "auth": "none"}}}, tmp_path / "c.toml")
    gateway = [type(i).__name__ for group in pm.hook.miniupi_server_interceptors(node=cluster.gateway) for i in group]
    bank = [type(i).__name__ for group in pm.hook.miniupi_server_interceptors(node=cluster.banks["bank_a"])
            for i in group]
    assert gateway == ["CallLogInterceptor", "GatewaySessionInterceptor"]
    assert bank == ["CallLogInterceptor"]


def test_an_unknown_plugin_module_is_a_clear_error() -> None:
    with pytest.raises(PluginError, match="no_such_plugin_module"):
        make_plugin_manager(["no_such_plugin_module"])


def test_a_plugin_named_in_the_cluster_file_sees_every_vote_and_decision(miniupi_cluster, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(PLUGIN_DIR))
    cluster = miniupi_cluster(
        {"cluster": {}, "gateway": {}, "banks": {"bank_a": {}, "bank_b": {"storage": "json"}},
         "plugins": {"load": ["vote_journal"]}},
        accounts={"bank_a": {"alice": ("10.00", "pw")}, "bank_b": {"bob": ("0", "pw")}})
    with cluster.client() as c:
        c.login("alice@bank_a", "pw")
        txn = c.pay("bob@bank_b", 300).txn_id
    lines = set((cluster.config.data_dir / "votes.txt").read_text().splitlines())
    assert lines == {f"bank_a vote {txn} yes", f"bank_b vote {txn} yes", f"gateway decision {txn} COMMITTED"}
