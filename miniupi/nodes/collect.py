"""Collect requests: a payee asks a payer for money, and the payer approves or declines.

A request is a row of the gateway's store (table "requests") made before
the requester is answered, so it survives restarts. Approving it is a
payment whose txn_id is the request's id: the coordinator's idempotency
then makes two approvals, from one device or two, one payment, and a
restart cannot pay it twice. A request's state is therefore read, not
kept: PAYING, PAID or FAILED from its payment when there is one, else
DECLINED, EXPIRED or PENDING from the row and the clock.

Memory holds the open requests only (pending, or being paid), indexed by
account for the polls; the table "open_requests" names them, so a restart
reads those rows and not every request ever made. A request closes when
its payment is decided (in the decision's batch: the book is a
coordinator.Guard), when it is declined, or when it expires; from then on
it is read from the store by id.
"""
from __future__ import annotations

import heapq
import time
import unicodedata
from collections import defaultdict
from collections.abc import Container, Iterator, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from miniupi.contract.store import Expect, Put
from miniupi.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RequestClosed,
    StoreUnavailable,
    TooManyRequests,
)
from miniupi.nodes.coordinator import Payment, Txn
from miniupi.nodes.group_commit import GroupCommit
from miniupi.nodes.overlay import overlay
from miniupi.nodes.txn_index import TxnIndex
from miniupi.states import TxnState

TABLE = "requests"
OPEN = "open_requests"  # request id -> true while it is pending or being paid
DEFAULT_EXPIRY_S = 15 * 60
MAX_EXPIRY_S = 7 * 24 * 3600
MAX_NOTE = 140
# Pending requests one requester may have open at once: asking is free, so it is bounded.
MAX_PENDING_PER_REQUESTER = 100
# Pending requests one account may be asked at once, whoever asks: accounts are free too, so without it
# many requesters could grow a payer's list past what one ListRequests reply carries (4 MB for a client).
# With both bounds and the longest notes, the list is under 0.5 MB.
MAX_PENDING_PER_PAYER = 500


class RequestState(StrEnum):
    """Each value is the proto's RequestState name without its REQUEST_ prefix."""

    PENDING = "PENDING"
    PAYING = "PAYING"
    PAID = "PAID"
    FAILED = "FAILED"
    DECLINED = "DECLINED"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True, slots=True)
class Request:
    request_id: str
    payer: str  # user@bank, asked to pay
    payee: str  # user@bank, who asked
    amount: int
    currency: str
    note: str
    created_at: float
    expires_at: float
    declined_at: float = 0.0

    def payment(self) -> Payment:
        """The payment that approving it makes: its id is the request's."""
        return Payment(self.request_id, self.payer, self.payee, self.amount, self.currency,
                       request_id=self.request_id)

    @property
    def details(self) -> tuple[str, str, int, str, str]:
        """What must match for a repeated request_id to be the same request."""
        return self.payer, self.payee, self.amount, self.currency, self.note


# Line and paragraph separators (Zl, Zp) start a new line for many readers of a payer's screen, as a
# control character would: a note must stay on the one line it is shown on.
_LINE_BREAKS = ("Zl", "Zp")


def check_note(note: str) -> str:
    if len(note) > MAX_NOTE:
        raise InvalidArgument(f"note must be at most {MAX_NOTE} characters")
    if any(unicodedata.category(ch).startswith("C") or unicodedata.category(ch) in _LINE_BREAKS for ch in note):
        raise InvalidArgument("note must not hold control or invisible format characters")
    return note


def check_expiry(expires_in_s: int) -> int:
    if expires_in_s == 0:
        return DEFAULT_EXPIRY_S
    if expires_in_s > MAX_EXPIRY_S:
        raise InvalidArgument(f"a request expires within {MAX_EXPIRY_S} s (7 days) at most")
    return expires_in_s


