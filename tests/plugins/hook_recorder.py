"""Records every hook call of every node, one line each, in DATA_DIR/hooks.txt (tests/contract/test_hooks.py).

Lines are `NODE HOOK ARG...`, appended in the order they happened: a node
writes a line before it sends what the next node reacts to, so the file's
order is the order of cause and effect across processes.
"""
from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pluggy

from miniupi.config import NodeConfig
from miniupi.contract import hookspecs

hookimpl = pluggy.HookimplMarker("miniupi")


def record(node: NodeConfig, hook: str, *args: object) -> None:
    with open(node.cluster.data_dir / "hooks.txt", "a") as f:
        f.write(" ".join([node.name, hook, *map(str, args)]) + "\n")


class MethodRecorder(grpc.aio.ServerInterceptor):
    def __init__(self, node: NodeConfig) -> None:
        self.node = node

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                handler_call_details: grpc.HandlerCallDetails) -> Any:
        record(self.node, "miniupi_server_interceptors", handler_call_details.method)
        return await continuation(handler_call_details)


@hookimpl
def miniupi_server_interceptors(node: NodeConfig) -> list[grpc.aio.ServerInterceptor]:
    return [MethodRecorder(node)]


def _recorder(name: str, spec: Callable[..., None]) -> Callable[..., None]:
    """An implementation of hook `name` that records its arguments in the order of the spec."""

    @functools.wraps(spec)  # pluggy reads the argument names through __wrapped__: the spec's own
    def record_call(node: NodeConfig, *args: object) -> None:
        record(node, name, *args)

    return hookimpl(record_call)


# Every hook whose result is None: the moments of 2PC, logins and start-up, present and future.
for _name, _spec in vars(hookspecs).items():
    if hasattr(_spec, "miniupi_spec") and _name not in {"miniupi_register_kinds", "miniupi_server_interceptors"}:
        globals()[_name] = _recorder(_name, _spec)
