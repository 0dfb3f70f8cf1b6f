"""Collect requests where several gateways share the store: the rows are the truth, memory holds none.

A request asked at one gateway must show in the payer's poll at every
other, and an approval at one must race a decline at another to exactly
one winner. So a SharedCollectBook keeps nothing in memory: the request's
row carries a version ("v"), and each account has an inbox row (table
"inbox": the ids of the open requests it asked or is asked, and its own
version) that a poll reads instead of an index in memory. Every change is
a conditional write expecting the versions it was computed from: asking
inserts the request and adds it to both inboxes; approving (the payment's
INITIATED batch, as a coordinator.Guard's `reserve`) and declining both
rewrite the request's row, so whichever reaches the store second is
computed again and sees the first; a decision takes it out of both
inboxes. The caps on pending requests are counted from the inboxes.
"""
from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Container, Iterator
from dataclasses import asdict
from typing import Any

from miniupi.backoff import RetryPolicy
from miniupi.contract.store import Conflict, Expect, Put, read, read_many
from miniupi.errors import (
    AlreadyExists,
    NotFound,
    PermissionDenied,
    RequestClosed,
    StoreUnavailable,
    TooManyRequests,
)
from miniupi.nodes.collect import (
    MAX_PENDING_PER_PAYER,
    MAX_PENDING_PER_REQUESTER,
    TABLE,
    CollectBook,
    Request,
    RequestState,
    _request,
    _row,
)
from miniupi.nodes import ids
from miniupi.nodes.coordinator import Payment, Txn
from miniupi.nodes.group_commit import GroupCommit
from miniupi.nodes.txn_index import TxnIndex
from miniupi.states import TxnState

INBOX = "inbox"  # account -> {"ids": [open request ids it asked or is asked, oldest first], "v": version}
TRIES = 20  # writes that met another gateway's change, computed again before UNAVAILABLE
POLL = RetryPolicy(base_s=0.005, factor=2.0, cap_s=0.2, jitter=0.5)  # between them
_rng = random.Random()
OPEN_STATES = (RequestState.PENDING, RequestState.PAYING)
Change = tuple[list[Put], list[Expect]]


