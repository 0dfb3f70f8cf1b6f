"""Coalescing many small calls to one bank into a few batch calls.

One batch call is in flight at a time; new items wait and go out
together in the next one. An idle link sends an item on the next turn of
the event loop (no added latency). A busy link, whose last batch carried
more than one item, lingers a moment before the next call so that it
fills: fewer, larger calls cost both ends far less CPU per item, and the
bank writes a whole batch with one fsync.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from miniupi.running_loop import RunningLoop

Item = TypeVar("Item")
Result = TypeVar("Result")

LINGER_S = 0.005


class Batcher(Generic[Item, Result]):
    def __init__(self, send: Callable[[list[Item]], Awaitable[Sequence[Result]]], max_batch: int = 512,
                 linger_s: float = LINGER_S) -> None:
        self._send, self._max_batch, self._linger = send, max_batch, linger_s
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._in_flight = False
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._running_loop = RunningLoop()
        self._timer: asyncio.TimerHandle | None = None

    def submit(self, item: Item) -> asyncio.Future[Result]:
        """A future for `item`'s result, or for the exception its batch call raised.

        A future, not a coroutine: a caller sending to several banks awaits
        their futures without a task per bank.
        """
        loop = self._running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((item, future))
        if not self._scheduled and not self._in_flight:
            # Next turn of the loop, so that items submitted in this turn go together.
            self._scheduled = True
            loop.call_soon(self._launch)
        return future

    def _launch(self) -> None:
        self._scheduled, self._timer = False, None
        if self._in_flight or not self._pending:
            return
        batch, self._pending = self._pending[:self._max_batch], self._pending[self._max_batch:]
        self._in_flight = True
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
            self._in_flight = False
            if self._pending and not self._scheduled:
                self._scheduled = True
                loop = self._running_loop()
                if len(batch) > 1 and len(self._pending) < self._max_batch:
                    self._timer = loop.call_later(self._linger, self._launch)
                else:
                    loop.call_soon(self._launch)

    def close(self) -> None:
        """Send nothing more: items still waiting are cancelled, and so is a call in flight."""
        if self._timer is not None:
            self._timer.cancel()
        for _, future in self._pending:
            future.cancel()
        self._pending = []
        for task in self._tasks:
            task.cancel()
