"""Clients that know several gateways: each gateway serves, and a client whose gateway is down,
or dies under a payment, goes on through another with the same ids and the same session.

The cluster has two gateways, gw1 and gw2, sharing one PostgreSQL (the session's server), so a
key issued by one is good at the other. What the gateways themselves do when one dies holding a
payment is tests/nodes/test_replicas_postgres.py's.
"""
from __future__ import annotations

import contextlib
import json
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from conftest import (PASSWORD, PLUGIN_DIR, cli_login, cli_ok, cluster_with_test_plugins, lines_with, money,
                      open_account, refusal, two_gateways, wait_for, wait_logged)
from miniupi.client.api import Client
from miniupi.config import load_config
from miniupi.errors import InsufficientFunds, NoAnswer
from miniupi.ops.supervision import is_serving
from miniupi.ops.postgres_server import LocalPostgres
from miniupi.ops.testing import LocalCluster

sys.path.insert(0, str(PLUGIN_DIR))  # the nodes load it from PYTHONPATH; the test arms it directly
import faults  # noqa: E402

pytestmark = pytest.mark.timeout(300)
SPEC = two_gateways("failover")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, miniupi_postgres: LocalPostgres) -> Iterator[LocalCluster]:
    with cluster_with_test_plugins(tmp_path_factory.mktemp("failover"), SPEC, postgres=miniupi_postgres) as c:
        yield c


@contextlib.contextmanager
def stopped(cluster: LocalCluster, name: str) -> Iterator[None]:
    """`name` stopped for the block, serving again after it."""
    cluster.stop_node(name)
    try:
        yield
    finally:
        cluster.start_node(name)


def paid_through(cluster: LocalCluster, gateway: str, txn_id: str) -> bool:
    """Whether `gateway` logged a Pay of `txn_id` answered OK (its log reaches the files within a second)."""
    wait_for(f"{gateway}'s log of {txn_id}", lambda: lines_with(cluster, gateway, "Pay", txn_id), timeout_s=10)
    return bool(lines_with(cluster, gateway, "Pay", txn_id, "code=OK"))


def test_each_gateway_is_a_supervised_node_on_the_one_shared_store_that_serves(cluster: LocalCluster) -> None:
    config = cluster.config
    assert [n.name for n in config.nodes] == ["gw1", "gw2", "bank_a", "bank_b"]
    for name in ("gw1", "gw2"):
        assert is_serving(config.node(name))
        assert not (config.data_dir / name / "store.sqlite3").exists()
        wait_logged(cluster, name, f"{name} serving on {config.gateways[name].address}")
        wait_logged(cluster, name, "storage postgres")
    status = {row["name"]: row for row in json.loads(cli_ok(cluster, "status", "--json", home=cluster.root))}
    assert status["gw1"]["state"] == status["gw2"]["state"] == "RUNNING"
    assert status["gw2"]["address"] == config.gateways["gw2"].address


def test_a_client_pays_through_the_second_gateway_while_the_first_is_down(cluster: LocalCluster) -> None:
    payer, payee = open_account(cluster, "bank_a", 10_000), open_account(cluster, "bank_b", 0)
    with stopped(cluster, "gw1"), cluster.client() as client:
        client.login(payer, PASSWORD)
        txn_id = str(uuid.uuid4())
        assert client.pay(payee, 250, txn_id=txn_id).state == "COMMITTED"
        assert money(client) == (9_750, 9_750)
        assert client._async.gateways.preferred.name == "gw2"
    assert paid_through(cluster, "gw2", txn_id)


def test_a_payment_whose_gateway_dies_under_it_is_resent_to_the_other_with_its_id_and_session(
        cluster: LocalCluster) -> None:
    payer, payee = open_account(cluster, "bank_a", 10_000), open_account(cluster, "bank_b", 0)
    with cluster.client() as client:
        session = client.login(payer, PASSWORD)
        assert client.pay(payee, 100).state == "COMMITTED"
        first = client._async.gateways.preferred.name
        txn_id = str(uuid.uuid4())
        # The gateway records the payment, then dies with SIGKILL before any bank hears of it. The
        # client sends the same id to the other, which finds it recorded and undecided, and answers
        # once the dead one's restart (or, past its lease, the other itself) has run it on: the
        # payment the user asked for, not an abort to pay again.
        faults.arm(cluster.config.data_dir, {"node": first, "point": "before_prepare", "action": "kill",
                                             "txn_id": txn_id})
        assert client.pay(payee, 300, txn_id=txn_id).state == "COMMITTED"
        assert client.session is session  # never asked to log in again
        assert client._async.gateways.preferred.name != first
        wait_for("each payment applied once", lambda: money(client) == (9_600, 9_600), timeout_s=30)
    assert [f["details"]["txn_id"] for f in faults.fired(cluster.config.data_dir)
            if f["node"] == first] == [txn_id]
    other = "gw2" if first == "gw1" else "gw1"
    wait_for(f"{other}'s log of the resend", lambda: lines_with(cluster, other, "Pay", txn_id), timeout_s=10)
    cluster.wait_ready(first)  # supervisord brought it back


