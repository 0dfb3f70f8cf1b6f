"""Running plugin code around a gRPC call, inside the call's own task.

grpc.aio interceptors see only the method name and metadata; to check a
peer certificate, time a call or learn its status they must wrap the
handler itself. `wrap_handler` does that once for unary, server-streaming
and bidirectional methods, so plugins write only what happens around.
miniupi's bidirectional methods answer each request with one reply before
reading the next, so each request and its reply are one call to `around`:
checked, timed and logged like a unary call. Checks refuse by raising a
MiniupiError, which the node's error door turns into the call's status.

Interceptors run for every call, so the wrapping is remembered: the
same handler and the same `around` give back the same wrapped handler,
and an interceptor that keeps one `around` per method pays for the
wrapping once per method, not once per call.
"""
from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc
from google.protobuf.message import Message

from miniupi.errors import MalformedRequest, MiniupiError
from miniupi.validate import no_unknown_fields

Around = Callable[[Any, grpc.aio.ServicerContext], AbstractAsyncContextManager[Any]]


class Malformed:
    """Stands in for a request this node will not act on: bytes that are not the method's
    message, or a message with fields this version does not know.

    gRPC would answer a failed parse with UNKNOWN; a caller's bad bytes are
    their mistake, so the wrapped handler raises `error` (MALFORMED_REQUEST)
    inside every `around`, and the call is refused and logged like any other.
    `parsed` is the message when it parsed, for the call log's fields.
    """

    __slots__ = ("error", "parsed")

    def __init__(self, error: MiniupiError, parsed: Message | None = None) -> None:
        self.error, self.parsed = error, parsed


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """A parser that never raises; already tolerant stays as it is, so each request is checked once."""
    if deserialize is None or getattr(deserialize, "tolerant", False):
        return deserialize

    def parse(data: bytes) -> Any:
        try:
            message = deserialize(data)
        except Exception:
            return Malformed(MalformedRequest("request is not a valid protobuf message"))
        try:
            no_unknown_fields(message)  # money must never move on a half-understood request
        except MalformedRequest as e:
            return Malformed(e, message)
        return message

    parse.tolerant = True  # type: ignore[attr-defined]
    return parse


def is_tolerant(handler: grpc.RpcMethodHandler) -> bool:
    """Whether the handler's requests are already checked by `wrap_handler`."""
    return bool(getattr(handler.request_deserializer, "tolerant", False))


def _refuse_malformed(request: Any) -> None:
    if isinstance(request, Malformed):
        raise request.error


class CheckFirst:
    """An `around` that only awaits `check(context)` before the call; the check raises a MiniupiError to refuse."""

    __slots__ = ("check",)

    def __init__(self, check: Callable[[grpc.aio.ServicerContext], Awaitable[Any]]) -> None:
        self.check = check

    def __call__(self, request: Any, context: grpc.aio.ServicerContext) -> _Checking:
        return _Checking(self.check, context)


class _Checking:
    __slots__ = ("check", "context")

    def __init__(self, check: Callable[[grpc.aio.ServicerContext], Awaitable[Any]],
                 context: grpc.aio.ServicerContext) -> None:
        self.check, self.context = check, context

    async def __aenter__(self) -> None:
        await self.check(self.context)

    async def __aexit__(self, *exc_info: object) -> None:
        return None


@functools.lru_cache(maxsize=1024)
def wrap_handler(handler: grpc.RpcMethodHandler, around: Around) -> grpc.RpcMethodHandler:
    """The same method, with every call run inside `around(request, context)`."""
    if handler.unary_unary is not None:
        inner = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with around(request, context):
                _refuse_malformed(request)
                return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer)
    if handler.unary_stream is not None:
        inner_stream = handler.unary_stream

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with around(request, context):
                _refuse_malformed(request)
                async for reply in inner_stream(request, context):
                    yield reply

        return grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer)
    if handler.stream_stream is not None:
        inner_bidi = handler.stream_stream

        async def bidi(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            entered: list[AbstractAsyncContextManager[Any]] = []  # the request being answered

            async def each_request() -> AsyncIterator[Any]:
                async for request in requests:
                    call = around(request, context)
                    await call.__aenter__()
                    entered.append(call)
                    _refuse_malformed(request)
                    yield request

            try:
                async for reply in inner_bidi(each_request(), context):
                    yield reply
                    if entered:
                        await entered.pop().__aexit__(None, None, None)
            except BaseException as e:
                while entered:
                    await entered.pop().__aexit__(type(e), e, e.__traceback__)
                raise

        return grpc.stream_stream_rpc_method_handler(
            bidi, request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer)
    raise TypeError("miniupi serves no client-streaming methods")


class MethodInterceptor(grpc.aio.ServerInterceptor):
    """Runs an `around` of its own on the methods it picks: `around_for` is asked once per method, so
    wrap_handler's cache serves every later call of it without wrapping anew."""

    def __init__(self) -> None:
        self._arounds: dict[str, Around | None] = {}

    def around_for(self, method: str) -> Around | None:
        """The `around` for calls of `method` (its full name, /package.Service/Method); None leaves them alone."""
        raise NotImplementedError

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        try:
            around = self._arounds[details.method]
        except KeyError:
            around = self._arounds[details.method] = self.around_for(details.method)
        return handler if around is None else wrap_handler(handler, around)
