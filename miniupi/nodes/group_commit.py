"""The group commit: many concurrent writers share one durable write of the node's store.

The store itself is a storage plugin's (miniupi/contract/store.py says what
one provides); this is how a node feeds it without an fsync per change.
"""
from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any


from loguru import logger

from miniupi.contract.store import Conflict, Expect, Put, Store, close_reads
from miniupi.errors import StoreUnavailable
from miniupi.nodes.running_loop import RunningLoop


# Who waits for a queued batch: a writer's future, a write_later's `failed`, or nobody.
Waiter = asyncio.Future[None] | Callable[[], None] | None
# Told of each durable write, on the loop: how long it took and how many writers' batches it held.
Observer = Callable[[float, int], None]

# A store that finished its last write this long ago, with nothing queued,
# writes the next batch on the event loop itself. Handing a write to the
# writer thread and back costs a lightly loaded node about half a
# millisecond of latency per write, the slowest part of a lone payment;
# under load writes come far more often than this, so they keep going down
# together from the writer thread. The price: while it writes, the loop
# waits for the disk, which only a quiet node does. A store whose last
# write failed is never quiet: a failing disk is often a slow one too, and
# the gateway retries a failed decision's abort from a quiet store.
INLINE_AFTER_QUIET_S = 0.002


def _unavailable(error: Exception, puts: int) -> StoreUnavailable:
    """A failed write as the caller's answer: the node cannot take the change now, try again.

    Without it a full disk reached clients as gRPC UNKNOWN from whichever
    call happened to wait on the failing batch. The node's log gets the
    whole error once per batch; the caller gets its reason without a path.
    """
    logger.error("store write of {} puts failed: {!r}", puts, error)
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    failed = StoreUnavailable(f"store write failed: {reason}")
    failed.__cause__ = error
    return failed


