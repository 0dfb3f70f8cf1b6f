"""The gateway's recent payments, each with the steps of its two-phase commit, for `miniupi console`.

A learner watching the console clicks a payment and sees what happened to
it: recorded, a prepare sent to each bank, each bank's vote and when, the
decision, its durable write, each bank's acknowledgement, and any resend
after a crash. The gateway learns each step from its own plugin hooks (an
observer registered on its plugin manager, like any plugin), so the
coordinator knows nothing of it.

It is memory only and bounded: the newest RECENT payments, each with at
most STEPS steps. A restart starts it empty (a payment resent after a
restart reappears with its resends). Every change takes the next sequence
number, so a reader asks for what changed after the last number it saw
(RecentPayments), and several readers cost one list each.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from miniupi.contract.hookspecs import hookimpl
from miniupi.states import TxnState

RECENT = 1_000  # payments kept
STEPS = 64  # steps kept per payment: a decision resent for hours keeps its first and last ones


@dataclass(frozen=True, slots=True)
class Step:
    at: float  # Unix time
    what: str  # recorded, prepare, vote, decided, durable, ack, resent
    bank: str = ""
    detail: str = ""  # a vote's yes or no and why, a decision's state


@dataclass(slots=True)
class Trace:
    txn_id: str
    payer: str
    payee: str
    amount: int
    currency: str
    kind: str  # payment, refund or request
    started_at: float
    state: str = TxnState.INITIATED
    reason: str = ""
    steps: list[Step] = field(default_factory=list)
    seq: int = 0  # the sequence number of its last change


class Timeline:
    """The recent payments and their steps; `lookup(txn_id)` gives a live payment's Txn (coordinator.txns)."""

    def __init__(self, lookup: Callable[[str], Any], recent: int = RECENT, clock: Callable[[], float] = time.time):
        self._lookup, self._recent, self._clock = lookup, recent, clock
        self._traces: OrderedDict[str, Trace] = OrderedDict()  # oldest change first
        self.seq = 0

    def trace_of(self, txn_id: str) -> Trace | None:
        """The payment's trace, made from its live record the first time; None for one not live."""
        trace = self._traces.get(txn_id)
        if trace is not None:
            return trace
        txn = self._lookup(txn_id)
        if txn is None:
            return None
        p = txn.payment
        trace = Trace(txn_id, p.payer, p.payee, p.amount, p.currency, p.kind, txn.created_at, txn.state,
                      txn.reason)
        self._traces[txn_id] = trace
        while len(self._traces) > self._recent:
            self._traces.popitem(last=False)
        return trace

    def note(self, txn_id: str, what: str, bank: str = "", detail: str = "", at: float | None = None) -> None:
        """Add a step to the payment's trace (made from its live record the first time)."""
        trace = self.trace_of(txn_id)
        if trace is None:
            return
        if len(trace.steps) >= STEPS:
            del trace.steps[STEPS // 2]  # keep the first half and the newest
        trace.steps.append(Step(self._clock() if at is None else at, what, bank, detail))
        self.seq += 1
        trace.seq = self.seq
        self._traces.move_to_end(txn_id)

    def settle(self, txn_id: str, state: str, reason: str) -> None:
        trace = self._traces.get(txn_id)
        if trace is not None:
            trace.state, trace.reason = state, reason

    def changed_after(self, seq: int, limit: int) -> list[Trace]:
        """The payments changed after `seq`, newest change first, at most `limit`."""
        found: list[Trace] = []
        for trace in reversed(self._traces.values()):
            if trace.seq <= seq or len(found) >= limit:
                break
            found.append(trace)
        return found

    def get(self, txn_id: str) -> Trace | None:
        return self._traces.get(txn_id)


class TimelineHooks:
    """The hooks that feed a Timeline: registered on the gateway's plugin manager at start."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline

    @hookimpl
    def miniupi_before_prepare(self, txn_id: str) -> None:
        t = self.timeline
        trace = t.trace_of(txn_id)
        if trace is None:
            return
        if not trace.steps:
            t.note(txn_id, "recorded", at=trace.started_at)
        for bank in dict.fromkeys((trace.payer.rpartition("@")[2], trace.payee.rpartition("@")[2])):
            t.note(txn_id, "prepare", bank)

    @hookimpl
    def miniupi_after_prepare(self, txn_id: str, bank: str, answer: str) -> None:
        self.timeline.note(txn_id, "vote", bank, answer)

    @hookimpl
    def miniupi_before_decision(self, txn_id: str, decision: str) -> None:
        self.timeline.note(txn_id, "decided", detail=decision)

    @hookimpl
    def miniupi_after_decision(self, txn_id: str, decision: str, reason: str) -> None:
        self.timeline.settle(txn_id, decision, reason)
        self.timeline.note(txn_id, "durable", detail=decision)

    @hookimpl
    def miniupi_after_decision_sent(self, txn_id: str, bank: str, decision: str) -> None:
        self.timeline.note(txn_id, "ack", bank, decision)

    @hookimpl
    def miniupi_decision_resent(self, txn_id: str, decision: str, attempt: int) -> None:
        t = self.timeline
        trace = t.trace_of(txn_id)
        if trace is not None:
            t.settle(txn_id, decision, trace.reason)
            t.note(txn_id, "resent", detail=f"{decision}, attempt {attempt}")
