"""Refunds: a payment back from payee to payer, linked to the original, never more than it.

A refund is an ordinary payment through the same 2PC, carrying the id of
the payment it gives back (`refund_of`). The book counts, per original,
every refund admitted and not aborted; a new one is admitted only while
that sum stays within the original amount. The check and the count happen
in one step of the event loop (coordinator.Guard), so twenty refund
requests at once cannot together pass it.

Per original, the store keeps a row (table "refunds": its refund ids,
oldest first, and the sum committed), written in the batch of each refund's
decision (tallies.py); memory keeps it only while a refund of that payment
is in flight, and a few recent ones in a cache. A restart reads none of
them: each is read back when a refund, a look at the payment or its
history needs it.
"""
from __future__ import annotations

from collections.abc import Callable

from miniupi.contract.store import Put
from miniupi.errors import NotFound, NotRefundable, PermissionDenied, RefundExceedsPayment
from miniupi.money import format_amount
from miniupi.nodes.coordinator import Payment, Txn
from miniupi.nodes.tallies import Change, Tallies, Tally
from miniupi.nodes.txn_index import TxnIndex, cache_size
from miniupi.states import TxnState

TABLE = "refunds"  # original txn id -> {"ids": [refund ids, oldest first], "committed": minor}
# Refunds one payment may have, whatever their state: each is listed in the payment's status and its
# history entry, so a payee giving back a paisa at a time would otherwise grow them past one reply.
MAX_REFUNDS_PER_PAYMENT = 100


class RefundBook:
    """A Guard (coordinator.py) over refunds, and the index from a payment to its refunds."""

    def __init__(self, txns: TxnIndex[Txn], cache: int | None = None, shared: bool = False) -> None:
        self._txns = txns
        self._tallies = Tallies(TABLE, txns.store, cache_size() if cache is None else cache, keep_ids=True,
                                shared=shared)

    def refunds_of(self, txn_id: str) -> list[Txn]:
        """The refunds of a payment, oldest first, whatever their state."""
        refunds = []
        for refund_id in self._tallies.look(txn_id).ids:
            txn = self._txns.get(refund_id)
            # A row may name an id whose record never reached the disk (a failed write), and
            # that id may since have gone to something else.
            if txn is not None and txn.payment.refund_of == txn_id:
                refunds.append(txn)
        return refunds

    def refunded(self, txn_id: str) -> int:
        """The committed refunds of a payment, in minor units."""
        return sum(t.payment.amount for t in self.refunds_of(txn_id) if t.state == TxnState.COMMITTED)

    def left(self, original: Txn) -> int:
        """What may still be refunded: the amount less every refund admitted and not aborted."""
        return original.payment.amount - self._tallies.look(original.payment.txn_id).counted

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
        if payment.refund_of:
            self._tallies.count(payment.refund_of, payment.txn_id, payment.amount,
                                self._within(payment, self._txns.get(payment.refund_of)))

    async def reserve(self, payment: Payment, now: float) -> Change:
        if not payment.refund_of:
            return [], []
        original = await self._txns.aget(payment.refund_of)
        return await self._tallies.reserve(payment.refund_of, payment.txn_id, payment.amount,
                                           self._within(payment, original))

    async def settle(self, txn: Txn, decision: TxnState) -> Change:
        p = txn.payment
        return await self._tallies.settle(p.refund_of, p.txn_id, p.amount, decision) if p.refund_of else ([], [])

    def _within(self, payment: Payment, original: Txn | None) -> Callable[[Tally], None]:
        if original is None:
            raise NotFound(f"no transaction {payment.refund_of}")

        def within(tally: Tally) -> None:
            if len(tally.ids) >= MAX_REFUNDS_PER_PAYMENT:
                raise NotRefundable(f"payment {payment.refund_of} already has {len(tally.ids)} refunds, "
                                    "the most one payment may have")
            left = original.payment.amount - tally.counted
            if payment.amount > left:
                currency = payment.currency
                raise RefundExceedsPayment(
                    f"refund of {format_amount(payment.amount)} {currency} exceeds what is left to refund of "
                    f"{payment.refund_of}: {format_amount(left)} of {format_amount(original.payment.amount)} "
                    f"{currency}")

        return within

    def release(self, txn: Txn) -> None:
        if txn.payment.refund_of:
            self._tallies.uncount(txn.payment.refund_of, txn.payment.txn_id)

    def deciding(self, txn: Txn, decision: TxnState) -> list[Put]:
        p = txn.payment
        return [self._tallies.row(p.refund_of, p.txn_id, p.amount, decision)] if p.refund_of else []

    def decided(self, txn: Txn, decision: TxnState, durable: bool) -> None:
        if txn.payment.refund_of:
            self._tallies.written(txn.payment.refund_of, txn.payment.txn_id, decision, durable)
