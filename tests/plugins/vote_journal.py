"""A third-party plugin, loaded through a cluster file's [plugins] load.

It writes every bank vote and every gateway decision to a file, the way
an auditing or fraud-rules package would observe 2PC.
"""
from __future__ import annotations

import pluggy

from miniupi.config import NodeConfig

hookimpl = pluggy.HookimplMarker("miniupi")


def _append(node: NodeConfig, line: str) -> None:
    with open(node.cluster.data_dir / "votes.txt", "a") as f:
        f.write(line + "\n")


@hookimpl
def miniupi_after_vote(node: NodeConfig, txn_id: str, yes: bool) -> None:
    _append(node, f"{node.name} vote {txn_id} {'yes' if yes else 'no'}")


@hookimpl
def miniupi_after_decision(node: NodeConfig, txn_id: str, decision: str) -> None:
    _append(node, f"{node.name} decision {txn_id} {decision}")
