"""One log line per call on every node: method, caller, amount, status, latency.

Fields are picked from the request by name, so a password or session key
can never reach the log: neither is on the list.
"""
from __future__ import annotations

import functools
import time
from typing import Any

import grpc

from miniupi.contract.identity import current_account, current_peer
from miniupi.config import NodeConfig
from miniupi.contract.interceptors import Malformed, MethodInterceptor
from miniupi.nodes.error_door import status_name
from miniupi.nodes.logs import log_call
from miniupi.contract.hookspecs import hookimpl

QUIET_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


# Request strings are the caller's: no control character may forge or split a log line.
_CONTROL = {c: "?" for c in (*range(32), 127)}


def _fields(request: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if isinstance(request, Malformed):  # refused unread: log what parsed, if anything did
        request = request.parsed
    descriptor = getattr(request, "DESCRIPTOR", None)  # None for bytes that did not parse
    if descriptor is None:
        return fields
    names, has_amount = _logged_fields(descriptor)
    for name in names:
        value = getattr(request, name)
        if value:
            fields[name] = value[:64].translate(_CONTROL)
    if has_amount and request.amount.minor:
        fields["amount"] = request.amount.minor
    return fields


@functools.cache
def _logged_fields(descriptor: Any) -> tuple[tuple[str, ...], bool]:
    """Which of the logged fields a message type has: asking a message for a field it lacks raises."""
    present = descriptor.fields_by_name
    return tuple(n for n in ("txn_id", "account", "from_account", "to_account") if n in present), "amount" in present


class CallLogInterceptor(MethodInterceptor):
    def __init__(self, node: NodeConfig) -> None:
        super().__init__()
        self.node = node

    def around_for(self, method: str) -> _LogCalls | None:
        return None if method.startswith(QUIET_PREFIXES) else _LogCalls(method.rsplit("/", 1)[-1])


class _LogCalls:
    __slots__ = ("method",)

    def __init__(self, method: str) -> None:
        self.method = method

    def __call__(self, request: Any, context: grpc.aio.ServicerContext) -> _LoggedCall:
        return _LoggedCall(self.method, request, context)


class _LoggedCall:
    """Times one call and logs its line on the way out, whatever the outcome."""

    __slots__ = ("method", "request", "context", "start")

    def __init__(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        self.method, self.request, self.context = method, request, context
        self.start = time.perf_counter()

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: type[BaseException] | None, error: BaseException | None,
                        *traceback: object) -> None:
        # The error door, outside this interceptor, sets the status only after this line is logged.
        log_call({"method": self.method, "caller": current_peer.get() or "-",
                  "user": current_account.get() or "-", **_fields(self.request),
                  "code": status_name(error, self.context),
                  "ms": round((time.perf_counter() - self.start) * 1000, 2)})


@hookimpl(tryfirst=True)
def miniupi_server_interceptors(node: NodeConfig) -> list[grpc.aio.ServerInterceptor]:
    # First, so it is the outermost: calls refused by auth are logged too.
    return [CallLogInterceptor(node)]
