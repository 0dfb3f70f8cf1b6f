"""Fault injection for tests: kill or stall a node at an exact step of 2PC.

Loaded through a cluster file's `[plugins] load = ["faults"]` (with
tests/plugins on PYTHONPATH). A test arms a fault by writing
`DATA_DIR/faults.json`, a list of entries such as

    {"node": "bank_a", "point": "after_vote", "action": "kill"}
    {"node": "gateway", "point": "after_decision", "decision": "COMMITTED", "action": "kill"}
    {"node": "bank_b", "point": "before_vote", "action": "sleep", "seconds": 5}

`point` is a hook name without `miniupi_`; `decision`, `bank`, `txn_id`
narrow the match. Each entry fires once: it is removed from the file before
it acts, so the node supervisord restarts runs normally. "kill" is SIGKILL
to itself: no cleanup, no flush, exactly like `kill -9` at that line.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pluggy

from miniupi.config import NodeConfig

hookimpl = pluggy.HookimplMarker("miniupi")
FILE = "faults.json"


def arm(data_dir: Path, *faults: dict[str, Any]) -> None:
    """Write the faults for the running cluster to pick up."""
    tmp = data_dir / (FILE + ".tmp")
    tmp.write_text(json.dumps(list(faults)))
    os.replace(tmp, data_dir / FILE)


def armed(data_dir: Path) -> list[dict[str, Any]]:
    try:
        return json.loads((data_dir / FILE).read_text())
    except FileNotFoundError:
        return []


def _maybe_fault(node: NodeConfig, point: str, **details: Any) -> None:
    path = node.cluster.data_dir / FILE
    if not path.exists():
        return
    faults = armed(node.cluster.data_dir)
    for i, fault in enumerate(faults):
        if fault.get("node") != node.name or fault.get("point") != point:
            continue
        if any(key in fault and fault[key] != value for key, value in details.items()):
            continue
        arm(node.cluster.data_dir, *(faults[:i] + faults[i + 1:]))
        if fault["action"] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif fault["action"] == "sleep":
            time.sleep(fault["seconds"])  # blocks the whole node, like a stalled process
        return


@hookimpl
def miniupi_before_prepare(node: NodeConfig, txn_id: str) -> None:
    _maybe_fault(node, "before_prepare", txn_id=txn_id)


@hookimpl
def miniupi_before_decision(node: NodeConfig, txn_id: str, decision: str) -> None:
    _maybe_fault(node, "before_decision", txn_id=txn_id, decision=decision)


@hookimpl
def miniupi_after_decision(node: NodeConfig, txn_id: str, decision: str) -> None:
    _maybe_fault(node, "after_decision", txn_id=txn_id, decision=decision)


@hookimpl
def miniupi_after_decision_sent(node: NodeConfig, txn_id: str, bank: str, decision: str) -> None:
    _maybe_fault(node, "after_decision_sent", txn_id=txn_id, bank=bank, decision=decision)


@hookimpl
def miniupi_before_vote(node: NodeConfig, txn_id: str, yes: bool) -> None:
    _maybe_fault(node, "before_vote", txn_id=txn_id, yes=yes)


@hookimpl
def miniupi_after_vote(node: NodeConfig, txn_id: str, yes: bool) -> None:
    _maybe_fault(node, "after_vote", txn_id=txn_id, yes=yes)


@hookimpl
def miniupi_before_apply(node: NodeConfig, txn_id: str, decision: str) -> None:
    _maybe_fault(node, "before_apply", txn_id=txn_id, decision=decision)


@hookimpl
def miniupi_after_apply(node: NodeConfig, txn_id: str, decision: str) -> None:
    _maybe_fault(node, "after_apply", txn_id=txn_id, decision=decision)
