"""Checks on what arrives over the wire, raising InvalidArgument with the reason.

Every servicer runs its input through these before touching state, so
bad input is refused whole and changes nothing.
"""
from __future__ import annotations

import uuid

from miniupi.config import NAME_RE, split_address
from miniupi.errors import InvalidArgument


def txn_id(value: str) -> str:
    """A transaction id must be a UUID, written the canonical way."""
    try:
        parsed = uuid.UUID(value)
    except (ValueError, TypeError):
        raise InvalidArgument(f"transaction id is not a UUID: {value[:64]!r}") from None
    if str(parsed) != value:
        raise InvalidArgument(f"transaction id must be a lower-case hyphenated UUID: {value[:64]!r}")
    return value


def account_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise InvalidArgument(f"bad account name {value[:64]!r}: use lower-case letters, digits and _")
    return value


def address(value: str) -> tuple[str, str]:
    """'alice@bank_a' -> ('alice', 'bank_a')."""
    try:
        return split_address(value[:200])
    except ValueError as e:
        raise InvalidArgument(str(e)) from None


def positive_amount(minor: int, currency: str, expected_currency: str) -> int:
    if currency and currency != expected_currency:
        raise InvalidArgument(f"unknown currency {currency[:16]!r}: this cluster uses {expected_currency}")
    if minor <= 0:
        raise InvalidArgument("amount must be positive")
    return minor
