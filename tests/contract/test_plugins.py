"""Plugins: ours come through the entry point group, and a cluster file can add others."""
from __future__ import annotations

import importlib.metadata
import tomllib
import uuid
from pathlib import Path

import grpc
import pytest

from miniupi.config import NodeConfig, parse_config
from miniupi.errors import NotFound
from miniupi.nodes.server import node_interceptors
from miniupi.contract.manager import DEFAULT_PLUGINS, PluginError, make_plugin_manager
from miniupi.contract.registry import check_plugins
from miniupi.tls import channel_credentials
from miniupi.v1 import bank_pb2, bank_pb2_grpc, common_pb2
from conftest import PLUGIN_DIR, ROOT



def test_default_plugins_are_the_entry_point_group_and_registered_by_its_names() -> None:
    with open(ROOT / "pyproject.toml", "rb") as f:
        entry_points = tomllib.load(f)["project"]["entry-points"]["miniupi"]
    assert entry_points == DEFAULT_PLUGINS
    pm = make_plugin_manager()
    assert all(pm.has_plugin(name) for name in DEFAULT_PLUGINS)


def test_a_source_checkout_without_entry_points_still_has_every_default_kind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As when miniupi runs from a clone that was never pip-installed: no distribution declares a plugin."""
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [])
    cluster = parse_config({"cluster": {}, "gateway": {"port": 1},
                            "banks": {"bank_a": {"port": 2, "storage": "json"}, "bank_b": {"port": 3}}},
                           tmp_path / "c.toml")
    plugins = check_plugins(cluster)
    assert {"sqlite", "json"} <= set(plugins.kinds.storage) and "session" in plugins.kinds.auth
    assert plugins.pm.list_plugin_distinfo() == []  # none of them came from an entry point here


def test_every_node_gets_the_core_caller_check_whatever_auth_it_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outermost first: the error door, the call log, the auth kind's, then the core check; an auth kind
    cannot drop the door or the check."""
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    cluster = parse_config({"cluster": {}, "gateway": {"port": 1},
                            "banks": {"bank_a": {"port": 2, "auth": "open"}, "bank_b": {"port": 3}},
                            "plugins": {"load": ["open_auth"]}}, tmp_path / "c.toml")
    plugins = check_plugins(cluster)

    def names(node: NodeConfig) -> list[str]:
        return [type(i).__name__ for i in node_interceptors(node, plugins, plugins.auth(node))]

    assert names(cluster.gateway) == ["ErrorDoor", "CallLogInterceptor", "GatewaySessionInterceptor",
                                      "GatewayNodeMethodsInterceptor"]
    assert names(cluster.banks["bank_a"]) == ["ErrorDoor", "CallLogInterceptor", "BankCallerInterceptor"]
    assert names(cluster.banks["bank_b"]) == ["ErrorDoor", "CallLogInterceptor", "BankCallerInterceptor"]


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


def test_a_bank_whose_auth_plugin_checks_nothing_still_serves_only_the_gateway(
        miniupi_cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller check is core: a customer's or the admin's certificate moves no money at any bank."""
    monkeypatch.setenv("PYTHONPATH", str(PLUGIN_DIR))
    cluster = miniupi_cluster(
        {"cluster": {}, "gateway": {}, "banks": {"bank_a": {"auth": "open"}, "bank_b": {}},
         "plugins": {"load": ["open_auth"]}},
        accounts={"bank_a": {"alice": ("10.00", "pw")}, "bank_b": {"bob": ("0", "pw")}})
    calls = {
        "OpenAccount": bank_pb2.OpenAccountRequest(
            account="mallory", password="pw", initial=common_pb2.Money(minor=10_000_000_00, currency="INR")),
        "Prepare": bank_pb2.PrepareRequest(txn_id=str(uuid.uuid4()), currency="INR", legs=[
            bank_pb2.Leg(account="alice", delta_minor=10_00, counterparty="mallory@bank_b")]),
        "VerifyPassword": bank_pb2.VerifyPasswordRequest(account="alice", password="pw"),
    }
    for identity in ("client", "admin"):
        with grpc.secure_channel(cluster.config.banks["bank_a"].address,
                                 channel_credentials(cluster.config.certs_dir, identity)) as channel:
            stub = bank_pb2_grpc.BankStub(channel)
            for method, request in calls.items():
                with pytest.raises(grpc.RpcError) as refused:
                    getattr(stub, method)(request, timeout=10)
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, (identity, method)
    with cluster.client(identity="admin") as admin:  # nothing opened, nothing held
        alice = admin.balance("alice@bank_a")
        assert (alice.balance, alice.available) == (10_00, 10_00)
        with pytest.raises(NotFound):
            admin.balance("mallory@bank_a")
