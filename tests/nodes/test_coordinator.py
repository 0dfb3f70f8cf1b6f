"""The gateway's coordinator alone: 2PC, idempotency and recovery with no gRPC and no server.

The banks are an in-memory Participants (miniupi/nodes/participants.py)
that vote and acknowledge as each test tells them; the store is the real
SQLite store under the real group commit, so "durable" means on disk. A
"restart" opens the same file again under a new Coordinator.
"""
from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from miniupi.contract.hookspecs import hookimpl
from miniupi.contract.manager import NodeHooks, plugin_manager
from miniupi.contract.store import Put
from miniupi.errors import (
    Aborted,
    AlreadyExists,
    BalanceCeiling,
    InsufficientFunds,
    InvalidAmount,
    MiniupiError,
    UnknownAccount,
    Unavailable,
)
from miniupi.nodes.coordinator import Coordinator, Payment
from miniupi.nodes.group_commit import GroupCommit
from miniupi.nodes.participants import YES, Ack, Leg, Refusal, Vote
from miniupi.plugins.storage_sqlite import SqliteStore
from miniupi.states import TxnState

pytestmark = pytest.mark.timeout(60)
PREPARE_TIMEOUT_S = CALL_TIMEOUT_S = 2.0


class Banks:
    """Participants in memory: each bank votes YES and acknowledges at once unless told otherwise."""

    def __init__(self) -> None:
        self.votes: dict[str, Vote | BaseException] = {}  # bank -> its answer to every prepare
        self.hold: dict[str, asyncio.Event] = {}  # bank -> prepares wait for this before answering
        self.delay_s: dict[str, float] = {}  # bank -> prepares take this long
        self.refuse_decisions: dict[str, int] = {}  # bank -> how many more decisions fail (Unavailable)
        self.prepares: list[tuple[str, str, str, tuple[Leg, ...]]] = []  # (bank, txn_id, currency, legs)
        self.decisions: list[tuple[str, str, bool]] = []  # (bank, txn_id, commit), every attempt

    async def prepare(self, bank: str, txn_id: str, currency: str, legs: Sequence[Leg],
                      patience_s: float = 0.0) -> Vote:
        self.prepares.append((bank, txn_id, currency, tuple(legs)))
        if bank in self.hold:
            await self.hold[bank].wait()
        if bank in self.delay_s:
            await asyncio.sleep(self.delay_s[bank])
        answer = self.votes.get(bank, YES)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def decide(self, bank: str, txn_id: str, commit: bool) -> Ack:
        self.decisions.append((bank, txn_id, commit))
        if self.refuse_decisions.get(bank, 0) > 0:
            self.refuse_decisions[bank] -= 1
            raise Unavailable(f"bank {bank} is down")
        return Ack(True)

    def decided(self, txn_id: str) -> list[tuple[str, bool]]:
        return sorted((bank, commit) for bank, t, commit in self.decisions if t == txn_id)


class FlakyStore(SqliteStore):
    """The real SQLite store, whose writes of decisions fail while `failing` is set (a full disk)."""

    failing = False
    answer_lost = False  # the next write of a new payment's record goes down, then fails (a connection lost)

    def write(self, batch: Sequence[Put]) -> None:
        if self.failing and any(put.value["state"] != TxnState.INITIATED
                                for put in batch if put.table == "txns" and put.value):
            raise OSError(28, "No space left on device")
        super().write(batch)
        if self.answer_lost and any(put.table == "txns" and put.value for put in batch):
            self.answer_lost = False
            raise OSError("server closed the connection unexpectedly")


class Gateway:
    """A coordinator over a store file; `restart` is a new one over the same file."""

    def __init__(self, path: Path, banks: Banks, hooks: NodeHooks | None = None) -> None:
        self.path, self.banks, self.hooks = path / "gateway.sqlite3", banks, hooks
        self.store = FlakyStore(self.path)
        self.commit = GroupCommit(self.store)
        kwargs = {"hooks": hooks} if hooks is not None else {}
        self.coordinator = Coordinator(banks, self.commit, self.store.load(), PREPARE_TIMEOUT_S, CALL_TIMEOUT_S,
                                       **kwargs)

    async def close(self) -> None:
        await self.coordinator.close()
        await self.commit.close()

    async def restart(self, banks: Banks | None = None) -> Gateway:
        await self.close()
        return Gateway(self.path.parent, banks or self.banks, self.hooks)

    def on_disk(self, txn_id: str) -> dict[str, Any]:
        """The payment's record as the file holds it, read through a connection of its own."""
        with sqlite3.connect(self.path) as db:
            row = db.execute("SELECT value FROM kv WHERE tbl = 'txns' AND key = ?", (txn_id,)).fetchone()
        return json.loads(row[0])


