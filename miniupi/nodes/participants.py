"""What a 2PC participant (a bank) says, and how the coordinator reaches one, as domain values.

The coordinator and the ledger trade these; gRPC stays in the adapters
(bank_links.py on the gateway, bank.py on the bank), so each side's core
is tested without a server.
"""
from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Refusal(StrEnum):
    """Why a bank votes NO; each value is the bank proto's VoteRefusal name, so no table translates it."""

    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    UNKNOWN_ACCOUNT = "UNKNOWN_ACCOUNT"
    ALREADY_DECIDED = "ALREADY_DECIDED"  # the id was decided before this prepare came
    WRONG_CURRENCY = "WRONG_CURRENCY"
    INVALID_REQUEST = "INVALID_REQUEST"  # the prepare itself was malformed
    BALANCE_CEILING = "BALANCE_CEILING"
    UNSPECIFIED = "VOTE_REFUSAL_UNSPECIFIED"  # a NO without a reason this version knows


@dataclass(frozen=True, slots=True)
class Leg:
    """One account's side of a transaction at its bank."""

    account: str  # the user part only: the bank is implied
    delta: int  # minor units; negative: a debit placed under a hold, positive: a credit
    counterparty: str  # user@bank, shown in the account's history


@dataclass(frozen=True, slots=True)
class Vote:
    """A bank's answer to a prepare; a YES is durable at the bank before it is given."""

    yes: bool
    refusal: Refusal | None = None  # set on a NO
    detail: str = ""  # for people: the bank's reason


YES = Vote(True)


@dataclass(frozen=True, slots=True)
class Ack:
    """A bank's answer to a decision: applied (idempotently), or not, with the bank's reason."""

    applied: bool
    detail: str = ""  # for people: why it was not applied


class Participants(Protocol):
    """The banks as the coordinator sees them.

    Both calls return awaitables that fail with a domain error (Unavailable,
    NotFound for an unknown bank) or TimeoutError when the bank cannot be
    reached or answered too late; a bank's own NO is a Vote, never an error.
    """

    def prepare(self, bank: str, txn_id: str, currency: str, legs: Sequence[Leg],
                patience_s: float = 0.0) -> Awaitable[Vote]:
        """Phase 1 at one bank for its legs. `patience_s`: how long it may wait to share a round with others."""
        ...

    def decide(self, bank: str, txn_id: str, commit: bool) -> Awaitable[Ack]:
        """Phase 2 at one bank; the coordinator sends it again until it is applied."""
        ...
