"""What a storage plugin provides: a small durable key-value log.

Named tables of JSON values, loaded whole at start and written in atomic,
fsync'd batches. Nodes keep their working state in memory and use the
store only to survive a crash, which keeps every storage plugin small and
the hot path free of queries. Nodes write through the group commit
(miniupi/nodes/group_commit.py), so concurrent changes share one write.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol


class Put(NamedTuple):
    """Set table[key] = value; a value of None deletes the key."""

    table: str
    key: str
    value: Any


class StoreDamaged(Exception):
    """The files on disk are not a state this store ever wrote; refuse to serve."""


class Store(Protocol):
    def load(self) -> dict[str, dict[str, Any]]:
        """Every table as last written: {table: {key: value}}."""

    def write(self, batch: Sequence[Put]) -> None:
        """Apply the whole batch atomically and durably, or raise and apply none."""

    def close(self) -> None:
        """Release files; later calls are errors."""
