"""Fault injection for tests: kill or stall a node at an exact step of 2PC.

Loaded through a cluster file's `[plugins] load = ["faults"]` (with
tests/plugins on PYTHONPATH). A test arms a fault by writing
`DATA_DIR/faults.json`, a list of entries such as

    {"node": "bank_a", "point": "after_vote", "action": "kill"}
    {"node": "gateway", "point": "after_decision", "decision": "COMMITTED", "action": "kill"}
    {"node": "bank_b", "point": "before_vote", "action": "sleep", "seconds": 5}
    {"node": "gateway", "point": "before_prepare", "action": "raise"}
    {"node": "gw1", "point": "before_decision", "action": "stop"}

`point` is a hook name without `miniupi_`; `decision`, `bank`, `txn_id`,
`yes` narrow the match. Each entry fires once: it is removed from the file
before it acts, so the node supervisord restarts runs normally. "kill" is
SIGKILL to itself: no cleanup, no flush, exactly like `kill -9` at that line.
"raise" raises RaisedByFault from the hook, as a plugin with a bug would.
"stop" is SIGSTOP to itself: frozen at that line until a SIGCONT (a paused
process) or a SIGKILL (a crash at exactly that step, whenever the test likes).

Every node of a cluster shares the one file, so the read-remove-write is
done under an exclusive lock (`faults.lock`): two nodes hitting their
faults at once must not put back an entry the other just took. Each fault
that fires is appended to `faults_fired.jsonl` before it acts, so a test
can tell a crash that happened from one that was armed and never reached.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pluggy

from miniupi.config import NodeConfig

hookimpl = pluggy.HookimplMarker("miniupi")
FILE = "faults.json"
LOCK = "faults.lock"
FIRED = "faults_fired.jsonl"


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    with open(data_dir / LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel even when the holder is SIGKILLed
        yield


def _write(data_dir: Path, faults: list[dict[str, Any]]) -> None:
    if not faults:
        # No file, not an empty one: every hook call then costs one stat instead of a lock and a read.
        (data_dir / FILE).unlink(missing_ok=True)
        return
    tmp = data_dir / (FILE + ".tmp")
    tmp.write_text(json.dumps(faults))
    os.replace(tmp, data_dir / FILE)


def _read(data_dir: Path) -> list[dict[str, Any]]:
    try:
        return json.loads((data_dir / FILE).read_text())
    except FileNotFoundError:
        return []


def arm(data_dir: Path, *faults: dict[str, Any]) -> None:
    """Write the faults for the running cluster to pick up (replacing any still armed)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with _locked(data_dir):
        _write(data_dir, list(faults))


def disarm(data_dir: Path) -> list[dict[str, Any]]:
    """Remove every armed fault; returns the ones that never fired."""
    with _locked(data_dir):
        left = _read(data_dir)
        _write(data_dir, [])
    return left


def armed(data_dir: Path) -> list[dict[str, Any]]:
    with _locked(data_dir):
        return _read(data_dir)


def fired(data_dir: Path) -> list[dict[str, Any]]:
    """Every fault that fired so far, oldest first, with the node's pid and the hook's details."""
    try:
        lines = (data_dir / FIRED).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def _take(node: NodeConfig, point: str, details: dict[str, Any]) -> dict[str, Any] | None:
    """Remove and return the first armed fault matching this step, if any."""
    data_dir = node.cluster.data_dir
    with _locked(data_dir):
        faults = _read(data_dir)
        for i, fault in enumerate(faults):
            if fault.get("node") != node.name or fault.get("point") != point:
                continue
            if any(key in fault and fault[key] != value for key, value in details.items()):
                continue
            _write(data_dir, faults[:i] + faults[i + 1:])
            with open(data_dir / FIRED, "a") as log:
                # No fsync needed: the page cache outlives a SIGKILL of this process.
                log.write(json.dumps({**fault, "pid": os.getpid(), "at": time.time(), "details": details}) + "\n")
            return fault
    return None


class RaisedByFault(RuntimeError):
    """What a fault with action "raise" raises: a plugin failing inside a hook."""


def _maybe_fault(node: NodeConfig, point: str, **details: Any) -> None:
    if not (node.cluster.data_dir / FILE).exists():
        return
    fault = _take(node, point, details)
    if fault is None:
        return
    if fault["action"] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault["action"] == "sleep":
        time.sleep(fault["seconds"])  # blocks the whole node, like a stalled process
    elif fault["action"] == "raise":
        raise RaisedByFault(f"fault injected at {point} on {node.name}")
    elif fault["action"] == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)


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


@hookimpl
def miniupi_after_session_written(node: NodeConfig, account: str, change: str) -> None:
    _maybe_fault(node, "after_session_written", account=account, change=change)
