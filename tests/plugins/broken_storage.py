"""A storage kind with a bug: `storage = "broken"` raises an unexpected exception on open.

Loaded through a cluster file's `[plugins] load = ["broken_storage"]` (with
tests/plugins on PYTHONPATH). It stands for any bug that stops a node
before it serves: the node must say so and not be restarted in a loop.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pluggy

from miniupi.config import NodeConfig
from miniupi.contract.registry import Register, StorageKind
from miniupi.contract.store import Store

hookimpl = pluggy.HookimplMarker("miniupi")


def open_broken(node: NodeConfig, path: Path, settings: Mapping[str, Any]) -> Store:
    raise RuntimeError("this store has a bug")


@hookimpl
def miniupi_register_kinds(register: Register) -> None:
    register.add_storage(StorageKind("broken", open_broken))
