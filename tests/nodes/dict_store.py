"""A Store in a dict, for the gateway's pieces tested in process: it counts what is read; AsyncReads adds
the optional reads on the event loop (contract/store.py) that a store across the network offers."""
from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from typing import Any

from miniupi.contract.expectations import inserted_keys, require
from miniupi.contract.store import Expect, Put


class DictStore:
    """miniupi.contract.store.Store over {table: {key: value}}; `reads` counts get, scan and load calls
    by table, `writes` the batches written."""

    def __init__(self, tables: dict[str, dict[str, Any]] | None = None) -> None:
        self.tables: dict[str, dict[str, Any]] = tables if tables is not None else {}
        self.reads: Counter[tuple[str, str]] = Counter()  # ("get" | "scan" | "load", table) -> calls
        self.writes: list[list[Put]] = []

    def load(self, tables: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
        names = list(self.tables) if tables is None else list(tables)
        for name in names:
            self.reads["load", name] += 1
        return {name: dict(self.tables[name]) for name in names if self.tables.get(name)}

    def get(self, table: str, key: str) -> Any | None:
        self.reads["get", table] += 1
        return self.tables.get(table, {}).get(key)

    def scan(self, table: str) -> Iterator[tuple[str, Any]]:
        self.reads["scan", table] += 1
        for key in sorted(self.tables.get(table, {})):
            value = self.tables.get(table, {}).get(key)
            if value is not None:
                yield key, value

    def write(self, batch: Sequence[Put], expect: Sequence[Expect] = ()) -> None:
        inserted_keys(batch, expect)
        for e in expect:
            require(e, self.tables.get(e.table, {}).get(e.key))
        self.writes.append(list(batch))
        for table, key, value in batch:
            if value is None:
                self.tables.get(table, {}).pop(key, None)
            else:
                self.tables.setdefault(table, {})[key] = value

    def claim(self, table: str, field: str, owners: Collection[str], owner: str,
              limit: int) -> list[tuple[str, Any]]:
        rows = self.tables.get(table, {})
        taken = [key for key in sorted(rows) if isinstance(rows[key], dict) and rows[key].get(field) in owners]
        claimed = [(key, {**rows[key], field: owner}) for key in taken[:limit]]
        self.write([Put(table, key, value) for key, value in claimed])
        return claimed

    def close(self) -> None:
        pass

    def gets(self, table: str) -> int:
        return self.reads["get", table]


class AsyncReads:
    """Mixed into a DictStore: its reads as coroutines (contract/store.py, AsyncReads), each answering only
    after a turn of the event loop, as a read across the network lets the loop's other calls run first."""

    closed_reads = 0  # aclose calls

    async def aget(self, table: str, key: str) -> Any | None:
        await asyncio.sleep(0)
        return self.get(table, key)  # type: ignore[attr-defined]

    async def aget_many(self, table: str, keys: Collection[str]) -> dict[str, Any]:
        await asyncio.sleep(0)
        found = ((key, self.get(table, key)) for key in keys)  # type: ignore[attr-defined]
        return {key: value for key, value in found if value is not None}

    async def ascan(self, table: str) -> AsyncIterator[tuple[str, Any]]:
        await asyncio.sleep(0)
        for row in list(self.scan(table)):  # type: ignore[attr-defined]
            yield row

    async def aclose(self) -> None:
        self.closed_reads += 1
