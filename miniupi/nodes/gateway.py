"""The gateway node: a gRPC adapter over the Coordinator and the session issuer."""
from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sized
from typing import TypeVar

import grpc
from loguru import logger

from miniupi.contract.auth import Authenticator
from miniupi.contract.identity import ADMIN, TREASURY, current_account, current_peer, session_key
from miniupi.config import GATEWAY, ClusterConfig
from miniupi.errors import (
    AccountLocked,
    AlreadyExists,
    BadCredentials,
    BankUnavailable,
    FailedPrecondition,
    InvalidAmount,
    RefundExceedsPayment,
    InvalidArgument,
    NotFound,
    NotLoggedIn,
    PermissionDenied,
    UnknownBank,
)
from miniupi.rich_status import error_of
from miniupi.states import TxnState
from miniupi.nodes.logs import setup_node_logging
from miniupi.money import format_amount
from miniupi import validate
from miniupi.nodes.bank_links import BankLinks
from miniupi.nodes.collect import CollectBook, Request, check_expiry, check_note
from miniupi.nodes.collect_shared import SharedCollectBook
from miniupi.nodes.coordinator import Coordinator, Payment, Txn
from miniupi.nodes.issuance import DepositOrder, Issuer
from miniupi.nodes.limits import DailyLimit
from miniupi.nodes.refunds import RefundBook
from miniupi.nodes.replicas import Replica, owned
from miniupi.nodes.gateway_store import live_tables, upgrade
from miniupi.nodes.settlement import Settler
from miniupi.nodes import timeline
from miniupi.nodes.passwords import MAX_PASSWORD
from miniupi.nodes.server import NodeStartError, open_store, serve
from miniupi.nodes.txn_index import UNFINISHED, TxnIndex, cache_size
from miniupi.contract.manager import NO_HOOKS, NodeHooks, fire_after
from miniupi.contract.registry import Plugins, check_plugins
from miniupi.v1 import bank_pb2, common_pb2, gateway_pb2, gateway_pb2_grpc

