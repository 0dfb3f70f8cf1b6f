"""Refunds: a payment back from payee to payer, linked to the original, never more than it.

A refund is an ordinary payment through the same 2PC, carrying the id of
the payment it gives back (`refund_of`). The book counts, per original,
every refund admitted and not aborted; a new one is admitted only while
that sum stays within the original amount. The check and the count happen
in one step of the event loop (coordinator.Guard), so twenty refund
requests at once cannot together pass it, and a restart rebuilds the sums
from the stored refunds after presumed abort.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from miniupi.errors import NotRefundable, PermissionDenied, RefundExceedsPayment
from miniupi.money import format_amount
from miniupi.nodes.coordinator import Payment, Txn
from miniupi.states import TxnState


class RefundBook:
    """A Guard (coordinator.py) over refunds, and the index from a payment to its refunds."""

    def __init__(self) -> None:
        self._txns: Mapping[str, Txn] = {}
        self._counted: dict[str, int] = defaultdict(int)  # original id -> refunds admitted and not aborted
        self._refunds: dict[str, list[str]] = defaultdict(list)  # original id -> refund ids, oldest first

    def load(self, txns: Mapping[str, Txn]) -> None:
        self._txns = txns
        self._counted.clear()
        self._refunds.clear()
        for txn in sorted((t for t in txns.values() if t.payment.refund_of), key=lambda t: t.created_at):
            original = txn.payment.refund_of
            self._refunds[original].append(txn.payment.txn_id)
            if txn.state != TxnState.ABORTED:
                self._counted[original] += txn.payment.amount

    def refunds_of(self, txn_id: str) -> list[Txn]:
        """The refunds of a payment, oldest first, whatever their state."""
        return [self._txns[r] for r in self._refunds.get(txn_id, ()) if r in self._txns]

    def refunded(self, txn_id: str) -> int:
        """The committed refunds of a payment, in minor units."""
        return sum(t.payment.amount for t in self.refunds_of(txn_id) if t.state == TxnState.COMMITTED)

    def left(self, original: Txn) -> int:
        """What may still be refunded: the amount less every refund admitted and not aborted."""
        return original.payment.amount - self._counted.get(original.payment.txn_id, 0)

    def refundable(self, original: Txn, refunder: str) -> None:
        """Raise why `refunder` may not refund `original`; the caller has checked they are a party to it."""
        p = original.payment
        if refunder != p.payee:
            raise PermissionDenied(f"only the payee {p.payee} may refund payment {p.txn_id}")
        if p.refund_of:
            raise NotRefundable(f"{p.txn_id} is a refund of {p.refund_of}; a refund cannot be refunded")
        if original.state != TxnState.COMMITTED:
            what = "is not decided yet" if original.state == TxnState.INITIATED else "did not commit"
            raise NotRefundable(f"payment {p.txn_id} {what}; only a committed payment can be refunded")

    def admit(self, payment: Payment, now: float) -> None:
        if not payment.refund_of:
            return
        original = self._txns[payment.refund_of]
        left = self.left(original)
        if payment.amount > left:
            currency = payment.currency
            raise RefundExceedsPayment(
                f"refund of {format_amount(payment.amount)} {currency} exceeds what is left to refund of "
                f"{payment.refund_of}: {format_amount(left)} of {format_amount(original.payment.amount)} {currency}")
        self._counted[payment.refund_of] += payment.amount
        self._refunds[payment.refund_of].append(payment.txn_id)

    def release(self, txn: Txn) -> None:
        original = txn.payment.refund_of
        if not original:
            return
        self._counted[original] -= txn.payment.amount
        if txn.payment.txn_id not in self._txns:  # refused before it was recorded: no link to show
            ids = self._refunds[original]
            if txn.payment.txn_id in ids:
                ids.remove(txn.payment.txn_id)
