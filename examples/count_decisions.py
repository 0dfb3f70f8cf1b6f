"""An observer plugin: the gateway counts its decisions and logs the running totals.

Load it from a cluster file, with this folder on the nodes' PYTHONPATH:

    [plugins]
    load = ["count_decisions"]

Each decision then adds a line to the gateway's log such as
`decisions so far: 3 committed, 1 aborted`. docs/PLUGINS.md walks through it.
"""
from __future__ import annotations

from collections import Counter

import pluggy
from loguru import logger

from miniupi.config import NodeConfig

hookimpl = pluggy.HookimplMarker("miniupi")

decisions: Counter[str] = Counter()  # one node process, one counter


@hookimpl
def miniupi_node_started(node: NodeConfig, address: str) -> None:
    if node.role == "gateway":
        logger.info("count_decisions: counting the decisions of {} at {}", node.name, address)


@hookimpl
def miniupi_after_decision(node: NodeConfig, txn_id: str, decision: str) -> None:
    # Fires at the gateway once a decision is durable, so each payment is counted once.
    decisions[decision] += 1
    logger.info("decisions so far: {} committed, {} aborted", decisions["COMMITTED"], decisions["ABORTED"])
