"""Net settlement: what the banks owe each other for the payments committed in a window.

Each committed payment between two banks moves its amount from the payer's
bank to the payee's; netting leaves each bank one figure, what it is owed
(positive) or owes (negative), and those figures sum to zero. Payments
within one bank are listed apart: they move nothing between banks. A pure
function over the gateway's transactions, so `miniupi audit` can compare
the same figures with the banks' own ledgers.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from miniupi.nodes.coordinator import Txn
from miniupi.states import TxnState


@dataclass(frozen=True, slots=True)
class Flow:
    from_bank: str
    to_bank: str
    amount: int
    payments: int


@dataclass(frozen=True)
class Settlement:
    since: float  # 0: open
    until: float  # 0: open
    gross: list[Flow] = field(default_factory=list)  # between different banks, sorted by (from, to)
    net: dict[str, int] = field(default_factory=dict)  # every bank: positive is owed, negative owes
    intra_bank: list[Flow] = field(default_factory=list)


def in_window(when: float, since: float, until: float) -> bool:
    return (not since or when >= since) and (not until or when < until)


class Settler:
    """Settlement over a stream of transactions, in memory that does not grow with them."""

    def __init__(self, since: float = 0.0, until: float = 0.0) -> None:
        self.since, self.until = since, until
        self._totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])

    def add(self, txn: Txn) -> None:
        if txn.state == TxnState.COMMITTED:
            self.add_payment(txn.payment.payer, txn.payment.payee, txn.payment.amount, txn.decided_at)

    def add_payment(self, payer: str, payee: str, amount: int, decided_at: float) -> None:
        """A committed payment, from account payer to account payee (user@bank each)."""
        if not in_window(decided_at, self.since, self.until):
            return
        pair = self._totals[(payer.rpartition("@")[2], payee.rpartition("@")[2])]
        pair[0] += amount
        pair[1] += 1

    def report(self, banks: Iterable[str]) -> Settlement:
        net = dict.fromkeys(banks, 0)
        gross, intra = [], []
        for (frm, to), (amount, count) in sorted(self._totals.items()):
            flow = Flow(frm, to, amount, count)
            if frm == to:
                intra.append(flow)
                continue
            gross.append(flow)
            net[frm] = net.get(frm, 0) - amount
            net[to] = net.get(to, 0) + amount
        return Settlement(self.since, self.until, gross, net, intra)


def settle(txns: Iterable[Txn], banks: Iterable[str], since: float = 0.0, until: float = 0.0) -> Settlement:
    """The report for the payments that committed in [since, until)."""
    settler = Settler(since, until)
    for txn in txns:
        settler.add(txn)
    return settler.report(banks)
