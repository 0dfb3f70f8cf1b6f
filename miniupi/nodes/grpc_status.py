"""The one door where domain errors become gRPC status codes."""
from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from miniupi.errors import MiniupiError
from miniupi.validate import no_unknown_fields

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def grpc_errors(method: Handler) -> Handler:
    """Wrap a servicer method so a MiniupiError aborts the call with its code."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            no_unknown_fields(request)
            return await method(self, request, context)
        except MiniupiError as e:
            await context.abort(grpc.StatusCode[e.code], e.message)

    return wrapper  # type: ignore[return-value]


async def refuse_unknown_fields(request: Any, context: grpc.aio.ServicerContext) -> None:
    """The same check for streaming methods, which do not go through `grpc_errors`."""
    try:
        no_unknown_fields(request)
    except MiniupiError as e:
        await context.abort(grpc.StatusCode[e.code], e.message)
