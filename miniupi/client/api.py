"""Talking to the gateway over mTLS, with errors turned back into exceptions.

AsyncClient is the real one; Client runs it on a private event loop for
programs and tests that are not asynchronous.
"""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from miniupi.caller import ADMIN, SESSION_METADATA_KEY
from miniupi.config import ClusterConfig
from miniupi.errors import MiniupiError, Unauthenticated, Unavailable, from_code
from miniupi.tls import channel_credentials
from miniupi.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

T = TypeVar("T")
# Our own nodes word UNAVAILABLE this way; anything else is the transport.
_SERVER_UNAVAILABLE_PREFIXES = ("bank ", "gateway could", "payment ")


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


@dataclass(frozen=True)
class PayResult:
    txn_id: str
    state: str


def as_error(e: grpc.aio.AioRpcError) -> MiniupiError:
    """A status from the wire as the domain error it stands for."""
    code, details = e.code(), e.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE and not details.startswith(_SERVER_UNAVAILABLE_PREFIXES):
        return Unavailable("gateway unreachable")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Unavailable("gateway did not answer in time")
    return from_code(code.name, details or code.name.lower())


class AsyncClient:
    def __init__(self, cluster: ClusterConfig, *, session: Session | None = None, identity: str = "client",
                 timeout: float | None = None) -> None:
        self.cluster, self.session, self.identity = cluster, session, identity
        self.timeout = timeout if timeout is not None else cluster.prepare_timeout_s + cluster.call_timeout_s + 5
        creds = channel_credentials(cluster.certs_dir, identity)
        self._channel = grpc.aio.secure_channel(cluster.gateway.address, creds)
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)

    async def _call(self, method: str, request: Any, authed: bool = True) -> Any:
        metadata = None
        if authed and self.session is not None:
            metadata = ((SESSION_METADATA_KEY, self.session.key),)
        elif authed and self.identity != ADMIN:  # the admin's certificate is its credential
            raise Unauthenticated("not logged in; run: miniupi login USER@BANK")
        try:
            return await getattr(self._stub, method)(request, timeout=self.timeout, metadata=metadata)
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
        reply = await self._call("History", gateway_pb2.HistoryRequest(account=account, limit=limit))
        return [HistoryItem(e.txn_id, e.counterparty, e.delta_minor, e.currency, e.applied_at) for e in reply.entries]

    async def pay(self, to: str, amount: int, *, txn_id: str | None = None, from_account: str | None = None) -> PayResult:
        """Pay `amount` minor units once; send the same txn_id again to retry safely."""
        txn_id = txn_id or str(uuid.uuid4())
        payer = from_account or (self.session.account if self.session else "")
        reply = await self._call("Pay", gateway_pb2.PayRequest(
            txn_id=txn_id, from_account=payer, to_account=to,
            amount=common_pb2.Money(minor=amount, currency=self.cluster.currency)))
        return PayResult(reply.txn_id, common_pb2.TxnState.Name(reply.state))

    async def close(self) -> None:
        await self._channel.close()

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

    def pay(self, to: str, amount: int, *, txn_id: str | None = None, from_account: str | None = None) -> PayResult:
        return self._run(self._async.pay, to, amount, txn_id=txn_id, from_account=from_account)

    def close(self) -> None:
        self._run(self._async.close)
        self._runner.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
