"""The audit's verdict invariant by invariant, for people who want a list to tick rather than lines to read.

The checker (miniupi/ops/invariants.py) reports each violation as a line of
its own words; here each kind of line is assigned the invariant it breaks,
so that the console can show every invariant with "holds" or its
violations. A line of no known kind is shown under "other checks", which
then fails too: a new kind of violation is never hidden.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

OTHER = "other checks"


@dataclass(frozen=True)
class Invariant:
    name: str
    means: str
    pattern: re.Pattern[str]


# In the order they are shown; a line is the first invariant's whose pattern it matches.
INVARIANTS = (
    Invariant("money is conserved", "the balances add up to the money issued, and each bank's treasury deposits "
              "to what it counts as issued", re.compile(r"^total money |issued by the treasury")),
    Invariant("no balance goes negative", "no account's balance is below zero or below what it holds",
              re.compile(r"negative balance|more than its balance")),
    Invariant("all or none", "a payment is committed at both its banks or at neither, as the gateway decided",
              re.compile(r"^in doubt with every node up: (?!.*\brequest\b)(?!.*prepared at )|"
                         r" committed at .* but |at the gateway but committed at ")),
    Invariant("no payment applied twice", "each balance is its opening plus its committed payments, each once, "
              "and what it holds is its prepared debits",
              re.compile(r"is not its opening|prepared debits add up|transactions for unknown account")),
    Invariant("nothing stays prepared", "with every node up, no payment stays prepared at a bank",
              re.compile(r"^in doubt with every node up: .*prepared at ")),
    Invariant("settlement agrees", "what the gateway settles between banks is what their ledgers debit and credit",
              re.compile(r"^settlement |net positions|committed leg names no account")),
    Invariant("refunds", "a refund gives back a committed payment, the way it came, never more than it",
              re.compile(r"^refund |refunded, more than it")),
    Invariant("collect requests", "a request is paid at most once, under its own id, as it asked",
              re.compile(r"\brequest\b")),
    Invariant("daily limit", "no payer sends more than its daily limit in a calendar day",
              re.compile(r"over its daily limit")),
)
_MORE = re.compile(r"^and \d+ more .* like these$")


@dataclass
class Verdict:
    name: str
    means: str
    violations: list[str] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "means": self.means, "holds": self.holds, "violations": self.violations}


def verdicts(violations: list[str]) -> list[Verdict]:
    """Every invariant with the violations that break it, and "other checks" if a line fits none."""
    out = {i.name: Verdict(i.name, i.means) for i in INVARIANTS}
    other = Verdict(OTHER, "violations of no kind listed above")
    last: Verdict | None = None
    for line in violations:
        if _MORE.match(line) and last is not None:  # the checker's "and N more like these" follows its kind
            last.violations.append(line)
            continue
        last = next((out[i.name] for i in INVARIANTS if i.pattern.search(line)), other)
        last.violations.append(line)
    return [*out.values(), *([other] if other.violations else [])]
