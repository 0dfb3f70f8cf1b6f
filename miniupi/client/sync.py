"""Sending the outbox: the logged-in payer's queue, in order, until each payment has a final answer.

A flush sends the payer's oldest pending payment, then the next, and stops
at the first one that gets no final answer, so payments reach the gateway
in the order they were taken. What counts as an answer:

- COMMITTED: the payment is done;
- a refusal (insufficient funds, unknown account, aborted, ...): it is
  failed, with that reason, and never sent again;
- no answer (gateway unreachable, call timed out, anything else that is not
  known to be final): it stays queued and is retried with the same id after
  the backoff (backoff.py);
- session expired or revoked: it stays queued, with no backoff, until the
  payer logs in again. Nothing is ever dropped.

One flush at a time per outbox file, across processes too (a file lock next
to the outbox), so a REPL's background task and a `miniupi pay` in another shell
never send the same row side by side.
"""
from __future__ import annotations

import asyncio
import fcntl
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from miniupi.backoff import RetryPolicy
from miniupi.client.outbox import Outbox, OutboxEntry
from miniupi.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    MiniupiError,
    NotFound,
    NotLoggedIn,
    PermissionDenied,
    SessionExpired,
    Unauthenticated,
    Unavailable,
)



class _Session(Protocol):
    account: str
    expires_at: float


class _Paid(Protocol):
    state: str


class Payer(Protocol):
    """What a Courier needs of a client (AsyncClient is one): who is logged in, and a pay that takes an id.

    A protocol rather than the client class, so this module and the client's do not import each other.
    """

    session: _Session | None

    async def pay(self, to: str, amount: int, *, txn_id: str | None = None,
                  from_account: str | None = None) -> _Paid: ...

# The gateway's final answers for a payment id (DESIGN.md section 2); anything else may be resent.
FINAL_REFUSALS: tuple[type[MiniupiError], ...] = (
    FailedPrecondition, NotFound, InvalidArgument, AlreadyExists, PermissionDenied, Aborted)


@dataclass(frozen=True)
class SyncReport:
    """What one flush did."""

    finished: tuple[OutboxEntry, ...]  # payments that got their final answer, in the order sent
    stopped: MiniupiError | None  # why payments are still queued; None when nothing stood in the way
    pending: int  # the payer's payments still queued afterwards
    busy: bool = False  # another flush (maybe another process) held the outbox; nothing was sent


