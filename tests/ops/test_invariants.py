"""The streaming checker: what it finds, fed id by id through the join, and the memory it keeps.

For random small readings it must judge exactly as the checker that held
every reading in dicts did (tests/ops/audit_oracle.py); over a long run of
payments among few accounts its memory must stay flat where the dicts grow
with every payment.
"""
from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miniupi.config import ClusterConfig, parse_config
from miniupi.ops.audit import BankView, GatewayTxnView, GatewayView, RequestView, check
from miniupi.ops.invariants import AuditReport, Checker
from miniupi.ops.join import OutOfOrder, Run, hungry, ready

from audit_oracle import old_check

IDS = [f"{i}{i}{i}{i}{i}{i}{i}{i}-0000-4000-8000-000000000000" for i in range(1, 8)]  # sorted as listed
ACCOUNTS = ["alice@bank_a", "dave@bank_a", "bob@bank_b", "carol@bank_c"]
BANKS = ("bank_a", "bank_b", "bank_c")
NOON = 1_796_536_800.0  # 2026-12-06 12:00 in Kolkata
STATES = ["COMMITTED", "COMMITTED", "ABORTED", "INITIATED"]


def limits(daily_limit: str = "0.25") -> ClusterConfig:
    return parse_config({"cluster": {"daily_limit": daily_limit, "time_zone": "Asia/Kolkata"},
                         "gateway": {"port": 1}, "banks": {name: {"port": 2 + i} for i, name in enumerate(BANKS)}},
                        Path("audit.toml"))


@st.composite
def readings(draw: st.DrawFn) -> tuple[dict[str, GatewayTxnView], list[BankView]]:
    """A gateway's transactions and requests and three banks' ledgers: mostly as they should be, each
    drawn part sometimes off in the ways the audit must catch."""
    gateway: dict[str, GatewayTxnView] = {}
    for txn_id in draw(st.lists(st.sampled_from(IDS), unique=True, max_size=6)):
        payer, payee = draw(st.lists(st.sampled_from(ACCOUNTS), min_size=2, max_size=2, unique=True))
        gateway[txn_id] = GatewayTxnView(
            payer, payee, draw(st.integers(1, 30)), draw(st.sampled_from(STATES)), draw(st.booleans()),
            draw(st.sampled_from(["", "", "", *IDS, "99999999-9999-4999-8999-999999999999"])),
            draw(st.sampled_from(["", "", txn_id, *IDS[:3]])), NOON + draw(st.sampled_from([0, 60, 86400])),
            NOON + 1)
    if draw(st.booleans()):
        requests = {rid: RequestView(*draw(st.lists(st.sampled_from(ACCOUNTS), min_size=2, max_size=2, unique=True)),
                                     draw(st.integers(1, 30)),
                                     draw(st.sampled_from(["PENDING", "PAYING", "PAID", "FAILED", "DECLINED",
                                                           "EXPIRED", "LOST"])))
                    for rid in draw(st.lists(st.sampled_from(IDS), unique=True, max_size=4))}
        gateway = GatewayView(gateway, requests)
    banks = {name: BankView(name) for name in BANKS}
    balances = dict.fromkeys(ACCOUNTS, 100)
    for txn_id, g in gateway.items():
        legs: dict[str, list[tuple[str, int, str]]] = {}
        (payer, payer_bank), (payee, payee_bank) = g.payer.split("@"), g.payee.split("@")
        legs.setdefault(payer_bank, []).append((payer, -g.amount, g.payee))
        legs.setdefault(payee_bank, []).append((payee, g.amount, g.payer))
        for bank, bank_legs in legs.items():
            state = draw(st.sampled_from([{"INITIATED": "PREPARED"}.get(g.state, g.state)] * 3
                                         + ["PREPARED", "COMMITTED", "ABORTED", None]))
            if state is not None:
                banks[bank].txns[txn_id] = (state, bank_legs)
            if state == "COMMITTED":
                for account, delta, _ in bank_legs:
                    balances[f"{account}@{bank}"] += delta
    for txn_id in draw(st.lists(st.sampled_from(IDS), max_size=2)):  # a bank's own: a deposit, or a stray
        bank = draw(st.sampled_from(BANKS))
        account = draw(st.sampled_from(["alice", "bob", "carol", "ghost"]))
        banks[bank].txns[txn_id] = (draw(st.sampled_from(["DEPOSITED", "COMMITTED", "PREPARED"])),
                                    [(account, draw(st.integers(-5, 5)),
                                      draw(st.sampled_from(["treasury", "bob@bank_b", "bob", "x@"])))])
    for account, balance in balances.items():
        user, bank = account.split("@")
        held = draw(st.sampled_from([0, 0, 5]))
        banks[bank].accounts[user] = (balance + draw(st.sampled_from([0, 0, 0, 1])), held, 100)
        banks[bank].deposits += 100
    banks["bank_b"].treasury = draw(st.sampled_from([0, 0, 3]))
    return gateway, list(banks.values())


