"""The audit's violations, each under the invariant it breaks, and none hidden."""
from __future__ import annotations

import pytest

from miniupi.ops.verdicts import INVARIANTS, OTHER, verdicts

# One line of each kind the checker writes (miniupi/ops/invariants.py), and the invariant it breaks.
LINES = [
    ("total money 100 differs from the money issued 90", "money is conserved"),
    ("bank_a counts 50 issued by the treasury but its deposits add up to 40", "money is conserved"),
    ("alice@bank_a has a negative balance -5", "no balance goes negative"),
    ("alice@bank_a holds 50, more than its balance 40", "no balance goes negative"),
    ("t1 committed at bank_a but the gateway decided ABORTED", "all or none"),
    ("t1 committed at the gateway but prepared at bank_b", "all or none"),
    ("t1 is aborted at the gateway but committed at bank_b", "all or none"),
    ("in doubt with every node up: t1 undecided at the gateway", "all or none"),
    ("in doubt with every node up: t1 committed, not yet acknowledged by every bank", "all or none"),
    ("alice@bank_a balance 10 is not its opening 0 plus its committed payments and deposits 5: "
     "a payment was lost or applied twice", "no payment applied twice"),
    ("alice@bank_a holds 5 but its prepared debits add up to 0", "no payment applied twice"),
    ("bank_a has transactions for unknown account zed", "no payment applied twice"),
    ("in doubt with every node up: t1 prepared at bank_a", "nothing stays prepared"),
    ("the net positions {'bank_a': 1} sum to 1, not zero", "settlement agrees"),
    ("settlement bank_a -> bank_b: the gateway settles 5 in 1 payment, ...", "settlement agrees"),
    ("committed leg names no account at a bank as its counterparty: t1 at bank_a", "settlement agrees"),
    ("refund r1 (committed) gives back t1, which is aborted: only a committed payment can be refunded", "refunds"),
    ("t1 of 100 has 150 refunded, more than it: committed refunds r1, r2", "refunds"),
    ("t1 pays request q1 under another id: a request's payment bears its id, so it is paid at most once",
     "collect requests"),
    ("request q1 is paid but its payment q1 is aborted", "collect requests"),
    ("in doubt with every node up: request q1 paying, its payment not yet seen so", "collect requests"),
    ("alice@bank_a sent 500 on 2026-01-01 (UTC), over its daily limit 100: payments t1", "daily limit"),
]


@pytest.mark.parametrize("line, invariant", LINES)
def test_each_kind_of_violation_breaks_its_invariant(line: str, invariant: str) -> None:
    broken = [v for v in verdicts([line]) if not v.holds]
    assert [(v.name, v.violations) for v in broken] == [(invariant, [line])]


def test_a_clean_audit_lists_every_invariant_holding() -> None:
    result = verdicts([])
    assert [v.name for v in result] == [i.name for i in INVARIANTS]
    assert all(v.holds for v in result)


def test_the_checkers_count_of_more_lines_stays_with_its_kind_and_an_unknown_line_is_not_hidden() -> None:
    result = {v.name: v for v in verdicts(["alice@bank_a has a negative balance -5",
                                           "and 3 more violations like these", "something new went wrong"])}
    assert result["no balance goes negative"].violations == ["alice@bank_a has a negative balance -5",
                                                             "and 3 more violations like these"]
    assert not result[OTHER].holds and result[OTHER].violations == ["something new went wrong"]
