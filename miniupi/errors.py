"""Every error a caller can be told of, with its status code and its reason: the one list.

The domain raises these and knows nothing of gRPC. Each class names a
status code (for gRPC, and for people choosing what to do) and a stable
reason (for programs: it never changes wording). A node's one error door
(miniupi/nodes/error_door.py) turns them into the call's status, with the
reason in a `google.rpc.ErrorInfo` (miniupi/rich_status.py); a client reads
the reason back and raises the same class, never parsing the message.

The classes named after a status code are the fallback for a refusal with
no more specific reason; catch them to catch every reason under that code.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

DOMAIN = "miniupi"  # ErrorInfo.domain of every reason below


class MiniupiError(Exception):
    """An answer for the caller: a status code, a reason for programs and a one-line message for people.

    `reason` defaults to the class's; it is given only to keep a reason
    this version does not know, read from a newer node.
    """

    code = "UNKNOWN"
    reason = "UNKNOWN"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


# -- INVALID_ARGUMENT: the request itself is wrong; nothing changed ------------


class InvalidArgument(MiniupiError):
    """A field is malformed or out of range: an address, a transaction id, a name, a password's length."""

    code = reason = "INVALID_ARGUMENT"


class InvalidAmount(InvalidArgument):
    """An amount is not positive, is in another currency, or is more than any account may hold."""

    reason = "INVALID_AMOUNT"


class MalformedRequest(InvalidArgument):
    """The request's bytes are not the method's message, or carry fields this version does not know."""

    reason = "MALFORMED_REQUEST"


# -- NOT_FOUND -----------------------------------------------------------------


class NotFound(MiniupiError):
    """Something the request names does not exist."""

    code = reason = "NOT_FOUND"


class UnknownAccount(NotFound):
    """No such account at that bank."""

    reason = "UNKNOWN_ACCOUNT"


class UnknownBank(NotFound):
    """No such bank in this cluster."""

    reason = "UNKNOWN_BANK"


# -- ALREADY_EXISTS ------------------------------------------------------------


class AlreadyExists(MiniupiError):
    """The transaction id was already used with other details (another payment, or a deposit); the first stands."""

    code = reason = "ALREADY_EXISTS"


class AccountExists(AlreadyExists):
    """An account with that name is already open at that bank."""

    reason = "ACCOUNT_EXISTS"


# -- FAILED_PRECONDITION: well formed, but the state of things refuses it -------


class FailedPrecondition(MiniupiError):
    """The request is well formed but the state refuses it: an opening deposit over the cap, a bank step out of order."""

    code = reason = "FAILED_PRECONDITION"


class InsufficientFunds(FailedPrecondition):
    """The payer's available balance (balance less holds) is below the amount."""

    reason = "INSUFFICIENT_FUNDS"


class BalanceCeiling(FailedPrecondition):
    """The credit would take an account, or a bank's total, past the most it may hold."""

    reason = "BALANCE_CEILING"


class DailyLimitReached(FailedPrecondition):
    """The payment would take what the payer sent today (committed and in flight) past their daily limit."""

    reason = "DAILY_LIMIT"


class NotRefundable(FailedPrecondition):
    """Only a committed payment can be refunded, and a refund cannot itself be refunded."""

    reason = "NOT_REFUNDABLE"


class RefundExceedsPayment(FailedPrecondition):
    """The refund, with the payment's other committed and in-flight refunds, would give back more than was paid."""

    reason = "REFUND_EXCEEDS_PAYMENT"


class RequestClosed(FailedPrecondition):
    """The collect request was declined, has expired, or was already approved: it cannot be acted on now."""

    reason = "REQUEST_CLOSED"


class TooManyRequests(FailedPrecondition):
    """The requester already has as many pending collect requests as one account may."""

    reason = "TOO_MANY_REQUESTS"


# -- UNAUTHENTICATED: log in (again) -------------------------------------------


class Unauthenticated(MiniupiError):
    """The caller is not known."""

    code = reason = "UNAUTHENTICATED"