def same_verdict(new: AuditReport, old: AuditReport) -> None:
    # The old checker could say one thing twice (a payment within one bank, checked once per account);
    # and listed unknown accounts in set order.
    assert sorted(set(new.violations)) == sorted(set(old.violations))
    assert sorted(set(new.in_doubt)) == sorted(set(old.in_doubt))
    assert (new.banks, new.accounts, new.total, new.issued, new.issued_by_treasury, new.deposits, new.committed,
            new.aborted, new.refunds, new.requests) == (
        old.banks, old.accounts, old.total, old.issued, old.issued_by_treasury, old.deposits, old.committed,
        old.aborted, old.refunds, old.requests)
    assert new.settlement == old.settlement


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reading=readings(), settled=st.booleans(), with_limits=st.booleans())
def test_the_streaming_checker_judges_any_small_reading_as_the_whole_reading_checker_did(
        reading: tuple[dict[str, GatewayTxnView], list[BankView]], settled: bool, with_limits: bool) -> None:
    gateway, banks = reading
    cluster = limits() if with_limits else None
    same_verdict(check(gateway, banks, settled, cluster), old_check(gateway, banks, settled, cluster))


def test_a_refunds_original_passed_in_the_run_is_read_again_and_one_still_ahead_is_kept_when_reached() -> None:
    first, original, last = IDS[0], IDS[3], IDS[6]
    pay = GatewayTxnView("alice@bank_a", "bob@bank_b", 30, "COMMITTED", True)
    refund = GatewayTxnView("bob@bank_b", "alice@bank_a", 31, "COMMITTED", True, refund_of=original)
    over = f"{original} of 30 has 31 refunded, more than it: committed refunds"

    def refunds(report: AuditReport) -> list[str]:
        return [v for v in report.violations if "refund" in v]  # no banks here: the rest is about them

    def judged(*run: tuple[str, GatewayTxnView]) -> Checker:
        checker = Checker([], requests=True)
        for txn_id, g in run:
            checker.observe(txn_id, g, None, {})
        return checker

    ahead = judged((first, refund), (original, pay))
    assert ahead.lookups() == (set(), set())
    assert refunds(ahead.finish()) == [f"{over} {first}"]
    passed = judged((original, pay), (last, refund))
    assert passed.lookups() == ({original}, set())
    assert refunds(passed.finish({original: pay})) == [f"{over} {last}"]
    # Read again and not found: the refund gives back nothing the gateway recorded.
    assert refunds(judged((original, pay), (last, refund)).finish()) == [
        f"refund {last} gives back {original}, which the gateway never recorded"]


def test_the_join_lines_up_runs_by_id_and_says_which_run_to_read_next() -> None:
    gateway, bank = Run("the gateway", [("a", 1), ("c", 3)]), Run("bank_a", [("b", 20)], done=True)
    assert list(ready([gateway, bank])) == [("a", [1, None]), ("b", [None, 20]), ("c", [3, None])]
    assert hungry([gateway, bank]) == [gateway]  # "d" may still come from the gateway
    gateway.extend([("d", 4)])
    gateway.done = True
    assert list(ready([gateway, bank])) == [("d", [4, None])] and hungry([gateway, bank]) == []


