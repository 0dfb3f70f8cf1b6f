"""A store's scan with what memory holds live over it, still in key order.

The gateway's payments and requests and a bank's audit view each keep the
few live records in memory and the settled rest in the store. Reading all
of them in key order lets `miniupi audit` join every node's reading by
transaction id in bounded memory (miniupi/ops/invariants.py).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TypeVar

R = TypeVar("R")
V = TypeVar("V")


def overlay(rows: Iterable[tuple[str, R]], live: Mapping[str, V], decode: Callable[[str, R], V],
            get: Callable[[str], V | None]) -> Iterator[tuple[str, V]]:
    """A store's `rows`, in key order, with what memory holds live over them, still in key order.

    Each row comes in its live version where `live` has one. The keys live
    when the scan began that the store did not hold yet are merged in at
    their place, read with `get` when reached: live still, settled since,
    or None (never written: left out). A key made live later may or may
    not be seen, as for any row written during a scan. Sorting the live
    keys costs what is in flight, never the history.
    """
    pending = sorted(live)
    i = 0

    def due(before: str | None) -> Iterator[tuple[str, V]]:
        nonlocal i
        while i < len(pending) and (before is None or pending[i] < before):
            value = get(pending[i])
            if value is not None:
                yield pending[i], value
            i += 1

    for key, record in rows:
        if i < len(pending) and pending[i] < key:
            yield from due(key)
        if i < len(pending) and pending[i] == key:
            i += 1
        value = live.get(key)
        yield key, value if value is not None else decode(key, record)
    yield from due(None)