class Courier:
    """Flushes one outbox through an AsyncClient, with the retry policy for transport failures."""

    def __init__(self, outbox: Outbox, policy: RetryPolicy | None = None, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.outbox = outbox
        self.policy = policy or RetryPolicy()
        self.rng = rng or random.Random()
        self.clock = clock
        self._lock = asyncio.Lock()
        self._lock_path = outbox.path.with_name(outbox.path.name + ".lock")

    # -- one flush --------------------------------------------------------

    async def flush(self, client: Payer, *, due_only: bool = False, wait_s: float = 0.0,
                    on_finished: Callable[[OutboxEntry], None] | None = None) -> SyncReport:
        """Send the logged-in payer's queue now (or, with due_only, only if its retry time has come).

        wait_s bounds how long to wait for a flush already running elsewhere.
        """
        session = client.session
        if session is None:
            return SyncReport((), NotLoggedIn("not logged in; run: miniupi login USER@BANK"), 0)
        payer = session.account
        if session.expires_at <= self.clock():
            expired = SessionExpired(f"session for {payer} expired; log in again: miniupi login {payer}")
            self.outbox.note(payer, expired.message)
            return SyncReport((), expired, len(self.outbox.pending(payer)))
        fd = await self._acquire(wait_s)
        if fd is None:
            return SyncReport((), None, len(self.outbox.pending(payer)), busy=True)
        finished: list[OutboxEntry] = []
        try:
            self.outbox.prune_if_due(self.clock())  # for processes that live long, as the REPL does
            while (head := self.outbox.head(payer)) is not None:
                if due_only and not finished and head.next_attempt_at > self.clock():
                    break
                outcome = await self._send(client, head)
                if isinstance(outcome, MiniupiError):
                    return SyncReport(tuple(finished), outcome, len(self.outbox.pending(payer)))
                finished.append(outcome)
                if on_finished is not None:
                    on_finished(outcome)
            return SyncReport(tuple(finished), None, len(self.outbox.pending(payer)))
        finally:
            self._release(fd)

    async def _send(self, client: Payer, entry: OutboxEntry) -> OutboxEntry | MiniupiError:
        """One attempt: the finished entry, or the error that leaves it queued."""
        n = self.outbox.claim(entry.txn_id, self.clock())
        try:
            result = await client.pay(entry.payee, entry.amount, txn_id=entry.txn_id, from_account=entry.payer)
        except Unauthenticated as e:
            self.outbox.requeue(entry.txn_id, n, "unauthenticated", e.message, retry_at=self.clock(),
                                transport_failure=False)
            return e
        except FINAL_REFUSALS as e:
            return self.outbox.finish_failed(entry.txn_id, n, e.code, e.message, self.clock(), reason=e.reason)
        except MiniupiError as e:
            now = self.clock()
            delay = self.policy.delay(entry.failures + 1, self.rng)
            self.outbox.requeue(entry.txn_id, n, "unreachable" if isinstance(e, Unavailable) else "no answer",
                                e.message, retry_at=now + delay, transport_failure=True, now=now)
            return e
        except BaseException:
            # Cancelled (Ctrl-C) or a bug: the answer is unknown, so the payment stays queued for a resend.
            self.outbox.requeue(entry.txn_id, n, "interrupted", "interrupted before the answer came",
                                retry_at=self.clock(), transport_failure=False)
            raise
        return self.outbox.finish_done(entry.txn_id, n, result.state, self.clock())

    # -- one flush at a time ----------------------------------------------

    async def _acquire(self, wait_s: float) -> int | None:
        """Hold this process's lock and the file lock, or give up after wait_s; the lock fd or None."""
        deadline = time.monotonic() + wait_s
        while True:
            if not self._lock.locked():
                await self._lock.acquire()  # free and uncontended: returns at once
                fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return fd
                except BlockingIOError:
                    os.close(fd)
                    self._lock.release()
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.05)

    def _release(self, fd: int) -> None:
        os.close(fd)  # closing drops the flock; a process that dies drops it the same way
        self._lock.release()

    # -- in the background ------------------------------------------------

    async def deliver_forever(self, client: Payer, wake: asyncio.Event, *,
                              on_finished: Callable[[OutboxEntry], None] | None = None,
                              on_stuck: Callable[[MiniupiError, int], None] | None = None,
                              poll_s: float = 2.0) -> None:
        """Flush whenever the payer's next retry is due; never returns (cancel it).

        Set `wake` after a login or a new payment to look again at once;
        without it the outbox is looked at every poll_s anyway, which picks
        up payments queued by other processes. on_stuck(error, pending) is
        called once per session when payments wait for a new login, and
        when a flush fails for a reason that is not the gateway's.
        """
        reported_key: str | None = None  # the session we already said "log in again" for
        while True:
            wake.clear()
            timeout = poll_s
            session = client.session
            head = self.outbox.head(session.account) if session is not None else None
            if session is not None and head is not None and session.key != reported_key:
                wait = head.next_attempt_at - self.clock()
                if wait <= 0:
                    try:
                        report = await self.flush(client, due_only=True, on_finished=on_finished)
                    except Exception as e:  # never let the background task die quietly
                        if on_stuck is not None:
                            on_stuck(MiniupiError(f"sending the outbox failed: {e!r}"), 0)
                    else:
                        if isinstance(report.stopped, Unauthenticated):
                            reported_key = session.key
                            if on_stuck is not None:
                                on_stuck(report.stopped, report.pending)
                        elif report.busy:
                            timeout = 0.2
                        else:
                            continue  # look at the (new) head's retry time straight away
                else:
                    timeout = min(wait, poll_s)
            try:
                await asyncio.wait_for(wake.wait(), timeout)
            except TimeoutError:
                pass
