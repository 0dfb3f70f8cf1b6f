"""The error door alone (miniupi/nodes/error_door.py), on a tiny in-process server on 127.0.0.1.

Handlers just raise; the door must turn a MiniupiError into its status with
the reason as an ErrorInfo, for unary, server-streaming and bidirectional
methods alike, and anything else into INTERNAL with one log line and no
Python internals in the answer. The running nodes are covered end to end
in tests/test_error_mapping.py.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from loguru import logger

from miniupi.errors import DOMAIN, AccountLocked, InsufficientFunds, UnknownAccount
from miniupi.nodes.error_door import ErrorDoor
from miniupi.rich_status import error_of
from miniupi.v1 import bank_pb2

pytestmark = pytest.mark.timeout(60)
SERVICE = "unit.Door"
Request, Reply = bank_pb2.AccountRequest, bank_pb2.AccountReply


class Calls:
    """What the handlers saw, to prove a refused request never reached one."""

    def __init__(self) -> None:
        self.seen: list[str] = []


def handlers(calls: Calls) -> grpc.GenericRpcHandler:
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        calls.seen.append(request.account)
        raise InsufficientFunds("insufficient funds")

    async def fine(request: Any, context: grpc.aio.ServicerContext) -> Any:
        calls.seen.append(request.account)
        return Reply(account=request.account)

    async def bug(request: Any, context: grpc.aio.ServicerContext) -> Any:
        return {}["no such key"]

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        yield Reply(account="first")
        raise UnknownAccount(f"unknown account {request.account}@bank_a")

    async def bidi(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for request in requests:
            if request.account == "locked":
                raise AccountLocked("account locked@bank_a is locked after repeated failed logins")
            yield Reply(account=request.account)

    options = {"request_deserializer": Request.FromString, "response_serializer": Reply.SerializeToString}
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, **options),
        "Fine": grpc.unary_unary_rpc_method_handler(fine, **options),
        "Bug": grpc.unary_unary_rpc_method_handler(bug, **options),
        "Stream": grpc.unary_stream_rpc_method_handler(stream, **options),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi, **options),
    })


def served(scenario: Callable[[grpc.aio.Channel, Calls], Awaitable[Any]]) -> Any:
    """Run `scenario` against a server whose only interceptor is the door."""
    async def run() -> Any:
        calls = Calls()
        server = grpc.aio.server(interceptors=[ErrorDoor("unit")])
        server.add_generic_rpc_handlers((handlers(calls),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                return await scenario(channel, calls)
        finally:
            await server.stop(None)

    return asyncio.run(run())


def reason_of(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason, read the way any gRPC client would, with grpc_status."""
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in the trailers"
    info = error_details_pb2.ErrorInfo()
    assert len(status.details) == 1 and status.details[0].Unpack(info)
    assert info.domain == DOMAIN
    return info.reason


def unary(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable:
    return channel.unary_unary(f"/{SERVICE}/{method}", request_serializer=Request.SerializeToString,
                               response_deserializer=Reply.FromString)


def test_a_unary_handler_that_raises_gets_its_code_and_reason() -> None:
    async def scenario(channel: grpc.aio.Channel, calls: Calls) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await unary(channel, "Unary")(Request(account="alice"), timeout=5)
        return refused.value

    error = served(scenario)
    assert (error.code(), error.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "insufficient funds")
    assert reason_of(error) == "INSUFFICIENT_FUNDS"
    mapped = error_of(error)
    assert type(mapped) is InsufficientFunds and mapped.message == "insufficient funds"


async def until_refused(call: AsyncIterator[Any]) -> tuple[list[str], grpc.aio.AioRpcError]:
    """The replies a stream gave before it ended with an error, and that error."""
    got: list[str] = []
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        async for reply in call:
            got.append(reply.account)
    return got, ended.value


def test_a_server_stream_that_raises_after_a_reply_ends_with_its_code_and_reason() -> None:
    async def scenario(channel: grpc.aio.Channel, calls: Calls) -> tuple[list[str], grpc.aio.AioRpcError]:
        return await until_refused(channel.unary_stream(
            f"/{SERVICE}/Stream", request_serializer=Request.SerializeToString,
            response_deserializer=Reply.FromString)(Request(account="nobody"), timeout=5))

    got, error = served(scenario)
    assert got == ["first"]
    assert error.code() == grpc.StatusCode.NOT_FOUND and reason_of(error) == "UNKNOWN_ACCOUNT"
    assert type(error_of(error)) is UnknownAccount


def test_a_bidi_stream_answers_until_a_request_is_refused_then_ends_with_its_reason() -> None:
    async def scenario(channel: grpc.aio.Channel, calls: Calls) -> tuple[list[str], grpc.aio.AioRpcError]:
        requests = [Request(account=a) for a in ("alice", "bob", "locked", "never")]
        return await until_refused(channel.stream_stream(
            f"/{SERVICE}/Bidi", request_serializer=Request.SerializeToString,
            response_deserializer=Reply.FromString)(iter(requests), timeout=5))

    got, error = served(scenario)
    assert got == ["alice", "bob"]
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and reason_of(error) == "ACCOUNT_LOCKED"
    assert type(error_of(error)) is AccountLocked


def test_an_unexpected_exception_is_internal_with_one_log_line_and_no_python_in_the_answer() -> None:
    records: list[Any] = []
    sink = logger.add(records.append, format="{message}")

    async def scenario(channel: grpc.aio.Channel, calls: Calls) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await unary(channel, "Bug")(Request(account="alice"), timeout=5)
        return failed.value

    try:
        error = served(scenario)
    finally:
        logger.remove(sink)
    assert error.code() == grpc.StatusCode.INTERNAL and reason_of(error) == "INTERNAL"
    assert "KeyError" not in error.details() and "no such key" not in error.details()
    assert "unit" in error.details()  # it says which node's log to read
    failures = [r for r in records if "/unit.Door/Bug" in r]
    assert len(failures) == 1, records
    assert failures[0].record["exception"] is not None  # the traceback is in the node's log
    assert failures[0].record["exception"].type is KeyError


@pytest.mark.parametrize("sent", [
    b"\xff\xff\xff",  # not a protobuf message
    Request(account="alice").SerializeToString() + b"\xa0\x06\x01",  # field 100, which the message lacks
])
def test_a_request_no_plugin_checked_is_refused_by_the_door_before_its_handler(sent: bytes) -> None:
    async def scenario(channel: grpc.aio.Channel, calls: Calls) -> tuple[grpc.aio.AioRpcError, list[str]]:
        raw = channel.unary_unary(f"/{SERVICE}/Fine")  # bytes in, bytes out
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await raw(sent, timeout=5)
        assert (await unary(channel, "Fine")(Request(account="bob"), timeout=5)).account == "bob"
        return refused.value, calls.seen

    error, seen = served(scenario)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and reason_of(error) == "MALFORMED_REQUEST"
    assert seen == ["bob"]  # the refused request never reached the handler
