"""Coalescing many small calls to one bank into a few batch calls.

One batch call is in flight at a time; new items wait and go out
together in the next one. Each item says how long it may wait for
company (its patience), counted from when the link is free: the next
call goes out when the least patient item waiting is due, so an item
with no patience goes on the next turn of the event loop (no added
latency) and takes every waiting item with it. A busy link, whose last
batch carried more than one item, also lingers a moment before the next
call so that it fills: fewer, larger calls cost both ends far less CPU
per item, and the bank writes a whole batch with one fsync.

Callers choose patience by who waits on the answer: a decision, once the
client has its answer, can wait long enough to ride with another
payment's prepare; a prepare waits only when other payments keep the
cores busy meanwhile. `flush` sends everything at once, for a reader
that must see it applied.
"""
from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from miniupi.nodes.running_loop import RunningLoop

Item = TypeVar("Item")
Result = TypeVar("Result")

LINGER_S = 0.005


class Batcher(Generic[Item, Result]):
    def __init__(self, send: Callable[[list[Item]], Awaitable[Sequence[Result]]], max_batch: int = 512,
                 linger_s: float = LINGER_S) -> None:
        self._send, self._max_batch, self._linger = send, max_batch, linger_s
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._patience = math.inf  # the least patience among the items waiting
        self._not_before = 0.0  # a busy link's linger: nothing goes out before this loop time
        self._in_flight = False
        self._flight: list[asyncio.Future[Result]] = []  # the futures of the call in flight
        self._launch_at: asyncio.Handle | None = None
        self._launch_when = math.inf  # loop time the scheduled launch runs at
        self._tasks: set[asyncio.Task[None]] = set()
        self._running_loop = RunningLoop()

    def submit(self, item: Item, patience_s: float = 0.0) -> asyncio.Future[Result]:
        """A future for `item`'s result, or for the exception its batch call raised.

        The item goes out within `patience_s` of the link being free (after
        any call in flight, and a busy link's linger), with whatever else
        is waiting then.
        A future, not a coroutine: a caller sending to several banks
        awaits their futures without a task per bank.
        """
        future: asyncio.Future[Result] = self._running_loop().create_future()
        self._pending.append((item, future))
        self._patience = min(self._patience, patience_s)
        self._schedule()
        return future

    def flush(self) -> None:
        """Send what is pending without waiting for company."""
        if self._pending:
            self._patience = 0.0
            self._schedule()

    async def drain(self) -> None:
        """Send what is pending now, and wait until it and the call in flight are answered."""
        waiting = [future for _, future in self._pending] + self._flight
        if waiting:
            self.flush()
            await asyncio.wait(waiting)

    def _schedule(self) -> None:
        if self._in_flight or not self._pending:
            return  # the end of the call in flight schedules the next
        loop = self._running_loop()
        now = loop.time()
        when = max(now + self._patience, self._not_before)
        if self._launch_at is not None:
            if self._launch_when <= when:
                return
            self._launch_at.cancel()
        if when <= now:
            # Next turn of the loop, so that items submitted in this turn go together.
            self._launch_at = loop.call_soon(self._launch)
        else:
            self._launch_at = loop.call_at(when, self._launch)
        self._launch_when = when

    def _launch(self) -> None:
        self._launch_at, self._launch_when, self._not_before = None, math.inf, 0.0
        if self._in_flight or not self._pending:
            return
        batch, self._pending = self._pending[:self._max_batch], self._pending[self._max_batch:]
        # Left over from a full batch: send them next without waiting.
        self._patience = 0.0 if self._pending else math.inf
        self._in_flight, self._flight = True, [future for _, future in batch]
        task = self._running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._send([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} answers for a batch of {len(batch)}")
        except BaseException as e:  # every waiter of the batch gets the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
            if not isinstance(e, Exception):
                raise
        else:
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
        finally:
            self._in_flight, self._flight = False, []
            if self._pending and self._patience <= 0 and len(batch) > 1 and len(self._pending) < self._max_batch:
                # A busy link with someone waiting: let the next call fill. Impatient items
                # do not cut this short; patient ones wait their own patience anyway.
                self._not_before = self._running_loop().time() + self._linger
            self._schedule()

    def close(self) -> None:
        """Send nothing more: items still waiting are cancelled, and so is a call in flight."""
        if self._launch_at is not None:
            self._launch_at.cancel()
        self._launch_at, self._launch_when = None, math.inf
        for future in [future for _, future in self._pending] + self._flight:
            future.cancel()  # also a call cancelled before it started, whose own clean-up never runs
        self._pending, self._flight, self._in_flight = [], [], False
        for task in self._tasks:
            task.cancel()
