"""The audit's rules for refunds, collect requests, daily limits and settlement between banks.

First over hand-made readings of a three-bank cluster, each changed in one
way the audit must catch; then on a live cluster whose settlement is
computed here by hand.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from miniupi.config import ClusterConfig, parse_config
from miniupi.errors import InsufficientFunds
from miniupi.nodes.settlement import Flow
from miniupi.ops.audit import BankView, GatewayTxnView, GatewayView, RequestView, check
from miniupi.ops.testing import LocalCluster

ALICE, DAVE, BOB, CAROL = "alice@bank_a", "dave@bank_a", "bob@bank_b", "carol@bank_c"
BANKS = ("bank_a", "bank_b", "bank_c")
OPENING = 1000_00
KOLKATA = ZoneInfo("Asia/Kolkata")
NOON = datetime(2026, 12, 6, 12, 0, tzinfo=KOLKATA).timestamp()

PAY = "11111111-1111-4111-8111-111111111111"  # alice -> bob 50.00
REFUND = "22222222-2222-4222-8222-222222222222"  # bob gives 20.00 of PAY back
ASKED = "33333333-3333-4333-8333-333333333333"  # carol asks bob for 30.00; bob approved: its payment
INSIDE = "44444444-4444-4444-8444-444444444444"  # alice -> dave 10.00, within bank_a
REFUSED = "55555555-5555-4555-8555-555555555555"  # carol -> alice 5.00, aborted
WAITING = "66666666-6666-4666-8666-666666666666"  # carol asks alice for 7.00, not answered yet
OTHER = "77777777-7777-4777-8777-777777777777"
MORE = "88888888-8888-4888-8888-888888888888"


def txn(payer: str, payee: str, amount: int, state: str = "COMMITTED", refund_of: str = "", request_id: str = "",
        at: float = NOON) -> GatewayTxnView:
    return GatewayTxnView(payer, payee, amount, state, True, refund_of, request_id, at, at + 0.1)


def scenario() -> GatewayView:
    return GatewayView({
        PAY: txn(ALICE, BOB, 50_00),
        REFUND: txn(BOB, ALICE, 20_00, refund_of=PAY),
        ASKED: txn(BOB, CAROL, 30_00, request_id=ASKED),
        INSIDE: txn(ALICE, DAVE, 10_00),
        REFUSED: txn(CAROL, ALICE, 5_00, state="ABORTED"),
    }, requests={ASKED: RequestView(BOB, CAROL, 30_00, "PAID"), WAITING: RequestView(CAROL, ALICE, 7_00, "PENDING")})


def ledgers(gateway: GatewayView) -> list[BankView]:
    """What the banks would hold after the gateway's transactions: each one's legs, and balances to match."""
    banks = {name: BankView(name) for name in BANKS}
    balances = {account: OPENING for account in (ALICE, DAVE, BOB, CAROL)}
    for txn_id, g in gateway.items():
        (payer, payer_bank), (payee, payee_bank) = g.payer.split("@"), g.payee.split("@")
        legs = {payer_bank: [(payer, -g.amount, g.payee)]}
        legs.setdefault(payee_bank, []).append((payee, g.amount, g.payer))
        for bank, bank_legs in legs.items():
            banks[bank].txns[txn_id] = (g.state, bank_legs)
        if g.state == "COMMITTED":
            balances[g.payer] -= g.amount
            balances[g.payee] += g.amount
    for account, balance in balances.items():
        user, bank = account.split("@")
        banks[bank].accounts[user] = (balance, 0, OPENING)
        banks[bank].deposits += OPENING
    return list(banks.values())


def limits(daily_limit: str = "100.00", time_zone: str = "Asia/Kolkata", **per_account: str) -> ClusterConfig:
    return parse_config({"cluster": {"daily_limit": daily_limit, "time_zone": time_zone},
                         "gateway": {"port": 1}, "banks": {name: {"port": 2 + i} for i, name in enumerate(BANKS)},
                         "daily_limits": per_account}, Path("audit.toml"))


def audited(gateway: GatewayView, cluster: ClusterConfig | None = None, settled: bool = True) -> list[str]:
    return check(gateway, ledgers(gateway), settled=settled, cluster=cluster or limits()).violations


# -- a clean reading ---------------------------------------------------------------------------------------


def test_refunds_requests_and_payments_among_three_banks_pass_and_settle_as_computed_by_hand() -> None:
    report = check(scenario(), ledgers(scenario()), cluster=limits())
    assert report.ok, report.violations
    assert (report.committed, report.aborted, report.refunds, report.requests) == (4, 1, 1, 2)
    assert report.settlement.gross == [Flow("bank_a", "bank_b", 50_00, 1), Flow("bank_b", "bank_a", 20_00, 1),
                                       Flow("bank_b", "bank_c", 30_00, 1)]
    assert report.settlement.net == {"bank_a": -30_00, "bank_b": 0, "bank_c": 30_00}
    assert report.settlement.intra_bank == [Flow("bank_a", "bank_a", 10_00, 1)]
    assert json.loads(json.dumps(report.as_dict()))["settlement"] == {
        "gross": [{"from_bank": "bank_a", "to_bank": "bank_b", "amount_minor": 50_00, "payments": 1},
                  {"from_bank": "bank_b", "to_bank": "bank_a", "amount_minor": 20_00, "payments": 1},
                  {"from_bank": "bank_b", "to_bank": "bank_c", "amount_minor": 30_00, "payments": 1}],
        "net_minor": {"bank_a": -30_00, "bank_b": 0, "bank_c": 30_00},
        "intra_bank": [{"from_bank": "bank_a", "to_bank": "bank_a", "amount_minor": 10_00, "payments": 1}]}


def test_a_plain_dict_of_transactions_is_a_reading_whose_requests_are_not_judged() -> None:
    gateway = scenario()
    del gateway[ASKED]
    report = check(dict(gateway), ledgers(gateway))
    assert report.ok and report.requests == 0, report.violations


# -- refunds -----------------------------------------------------------------------------------------------


def test_committed_refunds_adding_up_to_more_than_their_payment_are_caught() -> None:
    gateway = scenario()
    gateway[OTHER] = txn(BOB, ALICE, 30_01, refund_of=PAY)
    assert audited(gateway) == [f"{PAY} of 5000 has 5001 refunded, more than it: committed refunds {REFUND}, {OTHER}"]


def test_aborted_refunds_count_for_nothing() -> None:
    gateway = scenario()
    gateway[OTHER] = txn(BOB, ALICE, 40_00, state="ABORTED", refund_of=PAY)
    assert audited(gateway) == []


@pytest.mark.parametrize("payer, payee", [(ALICE, BOB), (CAROL, ALICE), (BOB, CAROL)], ids=str)
def test_a_refund_that_does_not_go_back_the_way_its_payment_came_is_caught(payer: str, payee: str) -> None:
    gateway = scenario()
    gateway[REFUND] = txn(payer, payee, 20_00, refund_of=PAY)
    assert [v for v in audited(gateway) if v.startswith("refund")] == [
        f"refund {REFUND} goes {payer} -> {payee}, not back the way {PAY} came ({ALICE} -> {BOB})"]


def test_a_refund_of_an_aborted_payment_is_caught() -> None:
    gateway = scenario()
    gateway[OTHER] = txn(ALICE, CAROL, 5_00, refund_of=REFUSED)
    assert audited(gateway) == [f"refund {OTHER} (committed) gives back {REFUSED}, which is aborted: "
                                "only a committed payment can be refunded"]


def test_a_refund_of_a_refund_or_of_nothing_is_caught() -> None:
    gateway = scenario()
    gateway[OTHER] = txn(ALICE, BOB, 5_00, refund_of=REFUND)
    gateway[MORE] = txn(ALICE, BOB, 5_00, refund_of="99999999-9999-4999-8999-999999999999")
    assert audited(gateway) == [
        f"refund {OTHER} gives back {REFUND}, itself a refund of {PAY}",
        f"refund {MORE} gives back 99999999-9999-4999-8999-999999999999, which the gateway never recorded"]


# -- collect requests --------------------------------------------------------------------------------------


def test_a_request_paid_with_another_amount_is_caught() -> None:
    gateway = scenario()
    gateway[ASKED] = txn(BOB, CAROL, 31_00, request_id=ASKED)
    assert audited(gateway) == [f"{ASKED} pays request {ASKED} as {BOB} -> {CAROL} 3100, but it asked "
                                f"{BOB} -> {CAROL} 3000"]


def test_a_request_paid_by_someone_else_is_caught() -> None:
    gateway = scenario()
    gateway[ASKED] = txn(ALICE, CAROL, 30_00, request_id=ASKED)
    assert audited(gateway) == [f"{ASKED} pays request {ASKED} as {ALICE} -> {CAROL} 3000, but it asked "
                                f"{BOB} -> {CAROL} 3000"]


def test_a_paid_request_without_its_payment_is_caught_once_settled_and_in_doubt_before() -> None:
    gateway = scenario()
    del gateway[ASKED]
    assert audited(gateway) == [f"request {ASKED} is paid but its payment {ASKED} is missing"]
    # Read in one stream, transactions first: a request approved and paid in between is ahead of its payment.
    report = check(gateway, ledgers(gateway), settled=False, cluster=limits())
    assert report.violations == [] and report.in_doubt == [f"request {ASKED} paid, its payment not yet seen so"]


def test_a_paid_request_whose_payment_aborted_is_caught() -> None:
    gateway = scenario()
    gateway[ASKED] = txn(BOB, CAROL, 30_00, state="ABORTED", request_id=ASKED)
    assert audited(gateway, settled=False) == [f"request {ASKED} is paid but its payment {ASKED} is aborted"]


@pytest.mark.parametrize("state", ["PENDING", "DECLINED", "EXPIRED"])
def test_a_request_not_approved_yet_paid_is_caught(state: str) -> None:
    gateway = scenario()
    gateway.requests[ASKED] = RequestView(BOB, CAROL, 30_00, state)
    assert audited(gateway) == [f"request {ASKED} is {state.lower()}, yet payment {ASKED} exists (committed)"]


def test_a_second_payment_of_one_request_or_one_for_no_request_is_caught() -> None:
    gateway = scenario()
    gateway[OTHER] = txn(BOB, CAROL, 30_00, request_id=ASKED)
    gateway[MORE] = txn(ALICE, CAROL, 1_00, request_id=MORE)
    assert audited(gateway) == [
        f"{OTHER} pays request {ASKED} under another id: a request's payment bears its id, so it is paid at most once",
        f"{MORE} pays request {MORE}, which the gateway does not know"]


# -- the daily limit ---------------------------------------------------------------------------------------

LATE = datetime(2026, 12, 6, 23, 0, tzinfo=KOLKATA).timestamp()  # 17:30 UTC
EARLY_NEXT = datetime(2026, 12, 7, 1, 0, tzinfo=KOLKATA).timestamp()  # 19:30 UTC, still 6 December there


def over_two_evenings(second_at: float) -> GatewayView:
    """Alice, whose limit is 100.00, sends 40.00 and 10.00 at noon, 30.00 at 23:00, and 25.00 at `second_at`."""
    gateway = scenario()
    gateway[PAY] = txn(ALICE, BOB, 40_00)
    gateway[OTHER] = txn(ALICE, BOB, 30_00, at=LATE)
    gateway[MORE] = txn(ALICE, CAROL, 25_00, at=second_at)
    return gateway


def test_a_payer_over_the_daily_limit_on_one_day_is_caught() -> None:
    assert audited(over_two_evenings(LATE + 60)) == [
        f"{ALICE} sent 10500 on 2026-12-06 (Asia/Kolkata), over its daily limit 10000: payments "
        f"{', '.join(sorted([PAY, INSIDE, OTHER, MORE]))}"]


def test_the_same_payments_split_across_two_days_in_the_clusters_zone_pass() -> None:
    gateway = over_two_evenings(EARLY_NEXT)
    assert audited(gateway) == []
    # In UTC both evenings are one day: the zone decides.
    assert audited(gateway, limits(time_zone="UTC")) == [
        f"{ALICE} sent 10500 on 2026-12-06 (UTC), over its daily limit 10000: payments "
        f"{', '.join(sorted([PAY, INSIDE, OTHER, MORE]))}"]


def test_refunds_aborted_payments_and_unlimited_payers_do_not_count_against_the_limit() -> None:
    gateway = over_two_evenings(EARLY_NEXT)
    gateway[REFUND] = txn(BOB, ALICE, 40_00, refund_of=PAY)  # bob: 40.00 back and 30.00 asked of him, 70.00
    gateway["99999999-9999-4999-8999-999999999999"] = txn(ALICE, BOB, 90_00, state="ABORTED")
    assert audited(gateway, limits("60.00", **{ALICE: "100.00"})) == []
    assert audited(gateway, limits("100.00", **{ALICE: "0"})) == []
    assert audited(gateway, limits("100.00", **{BOB: "29.99"})) == [
        f"{BOB} sent 3000 on 2026-12-06 (Asia/Kolkata), over its daily limit 2999: payments {ASKED}"]


def test_the_daily_limit_is_checked_only_when_the_cluster_is_given() -> None:
    gateway = over_two_evenings(LATE + 60)
    assert check(gateway, ledgers(gateway)).ok


# -- settlement against the banks' ledgers ------------------------------------------------------------------


def test_a_bank_ledger_that_disagrees_with_the_gateways_settlement_is_caught() -> None:
    gateway = scenario()
    banks = ledgers(gateway)
    bank_b = banks[1]
    # bank_b credits bob with PAY, as it should, but books it as coming from carol: balances all add up.
    bank_b.txns[PAY] = ("COMMITTED", [("bob", 50_00, CAROL)])
    report = check(gateway, banks, cluster=limits())
    assert report.violations == [
        "settlement bank_a -> bank_b: the gateway settles 5000 in 1 payment, "
        "bank_a's ledger debits 5000 in 1 payment, bank_b's ledger credits 0 in 0 payments; "
        f"payments that differ: {PAY}",
        "settlement bank_c -> bank_b: the gateway settles 0 in 0 payments, "
        "bank_c's ledger debits 0 in 0 payments, bank_b's ledger credits 5000 in 1 payment; "
        f"payments that differ: {PAY}"]
    assert report.settlement.net == {"bank_a": -30_00, "bank_b": 0, "bank_c": 30_00}  # the gateway's figures


def test_a_payment_within_a_bank_booked_as_between_banks_is_caught() -> None:
    gateway = scenario()
    banks = ledgers(gateway)
    banks[0].txns[INSIDE] = ("COMMITTED", [("alice", -10_00, "dave@bank_b"), ("dave", 10_00, ALICE)])
    assert check(gateway, banks).violations == [
        "settlement bank_a -> bank_a: the gateway settles 1000 in 1 payment, "
        "bank_a's ledger debits 0 in 0 payments, bank_a's ledger credits 1000 in 1 payment; "
        f"payments that differ: {INSIDE}",
        "settlement bank_a -> bank_b: the gateway settles 5000 in 1 payment, "
        "bank_a's ledger debits 6000 in 2 payments, bank_b's ledger credits 5000 in 1 payment; "
        f"payments that differ: {INSIDE}"]


def test_a_committed_leg_without_a_counterparty_bank_is_caught_and_deposits_need_none() -> None:
    gateway = scenario()
    banks = ledgers(gateway)
    banks[2].txns[ASKED] = ("COMMITTED", [("carol", 30_00, "bob")])
    banks[2].txns[OTHER] = ("DEPOSITED", [("carol", 1_00, "treasury")])
    banks[2].accounts["carol"] = (banks[2].accounts["carol"][0] + 1_00, 0, OPENING)
    banks[2].deposits += 1_00
    banks[2].treasury += 1_00
    assert check(gateway, banks).violations == [
        f"committed leg names no account at a bank as its counterparty: {ASKED} at bank_c (carol +3000, "
        "counterparty 'bob')",
        "settlement bank_b -> bank_c: the gateway settles 3000 in 1 payment, bank_b's ledger debits 3000 in "
        f"1 payment, bank_c's ledger credits 0 in 0 payments; payments that differ: {ASKED}"]


def test_a_payment_still_on_its_way_to_one_bank_is_in_doubt_not_a_settlement_violation() -> None:
    gateway = scenario()
    banks = ledgers(gateway)
    bank_b = banks[1]
    bank_b.txns[PAY] = ("PREPARED", [("bob", 50_00, ALICE)])
    bank_b.accounts["bob"] = (bank_b.accounts["bob"][0] - 50_00, 0, OPENING)
    report = check(gateway, banks, settled=False)
    assert report.violations == [] and report.in_doubt == [f"{PAY} prepared at bank_b"]


# -- live: three banks, settled by hand ---------------------------------------------------------------------

SPEC = {
    "cluster": {"name": "settle", "prepare_timeout_s": 3, "call_timeout_s": 3, "max_opening_deposit": "10000.00",
                "daily_limit": "2000.00", "time_zone": "Asia/Kolkata"},
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}, "bank_c": {"storage": "sqlite"}},
}
PASSWORD = "pw"


@pytest.fixture(scope="module")
def traded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, float]]:
    """A cluster where, before the returned time:   alice pays bob 100.00, bob pays carol 40.00, alice pays
    dave 25.00 (within bank_a), bob refunds 30.00 of alice's 100.00 and alice's 1500.00 to bob aborts;
    and after it: carol asks alice for 15.00 and alice approves, carol pays bob 5.00, dave pays alice 2.50
    (within bank_a), and carol asks dave for 1.00, which stays pending."""
    with LocalCluster(tmp_path_factory.mktemp("settle"), SPEC) as cluster:
        clients = {}
        for account in (ALICE, DAVE, BOB, CAROL):
            clients[account] = cluster.client()
            clients[account].register(account, PASSWORD, initial=OPENING)
            clients[account].login(account, PASSWORD)
        alice, dave, bob, carol = (clients[a] for a in (ALICE, DAVE, BOB, CAROL))
        try:
            paid = alice.pay(BOB, 100_00)
            bob.pay(CAROL, 40_00)
            alice.pay(DAVE, 25_00)
            assert bob.refund(paid.txn_id, 30_00).state == "COMMITTED"
            with pytest.raises(InsufficientFunds):
                alice.pay(BOB, 1500_00)
            time.sleep(0.05)
            mark = time.time()
            time.sleep(0.05)
            asked = carol.request_money(ALICE, 15_00)
            assert alice.approve(asked.request_id).state == "COMMITTED"
            carol.pay(BOB, 5_00)
            dave.pay(ALICE, 2_50)
            carol.request_money(DAVE, 1_00)
            yield cluster, mark
        finally:
            for c in clients.values():
                c.close()


def test_the_settlement_report_matches_the_hand_computed_flows_and_nets(traded: tuple[LocalCluster, float]) -> None:
    cluster, _ = traded
    with cluster.client(identity="admin") as admin:
        report = admin.settlement()
    assert [(f.from_bank, f.to_bank, f.amount, f.payments) for f in report.gross] == [
        ("bank_a", "bank_b", 100_00, 1), ("bank_a", "bank_c", 15_00, 1), ("bank_b", "bank_a", 30_00, 1),
        ("bank_b", "bank_c", 40_00, 1), ("bank_c", "bank_b", 5_00, 1)]
    assert report.net == {"bank_a": -85_00, "bank_b": 35_00, "bank_c": 50_00}
    assert sum(report.net.values()) == 0
    assert [(f.from_bank, f.to_bank, f.amount, f.payments) for f in report.intra_bank] == [
        ("bank_a", "bank_a", 27_50, 2)]


def test_a_settlement_window_leaves_out_the_payments_decided_outside_it(traded: tuple[LocalCluster, float]) -> None:
    cluster, mark = traded
    with cluster.client(identity="admin") as admin:
        before, after = admin.settlement(until=mark), admin.settlement(since=mark)
        nothing = admin.settlement(since=mark - 3600, until=mark - 1800)
    assert [(f.from_bank, f.to_bank, f.amount, f.payments) for f in before.gross] == [
        ("bank_a", "bank_b", 100_00, 1), ("bank_b", "bank_a", 30_00, 1), ("bank_b", "bank_c", 40_00, 1)]
    assert before.net == {"bank_a": -70_00, "bank_b": 30_00, "bank_c": 40_00}
    assert [(f.from_bank, f.to_bank, f.amount, f.payments) for f in before.intra_bank] == [
        ("bank_a", "bank_a", 25_00, 1)]
    assert [(f.from_bank, f.to_bank, f.amount, f.payments) for f in after.gross] == [
        ("bank_a", "bank_c", 15_00, 1), ("bank_c", "bank_b", 5_00, 1)]
    assert after.net == {"bank_a": -15_00, "bank_b": 5_00, "bank_c": 10_00}
    assert [(f.from_bank, f.to_bank, f.amount, f.payments) for f in after.intra_bank] == [
        ("bank_a", "bank_a", 2_50, 1)]
    assert (nothing.gross, nothing.intra_bank, nothing.net) == ((), (), {"bank_a": 0, "bank_b": 0, "bank_c": 0})


def test_miniupi_audit_is_clean_and_shows_the_settlement(traded: tuple[LocalCluster, float]) -> None:
    cluster, _ = traded
    run = cluster.cli("audit", "--json", "--wait", "10")
    assert run.returncode == 0, (run.stdout, run.stderr)
    report = json.loads(run.stdout)
    assert report["ok"] and report["violations"] == [], report
    assert (report["committed"], report["aborted"], report["refunds"], report["requests"]) == (7, 1, 1, 2)
    assert report["settlement"]["net_minor"] == {"bank_a": -85_00, "bank_b": 35_00, "bank_c": 50_00}
    assert [(f["from_bank"], f["to_bank"], f["amount_minor"]) for f in report["settlement"]["gross"]] == [
        ("bank_a", "bank_b", 100_00), ("bank_a", "bank_c", 15_00), ("bank_b", "bank_a", 30_00),
        ("bank_b", "bank_c", 40_00), ("bank_c", "bank_b", 5_00)]

    run = cluster.cli("audit", "--wait", "10")
    assert run.returncode == 0, (run.stdout, run.stderr)
    summary, settlement, verdict = run.stdout.splitlines()
    assert settlement == (
        "settlement: 190.00 INR between banks in 5 payments (bank_a -> bank_b 100.00, bank_a -> bank_c 15.00, "
        "bank_b -> bank_a 30.00, bank_b -> bank_c 40.00, bank_c -> bank_b 5.00); "
        "net bank_a -85.00, bank_b +35.00, bank_c +50.00; 27.50 INR within banks in 2 payments")
    assert verdict == "audit ok: every invariant holds"
