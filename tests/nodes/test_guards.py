"""The gateway's bounds on payments, without a server: the daily limit's calendar and the settlement's arithmetic.

The live tests (test_daily_limit.py, test_refunds.py) prove the bounds hold
under concurrency and restarts; these pin what is awkward to reach through a
cluster: midnight in the cluster's time zone, and netting over any mix of
payments.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, strategies as st

from dict_store import DictStore
from miniupi.config import parse_config
from miniupi.contract.store import Put
from miniupi.errors import DailyLimitReached
from miniupi.nodes.coordinator import Payment, Txn
from miniupi.nodes.limits import DailyLimit
from miniupi.nodes.settlement import settle
from miniupi.states import TxnState

IST = ZoneInfo("Asia/Kolkata")
CLUSTER = parse_config({
    "cluster": {"daily_limit": "100.00", "time_zone": "Asia/Kolkata"},
    "gateway": {"port": 1},
    "banks": {"bank_a": {"port": 2}, "bank_b": {"port": 3}, "bank_c": {"port": 4}},
    "daily_limits": {"vip@bank_a": "1000.00"},
}, Path("c.toml"))


def at(text: str) -> float:
    """Unix time of a wall-clock time in India."""
    return datetime.fromisoformat(text).replace(tzinfo=IST).timestamp()


def payment(txn_id: str, amount: int, payer: str = "alice@bank_a", payee: str = "bob@bank_b",
            refund_of: str = "") -> Payment:
    return Payment(txn_id, payer, payee, amount, "INR", refund_of=refund_of)


def test_the_day_is_the_cluster_time_zone_calendar_day() -> None:
    limit = DailyLimit(CLUSTER)
    limit.admit(payment("t1", 9_000), at("2026-12-06T23:59:00"))
    with pytest.raises(DailyLimitReached, match=r"daily limit of 100\.00 INR reached"):
        limit.admit(payment("t2", 1_001), at("2026-12-06T23:59:30"))
    # 00:00 in India is 18:30 UTC the evening before: a UTC calendar would still count 90.00.
    limit.admit(payment("t3", 10_000), at("2026-12-07T00:00:01"))
    assert limit.sent_today("alice@bank_a", at("2026-12-07T00:00:02")) == 10_000


def test_an_abort_frees_its_share_and_refunds_never_count() -> None:
    limit = DailyLimit(CLUSTER)
    now = at("2026-12-06T12:00:00")
    limit.admit(payment("t1", 10_000), now)
    limit.admit(payment("r1", 10_000, refund_of="x"), now)  # a refund passes whatever was sent
    with pytest.raises(DailyLimitReached):
        limit.admit(payment("t2", 1), now)
    limit.release(Txn(payment("t1", 10_000), TxnState.ABORTED, created_at=now))
    limit.admit(payment("t2", 10_000), now)


def test_an_abort_of_yesterday_does_not_free_today() -> None:
    limit = DailyLimit(CLUSTER)
    yesterday = at("2026-12-06T23:00:00")
    limit.admit(payment("t1", 5_000), yesterday)
    today = at("2026-12-07T09:00:00")
    limit.admit(payment("t2", 10_000), today)
    limit.release(Txn(payment("t1", 5_000), TxnState.ABORTED, created_at=yesterday))
    with pytest.raises(DailyLimitReached):
        limit.admit(payment("t3", 1), today)


def test_a_per_account_exception_replaces_the_cluster_limit() -> None:
    limit = DailyLimit(CLUSTER)
    now = at("2026-12-06T12:00:00")
    limit.admit(payment("t1", 99_000, payer="vip@bank_a"), now)
    with pytest.raises(DailyLimitReached, match=r"1000\.00 INR"):
        limit.admit(payment("t2", 1_001, payer="vip@bank_a"), now)


def decide(limit: DailyLimit, store: DictStore, p: Payment, state: TxnState, created_at: float) -> None:
    """Admit `p` and write its decision as the coordinator does: the record and the guard's rows in one batch."""
    limit.admit(p, created_at)
    txn = Txn(p, TxnState.INITIATED, created_at=created_at)
    store.write([Put("txns", p.txn_id, {**txn.record(), "state": state}), *limit.deciding(txn, state)])
    limit.decided(txn, state, True)


def test_a_restart_counts_todays_committed_payments_only() -> None:
    import time

    store = DictStore()
    limit = DailyLimit(CLUSTER, store)
    now = time.time()
    decide(limit, store, payment("a", 6_000), TxnState.COMMITTED, now)
    decide(limit, store, payment("b", 3_000), TxnState.ABORTED, now)
    decide(limit, store, payment("c", 6_000), TxnState.COMMITTED, now - 3 * 86400)
    decide(limit, store, payment("d", 6_000, refund_of="z"), TxnState.COMMITTED, now)

    restarted = DailyLimit(CLUSTER, store)
    assert restarted.sent_today("alice@bank_a", now) == 6_000
    restarted.admit(payment("e", 4_000), now)
    with pytest.raises(DailyLimitReached):
        restarted.admit(payment("f", 1), now)
    assert store.reads["scan", "txns"] == 0  # a payer's day is one row, read when needed


BANKS = ["bank_a", "bank_b", "bank_c"]
txn_strategy = st.builds(
    lambda i, frm, to, amount, state, decided_at: Txn(
        Payment(f"t{i}", f"u@{frm}", f"v@{to}", amount, "INR"), state, decided_at=decided_at),
    st.integers(0, 10**9), st.sampled_from(BANKS), st.sampled_from(BANKS), st.integers(1, 10**15),
    st.sampled_from([TxnState.COMMITTED, TxnState.ABORTED, TxnState.INITIATED]), st.floats(1.0, 1000.0))


@given(st.lists(txn_strategy, max_size=40), st.floats(0.0, 1000.0), st.floats(0.0, 1000.0))
def test_net_positions_sum_to_zero_and_account_for_every_committed_payment(
        txns: list[Txn], since: float, until: float) -> None:
    report = settle(txns, BANKS, since, until)
    assert sum(report.net.values()) == 0
    assert set(report.net) == set(BANKS)
    counted = [t for t in txns if t.state == TxnState.COMMITTED
               and (not since or t.decided_at >= since) and (not until or t.decided_at < until)]
    between = [t for t in counted if t.payment.payer[2:] != t.payment.payee[2:]]
    assert sum(f.amount for f in report.gross) == sum(t.payment.amount for t in between)
    assert sum(f.payments for f in report.gross) == len(between)
    assert sum(f.payments for f in report.intra_bank) == len(counted) - len(between)
    assert all(f.from_bank != f.to_bank for f in report.gross)
    assert all(f.from_bank == f.to_bank for f in report.intra_bank)
    for bank in BANKS:
        received = sum(f.amount for f in report.gross if f.to_bank == bank)
        sent = sum(f.amount for f in report.gross if f.from_bank == bank)
        assert report.net[bank] == received - sent
