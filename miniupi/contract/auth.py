"""What an auth plugin gives the gateway: sessions it can start, check and end, kept in the gateway's store."""
from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from miniupi.contract.store import Put, Store


class SessionLog(Protocol):
    """The gateway's store as an authenticator writes it: the node's group commit, shared with payments.

    Sessions go into their own table of the node's store, so they survive
    a restart with whatever storage kind the node runs, and never in a side file.
    """

    async def write(self, batch: Sequence[Put]) -> None:
        """Return once `batch` is durable; raises StoreUnavailable if it is not."""

    def write_later(self, batch: Sequence[Put]) -> None:
        """Queue `batch` in order without waiting: for changes a crash may lose safely."""

    async def barrier(self) -> None:
        """Return once everything written so far is durable."""

    @property
    def store(self) -> Store:
        """The store itself, for reading a row (`get`) where gateways share it."""


class Authenticator(Protocol):
    # The tables of the gateway's store it keeps, loaded whole at start and handed to `load`
    # (the gateway loads only its live tables; one without this attribute gets "sessions").
    # One that also has a len(), the sessions it keeps live, callable from any thread, gives
    # the gateway's "sessions_live" reading (miniupi_node_loaded; the metric miniupi_sessions_live).
    tables: Collection[str]

    async def load(self, tables: Mapping[str, Mapping[str, Any]], log: SessionLog) -> None:
        """Take the sessions the store kept, once, before the gateway serves; write to `log` from then on."""

    async def start(self, account: str) -> tuple[str, float]:
        """A new session for `account`, durable before it returns: (key to hand out, expiry in Unix seconds)."""

    async def resolve(self, key: str) -> str:
        """The account a key belongs to; raise Unauthenticated if none. Called on every call: no waiting
        but for a read of the store where gateways share one (contract/store.py, `read`)."""

    async def end(self, key: str) -> str | None:
        """Revoke a key, durably before it returns: the account whose session ended, None for an unknown key."""
