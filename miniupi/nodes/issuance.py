"""The gateway's record of treasury deposits: one id, one deposit, cluster-wide.

A bank keeps a deposit idempotent by its id, but only among its own
transactions: the same id sent for an account at another bank would credit
twice. So the gateway records each id with its details durably before the
bank hears of it, as it does for payments, and refuses an id that a payment
or another deposit already took. Memory holds a deposit only while its
record is being written; after that it is read from the store by id.
Where gateways share the store, the record is an insert (Expect): of two
gateways given one id at once, the store lets one bind it.
"""
from __future__ import annotations

import time
from collections.abc import Container
from dataclasses import dataclass
from miniupi.errors import AlreadyExists, StoreUnavailable
from miniupi.contract.store import Conflict, Expect, Put
from miniupi.nodes import ids
from miniupi.nodes.group_commit import GroupCommit

TABLE = "deposits"


@dataclass(frozen=True, slots=True)
class DepositOrder:
    txn_id: str
    account: str  # user@bank
    amount: int  # minor units


class Issuer:
    def __init__(self, commit: GroupCommit, payments: Container[str], shared: bool = False) -> None:
        self._commit, self._payments, self._shared = commit, payments, shared
        self._writing: dict[str, tuple[str, int]] = {}  # deposits whose record is on its way to the disk

    def _known(self, txn_id: str) -> tuple[str, int] | None:
        order = self._writing.get(txn_id)
        if order is not None:
            return order
        row = self._commit.store.get(TABLE, txn_id)
        return None if row is None else (row["account"], row["amount"])

    def __contains__(self, txn_id: object) -> bool:
        return isinstance(txn_id, str) and self._known(txn_id) is not None

    async def record(self, order: DepositOrder) -> None:
        """Bind the id to this deposit, durably; a repeat of the same deposit passes, anything else is refused.

        The id stays bound even if the bank then refuses the deposit, so the
        treasury retries it with the same details or takes a new id.
        """
        if order.txn_id in self._payments:
            raise AlreadyExists(f"transaction {order.txn_id} is a payment, not a deposit")
        known = self._known(order.txn_id)
        if known is not None:
            if known != (order.account, order.amount):
                raise AlreadyExists(f"deposit {order.txn_id} was made with other details")
            await self._commit.barrier()  # the first record is durable before the repeat goes on
            if self._known(order.txn_id) is None:
                raise StoreUnavailable(f"gateway could not record deposit {order.txn_id}; send it again")
            return
        # Memory first, so a repeat arriving during the write finds the id taken.
        self._writing[order.txn_id] = (order.account, order.amount)
        puts = [Put(TABLE, order.txn_id, {"account": order.account, "amount": order.amount,
                                          "created_at": time.time()})]
        expect: list[Expect] = []
        if self._shared:
            put, taken = ids.take(order.txn_id, ids.DEPOSIT)
            puts.append(put)
            expect += [Expect(TABLE, order.txn_id, None), taken]
        try:
            await self._commit.write(puts, expect)
        except Conflict:  # bound at another gateway first: a repeat, another deposit, or another kind
            del self._writing[order.txn_id]
            known = self._known(order.txn_id)
            if known is None:
                raise ids.already_used(order.txn_id, await ids.taken_as(self._commit.store, order.txn_id)
                                       or ids.PAYMENT) from None
            if known != (order.account, order.amount):
                raise AlreadyExists(f"deposit {order.txn_id} was made with other details") from None
            return
        except BaseException:
            del self._writing[order.txn_id]  # failed: the id is free
            raise
        del self._writing[order.txn_id]  # written: the store answers from now on
