"""The gateway's recent payments and their steps (nodes/timeline.py), fed through its hooks.

In process: a Timeline over a dict of live payments, the hooks called as
the coordinator calls them. The same through a real cluster, as the
console reads it, is in tests/nodes/test_recent_payments.py.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable

from miniupi.nodes.coordinator import Payment, Txn
from miniupi.nodes.timeline import STEPS, Timeline, TimelineHooks
from miniupi.states import TxnState


def live(*payments: Payment) -> dict[str, Txn]:
    return {p.txn_id: Txn(p, TxnState.INITIATED, created_at=100.0) for p in payments}


def clock() -> Callable[[], float]:
    ticks = itertools.count(101)
    return lambda: float(next(ticks))


def test_a_payment_s_steps_are_its_two_phase_commit_in_order() -> None:
    txns = live(Payment("t1", "alice@bank_a", "bob@bank_b", 5_00, "INR"))
    timeline = Timeline(txns.get, clock=clock())
    hooks = TimelineHooks(timeline)
    hooks.miniupi_before_prepare(txn_id="t1")
    hooks.miniupi_after_prepare(txn_id="t1", bank="bank_b", answer="yes")
    hooks.miniupi_after_prepare(txn_id="t1", bank="bank_a", answer="yes")
    hooks.miniupi_before_decision(txn_id="t1", decision="COMMITTED")
    hooks.miniupi_after_decision(txn_id="t1", decision="COMMITTED", reason="")
    hooks.miniupi_after_decision_sent(txn_id="t1", bank="bank_a", decision="COMMITTED")
    hooks.miniupi_after_decision_sent(txn_id="t1", bank="bank_b", decision="COMMITTED")
    [trace] = timeline.changed_after(0, 10)
    assert (trace.payer, trace.payee, trace.amount, trace.kind, trace.state) == (
        "alice@bank_a", "bob@bank_b", 5_00, "payment", "COMMITTED")
    assert [(s.what, s.bank, s.detail) for s in trace.steps] == [
        ("recorded", "", ""), ("prepare", "bank_a", ""), ("prepare", "bank_b", ""),
        ("vote", "bank_b", "yes"), ("vote", "bank_a", "yes"), ("decided", "", "COMMITTED"),
        ("durable", "", "COMMITTED"), ("ack", "bank_a", "COMMITTED"), ("ack", "bank_b", "COMMITTED")]
    assert trace.steps[0].at == 100.0  # the record's own time
    assert [s.at for s in trace.steps[1:]] == sorted(s.at for s in trace.steps[1:])


def test_a_reader_gets_only_what_changed_after_the_number_it_saw_newest_first() -> None:
    txns = live(*(Payment(f"t{i}", "alice@bank_a", "bob@bank_a", 1, "INR") for i in range(3)))
    timeline = Timeline(txns.get)
    hooks = TimelineHooks(timeline)
    for i in range(3):
        hooks.miniupi_before_prepare(txn_id=f"t{i}")
    seen = timeline.seq
    assert [t.txn_id for t in timeline.changed_after(0, 10)] == ["t2", "t1", "t0"]
    assert [len(t.steps) for t in timeline.changed_after(0, 10)] == [2, 2, 2]  # one bank: one prepare
    assert timeline.changed_after(seen, 10) == []
    hooks.miniupi_after_decision(txn_id="t0", decision="ABORTED", reason="INSUFFICIENT_FUNDS")
    [changed] = timeline.changed_after(seen, 10)
    assert (changed.txn_id, changed.state, changed.reason) == ("t0", "ABORTED", "INSUFFICIENT_FUNDS")
    assert [t.txn_id for t in timeline.changed_after(0, 2)] == ["t0", "t2"]


def test_it_keeps_the_newest_payments_and_a_bounded_run_of_steps() -> None:
    txns = live(*(Payment(f"t{i}", "alice@bank_a", "bob@bank_b", 1, "INR") for i in range(50)))
    timeline = Timeline(txns.get, recent=10)
    hooks = TimelineHooks(timeline)
    for i in range(50):
        hooks.miniupi_before_prepare(txn_id=f"t{i}")
    assert [t.txn_id for t in timeline.changed_after(0, 100)] == [f"t{i}" for i in range(49, 39, -1)]
    for attempt in range(1, 200):
        hooks.miniupi_decision_resent(txn_id="t49", decision="COMMITTED", attempt=attempt)
    steps = timeline.get("t49").steps
    assert len(steps) == STEPS
    assert steps[0].what == "recorded" and steps[-1].detail == "COMMITTED, attempt 199"


def test_steps_of_a_payment_it_never_saw_recorded_start_its_trace_from_the_live_record() -> None:
    """A decision resent after a restart: the trace starts there, and a settled id adds nothing."""
    txns = live(Payment("t1", "alice@bank_a", "bob@bank_b", 5_00, "INR", refund_of="t0"))
    timeline = Timeline(txns.get)
    hooks = TimelineHooks(timeline)
    hooks.miniupi_decision_resent(txn_id="t1", decision="COMMITTED", attempt=1)
    hooks.miniupi_after_decision_sent(txn_id="gone", bank="bank_a", decision="COMMITTED")
    [trace] = timeline.changed_after(0, 10)
    assert (trace.txn_id, trace.kind, trace.state, [s.what for s in trace.steps]) == (
        "t1", "refund", "COMMITTED", ["resent"])
