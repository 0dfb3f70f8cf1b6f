"""The daily limit: what one payer may send per calendar day, counted at the gateway without a race.

A payment counts on the day the gateway recorded it, in the cluster's
time zone, from the moment it is admitted until it aborts; committed, it
counts for good. Refunds give money back and do not count against the
refunder. The gateway is the one place every payment passes, so its
memory holds the day's totals; a restart rebuilds them from the
committed payments it stored.
"""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from datetime import date, datetime

from miniupi.config import ClusterConfig
from miniupi.errors import DailyLimitReached
from miniupi.money import format_amount
from miniupi.nodes.coordinator import Payment, Txn
from miniupi.states import TxnState


class DailyLimit:
    """A Guard (coordinator.py) for cluster.daily_limit and its per-account exceptions."""

    def __init__(self, cluster: ClusterConfig) -> None:
        self._cluster = cluster
        self._today: date | None = None
        self._sent: dict[str, int] = defaultdict(int)  # payer -> minor units admitted on self._today

    def day(self, when: float) -> date:
        """The calendar day of Unix time `when` in the cluster's time zone."""
        return datetime.fromtimestamp(when, self._cluster.zone).date()

    def sent_today(self, payer: str, now: float) -> int:
        self._roll(now)
        return self._sent.get(payer, 0)

    def _roll(self, now: float) -> None:
        today = self.day(now)
        if today != self._today:  # a new day starts every payer at zero, and yesterday's totals go
            self._today, self._sent = today, defaultdict(int)

    def _counts(self, payment: Payment) -> bool:
        return not payment.refund_of and self._cluster.daily_limit_of(payment.payer) > 0

    def load(self, txns: Mapping[str, Txn]) -> None:
        self._today, self._sent = None, defaultdict(int)
        self._roll(time.time())
        for txn in txns.values():
            if (txn.state != TxnState.ABORTED and self._counts(txn.payment)
                    and self.day(txn.created_at) == self._today):
                self._sent[txn.payment.payer] += txn.payment.amount

    def admit(self, payment: Payment, now: float) -> None:
        if not self._counts(payment):
            return
        self._roll(now)
        limit = self._cluster.daily_limit_of(payment.payer)
        sent = self._sent.get(payment.payer, 0)
        if sent + payment.amount > limit:
            currency = self._cluster.currency
            raise DailyLimitReached(
                f"daily limit of {format_amount(limit)} {currency} reached: {payment.payer} has sent "
                f"{format_amount(sent)} {currency} today ({self._today}, {self._cluster.time_zone})")
        self._sent[payment.payer] = sent + payment.amount

    def release(self, txn: Txn) -> None:
        if self._counts(txn.payment) and self.day(txn.created_at) == self._today:
            self._sent[txn.payment.payer] -= txn.payment.amount
