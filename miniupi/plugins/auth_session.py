"""Random session keys for customers, certificate identities for nodes.

The gateway hands out a key with a 256-bit random secret at login and
keeps only the secret's SHA-256, so a copy of its memory cannot be
replayed as a key. Sessions live in memory: a gateway restart ends them
all, cleanly (UNAUTHENTICATED, log in again), never half-valid.
The treasury's certificate is a credential by itself for issuing money, and
for nothing else. Which certificate may call a bank, or ask the gateway for
a decision, is not this plugin's business: those checks are core
(miniupi.nodes.callers) and hold whatever auth a node names.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from miniupi.contract.identity import ADMIN, SESSION_METADATA_KEY, TREASURY, current_account
from miniupi.config import NodeConfig
from miniupi.errors import NotLoggedIn, PermissionDenied, SessionExpired
from miniupi.contract.interceptors import CheckFirst, wrap_handler
from miniupi.contract.hookspecs import hookimpl
from miniupi.nodes.callers import ALWAYS_OPEN_PREFIXES, GATEWAY_FOR_NODES, set_peer
from miniupi.contract.registry import Auth, AuthKind, Register

NAME = "session"
# Methods that run before anyone has a session.
GATEWAY_PUBLIC = frozenset({
    "/miniupi.v1.Gateway/Register",
    "/miniupi.v1.Gateway/Login",
})
# Issuing money: the treasury's certificate alone, and the only methods it may call.
GATEWAY_FOR_TREASURY = frozenset({"/miniupi.v1.Gateway/Deposit", "/miniupi.v1.Gateway/OpenAccounts"})


@dataclass
class _Session:
    secret_hash: bytes
    account: str
    started: float
    last_used: float


class SessionStore:
    """Sessions with an idle and an absolute expiry.

    A key is "ID.SECRET": the ID finds the session, and the SECRET's
    SHA-256 is compared in constant time, so neither a lookup's timing nor a
    copy of this table gives anyone a usable key.

    The table is kept in order of last use, so sessions that have gone idle
    are all at its front: each login sweeps them from there, and memory
    holds the sessions used within `idle_s`, not every one ever started.
    """

    def __init__(self, idle_s: float, max_s: float, clock: Callable[[], float] = time.time) -> None:
        self.idle_s, self.max_s, self._clock = idle_s, max_s, clock
        self._sessions: OrderedDict[str, _Session] = OrderedDict()  # least recently used first

    def start(self, account: str) -> tuple[str, float]:
        session_id, secret = secrets.token_hex(16), secrets.token_urlsafe(32)
        now = self._clock()
        self._sweep(now)
        self._sessions[session_id] = _Session(hashlib.sha256(secret.encode()).digest(), account, now, now)
        return f"{session_id}.{secret}", now + self.max_s

    def _sweep(self, now: float) -> None:
        """Drop the sessions idle too long, from the front; each is dropped once, so a login pays O(1) amortised.

        A session past `max_s` but still in use is further back; resolve
        drops it at its next use, or this sweep once it goes idle.
        """
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if now - oldest.last_used <= self.idle_s:
                return
            self._sessions.popitem(last=False)

    def _find(self, key: str) -> tuple[str, _Session] | None:
        session_id, _, secret = key.partition(".")
        session = self._sessions.get(session_id)
        if session is None or not hmac.compare_digest(session.secret_hash, hashlib.sha256(secret.encode()).digest()):
            return None
        return session_id, session

    def resolve(self, key: str) -> str:
        if not key:
            raise NotLoggedIn("not logged in: no session key")
        found = self._find(key)
        if found is None:
            raise SessionExpired("session key not recognised; log in again")
        session_id, session = found
        now = self._clock()
        if now - session.last_used > self.idle_s or now - session.started > self.max_s:
            del self._sessions[session_id]
            raise SessionExpired("session expired; log in again")
        session.last_used = now
        self._sessions.move_to_end(session_id)  # keeps the table in order of last use, for _sweep
        return session.account

    def end(self, key: str) -> None:
        found = self._find(key)
        if found is not None:
            del self._sessions[found[0]]


Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class GatewaySessionInterceptor(grpc.aio.ServerInterceptor):
    """Every gateway method but Register, Login and those for nodes or the treasury needs a live session key.

    Methods for nodes (GetDecision) are checked by certificate in the core
    (miniupi.nodes.callers), whatever the auth kind.
    """

    def __init__(self, sessions: SessionStore) -> None:
        self.sessions = sessions
        # One `around` each, made once, so wrap_handler's cache serves every call.
        self._public, self._for_nodes = CheckFirst(_not_treasury), CheckFirst(set_peer)
        self._for_customers, self._for_treasury = CheckFirst(self._session), CheckFirst(_only_treasury)

    async def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(ALWAYS_OPEN_PREFIXES):
            return handler
        if method in GATEWAY_PUBLIC:
            return wrap_handler(handler, self._public)
        if method in GATEWAY_FOR_NODES:
            return wrap_handler(handler, self._for_nodes)
        if method in GATEWAY_FOR_TREASURY:
            return wrap_handler(handler, self._for_treasury)
        return wrap_handler(handler, self._for_customers)

    async def _session(self, context: grpc.aio.ServicerContext) -> None:
        peer = await _not_treasury(context)
        if peer == ADMIN:
            return  # the admin certificate is the admin's credential; no session needed
        key = next((v for k, v in context.invocation_metadata() or () if k == SESSION_METADATA_KEY), "")
        current_account.set(self.sessions.resolve(key if isinstance(key, str) else ""))


async def _only_treasury(context: grpc.aio.ServicerContext) -> None:
    if await set_peer(context) != TREASURY:
        raise PermissionDenied("only the treasury may issue money")


async def _not_treasury(context: grpc.aio.ServicerContext) -> str | None:
    """The treasury issues money and does nothing else, so a stolen treasury key reads and pays nothing."""
    peer = await set_peer(context)
    if peer == TREASURY:
        raise PermissionDenied("the treasury may only deposit and open accounts in bulk")
    return peer


def make_session_auth(node: NodeConfig, settings: Mapping[str, Any]) -> Auth:
    """At the gateway, sessions and their check; a bank needs nothing from this kind."""
    if node.role != "gateway":
        return Auth()
    sessions = SessionStore(node.cluster.session_idle_s, node.cluster.session_max_s)
    return Auth(authenticator=sessions, interceptors=[GatewaySessionInterceptor(sessions)])


@hookimpl
def miniupi_register_kinds(register: Register) -> None:
    register.add_auth(AuthKind(NAME, make_session_auth))
