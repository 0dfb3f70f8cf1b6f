"""Gateways sharing one store, in one process: ids taken once, leases, takeover and fencing.

Each gateway is a real Coordinator under its own group commit (and writer
thread); they share one DictStore whose conditional writes and claims are
atomic under a lock, as a database's row locks make them. The banks are
test_coordinator's in-memory Participants, shared too, so "applied twice"
shows as two prepares or two different decisions for one id. The same
rules against real PostgreSQL and real processes are in
tests/nodes/test_replicas_postgres.py.
"""
from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import pytest

from miniupi.contract.store import Conflict, Expect, Put
from miniupi.errors import (
    Aborted,
    AlreadyExists,
    DailyLimitReached,
    MiniupiError,
    RefundExceedsPayment,
    RequestClosed,
    TooManyRequests,
    UnknownAccount,
)
from miniupi.config import parse_config
from miniupi.nodes.collect import MAX_PENDING_PER_REQUESTER, Request, RequestState
from miniupi.nodes.collect_shared import SharedCollectBook
from miniupi.nodes.coordinator import Coordinator, Payment, Txn
from miniupi.nodes.group_commit import GroupCommit
from miniupi.nodes.issuance import DepositOrder, Issuer
from miniupi.nodes.limits import DailyLimit
from miniupi.nodes.participants import Refusal, Vote
from miniupi.nodes.refunds import RefundBook
from miniupi.nodes.replicas import LEASES, Replica, lapsed, owned
from miniupi.nodes.txn_index import UNFINISHED, TxnIndex
from miniupi.states import TxnState
from dict_store import AsyncReads, DictStore
from test_coordinator import CALL_TIMEOUT_S, PREPARE_TIMEOUT_S, Banks, outcome, payment

pytestmark = pytest.mark.timeout(60)
LEASE_S = 0.6
DAILY_LIMIT = 100_00
LIMITED = parse_config({
    "cluster": {"daily_limit": "100.00"},
    "gateway": {"port": 50050},
    "banks": {"bank_a": {"port": 50051}, "bank_b": {"port": 50052}},
}, Path("limited.toml"))


class SharedStore(DictStore):
    """One store for every gateway: each write and claim whole under one lock, as one transaction."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.RLock()

    def write(self, batch: Sequence[Put], expect: Sequence[Expect] = ()) -> None:
        with self.lock:
            super().write(batch, expect)

    def claim(self, table: str, field: str, owners: Collection[str], owner: str, limit: int) -> list[tuple[str, Any]]:
        with self.lock:
            return super().claim(table, field, owners, owner, limit)


class GroupingStore(AsyncReads, SharedStore):
    """A SharedStore that writes many conditional batches at once (write_each) and reads on the event loop
    (aget, aget_many, ascan), as PostgreSQL does."""

    def write_each(self, batches: Sequence[tuple[Sequence[Put], Sequence[Expect]]]) -> list[Conflict | None]:
        answers: list[Conflict | None] = []
        with self.lock:
            for batch, expect in batches:
                try:
                    super().write(batch, expect)
                    answers.append(None)
                except Conflict as e:
                    answers.append(e)
        return answers


@pytest.fixture(autouse=True, params=[SharedStore, GroupingStore], ids=["batch by batch", "grouped"])
def store_kind(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test twice: the group commit writing a conditional batch alone and reads by `get`, and many
    batches in one write_each and reads awaited (each after a turn of the loop)."""
    global STORE
    STORE = request.param
    yield
    STORE = SharedStore


STORE: type[SharedStore] = SharedStore