def payment(payer: str = "alice@bank_a", payee: str = "bob@bank_b", amount: int = 4_00) -> Payment:
    return Payment(str(uuid.uuid4()), payer, payee, amount, "INR")


async def acked(coordinator: Coordinator, txn_id: str, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while not coordinator.txns[txn_id].acked and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return coordinator.txns[txn_id].acked


async def outcome(call: Any) -> TxnState | MiniupiError:
    try:
        return await call
    except MiniupiError as e:
        return e


# -- the commit path ----------------------------------------------------------------------------


def test_all_yes_commits_durably_then_tells_every_bank_to_commit(tmp_path: Path) -> None:
    async def scenario() -> None:
        banks = Banks()
        gateway = Gateway(tmp_path, banks)
        p = payment()
        assert await gateway.coordinator.pay(p) == TxnState.COMMITTED
        assert sorted(banks.prepares) == [
            ("bank_a", p.txn_id, "INR", (Leg("alice", -4_00, "bob@bank_b"),)),
            ("bank_b", p.txn_id, "INR", (Leg("bob", 4_00, "alice@bank_a"),)),
        ]
        assert gateway.on_disk(p.txn_id)["state"] == "COMMITTED"
        assert await acked(gateway.coordinator, p.txn_id)
        assert banks.decided(p.txn_id) == [("bank_a", True), ("bank_b", True)]
        gateway = await gateway.restart()
        assert gateway.on_disk(p.txn_id)["acked"] is True  # nothing is resent after this restart
        assert await gateway.coordinator.recover() == (0, 0)
        await gateway.close()

    asyncio.run(scenario())


def test_a_payment_inside_one_bank_sends_one_prepare_with_both_legs(tmp_path: Path) -> None:
    async def scenario() -> None:
        banks = Banks()
        gateway = Gateway(tmp_path, banks)
        p = payment("alice@bank_a", "carol@bank_a")
        assert await gateway.coordinator.pay(p) == TxnState.COMMITTED
        assert banks.prepares == [("bank_a", p.txn_id, "INR", (Leg("alice", -4_00, "carol@bank_a"),
                                                                Leg("carol", 4_00, "alice@bank_a")))]
        assert await acked(gateway.coordinator, p.txn_id)
        assert banks.decided(p.txn_id) == [("bank_a", True)]
        await gateway.close()

    asyncio.run(scenario())


def test_prepares_go_to_every_bank_at_once(tmp_path: Path) -> None:
    async def scenario() -> float:
        banks = Banks()
        banks.delay_s = {"bank_a": 0.3, "bank_b": 0.3}
        gateway = Gateway(tmp_path, banks)
        started = time.monotonic()
        assert await gateway.coordinator.pay(payment()) == TxnState.COMMITTED
        took = time.monotonic() - started
        await gateway.close()
        return took

    assert asyncio.run(scenario()) < 0.55  # one after the other would take 0.6 s


# -- aborts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("refusal", "error"), [
    (Refusal.INSUFFICIENT_FUNDS, InsufficientFunds),
    (Refusal.BALANCE_CEILING, BalanceCeiling),
    (Refusal.UNKNOWN_ACCOUNT, UnknownAccount),
    (Refusal.WRONG_CURRENCY, InvalidAmount),
    (Refusal.ALREADY_DECIDED, Aborted),
    (Refusal.INVALID_REQUEST, Aborted),
    (Refusal.UNSPECIFIED, Aborted),
])
def test_a_no_vote_aborts_durably_tells_every_bank_and_gives_the_client_the_banks_reason(
        tmp_path: Path, refusal: Refusal, error: type[MiniupiError]) -> None:
    words = "the bank's own words"

    async def scenario() -> None:
        banks = Banks()
        banks.votes["bank_b"] = Vote(False, refusal, words)
        gateway = Gateway(tmp_path, banks)
        p = payment()
        answer = await outcome(gateway.coordinator.pay(p))
        assert type(answer) is error and answer.message == words
        record = gateway.on_disk(p.txn_id)
        assert (record["state"], record["code"], record["message"]) == ("ABORTED", error.code, words)
        assert await acked(gateway.coordinator, p.txn_id)
        assert banks.decided(p.txn_id) == [("bank_a", False), ("bank_b", False)]  # the payer's hold is released
        await gateway.close()

    asyncio.run(scenario())


