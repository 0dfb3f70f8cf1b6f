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
"""
from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
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
