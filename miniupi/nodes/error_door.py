"""The one door errors leave a node by; serve() installs it outermost on every node.

Servicers, auth checks, caller checks and plugins' interceptors refuse by
raising a MiniupiError (miniupi/errors.py). The door turns it into the
call's status, with its reason as an ErrorInfo (miniupi/rich_status.py),
for unary, server-streaming and bidirectional methods alike. Anything else
is a fault of the node, not the caller's: one log line with its traceback,
and INTERNAL with a message that shows no Python internals.

The door also makes sure every request to a miniupi method is checked
(it parses, and has no unknown fields) even if no plugin wraps the method.
Health and reflection, gRPC's own services, pass untouched.
"""
from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from loguru import logger

from miniupi.contract.interceptors import is_tolerant, wrap_handler
from miniupi.errors import Internal, MiniupiError
from miniupi.nodes.callers import ALWAYS_OPEN_PREFIXES
from miniupi.rich_status import status_of

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


def status_name(error: BaseException | None, context: grpc.aio.ServicerContext) -> str:
    """The status code a call leaving with `error` ends with, once it has passed the door.

    For an interceptor inside the door, such as the call log, that sees the
    error before the door has set the status.
    """
    if error is None:
        return "OK"
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):  # the caller gave up, or the node is stopping
        return "CANCELLED"
    if isinstance(error, MiniupiError):
        return error.code
    if isinstance(error, grpc.aio.AbortError):  # someone set the status already with context.abort
        code = context.code()
        return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    return Internal.code


class ErrorDoor(grpc.aio.ServerInterceptor):
    """Every call's exceptions become its status; see the module's docstring."""

    def __init__(self, node: str) -> None:
        self.node = node

    async def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.startswith(ALWAYS_OPEN_PREFIXES):  # gRPC's own services
            return handler
        if not is_tolerant(handler):  # no plugin wrapped it: check its requests here
            handler = wrap_handler(handler, _nothing)
        return _guarded(handler, details.method, self.node)


class _Nothing:
    """An `around` that does nothing: wrap_handler's request checks alone."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc_info: object) -> None:
        return None


_NOTHING = _Nothing()


def _nothing(request: Any, context: grpc.aio.ServicerContext) -> _Nothing:
    return _NOTHING


async def _refuse(context: grpc.aio.ServicerContext, error: Exception, method: str, node: str) -> None:
    """End the call with `error`'s status; raises AbortError, as context.abort does."""
    if not isinstance(error, MiniupiError):
        logger.opt(exception=error).error("{} failed on {}: {!r}", method, node, error)
        error = Internal(f"internal error at {node}; its log has the details")
    status = status_of(error)
    await context.abort(status.code, status.details, status.trailing_metadata)


@functools.lru_cache(maxsize=1024)
def _guarded(handler: grpc.RpcMethodHandler, method: str, node: str) -> grpc.RpcMethodHandler:
    """The same method, with every exception it raises turned into its status."""
    passed = (grpc.aio.AbortError,)  # the status is set already
    if handler.unary_unary is not None:
        inner = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await inner(request, context)
            except passed:
                raise
            except Exception as e:
                await _refuse(context, e, method, node)

        return grpc.unary_unary_rpc_method_handler(unary, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)
    streaming = handler.unary_stream or handler.stream_stream
    if streaming is not None:
        inner_stream = streaming

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            """For both streaming kinds: `request` is one request, or the iterator of them."""
            try:
                async for reply in inner_stream(request, context):
                    yield reply
            except passed:
                raise
            except Exception as e:
                await _refuse(context, e, method, node)

        make = (grpc.unary_stream_rpc_method_handler if handler.unary_stream is not None
                else grpc.stream_stream_rpc_method_handler)
        return make(stream, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)
    raise TypeError("miniupi serves no client-streaming methods")
