"""The gateway's side of a payment: idempotency by transaction id, then 2PC.

The rules (DESIGN.md section 2): an id is recorded with its payment's
details before anything is sent; a repeat gets the stored answer or waits
for the running one; the decision is durable before any bank hears it;
phase 2 is retried until every bank has acknowledged. The client is
answered once the decision is durable and on its way to the banks: the
acks are not its business, and waiting for them took a third of the
gateway's time for a lone payment.
"""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from loguru import logger

from miniupi.backoff import RetryPolicy
from miniupi.errors import (
    AlreadyExists,
    Aborted,
    BalanceCeiling,
    InsufficientFunds,
    InvalidAmount,
    MiniupiError,
    StoreUnavailable,
    UnknownAccount,
    Unavailable,
    from_status,
)
from miniupi.nodes.participants import Ack, Leg, Participants, Refusal, Vote
from miniupi.nodes.patience import PreparePatience
from miniupi.contract.manager import NO_HOOKS, NodeHooks, fire_after, fire_before
from miniupi.contract.store import Conflict, Expect, Put, read
from miniupi.nodes import ids
from miniupi.nodes.group_commit import GroupCommit
from miniupi.nodes.txn_index import UNFINISHED, TxnIndex, finished, unfinished
from miniupi.states import TxnState
# Phase 2 resends, and the abort of a payment whose decision write failed:
# 0.1-0.2 s, then doubling up to 5-10 s.
RETRY = RetryPolicy(base_s=0.2, factor=2.0, cap_s=10.0, jitter=0.5)
# A repeat of an id another gateway is running reads the store for its decision: 10 ms, doubling to 0.5 s.
POLL = RetryPolicy(base_s=0.01, factor=2.0, cap_s=0.5, jitter=0.5)
# Writes of a shared store whose guard rows another gateway keeps changing: tried this often, then UNAVAILABLE.
SHARED_ROW_TRIES = 20
_rng = random.Random()


@dataclass(frozen=True, slots=True)
class Payment:
    txn_id: str
    payer: str  # user@bank
    payee: str
    amount: int
    currency: str
    refund_of: str = ""  # a refund: the payment it gives back
    request_id: str = ""  # the payment of a collect request: that request's id

    @property
    def banks(self) -> list[str]:
        """The banks taking part: the payer's first, once each."""
        return list(dict.fromkeys((self.payer.rpartition("@")[2], self.payee.rpartition("@")[2])))

    @property
    def details(self) -> tuple[str, str, int, str, str, str]:
        """What must match for a repeated id to be the same payment."""
        return self.payer, self.payee, self.amount, self.currency, self.refund_of, self.request_id

    @property
    def kind(self) -> str:
        """"refund", "request" (a collect request's payment) or "payment", for observers."""
        return "refund" if self.refund_of else "request" if self.request_id else "payment"


@dataclass(slots=True)
class Txn:
    payment: Payment
    state: TxnState
    code: str = ""  # status code name of a refusal; empty when committed
    message: str = ""
    acked: bool = False
    created_at: float = field(default_factory=time.time)
    finished: asyncio.Future[None] | None = None
    reason: str = ""  # the refusal's reason (errors.py); empty when committed
    decided_at: float = 0.0  # when the decision became durable; 0 while undecided

    def record(self) -> dict[str, Any]:
        p = self.payment
        r = {
            "payer": p.payer, "payee": p.payee, "amount": p.amount, "currency": p.currency,
            "state": self.state, "code": self.code, "message": self.message, "acked": self.acked,
            "created_at": self.created_at, "reason": self.reason, "decided_at": self.decided_at,
        }
        if p.refund_of:  # only where set: a plain payment's record stays as it always was
            r["refund_of"] = p.refund_of
        if p.request_id:
            r["request_id"] = p.request_id
        return r

    @classmethod
    def from_record(cls, txn_id: str, r: dict[str, Any]) -> Txn:
        payment = Payment(txn_id, r["payer"], r["payee"], r["amount"], r["currency"],
                          r.get("refund_of", ""), r.get("request_id", ""))
        # Records from before decided_at was kept: the creation time is the closest known.
        decided_at = r.get("decided_at") or (r["created_at"] if r["state"] != TxnState.INITIATED else 0.0)
        return cls(payment, TxnState(r["state"]), r["code"], r["message"], r["acked"], r["created_at"],
                   reason=r.get("reason", ""), decided_at=decided_at)

    def outcome(self) -> TxnState:
        """The stored answer: COMMITTED, or raise the stored refusal."""
        if self.state == TxnState.COMMITTED:
            return TxnState.COMMITTED
        if self.state == TxnState.INITIATED:
            raise Unavailable(f"payment {self.payment.txn_id} is not decided yet; ask again")
        raise from_status(self.code, self.message, self.reason)


