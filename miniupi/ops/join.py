"""Joining runs sorted by id: how the audit lines up every node's reading.

Every node streams its transactions in id order (the stores scan in key
order, the few live records merged in: miniupi/nodes/overlay.py). A Run
buffers what has arrived of one such stream; `ready` yields, for each id
in order, what every run holds at that id, for as long as every run still
streaming has something buffered, and `hungry` names the runs to read
next. Readings already in memory (every run complete) and gRPC streams
read as the join needs them go through the same join, so the audit holds
about one message per stream, however many transactions the nodes hold.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any


class OutOfOrder(Exception):
    """A run's ids did not increase: a join by id would judge wrongly, so it stops."""


class Run:
    """What has arrived of one sorted stream and not been joined yet."""

    def __init__(self, name: str, items: Iterable[tuple[str, Any]] = (), done: bool = False) -> None:
        self.name = name
        self.done = done  # nothing more will arrive
        self._items: deque[tuple[str, Any]] = deque()
        self._last: str | None = None
        # Every id up to here has arrived (or never will): through it, or only below it when not inclusive.
        self._bound: str | None = None
        self._inclusive = False
        self.extend(items)

    def extend(self, items: Iterable[tuple[str, Any]]) -> None:
        for key, value in items:
            if self._last is not None and key <= self._last:
                raise OutOfOrder(f"{self.name} listed {key} after {self._last}, not in id order")
            self._last = key
            self._items.append((key, value))
        if self._last is not None:
            self.arrived(self._last)

    def arrived(self, key: str, inclusive: bool = True) -> None:
        """Every id up to `key` (`inclusive`, or only those below it) has arrived: for runs that share a
        stream, where one run's next message tells how far the other has come too."""
        if self._bound is None or key > self._bound or (key == self._bound and inclusive):
            self._bound, self._inclusive = key, inclusive

    def _covers(self, key: str) -> bool:
        """Whether nothing at `key` is still to arrive."""
        return self._bound is not None and (key < self._bound or (self._inclusive and key == self._bound))

    def __len__(self) -> int:
        return len(self._items)


def _next(runs: Sequence[Run]) -> tuple[str | None, list[Run]]:
    """The lowest id buffered, and the runs that must be read before it can be joined."""
    key = None
    for run in runs:
        if run._items and (key is None or run._items[0][0] < key):
            key = run._items[0][0]
    return key, [run for run in runs if not run._items and not run.done and not (key is not None and run._covers(key))]


def ready(runs: Sequence[Run]) -> Iterator[tuple[str, list[Any]]]:
    """(id, [each run's value at that id, or None]) in id order, while no run still streaming may hold
    a lower or equal id that has not arrived yet."""
    while True:
        key, starving = _next(runs)
        if key is None or starving:
            return
        yield key, [run._items.popleft()[1] if run._items and run._items[0][0] == key else None for run in runs]


def hungry(runs: Sequence[Run]) -> list[Run]:
    """The runs that must be read before `ready` can go on; none once every run is done and joined."""
    return _next(runs)[1]