def test_runs_sharing_one_stream_go_on_as_far_as_the_stream_has_come() -> None:
    # The gateway's payments and requests come in one stream in id order, a request after its payment:
    # a chunk ending with payment "c" means no payment up to "c" and no request below "c" is to come.
    txns, requests, bank = Run("the gateway"), Run("the gateway's requests"), Run("bank_a", [("a", 1), ("d", 4)])
    txns.extend([("a", "pay a"), ("c", "pay c")])
    txns.arrived("c")
    requests.arrived("c", inclusive=False)
    assert list(ready([txns, requests, bank])) == [("a", ["pay a", None, 1])]
    assert hungry([txns, requests, bank]) == [requests]  # request "c" may still come
    requests.extend([("c", "ask c")])
    assert list(ready([txns, requests, bank])) == [("c", ["pay c", "ask c", None])]
    assert hungry([txns, requests, bank]) == [txns, requests]  # "d" is the bank's; theirs may come first


def test_a_run_out_of_id_order_is_refused_rather_than_judged() -> None:
    run = Run("bank_a", [("b", 1)])
    with pytest.raises(OutOfOrder, match="bank_a listed a after b, not in id order"):
        run.extend([("a", 2)])


# -- memory -------------------------------------------------------------------------------------------------

PAYERS, PAYEES, DAY = 10, 7, 86400.0


def payments(n: int) -> Iterator[tuple[str, GatewayTxnView, dict[str, tuple[str, list[tuple[str, int, str]]]]]]:
    """n committed payments of 1 from ten payers at bank_a to seven payees at bank_b, over three days."""
    for i in range(n):
        payer, payee = f"p{i % PAYERS}", f"q{i % PAYEES}"
        at = NOON + (i % 3) * DAY
        g = GatewayTxnView(f"{payer}@bank_a", f"{payee}@bank_b", 1, "COMMITTED", True, created_at=at, decided_at=at)
        yield (f"00000000-0000-4000-8000-{i:012d}", g,
               {"bank_a": ("COMMITTED", [(payer, -1, g.payee)]), "bank_b": ("COMMITTED", [(payee, 1, g.payer)])})


def ledgers(n: int) -> list[BankView]:
    """The two banks' accounts after `payments(n)`, each with an opening of 10**6."""
    a, b = BankView("bank_a", deposits=PAYERS * 10**6), BankView("bank_b", deposits=PAYEES * 10**6)
    a.accounts = {f"p{k}": (10**6 - len(range(k, n, PAYERS)), 0, 10**6) for k in range(PAYERS)}
    b.accounts = {f"q{k}": (10**6 + len(range(k, n, PAYEES)), 0, 10**6) for k in range(PAYEES)}
    return [a, b]


def streamed_peak(n: int) -> tuple[int, AuditReport]:
    """The peak of memory allocated while the checker judges `payments(n)`, and its report."""
    banks = ledgers(n)
    tracemalloc.start()
    try:
        checker = Checker(banks, settled=True, cluster=limits("1000000.00"), requests=True)
        for txn_id, g, at_banks in payments(n):
            checker.observe(txn_id, g, None, at_banks)
        report = checker.finish()
        return tracemalloc.get_traced_memory()[1], report
    finally:
        tracemalloc.stop()


BOUND = 1 << 20  # 1 MiB: what judging any number of these payments may take


def test_judging_200000_payments_takes_as_little_memory_as_judging_20000() -> None:
    small, _ = streamed_peak(20_000)
    peak, report = streamed_peak(200_000)
    assert report.ok, report.violations
    assert (report.committed, [(f.from_bank, f.to_bank, f.amount, f.payments) for f in report.settlement.gross]) == (
        200_000, [("bank_a", "bank_b", 200_000, 200_000)])
    assert peak < BOUND, peak
    assert peak < small + 64 * 1024, (small, peak)  # flat: not ten times the payments, not more memory


def test_holding_the_same_payments_in_dicts_as_the_whole_reading_checker_did_would_not_fit() -> None:
    tracemalloc.start()
    try:
        gateway, banks = GatewayView(), ledgers(200_000)
        for txn_id, g, at_banks in payments(200_000):
            gateway[txn_id] = g
            for bank in banks:
                bank.txns[txn_id] = at_banks[bank.name]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak > 50 * BOUND, peak
