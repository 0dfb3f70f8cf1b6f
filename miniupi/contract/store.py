"""What a storage plugin provides: a small durable key-value store.

Named tables of JSON values, written in atomic, fsync'd batches. A node
keeps in memory only what is live (accounts, payments in two-phase commit,
sessions, open requests) and loads only those tables at start; everything
settled stays in the store and is read back on demand, one key at a time
(`get`, an index lookup), or a whole table in bounded memory (`scan`, for
the audit and the settlement report). So a node's memory and its restart
time follow what is live, not how long it has run. Nodes write through the
group commit (miniupi/nodes/group_commit.py), so concurrent changes share
one write.

Reads see every batch whose write has returned, and never part of a batch.
They come from the node's event loop while the group commit's writer
thread writes, so a plugin must allow one reader and one writer at once.

A store across a network (PostgreSQL) may also offer its reads as
coroutines (AsyncReads, optional): a gateway sharing the store reads a row
on every call and payment, and a synchronous round trip there would stop
every other call of the node while it waits. The node reads through
`read`, `read_many` and `read_table`, which await those where the store has
them and call `get` and `scan` where it has not: a local store (SQLite,
JSON) answers sooner than a hand-off would cost, so it leaves them out.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from typing import Any, NamedTuple, Protocol


class Put(NamedTuple):
    """Set table[key] = value; a value of None deletes the key."""

    table: str
    key: str
    value: Any


class Expect(NamedTuple):
    """A condition of a conditional write: table[key] is a JSON object whose value[field] == value
    (the field present: a missing one matches no value; contract/expectations.py decides).

    field None: the row must be absent, and the batch must put that key (the
    put becomes an insert: of two writers racing to insert one key, exactly
    one succeeds). Gateways sharing one store decide with these who owns a
    payment (miniupi/nodes/replicas.py).
    """

    table: str
    key: str
    field: str | None
    value: Any = None


class Conflict(Exception):
    """An Expect did not hold when the write ran: nothing of the batch was written."""


class StoreDamaged(Exception):
    """The files on disk are not a state this store ever wrote; refuse to serve."""


class Store(Protocol):
    def load(self, tables: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
        """The named tables (None: every table) whole, as last written: {table: {key: value}}.

        A node names only its live tables here; absent tables are left out.
        """

    def get(self, table: str, key: str) -> Any | None:
        """table[key] as last written, or None: one index lookup, never a scan."""

    def scan(self, table: str) -> Iterator[tuple[str, Any]]:
        """Every (key, value) of `table`, in key order, in bounded memory.

        Rows written while the scan runs may or may not be seen; each row seen
        is as some batch left it.
        """

    def write(self, batch: Sequence[Put], expect: Sequence[Expect] = ()) -> None:
        """Apply the whole batch atomically and durably if every expectation holds, else raise
        Conflict and apply none; any other failure raises and applies none too."""

    def claim(self, table: str, field: str, owners: Collection[str], owner: str,
              limit: int) -> list[tuple[str, Any]]:
        """Set value[field] = owner in up to `limit` rows of `table` whose value[field] is one of
        `owners`, atomically and durably; return those rows as now written. Rows another writer
        holds locked are passed over, never waited for (in PostgreSQL: FOR UPDATE SKIP LOCKED)."""

    def close(self) -> None:
        """Release files; later calls are errors."""


class AsyncReads(Protocol):
    """Reads a Store may also offer as coroutines, for the node's event loop (see the module's docstring).

    Each sees what its synchronous twin sees, and fails as it does (a server
    away: StoreUnavailable). `aclose` is awaited at the node's stop, before
    `close`, on the loop the reads ran on.
    """

    async def aget(self, table: str, key: str) -> Any | None:
        """As `get`."""

    async def aget_many(self, table: str, keys: Collection[str]) -> dict[str, Any]:
        """{key: value} of the `keys` that `table` holds, in one round trip; absent keys left out."""

    def ascan(self, table: str) -> AsyncIterator[tuple[str, Any]]:
        """As `scan`."""

    async def aclose(self) -> None:
        """Release what the async reads hold; a later one opens it again."""


async def read(store: Store, table: str, key: str) -> Any | None:
    """store.get(table, key), awaited where the store reads asynchronously (AsyncReads)."""
    aget = getattr(store, "aget", None)
    return store.get(table, key) if aget is None else await aget(table, key)


async def read_many(store: Store, table: str, keys: Collection[str]) -> dict[str, Any]:
    """{key: value} of the `keys` that `table` holds: one round trip where the store reads asynchronously."""
    aget_many = getattr(store, "aget_many", None)
    if aget_many is not None:
        return await aget_many(table, keys)
    found = ((key, store.get(table, key)) for key in keys)
    return {key: value for key, value in found if value is not None}


async def read_table(store: Store, table: str) -> list[tuple[str, Any]]:
    """Every (key, value) of a small `table` (such as the gateways' leases), in key order."""
    ascan = getattr(store, "ascan", None)
    if ascan is None:
        return list(store.scan(table))
    return [row async for row in ascan(table)]


async def close_reads(store: Store) -> None:
    """End the store's async reads, if it has them, on the loop they ran on."""
    aclose = getattr(store, "aclose", None)
    if aclose is not None:
        await aclose()