class CollectBook:
    """The open requests in memory, every request durable through `commit`; payments are the coordinator's `txns`."""

    def __init__(self, commit: GroupCommit, tables: Mapping[str, Mapping[str, Any]],
                 txns: TxnIndex[Txn], taken: Container[str]) -> None:
        """`tables`: the live tables loaded at start ("open_requests"); `taken`: ids a request may not
        have besides payments' (deposits)."""
        self._commit, self._txns, self._taken = commit, txns, taken
        self._store = commit.store
        self._open: dict[str, Request] = {}
        # account -> ids of the open requests it asked or is asked, oldest first: a poll reads only its own
        self._by_account: dict[str, list[str]] = defaultdict(list)
        self._expiries: list[tuple[float, str]] = []  # a heap of (expires_at, id), to close expired requests
        loaded, stale = [], []
        for request_id in tables.get(OPEN, {}):
            request = self._read(request_id)
            if request is None:
                stale.append(request_id)
            else:
                loaded.append(request)
        for request in sorted(loaded, key=lambda r: r.created_at):
            self._add(request)
        if stale:
            commit.write_later([Put(OPEN, request_id, None) for request_id in stale])

    def _read(self, request_id: str) -> Request | None:
        row = self._store.get(TABLE, request_id)
        return None if row is None else _request(request_id, row)

    def _get(self, request_id: str) -> Request | None:
        """The request: open ones from memory, closed ones from the store."""
        request = self._open.get(request_id)
        return request if request is not None else self._read(request_id)

    def _add(self, request: Request) -> None:
        self._open[request.request_id] = request
        self._by_account[request.payer].append(request.request_id)
        self._by_account[request.payee].append(request.request_id)
        heapq.heappush(self._expiries, (request.expires_at, request.request_id))

    def _remove(self, request: Request) -> None:
        """Out of memory: closed (the store has it), or never recorded."""
        if self._open.pop(request.request_id, None) is None:
            return
        for account in (request.payer, request.payee):
            ids = self._by_account.get(account)
            if ids is not None and request.request_id in ids:
                ids.remove(request.request_id)
                if not ids:
                    del self._by_account[account]
        if len(self._expiries) > 2 * len(self._open) + 64:  # mostly closed ones: rebuild
            self._expiries = [(r.expires_at, i) for i, r in self._open.items()]
            heapq.heapify(self._expiries)

    def _sweep(self, now: float) -> None:
        """Close the open requests that expired unpaid and undeclined."""
        expired = []
        while self._expiries and self._expiries[0][0] <= now:
            expires_at, request_id = heapq.heappop(self._expiries)
            request = self._open.get(request_id)
            if request is None or request.expires_at != expires_at:
                continue
            if request.declined_at or self._txns.is_live(request_id):
                continue  # its decline's write or its payment's decision closes it
            expired.append(request)
        for request in expired:
            self._remove(request)
        if expired:  # lost in a crash, the next start only sweeps them again
            self._commit.write_later([Put(OPEN, r.request_id, None) for r in expired])

    @property
    def open_count(self) -> int:
        return len(self._open)

    def _of(self, account: str) -> Iterator[Request]:
        return (self._open[i] for i in self._by_account.get(account, ()))

    def __contains__(self, request_id: object) -> bool:
        return isinstance(request_id, str) and self._get(request_id) is not None

    def scan(self) -> Iterator[Request]:
        """Every request, in id order and bounded memory: the store's, open ones as memory has them."""
        for _, request in overlay(self._store.scan(TABLE), self._open,
                                  _request, self._get):
            yield request

    # -- a Guard of the coordinator: a request closes with its payment's decision ---------------

    def admit(self, payment: Payment, now: float) -> None:
        pass

    def release(self, txn: Txn) -> None:
        pass

    def deciding(self, txn: Txn, decision: TxnState) -> list[Put]:
        return [Put(OPEN, txn.payment.request_id, None)] if txn.payment.request_id else []

    async def reserve(self, payment: Payment, now: float) -> tuple[list[Put], list[Expect]]:
        return [], []

    async def settle(self, txn: Txn, decision: TxnState) -> tuple[list[Put], list[Expect]]:
        return self.deciding(txn, decision), []

    def decided(self, txn: Txn, decision: TxnState, durable: bool) -> None:
        if durable and txn.payment.request_id:
            request = self._open.get(txn.payment.request_id)
            if request is not None:
                self._remove(request)

    def state(self, request: Request, now: float | None = None) -> tuple[RequestState, str]:
        """The request's state, and the refusal's message when its payment failed."""
        request_id = request.request_id
        # An open request's payment, if any, is live: no need to ask the store.
        txn = self._txns.get(request_id) if request_id not in self._open or self._txns.is_live(request_id) else None
        return self.state_of(request, txn, now)

    @staticmethod
    def state_of(request: Request, txn: Txn | None, now: float | None = None) -> tuple[RequestState, str]:
        """The request's state given its payment's transaction (None: not approved)."""
        if txn is not None:
            if txn.state == TxnState.COMMITTED:
                return RequestState.PAID, ""
            if txn.state == TxnState.ABORTED:
                return RequestState.FAILED, txn.message
            return RequestState.PAYING, ""
        if request.declined_at:
            return RequestState.DECLINED, ""
        if (time.time() if now is None else now) >= request.expires_at:
            return RequestState.EXPIRED, ""
        return RequestState.PENDING, ""

    def find(self, request_id: str, caller: str) -> Request:
        """The request, for its payer or its payee; for anyone else NOT_FOUND, as for an unknown id."""
        request = self._get(request_id)
        if request is None or caller not in (request.payer, request.payee):
            raise NotFound(f"no collect request {request_id}")
        return request

    async def open_for(self, account: str, now: float) -> list[Request]:
        """The requests to and from `account` that are pending or being paid, oldest first (async: where
        gateways share the store, it reads the store)."""
        self._sweep(now)
        return [r for r in self._of(account) if self.state(r, now)[0] in (RequestState.PENDING, RequestState.PAYING)]

    async def ask(self, request: Request) -> Request:
        """Record a new request durably; the same id with the same details returns the first one."""
        self._sweep(request.created_at)
        known = self._get(request.request_id)
        if known is not None:
            if known.details != request.details:
                raise AlreadyExists(f"request id {request.request_id} was already used for another request")
            await self._commit.barrier()  # the first record is durable before the repeat is answered
            if self._get(request.request_id) is None:
                raise StoreUnavailable(f"gateway could not record request {request.request_id}; send it again")
            return known
        if request.request_id in self._txns or request.request_id in self._taken:
            raise AlreadyExists(f"id {request.request_id} was already used for a transaction")
        pending = sum(1 for r in self._of(request.payee)
                      if r.payee == request.payee and self.state(r, request.created_at)[0] == RequestState.PENDING)
        if pending >= MAX_PENDING_PER_REQUESTER:
            raise TooManyRequests(f"{request.payee} already has {pending} pending requests; "
                                  "wait for some to be answered or to expire")
        asked = sum(1 for r in self._of(request.payer)
                    if r.payer == request.payer and self.state(r, request.created_at)[0] == RequestState.PENDING)
        if asked >= MAX_PENDING_PER_PAYER:  # how many is the payer's business: the requester is not told
            raise TooManyRequests(f"{request.payer} has too many requests waiting for an answer; ask again later")
        self._add(request)  # memory first: a repeat during the write finds it
        try:
            await self._commit.write([Put(TABLE, request.request_id, _row(request)),
                                      Put(OPEN, request.request_id, True)])
        except Exception as e:
            self._remove(request)
            raise StoreUnavailable(f"gateway could not record request {request.request_id}: {e}") from e
        return request

    def approvable(self, request_id: str, caller: str, now: float) -> Payment:
        """The payment approving it makes, or why it cannot be approved now; no await, so an approval
        that passes here is recorded by the coordinator before anything else runs."""
        request = self.find(request_id, caller)
        if caller != request.payer:
            raise PermissionDenied(f"only {request.payer}, who is asked to pay, may approve request {request_id}")
        state, _ = self.state(request, now)
        if state == RequestState.DECLINED:
            raise RequestClosed(f"request {request_id} was declined")
        if state == RequestState.EXPIRED:
            raise RequestClosed(f"request {request_id} expired")
        return request.payment()  # PENDING, or already approved: the coordinator answers a repeat

    async def decline(self, request_id: str, caller: str, now: float) -> Request:
        request = self.find(request_id, caller)
        if caller != request.payer:
            raise PermissionDenied(f"only {request.payer}, who is asked to pay, may decline request {request_id}")
        state, _ = self.state(request, now)
        if state == RequestState.DECLINED:
            return request
        if state != RequestState.PENDING:
            raise RequestClosed(f"request {request_id} is {state.lower()}; only a pending request can be declined")
        declined = Request(**{**asdict(request), "declined_at": now})
        self._open[request_id] = declined  # at once: an approval from now on is refused
        try:
            await self._commit.write([Put(TABLE, request_id, _row(declined)), Put(OPEN, request_id, None)])
        except Exception as e:
            self._open[request_id] = request
            heapq.heappush(self._expiries, (request.expires_at, request_id))  # a sweep may have passed it by
            raise StoreUnavailable(f"gateway could not record that request {request_id} was declined: {e}") from e
        self._remove(declined)  # closed: read from the store from now on
        return declined


def _row(request: Request, version: int = 0) -> dict[str, Any]:
    """The request's row; "v" is the version gateways sharing the store expect (collect_shared.py)."""
    row = asdict(request)
    del row["request_id"]
    row["v"] = version
    return row


def _request(request_id: str, row: dict[str, Any]) -> Request:
    return Request(request_id=request_id, **{k: v for k, v in row.items() if k != "v"})
