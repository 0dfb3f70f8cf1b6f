"""The invariant checker, over hand-made readings of a cluster."""
from __future__ import annotations

from miniupi.ops.audit import BankView, GatewayTxnView, check

TXN = "0b7c1f7e-8f7e-4a53-9d0e-2b9f3f5d9a11"


def _cluster(a_state: str = "COMMITTED", b_state: str = "COMMITTED", g_state: str = "COMMITTED",
             alice: int = 70, bob: int = 30, held: int = 0) -> tuple[dict, list[BankView]]:
    bank_a = BankView("bank_a", deposits=100, accounts={"alice": (alice, held, 100)},
                      txns={TXN: (a_state, [("alice", -30, "bob@bank_b")])})
    bank_b = BankView("bank_b", deposits=0, accounts={"bob": (bob, 0, 0)}, txns={TXN: (b_state, [("bob", 30, "alice@bank_a")])})
    gateway = {TXN: GatewayTxnView("alice@bank_a", "bob@bank_b", 30, g_state, True)}
    return gateway, [bank_a, bank_b]


def test_a_consistent_committed_payment_passes() -> None:
    report = check(*_cluster())
    assert report.ok, report.violations
    assert (report.total, report.issued, report.committed) == (100, 100, 1)


def test_money_created_from_nothing_is_caught() -> None:
    report = check(*_cluster(bob=31))
    assert any("total money" in v for v in report.violations)
    assert any("bob@bank_b" in v and "applied twice" in v for v in report.violations)


def test_a_payment_committed_on_one_bank_only_is_caught() -> None:
    report = check(*_cluster(b_state="ABORTED", bob=0))
    assert any("aborted at bank_b" in v for v in report.violations)


def test_a_bank_commit_the_gateway_aborted_is_caught() -> None:
    report = check(*_cluster(g_state="ABORTED"))
    assert any("committed at bank_a but the gateway decided ABORTED" in v for v in report.violations)


def test_a_hold_without_a_prepared_transaction_is_caught() -> None:
    report = check(*_cluster(held=5))
    assert any("holds 5" in v for v in report.violations)


def test_prepared_is_in_doubt_and_a_violation_only_once_settled() -> None:
    gateway, banks = _cluster(a_state="PREPARED", alice=100, held=30)
    gateway[TXN] = GatewayTxnView("alice@bank_a", "bob@bank_b", 30, "COMMITTED", False)
    assert not check(gateway, banks, settled=False).violations
    settled = check(gateway, banks, settled=True)
    assert any("in doubt" in v for v in settled.violations)


def test_a_negative_balance_is_caught() -> None:
    bank = BankView("bank_a", deposits=-5, accounts={"alice": (-5, 0, -5)})
    assert any("negative" in v for v in check({}, [bank]).violations)


DEPOSIT = "5d3c2b1a-0f9e-4d8c-8b7a-6a5b4c3d2e1f"


def _with_deposit(treasury: int = 25, bob: int = 55) -> tuple[dict, list[BankView]]:
    gateway, (bank_a, bank_b) = _cluster(bob=bob)
    bank_b.deposits, bank_b.treasury = 25, treasury
    bank_b.txns[DEPOSIT] = ("DEPOSITED", [("bob", 25, "treasury")])
    return gateway, [bank_a, bank_b]


def test_a_treasury_deposit_unknown_to_the_gateway_is_issued_money_not_a_violation() -> None:
    report = check(*_with_deposit(), settled=True)
    assert report.ok, report.violations
    assert (report.total, report.issued, report.issued_by_treasury, report.deposits) == (125, 125, 25, 1)


def test_a_deposit_the_bank_does_not_count_as_issued_is_caught() -> None:
    report = check(*_with_deposit(treasury=0))
    assert any("bank_b counts 0 issued by the treasury but its deposits add up to 25" in v
               for v in report.violations)


def test_money_credited_past_the_deposits_is_caught() -> None:
    report = check(*_with_deposit(bob=56))
    assert any("total money 126 differs from the money issued 125" in v for v in report.violations)