def banks_and_legs(payment: Payment) -> dict[str, list[Leg]]:
    """One prepare per bank: a payment inside one bank sends both legs together."""
    payer_user, payer_bank = payment.payer.split("@")
    payee_user, payee_bank = payment.payee.split("@")
    legs: dict[str, list[Leg]] = {payer_bank: [Leg(payer_user, -payment.amount, payment.payee)]}
    legs.setdefault(payee_bank, []).append(Leg(payee_user, payment.amount, payment.payer))
    return legs



def _aborted(txn: Txn, message: str, decided_at: float) -> dict[str, Any]:
    """The record of `txn` presumed aborted: by a restart, a takeover, or a decision the store refused."""
    return {**txn.record(), "state": TxnState.ABORTED, "code": Aborted.code, "message": message,
            "reason": Aborted.reason, "decided_at": decided_at}

def _answer(vote: asyncio.Future[Vote]) -> str:
    """A bank's answer to a prepare, for people (miniupi_after_prepare)."""
    if vote.cancelled():
        return "no answer: cancelled"
    error = vote.exception()
    if error is None:
        v = vote.result()
        return "yes" if v.yes else f"no: {v.detail or v.refusal}"
    if isinstance(error, TimeoutError):
        return "no answer: timed out"
    return f"no answer: {error.message if isinstance(error, MiniupiError) else error!r}"


# What the client hears for a bank's NO; a reason not listed here aborts.
_REFUSALS: dict[Refusal | None, Callable[[str], MiniupiError]] = {
    Refusal.INSUFFICIENT_FUNDS: InsufficientFunds,
    Refusal.UNKNOWN_ACCOUNT: UnknownAccount,
    Refusal.WRONG_CURRENCY: InvalidAmount,
    Refusal.ALREADY_DECIDED: Aborted,
    Refusal.BALANCE_CEILING: BalanceCeiling,
}


class Guard(Protocol):
    """A rule over payments in flight and committed, such as a daily limit or a refund's ceiling.

    `admit` runs before a new id is recorded, in the same step of the event
    loop as the record entering memory, so no two payments can both pass a
    bound they pass only together; what it needs from the store it reads
    there and then (a synchronous `get`: a gateway alone has a local store). An admitted payment counts until
    it aborts; a committed one counts for good. What a guard keeps of
    decided payments goes into the decision's own batch (`deciding`), so the
    store never holds a decision without it, nor it without the decision.
    """

    def admit(self, payment: Payment, now: float) -> None:
        """Raise the refusal, or count the payment as in flight."""
        ...

    def release(self, txn: Txn) -> None:
        """An admitted payment was never recorded: stop counting it."""
        ...

    def deciding(self, txn: Txn, decision: TxnState) -> list[Put]:
        """The puts to write with `txn`'s decision; for a payment admitted before a restart too
        (presumed abort), which the guard has not counted in this process."""
        ...

    def decided(self, txn: Txn, decision: TxnState, durable: bool) -> None:
        """The decision's batch was written (`durable`), or failed: the payment is then still in flight."""
        ...

    # Where gateways share the store (replicas.py) no memory sees every payment in flight, so the
    # guard's rows hold them, and these two take the place of admit and deciding: each returns the
    # puts for the record's (or the decision's) batch and what they expect of the rows they replace.
    # They await their reads (contract/store.py, `read`): the store is across the network, and a
    # row changed meanwhile by anyone fails the write's expectation, which computes them again.

    async def reserve(self, payment: Payment, now: float) -> tuple[list[Put], list[Expect]]:
        """Raise the refusal as the store's rows stand, or the change that counts the payment as in flight."""
        ...

    async def settle(self, txn: Txn, decision: TxnState) -> tuple[list[Put], list[Expect]]:
        """The change that moves the payment from in flight to `decision`."""
        ...


