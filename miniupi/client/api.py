"""Talking to the gateway over mTLS, with errors turned back into exceptions.

Each call goes to one of the cluster's gateways, and on to the next when
that one cannot be reached (failover.py).

AsyncClient is the real one; Client runs it on a private event loop for
programs and tests that are not asynchronous.

`pay` sends one request and raises what the gateway says. Given an outbox
(outbox.py), the client also takes payments that must survive being
offline: `submit` writes the payment to the outbox, durably, then sends the
payer's queue in order; `sync` sends what is queued; `deliver_forever` is
the background task that retries with backoff (sync.py).
"""
from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from miniupi.backoff import RetryPolicy
from miniupi.client.failover import Gateways
from miniupi.client.outbox import Outbox, OutboxEntry
from miniupi.client.sync import Courier, SyncReport
from miniupi.contract.identity import ADMIN, SESSION_METADATA_KEY
from miniupi.config import ClusterConfig, split_address
from miniupi.errors import (
    InvalidAmount,
    InvalidArgument,
    MiniupiError,
    NoAnswer,
    NotFound,
    NotLoggedIn,
    UnknownBank,
    from_status,
)
from miniupi.rich_status import error_of
from miniupi import validate
from miniupi.tls import impostor
from miniupi.v1 import common_pb2, gateway_pb2


T = TypeVar("T")


@dataclass(frozen=True)
class Session:
    account: str
    key: str
    expires_at: float


@dataclass(frozen=True)
class Balance:
    account: str
    balance: int
    available: int
    currency: str


@dataclass(frozen=True)
class HistoryItem:
    txn_id: str
    counterparty: str
    delta: int
    currency: str
    applied_at: float
    refund_of: str = ""  # a refund: the payment it gives back
    refunds: tuple[str, ...] = ()  # the committed refunds of this payment
    request_id: str = ""  # the payment of a collect request


@dataclass(frozen=True)
class HistoryPage:
    items: list[HistoryItem]  # newest first
    next_cursor: str  # pass as `before` for the older entries; empty when there are none


@dataclass(frozen=True)
class Deposited:
    txn_id: str
    account: str
    balance: int  # the account's balance once the deposit is applied
    currency: str


@dataclass(frozen=True)
class PayResult:
    txn_id: str
    state: str


@dataclass(frozen=True)
class RefundItem:
    txn_id: str
    amount: int
    state: str


@dataclass(frozen=True)
class Transaction:
    """One transaction as the gateway recorded it (GetTransaction)."""

    txn_id: str
    payer: str
    payee: str
    amount: int
    currency: str
    state: str  # INITIATED, COMMITTED or ABORTED; QUEUED while only this client's outbox holds it
    refusal_code: str  # with the two below: empty unless refused
    refusal_reason: str
    refusal_message: str
    created_at: float
    decided_at: float  # 0 while undecided
    refund_of: str
    refunds: tuple[RefundItem, ...]
    refunded: int  # committed refunds, minor units
    request_id: str


@dataclass(frozen=True)
class CollectRequest:
    request_id: str
    payer: str  # asked to pay
    payee: str  # asked, and is paid
    amount: int
    currency: str
    note: str
    created_at: float
    expires_at: float
    state: str  # PENDING, PAYING, PAID, FAILED, DECLINED or EXPIRED
    refusal_message: str


@dataclass(frozen=True)
class Flow:
    from_bank: str
    to_bank: str
    amount: int
    payments: int


@dataclass(frozen=True)
class SettlementReport:
    since: float  # 0: open
    until: float
    currency: str
    gross: tuple[Flow, ...]
    net: dict[str, int]  # bank -> owed (positive) or owing (negative), minor units
    intra_bank: tuple[Flow, ...]


# UPI answers a status check within 10 s; so does `transaction`, whatever the banks are doing.
STATUS_TIMEOUT_S = 10.0
UNREACHABLE, NO_ANSWER = "gateway unreachable", "gateway did not answer in time"
NOT_THE_GATEWAY = "the server at the gateway's address is not the gateway (its certificate names another identity)"


