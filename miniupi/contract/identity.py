"""Who is calling: set by an auth interceptor, read by the servicers.

Context variables are per task, and grpc.aio runs each call in its own
task, so an interceptor that wraps the handler can hand the caller over
without the servicer knowing which auth plugin is installed.
"""
from __future__ import annotations

from contextvars import ContextVar
from typing import Any

# The user@bank account of the session key on this call, if any.
current_account: ContextVar[str | None] = ContextVar("miniupi_current_account", default=None)

# The certificate identity of the peer (gateway, bank name, client, admin).
current_peer: ContextVar[str | None] = ContextVar("miniupi_current_peer", default=None)

SESSION_METADATA_KEY = "miniupi-session"

# The certificate identity that holds the operator role.
ADMIN = "admin"

# The certificate identity that issues money: deposits and bulk openings, nothing else.
TREASURY = "treasury"


def session_key(context: Any) -> str:
    """The session key the caller sent as metadata, or "" (a missing or binary value is no key)."""
    key = next((v for k, v in context.invocation_metadata() or () if k == SESSION_METADATA_KEY), "")
    return key if isinstance(key, str) else ""
