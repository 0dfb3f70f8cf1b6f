"""The gateway's transactions: the live ones in memory, the settled ones in the store.

A payment is live from its INITIATED record until every bank has
acknowledged its decision; only then may memory let it go, because phase 2
and a repeated id must find it at once. After that it is a row of the
store's "txns" table, read back by key when an old id is replayed or looked
up, through a bounded cache of the most recently used. So the gateway's
memory follows the payments in flight, not how many it has ever made.

The "unfinished" table indexes the live ones (INITIATED, or decided and not
yet acknowledged by every bank): a row goes down in the same batch as the
INITIATED record and is deleted in the write that marks the payment
acknowledged. A restart reads that table and the records it names, never
the whole history.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, Protocol, TypeVar

from miniupi.contract.store import Put, Store, read
from miniupi.nodes.overlay import overlay

TABLE = "txns"
# txn id -> true, while the payment is not acknowledged by every bank; where gateways share the store,
# {"owner": the gateway that runs it} (replicas.py).
UNFINISHED = "unfinished"
# Settled transactions kept in memory after their last use: a replay of a recent id or a look at
# a recent payment costs no read. Each is about 0.5 kB. MINIUPI_GATEWAY_TXN_CACHE overrides it
# (tests shrink it to 0 so that every settled read goes to the store).
CACHE_SIZE = 10_000
CACHE_ENV = "MINIUPI_GATEWAY_TXN_CACHE"


def cache_size() -> int:
    """CACHE_SIZE, or the environment's MINIUPI_GATEWAY_TXN_CACHE (a count, 0 for no cache)."""
    raw = os.environ.get(CACHE_ENV, "").strip()
    if not raw:
        return CACHE_SIZE
    if not raw.isdigit():
        raise ValueError(f"{CACHE_ENV} must be a whole number of transactions, got {raw!r}")
    return int(raw)


class Record(Protocol):
    """What TxnIndex needs of a transaction (coordinator.Txn)."""

    acked: bool


T = TypeVar("T", bound=Record)


class TxnIndex(Generic[T]):
    """Live transactions in memory, the rest read from `store` on demand and cached (LRU).

    `decode(txn_id, record)` turns a stored record into a transaction
    (coordinator.Txn.from_record); kept as a parameter so this module does
    not import the coordinator that uses it.
    """

    def __init__(self, store: Store, decode: Callable[[str, dict[str, Any]], T],
                 unfinished: Iterable[str] = (), cache: int | None = None) -> None:
        self.store = store
        self._decode = decode
        self._live: dict[str, T] = {}
        self._cache: OrderedDict[str, T] = OrderedDict()
        self.cache_limit = cache_size() if cache is None else cache
        # Rows of "unfinished" that name nothing live (no record, or acknowledged): the
        # coordinator deletes them at recovery.
        self.stale: list[str] = []
        for txn_id in unfinished:
            record = store.get(TABLE, txn_id)
            if record is None:
                self.stale.append(txn_id)
                continue
            txn = decode(txn_id, record)
            if txn.acked:
                self.stale.append(txn_id)
            else:
                self._live[txn_id] = txn

    # -- reads ------------------------------------------------------------

    def get(self, txn_id: str) -> T | None:
        """The transaction: from memory, else the cache, else one read of the store; None if never recorded."""
        txn = self._in_memory(txn_id)
        return txn if txn is not None else self._stored(txn_id, self.store.get(TABLE, txn_id))

    async def aget(self, txn_id: str) -> T | None:
        """As `get`, its read of the store awaited (contract/store.py, `read`): where gateways share
        a store across the network, the loop serves other calls meanwhile. A transaction added to
        memory while the read waited is the one returned, so a caller that adds one when this gives
        None, without awaiting in between, never adds an id twice."""
        txn = self._in_memory(txn_id)
        if txn is not None:
            return txn
        record = await read(self.store, TABLE, txn_id)
        txn = self._in_memory(txn_id)
        return txn if txn is not None else self._stored(txn_id, record)

    def _in_memory(self, txn_id: str) -> T | None:
        txn = self._live.get(txn_id)
        if txn is not None:
            return txn
        txn = self._cache.get(txn_id)
        if txn is not None:
            self._cache.move_to_end(txn_id)
        return txn

    def _stored(self, txn_id: str, record: dict[str, Any] | None) -> T | None:
        if record is None:
            return None
        txn = self._decode(txn_id, record)
        if txn.acked:  # final; one another gateway is still running changes (replicas.py)
            self._remember(txn_id, txn)
        return txn

    def __contains__(self, txn_id: object) -> bool:
        return isinstance(txn_id, str) and self.get(txn_id) is not None

    def __getitem__(self, txn_id: str) -> T:
        txn = self.get(txn_id)
        if txn is None:
            raise KeyError(txn_id)
        return txn

    def live(self) -> list[T]:
        """The live transactions, oldest recorded first."""
        return list(self._live.values())

    def is_live(self, txn_id: str) -> bool:
        """Whether the transaction is in memory as live (INITIATED, or not acknowledged): no read."""
        return txn_id in self._live

    def scan(self) -> Iterator[tuple[str, T]]:
        """Every transaction, in id order and bounded memory (see `overlay`)."""
        return overlay(self.store.scan(TABLE), self._live, self._decode, self.get)

    # -- the coordinator's changes -----------------------------------------

    def add(self, txn_id: str, txn: T) -> None:
        """A new transaction, live until `retire`."""
        self._cache.pop(txn_id, None)
        self._live[txn_id] = txn

    def discard(self, txn_id: str) -> None:
        """A new transaction whose record never reached the store: its id is free again."""
        self._live.pop(txn_id, None)

    def retire(self, txn_id: str) -> None:
        """Acknowledged by every bank: out of the live set, into the cache."""
        txn = self._live.pop(txn_id, None)
        if txn is not None:
            self._remember(txn_id, txn)

    def _remember(self, txn_id: str, txn: T) -> None:
        if self.cache_limit <= 0:
            return
        self._cache[txn_id] = txn
        self._cache.move_to_end(txn_id)
        while len(self._cache) > self.cache_limit:
            self._cache.popitem(last=False)


def unfinished(txn_id: str, owner: str | None = None) -> Put:
    """The index row that makes a restart find the payment: in the INITIATED record's batch.

    Where gateways share the store it names the `owner`, the one gateway that may decide it.
    """
    return Put(UNFINISHED, txn_id, True if owner is None else {"owner": owner})


def finished(txn_id: str) -> Put:
    """Its deletion: in the batch that marks the payment acknowledged by every bank."""
    return Put(UNFINISHED, txn_id, None)
