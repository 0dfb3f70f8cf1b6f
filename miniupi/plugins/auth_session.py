"""Random session keys for customers, certificate identities for nodes.

The gateway hands out a key with a 256-bit random secret at login and
keeps only the secret's SHA-256, so a copy of its memory or of its store
cannot be replayed as a key. Each session is a row of the gateway's store
(table "sessions": the hash, account, started and last-used times), so a
gateway that restarts, even after SIGKILL, accepts every key that was live
and refuses every key that was logged out or has expired.
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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from loguru import logger

from miniupi.contract.identity import ADMIN, TREASURY, current_account, session_key
from miniupi.config import NodeConfig
from miniupi.errors import NotLoggedIn, PermissionDenied, SessionExpired
from miniupi.contract.interceptors import CheckFirst, wrap_handler
from miniupi.contract.hookspecs import hookimpl
from miniupi.nodes.callers import ALWAYS_OPEN_PREFIXES, GATEWAY_FOR_NODES, set_peer
from miniupi.contract.auth import SessionLog
from miniupi.contract.registry import Auth, AuthKind, Register
from miniupi.contract.store import Put, Store, read, read_many

NAME = "session"
# Methods that run before anyone has a session.
GATEWAY_PUBLIC = frozenset({
    "/miniupi.v1.Gateway/Register",
    "/miniupi.v1.Gateway/Login",
})
# Issuing money: the treasury's certificate alone, and the only methods it may call.
GATEWAY_FOR_TREASURY = frozenset({"/miniupi.v1.Gateway/Deposit", "/miniupi.v1.Gateway/OpenAccounts"})


TABLE = "sessions"  # in the gateway's store: session id -> {account, secret_sha256, started, last_used}
# A session's last use reaches the store at most once per this fraction of
# session_idle_s, and without waiting: a call never pays a write. A restart
# checks idleness from the stored time, which is at most this much behind,
# so a session may expire that much early after a restart, never late.
LAST_USE_WRITE_FRACTION = 0.25


@dataclass(slots=True)
class _Session:
    secret_hash: bytes
    account: str
    started: float
    last_used: float
    stored_last_used: float  # the last use the store was given; never later than last_used

    def row(self) -> dict[str, Any]:
        return {"account": self.account, "secret_sha256": self.secret_hash.hex(),
                "started": self.started, "last_used": self.stored_last_used}


class _NotLoaded:
    """The log before `load`: a session written then would not survive a restart, so it is a bug."""

    async def write(self, batch: Sequence[Put]) -> None:
        raise RuntimeError("SessionStore used before load()")

    def write_later(self, batch: Sequence[Put]) -> None:
        raise RuntimeError("SessionStore used before load()")

    async def barrier(self) -> None:
        raise RuntimeError("SessionStore used before load()")

    @property
    def store(self) -> Store:
        raise RuntimeError("SessionStore used before load()")


class SessionStore:
    """Sessions with an idle and an absolute expiry, kept durably in the gateway's store.

    A key is "ID.SECRET": the ID finds the session, and the SECRET's
    SHA-256 is compared in constant time, so neither a lookup's timing nor a
    copy of this table (in memory or on disk) gives anyone a usable key.

    A login is written before its key is handed out, and a logout before it
    is answered; a use only moves the last-use time in memory, and now and
    then in the store (LAST_USE_WRITE_FRACTION).

    The table is kept in order of last use, so sessions that have gone idle
    are all at its front: each login sweeps them from there (and deletes
    their rows), and memory holds the sessions used within `idle_s`, not
    every one ever started.

    Where several gateways share the store (`shared`), the row is the truth
    and memory only its copy: each use reads the row (awaited: the store is
    across the network, and the loop serves other calls meanwhile), so a
    session started at one gateway works at every other, and a logout at one
    is refused at all from its answer on. Each gateway writes the last use it
    sees; a session is idle only when neither its row nor this gateway saw a
    use.
    """

    tables = (TABLE,)

    def __init__(self, idle_s: float, max_s: float, clock: Callable[[], float] = time.time,
                 shared: bool = False) -> None:
        self.idle_s, self.max_s, self._clock, self.shared = idle_s, max_s, clock, shared
        self._sessions: OrderedDict[str, _Session] = OrderedDict()  # least recently used first
        self._log: SessionLog = _NotLoaded()
        self._write_use_after = idle_s * LAST_USE_WRITE_FRACTION

    def __len__(self) -> int:
        """Sessions in memory: those used within idle_s, and expired ones the next login sweeps."""
        return len(self._sessions)

    def _expired(self, session: _Session, now: float) -> bool:
        return now - session.last_used > self.idle_s or now - session.started > self.max_s

    async def load(self, tables: Mapping[str, Mapping[str, Any]], log: SessionLog) -> None:
        """Take the live sessions from the store; delete the rows of expired (or unreadable) ones."""
        now = self._clock()
        live: list[tuple[str, _Session]] = []
        dead: list[str] = []
        for session_id, row in tables.get(TABLE, {}).items():
            session = _from_row(session_id, row, now)
            if session is None or self._expired(session, now):
                dead.append(session_id)
            else:
                live.append((session_id, session))
        live.sort(key=lambda item: item[1].last_used)
        self._sessions = OrderedDict(live)
        self._log = log
        if dead:
            await log.write([Put(TABLE, session_id, None) for session_id in dead])
        logger.info("sessions: {} live kept, {} expired purged", len(live), len(dead))

    async def start(self, account: str) -> tuple[str, float]:
        session_id, secret = secrets.token_hex(16), secrets.token_urlsafe(32)
        now = self._clock()
        await self._sweep(now)
        session = _Session(hashlib.sha256(secret.encode()).digest(), account, now, now, now)
        # Durable before anyone holds the key: a key that works is always one the store has.
        await self._log.write([Put(TABLE, session_id, session.row())])
        self._sessions[session_id] = session
        return f"{session_id}.{secret}", now + self.max_s

    async def _sweep(self, now: float) -> None:
        """Drop the sessions idle too long, from the front; each is dropped once, so a login pays O(1) amortised.

        A session past `max_s` but still in use is further back; resolve
        drops it at its next use, or this sweep once it goes idle. Their rows
        go in the next write: a crash that loses it leaves rows that load()
        finds expired.
        """
        gone: list[str] = []
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if now - oldest.last_used <= self.idle_s:
                break
            gone.append(self._sessions.popitem(last=False)[0])
        if gone and self.shared:  # one in use at another gateway goes out of this one's memory, not the store
            rows = await read_many(self._log.store, TABLE, gone)
            gone = [session_id for session_id in gone if not self._in_use(session_id, rows.get(session_id), now)]
        if gone:
            self._log.write_later([Put(TABLE, session_id, None) for session_id in gone])

    def _in_use(self, session_id: str, row: Any, now: float) -> bool:
        """Whether the shared store's row shows the session used within idle_s (at any gateway)."""
        session = _from_row(session_id, row, now)
        return session is not None and now - session.last_used <= self.idle_s

    async def _find(self, key: str) -> tuple[str, _Session] | None:
        session_id, _, secret = key.partition(".")
        if self.shared:  # the row decides: started or ended at another gateway, or still here
            row = await read(self._log.store, TABLE, session_id)  # the loop serves other calls meanwhile
        session = self._sessions.get(session_id)
        if self.shared:
            stored = _from_row(session_id, row, self._clock())
            if stored is None:
                self._sessions.pop(session_id, None)
                return None
            if session is None:
                session = self._sessions[session_id] = stored
            elif stored.last_used > session.last_used:
                session.last_used = session.stored_last_used = stored.last_used
        if session is None or not hmac.compare_digest(session.secret_hash, hashlib.sha256(secret.encode()).digest()):
            return None
        return session_id, session

    async def resolve(self, key: str) -> str:
        if not key:
            raise NotLoggedIn("not logged in: no session key")
        found = await self._find(key)
        if found is None:
            raise SessionExpired("session key not recognised; log in again")
        session_id, session = found
        now = self._clock()
        if self._expired(session, now):
            del self._sessions[session_id]
            self._log.write_later([Put(TABLE, session_id, None)])
            raise SessionExpired("session expired; log in again")
        session.last_used = now
        self._sessions.move_to_end(session_id)  # keeps the table in order of last use, for _sweep
        if now - session.stored_last_used >= self._write_use_after:
            session.stored_last_used = now
            self._log.write_later([Put(TABLE, session_id, session.row())])
        return session.account

    async def end(self, key: str) -> str | None:
        found = await self._find(key)
        if found is None:
            # A logout of this key may still be on its way to the disk: answer only once it is there.
            await self._log.barrier()
            return None
        session_id, session = found
        del self._sessions[session_id]  # refused from now on, while the delete goes down
        try:
            await self._log.write([Put(TABLE, session_id, None)])
        except Exception:
            # Not logged out on disk, so not in memory either: the caller is told, and may log out again.
            self._sessions[session_id] = session
            raise
        return session.account


def _from_row(session_id: str, row: Any, now: float) -> _Session | None:
    """A stored session, or None for no row or one that cannot be read (logged, to be dropped)."""
    if row is None:
        return None
    try:
        used = min(float(row["last_used"]), now)  # a clock that went back must not extend a session
        return _Session(bytes.fromhex(row["secret_sha256"]), str(row["account"]), float(row["started"]), used, used)
    except (KeyError, TypeError, ValueError, AttributeError):
        logger.warning("sessions: dropping unreadable row {}", session_id)
        return None


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
        current_account.set(await self.sessions.resolve(session_key(context)))


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
    # Several gateways share one store (miniupi/nodes/replicas.py), and with it every session.
    shared = len(getattr(node.cluster, "gateways", ())) > 1
    sessions = SessionStore(node.cluster.session_idle_s, node.cluster.session_max_s, shared=shared)
    return Auth(authenticator=sessions, interceptors=[GatewaySessionInterceptor(sessions)])


@hookimpl
def miniupi_register_kinds(register: Register) -> None:
    register.add_auth(AuthKind(NAME, make_session_auth))
