"""A storage kind that counts what a node reads of its store before it serves: `storage = "start_reads"`.

The SQLite store underneath. When the node starts serving (miniupi_node_started),
the reads so far go as one JSON line to DATA_DIR/NODE/reads.jsonl: the tables
`load` was asked for and the rows it returned per table, and the calls of `get`
and `scan` per table. One line per start, so a test compares restarts
(tests/nodes/test_gateway_memory.py). Loaded through `[plugins] load =
["counting_storage"]` with tests/plugins on PYTHONPATH.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import pluggy

from miniupi.config import NodeConfig
from miniupi.contract.registry import Register, StorageKind
from miniupi.plugins.storage_sqlite import FILE_NAME, SqliteStore

hookimpl = pluggy.HookimplMarker("miniupi")
LOG_NAME = "reads.jsonl"

_reads: dict[str, Any] = {"load": [], "get": Counter(), "scan": Counter()}
_opened: list[NodeConfig] = []


class CountingStore(SqliteStore):
    def load(self, tables: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
        loaded = super().load(tables)
        _reads["load"].append({"tables": None if tables is None else sorted(tables),
                               "rows": {table: len(rows) for table, rows in loaded.items()}})
        return loaded

    def get(self, table: str, key: str) -> Any | None:
        _reads["get"][table] += 1
        return super().get(table, key)

    def scan(self, table: str) -> Iterator[tuple[str, Any]]:
        _reads["scan"][table] += 1
        return super().scan(table)


def open_counting(node: NodeConfig, path: Path, settings: Mapping[str, Any]) -> CountingStore:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _opened.append(node)
    return CountingStore(path / FILE_NAME)


def reads(node: NodeConfig) -> list[dict[str, Any]]:
    """Every start's reads of `node`'s store, oldest first (the test's side)."""
    log = node.data_dir / LOG_NAME
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@hookimpl
def miniupi_register_kinds(register: Register) -> None:
    register.add_storage(StorageKind("start_reads", open_counting))


@hookimpl
def miniupi_node_started(node: NodeConfig, address: str) -> None:
    if not _opened:
        return  # this node's store is another kind
    with open(node.data_dir / LOG_NAME, "a") as f:
        f.write(json.dumps({"load": _reads["load"], "get": dict(_reads["get"]),
                            "scan": dict(_reads["scan"])}) + "\n")