def test_a_prepare_that_times_out_aborts_the_payment(tmp_path: Path) -> None:
    async def scenario() -> None:
        banks = Banks()
        banks.votes["bank_b"] = TimeoutError()  # what the links raise when a round outlasts the prepare timeout
        gateway = Gateway(tmp_path, banks)
        p = payment()
        answer = await outcome(gateway.coordinator.pay(p))
        assert isinstance(answer, Aborted)
        assert answer.message == "payment aborted: bank bank_b did not answer within 2s"
        assert gateway.on_disk(p.txn_id)["state"] == "ABORTED"
        assert await acked(gateway.coordinator, p.txn_id)
        assert banks.decided(p.txn_id) == [("bank_a", False), ("bank_b", False)]
        await gateway.close()

    asyncio.run(scenario())


def test_a_bank_that_cannot_be_reached_aborts_the_payment(tmp_path: Path) -> None:
    async def scenario() -> None:
        banks = Banks()
        banks.votes["bank_a"] = Unavailable("UNAVAILABLE connection refused")
        gateway = Gateway(tmp_path, banks)
        p = payment()
        answer = await outcome(gateway.coordinator.pay(p))
        assert isinstance(answer, Aborted) and answer.message == "payment aborted: bank bank_a unavailable"
        assert gateway.on_disk(p.txn_id)["state"] == "ABORTED"
        await gateway.close()

    asyncio.run(scenario())


# -- one id, one payment ------------------------------------------------------------------------


def test_a_repeated_id_returns_the_stored_result_and_runs_2pc_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        banks = Banks()
        gateway = Gateway(tmp_path, banks)
        p = payment()
        assert await gateway.coordinator.pay(p) == TxnState.COMMITTED
        assert await gateway.coordinator.pay(p) == TxnState.COMMITTED
        refused = payment()
        banks.votes["bank_a"] = Vote(False, Refusal.INSUFFICIENT_FUNDS, "insufficient funds")
        first, again = [await outcome(gateway.coordinator.pay(refused)) for _ in range(2)]
        assert type(first) is type(again) is InsufficientFunds and first.message == again.message
        assert len(banks.prepares) == 4  # two banks, two payments, each prepared once
        await gateway.close()

    asyncio.run(scenario())


def test_fifty_concurrent_calls_with_one_id_run_2pc_once_and_all_get_its_result(tmp_path: Path) -> None:
    async def scenario() -> None:
        banks = Banks()
        banks.hold["bank_b"] = asyncio.Event()
        gateway = Gateway(tmp_path, banks)
        p = payment()
        calls = [asyncio.create_task(gateway.coordinator.pay(p)) for _ in range(50)]
        await asyncio.sleep(0.05)
        assert not any(call.done() for call in calls)  # the repeats wait for the running payment
        banks.hold["bank_b"].set()
        assert await asyncio.gather(*calls) == [TxnState.COMMITTED] * 50
        assert sorted(bank for bank, *_ in banks.prepares) == ["bank_a", "bank_b"]
        assert await acked(gateway.coordinator, p.txn_id)
        assert banks.decided(p.txn_id) == [("bank_a", True), ("bank_b", True)]
        await gateway.close()

    asyncio.run(scenario())


def test_an_id_reused_for_another_payment_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        banks = Banks()
        banks.hold["bank_b"] = asyncio.Event()
        gateway = Gateway(tmp_path, banks)
        p = payment()
        running = asyncio.create_task(gateway.coordinator.pay(p))
        await asyncio.sleep(0.05)
        other = Payment(p.txn_id, p.payer, p.payee, p.amount + 1, p.currency)
        assert isinstance(await outcome(gateway.coordinator.pay(other)), AlreadyExists)  # while it runs
        banks.hold["bank_b"].set()
        assert await running == TxnState.COMMITTED
        assert isinstance(await outcome(gateway.coordinator.pay(other)), AlreadyExists)  # and once it is done
        assert gateway.on_disk(p.txn_id)["amount"] == p.amount
        assert len(banks.prepares) == 2
        await gateway.close()

    asyncio.run(scenario())


# -- the commit point ---------------------------------------------------------------------------


