"""What an auth plugin gives the gateway: sessions it can start, check and end."""
from __future__ import annotations

from typing import Protocol


class Authenticator(Protocol):
    def start(self, account: str) -> tuple[str, float]:
        """A new session for `account`: (key to hand out, expiry in Unix seconds)."""

    def resolve(self, key: str) -> str:
        """The account a key belongs to; raise Unauthenticated if none."""

    def end(self, key: str) -> None:
        """Revoke a key; unknown keys are ignored."""
