"""A session kind every gateway of a test cluster shares: `auth = "shared_sessions"`.

Gateways on SQLite keep a store each, so a key one of them hands out means
nothing to another; sessions shared by every gateway need a shared store.
This kind stands in for one, for the tests of client failover: a key is the
account and an HMAC of it under a secret every node of the test cluster
knows, so any gateway accepts a key any gateway issued, and a client that
moves to another gateway is not asked to log in again. Nothing is stored,
and a logout revokes nothing: for tests only.

Loaded through a cluster file's `[plugins] load = ["shared_sessions"]` (with
tests/plugins on PYTHONPATH).
"""
from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any

import pluggy

from miniupi.config import NodeConfig
from miniupi.contract.auth import SessionLog
from miniupi.contract.registry import Auth, AuthKind, Register
from miniupi.errors import NotLoggedIn, SessionExpired
from miniupi.plugins.auth_session import GatewaySessionInterceptor

hookimpl = pluggy.HookimplMarker("miniupi")
NAME = "shared_sessions"
SECRET = b"the test cluster's shared session secret"
LIFETIME_S = 3600.0


def _tag(account: str) -> str:
    return hmac.new(SECRET, account.encode(), hashlib.sha256).hexdigest()


def _account(key: str) -> str | None:
    """The account a key names if its tag is right; keys spell `@` as `-` (the client home takes no `@`)."""
    name, _, tag = key.rpartition(".")
    account = name.replace("-", "@")
    return account if hmac.compare_digest(tag, _tag(account)) else None


class SharedSessions:
    tables = ()

    async def load(self, tables: Mapping[str, Mapping[str, Any]], log: SessionLog) -> None:
        pass

    async def start(self, account: str) -> tuple[str, float]:
        return f"{account.replace('@', '-')}.{_tag(account)}", time.time() + LIFETIME_S

    def resolve(self, key: str) -> str:
        if not key:
            raise NotLoggedIn("not logged in: no session key")
        account = _account(key)
        if account is None:
            raise SessionExpired("session key not recognised; log in again")
        return account

    async def end(self, key: str) -> str | None:
        return _account(key)


def make_shared_sessions(node: NodeConfig, settings: Mapping[str, Any]) -> Auth:
    if node.role != "gateway":
        return Auth()
    sessions = SharedSessions()
    return Auth(authenticator=sessions, interceptors=[GatewaySessionInterceptor(sessions)])


@hookimpl
def miniupi_register_kinds(register: Register) -> None:
    register.add_auth(AuthKind(NAME, make_shared_sessions))