def test_a_decision_the_store_refused_is_never_told_and_becomes_an_abort_once_it_writes(tmp_path: Path) -> None:
    async def scenario() -> None:
        banks = Banks()
        gateway = Gateway(tmp_path, banks)
        p = payment()
        gateway.store.failing = True
        answer = await outcome(gateway.coordinator.pay(p))
        assert isinstance(answer, Unavailable) and "could not be decided" in answer.message
        assert gateway.coordinator.decision(p.txn_id) == TxnState.INITIATED  # what a bank in doubt hears
        assert isinstance(await outcome(gateway.coordinator.pay(p)), Unavailable)  # the repeat too
        assert gateway.on_disk(p.txn_id)["state"] == "INITIATED"
        assert banks.decided(p.txn_id) == []
        gateway.store.failing = False
        assert await acked(gateway.coordinator, p.txn_id)  # the abort is retried until the store takes it
        assert gateway.on_disk(p.txn_id)["state"] == "ABORTED"
        assert banks.decided(p.txn_id) == [("bank_a", False), ("bank_b", False)]
        assert isinstance(await outcome(gateway.coordinator.pay(p)), Aborted)
        await gateway.close()

    asyncio.run(scenario())


def test_a_record_whose_write_landed_but_was_reported_failed_is_removed_and_its_id_is_free(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        gateway, p = Gateway(tmp_path, Banks()), payment()
        gateway.store.answer_lost = True
        with pytest.raises(Unavailable, match="could not record"):
            await gateway.coordinator.pay(p)
        deadline = time.monotonic() + 5
        while gateway.store.get("txns", p.txn_id) is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert gateway.store.get("txns", p.txn_id) is None and gateway.store.get("unfinished", p.txn_id) is None
        assert gateway.banks.prepares == []
        assert await gateway.coordinator.pay(p) == TxnState.COMMITTED  # the id was free: it runs now
        await gateway.close()

    asyncio.run(scenario())


def test_an_acknowledgement_the_store_refused_is_written_again_once_it_writes(tmp_path: Path) -> None:
    async def scenario() -> None:
        banks = Banks()
        banks.refuse_decisions = {"bank_a": 1}  # phase 2 is resent once, 0.1-0.2 s later
        gateway = Gateway(tmp_path, banks)
        p = payment()
        assert await gateway.coordinator.pay(p) == TxnState.COMMITTED
        gateway.store.failing = True  # the disk is full when the acknowledgement is written
        assert await acked(gateway.coordinator, p.txn_id)  # in memory at once
        await asyncio.sleep(0.3)
        assert gateway.on_disk(p.txn_id)["acked"] is False
        gateway.store.failing = False
        deadline = time.monotonic() + 5
        while not gateway.on_disk(p.txn_id)["acked"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert gateway.on_disk(p.txn_id)["acked"] is True  # without a restart
        with sqlite3.connect(gateway.path) as db:
            assert db.execute("SELECT count(*) FROM kv WHERE tbl = 'unfinished'").fetchone() == (0,)
        await gateway.close()

    asyncio.run(scenario())


# -- phase 2 and recovery -----------------------------------------------------------------------


def test_phase_two_is_resent_until_every_bank_acknowledges(tmp_path: Path) -> None:
    sent: list[tuple[str, str]] = []

    class Observer:
        @hookimpl
        def miniupi_after_decision_sent(self, bank: str, decision: str) -> None:
            sent.append((bank, decision))

    async def scenario() -> None:
        banks = Banks()
        banks.refuse_decisions["bank_b"] = 3
        gateway = Gateway(tmp_path, banks, NodeHooks(plugin_manager(Observer()), None))
        p = payment()
        assert await gateway.coordinator.pay(p) == TxnState.COMMITTED  # the client does not wait for the acks
        assert not gateway.coordinator.txns[p.txn_id].acked
        assert await acked(gateway.coordinator, p.txn_id, within_s=10)
        # Each resend goes to every bank: a commit applied twice is a no-op.
        assert banks.decided(p.txn_id) == [("bank_a", True)] * 4 + [("bank_b", True)] * 4
        await gateway.close()

    asyncio.run(scenario())
    assert sent.count(("bank_b", "COMMITTED")) == 1  # once, when it finally acknowledged


def test_a_restart_aborts_every_payment_without_a_durable_decision(tmp_path: Path) -> None:
    async def scenario() -> None:
        banks = Banks()
        banks.hold["bank_b"] = asyncio.Event()  # never set: the gateway goes down mid-prepare
        gateway = Gateway(tmp_path, banks)
        p = payment()
        paying = asyncio.create_task(gateway.coordinator.pay(p))
        await asyncio.sleep(0.05)
        assert gateway.on_disk(p.txn_id)["state"] == "INITIATED"
        paying.cancel()
        answering = Banks()
        gateway = await gateway.restart(answering)
        assert gateway.coordinator.txns[p.txn_id].state == TxnState.INITIATED
        assert await gateway.coordinator.recover() == (1, 1)
        assert gateway.on_disk(p.txn_id)["state"] == "ABORTED"  # presumed abort, durable before anyone hears it
        assert await acked(gateway.coordinator, p.txn_id)
        assert answering.decided(p.txn_id) == [("bank_a", False), ("bank_b", False)]
        answer = await outcome(gateway.coordinator.pay(p))
        assert isinstance(answer, Aborted) and "restarted before deciding" in answer.message
        assert answering.prepares == []
        await gateway.close()

    asyncio.run(scenario())


def test_a_restart_resends_a_commit_no_bank_acknowledged_until_all_do(tmp_path: Path) -> None:
    async def scenario() -> None:
        down = Banks()
        down.refuse_decisions = {"bank_a": 10**6, "bank_b": 10**6}
        gateway = Gateway(tmp_path, down)
        p = payment()
        assert await gateway.coordinator.pay(p) == TxnState.COMMITTED
        await asyncio.sleep(0.05)
        back = Banks()
        back.refuse_decisions["bank_b"] = 2
        gateway = await gateway.restart(back)
        assert gateway.on_disk(p.txn_id)["acked"] is False
        assert await gateway.coordinator.recover() == (0, 1)
        assert await acked(gateway.coordinator, p.txn_id, within_s=10)
        assert back.decided(p.txn_id) == [("bank_a", True)] * 3 + [("bank_b", True)] * 3  # to every bank each time
        assert back.prepares == []
        gateway = await gateway.restart()
        assert gateway.on_disk(p.txn_id)["acked"] is True
        await gateway.close()

    asyncio.run(scenario())


def test_records_hold_the_state_strings_stores_always_held(tmp_path: Path) -> None:
    """A store written before TxnState existed (plain strings) loads, and new records are the same bytes."""
    async def scenario() -> None:
        store = SqliteStore(tmp_path / "gateway.sqlite3")
        old = {"payer": "alice@bank_a", "payee": "bob@bank_b", "amount": 1, "currency": "INR", "state": "COMMITTED",
               "code": "", "message": "", "acked": True, "created_at": 1.0}
        store.write([Put("txns", "old", old)])
        store.close()
        gateway = Gateway(tmp_path, Banks())
        assert gateway.coordinator.txns["old"].state is TxnState.COMMITTED
        assert await gateway.coordinator.pay(Payment("old", "alice@bank_a", "bob@bank_b", 1, "INR")) == "COMMITTED"
        p = payment()
        await gateway.coordinator.pay(p)
        await gateway.close()
        with sqlite3.connect(tmp_path / "gateway.sqlite3") as db:
            raw = db.execute("SELECT value FROM kv WHERE key = ?", (p.txn_id,)).fetchone()[0]
        assert '"state":"COMMITTED"' in raw

    asyncio.run(scenario())


def test_the_hooks_of_a_payment_fire_in_order_with_the_node(tmp_path: Path) -> None:
    calls: list[tuple[str, object, str]] = []

    class Recorder:
        @hookimpl
        def miniupi_before_prepare(self, node: object, txn_id: str) -> None:
            calls.append(("before_prepare", node, ""))

        @hookimpl
        def miniupi_before_decision(self, node: object, decision: str) -> None:
            calls.append(("before_decision", node, decision))

        @hookimpl
        def miniupi_after_decision(self, node: object, decision: str) -> None:
            calls.append(("after_decision", node, decision))

    node = object()
    banks = Banks()
    banks.votes["bank_a"] = Vote(False, Refusal.INSUFFICIENT_FUNDS, "insufficient funds")

    async def scenario() -> None:
        gateway = Gateway(tmp_path, banks, NodeHooks(plugin_manager(Recorder()), node))  # type: ignore[arg-type]
        await outcome(gateway.coordinator.pay(payment()))
        await gateway.close()

    asyncio.run(scenario())
    assert calls == [("before_prepare", node, ""), ("before_decision", node, "ABORTED"),
                     ("after_decision", node, "ABORTED")]
