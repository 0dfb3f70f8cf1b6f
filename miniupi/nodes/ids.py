"""One id, one use, across gateways sharing a store: a row of "ids" for each payment, deposit and request.

Each kind keeps its own table ("txns", "deposits", "requests"), and an
insert into one of them decides among the writers of that table only. A
gateway alone checks the other two tables and marks the id in memory in one
step of its event loop, so nothing gets between. Gateways sharing a store
cannot: a payment at one and a deposit at the other, with one id, would
both pass those checks. So where they share it, every batch that takes an
id also inserts it here with its kind, expecting it absent, and the store
lets exactly one of them have it.

A collect request's payment bears the request's id and takes nothing here:
the request took it, and "txns" decides between two payments of it.
"""
from __future__ import annotations

from typing import Any

from miniupi.contract.store import Expect, Put, Store, read
from miniupi.errors import AlreadyExists

TABLE = "ids"
PAYMENT, DEPOSIT, REQUEST = "payment", "deposit", "request"
_NAMES = {PAYMENT: "a payment", DEPOSIT: "a deposit", REQUEST: "a collect request"}


def take(txn_id: str, kind: str) -> tuple[Put, Expect]:
    """The put and the expectation that give `txn_id` to `kind`, if no kind has it yet."""
    return Put(TABLE, txn_id, {"kind": kind}), Expect(TABLE, txn_id, None)


async def taken_as(store: Store, txn_id: str) -> str | None:
    """The kind that holds `txn_id`, or None (read off the event loop where the store can: store.read)."""
    row: Any = await read(store, TABLE, txn_id)
    return row.get("kind") if isinstance(row, dict) else None


def already_used(txn_id: str, kind: str) -> AlreadyExists:
    """The refusal of an id that `kind` holds, for a use of another kind."""
    return AlreadyExists(f"transaction {txn_id} is already used for {_NAMES.get(kind, kind)}")
