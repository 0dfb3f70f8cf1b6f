"""A fault for the offline-client tests: the gateway dies after deciding, before replying.

Loaded through a cluster file's `[plugins] load = ["crash_after_decision"]`
(with tests/plugins on PYTHONPATH). A test arms it by creating the marker
file DATA_DIR/crash-after-decision; the next decision the gateway makes
durable then ends the process on the spot. The marker is removed first, so
the gateway supervisord restarts behaves normally.
"""
from __future__ import annotations

import os

import pluggy

from miniupi.config import NodeConfig

hookimpl = pluggy.HookimplMarker("miniupi")
MARKER = "crash-after-decision"


@hookimpl
def miniupi_after_decision(node: NodeConfig, txn_id: str, decision: str) -> None:
    marker = node.cluster.data_dir / MARKER
    try:
        marker.unlink()
    except FileNotFoundError:
        return
    (node.cluster.data_dir / f"{MARKER}.fired").write_text(f"{txn_id} {decision}\n")
    os._exit(1)  # no reply, no phase 2, no cleanup: the decision is all that is on disk