class SharedCollectBook(CollectBook):
    """A CollectBook over a store shared by several gateways (see the module's docstring)."""

    def __init__(self, commit: GroupCommit, txns: TxnIndex[Txn], taken: Container[str]) -> None:
        super().__init__(commit, {}, txns, taken)
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiting: dict[str, int] = {}

    # -- reading ------------------------------------------------------------------------------------

    # Reads are awaited (contract/store.py, `read`): the store is across the network, and every change
    # expects the versions it was computed from, so a row changed while a read waited computes it again.

    async def _versioned(self, table: str, key: str) -> tuple[dict[str, Any] | None, Expect]:
        """A row and the expectation that it is still as read (absent, or at its version)."""
        row = await read(self._store, table, key)
        return row, Expect(table, key, None) if row is None else Expect(table, key, "v", row.get("v"))

    def _read(self, request_id: str) -> Request | None:
        row = self._store.get(TABLE, request_id)
        return None if row is None else _request(request_id, row)

    def scan(self) -> Iterator[Request]:
        return (_request(request_id, row) for request_id, row in self._store.scan(TABLE))

    async def _inbox(self, account: str) -> tuple[list[Request], Expect]:
        row, expect = await self._versioned(INBOX, account)
        ids = row["ids"] if row else []
        rows = await read_many(self._store, TABLE, ids)
        return [_request(request_id, rows[request_id]) for request_id in ids if request_id in rows], expect

    async def _state(self, request: Request, now: float) -> RequestState:
        """As `state`, the read of the request's payment awaited."""
        return self.state_of(request, await self._txns.aget(request.request_id), now)[0]

    async def open_for(self, account: str, now: float) -> list[Request]:
        return [r for r in (await self._inbox(account))[0] if await self._state(r, now) in OPEN_STATES]

    async def _inboxes(self, request: Request, now: float, add: bool,
                       boxes: dict[str, tuple[list[Request], Expect]] | None = None) -> Change:
        """Both parties' inboxes rewritten without their closed requests, with or without `request`;
        from `boxes` where the caller already read them (and decided on what it read)."""
        puts, expects = [], []
        for account in dict.fromkeys((request.payer, request.payee)):
            held, expect = boxes[account] if boxes and account in boxes else await self._inbox(account)
            ids = [r.request_id for r in held
                   if r.request_id != request.request_id and await self._state(r, now) in OPEN_STATES]
            if add:
                ids.append(request.request_id)
            version = 0 if expect.field is None else int(expect.value or 0)
            puts.append(Put(INBOX, account, {"ids": ids, "v": version + 1}))
            expects.append(expect)
        return puts, expects

    # -- changing -----------------------------------------------------------------------------------

    async def _write(self, accounts: tuple[str, ...], compute: Any) -> Any:
        """Write what `compute()` returns ((puts, expects), result) until no other gateway got between.

        Changes for one account at this gateway wait for each other (a lock per account, taken in
        name order), so only other gateways' changes can make one compute again.
        """
        async with contextlib.AsyncExitStack() as stack:
            for account in sorted(set(accounts)):
                await stack.enter_async_context(self._lock(account))
            for attempt in range(1, TRIES + 1):
                (puts, expects), result = await compute()
                try:
                    await self._commit.write(puts, expects)
                    return result
                except Conflict:
                    await asyncio.sleep(POLL.delay(attempt, _rng))
        raise StoreUnavailable("collect request met other gateways' changes too often; ask again")

    @contextlib.asynccontextmanager
    async def _lock(self, account: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(account, asyncio.Lock())
        self._waiting[account] = self._waiting.get(account, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._waiting[account] -= 1
            if not self._waiting[account]:  # nobody else holds or waits: the lock goes
                del self._waiting[account], self._locks[account]

    async def ask(self, request: Request) -> Request:
        async def compute() -> tuple[Change, Request]:
            known = self._read(request.request_id)
            if known is not None:
                if known.details != request.details:
                    raise AlreadyExists(f"request id {request.request_id} was already used for another request")
                return ([], []), known
            if request.request_id in self._txns or request.request_id in self._taken:
                raise AlreadyExists(f"id {request.request_id} was already used for a transaction")
            now = request.created_at
            # Counted from the very rows whose versions the write expects: an inbox read again for the
            # write could hold a request another gateway added after the count.
            boxes = {account: await self._inbox(account) for account in dict.fromkeys((request.payee, request.payer))}
            pending = sum([r.payee == request.payee and await self._state(r, now) == RequestState.PENDING
                           for r in boxes[request.payee][0]])
            if pending >= MAX_PENDING_PER_REQUESTER:
                raise TooManyRequests(f"{request.payee} already has {pending} pending requests; "
                                      "wait for some to be answered or to expire")
            asked = sum([r.payer == request.payer and await self._state(r, now) == RequestState.PENDING
                         for r in boxes[request.payer][0]])
            if asked >= MAX_PENDING_PER_PAYER:
                raise TooManyRequests(f"{request.payer} has too many requests waiting for an answer; "
                                      "ask again later")
            puts, expects = await self._inboxes(request, now, add=True, boxes=boxes)
            put, taken = ids.take(request.request_id, ids.REQUEST)  # a Conflict here: the next compute refuses
            return ([Put(TABLE, request.request_id, _row(request, 1)), put, *puts],
                    [Expect(TABLE, request.request_id, None), taken, *expects]), request

        return await self._write((request.payer, request.payee), compute)

    async def decline(self, request_id: str, caller: str, now: float) -> Request:
        async def compute() -> tuple[Change, Request]:
            request = self.find(request_id, caller)
            if caller != request.payer:
                raise PermissionDenied(f"only {request.payer}, who is asked to pay, may decline request {request_id}")
            state, _ = self.state(request, now)
            if state == RequestState.DECLINED:
                return ([], []), request
            if state != RequestState.PENDING:
                raise RequestClosed(f"request {request_id} is {state.lower()}; only a pending request can be declined")
            declined = Request(**{**asdict(request), "declined_at": now})
            row, expect = await self._versioned(TABLE, request_id)
            assert row is not None
            puts, expects = await self._inboxes(declined, now, add=False)
            return ([Put(TABLE, request_id, _row(declined, int(row["v"]) + 1)), *puts],
                    [expect, *expects]), declined

        request = self.find(request_id, caller)
        return await self._write((request.payer, request.payee), compute)

    # -- a Guard of the coordinator, where the store decides ------------------------------------

    async def reserve(self, payment: Payment, now: float) -> Change:
        """An approval: the request is still approvable as the store has it, and its row moves on, so a
        decline written meanwhile at another gateway makes one of the two compute again."""
        if not payment.request_id:
            return [], []
        row, expect = await self._versioned(TABLE, payment.request_id)
        if row is None:
            raise NotFound(f"no collect request {payment.request_id}")
        request = _request(payment.request_id, row)
        if request.declined_at:
            raise RequestClosed(f"request {payment.request_id} was declined")
        if now >= request.expires_at:
            raise RequestClosed(f"request {payment.request_id} expired")
        return [Put(TABLE, payment.request_id, {**row, "v": int(row["v"]) + 1})], [expect]

    async def settle(self, txn: Txn, decision: TxnState) -> Change:
        """A decided approval: out of both inboxes."""
        request_id = txn.payment.request_id
        row = await read(self._store, TABLE, request_id) if request_id else None
        return await self._inboxes(_request(request_id, row), txn.created_at, add=False) if row else ([], [])
