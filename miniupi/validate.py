"""Checks on what arrives over the wire, raising InvalidArgument (or a more specific reason) with the why.

Every servicer runs its input through these before touching state, so
bad input is refused whole and changes nothing.
"""
from __future__ import annotations

import re
import uuid

from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from miniupi.config import NAME_RE, ClusterConfig, split_address
from miniupi.errors import FailedPrecondition, InvalidAmount, InvalidArgument, MalformedRequest
from miniupi.money import format_amount


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def txn_id(value: str) -> str:
    """A transaction id must be a UUID, written the canonical way."""
    if _CANONICAL_UUID.match(value):  # every valid id; uuid.UUID below only words the refusal
        return value
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
        raise InvalidAmount(f"unknown currency {currency[:16]!r}: this cluster uses {expected_currency}")
    if minor <= 0:
        raise InvalidAmount("amount must be positive")
    return minor


def new_account_name(value: str, cluster: ClusterConfig) -> str:
    """A name a customer may take: well formed, and not an identity's or a bank's, which would pass for them."""
    if account_name(value) in cluster.reserved_user_names:
        raise InvalidArgument(f"{value} is a reserved name; choose another")
    return value


def opening_deposit(minor: int, currency: str, cluster: ClusterConfig) -> int:
    """What a customer may bring to a new account: at most the cluster's max_opening_deposit."""
    if currency and currency != cluster.currency:
        raise InvalidAmount(f"unknown currency {currency[:16]!r}: this cluster uses {cluster.currency}")
    if minor < 0:
        raise InvalidAmount("initial deposit must not be negative")
    if minor > cluster.max_opening_deposit:
        if cluster.max_opening_deposit == 0:
            raise FailedPrecondition("accounts open at zero in this cluster; ask the treasury for a deposit")
        raise FailedPrecondition(f"opening deposits are capped at {format_amount(cluster.max_opening_deposit)} "
                                 f"{cluster.currency} in this cluster; ask the treasury for more")
    return minor


def no_unknown_fields(message: Message) -> None:
    """Refuse fields this version does not know: money must never move on a half-understood request.

    Stripping unknown fields from a copy is one call into protobuf's C code,
    so a clean request costs two sizes and a copy; only a request that
    shrank is walked field by field, to name what was unknown.
    """
    stripped = type(message)()
    stripped.CopyFrom(message)
    stripped.DiscardUnknownFields()
    if stripped.ByteSize() != message.ByteSize():
        _name_unknown_fields(message)
        raise MalformedRequest(f"unknown fields in {message.DESCRIPTOR.name}")


def _name_unknown_fields(message: Message, path: str = "") -> None:
    unknown = UnknownFieldSet(message)
    if len(unknown):
        numbers = ", ".join(str(f.field_number) for f in unknown)
        raise MalformedRequest(f"unknown field {numbers} in {path or message.DESCRIPTOR.name}")
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        children = value if field.is_repeated else [value]
        for child in children:
            _name_unknown_fields(child, f"{path or message.DESCRIPTOR.name}.{field.name}")