class Coordinator:
    """2PC over `banks`, with every step made durable through `commit`; knows nothing of gRPC.

    `tables` are the live tables loaded at start: the coordinator needs
    "unfinished" (txn_index.py); `txns`, if given, is the index already made.
    `owner` names this gateway where several share the store (replicas.py):
    then an id is taken by an insert the store decides, and each decision is
    written only while this gateway still owns the payment.
    """

    def __init__(
        self,
        banks: Participants,
        commit: GroupCommit,
        tables: dict[str, dict[str, Any]],
        prepare_timeout_s: float,
        call_timeout_s: float,
        hooks: NodeHooks = NO_HOOKS,
        guards: Sequence[Guard] = (),
        txns: TxnIndex[Txn] | None = None,
        owner: str | None = None,
    ) -> None:
        self._banks, self._commit = banks, commit
        self._prepare_timeout, self._call_timeout = prepare_timeout_s, call_timeout_s
        self._hooks = hooks
        self._guards = tuple(guards)
        self.owner = owner
        # The live payments in memory, the settled ones read from the store (txn_index.py).
        self.txns: TxnIndex[Txn] = txns if txns is not None else TxnIndex(
            commit.store, Txn.from_record, tables.get(UNFINISHED, {}))
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self._in_flight = 0  # payments between their INITIATED record and their decision
        self._patience = PreparePatience()

    # -- recovery -------------------------------------------------------

    async def recover(self) -> tuple[int, int]:
        """Settle what the last run left: how many payments were undecided, how many decisions are resent.

        Run once, before serving; it reads only the live payments the index
        loaded, never the history. Alone, a gateway presumes every undecided
        payment aborted (DESIGN.md). Where gateways share the store, a restart
        is a takeover of its own payments, and runs them on (take_over).
        """
        stale = [finished(txn_id) for txn_id in self.txns.stale]
        if stale:
            await self._commit.write(stale)
        self.txns.stale.clear()
        if self.owner:
            return self._carry_on(self.txns.live())
        return await self._presume_aborted(self.txns.live())

    async def take_over(self, txn_ids: Sequence[str]) -> tuple[int, int]:
        """Finish payments claimed from a gateway whose lease lapsed (replicas.py): how many were undecided,
        how many decisions are resent.

        A decided payment is resent, as a restart would. An undecided one is not
        presumed aborted: its record holds every detail, so it runs on from phase
        1 here, and the client resending its id to this gateway gets the answer
        the lost one would have given. A bank that voted answers the same vote
        again; one that never heard of the payment votes now.
        """
        adopted, done = [], []
        for txn_id in txn_ids:
            txn = self.txns.get(txn_id)
            if txn is None or txn.acked:  # nothing left to do but drop the index row
                done.append(finished(txn_id))
            elif not self.txns.is_live(txn_id):
                self.txns.add(txn_id, txn)
                adopted.append(txn)
        if done:
            await self._commit.write(done)
        return self._carry_on(adopted)

    def _carry_on(self, txns: Sequence[Txn]) -> tuple[int, int]:
        """Run the undecided of `txns` on from phase 1, and resend the others' decisions."""
        undecided = [t for t in txns if t.state == TxnState.INITIATED]
        for txn in undecided:
            txn.finished = asyncio.get_running_loop().create_future()  # repeats wait for it, as in pay
            self._spawn(self._run_on(txn))
        return len(undecided), self._resend(txns)

    async def _run_on(self, txn: Txn) -> None:
        """Run a recorded, undecided payment to its decision; only its repeats wait for the outcome."""
        try:
            await self._run(txn)
        except MiniupiError as e:  # its decision could not be written: _two_phase aborts it when it can
            logger.error("payment {} run on after a takeover could not be decided: {}", txn.payment.txn_id,
                         e.message)

    async def _presume_aborted(self, txns: Sequence[Txn]) -> tuple[int, int]:
        """Abort the undecided of `txns` in one write, then resend every decision not acknowledged."""
        message = "payment aborted: the gateway restarted before deciding"
        undecided = [t for t in txns if t.state == TxnState.INITIATED]
        now = time.time()
        if undecided:
            try:
                await self._commit.write([put for txn in undecided
                                          for put in (Put("txns", txn.payment.txn_id, _aborted(txn, message, now)),
                                                      *self._deciding(txn, TxnState.ABORTED))])
            except Exception:
                for txn in undecided:
                    self._decided(txn, TxnState.ABORTED, False)
                raise
        for txn in undecided:
            txn.state, txn.code, txn.message, txn.reason, txn.decided_at = (
                TxnState.ABORTED, Aborted.code, message, Aborted.reason, now)
            self._decided(txn, TxnState.ABORTED, True)
        return len(undecided), self._resend(txns)

    def _resend(self, txns: Sequence[Txn]) -> int:
        """Phase 2 again for every decided one of `txns` that is live and not acknowledged; how many."""
        pending = [t for t in txns if t.state != TxnState.INITIATED and not t.acked
                   and self.txns.is_live(t.payment.txn_id)]
        for txn in pending:
            self._spawn(self._resend_decision(txn))
        return len(pending)

    # -- payments -------------------------------------------------------

    async def pay(self, payment: Payment) -> TxnState:
        """Run the payment once per id and return COMMITTED, or raise its refusal."""
        # Sharing the store, the read is awaited (nothing else is, from here to txns.add: see aget). Alone,
        # the gateway reads as it always did: an awaited read costs about twice the CPU of a blocking one
        # (docs/BENCHMARKS.md), and a gateway alone reads the store far less often.
        txn = await self.txns.aget(payment.txn_id) if self.owner else self.txns.get(payment.txn_id)
        if txn is not None:
            fire_after(self._hooks.miniupi_repeated_id, txn_id=payment.txn_id)
            return await self._repeat(txn, payment)
        txn = Txn(payment, TxnState.INITIATED)
        if not self.owner:  # alone: admitted in memory; sharing the store: by the store (_record)
            admitted: list[Guard] = []
            try:
                for guard in self._guards:
                    guard.admit(payment, txn.created_at)
                    admitted.append(guard)
            except MiniupiError:
                # Refused before anything was recorded: the id stays free, as for any other bad input.
                for guard in admitted:
                    guard.release(txn)
                raise
        txn.finished = asyncio.get_running_loop().create_future()
        self.txns.add(payment.txn_id, txn)  # in the same step as the admissions: see Guard
        started = time.perf_counter()
        try:
            recorded = await self._record(txn)
        except Exception as e:
            self.txns.discard(payment.txn_id)
            self._release(txn)
            txn.finished.set_result(None)
            if isinstance(e, MiniupiError) and not isinstance(e, StoreUnavailable):
                raise  # a guard's refusal, met on a retry (shared store)
            if not self.owner:
                self._spawn(self._unrecord(payment.txn_id))
            raise StoreUnavailable(f"gateway could not record the payment: {e}") from e
        if not recorded:  # another gateway recorded the id first: its answer is this one's
            self.txns.discard(payment.txn_id)
            txn.finished.set_result(None)
            return await self._repeat(self.txns.get(payment.txn_id) or txn, payment)
        await self._run(txn, started)
        return txn.outcome()

    async def _run(self, txn: Txn, started: float = 0.0) -> None:
        """2PC for a recorded payment, its `finished` future set when it is over; `started`: when its
        record began (perf_counter), 0 for one run on after a takeover or a restart."""
        assert txn.finished is not None
        vetoed = fire_before(self._hooks.miniupi_before_prepare, txn_id=txn.payment.txn_id)
        self._in_flight += 1
        try:
            await self._two_phase(txn, vetoed, started)
        finally:
            self._in_flight -= 1
            txn.finished.set_result(None)
            txn.finished = None  # repeats already waiting hold it; kept, it cost every payment a future

    async def _repeat(self, txn: Txn, payment: Payment) -> TxnState:
        if txn.payment.details != payment.details:
            raise AlreadyExists(f"transaction id {payment.txn_id} was already used for a different payment")
        wait = self._prepare_timeout + self._call_timeout + 1
        if txn.state == TxnState.INITIATED and txn.finished is not None:
            try:
                await asyncio.wait_for(asyncio.shield(txn.finished), wait)
            except TimeoutError:
                raise Unavailable(f"payment {payment.txn_id} is still in progress; ask again") from None
            if self.owner:  # the id may have gone to another gateway after all (pay's Conflict)
                txn = await self.txns.aget(payment.txn_id) or txn
        if txn.state == TxnState.INITIATED and self.owner and not self.txns.is_live(payment.txn_id):
            txn = await self._decided_elsewhere(txn, wait)
        await self._commit.barrier()
        return txn.outcome()

    async def _decided_elsewhere(self, txn: Txn, wait: float) -> Txn:
        """A payment another gateway runs, once the store holds its decision (or `wait` is over)."""
        deadline = time.monotonic() + wait
        failures = 0
        while txn.state == TxnState.INITIATED and time.monotonic() < deadline:
            failures += 1
            await asyncio.sleep(min(POLL.delay(failures, _rng), max(0.0, deadline - time.monotonic())))
            txn = await self.txns.aget(txn.payment.txn_id) or txn
        return txn

    async def _two_phase(self, txn: Txn, refusal: MiniupiError | None = None, started: float = 0.0) -> None:
        """Prepare, decide, tell the banks; a `refusal` (a plugin's veto) skips the prepares and aborts.

        `started` is when the payment's record began (perf_counter), for miniupi_after_phase.
        """
        p = txn.payment
        if refusal is None:
            asked = time.perf_counter()
            # All banks at once, then collect; as futures (gather would make them so), to time each.
            sent = [(bank, asyncio.ensure_future(self._banks.prepare(bank, p.txn_id, p.currency, legs,
                                                                     self._patience(bank, self._in_flight))))
                    for bank, legs in banks_and_legs(p).items()]
            for bank, vote in sent:
                self._time_vote(vote, p.txn_id, bank, asked)
            votes = await asyncio.gather(*(vote for _, vote in sent), return_exceptions=True)  # futures: no tasks
            self._timed(p.txn_id, "prepare", asked)
            refusals = [self._refusal(p.txn_id, bank, vote) for (bank, _), vote in zip(sent, votes)]
            refusal = next((r for r in refusals if r is not None), None)
        decision = TxnState.COMMITTED if refusal is None else TxnState.ABORTED
        vetoed = fire_before(self._hooks.miniupi_before_decision, txn_id=txn.payment.txn_id, decision=decision)
        if refusal is None and vetoed is not None:
            refusal, decision = vetoed, TxnState.ABORTED
        code, message, reason = (refusal.code, refusal.message, refusal.reason) if refusal else ("", "", "")
        decided_at = time.time()
        decided = {**txn.record(), "state": decision, "code": code, "message": message, "reason": reason,
                   "decided_at": decided_at}
        writing = time.perf_counter()
        try:
            # The commit point; the guards' rows go down with it.
            written = await self._write_decision(txn, decided, decision)
        except Exception as e:
            self._decided(txn, decision, False)
            # Nobody may hear a decision the disk does not hold: the payment stays undecided
            # (banks asking are told INITIATED) until an abort reaches the disk, as a restart
            # would presume.
            logger.critical("decision for {} could not be made durable ({!r}); aborting it once the store writes "
                            "again (restart the gateway if the store stays broken)", txn.payment.txn_id, e)
            self._spawn(self._abort_undecided(txn))
            raise StoreUnavailable(f"payment {txn.payment.txn_id} could not be decided; ask again") from e
        if not written:
            self._taken_over(txn, decision)
            return
        # Only now, with the decision on disk, may GetDecision or a repeated id see it.
        txn.state, txn.code, txn.message, txn.reason, txn.decided_at = decision, code, message, reason, decided_at
        self._decided(txn, decision, True)
        self._timed(p.txn_id, "decision_write", writing)
        if started:
            self._timed(p.txn_id, "payment", started)
        fire_after(self._hooks.miniupi_after_decision, txn_id=p.txn_id, decision=txn.state, reason=reason,
                   kind=p.kind)
        self._start_phase_two(txn)

    def _timed(self, txn_id: str, phase: str, since: float) -> None:
        """Tell observers that `phase` of `txn_id` took from `since` (perf_counter) until now."""
        fire_after(self._hooks.miniupi_after_phase, txn_id=txn_id, phase=phase, seconds=time.perf_counter() - since)

    def _time_vote(self, vote: asyncio.Future[Vote], txn_id: str, bank: str, asked: float) -> None:
        """Tell observers how long `bank` took to answer the prepare, when it answers."""
        def answered(done: asyncio.Future[Vote]) -> None:
            fire_after(self._hooks.miniupi_after_prepare, txn_id=txn_id, bank=bank,
                       seconds=time.perf_counter() - asked, answer=_answer(done))
        vote.add_done_callback(answered)

    async def _record(self, txn: Txn) -> bool:
        """Write the INITIATED record; False if another gateway sharing the store took the id first.

        Alone, the guards admitted the payment in memory. Where gateways share
        the store, the store decides: the record is an insert, and each
        guard's row holds the payment in the same batch, expecting the row it
        was computed from; a row another gateway changed meanwhile means
        computing again from the new one.
        """
        p = txn.payment
        puts = [Put("txns", p.txn_id, txn.record()), unfinished(p.txn_id, self.owner)]
        if not self.owner:
            await self._commit.write(puts)
            return True
        expect = [Expect("txns", p.txn_id, None)]
        if not p.request_id:  # a request's payment bears the id its request took (ids.py)
            put, taken = ids.take(p.txn_id, ids.PAYMENT)
            puts.append(put)
            expect.append(taken)
        return await self._shared_write(puts, expect, lambda guard: guard.reserve(p, txn.created_at),
                                        lambda: self._id_lost(p), f"payment {p.txn_id}")

    async def _id_lost(self, p: Payment) -> bool:
        """After a Conflict on a new id: True if another gateway recorded a payment of it first; raises
        AlreadyExists if a deposit or a collect request took it; False if the conflict was elsewhere."""
        if await self._stored("txns", p.txn_id) is not None:
            return True
        kind = await ids.taken_as(self._commit.store, p.txn_id)
        if kind is not None and kind != ids.PAYMENT and not p.request_id:
            raise ids.already_used(p.txn_id, kind)
        return False

    async def _write_decision(self, txn: Txn, record: dict[str, Any], decision: TxnState) -> bool:
        """Write a decision with the guards' rows; False if another gateway took the payment over.

        Where gateways share the store, it is written only while this gateway
        owns the payment, and each guard's row expects the row it was
        computed from, computed again if another gateway changed it.
        """
        p = txn.payment
        if not self.owner:
            await self._commit.write([Put("txns", p.txn_id, record), *self._deciding(txn, decision)])
            return True

        async def lost() -> bool:
            row = await self._stored(UNFINISHED, p.txn_id)
            return not isinstance(row, dict) or row.get("owner") != self.owner

        return await self._shared_write([Put("txns", p.txn_id, record)], self._owned(txn),
                                        lambda guard: guard.settle(txn, decision), lost, f"decision of {p.txn_id}")

    async def _shared_write(self, puts: list[Put], expect: Sequence[Expect],
                            change: Callable[[Guard], Awaitable[tuple[list[Put], list[Expect]]]],
                            lost: Callable[[], Awaitable[Any]], what: str) -> bool:
        """Write `puts` and each guard's `change`, expecting `expect` and the rows the changes were computed
        from, computed again when another gateway changed such a row first; False once `lost()` says the
        conflict was the payment's own (its id taken by another gateway, or the payment taken over).

        The guards' reads are awaited, one guard after another: between them another payment may
        change a row, and the store's expectation then fails this write, as another gateway's would."""
        for attempt in range(1, SHARED_ROW_TRIES + 1):
            batch, expected = list(puts), list(expect)
            for guard in self._guards:
                more, rows = await change(guard)
                batch += more
                expected += rows
            try:
                await self._commit.write(batch, expected)
                return True
            except Conflict:
                if await lost():
                    return False
                await asyncio.sleep(POLL.delay(attempt, _rng))
        raise StoreUnavailable(f"{what} met other gateways' changes {SHARED_ROW_TRIES} times; ask again")

    async def _stored(self, table: str, key: str) -> Any | None:
        """A row of the store as it stands, its read awaited (gateways sharing a store across the network)."""
        return await read(self._commit.store, table, key)

    def _owned(self, txn: Txn) -> Sequence[Expect]:
        """What a decision's write expects: where gateways share the store, that this one still owns it."""
        return [Expect(UNFINISHED, txn.payment.txn_id, "owner", self.owner)] if self.owner else ()

    def _taken_over(self, txn: Txn, decision: TxnState) -> None:
        """Another gateway took the payment over while this one was away (paused past its lease): its
        decision stands, this one's `decision` is dropped unheard; the store's answer is the one to give."""
        self._decided(txn, decision, False)
        txn_id = txn.payment.txn_id
        logger.warning("{} was taken over by another gateway before this one could decide it; "
                       "its decision stands", txn_id)
        self.txns.discard(txn_id)
        stored = self.txns.get(txn_id)
        if stored is not None:
            txn.state, txn.code, txn.message, txn.reason, txn.decided_at, txn.acked = (
                stored.state, stored.code, stored.message, stored.reason, stored.decided_at, stored.acked)

    def _refusal(self, txn_id: str, bank: str, vote: Vote | BaseException) -> MiniupiError | None:
        """None for a YES vote, else the refusal to give the client."""
        if isinstance(vote, Vote):
            if vote.yes:
                return None
            return _REFUSALS.get(vote.refusal, Aborted)(vote.detail or "payment refused")
        if isinstance(vote, TimeoutError):
            logger.warning("prepare {} at {} timed out", txn_id, bank)
            return Aborted(f"payment aborted: bank {bank} did not answer within {self._prepare_timeout:g}s")
        logger.warning("prepare {} at {} failed: {}", txn_id, bank,
                       vote.message if isinstance(vote, MiniupiError) else repr(vote))
        return Aborted(f"payment aborted: bank {bank} unavailable")

    # -- phase 2 --------------------------------------------------------

    def _start_phase_two(self, txn: Txn) -> None:
        """Send the decision to every bank now, and answer the client without waiting for the acks.

        The durable decision is the outcome; the acks only end phase 2. Reads
        stay in step: the decision is queued on each bank's link before the
        client hears of it, so anything the client does next through the
        gateway reaches that bank after it (Balance and History wait for it).
        """
        since = time.perf_counter()
        sent = self._decide_at_banks(txn)

        def first_try_done(answers: asyncio.Future[list[Any]]) -> None:
            if answers.cancelled():
                return
            if self._closing:  # start nothing new; what is not marked acknowledged is resent after the restart
                if all(isinstance(r, Ack) and r.applied for r in answers.result()):
                    self._mark_acked(txn)
                return
            if self._all_acked(txn, answers.result()):
                self._timed(txn.payment.txn_id, "phase2", since)
                self._mark_acked(txn)
            else:
                self._spawn(self._resend_decision(txn, since))

        sent.add_done_callback(first_try_done)

    async def _resend_decision(self, txn: Txn, since: float = 0.0) -> None:
        """Keep telling the banks until every one has acknowledged, backing off; `since`: when phase 2
        began in this process (perf_counter), 0 for a decision resent after a restart."""
        failures = 0
        while True:
            fire_after(self._hooks.miniupi_decision_resent, txn_id=txn.payment.txn_id, decision=txn.state,
                       attempt=failures + 1)
            if self._all_acked(txn, await self._decide_at_banks(txn)):
                break
            failures += 1
            await asyncio.sleep(RETRY.delay(failures, _rng))
        if since:
            self._timed(txn.payment.txn_id, "phase2", since)
        self._mark_acked(txn)

    async def _unrecord(self, txn_id: str) -> None:
        """Delete the record of a payment whose write was reported failed, in case it reached the store.

        A connection lost after COMMIT (PostgreSQL restarting) leaves it
        there, INITIATED and indexed unfinished, while this gateway has
        forgotten it and told the client its id is free: nothing but a
        restart's presumed abort would ever decide it. No bank heard of it.
        Written once the store writes again, unless the id is being paid
        again by then: that payment's own record replaces this one.
        """
        failures = 0
        while True:
            failures += 1
            await asyncio.sleep(RETRY.delay(failures, _rng))
            if self.txns.is_live(txn_id):
                return
            try:
                await self._commit.write([Put("txns", txn_id, None), finished(txn_id)])
                return
            except Exception as e:
                logger.error("removing the unanswered record of {} failed ({!r}); trying again", txn_id, e)

    async def _abort_undecided(self, txn: Txn) -> None:
        """Presumed abort without a restart, for a payment whose decision write failed.

        Its banks hold funds until they hear a decision, so the gateway keeps
        writing ABORTED, backing off, until the store takes it, then tells them.
        Nobody heard the failed decision, so aborting instead is safe; a stop
        in between leaves it to the restart's presumed abort.
        """
        message = "payment aborted: the gateway could not record its decision"
        decided_at = time.time()
        aborted = _aborted(txn, message, decided_at)
        failures = 0
        while True:
            failures += 1
            await asyncio.sleep(RETRY.delay(failures, _rng))
            try:
                if await self._write_decision(txn, aborted, TxnState.ABORTED):
                    break
                self._taken_over(txn, TxnState.ABORTED)
                return
            except Exception as e:
                self._decided(txn, TxnState.ABORTED, False)
                logger.error("abort of undecided {} could not be made durable ({!r}); trying again",
                             txn.payment.txn_id, e)
        txn.state, txn.code, txn.message, txn.reason = TxnState.ABORTED, Aborted.code, message, Aborted.reason
        txn.decided_at = decided_at
        self._decided(txn, TxnState.ABORTED, True)
        logger.warning("{} aborted: its decision could not be recorded", txn.payment.txn_id)
        fire_after(self._hooks.miniupi_after_decision, txn_id=txn.payment.txn_id, decision=TxnState.ABORTED,
                   reason=Aborted.reason, kind=txn.payment.kind)
        self._start_phase_two(txn)

    def _decide_at_banks(self, txn: Txn) -> asyncio.Future[list[Ack | BaseException]]:
        commit = txn.state == TxnState.COMMITTED
        return asyncio.gather(*(self._banks.decide(b, txn.payment.txn_id, commit) for b in txn.payment.banks),
                              return_exceptions=True)  # futures: no tasks

    def _all_acked(self, txn: Txn, results: list[Ack | BaseException]) -> bool:
        acked = True
        for bank, result in zip(txn.payment.banks, results):
            if isinstance(result, Ack) and result.applied:
                fire_after(self._hooks.miniupi_after_decision_sent, txn_id=txn.payment.txn_id, bank=bank,
                           decision=txn.state)
                continue
            acked = False
            detail = (result.detail if isinstance(result, Ack) else result.message
                      if isinstance(result, MiniupiError) else repr(result))
            logger.warning("{} of {} at {} not acknowledged: {}", txn.state, txn.payment.txn_id, bank, detail)
        return acked

    def _mark_acked(self, txn: Txn, failures: int = 0) -> None:
        txn.acked = True

        def failed() -> None:  # the store was away: write it again, backing off, until it takes it
            if not self._closing:
                asyncio.get_running_loop().call_later(RETRY.delay(failures + 1, _rng), self._mark_acked, txn,
                                                      failures + 1)

        # Lost in a crash, this write only means the decision is sent once more after the restart.
        self._commit.write_later([Put("txns", txn.payment.txn_id, txn.record()), finished(txn.payment.txn_id)],
                                 failed)
        self.txns.retire(txn.payment.txn_id)  # settled: from now on read from the store (or the cache)

    def _release(self, txn: Txn) -> None:
        for guard in self._guards:
            guard.release(txn)

    def _deciding(self, txn: Txn, decision: TxnState) -> list[Put]:
        return [put for guard in self._guards for put in guard.deciding(txn, decision)]

    def _decided(self, txn: Txn, decision: TxnState, durable: bool) -> None:
        for guard in self._guards:
            guard.decided(txn, decision, durable)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def decision(self, txn_id: str) -> TxnState:
        """For a bank in doubt. Presumed abort: an id never recorded is ABORTED."""
        txn = self.txns.get(txn_id)
        return txn.state if txn is not None else TxnState.ABORTED

    async def close(self) -> None:
        self._closing = True
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