class GroupCommit:
    """Makes many concurrent writers share one durable write (and one fsync).

    Writers await `write`; while one batch is being written in the writer
    thread, the next ones pile up and go down together. Order is kept: a
    batch is durable only after every batch submitted before it. A write
    to a quiet store goes down at once on the loop (INLINE_AFTER_QUIET_S;
    None writes everything from the writer thread). A failed write raises
    Unavailable in every writer of its batch and of every batch queued
    behind it (_fail says why).
    """

    def __init__(self, store: Store, inline_after_quiet_s: float | None = INLINE_AFTER_QUIET_S,
                 observe: Observer | None = None) -> None:
        self._store = store
        self._observe = observe
        self._inline_after = float("inf") if inline_after_quiet_s is None else inline_after_quiet_s
        self._pending: list[tuple[Sequence[Put], Sequence[Expect], Waiter]] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._flusher: asyncio.Task[None] | None = None
        self._running_loop = RunningLoop()
        self._idle_since = 0.0  # when the last write finished
        self._in_thread = False  # the writer thread is in store.write (even if its flusher was cancelled)
        self._failing = False  # the last write failed: the loop leaves the disk alone until one succeeds
        self._undoing: set[asyncio.Future[None]] = set()  # writers told of a failed write, not yet resumed
        self._failure = ""  # why the last write failed

    @property
    def store(self) -> Store:
        """The store itself, for reads (get, scan): they see every batch whose write has returned."""
        return self._store

    async def write(self, batch: Sequence[Put], expect: Sequence[Expect] = ()) -> None:
        """Return once `batch` (and everything before it) is durable.

        With `expect` the batch is conditional (contract/store.py): it goes down
        in its turn, atomically on its own, and raises Conflict, writing nothing,
        if an expectation does not hold. A store with `write_each` takes it with
        everything else queued, in one durable commit; any other, alone. Only
        gateways sharing a store write these.
        """
        if (not self._pending and not self._in_thread and (self._flusher is None or self._flusher.done())
                and not self._failing and time.monotonic() - self._idle_since > self._inline_after):
            started = time.perf_counter()
            try:  # nothing is queued or being written, so order holds
                if batch:
                    self._store.write(batch, expect) if expect else self._store.write(batch)
            except Conflict:
                raise
            except Exception as e:
                self._failing = True
                raise _unavailable(e, len(batch)) from e
            finally:
                # From the end of the write: a slow disk must not make every write look quiet.
                self._idle_since = time.monotonic()
            if batch and self._observe is not None:
                self._observe(time.perf_counter() - started, 1)
            return
        if self._undoing:
            raise StoreUnavailable(self._failure)
        future = self._running_loop().create_future()
        self._submit(batch, future, expect)
        try:
            await future
        finally:  # its writer undoes the batch's changes as soon as this returns, before anything else runs
            self._undoing.discard(future)

    async def barrier(self) -> None:
        """Return once everything submitted so far is durable.

        A repeated request must not be answered from memory before the
        write that first changed that memory has reached the disk.
        """
        await self.write(())

    async def claim(self, table: str, field: str, owners: Collection[str], owner: str,
                    limit: int) -> list[tuple[str, Any]]:
        """Store.claim, in order after everything submitted so far, from the writer thread."""
        await self.barrier()
        self._in_thread = True  # keeps the loop's inline writes off the store meanwhile
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, functools.partial(self._store.claim, table, field, owners, owner, limit))
        finally:
            self._in_thread = False

    def write_later(self, batch: Sequence[Put], failed: Callable[[], None] | None = None) -> None:
        """Queue `batch` without waiting; it still goes down in order. If its write fails, `failed()`
        is called (on the loop): it is not retried here, as a later batch may have changed its rows."""
        if self._undoing:
            if failed is not None:
                self._running_loop().call_soon(failed)
            return
        self._submit(batch, failed)

    def _submit(self, batch: Sequence[Put], future: Waiter, expect: Sequence[Expect] = ()) -> None:
        self._pending.append((batch, expect, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = self._running_loop().create_task(self._flush())

    def _write_in_thread(self, puts: list[Put], expect: Sequence[Expect]) -> list[Conflict | None]:
        """One batch, answered as write_each answers: None, or the Conflict that kept it out."""
        try:
            self._store.write(puts, expect) if expect else self._store.write(puts)
            return [None]
        except Conflict as e:  # the store is well; this batch's condition was not
            return [e]
        finally:
            self._in_thread = False

    def _write_each_in_thread(self, groups: list[tuple[list[Put], Sequence[Expect]]]) -> list[Conflict | None]:
        try:
            return self._store.write_each(groups)  # type: ignore[attr-defined]
        finally:
            self._in_thread = False

    def _take_all(self) -> tuple[list[tuple[list[Put], Sequence[Expect]]], list[list[Waiter]]]:
        """Every queued batch, for a store that writes many conditional ones at once (write_each):
        unconditional runs merged into one batch, each conditional batch on its own."""
        groups: list[tuple[list[Put], Sequence[Expect]]] = []
        waiters: list[list[Waiter]] = []
        for batch, expect, future in self._pending:
            if expect or not groups or groups[-1][1]:
                groups.append((list(batch), expect))
                waiters.append([future])
            else:
                groups[-1][0].extend(batch)
                waiters[-1].append(future)
        self._pending = []
        return groups, waiters

    def _take(self) -> tuple[list[tuple[list[Put], Sequence[Expect]]], list[list[Waiter]]]:
        """The next write: a conditional batch alone, or every unconditional one queued before the next."""
        if self._pending[0][1]:
            batch, expect, future = self._pending.pop(0)
            return [(list(batch), expect)], [[future]]
        n = next((i for i, (_, expect, _) in enumerate(self._pending) if expect), len(self._pending))
        taken, self._pending = self._pending[:n], self._pending[n:]
        return [([put for batch, _, _ in taken for put in batch], ())], [[future for _, _, future in taken]]

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            if hasattr(self._store, "write_each") and any(expect for _, expect, _ in self._pending):
                # Everything queued in one write_each: one durable commit, a Conflict only where it arose.
                groups, waiters = self._take_all()
                write = functools.partial(self._write_each_in_thread, groups)
            else:
                groups, waiters = self._take()
                write = functools.partial(self._write_in_thread, *groups[0])
            puts = sum(len(batch) for batch, _ in groups)
            try:
                answers: list[Conflict | None] = [None] * len(groups)
                if puts:
                    self._in_thread = True
                    started = time.perf_counter()
                    answers = await loop.run_in_executor(self._executor, write)
                    took = time.perf_counter() - started
            except BaseException as e:  # not written (as far as the store could tell): every waiter must learn of it
                if not isinstance(e, Exception):  # a cancelled flusher
                    for group in waiters:
                        _answer(group, e)
                    raise
                self._fail(waiters, _unavailable(e, puts))
            else:
                self._failing = self._failing and not puts  # a barrier alone proves nothing
                for answer, group in zip(answers, waiters):
                    _answer(group, answer)
                if puts and self._observe is not None:
                    self._observe(took, sum(len(group) for group in waiters))
            finally:
                self._idle_since = time.monotonic()

    def _fail(self, waiters: list[list[Waiter]], failed: StoreUnavailable) -> None:
        """Fail a batch that did not go down, and with it every batch queued behind it.

        Those were computed from memory that still held the failed batch's
        changes (a balance, a hold), which its writers undo only once told:
        written now, they would carry an undone change to the disk. Writers
        are told newest first, so each undoes its changes on top of the older
        ones before those are undone; and until all of them have, a new
        batch is refused too, as it may have been computed from that memory.
        """
        self._failing, self._failure = True, str(failed)
        queued, self._pending = self._pending, []
        for group in reversed([*waiters, *([future] for _, _, future in queued)]):
            self._undoing.update(w for w in group if isinstance(w, asyncio.Future) and not w.done())
            _answer(group[::-1], failed, store_failed=True)

    async def close(self) -> None:
        """Write what is queued, then close the store (its async reads first, on this loop)."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        await close_reads(self._store)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._store.close)
        self._executor.shutdown(wait=True)


def _answer(waiters: Sequence[Waiter], error: BaseException | None, store_failed: bool = False) -> None:
    """Tell a written batch's waiters: done, or `error`; a write_later's `failed` hears of a failed store."""
    for waiter in waiters:
        if isinstance(waiter, asyncio.Future):
            if not waiter.done():
                waiter.set_result(None) if error is None else waiter.set_exception(error)
        elif waiter is not None and store_failed:
            waiter()
