"""The gateway's memory, in process: live payments in memory, settled ones read from the store by key.

The store is a dict that counts its reads (dict_store.py), so each test can
say what a restart or a replay read: the live rows and the keys asked for,
never a scan of the history. The live tests (test_gateway_memory.py) prove
the same through real nodes.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from dict_store import DictStore
from miniupi.config import parse_config
from miniupi.contract.store import Put
from miniupi.errors import AlreadyExists, DailyLimitReached, InsufficientFunds, RefundExceedsPayment
from miniupi.nodes.coordinator import Coordinator, Payment, Txn
from miniupi.nodes.gateway_store import FORMAT, META, current, index_puts, live_tables
from miniupi.nodes.group_commit import GroupCommit
from miniupi.nodes.limits import DailyLimit
from miniupi.nodes.participants import YES, Ack, Refusal, Vote
from miniupi.nodes.refunds import RefundBook
from miniupi.nodes.tallies import Tallies
from miniupi.nodes.txn_index import UNFINISHED, TxnIndex
from miniupi.states import TxnState

pytestmark = pytest.mark.timeout(60)
CLUSTER = parse_config({
    "cluster": {"daily_limit": "100.00", "time_zone": "Asia/Kolkata"},
    "gateway": {"port": 1},
    "banks": {"bank_a": {"port": 2}, "bank_b": {"port": 3}},
}, Path("c.toml"))


class Banks:
    """Participants that vote as `votes` says (YES by default) and acknowledge every decision at once."""

    def __init__(self) -> None:
        self.votes: dict[str, Vote] = {}  # txn id -> the payer's bank's vote
        self.prepares: list[str] = []

    async def prepare(self, bank: str, txn_id: str, currency: str, legs: Sequence[Any],
                      patience_s: float = 0.0) -> Vote:
        self.prepares.append(txn_id)
        return self.votes.get(txn_id, YES) if bank == "bank_a" else YES

    async def decide(self, bank: str, txn_id: str, commit: bool) -> Ack:
        return Ack(True)

    def __contains__(self, bank: str) -> bool:
        return True


class Gateway:
    """A coordinator with its guards over `store`, as run_gateway wires them; `cache` settled payments kept."""

    def __init__(self, store: DictStore, banks: Banks, cache: int = 0) -> None:
        self.store, self.banks = store, banks
        self.commit = GroupCommit(store)  # type: ignore[arg-type]
        tables = store.load(live_tables(()))
        self.txns: TxnIndex[Txn] = TxnIndex(store, Txn.from_record, tables.get(UNFINISHED, {}), cache=cache)
        self.refunds = RefundBook(self.txns, cache=cache)
        self.limit = DailyLimit(CLUSTER, store, cache=cache)
        self.coordinator = Coordinator(banks, self.commit, tables, 2.0, 2.0,  # type: ignore[arg-type]
                                       guards=(self.refunds, self.limit), txns=self.txns)

    async def settled(self, txn_id: str) -> None:
        """Wait until phase 2 is over: the payment has left memory."""
        for _ in range(500):
            if not self.txns.is_live(txn_id) and self.store.tables.get(UNFINISHED, {}).get(txn_id) is None:
                await self.commit.barrier()
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{txn_id} still live")

    async def close(self) -> None:
        await self.coordinator.close()
        await self.commit.close()


def pay(amount: int, refund_of: str = "", payer: str = "alice@bank_a", payee: str = "bob@bank_b") -> Payment:
    return Payment(str(uuid.uuid4()), payer, payee, amount, "INR", refund_of=refund_of)


async def answer(call: Any) -> Any:
    try:
        return await call
    except Exception as e:  # noqa: BLE001 - the refusal is the answer
        return type(e)


def test_the_index_keeps_live_payments_and_reads_settled_ones_by_key_through_a_bounded_cache() -> None:
    store = DictStore()
    txns: TxnIndex[Txn] = TxnIndex(store, Txn.from_record, cache=2)
    settled = [Txn(pay(n + 1), TxnState.COMMITTED, acked=True) for n in range(4)]
    store.write([Put("txns", t.payment.txn_id, t.record()) for t in settled])
    live = Txn(pay(9), TxnState.INITIATED)
    txns.add(live.payment.txn_id, live)

    assert txns.get(live.payment.txn_id) is live and store.gets("txns") == 0  # live: memory only
    assert txns.get("never-seen") is None and store.gets("txns") == 1  # one point read, nothing cached
    for t in settled:
        assert txns[t.payment.txn_id].payment == t.payment
    assert store.gets("txns") == 5
    assert txns.get(settled[3].payment.txn_id) is not None and store.gets("txns") == 5  # cached
    assert txns.get(settled[0].payment.txn_id) is not None and store.gets("txns") == 6  # evicted: read again

    # A scan overlays memory: the live one is listed though the store has none of it yet.
    listed = dict(txns.scan())
    assert set(listed) == {t.payment.txn_id for t in [*settled, live]}
    assert listed[live.payment.txn_id] is live

    txns.retire(live.payment.txn_id)
    assert not txns.is_live(live.payment.txn_id) and txns.get(live.payment.txn_id) is live  # into the cache


def test_a_replayed_old_id_is_read_from_the_store_and_a_restart_reads_only_what_is_unfinished() -> None:
    async def scenario() -> None:
        store, banks = DictStore(), Banks()
        gw = Gateway(store, banks)
        paid, refused = pay(10_00), pay(20_00)
        banks.votes[refused.txn_id] = Vote(False, Refusal.INSUFFICIENT_FUNDS, "insufficient funds")
        assert await gw.coordinator.pay(paid) == TxnState.COMMITTED
        assert await answer(gw.coordinator.pay(refused)) is InsufficientFunds
        for p in (paid, refused):
            await gw.settled(p.txn_id)
        assert gw.txns.live() == []

        store.reads.clear()
        assert await gw.coordinator.pay(paid) == TxnState.COMMITTED  # no cache: read back from the store
        assert await answer(gw.coordinator.pay(refused)) is InsufficientFunds
        assert await answer(gw.coordinator.pay(Payment(paid.txn_id, paid.payer, paid.payee, 11_00, "INR"))) \
            is AlreadyExists
        assert store.gets("txns") == 3 and banks.prepares.count(paid.txn_id) == 2  # once, at each bank
        await gw.close()

        # A payment decided and not acknowledged (a bank was away), then a restart.
        store.reads.clear()
        pending = Txn(pay(5_00), TxnState.COMMITTED, decided_at=time.time())
        store.write([Put("txns", pending.payment.txn_id, pending.record()), Put(UNFINISHED, pending.payment.txn_id,
                                                                                True)])
        store.write([Put(META, "format", {"version": FORMAT})])
        again = Gateway(store, banks)
        assert await again.coordinator.recover() == (0, 1)
        assert [k for k in store.reads if k[0] == "scan"] == []
        assert store.gets("txns") == 1  # the unfinished one, and nothing else
        await again.settled(pending.payment.txn_id)
        assert await again.coordinator.pay(paid) == TxnState.COMMITTED
        await again.close()

    asyncio.run(scenario())


def test_refund_ceiling_and_daily_limit_hold_across_eviction_and_restart_from_their_rows() -> None:
    async def scenario() -> None:
        store, banks = DictStore(), Banks()
        gw = Gateway(store, banks)
        original = pay(60_00)
        assert await gw.coordinator.pay(original) == TxnState.COMMITTED
        first = pay(20_00, refund_of=original.txn_id, payer="bob@bank_b", payee="alice@bank_a")
        assert await gw.coordinator.pay(first) == TxnState.COMMITTED
        await gw.settled(first.txn_id)
        assert await answer(gw.coordinator.pay(pay(40_01, original.txn_id, "bob@bank_b", "alice@bank_a"))) \
            is RefundExceedsPayment
        assert await answer(gw.coordinator.pay(pay(40_01))) is DailyLimitReached  # alice sent 60.00 today
        await gw.close()

        store.reads.clear()
        again = Gateway(store, banks)
        await again.coordinator.recover()
        assert store.reads == {("load", t): 1 for t in live_tables(())}  # the rows wait until needed
        assert await answer(again.coordinator.pay(pay(40_01, original.txn_id, "bob@bank_b", "alice@bank_a"))) \
            is RefundExceedsPayment
        assert await again.coordinator.pay(pay(40_00, original.txn_id, "bob@bank_b", "alice@bank_a")) \
            == TxnState.COMMITTED
        assert await answer(again.coordinator.pay(pay(1, original.txn_id, "bob@bank_b", "alice@bank_a"))) \
            is RefundExceedsPayment
        assert again.refunds.refunded(original.txn_id) == 60_00
        assert [t.payment.amount for t in again.refunds.refunds_of(original.txn_id)] == [20_00, 40_00]
        assert await answer(again.coordinator.pay(pay(40_01))) is DailyLimitReached
        assert await again.coordinator.pay(pay(40_00)) == TxnState.COMMITTED
        assert [k for k in store.reads if k[0] == "scan"] == []
        await again.close()

    asyncio.run(scenario())


def test_a_row_written_beside_a_commit_that_failed_does_not_count_it_after_a_restart() -> None:
    """Two refunds of one payment decide at once; the first one's batch fails (a full disk) and the
    second one's goes down, counting the first as committed. The gateway dies before it can abort the
    first: whoever reads the row next must not count it."""
    store = DictStore()
    tallies = Tallies("refunds", store, cache=0, keep_ids=True)
    a = Txn(pay(30_00, refund_of="orig"), TxnState.INITIATED)
    b = Txn(pay(20_00, refund_of="orig"), TxnState.INITIATED)
    store.write([Put("txns", t.payment.txn_id, t.record()) for t in (a, b)])
    for t in (a, b):
        tallies.count("orig", t.payment.txn_id, t.payment.amount)
    tallies.row("orig", a.payment.txn_id, 30_00, TxnState.COMMITTED)  # its batch will fail
    row_b = tallies.row("orig", b.payment.txn_id, 20_00, TxnState.COMMITTED)
    assert row_b.value["committed"] == 50_00 and row_b.value["deciding"] == {a.payment.txn_id: 30_00}
    tallies.written("orig", a.payment.txn_id, TxnState.COMMITTED, durable=False)
    store.write([Put("txns", b.payment.txn_id, {**b.record(), "state": TxnState.COMMITTED}), row_b])
    tallies.written("orig", b.payment.txn_id, TxnState.COMMITTED, durable=True)
    assert tallies.look("orig").counted == 50_00  # a is still in flight here

    after_crash = Tallies("refunds", store, cache=0, keep_ids=True)
    assert after_crash.look("orig").committed == 20_00
    assert after_crash.look("orig").ids == [a.payment.txn_id, b.payment.txn_id]
    # Had the first batch gone down after all, its commit counts.
    store.write([Put("txns", a.payment.txn_id, {**a.record(), "state": TxnState.COMMITTED})])
    assert Tallies("refunds", store, cache=0).look("orig").committed == 50_00


def test_an_old_store_gets_its_indexes_from_one_pass_over_its_records() -> None:
    now = time.time()
    old = {
        "done": Txn(pay(60_00), TxnState.COMMITTED, acked=True, created_at=now),
        "unacked": Txn(pay(5_00), TxnState.COMMITTED, created_at=now),
        "undecided": Txn(pay(7_00), TxnState.INITIATED, created_at=now),
        "aborted": Txn(pay(9_00), TxnState.ABORTED, acked=True, created_at=now),
        "last_year": Txn(pay(8_00), TxnState.COMMITTED, acked=True, created_at=now - 365 * 86400),
    }
    refund = Txn(pay(20_00, refund_of="done", payer="bob@bank_b", payee="alice@bank_a"), TxnState.COMMITTED,
                 acked=True, created_at=now)
    request = {"payer": "alice@bank_a", "payee": "bob@bank_b", "amount": 1_00, "currency": "INR", "note": "",
               "created_at": now, "expires_at": now + 900, "declined_at": 0.0}
    store = DictStore({
        "txns": {**{k: t.record() for k, t in old.items()}, "r1": refund.record()},
        "requests": {"open": request, "gone": {**request, "expires_at": now - 1},
                     "no": {**request, "declined_at": now}},
        "sessions": {"s": {"account": "alice@bank_a"}},
    })
    assert not current(store.load([META]))
    puts = {(p.table, p.key): p.value for p in index_puts(store, CLUSTER, now)}  # type: ignore[arg-type]
    assert store.reads["scan", "txns"] == 1
    assert {k for t, k in puts if t == UNFINISHED} == {"unacked", "undecided"}
    assert puts["refunds", "done"] == {"ids": ["r1"], "committed": 20_00}
    today = DailyLimit(CLUSTER).day(now).isoformat()
    assert {k: v for (t, k), v in puts.items() if t == "daily"} == {f"{today}|alice@bank_a": {"committed": 65_00}}
    assert {k for t, k in puts if t == "open_requests"} == {"open"}
