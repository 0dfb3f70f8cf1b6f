"""The gateway keeps in memory only what is live, reads settled records from its store, and restarts
without reading its history (issue 20).

One cluster for most of the module, its gateway on the "start_reads" storage
kind (tests/plugins/start_reads_storage.py: SQLite that logs what each start
read before serving) and with no cache of settled payments
(MINIUPI_GATEWAY_TXN_CACHE=0), so once a payment is acknowledged by every
bank each replay, refund, limit check or request reads it back from the
store. The last test starts a gateway on a store as the previous version
wrote it: records only, no index tables.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import PLUGIN_DIR, log_lines, me, money, refusal, wait_for
from miniupi.client.api import Client
from miniupi.errors import AlreadyExists, DailyLimitReached, InsufficientFunds, RefundExceedsPayment
from miniupi.nodes.coordinator import Payment, Txn
from miniupi.nodes.txn_index import CACHE_ENV
from miniupi.ops.testing import LocalCluster
from miniupi.plugins.storage_sqlite import FILE_NAME
from miniupi.states import TxnState
from upi_helpers import (
    assert_cluster_clean,
    every_node_running,
    gateway_listing,
    gateway_reaches_every_bank,
    kill_and_restart,
    outcome,
    request_state,
    until_final,
    wait_restarted,
)

sys.path.insert(0, str(PLUGIN_DIR))  # the nodes load them from PYTHONPATH; the test reads and arms them
import start_reads_storage  # noqa: E402
import faults  # noqa: E402

pytestmark = pytest.mark.timeout(180)

SPEC: dict[str, Any] = {
    "cluster": {"name": "memory", "prepare_timeout_s": 2, "call_timeout_s": 2,
                "max_opening_deposit": "10000.00", "daily_limit": "100.00", "time_zone": "Asia/Kolkata"},
    "gateway": {"storage": "start_reads"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
    "plugins": {"load": ["faults", "start_reads_storage"]},
}
# The index tables and guard rows of this version; a store from before has none of them.
INDEX_TABLES = ("unfinished", "refunds", "daily", "open_requests", "meta")


@contextlib.contextmanager
def nodes_environment(cache: str = "0") -> Iterator[None]:
    """tests/plugins on the nodes' PYTHONPATH, and the gateway's cache of settled payments at `cache`."""
    with pytest.MonkeyPatch.context() as env:  # before boot: supervisord passes it to every node
        env.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")])))
        env.setenv(CACHE_ENV, cache)
        yield


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with nodes_environment(), LocalCluster(tmp_path_factory.mktemp("memory"), SPEC) as c:
        yield c


@pytest.fixture(autouse=True)
def every_node_up_afterwards(cluster: LocalCluster) -> Iterator[None]:
    yield
    faults.disarm(cluster.config.data_dir)
    every_node_running(cluster)


def paid(payer: Client, to: str, amount: int) -> str:
    txn_id = str(uuid.uuid4())
    assert payer.pay(to, amount, txn_id=txn_id).state == "COMMITTED"
    return txn_id


def settled(cluster: LocalCluster, *txn_ids: str) -> None:
    """Wait until every bank acknowledged these payments: the gateway has let them go from memory
    (it marks a payment acknowledged and drops it in one step; with no cache, it is only in the store)."""
    wait_for(f"{len(txn_ids)} payments acknowledged",
             lambda: all(t in listed and listed[t].acked for listed in [gateway_listing(cluster)[0]] for t in txn_ids))


def last_start_reads(cluster: LocalCluster) -> dict[str, Any]:
    """What the gateway read of its store in its latest start, before serving (start_reads_storage)."""
    starts = start_reads_storage.reads(cluster.config.gateway)
    assert starts, "the counting store logged no start"
    return starts[-1]


def test_an_old_id_replayed_after_it_left_memory_and_after_a_restart_gets_its_stored_answer(
        cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payer, payee = new_user("bank_a", 50_00), new_user("bank_b")
    ok = paid(payer, me(payee), 30_00)
    refused = str(uuid.uuid4())
    assert isinstance(refusal(lambda: payer.pay(me(payee), 45_00, txn_id=refused)), InsufficientFunds)
    settled(cluster, ok, refused)
    before = money(payer), money(payee)

    for restart in (False, True):
        if restart:
            kill_and_restart(cluster, "gateway")
        assert payer.pay(me(payee), 30_00, txn_id=ok).state == "COMMITTED"
        assert isinstance(refusal(lambda: payer.pay(me(payee), 45_00, txn_id=refused)), InsufficientFunds)
        # A reused old id with other details is still someone else's payment.
        for amount in (30_01, 45_01):
            assert isinstance(refusal(lambda: payer.pay(me(payee), amount, txn_id=ok)), AlreadyExists)
        assert isinstance(refusal(lambda: payer.pay(me(payee), 30_00, txn_id=refused)), AlreadyExists)
        assert payer.transaction(ok).state == "COMMITTED"
        assert payee.transaction(refused).state == "ABORTED"
        assert (money(payer), money(payee)) == before  # no money moved by any replay
    assert [h.txn_id for h in payer.history()] == [ok]
    assert_cluster_clean(cluster)


def test_a_restart_reads_what_is_unfinished_and_never_the_history(
        cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payer, payee = new_user("bank_a", 90_00), new_user("bank_b")

    def start_after(count: int) -> dict[str, Any]:
        settled(cluster, *[paid(payer, me(payee), 1_00) for _ in range(count)])
        kill_and_restart(cluster, "gateway")
        return last_start_reads(cluster)

    few, many = start_after(3), start_after(40)
    for reads in (few, many):
        assert reads["scan"] == {}  # no pass over any table: the store is in this version's format
        [load] = reads["load"]
        assert "txns" not in load["tables"] and "txns" not in load["rows"]
        assert load["rows"].get("unfinished", 0) == 0 and reads["get"].get("txns", 0) == 0
    assert few["get"] == many["get"]  # 40 payments more, not one read more

    # A payment decided and never sent (the gateway dies right after its decision): the next
    # start reads that one record, and resends its decision.
    txn_id = str(uuid.uuid4())
    dead = cluster.supervisor.pid("gateway")
    assert dead is not None
    faults.arm(cluster.config.data_dir, {"node": "gateway", "point": "after_decision", "txn_id": txn_id,
                                         "action": "kill"})
    assert outcome(refusal(lambda: payer.pay(me(payee), 2_00, txn_id=txn_id))) == "NoAnswer"
    assert faults.disarm(cluster.config.data_dir) == []
    wait_restarted(cluster, "gateway", dead)
    reads = last_start_reads(cluster)
    assert reads["load"][0]["rows"]["unfinished"] == 1 and reads["get"]["txns"] == 1 and reads["scan"] == {}
    gateway_reaches_every_bank(cluster)
    assert until_final(lambda: payer.pay(me(payee), 2_00, txn_id=txn_id)).state == "COMMITTED"
    settled(cluster, txn_id)
    assert money(payer) == (90_00 - 45_00, 90_00 - 45_00)
    assert_cluster_clean(cluster)


def test_refund_ceiling_daily_limit_and_requests_hold_after_eviction_and_restart(
        cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    alice, bob, carol = new_user("bank_a", 300_00), new_user("bank_b"), new_user("bank_a", 50_00)
    original = paid(alice, me(bob), 60_00)
    first = bob.refund(original, 20_00).txn_id
    ask = bob.request_money(me(carol), 5_00, note="lunch")
    settled(cluster, original, first)

    for restart in (False, True):
        if restart:
            kill_and_restart(cluster, "gateway")
        # The refunds of `original`: 20.00 committed, 40.00 left, read from the store's row.
        assert isinstance(refusal(lambda: bob.refund(original, 40_01)), RefundExceedsPayment)
        # Alice sent 60.00 of her 100.00 today.
        assert isinstance(refusal(lambda: alice.pay(me(carol), 40_01)), DailyLimitReached)
        assert [r.request_id for r in carol.requests()] == [ask.request_id]
    second = bob.refund(original, 40_00).txn_id
    assert isinstance(refusal(lambda: bob.refund(original, 1)), RefundExceedsPayment)
    last = paid(alice, me(carol), 40_00)
    assert isinstance(refusal(lambda: alice.pay(me(carol), 1)), DailyLimitReached)
    approved = carol.approve(ask.request_id)
    assert approved.state == "COMMITTED" and carol.requests() == []
    settled(cluster, second, last, ask.request_id)
    before = money(alice), money(bob), money(carol)

    kill_and_restart(cluster, "gateway")
    assert isinstance(refusal(lambda: bob.refund(original, 1)), RefundExceedsPayment)
    assert isinstance(refusal(lambda: alice.pay(me(carol), 1)), DailyLimitReached)
    looked = alice.transaction(original)
    assert looked.refunded == 60_00 and [r.txn_id for r in looked.refunds] == [first, second]
    assert [h.refunds for h in alice.history() if h.txn_id == original] == [(first, second)]
    assert carol.approve(ask.request_id) == approved  # the request is read from the store: paid, once
    assert carol.requests() == [] and request_state(cluster, ask.request_id) == "PAID"
    assert (money(alice), money(bob), money(carol)) == before
    assert_cluster_clean(cluster)


# -- a store written by the previous version ------------------------------------------------------------


def test_a_store_from_before_the_indexes_is_upgraded_on_its_first_start(tmp_path: Path) -> None:
    spec = {**SPEC, "gateway": {"storage": "sqlite"}, "plugins": {"load": ["faults"]}}
    with nodes_environment(), LocalCluster(tmp_path, spec) as cluster:
        alice = _user(cluster, "bank_a", 300_00)
        bob, carol = _user(cluster, "bank_b", 0), _user(cluster, "bank_a", 50_00)
        original = paid(alice, me(bob), 60_00)
        refund = bob.refund(original, 20_00).txn_id
        pending = bob.request_money(me(carol), 5_00)
        done = bob.request_money(me(carol), 6_00)
        carol.approve(done.request_id)
        settled(cluster, original, refund, done.request_id)
        before = money(alice), money(bob), money(carol)

        # The previous version's store: the same records, none of the index tables, one payment
        # still to acknowledge and one never decided (the gateway died while preparing it).
        cluster.stop_node("gateway")
        store = cluster.config.gateway.data_dir / FILE_NAME
        undecided = Txn(Payment(str(uuid.uuid4()), me(alice), me(bob), 1_00, "INR"), TxnState.INITIATED)
        with sqlite3.connect(store) as db:
            db.execute(f"DELETE FROM kv WHERE tbl IN ({','.join('?' * len(INDEX_TABLES))})", INDEX_TABLES)
            record = json.loads(db.execute("SELECT value FROM kv WHERE tbl = 'txns' AND key = ?",
                                           (original,)).fetchone()[0])
            db.execute("UPDATE kv SET value = ? WHERE tbl = 'txns' AND key = ?",
                       (json.dumps({**record, "acked": False}), original))
            db.execute("INSERT INTO kv VALUES ('txns', ?, ?)", (undecided.payment.txn_id,
                                                                  json.dumps(undecided.record())))
            tables = {t for (t,) in db.execute("SELECT DISTINCT tbl FROM kv")}
        assert tables == {"txns", "requests", "sessions"}
        cluster.start_node("gateway")
        gateway_reaches_every_bank(cluster)

        assert any("store upgraded to format 2" in line for line in log_lines(cluster, "gateway"))
        with sqlite3.connect(store) as db:
            [(fmt,)] = db.execute("SELECT value FROM kv WHERE tbl = 'meta' AND key = 'format'").fetchall()
        assert json.loads(fmt)["version"] == 2
        # The undecided one was found through the new index and presumed aborted; the unacknowledged
        # decision was resent.
        assert alice.transaction(undecided.payment.txn_id).state == "ABORTED"
        settled(cluster, original, undecided.payment.txn_id)
        # Replays, the refund ceiling, the daily limit and the requests, from the upgraded store.
        assert alice.pay(me(bob), 60_00, txn_id=original).state == "COMMITTED"
        assert isinstance(refusal(lambda: alice.pay(me(bob), 60_01, txn_id=original)), AlreadyExists)
        assert (money(alice), money(bob), money(carol)) == before
        assert isinstance(refusal(lambda: bob.refund(original, 40_01)), RefundExceedsPayment)
        assert isinstance(refusal(lambda: alice.pay(me(carol), 40_01)), DailyLimitReached)
        assert [r.request_id for r in carol.requests()] == [pending.request_id]
        assert request_state(cluster, done.request_id) == "PAID"
        assert bob.refund(original, 40_00).state == "COMMITTED"
        assert carol.approve(pending.request_id).state == "COMMITTED"
        assert alice.transaction(original).refunded == 60_00
        assert_cluster_clean(cluster)
        for client in (alice, bob, carol):
            client.close()


def _user(cluster: LocalCluster, bank: str, initial: int) -> Client:
    account = f"u{uuid.uuid4().hex[:12]}@{bank}"
    client = cluster.client()
    client.register(account, "pw-for-tests", initial)
    client.login(account, "pw-for-tests")
    return client


def test_the_module_runs_its_gateway_without_a_cache(cluster: LocalCluster) -> None:
    """The environment reached the gateway: its start says how many settled payments it caches."""
    assert any("cache of 0 settled payments" in line for line in log_lines(cluster, "gateway"))