def as_error(e: grpc.aio.AioRpcError) -> MiniupiError:
    """A status from the wire as the domain error it stands for, by its reason.

    A status without a miniupi reason never came from the gateway's
    handlers: the call failed on the way, and is told as NoAnswer.
    """
    error = error_of(e)
    if error is not None:
        return error
    code, details = e.code(), e.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE and impostor(details):
        return NoAnswer(NOT_THE_GATEWAY)  # refused in the handshake: nothing was sent to it
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):  # CANCELLED: it went away mid-call
        return NoAnswer(UNREACHABLE)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return NoAnswer(NO_ANSWER)
    return from_status(code.name, details or code.name.lower())


def _collect_request(r: gateway_pb2.CollectRequest) -> CollectRequest:
    return CollectRequest(r.request_id, r.from_account, r.to_account, r.amount.minor, r.amount.currency, r.note,
                          r.created_at, r.expires_at, gateway_pb2.RequestState.Name(r.state).removeprefix("REQUEST_"),
                          r.refusal_message)


def is_transport_failure(error: BaseException | None) -> bool:
    """True when the gateway was not reached or did not answer, as opposed to answering UNAVAILABLE itself."""
    return isinstance(error, NoAnswer)


class AsyncClient:
    def __init__(self, cluster: ClusterConfig, *, session: Session | None = None, identity: str = "client",
                 timeout: float | None = None, outbox: Outbox | str | os.PathLike[str] | None = None,
                 retry: RetryPolicy | None = None, rng: random.Random | None = None) -> None:
        """`outbox` (an Outbox or the path of its file) enables enqueue, submit, sync and
        deliver_forever; `retry` and `rng` set their backoff (default: RetryPolicy.from_env())."""
        self.cluster, self.session, self.identity = cluster, session, identity
        self.timeout = timeout if timeout is not None else cluster.prepare_timeout_s + cluster.call_timeout_s + 5
        self.gateways = Gateways(cluster, identity, self.timeout)
        self._courier: Courier | None = None
        self._wake = asyncio.Event()
        if outbox is not None:
            box = outbox if isinstance(outbox, Outbox) else Outbox(outbox)
            self._courier = Courier(box, retry or RetryPolicy.from_env(), rng)

    async def _call(self, method: str, request: Any, authed: bool = True, timeout: float | None = None) -> Any:
        metadata = None
        if authed and self.session is not None:
            metadata = ((SESSION_METADATA_KEY, self.session.key),)
        elif authed and self.identity != ADMIN:  # the admin's certificate is its credential
            raise NotLoggedIn("not logged in; run: miniupi login USER@BANK")
        try:
            return await self.gateways.call(method, request, timeout=timeout or self.timeout, metadata=metadata)
        except grpc.aio.AioRpcError as e:
            raise as_error(e) from None

    async def register(self, account: str, password: str, initial: int = 0) -> Balance:
        reply = await self._call("Register", gateway_pb2.RegisterRequest(
            account=account, password=password,
            initial=common_pb2.Money(minor=initial, currency=self.cluster.currency)), authed=False)
        return Balance(reply.account, reply.balance.minor, reply.balance.minor, reply.balance.currency)

    async def login(self, account: str, password: str) -> Session:
        reply = await self._call("Login", gateway_pb2.LoginRequest(account=account, password=password), authed=False)
        self.session = Session(account, reply.session_key, reply.expires_at)
        return self.session

    async def logout(self) -> None:
        await self._call("Logout", gateway_pb2.LogoutRequest())
        self.session = None

    async def balance(self, account: str = "") -> Balance:
        reply = await self._call("Balance", gateway_pb2.BalanceRequest(account=account))
        return Balance(reply.account, reply.balance.minor, reply.available.minor, reply.balance.currency)

    async def history(self, account: str = "", limit: int = 0) -> list[HistoryItem]:
        """The newest `limit` entries (0: the gateway's default); history_page reaches the older ones."""
        return (await self.history_page(account, limit)).items

    async def history_page(self, account: str = "", limit: int = 0, before: str = "") -> HistoryPage:
        """Up to `limit` entries older than the cursor `before` (empty: the newest), and the next cursor."""
        reply = await self._call("History", gateway_pb2.HistoryRequest(account=account, limit=limit, before=before))
        return HistoryPage([HistoryItem(e.txn_id, e.counterparty, e.delta_minor, e.currency, e.applied_at,
                                        e.refund_of, tuple(e.refunds), e.request_id) for e in reply.entries],
                           reply.next_cursor)

    async def pay(self, to: str, amount: int, *, txn_id: str | None = None, from_account: str | None = None) -> PayResult:
        """Pay `amount` minor units once; send the same txn_id again to retry safely."""
        txn_id = txn_id or str(uuid.uuid4())
        payer = from_account or (self.session.account if self.session else "")
        reply = await self._call("Pay", gateway_pb2.PayRequest(
            txn_id=txn_id, from_account=payer, to_account=to,
            amount=common_pb2.Money(minor=amount, currency=self.cluster.currency)))
        return PayResult(reply.txn_id, common_pb2.TxnState.Name(reply.state))

    async def transaction(self, txn_id: str) -> Transaction:
        """A transaction by id, as the gateway recorded it; answered within STATUS_TIMEOUT_S.

        A payment of the logged-in payer that this client's outbox still holds, and the gateway has
        not recorded (or cannot be reached to say), is QUEUED."""
        validate.txn_id(txn_id)
        try:
            r = await self._call("GetTransaction", gateway_pb2.GetTransactionRequest(txn_id=txn_id),
                                 timeout=min(self.timeout, STATUS_TIMEOUT_S))
        except (NotFound, NoAnswer):
            queued = self._queued_transaction(txn_id)
            if queued is None:
                raise
            return queued
        return Transaction(
            r.txn_id, r.from_account, r.to_account, r.amount.minor, r.amount.currency,
            common_pb2.TxnState.Name(r.state), r.refusal_code, r.refusal_reason, r.refusal_message,
            r.created_at, r.decided_at, r.refund_of,
            tuple(RefundItem(x.txn_id, x.amount.minor, common_pb2.TxnState.Name(x.state)) for x in r.refunds),
            r.refunded.minor, r.request_id)

    def _queued_transaction(self, txn_id: str) -> Transaction | None:
        if self._courier is None or self.session is None:
            return None
        entry = self._courier.outbox.get(txn_id)
        if entry is None or not entry.pending or entry.payer != self.session.account:
            return None
        return Transaction(entry.txn_id, entry.payer, entry.payee, entry.amount, entry.currency, "QUEUED",
                           "", "", "", entry.created_at, 0.0, "", (), 0, "")

    async def refund(self, txn_id: str, amount: int = 0, *, refund_id: str | None = None) -> PayResult:
        """Refund `amount` minor units of payment `txn_id` (0: all that is left); send the same refund_id to retry."""
        refund_id = refund_id or str(uuid.uuid4())
        money = common_pb2.Money(minor=amount, currency=self.cluster.currency) if amount else None
        reply = await self._call("Refund", gateway_pb2.RefundRequest(
            txn_id=refund_id, original_txn_id=txn_id, amount=money))
        return PayResult(reply.txn_id, common_pb2.TxnState.Name(reply.state))

    async def request_money(self, from_account: str, amount: int, *, note: str = "", expires_in_s: int = 0,
                            request_id: str | None = None) -> CollectRequest:
        """Ask `from_account` for `amount` minor units; send the same request_id again to retry safely."""
        reply = await self._call("RequestMoney", gateway_pb2.MoneyRequest(
            request_id=request_id or str(uuid.uuid4()), from_account=from_account,
            amount=common_pb2.Money(minor=amount, currency=self.cluster.currency), note=note,
            expires_in_s=expires_in_s))
        return _collect_request(reply)

    async def requests(self) -> list[CollectRequest]:
        """Open requests to and from me, oldest first."""
        reply = await self._call("ListRequests", gateway_pb2.ListRequestsRequest())
        return [_collect_request(r) for r in reply.requests]

    async def approve(self, request_id: str) -> PayResult:
        """Pay a request asked of me; approving again gets the same answer and pays nothing more."""
        reply = await self._call("ApproveRequest", gateway_pb2.ApproveRequestRequest(request_id=request_id))
        return PayResult(reply.txn_id, common_pb2.TxnState.Name(reply.state))

    async def decline(self, request_id: str) -> CollectRequest:
        reply = await self._call("DeclineRequest", gateway_pb2.DeclineRequestRequest(request_id=request_id))
        return _collect_request(reply)

    async def settlement(self, since: float = 0.0, until: float = 0.0) -> SettlementReport:
        """What the banks owe each other for payments committed in [since, until); admin only."""
        r = await self._call("Settlement", gateway_pb2.SettlementRequest(since=since, until=until))

        def flows(items: Any) -> tuple[Flow, ...]:
            return tuple(Flow(f.from_bank, f.to_bank, f.amount.minor, f.payments) for f in items)

        return SettlementReport(r.since, r.until, self.cluster.currency, flows(r.gross),
                                {n.bank: n.net.minor for n in r.net}, flows(r.intra_bank))

    # -- the treasury (identity="treasury"; its certificate is its credential) ----

    async def deposit(self, account: str, amount: int, *, txn_id: str | None = None) -> Deposited:
        """Issue `amount` minor units to `account` once; send the same txn_id again to retry safely."""
        txn_id = txn_id or str(uuid.uuid4())
        reply = await self._call("Deposit", gateway_pb2.DepositRequest(
            txn_id=txn_id, account=account, amount=common_pb2.Money(minor=amount, currency=self.cluster.currency)),
            authed=False)
        return Deposited(reply.txn_id, account, reply.balance.minor, reply.balance.currency)

    async def open_accounts(self, bank: str, names: Sequence[str], password_hash: str, initial: int) -> int:
        """Open `names` at `bank` with one shared password hash and `initial` each; returns how many were new."""
        reply = await self._call("OpenAccounts", gateway_pb2.BulkOpenRequest(
            bank=bank, accounts=names, password_hash=password_hash,
            initial=common_pb2.Money(minor=initial, currency=self.cluster.currency)), authed=False)
        return reply.opened

    # -- the outbox ---------------------------------------------------------

    @property
    def outbox(self) -> Outbox:
        return self._need_courier().outbox

    def _need_courier(self) -> Courier:
        if self._courier is None:
            raise InvalidArgument("this client has no outbox; pass outbox= to use it")
        return self._courier

    def enqueue(self, to: str, amount: int, *, txn_id: str | None = None) -> OutboxEntry:
        """Check the payment and write it to the outbox as queued, durably; nothing is sent.

        Bad input is refused here, before it is queued, so a payment taken
        offline cannot wait hours to be told it was malformed. The same id
        for the same payment returns the entry it already has.
        """
        if self.session is None:
            raise NotLoggedIn("not logged in; run: miniupi login USER@BANK")
        payer = self.session.account
        # The gateway's own rule, checked before the payment is queued.
        txn_id = validate.txn_id(txn_id) if txn_id is not None else str(uuid.uuid4())
        try:
            _, bank = split_address(to)
        except ValueError as e:
            raise InvalidArgument(str(e)) from None
        if bank not in self.cluster.banks:
            raise UnknownBank(f"unknown bank {bank} in {to}")
        if to == payer:
            raise InvalidArgument("payer and payee are the same account")
        if amount <= 0:
            raise InvalidAmount("amount must be positive")
        courier = self._need_courier()
        entry = courier.outbox.add(txn_id, payer, to, amount, self.cluster.currency)
        self._wake.set()
        return entry

    async def submit(self, to: str, amount: int, *, txn_id: str | None = None, wait_s: float | None = None
                     ) -> OutboxEntry:
        """Queue the payment durably, then send the payer's queue in order, this one included.

        Returns the entry as it then stands: done (entry.result), failed
        (entry.error, the gateway's refusal), or still queued (entry.last_error
        says why: gateway unreachable, session expired, ...). Never raises for
        a refusal or an unreachable gateway; the outbox holds the answer.
        """
        entry = self.enqueue(to, amount, txn_id=txn_id)
        if entry.pending:
            await self.sync(wait_s=wait_s)
        found = self.outbox.get(entry.txn_id)
        assert found is not None
        return found

    async def sync(self, *, due_only: bool = False, wait_s: float | None = None,
                   on_finished: Callable[[OutboxEntry], None] | None = None) -> SyncReport:
        """Send the logged-in payer's queued payments now, in order; see SyncReport.

        With due_only, only when the first one's retry time has come.
        wait_s bounds the wait for a flush running elsewhere (default: this client's timeout).
        """
        courier = self._need_courier()
        return await courier.flush(self, due_only=due_only, wait_s=self.timeout if wait_s is None else wait_s,
                                   on_finished=on_finished)

    def queued(self, payer: str | None = None) -> list[OutboxEntry]:
        """Payments waiting in the outbox, oldest first (of one payer, or everyone's)."""
        return self.outbox.pending(payer)

    async def deliver_forever(self, *, on_finished: Callable[[OutboxEntry], None] | None = None,
                              on_stuck: Callable[[MiniupiError, int], None] | None = None) -> None:
        """The background sender: retries queued payments on their backoff schedule until cancelled.

            task = asyncio.create_task(client.deliver_forever(on_finished=print))
        """
        await self._need_courier().deliver_forever(self, self._wake, on_finished=on_finished, on_stuck=on_stuck)

    def wake_outbox(self) -> None:
        """Have deliver_forever look at the outbox now (after a login, say)."""
        self._wake.set()

    async def close(self) -> None:
        await self.gateways.close()
        if self._courier is not None:
            self._courier.outbox.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Client:
    """The blocking form of AsyncClient, on an event loop of its own."""

    def __init__(self, cluster: ClusterConfig, **kwargs: Any) -> None:
        self._runner = asyncio.Runner()

        async def make() -> AsyncClient:
            return AsyncClient(cluster, **kwargs)

        self._async = self._runner.run(make())

    def _run(self, call: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        return self._runner.run(call(*args, **kwargs))

    @property
    def session(self) -> Session | None:
        return self._async.session

    @session.setter
    def session(self, value: Session | None) -> None:
        self._async.session = value

    def register(self, account: str, password: str, initial: int = 0) -> Balance:
        return self._run(self._async.register, account, password, initial)

    def login(self, account: str, password: str) -> Session:
        return self._run(self._async.login, account, password)

    def logout(self) -> None:
        return self._run(self._async.logout)

    def balance(self, account: str = "") -> Balance:
        return self._run(self._async.balance, account)

    def history(self, account: str = "", limit: int = 0) -> list[HistoryItem]:
        return self._run(self._async.history, account, limit)

    def history_page(self, account: str = "", limit: int = 0, before: str = "") -> HistoryPage:
        return self._run(self._async.history_page, account, limit, before)

    def pay(self, to: str, amount: int, *, txn_id: str | None = None, from_account: str | None = None) -> PayResult:
        return self._run(self._async.pay, to, amount, txn_id=txn_id, from_account=from_account)

    def transaction(self, txn_id: str) -> Transaction:
        return self._run(self._async.transaction, txn_id)

    def refund(self, txn_id: str, amount: int = 0, *, refund_id: str | None = None) -> PayResult:
        return self._run(self._async.refund, txn_id, amount, refund_id=refund_id)

    def request_money(self, from_account: str, amount: int, *, note: str = "", expires_in_s: int = 0,
                      request_id: str | None = None) -> CollectRequest:
        return self._run(self._async.request_money, from_account, amount, note=note, expires_in_s=expires_in_s,
                         request_id=request_id)

    def requests(self) -> list[CollectRequest]:
        return self._run(self._async.requests)

    def approve(self, request_id: str) -> PayResult:
        return self._run(self._async.approve, request_id)

    def decline(self, request_id: str) -> CollectRequest:
        return self._run(self._async.decline, request_id)

    def settlement(self, since: float = 0.0, until: float = 0.0) -> SettlementReport:
        return self._run(self._async.settlement, since, until)

    def deposit(self, account: str, amount: int, *, txn_id: str | None = None) -> Deposited:
        return self._run(self._async.deposit, account, amount, txn_id=txn_id)

    def open_accounts(self, bank: str, names: Sequence[str], password_hash: str, initial: int) -> int:
        return self._run(self._async.open_accounts, bank, names, password_hash, initial)

    @property
    def outbox(self) -> Outbox:
        return self._async.outbox

    def enqueue(self, to: str, amount: int, *, txn_id: str | None = None) -> OutboxEntry:
        return self._async.enqueue(to, amount, txn_id=txn_id)

    def submit(self, to: str, amount: int, *, txn_id: str | None = None, wait_s: float | None = None) -> OutboxEntry:
        return self._run(self._async.submit, to, amount, txn_id=txn_id, wait_s=wait_s)

    def sync(self, *, due_only: bool = False, wait_s: float | None = None,
             on_finished: Callable[[OutboxEntry], None] | None = None) -> SyncReport:
        return self._run(self._async.sync, due_only=due_only, wait_s=wait_s, on_finished=on_finished)

    def queued(self, payer: str | None = None) -> list[OutboxEntry]:
        return self._async.queued(payer)

    def close(self) -> None:
        self._run(self._async.close)
        self._runner.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
