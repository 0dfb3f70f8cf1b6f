"""The small set of errors the domain raises; servicers turn them into statuses.

The domain knows nothing of gRPC: each error names its status code as a
string, and miniupi/nodes/grpc_status.py is the one door where it becomes a
`context.abort`. The client maps codes back to the same classes.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar


class MiniupiError(Exception):
    """An answer for the caller: a status code name and a one-line reason."""

    code = "UNKNOWN"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(MiniupiError):
    code = "INVALID_ARGUMENT"


class NotFound(MiniupiError):
    code = "NOT_FOUND"


class AlreadyExists(MiniupiError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(MiniupiError):
    code = "FAILED_PRECONDITION"


INSUFFICIENT_FUNDS = "insufficient funds"


class InsufficientFunds(FailedPrecondition):
    """Always worded starting with INSUFFICIENT_FUNDS, which is how a client tells it apart."""


class Unauthenticated(MiniupiError):
    code = "UNAUTHENTICATED"


class PermissionDenied(MiniupiError):
    code = "PERMISSION_DENIED"


class Aborted(MiniupiError):
    """The payment was decided ABORTED for a reason outside the caller's input
    (a bank down or too slow). Final for this id: retrying it returns the same."""

    code = "ABORTED"


class Unavailable(MiniupiError):
    """Not decided; the same request may be sent again."""

    code = "UNAVAILABLE"


BY_CODE: dict[str, type[MiniupiError]] = {
    cls.code: cls
    for cls in (InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, Unauthenticated,
                PermissionDenied, Aborted, Unavailable)
}


def from_code(code: str, message: str) -> MiniupiError:
    """The error for a status code name, as a client receives it."""
    if code == InsufficientFunds.code and message.startswith(INSUFFICIENT_FUNDS):
        return InsufficientFunds(message)
    return BY_CODE.get(code, MiniupiError)(message)


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