def test_a_refusal_is_the_answer_and_is_not_sent_to_another_gateway(cluster: LocalCluster) -> None:
    payer, payee = open_account(cluster, "bank_a", 100), open_account(cluster, "bank_b", 0)
    with cluster.client() as client:
        client.login(payer, PASSWORD)
        first = client._async.gateways.preferred.name
        txn_id = str(uuid.uuid4())
        assert isinstance(refusal(lambda: client.pay(payee, 500, txn_id=txn_id)), InsufficientFunds)
        assert client._async.gateways.preferred.name == first
    other = "gw2" if first == "gw1" else "gw1"
    wait_logged(cluster, first, txn_id)  # a node logs its calls in order: the other's log is as complete
    assert not lines_with(cluster, first, "Pay", txn_id, "code=OK") and not lines_with(cluster, other, txn_id)


def test_a_gateway_that_accepts_connections_but_never_answers_is_passed_over(
        cluster: LocalCluster, tmp_path: Path) -> None:
    """A deadline spent connecting means nothing was sent: the client moves on."""
    payer, payee = open_account(cluster, "bank_a", 1_000), open_account(cluster, "bank_b", 0)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel accepts; nobody speaks TLS
        raw = load_config(cluster.config_path).raw
        raw["gateways"]["gw1"]["port"] = silent.getsockname()[1]
        path = tmp_path / "cluster.toml"
        path.write_text(tomli_w.dumps(raw))
        with Client(load_config(path), timeout=2.0) as client:
            client.login(payer, PASSWORD)
            assert client.pay(payee, 5).state == "COMMITTED"
            assert client._async.gateways.preferred.name == "gw2"


def test_with_every_gateway_down_the_client_says_no_answer_in_one_line(cluster: LocalCluster) -> None:
    payer = open_account(cluster, "bank_a", 0)
    with cluster.client() as client:
        client.login(payer, PASSWORD)
        with stopped(cluster, "gw1"), stopped(cluster, "gw2"):
            error = refusal(client.balance)
    assert isinstance(error, NoAnswer) and error.message == "gateway unreachable"


def test_the_command_line_logs_in_and_pays_through_the_gateway_that_is_up(cluster: LocalCluster,
                                                                          tmp_path: Path) -> None:
    payer, payee = open_account(cluster, "bank_a", 10_000), open_account(cluster, "bank_b", 0)
    home = tmp_path / "home"
    assert "gw1: stop done" in cli_ok(cluster, "stop", "gw1", home=home)
    try:
        cli_login(cluster, payer, home)
        paid = json.loads(cli_ok(cluster, "pay", payee, "12.50", "--json", home=home))
        assert paid["state"] == "COMMITTED"
    finally:
        assert "gw1: start done" in cli_ok(cluster, "start", "gw1", home=home)
    assert paid_through(cluster, "gw2", paid["txn_id"])
    # Back on gw1, the same session key goes on working: no new login.
    cli_ok(cluster, "stop", "gw2", home=home)
    try:
        assert "87.50" in cli_ok(cluster, "balance", home=home)
    finally:
        cli_ok(cluster, "start", "gw2", home=home)


def test_bench_live_pays_through_the_gateway_that_is_up_and_the_audit_holds(cluster: LocalCluster) -> None:
    with stopped(cluster, "gw1"):
        run = cluster.cli("bench", "--live", "--payments", "60", "--concurrency", "4", "--accounts", "4",
                          "--seed", "7", "--no-audit", "--json", timeout=240)
        assert run.returncode == 0, run.stderr[-2000:]
        result = json.loads(run.stdout)
        assert (result["payments"], result["ok"], result["failed"]) == (60, 60, 0)
    wait_for("every in-doubt payment settled",
             lambda: cluster.cli("audit", "--json", "--wait", "10").returncode == 0, timeout_s=60, interval_s=1)