class Replicas:
    """Gateways named gw1, gw2, ... over one store and one set of banks; with `guards`, each has a daily
    limit of DAILY_LIMIT and a refund book, both shared."""

    def __init__(self, banks: Banks, store: SharedStore | None = None, guards: bool = False) -> None:
        self.banks, self.store, self.guards = banks, store or STORE(), guards
        self.gateways: dict[str, tuple[GroupCommit, Coordinator, Replica]] = {}
        self.books: dict[str, SharedCollectBook] = {}
        self.issuers: dict[str, Issuer] = {}

    async def start(self, name: str) -> Coordinator:
        commit = GroupCommit(self.store)
        unfinished = self.store.tables.get(UNFINISHED, {})
        txns = TxnIndex(self.store, Txn.from_record, owned(unfinished, name), cache=0)
        issuer = Issuer(commit, txns, shared=True)
        book = SharedCollectBook(commit, txns, issuer)
        self.books[name], self.issuers[name] = book, issuer
        guards = (RefundBook(txns, 0, shared=True), DailyLimit(LIMITED, self.store, 0, shared=True)) if self.guards else ()
        coordinator = Coordinator(self.banks, commit, {}, PREPARE_TIMEOUT_S, CALL_TIMEOUT_S, owner=name,
                                  txns=txns, guards=(*guards, book))
        replica = Replica(name, commit, coordinator, LEASE_S)
        await replica.start()
        await coordinator.recover()
        self.gateways[name] = (commit, coordinator, replica)
        return coordinator

    def __getitem__(self, name: str) -> Coordinator:
        return self.gateways[name][1]

    def replica(self, name: str) -> Replica:
        return self.gateways[name][2]

    async def freeze(self, name: str) -> None:
        """The gateway stops renewing its lease (as if paused) but stays in memory, able to act later."""
        task = self.gateways[name][2]._task
        assert task is not None
        task.cancel()
        await asyncio.sleep(0)

    async def close(self) -> None:
        for commit, coordinator, replica in self.gateways.values():
            await replica.close()
            await coordinator.close()
            await commit.close()

    def owner(self, txn_id: str) -> str | None:
        row = self.store.tables.get(UNFINISHED, {}).get(txn_id)
        return row["owner"] if row else None

    def record(self, txn_id: str) -> dict[str, Any]:
        return self.store.tables["txns"][txn_id]