# A bank's refusals the gateway passes on to its own caller as they are; any other failure at a
# bank is the bank's trouble, not the caller's mistake, and is told as the bank being unavailable.
_PASSED_ON = (InvalidArgument, NotFound, AlreadyExists, FailedPrecondition)
CHUNK = 2000  # transactions or requests per message of ListTransactions, and per step of Settlement
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Books:
    """What the gateway keeps beside its transactions: deposits, refunds and collect requests."""

    issuer: Issuer
    refunds: RefundBook
    requests: CollectBook


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, cluster: ClusterConfig, coordinator: Coordinator, links: BankLinks,
                 sessions: Authenticator, books: Books, hooks: NodeHooks = NO_HOOKS,
                 recent: timeline.Timeline | None = None, name: str = GATEWAY) -> None:
        self.cluster, self.coordinator, self.links, self.sessions = cluster, coordinator, links, sessions
        self.books, self.hooks, self.name = books, hooks, name
        self.timeline = recent or timeline.Timeline(lambda txn_id: None)
        self.timeout = cluster.call_timeout_s

    def _bank_of(self, account: str) -> tuple[str, str]:
        user, bank = validate.address(account)
        if bank not in self.links:
            raise UnknownBank(f"unknown bank {bank} in {account}")
        return user, bank

    def _readable_account(self, requested: str) -> str:
        """The account to read: the admin may name any, a customer only their own."""
        if current_peer.get() == ADMIN:
            if not requested:
                raise InvalidArgument("the admin must name an account")
            return requested
        return self._own_account(requested)

    def _own_account(self, requested: str) -> str:
        """The caller's account, or PERMISSION_DENIED for anyone else's."""
        if current_peer.get() == ADMIN:
            raise PermissionDenied("the admin may read accounts, not move money")
        mine = current_account.get()
        if mine is None:
            raise NotLoggedIn("not logged in")
        if requested and requested != mine:
            raise PermissionDenied(f"{mine} may not act on {requested}")
        return mine

    async def _bank_call(self, bank: str, method: str, request: object, timeout: float | None = None) -> object:
        try:
            return await getattr(self.links.stub(bank), method)(request, timeout=timeout or self.timeout,
                                                                wait_for_ready=True)
        except grpc.aio.AioRpcError as e:
            code = e.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise BankUnavailable(f"bank {bank} unavailable") from None
            refusal = error_of(e)  # by its reason: an unknown account stays UnknownAccount, and so on
            if isinstance(refusal, _PASSED_ON):
                raise refusal from None
            raise BankUnavailable(f"bank {bank} failed: {code.name}") from None

    async def Register(self, request: gateway_pb2.RegisterRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.RegisterReply:
        user, bank = self._bank_of(request.account)
        validate.new_account_name(user, self.cluster)
        if not request.password or len(request.password) > MAX_PASSWORD:
            raise InvalidArgument(f"password must be 1 to {MAX_PASSWORD} characters")
        initial = validate.opening_deposit(request.initial.minor, request.initial.currency, self.cluster)
        reply = await self._bank_call(bank, "OpenAccount", bank_pb2.OpenAccountRequest(
            account=user, password=request.password,
            initial=common_pb2.Money(minor=initial, currency=self.cluster.currency)))
        return gateway_pb2.RegisterReply(account=request.account, balance=reply.balance)

    async def Login(self, request: gateway_pb2.LoginRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.LoginReply:
        user, bank = self._bank_of(request.account)
        if len(request.password) > MAX_PASSWORD:
            raise BadCredentials("wrong account or password")
        reply = await self._bank_call(bank, "VerifyPassword",
                                      bank_pb2.VerifyPasswordRequest(account=user, password=request.password))
        if reply.locked_for_s > 0:
            raise AccountLocked(f"account {request.account} is locked after repeated failed logins; "
                                   f"try again in {math.ceil(reply.locked_for_s)} s")
        if not reply.ok:
            raise BadCredentials("wrong account or password")
        key, expires_at = await self.sessions.start(request.account)
        fire_after(self.hooks.miniupi_after_session_written, account=request.account, change="login")
        return gateway_pb2.LoginReply(session_key=key, expires_at=expires_at)

    async def Logout(self, request: gateway_pb2.LogoutRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.LogoutReply:
        ended = await self.sessions.end(session_key(context))
        if ended is not None:
            fire_after(self.hooks.miniupi_after_session_written, account=ended, change="logout")
        return gateway_pb2.LogoutReply()

    async def Balance(self, request: gateway_pb2.BalanceRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.BalanceReply:
        account = self._readable_account(request.account)
        user, bank = self._bank_of(account)
        await self.links.settled(bank)  # a payment the caller was told of is applied first
        reply = await self._bank_call(bank, "GetAccount", bank_pb2.AccountRequest(account=user))
        available = common_pb2.Money(minor=reply.balance.minor - reply.held.minor, currency=reply.balance.currency)
        return gateway_pb2.BalanceReply(account=account, balance=reply.balance, available=available)

    async def History(self, request: gateway_pb2.HistoryRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.HistoryReply:
        account = self._readable_account(request.account)
        user, bank = self._bank_of(account)
        await self.links.settled(bank)  # a payment the caller was told of is applied first
        reply = await self._bank_call(bank, "History", bank_pb2.BankHistoryRequest(account=user, limit=request.limit,
                                                                                 before=request.before))
        for entry in reply.entries:  # the links the gateway knows: refund and payment, request and payment
            txn = self.coordinator.txns.get(entry.txn_id)
            if txn is not None:
                entry.refund_of, entry.request_id = txn.payment.refund_of, txn.payment.request_id
                entry.refunds.extend(r.payment.txn_id for r in self.books.refunds.refunds_of(entry.txn_id)
                                     if r.state == TxnState.COMMITTED)
        return gateway_pb2.HistoryReply(entries=reply.entries, next_cursor=reply.next_cursor)

    async def Pay(self, request: gateway_pb2.PayRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.PayReply:
        txn_id = validate.txn_id(request.txn_id)
        payer = self._own_account(request.from_account)
        self._bank_of(payer)
        self._bank_of(request.to_account)
        if request.to_account == payer:
            raise InvalidArgument("payer and payee are the same account")
        amount = validate.positive_amount(request.amount.minor, request.amount.currency, self.cluster.currency)
        if amount > self.cluster.max_balance:  # no payee could take it: refuse before any bank holds anything
            raise InvalidAmount(f"amount must be at most {format_amount(self.cluster.max_balance)} "
                                  f"{self.cluster.currency}, the most an account may hold")
        if txn_id in self.books.issuer:
            raise AlreadyExists(f"transaction {txn_id} is a deposit, not a payment")
        if txn_id in self.books.requests:
            raise AlreadyExists(f"transaction {txn_id} is a collect request's id; approve the request to pay it")
        payment = Payment(txn_id, payer, request.to_account, amount, self.cluster.currency)
        return await self._pay(payment)

    async def _pay(self, payment: Payment) -> gateway_pb2.PayReply:
        state = await self.coordinator.pay(payment)
        return gateway_pb2.PayReply(txn_id=payment.txn_id, state=common_pb2.TxnState.Value(state))

    def _visible_txn(self, txn_id: str) -> Txn:
        """The transaction, for its payer, its payee or the admin; NOT_FOUND for anyone else, as for no such id."""
        txn = self.coordinator.txns.get(txn_id)
        if current_peer.get() == ADMIN and txn is not None:
            return txn
        if txn is None or current_account.get() not in (txn.payment.payer, txn.payment.payee):
            raise NotFound(f"no transaction {txn_id}")
        return txn

    async def GetTransaction(self, request: gateway_pb2.GetTransactionRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.TransactionReply:
        txn = self._visible_txn(validate.txn_id(request.txn_id))
        p, currency = txn.payment, txn.payment.currency
        return gateway_pb2.TransactionReply(
            txn_id=p.txn_id, from_account=p.payer, to_account=p.payee,
            amount=common_pb2.Money(minor=p.amount, currency=currency), state=common_pb2.TxnState.Value(txn.state),
            refusal_code=txn.code, refusal_reason=txn.reason, refusal_message=txn.message,
            created_at=txn.created_at, decided_at=txn.decided_at, refund_of=p.refund_of, request_id=p.request_id,
            refunds=[gateway_pb2.RefundLink(txn_id=r.payment.txn_id, state=common_pb2.TxnState.Value(r.state),
                                            amount=common_pb2.Money(minor=r.payment.amount, currency=currency))
                     for r in self.books.refunds.refunds_of(p.txn_id)],
            refunded=common_pb2.Money(minor=self.books.refunds.refunded(p.txn_id), currency=currency))

    async def Refund(self, request: gateway_pb2.RefundRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.PayReply:
        txn_id = validate.txn_id(request.txn_id)
        refunder = self._own_account("")
        original = self._visible_txn(validate.txn_id(request.original_txn_id))
        self.books.refunds.refundable(original, refunder)
        if request.amount.minor or request.amount.currency:
            amount = validate.positive_amount(request.amount.minor, request.amount.currency, self.cluster.currency)
        else:  # all that is left; a repeat of this refund asks for the amount it was given
            known = self.coordinator.txns.get(txn_id)
            amount = known.payment.amount if known is not None else self.books.refunds.left(original)
            if amount <= 0:
                raise RefundExceedsPayment(f"payment {original.payment.txn_id} is already refunded in full")
        if txn_id in self.books.issuer or txn_id in self.books.requests:
            raise AlreadyExists(f"transaction {txn_id} is already used for a deposit or a collect request")
        p = original.payment
        return await self._pay(Payment(txn_id, p.payee, p.payer, amount, p.currency, refund_of=p.txn_id))

    # -- collect requests ------------------------------------------------------

    def _collect_request(self, r: Request, now: float) -> gateway_pb2.CollectRequest:
        state, refusal = self.books.requests.state(r, now)
        return gateway_pb2.CollectRequest(
            request_id=r.request_id, from_account=r.payer, to_account=r.payee,
            amount=common_pb2.Money(minor=r.amount, currency=r.currency), note=r.note, created_at=r.created_at,
            expires_at=r.expires_at, state=gateway_pb2.RequestState.Value(f"REQUEST_{state}"),
            refusal_message=refusal)

    async def RequestMoney(self, request: gateway_pb2.MoneyRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.CollectRequest:
        request_id = validate.txn_id(request.request_id)
        payee = self._own_account("")
        _, bank = self._bank_of(request.from_account)
        if request.from_account == payee:
            raise InvalidArgument("you cannot ask yourself for money")
        amount = validate.positive_amount(request.amount.minor, request.amount.currency, self.cluster.currency)
        if amount > self.cluster.max_balance:
            raise InvalidAmount(f"amount must be at most {format_amount(self.cluster.max_balance)} "
                                f"{self.cluster.currency}, the most an account may hold")
        note, expires_in = check_note(request.note), check_expiry(request.expires_in_s)
        if request_id not in self.books.requests:  # asking an account that does not exist would wait for nobody
            await self._bank_call(bank, "GetAccount", bank_pb2.AccountRequest(account=request.from_account.split("@")[0]))
        now = time.time()
        r = await self.books.requests.ask(Request(request_id, request.from_account, payee, amount, self.cluster.currency,
                                            note, now, now + expires_in))
        logger.info("collect request {} from {} to {} for {} {}", request_id, payee, r.payer, amount, r.currency)
        return self._collect_request(r, time.time())

    async def ListRequests(self, request: gateway_pb2.ListRequestsRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.ListRequestsReply:
        if current_peer.get() == ADMIN:
            raise PermissionDenied("ListRequests lists the caller's own requests; the admin reads every request "
                                   "through ListTransactions (miniupi audit)")
        account = self._own_account("")
        now = time.time()
        return gateway_pb2.ListRequestsReply(
            requests=[self._collect_request(r, now) for r in await self.books.requests.open_for(account, now)])

    async def ApproveRequest(self, request: gateway_pb2.ApproveRequestRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.PayReply:
        request_id = validate.txn_id(request.request_id)
        payer = self._own_account("")
        # No await between this check and the coordinator recording the payment: a decline cannot slip in.
        return await self._pay(self.books.requests.approvable(request_id, payer, time.time()))

    async def DeclineRequest(self, request: gateway_pb2.DeclineRequestRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.CollectRequest:
        request_id = validate.txn_id(request.request_id)
        payer = self._own_account("")
        now = time.time()
        return self._collect_request(await self.books.requests.decline(request_id, payer, now), now)

    async def Settlement(self, request: gateway_pb2.SettlementRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.SettlementReply:
        if current_peer.get() != ADMIN:
            raise PermissionDenied("only the admin may read the settlement between banks")
        since, until = request.since, request.until
        if not (math.isfinite(since) and math.isfinite(until)) or since < 0 or until < 0:
            raise InvalidArgument("since and until must be Unix times, or 0 for an open end")
        if since and until and until <= since:
            raise InvalidArgument("until must be after since")
        settler = Settler(since, until)
        for chunk in _chunks(self.coordinator.txns.scan()):  # from the store, in bounded memory
            for _, txn in chunk:
                settler.add(txn)
            await asyncio.sleep(0)  # payments go on between chunks
        report = settler.report(self.cluster.banks)
        currency = self.cluster.currency

        def flows(items: list) -> list[gateway_pb2.BankFlow]:
            return [gateway_pb2.BankFlow(from_bank=f.from_bank, to_bank=f.to_bank, payments=f.payments,
                                         amount=common_pb2.Money(minor=f.amount, currency=currency)) for f in items]

        return gateway_pb2.SettlementReply(
            since=since, until=until, gross=flows(report.gross), intra_bank=flows(report.intra_bank),
            net=[gateway_pb2.NetPosition(bank=bank, net=common_pb2.Money(minor=net, currency=currency))
                 for bank, net in report.net.items()])

    async def RecentPayments(self, request: gateway_pb2.RecentPaymentsRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.RecentPaymentsReply:
        if current_peer.get() != ADMIN:
            raise PermissionDenied("only the admin may watch recent payments")
        limit = min(request.limit or 100, timeline.RECENT)
        return gateway_pb2.RecentPaymentsReply(
            payments=[_trace(t) for t in self.timeline.changed_after(request.after, limit)],
            seq=self.timeline.seq, gateway=self.name)

    async def ListTransactions(self, request: gateway_pb2.ListTransactionsRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[gateway_pb2.TransactionChunk]:
        if current_peer.get() != ADMIN:
            raise PermissionDenied("only the admin may list transactions")
        # Payments and collect requests in one run of ids, from the store in bounded memory; on one id
        # (a request's payment bears its id) the payment first. The audit joins this with every bank's
        # reading by id, and a request's state, derived from its payment when its message is made, is
        # never older than that payment's reading.
        merged = heapq.merge(((txn_id, 0, txn) for txn_id, txn in self.coordinator.txns.scan()),
                             ((r.request_id, 1, r) for r in self.books.requests.scan()), key=lambda e: e[:2])
        for batch in _chunks(merged):
            now = time.time()
            yield gateway_pb2.TransactionChunk(
                txns=[_gateway_txn(t) for _, kind, t in batch if kind == 0],
                requests=[self._collect_request(r, now) for _, kind, r in batch if kind == 1])

    async def Deposit(self, request: gateway_pb2.DepositRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.DepositReply:
        """New money, by the treasury only: its id bound here cluster-wide, then credited once by the bank."""
        _only_treasury()
        txn_id = validate.txn_id(request.txn_id)
        user, bank = self._bank_of(request.account)
        amount = validate.positive_amount(request.amount.minor, request.amount.currency, self.cluster.currency)
        if txn_id in self.books.requests:
            raise AlreadyExists(f"transaction {txn_id} is a collect request's id, not a deposit")
        await self.books.issuer.record(DepositOrder(txn_id, f"{user}@{bank}", amount))
        reply = await self._bank_call(bank, "Deposit", bank_pb2.BankDepositRequest(
            txn_id=txn_id, account=user, amount=common_pb2.Money(minor=amount, currency=self.cluster.currency)))
        return gateway_pb2.DepositReply(txn_id=txn_id, balance=reply.balance)

    async def OpenAccounts(self, request: gateway_pb2.BulkOpenRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.BulkOpenReply:
        """The treasury's bulk door; every opening deposit counts as money issued at that bank."""
        _only_treasury()
        if request.bank not in self.links:
            raise UnknownBank(f"unknown bank {request.bank[:64]!r}")
        # Thousands of accounts in one write may outlast call_timeout_s on a big store: the caller's
        # own deadline bounds it instead, when it gave a longer one.
        reply = await self._bank_call(request.bank, "OpenAccounts", bank_pb2.OpenAccountsRequest(
            accounts=request.accounts, password_hash=request.password_hash,
            initial=common_pb2.Money(minor=request.initial.minor, currency=request.initial.currency)),
            timeout=max(self.timeout, context.time_remaining() or 0))
        logger.info("bulk opening at {}: {} of {} accounts opened with {} {} each by the treasury", request.bank,
                    reply.opened, len(request.accounts), request.initial.minor, self.cluster.currency)
        return gateway_pb2.BulkOpenReply(opened=reply.opened)

    async def GetDecision(self, request: gateway_pb2.GetDecisionRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.GetDecisionReply:
        state = self.coordinator.decision(validate.txn_id(request.txn_id))
        return gateway_pb2.GetDecisionReply(state=common_pb2.TxnState.Value(state))


def _chunks(items: Iterable[T], size: int = CHUNK) -> Iterator[list[T]]:
    """`items` in lists of `size`, read as they are needed."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _gateway_txn(t: Txn) -> gateway_pb2.GatewayTxn:
    return gateway_pb2.GatewayTxn(
        txn_id=t.payment.txn_id, from_account=t.payment.payer, to_account=t.payment.payee,
        amount=common_pb2.Money(minor=t.payment.amount, currency=t.payment.currency),
        state=common_pb2.TxnState.Value(t.state), acknowledged=t.acked, refusal_code=t.code,
        refund_of=t.payment.refund_of, request_id=t.payment.request_id, created_at=t.created_at,
        decided_at=t.decided_at)


def _trace(t: timeline.Trace) -> gateway_pb2.PaymentTrace:
    return gateway_pb2.PaymentTrace(
        txn_id=t.txn_id, from_account=t.payer, to_account=t.payee,
        amount=common_pb2.Money(minor=t.amount, currency=t.currency), state=common_pb2.TxnState.Value(t.state),
        reason=t.reason, kind=t.kind, created_at=t.started_at, seq=t.seq,
        steps=[gateway_pb2.PaymentStep(at=s.at, step=s.what, bank=s.bank, detail=s.detail) for s in t.steps])


def _only_treasury() -> None:
    """Issuing money is the treasury's alone, whatever auth plugin runs in front of this servicer."""
    if current_peer.get() != TREASURY:
        raise PermissionDenied("only the treasury may issue money")


async def run_gateway(cluster: ClusterConfig, port: int | None = None, log_json: bool = False,
                      plugins: Plugins | None = None, name: str | None = None) -> None:
    """Serve the gateway `name` (None: the only one); `plugins` is check_plugins(cluster), done here if not given."""
    node = cluster.gateway_named(name)
    if plugins is None:
        plugins = check_plugins(cluster)  # before the node creates anything
    if port is not None:
        node = dataclasses.replace(node, port=port)
    auth = plugins.auth(node)
    if auth.authenticator is None:
        raise NodeStartError(f"{cluster.path}: {node.where}.auth: the auth plugin {node.auth!r} "
                             "issues no sessions, and the gateway must authenticate customers")
    sessions = auth.authenticator
    setup_node_logging(node, log_json or cluster.log_json)
    try:
        cache = cache_size()
    except ValueError as e:
        raise NodeStartError(f"{node.name}: {e}") from None
    # Only what is live; settled payments, refunds, requests and deposits are read by key when needed.
    commit, tables = await open_store(plugins, node, live_tables(getattr(sessions, "tables", ("sessions",))))
    await sessions.load(tables, commit)  # before serving: every live key works from the first call
    tables = await upgrade(commit, tables, cluster)  # a store from before the indexes gets them, once
    # The console's view of recent payments, fed by the gateway's own hooks like any observer plugin's.
    recent = timeline.Timeline(lambda txn_id: txns.get(txn_id) if txns.is_live(txn_id) else None)
    plugins.pm.register(timeline.TimelineHooks(recent), name="miniupi.timeline")
    hooks = NodeHooks(plugins.pm, node)
    links = BankLinks(cluster)
    links.watch()
    # Several gateways share one store (checked at load), and the store decides what any two of them
    # could do at once: miniupi/nodes/replicas.py. One alone keeps its live state in memory.
    shared = len(cluster.gateways) > 1
    unfinished = tables.get(UNFINISHED, {})
    txns = TxnIndex(commit.store, Txn.from_record, owned(unfinished, node.name) if shared else unfinished, cache)
    issuer = Issuer(commit, txns, shared=shared)
    refunds = RefundBook(txns, cache, shared=shared)
    requests = SharedCollectBook(commit, txns, issuer) if shared else CollectBook(commit, tables, txns, issuer)
    coordinator = Coordinator(links, commit, tables, cluster.prepare_timeout_s, cluster.call_timeout_s, hooks=hooks,
                              guards=(refunds, DailyLimit(cluster, commit.store, cache, shared=shared), requests),
                              txns=txns, owner=node.name if shared else None)
    books = Books(issuer, refunds, requests)
    replica = Replica(node.name, commit, coordinator, cluster.gateway_lease_s) if shared else None
    if replica is not None:
        await replica.start()  # the lease first: no other gateway takes over what this one now finishes
    undecided, resent = await coordinator.recover()
    logger.info("recovery: {} undecided payments {}, {} decisions being resent, {} open requests in memory; "
                "a cache of {} settled payments", undecided, "run again from phase 1" if shared else "aborted",
                resent, requests.open_count, txns.cache_limit)

    def add_services(server: grpc.aio.Server) -> list[str]:
        gateway_pb2_grpc.add_GatewayServicer_to_server(
            GatewayServicer(cluster, coordinator, links, sessions, books, hooks, recent, node.name), server)
        return [gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name]

    async def on_stop() -> None:
        await coordinator.close()
        if replica is not None:
            await replica.close()  # the lease ends now: another gateway takes over what is unfinished
        await links.close()
        await commit.close()

    await serve(node, plugins, auth, add_services, on_stop, readings=readings(txns, sessions))


def readings(txns: TxnIndex[Txn], sessions: Authenticator) -> dict[str, Callable[[], int]]:
    """The gateway's live counts for plugins (miniupi_node_loaded), read from any thread: the live
    payments are copied in one step, and an authenticator that counts its sessions has a len()."""
    def live(decided: bool) -> Callable[[], int]:
        return lambda: sum((txn.state != TxnState.INITIATED) == decided for txn in txns.live())

    counts = {"payments_in_flight": live(False), "decisions_unacknowledged": live(True)}
    if isinstance(sessions, Sized):
        counts["sessions_live"] = lambda: len(sessions)
    return counts
