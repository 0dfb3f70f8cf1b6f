"""Coalescing many small calls to one bank into a few batch calls.

One batch call is in flight at a time; new items wait and go out
together in the next one. An idle link sends an item on the next turn of
the event loop (no added latency). A busy link, whose last batch carried
more than one item, lingers a moment before the next call so that it
fills: fewer, larger calls cost both ends far less CPU per item, and the
bank writes a whole batch with one fsync.

Items nobody is waiting on (a decision, once the client has its answer)
can be submitted as not urgent: they wait up to `patience_s` for an
urgent item to ride with, so at low load a payment's decision goes out in
the same call as the next payment's prepare instead of a call of its own.
`flush` sends them at once, for a reader that must see them applied.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from miniupi.running_loop import RunningLoop

Item = TypeVar("Item")
Result = TypeVar("Result")

LINGER_S = 0.005
PATIENCE_S = 0.050  # a bank in a 16-bank cluster sees a prepare every ~15 ms at full load


class Batcher(Generic[Item, Result]):
    def __init__(self, send: Callable[[list[Item]], Awaitable[Sequence[Result]]], max_batch: int = 512,
                 linger_s: float = LINGER_S, patience_s: float = PATIENCE_S) -> None:
        self._send, self._max_batch, self._linger, self._patience = send, max_batch, linger_s, patience_s
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._urgent = False  # some pending item has someone waiting on it
        self._in_flight = False
        self._flight: list[asyncio.Future[Result]] = []  # the futures of the call in flight
        self._launch_at: asyncio.Handle | None = None
        self._patient = False  # the scheduled launch is only waiting for company: urgency cuts it short
        self._tasks: set[asyncio.Task[None]] = set()
        self._running_loop = RunningLoop()

    def submit(self, item: Item, urgent: bool = True) -> asyncio.Future[Result]:
        """A future for `item`'s result, or for the exception its batch call raised.

        A future, not a coroutine: a caller sending to several banks awaits
        their futures without a task per bank.
        """
        future: asyncio.Future[Result] = self._running_loop().create_future()
        self._pending.append((item, future))
        self._urgent = self._urgent or urgent
        self._schedule()
        return future

    def flush(self) -> None:
        """Send what is pending without waiting for company."""
        if self._pending:
            self._urgent = True
            self._schedule()

    async def drain(self) -> None:
        """Send what is pending now, and wait until it and the call in flight are answered."""
        waiting = [future for _, future in self._pending] + self._flight
        if waiting:
            self.flush()
            await asyncio.wait(waiting)

    def _schedule(self) -> None:
        if self._in_flight:
            return  # the end of the call in flight schedules the next
        if self._launch_at is not None and not (self._patient and self._urgent):
            return
        if self._launch_at is not None:
            self._launch_at.cancel()
        loop = self._running_loop()
        if self._urgent:
            # Next turn of the loop, so that items submitted in this turn go together.
            self._launch_at, self._patient = loop.call_soon(self._launch), False
        else:
            self._launch_at, self._patient = loop.call_later(self._patience, self._launch), True

    def _launch(self) -> None:
        self._launch_at = None
        if self._in_flight or not self._pending:
            return
        batch, self._pending = self._pending[:self._max_batch], self._pending[self._max_batch:]
        self._urgent = bool(self._pending)  # left over from a full batch: send them next without waiting
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
            if self._pending:
                if self._urgent and len(batch) > 1 and len(self._pending) < self._max_batch:
                    # A busy link: let the next call fill. Urgent items do not cut this short.
                    self._launch_at, self._patient = self._running_loop().call_later(self._linger, self._launch), False
                else:
                    self._schedule()

    def close(self) -> None:
        """Send nothing more: items still waiting are cancelled, and so is a call in flight."""
        if self._launch_at is not None:
            self._launch_at.cancel()
        for future in [future for _, future in self._pending] + self._flight:
            future.cancel()  # also a call cancelled before it started, whose own clean-up never runs
        self._pending, self._flight, self._in_flight = [], [], False
        for task in self._tasks:
            task.cancel()
