"""Records every hook call of every node, one line each, in DATA_DIR/hooks.txt (tests/test_hooks.py).

Lines are `NODE HOOK ARG...`, appended in the order they happened: a node
writes a line before it sends what the next node reacts to, so the file's
order is the order of cause and effect across processes.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pluggy

from miniupi.config import NodeConfig

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


@hookimpl
def miniupi_node_started(node: NodeConfig, address: str) -> None:
    record(node, "miniupi_node_started", address)


@hookimpl
def miniupi_before_prepare(node: NodeConfig, txn_id: str) -> None:
    record(node, "miniupi_before_prepare", txn_id)


@hookimpl
def miniupi_before_decision(node: NodeConfig, txn_id: str, decision: str) -> None:
    record(node, "miniupi_before_decision", txn_id, decision)


@hookimpl
def miniupi_after_decision(node: NodeConfig, txn_id: str, decision: str) -> None:
    record(node, "miniupi_after_decision", txn_id, decision)


@hookimpl
def miniupi_after_decision_sent(node: NodeConfig, txn_id: str, bank: str, decision: str) -> None:
    record(node, "miniupi_after_decision_sent", txn_id, bank, decision)


@hookimpl
def miniupi_before_vote(node: NodeConfig, txn_id: str, yes: bool) -> None:
    record(node, "miniupi_before_vote", txn_id, yes)


@hookimpl
def miniupi_after_vote(node: NodeConfig, txn_id: str, yes: bool) -> None:
    record(node, "miniupi_after_vote", txn_id, yes)


@hookimpl
def miniupi_before_apply(node: NodeConfig, txn_id: str, decision: str) -> None:
    record(node, "miniupi_before_apply", txn_id, decision)


@hookimpl
def miniupi_after_apply(node: NodeConfig, txn_id: str, decision: str) -> None:
    record(node, "miniupi_after_apply", txn_id, decision)


@hookimpl
def miniupi_before_password_check(node: NodeConfig, account: str) -> None:
    record(node, "miniupi_before_password_check", account)
