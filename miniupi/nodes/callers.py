"""Which certificate may call which node method: core, installed on every node by serve().

A bank moves money for the gateway's certificate alone and lets the admin
read; a gateway answers GetDecision only to banks and the admin. These
checks do not depend on the auth kind a node names, so no auth plugin, and
no typo in its name, can switch them off. Edit the tables, not the code.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from miniupi.contract.identity import ADMIN, current_peer
from miniupi.config import NodeConfig
from miniupi.contract.interceptors import CheckFirst, wrap_handler
from miniupi.errors import PermissionDenied
from miniupi.tls import peer_identity

GATEWAY = "gateway"
# Health and reflection answer anyone the TLS layer let in.
ALWAYS_OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
# The admin's reads; every other bank method (2PC, OpenAccount(s), Deposit, VerifyPassword) is the gateway's alone.
BANK_ADMIN_METHODS = frozenset(f"/miniupi.v1.Bank/{m}" for m in ("GetAccount", "History", "Audit"))
# Banks ask the gateway for decisions with their own certificates, not a session.
GATEWAY_FOR_NODES = frozenset({"/miniupi.v1.Gateway/GetDecision"})

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


async def set_peer(context: grpc.aio.ServicerContext) -> str | None:
    """The caller's certificate identity, kept for the servicer and the call log."""
    peer = peer_identity(context)
    current_peer.set(peer)
    return peer


class BankCallerInterceptor(grpc.aio.ServerInterceptor):
    """A bank answers the gateway's certificate, and the admin's for BANK_ADMIN_METHODS only.

    The admin must not be able to do at a bank what it may not do at the
    gateway: move or issue money, open accounts or guess passwords.
    """

    def __init__(self) -> None:
        self._gateway_only, self._admin_reads = CheckFirst(_only_gateway), CheckFirst(_gateway_or_admin)

    async def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(ALWAYS_OPEN_PREFIXES):
            return handler
        return wrap_handler(handler, self._admin_reads if method in BANK_ADMIN_METHODS else self._gateway_only)


class GatewayNodeMethodsInterceptor(grpc.aio.ServerInterceptor):
    """GATEWAY_FOR_NODES answer the cluster's banks and the admin, never a customer."""

    def __init__(self, banks: frozenset[str]) -> None:
        self.banks = banks
        self._check = CheckFirst(self._bank_or_admin)

    async def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or details.method not in GATEWAY_FOR_NODES:
            return handler
        return wrap_handler(handler, self._check)

    async def _bank_or_admin(self, context: grpc.aio.ServicerContext) -> None:
        peer = await set_peer(context)
        if peer != ADMIN and peer not in self.banks:
            raise PermissionDenied(f"{peer or 'an unknown peer'} is not a bank")


async def _only_gateway(context: grpc.aio.ServicerContext) -> None:
    peer = await set_peer(context)  # first, so a refused call is logged with its caller
    if peer == ADMIN:
        raise PermissionDenied("the admin may only read a bank")
    if peer != GATEWAY:
        raise PermissionDenied(f"{peer or 'an unknown peer'} may not call a bank; only the gateway may")


async def _gateway_or_admin(context: grpc.aio.ServicerContext) -> None:
    peer = await set_peer(context)
    if peer not in (GATEWAY, ADMIN):
        raise PermissionDenied(f"{peer or 'an unknown peer'} may not call a bank; only the gateway may")


def core_interceptors(node: NodeConfig) -> list[grpc.aio.ServerInterceptor]:
    """The caller checks for `node`'s role; serve() installs them whatever the plugins."""
    if node.role == "bank":
        return [BankCallerInterceptor()]
    return [GatewayNodeMethodsInterceptor(frozenset(node.cluster.banks))]
