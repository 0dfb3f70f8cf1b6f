"""Domain errors on the wire: a gRPC status whose details carry a `google.rpc.ErrorInfo`.

Both sides use this module: a node's error door writes an error with
`status_of`, and a caller (the client library, or the gateway calling a
bank) reads it back with `error_of`, by the ErrorInfo's reason alone. A
status without that detail did not come from a miniupi handler: the call
failed on the way (no connection, no answer in time), and the caller
decides what that means for it.
"""
from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from miniupi.errors import DOMAIN, MiniupiError, from_status


def status_of(error: MiniupiError) -> grpc.Status:
    """The status to end a call with: the error's code and message, and its reason as an ErrorInfo."""
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN))
    code = grpc.StatusCode[error.code]
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=error.message, details=[detail]))


def error_of(failed: grpc.aio.AioRpcError | grpc.RpcError) -> MiniupiError | None:
    """The domain error a failed call carries, or None if it carries no miniupi ErrorInfo (a transport failure)."""
    try:
        status = rpc_status.from_call(failed)
    except ValueError:  # details that contradict the status: not ours
        return None
    if status is None:
        return None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Is(info.DESCRIPTOR) and detail.Unpack(info) and info.domain == DOMAIN:
            return from_status(failed.code().name, status.message, info.reason)
    return None
