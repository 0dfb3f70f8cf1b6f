"""Coalescing many small calls to one bank into a few batch calls.

While a batch call is in flight, new items wait and go out together in
the next one, so an idle system sends every item at once (no added
latency) and a busy one sends fewer, larger calls: fewer RPCs, and the
bank writes a whole batch with one fsync.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    def __init__(self, send: Callable[[list[Item]], Awaitable[Sequence[Result]]], max_batch: int = 512,
                 max_in_flight: int = 1) -> None:
        self._send, self._max_batch, self._max_in_flight = send, max_batch, max_in_flight
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        """The result for `item`, or the exception its batch call raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((item, future))
        if not self._scheduled:
            # Launch on the next turn of the loop, so that items submitted in this turn go together.
            self._scheduled = True
            loop.call_soon(self._launch)
        return await future

    def _launch(self) -> None:
        self._scheduled = False
        while self._pending and self._in_flight < self._max_in_flight:
            batch, self._pending = self._pending[:self._max_batch], self._pending[self._max_batch:]
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._send([item for item, _ in batch])
        except BaseException as e:  # every waiter of the batch gets the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
            if not isinstance(e, Exception):
                raise
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._in_flight -= 1
            self._launch()