class NotLoggedIn(Unauthenticated):
    """No session key came with the call."""

    reason = "NOT_LOGGED_IN"


class SessionExpired(Unauthenticated):
    """The session key is expired, revoked or unknown; a gateway restart keeps live ones."""

    reason = "SESSION_EXPIRED"


class BadCredentials(Unauthenticated):
    """Login refused: wrong account or password (which of the two is not said)."""

    reason = "BAD_CREDENTIALS"


# -- PERMISSION_DENIED ---------------------------------------------------------


class PermissionDenied(MiniupiError):
    """The caller is known but may not do this: another customer's account, or a certificate without that right."""

    code = reason = "PERMISSION_DENIED"


class AccountLocked(PermissionDenied):
    """Too many failed logins: the account refuses logins for a while (the message says how long)."""

    reason = "ACCOUNT_LOCKED"


# -- ABORTED: final for this id ------------------------------------------------


class Aborted(MiniupiError):
    """The payment was decided ABORTED for a reason outside the caller's input (a bank down or too slow,
    a restart before deciding, a plugin's veto). Final for this id: sending it again returns the same."""

    code = "ABORTED"
    reason = "PAYMENT_ABORTED"


# -- UNAVAILABLE: nothing decided; send the same request again ------------------


class Unavailable(MiniupiError):
    """Not decided yet (a payment still in progress); the same request may be sent again."""

    code = reason = "UNAVAILABLE"


class BankUnavailable(Unavailable):
    """A bank did not answer the gateway; nothing was decided."""

    reason = "BANK_UNAVAILABLE"


class StoreUnavailable(Unavailable):
    """A node could not make a write durable; nothing was decided."""

    reason = "STORE_UNAVAILABLE"


class NoAnswer(Unavailable):
    """Never sent by a node: the client's name for a call without an answer (gateway unreachable,
    no answer in time, not the gateway's certificate). Whether it arrived is unknown: send it again."""

    reason = "NO_ANSWER"


# -- INTERNAL ------------------------------------------------------------------


class Internal(MiniupiError):
    """A fault in the node, not the caller's mistake; the node's log has the traceback."""

    code = reason = "INTERNAL"


# What a node may send, by reason: the client maps a status back with these.
SENT_BY_NODES: tuple[type[MiniupiError], ...] = (
    InvalidArgument, InvalidAmount, MalformedRequest,
    NotFound, UnknownAccount, UnknownBank,
    AlreadyExists, AccountExists,
    FailedPrecondition, InsufficientFunds, BalanceCeiling, DailyLimitReached, NotRefundable, RefundExceedsPayment,
    RequestClosed, TooManyRequests,
    Unauthenticated, NotLoggedIn, SessionExpired, BadCredentials,
    PermissionDenied, AccountLocked,
    Aborted,
    Unavailable, BankUnavailable, StoreUnavailable,
    Internal,
)
BY_REASON: dict[str, type[MiniupiError]] = {cls.reason: cls for cls in SENT_BY_NODES}
BY_CODE: dict[str, type[MiniupiError]] = {
    cls.code: cls for cls in (InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, Unauthenticated,
                              PermissionDenied, Aborted, Unavailable, Internal)
}


def from_status(code: str, message: str, reason: str = "") -> MiniupiError:
    """The error a status stands for: by its reason, or by its code when the reason is missing or unknown."""
    cls = BY_REASON.get(reason)
    if cls is not None and cls.code == code:
        return cls(message)
    return BY_CODE.get(code, MiniupiError)(message, reason=reason or None)


Result = TypeVar("Result")


def unwrap(result: Result | MiniupiError) -> Result:
    """One item of a batch answer: its value, or raise the error that refused it alone."""
    if isinstance(result, MiniupiError):
        raise result
    return result


def caught(step: Callable[..., Result], *args: Any) -> Result | MiniupiError:
    """One item of a batch: `step(*args)`, or the error that refused that item alone (undone by unwrap)."""
    try:
        return step(*args)
    except MiniupiError as e:
        return e
