"""The gateway node: a gRPC adapter over the Coordinator and the session issuer."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator

import grpc
from loguru import logger

from miniupi.contract.auth import Authenticator
from miniupi.contract.identity import ADMIN, TREASURY, current_account, current_peer, session_key
from miniupi.config import ClusterConfig
from miniupi.errors import (
    AccountLocked,
    AlreadyExists,
    BadCredentials,
    BankUnavailable,
    FailedPrecondition,
    InvalidAmount,
    InvalidArgument,
    NotFound,
    NotLoggedIn,
    PermissionDenied,
    UnknownBank,
)
from miniupi.rich_status import error_of
from miniupi.nodes.logs import setup_node_logging
from miniupi.money import format_amount
from miniupi import validate
from miniupi.nodes.bank_links import BankLinks
from miniupi.nodes.coordinator import Coordinator, Payment
from miniupi.nodes.issuance import DepositOrder, Issuer
from miniupi.nodes.passwords import MAX_PASSWORD
from miniupi.nodes.server import NodeStartError, open_store, serve
from miniupi.contract.manager import NO_HOOKS, NodeHooks, fire_after
from miniupi.contract.registry import Plugins, check_plugins
from miniupi.v1 import bank_pb2, common_pb2, gateway_pb2, gateway_pb2_grpc

# A bank's refusals the gateway passes on to its own caller as they are; any other failure at a
# bank is the bank's trouble, not the caller's mistake, and is told as the bank being unavailable.
_PASSED_ON = (InvalidArgument, NotFound, AlreadyExists, FailedPrecondition)


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, cluster: ClusterConfig, coordinator: Coordinator, links: BankLinks,
                 sessions: Authenticator, issuer: Issuer, hooks: NodeHooks = NO_HOOKS) -> None:
        self.cluster, self.coordinator, self.links, self.sessions = cluster, coordinator, links, sessions
        self.issuer, self.hooks = issuer, hooks
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
        reply = await self._bank_call(bank, "History", bank_pb2.BankHistoryRequest(account=user, limit=request.limit))
        return gateway_pb2.HistoryReply(entries=reply.entries)

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
        if txn_id in self.issuer:
            raise AlreadyExists(f"transaction {txn_id} is a deposit, not a payment")
        payment = Payment(txn_id, payer, request.to_account, amount, self.cluster.currency)
        state = await self.coordinator.pay(payment)
        return gateway_pb2.PayReply(txn_id=txn_id, state=common_pb2.TxnState.Value(state))

    async def ListTransactions(self, request: gateway_pb2.ListTransactionsRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[gateway_pb2.TransactionChunk]:
        if current_peer.get() != ADMIN:
            raise PermissionDenied("only the admin may list transactions")
        txns = list(self.coordinator.txns.values())
        for batch in (txns[i:i + 2000] for i in range(0, len(txns), 2000)):
            yield gateway_pb2.TransactionChunk(txns=[
                gateway_pb2.GatewayTxn(
                    txn_id=t.payment.txn_id, from_account=t.payment.payer, to_account=t.payment.payee,
                    amount=common_pb2.Money(minor=t.payment.amount, currency=t.payment.currency),
                    state=common_pb2.TxnState.Value(t.state), acknowledged=t.acked, refusal_code=t.code)
                for t in batch])

    async def Deposit(self, request: gateway_pb2.DepositRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.DepositReply:
        """New money, by the treasury only: its id bound here cluster-wide, then credited once by the bank."""
        _only_treasury()
        txn_id = validate.txn_id(request.txn_id)
        user, bank = self._bank_of(request.account)
        amount = validate.positive_amount(request.amount.minor, request.amount.currency, self.cluster.currency)
        await self.issuer.record(DepositOrder(txn_id, f"{user}@{bank}", amount))
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


def _only_treasury() -> None:
    """Issuing money is the treasury's alone, whatever auth plugin runs in front of this servicer."""
    if current_peer.get() != TREASURY:
        raise PermissionDenied("only the treasury may issue money")


async def run_gateway(cluster: ClusterConfig, port: int | None = None, log_json: bool = False,
                      plugins: Plugins | None = None) -> None:
    """Serve the gateway; `plugins` is check_plugins(cluster), done here if not given."""
    if plugins is None:
        plugins = check_plugins(cluster)  # before the node creates anything
    node = cluster.gateway
    if port is not None:
        node = dataclasses.replace(node, port=port)
    auth = plugins.auth(node)
    if auth.authenticator is None:
        raise NodeStartError(f"{cluster.path}: gateway.auth: the auth plugin {node.auth!r} "
                             "issues no sessions, and the gateway must authenticate customers")
    sessions = auth.authenticator
    setup_node_logging(node, log_json or cluster.log_json)
    commit, tables = await open_store(plugins, node)
    await sessions.load(tables, commit)  # before serving: every live key works from the first call
    hooks = NodeHooks(plugins.pm, node)
    links = BankLinks(cluster)
    links.watch()
    coordinator = Coordinator(
        links, commit, tables, cluster.prepare_timeout_s, cluster.call_timeout_s, hooks=hooks)
    issuer = Issuer(commit, tables, coordinator.txns)
    aborted, resent = await coordinator.recover()
    if aborted or resent:
        logger.info("recovery: {} undecided payments aborted, {} decisions being resent", aborted, resent)

    def add_services(server: grpc.aio.Server) -> list[str]:
        gateway_pb2_grpc.add_GatewayServicer_to_server(
            GatewayServicer(cluster, coordinator, links, sessions, issuer, hooks), server)
        return [gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name]

    async def on_stop() -> None:
        await coordinator.close()
        await links.close()
        await commit.close()

    await serve(node, plugins, auth, add_services, on_stop)