async def eventually(check: Any, within_s: float = 5.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not check() and loop.time() < deadline:
        await asyncio.sleep(0.02)
    return bool(check())


def prepares_of(banks: Banks, txn_id: str) -> list[str]:
    return sorted(bank for bank, t, _, _ in banks.prepares if t == txn_id)


async def held_at_bank_b(cluster: Replicas, gateway: Coordinator, p: Payment) -> asyncio.Future[TxnState]:
    """`p` paid through `gateway`, now prepared at both banks with bank_b's vote held back until
    cluster.banks.hold["bank_b"] is set (a test pops it first to let later prepares through)."""
    cluster.banks.hold["bank_b"] = asyncio.Event()
    paying = asyncio.ensure_future(gateway.pay(p))
    assert await eventually(lambda: prepares_of(cluster.banks, p.txn_id) == ["bank_a", "bank_b"])
    return paying


def test_one_id_sent_to_two_gateways_at_once_runs_one_2pc_and_both_answer_its_result() -> None:
    async def scenario() -> None:
        banks = Banks()
        banks.delay_s = {"bank_a": 0.05}
        cluster = Replicas(banks)
        gw1, gw2 = await cluster.start("gw1"), await cluster.start("gw2")
        for _ in range(10):
            p = payment()
            answers = await asyncio.gather(*(outcome(gw.pay(p)) for gw in (gw1, gw2, gw1, gw2)))
            assert answers == [TxnState.COMMITTED] * 4
            assert prepares_of(banks, p.txn_id) == ["bank_a", "bank_b"]
            assert await eventually(lambda: banks.decided(p.txn_id) == [("bank_a", True), ("bank_b", True)])
        await cluster.close()

    asyncio.run(scenario())


def test_an_id_taken_at_one_gateway_is_already_exists_with_other_details_at_the_other() -> None:
    async def scenario() -> None:
        cluster = Replicas(Banks())
        gw1, gw2 = await cluster.start("gw1"), await cluster.start("gw2")
        p = payment()
        assert await gw1.pay(p) == TxnState.COMMITTED
        other = Payment(p.txn_id, p.payer, p.payee, p.amount + 1, p.currency)
        assert isinstance(await outcome(gw2.pay(other)), AlreadyExists)
        assert await gw2.pay(p) == TxnState.COMMITTED  # the same details: the stored answer
        await cluster.close()

    asyncio.run(scenario())


def test_a_repeat_at_the_other_gateway_waits_for_the_decision_of_the_one_running_it() -> None:
    async def scenario() -> None:
        banks = Banks()
        banks.hold["bank_b"] = asyncio.Event()
        cluster = Replicas(banks)
        gw1, gw2 = await cluster.start("gw1"), await cluster.start("gw2")
        p = payment()
        first = asyncio.ensure_future(gw1.pay(p))
        assert await eventually(lambda: prepares_of(banks, p.txn_id) == ["bank_a", "bank_b"])
        repeat = asyncio.ensure_future(gw2.pay(p))
        await asyncio.sleep(0.2)
        assert not repeat.done()  # undecided: it waits, it does not answer "in progress" at once
        banks.hold["bank_b"].set()
        assert await first == await repeat == TxnState.COMMITTED
        assert prepares_of(banks, p.txn_id) == ["bank_a", "bank_b"]
        await cluster.close()

    asyncio.run(scenario())


def test_a_lapsed_gateways_undecided_payment_is_run_on_by_a_survivor_and_committed_once() -> None:
    async def scenario() -> None:
        banks = Banks()
        cluster = Replicas(banks, guards=True)
        gw1, gw2 = await cluster.start("gw1"), await cluster.start("gw2")
        p = payment(amount=DAILY_LIMIT)
        paused = await held_at_bank_b(cluster, gw1, p)
        await cluster.freeze("gw1")
        held = banks.hold.pop("bank_b")  # gw1's prepare stays held; the survivor's is answered
        resent = asyncio.ensure_future(gw2.pay(p))  # the client, failing over with the same id, waits for it
        assert await outcome(resent) == TxnState.COMMITTED
        assert cluster.replica("gw2").taken_over == 1
        assert prepares_of(banks, p.txn_id) == ["bank_a", "bank_a", "bank_b", "bank_b"]  # once each, again
        assert await eventually(lambda: banks.decided(p.txn_id) == [("bank_a", True), ("bank_b", True)])
        held.set()  # gw1 wakes up with YES from both banks and tries to commit: taken over, the commit stands
        assert await outcome(paused) == TxnState.COMMITTED
        assert {c for _, t, c in banks.decisions if t == p.txn_id} == {True}
        row = next(iter(cluster.store.tables["daily"].values()))  # the survivor settled gw1's hold
        assert row["committed"] == DAILY_LIMIT and row["held"] == {}
        await cluster.close()

    asyncio.run(scenario())


def test_a_paused_gateway_cannot_decide_otherwise_a_payment_a_survivor_took_over() -> None:
    async def scenario() -> None:
        banks = Banks()
        cluster = Replicas(banks)
        gw1, _ = await cluster.start("gw1"), await cluster.start("gw2")
        p = payment()
        paused = await held_at_bank_b(cluster, gw1, p)
        assert cluster.owner(p.txn_id) == "gw1"
        await cluster.freeze("gw1")
        held = banks.hold.pop("bank_b")
        banks.votes["bank_b"] = Vote(False, Refusal.UNKNOWN_ACCOUNT, "no such account")  # the survivor hears NO
        assert await eventually(lambda: cluster.record(p.txn_id)["state"] == TxnState.ABORTED, LEASE_S * 4)
        assert cluster.replica("gw2").taken_over == 1
        assert await eventually(lambda: banks.decided(p.txn_id) == [("bank_a", False), ("bank_b", False)])
        del banks.votes["bank_b"]
        held.set()  # gw1 wakes up with YES from both banks, and tries to commit
        answer = await outcome(paused)
        assert isinstance(answer, UnknownAccount), answer  # the survivor's decision, not its own
        assert [c for _, t, c in banks.decisions if t == p.txn_id and c] == []  # no bank ever heard COMMIT
        assert cluster.record(p.txn_id)["state"] == TxnState.ABORTED
        await cluster.close()

    asyncio.run(scenario())


def test_a_lapsed_gateways_decided_payment_is_resent_by_a_survivor_until_acknowledged() -> None:
    async def scenario() -> None:
        banks = Banks()
        banks.refuse_decisions = {"bank_b": 10**6}  # bank_b hears nothing of gw1's phase 2
        cluster = Replicas(banks)
        gw1, _ = await cluster.start("gw1"), await cluster.start("gw2")
        p = payment()
        assert await gw1.pay(p) == TxnState.COMMITTED
        await cluster.freeze("gw1")
        await gw1.close()  # its resends stop with it
        banks.refuse_decisions = {}
        assert await eventually(lambda: cluster.owner(p.txn_id) is None, LEASE_S * 6)  # acknowledged, finished
        assert cluster.record(p.txn_id)["state"] == TxnState.COMMITTED
        assert cluster.record(p.txn_id)["acked"] is True
        assert {c for _, t, c in banks.decisions if t == p.txn_id} == {True}
        await cluster.close()

    asyncio.run(scenario())


def test_two_survivors_never_take_one_payment_over_twice() -> None:
    async def scenario() -> None:
        banks = Banks()
        banks.hold["bank_b"] = asyncio.Event()
        cluster = Replicas(banks)
        gw1 = await cluster.start("gw1")
        payments = [payment() for _ in range(30)]
        running = [asyncio.ensure_future(gw1.pay(p)) for p in payments]
        assert await eventually(lambda: all(prepares_of(banks, p.txn_id) for p in payments))
        await cluster.freeze("gw1")
        held = banks.hold.pop("bank_b")
        await cluster.start("gw2")
        await cluster.start("gw3")
        assert await eventually(lambda: all(cluster.record(p.txn_id)["state"] == TxnState.COMMITTED
                                            for p in payments), LEASE_S * 6)
        assert cluster.replica("gw2").taken_over + cluster.replica("gw3").taken_over == len(payments)
        held.set()
        assert await asyncio.gather(*(outcome(r) for r in running)) == [TxnState.COMMITTED] * len(payments)
        for p in payments:  # gw1's prepares, then one taker's: never a third
            assert prepares_of(banks, p.txn_id) == ["bank_a", "bank_a", "bank_b", "bank_b"]
            assert {c for _, t, c in banks.decisions if t == p.txn_id} == {True}
        await cluster.close()

    asyncio.run(scenario())


def test_a_clean_stop_ends_the_lease_so_a_survivor_takes_over_at_once() -> None:
    async def scenario() -> None:
        banks = Banks()
        banks.refuse_decisions = {"bank_a": 10**6}
        cluster = Replicas(banks)
        gw1, _ = await cluster.start("gw1"), await cluster.start("gw2")
        p = payment()
        assert await gw1.pay(p) == TxnState.COMMITTED
        commit, coordinator, replica = cluster.gateways.pop("gw1")
        await replica.close()
        await coordinator.close()
        await commit.close()
        assert lapsed(cluster.store.scan(LEASES), "gw2", 1.0) == ["gw1"]  # ended: lapsed at any time
        banks.refuse_decisions = {}
        assert await eventually(lambda: cluster.owner(p.txn_id) is None, LEASE_S)
        await cluster.close()

    asyncio.run(scenario())


def test_a_restarted_gateway_finishes_only_the_payments_it_still_owns() -> None:
    async def scenario() -> None:
        banks = Banks()
        banks.refuse_decisions = {"bank_a": 10**6}
        cluster = Replicas(banks)
        gw1, gw2 = await cluster.start("gw1"), await cluster.start("gw2")
        mine, theirs = payment(), payment()
        assert await gw1.pay(mine) == TxnState.COMMITTED
        assert await gw2.pay(theirs) == TxnState.COMMITTED
        await cluster.freeze("gw1")
        await cluster.freeze("gw2")
        for name in ("gw1", "gw2"):
            commit, coordinator, _ = cluster.gateways.pop(name)
            await coordinator.close()
            await commit.close()
        sent = len(banks.decisions)
        banks.refuse_decisions = {}
        again = await cluster.start("gw1")  # gw2's lease has not lapsed yet: its payment stays its own
        assert await eventually(lambda: cluster.owner(mine.txn_id) is None)
        assert [t for _, t, _ in banks.decisions[sent:]] .count(theirs.txn_id) == 0
        assert cluster.owner(theirs.txn_id) == "gw2"
        assert again.txns.is_live(theirs.txn_id) is False
        assert await eventually(lambda: cluster.owner(theirs.txn_id) is None, LEASE_S * 6)  # then it lapses
        await cluster.close()

    asyncio.run(scenario())


def test_the_owner_rows_and_the_leases_read_as_they_are_written() -> None:
    assert owned({"a": {"owner": "gw1"}, "b": {"owner": "gw2"}, "c": True}, "gw1") == ["a"]
    assert lapsed([("gw1", {"until": 5.0}), ("gw2", {"until": 15.0}), ("gw3", "junk")], "gw9", 10.0) == ["gw1"]
    assert lapsed([("gw1", {"until": 5.0})], "gw1", 10.0) == []  # never itself


def test_a_refusal_from_the_store_is_not_taken_for_a_lost_payment() -> None:
    async def scenario() -> None:
        cluster = Replicas(Banks())
        gw1 = await cluster.start("gw1")
        banks_say_no = payment(amount=1)
        cluster.banks.votes["bank_a"] = MiniupiError("down")
        assert isinstance(await outcome(gw1.pay(banks_say_no)), Aborted)
        assert cluster.record(banks_say_no.txn_id)["state"] == TxnState.ABORTED
        await cluster.close()

    asyncio.run(scenario())


def test_payments_at_two_gateways_at_once_never_pass_a_daily_limit_together() -> None:
    async def scenario() -> None:
        banks = Banks()
        banks.delay_s = {"bank_b": 0.02}
        cluster = Replicas(banks, guards=True)
        gw1, gw2 = await cluster.start("gw1"), await cluster.start("gw2")
        payments = [payment(amount=7_00) for _ in range(40)]  # 280.00 asked, 100.00 allowed
        answers = await asyncio.gather(*(outcome((gw1, gw2)[i % 2].pay(p)) for i, p in enumerate(payments)))
        committed = [p for p, a in zip(payments, answers) if a == TxnState.COMMITTED]
        assert all(a == TxnState.COMMITTED or isinstance(a, DailyLimitReached) for a in answers), answers
        assert sum(p.amount for p in committed) == 98_00  # 14 of 7.00: as many as fit, no more
        assert {p.txn_id for p in committed} == {t for _, t, c in banks.decisions if c}
        row = next(iter(cluster.store.tables["daily"].values()))
        assert row["committed"] == 98_00 and row["held"] == {}
        await cluster.close()

    asyncio.run(scenario())


def test_an_aborted_payment_gives_its_share_of_the_limit_back_across_gateways() -> None:
    async def scenario() -> None:
        banks = Banks()
        cluster = Replicas(banks, guards=True)
        gw1, gw2 = await cluster.start("gw1"), await cluster.start("gw2")
        banks.votes["bank_b"] = MiniupiError("down")
        assert isinstance(await outcome(gw1.pay(payment(amount=DAILY_LIMIT))), Aborted)
        del banks.votes["bank_b"]
        assert await gw2.pay(payment(amount=DAILY_LIMIT)) == TxnState.COMMITTED
        assert isinstance(await outcome(gw1.pay(payment(amount=1))), DailyLimitReached)
        await cluster.close()

    asyncio.run(scenario())


def test_refunds_at_two_gateways_at_once_never_give_back_more_than_the_payment() -> None:
    async def scenario() -> None:
        banks = Banks()
        cluster = Replicas(banks, guards=True)
        gw1, gw2 = await cluster.start("gw1"), await cluster.start("gw2")
        original = payment("carol@bank_b", "dave@bank_a", amount=10_00)
        assert await gw1.pay(original) == TxnState.COMMITTED
        refunds = [Payment(payment().txn_id, original.payee, original.payer, 3_00, "INR", refund_of=original.txn_id)
                   for _ in range(20)]
        answers = await asyncio.gather(*(outcome((gw1, gw2)[i % 2].pay(r)) for i, r in enumerate(refunds)))
        assert all(a == TxnState.COMMITTED or isinstance(a, RefundExceedsPayment) for a in answers), answers
        assert sum(r.amount for r, a in zip(refunds, answers) if a == TxnState.COMMITTED) == 9_00
        await cluster.close()

    asyncio.run(scenario())


def test_a_taken_over_payment_gives_back_its_hold_on_the_limit() -> None:
    async def scenario() -> None:
        banks = Banks()
        cluster = Replicas(banks, guards=True)
        gw1, gw2 = await cluster.start("gw1"), await cluster.start("gw2")
        p = payment(amount=DAILY_LIMIT)
        paused = await held_at_bank_b(cluster, gw1, p)
        assert isinstance(await outcome(gw2.pay(payment(amount=1))), DailyLimitReached)  # held by gw1's payment
        await cluster.freeze("gw1")
        held = banks.hold.pop("bank_b")
        banks.votes["bank_b"] = Vote(False, Refusal.UNKNOWN_ACCOUNT, "no such account")  # the survivor aborts it
        assert await eventually(lambda: cluster.record(p.txn_id)["state"] == TxnState.ABORTED, LEASE_S * 4)
        del banks.votes["bank_b"]
        held.set()
        assert isinstance(await outcome(paused), UnknownAccount)
        assert await gw2.pay(payment(amount=DAILY_LIMIT)) == TxnState.COMMITTED
        row = next(iter(cluster.store.tables["daily"].values()))
        assert row["committed"] == DAILY_LIMIT and row["held"] == {}
        await cluster.close()

    asyncio.run(scenario())


def request(payer: str = "alice@bank_a", payee: str = "bob@bank_b", amount: int = 5_00) -> Request:
    now = time.time()
    return Request(str(uuid.uuid4()), payer, payee, amount, "INR", "lunch", now, now + 600)


def test_a_request_asked_at_one_gateway_is_polled_and_paid_once_at_the_other() -> None:
    async def scenario() -> None:
        banks = Banks()
        cluster = Replicas(banks)
        gw1, gw2 = await cluster.start("gw1"), await cluster.start("gw2")
        asked = await cluster.books["gw1"].ask(request())
        book2 = cluster.books["gw2"]
        assert [r.request_id for r in await book2.open_for("alice@bank_a", time.time())] == [asked.request_id]
        approval = book2.approvable(asked.request_id, "alice@bank_a", time.time())
        answers = await asyncio.gather(gw2.pay(approval), gw1.pay(approval), gw2.pay(approval))
        assert answers == [TxnState.COMMITTED] * 3
        assert prepares_of(banks, asked.request_id) == ["bank_a", "bank_b"]
        assert cluster.books["gw1"].state(asked, time.time())[0] == RequestState.PAID
        for account in ("alice@bank_a", "bob@bank_b"):
            assert await cluster.books["gw1"].open_for(account, time.time()) == []
            assert cluster.store.tables["inbox"][account]["ids"] == []
        await cluster.close()

    asyncio.run(scenario())


def test_an_approval_at_one_gateway_racing_a_decline_at_the_other_has_one_winner() -> None:
    async def scenario() -> None:
        banks = Banks()
        cluster = Replicas(banks)
        gw1, _ = await cluster.start("gw1"), await cluster.start("gw2")
        for _ in range(15):
            asked = await cluster.books["gw2"].ask(request())
            approval = cluster.books["gw1"].approvable(asked.request_id, "alice@bank_a", time.time())
            paid, declined = await asyncio.gather(
                outcome(gw1.pay(approval)),
                outcome(cluster.books["gw2"].decline(asked.request_id, "alice@bank_a", time.time())))
            state = cluster.books["gw1"].state(cluster.books["gw1"].find(asked.request_id, "alice@bank_a"))[0]
            if paid == TxnState.COMMITTED:
                assert isinstance(declined, RequestClosed) and state == RequestState.PAID, (declined, state)
            else:
                assert isinstance(paid, RequestClosed) and state == RequestState.DECLINED, (paid, state)
                assert prepares_of(banks, asked.request_id) == []
        await cluster.close()

    asyncio.run(scenario())


def test_the_cap_on_pending_requests_counts_those_asked_at_every_gateway() -> None:
    async def scenario() -> None:
        cluster = Replicas(Banks())
        await cluster.start("gw1")
        await cluster.start("gw2")
        books = [cluster.books["gw1"], cluster.books["gw2"]]
        answers = await asyncio.gather(*(outcome(books[i % 2].ask(request(payer=f"p{i}@bank_a")))
                                         for i in range(MAX_PENDING_PER_REQUESTER + 10)))
        assert sum(isinstance(a, Request) for a in answers) == MAX_PENDING_PER_REQUESTER
        assert all(isinstance(a, (Request, TooManyRequests)) for a in answers), answers
        await cluster.close()

    asyncio.run(scenario())


def test_one_id_raced_as_a_payment_a_deposit_and_a_request_at_three_gateways_is_taken_once() -> None:
    """Each kind's own table decides only among its own kind; the ids table decides across them."""
    async def scenario() -> None:
        banks = Banks()
        cluster = Replicas(banks)
        gw1 = await cluster.start("gw1")
        await cluster.start("gw2")
        await cluster.start("gw3")
        payments_won = 0
        for _ in range(20):
            p = payment()
            asked = Request(p.txn_id, "bob@bank_b", "alice@bank_a", 3_00, "INR", "", time.time(), time.time() + 600)
            answers = await asyncio.gather(
                outcome(gw1.pay(p)),
                outcome(cluster.issuers["gw2"].record(DepositOrder(p.txn_id, "carol@bank_a", 7_00))),
                outcome(cluster.books["gw3"].ask(asked)))
            won = [a for a in answers if not isinstance(a, AlreadyExists)]
            assert len(won) == 1, answers
            kind = cluster.store.tables["ids"][p.txn_id]["kind"]
            assert kind == ("payment" if answers[0] == TxnState.COMMITTED else
                            "deposit" if answers[1] is None else "request"), (kind, answers)
            if answers[0] != TxnState.COMMITTED:
                assert prepares_of(banks, p.txn_id) == []  # a refused payment sent nothing
                assert p.txn_id not in cluster.store.tables.get("txns", {})  # none yet, if it lost the first race
            payments_won += answers[0] == TxnState.COMMITTED
        assert 0 < payments_won < 20  # both orders of the race were met
        await cluster.close()

    asyncio.run(scenario())


def test_a_gateway_restarted_within_its_lease_runs_its_undecided_payment_on() -> None:
    """Where gateways share the store a restart is a takeover of its own payments: no presumed abort, so a
    client whose gateway crashed mid-payment gets the payment it asked for from whichever gateway it asks."""
    async def scenario() -> None:
        banks = Banks()
        cluster = Replicas(banks)
        gw1 = await cluster.start("gw1")
        p = payment()
        crashed = await held_at_bank_b(cluster, gw1, p)
        await cluster.freeze("gw1")
        commit, coordinator, _ = cluster.gateways.pop("gw1")  # gone without ending its lease: a crash
        banks.hold.pop("bank_b")
        again = await cluster.start("gw1")
        assert await outcome(again.pay(p)) == TxnState.COMMITTED
        assert prepares_of(banks, p.txn_id) == ["bank_a", "bank_a", "bank_b", "bank_b"]
        assert await eventually(lambda: cluster.owner(p.txn_id) is None)  # acknowledged by both banks
        crashed.cancel()
        await coordinator.close()
        await commit.close()
        await cluster.close()

    asyncio.run(scenario())
