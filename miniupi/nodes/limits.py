"""The daily limit: what one payer may send per calendar day, counted at the gateway without a race.

A payment counts on the day the gateway recorded it, in the cluster's
time zone, from the moment it is admitted until it aborts; committed, it
counts for good. Refunds give money back and do not count against the
refunder. The gateway is the one place every payment passes, so it keeps
the count: per day and payer, a row of its store (table "daily", key
"DAY|PAYER": what committed), written in the batch of each decision, and
in memory what is in flight (tallies.py). A payer's row is read on its
first payment of the day, not at a restart.

Only payers under a limit are counted: a limit newly set for a payer
(or for the cluster) counts that day's payments from the restart that
sets it.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime

from miniupi.config import ClusterConfig
from miniupi.contract.store import Put, Store
from miniupi.errors import DailyLimitReached
from miniupi.money import format_amount
from miniupi.nodes.coordinator import Payment, Txn
from miniupi.nodes.tallies import Change, Tallies, Tally
from miniupi.nodes.txn_index import cache_size
from miniupi.states import TxnState

TABLE = "daily"


def day_key(day: date, payer: str) -> str:
    return f"{day.isoformat()}|{payer}"


class DailyLimit:
    """A Guard (coordinator.py) for cluster.daily_limit and its per-account exceptions.

    `store` holds the committed totals (None: an empty one, for tests).
    """

    def __init__(self, cluster: ClusterConfig, store: Store | None = None, cache: int | None = None,
                 shared: bool = False) -> None:
        self._cluster = cluster
        self._tallies = Tallies(TABLE, store, cache_size() if cache is None else cache, shared=shared)

    def day(self, when: float) -> date:
        """The calendar day of Unix time `when` in the cluster's time zone."""
        return datetime.fromtimestamp(when, self._cluster.zone).date()

    def key(self, payer: str, when: float) -> str:
        return day_key(self.day(when), payer)

    def sent_today(self, payer: str, now: float) -> int:
        return self._tallies.look(self.key(payer, now)).counted

    def counts(self, payment: Payment) -> bool:
        return not payment.refund_of and self._cluster.daily_limit_of(payment.payer) > 0

    def _within(self, payment: Payment, now: float) -> Callable[[Tally], None]:
        limit = self._cluster.daily_limit_of(payment.payer)

        def within(tally: Tally) -> None:
            sent = tally.counted
            if sent + payment.amount > limit:
                currency = self._cluster.currency
                raise DailyLimitReached(
                    f"daily limit of {format_amount(limit)} {currency} reached: {payment.payer} has sent "
                    f"{format_amount(sent)} {currency} today ({self.day(now)}, {self._cluster.time_zone})")

        return within

    def admit(self, payment: Payment, now: float) -> None:
        if self.counts(payment):
            self._tallies.count(self.key(payment.payer, now), payment.txn_id, payment.amount,
                                self._within(payment, now))

    async def reserve(self, payment: Payment, now: float) -> Change:
        if not self.counts(payment):
            return [], []
        return await self._tallies.reserve(self.key(payment.payer, now), payment.txn_id, payment.amount,
                                           self._within(payment, now))

    async def settle(self, txn: Txn, decision: TxnState) -> Change:
        p = txn.payment
        if not self.counts(p):
            return [], []
        return await self._tallies.settle(self.key(p.payer, txn.created_at), p.txn_id, p.amount, decision)

    def release(self, txn: Txn) -> None:
        if self.counts(txn.payment):
            self._tallies.uncount(self.key(txn.payment.payer, txn.created_at), txn.payment.txn_id)

    def deciding(self, txn: Txn, decision: TxnState) -> list[Put]:
        p = txn.payment
        if not self.counts(p):
            return []
        return [self._tallies.row(self.key(p.payer, txn.created_at), p.txn_id, p.amount, decision)]

    def decided(self, txn: Txn, decision: TxnState, durable: bool) -> None:
        if self.counts(txn.payment):
            self._tallies.written(self.key(txn.payment.payer, txn.created_at), txn.payment.txn_id, decision,
                                  durable)
