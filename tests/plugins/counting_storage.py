"""Storage kinds that log every read: `storage = "counting"`, the real SQLite or JSON store underneath.

    [banks.bank_a]
    storage = "counting"
    [banks.bank_a.counting]
    inner = "json"          # default "sqlite"

Loaded through a cluster file's `[plugins] load = ["counting_storage"]` (with
tests/plugins on PYTHONPATH). Each open appends "open" to `reads.log` in the
node's data directory, then each read one line: "load accounts,in_doubt,meta"
(sorted; "load *" for every table), "get TABLE KEY", "scan TABLE". Writes go
through unchanged and unlogged. So a test reads what a node asked of its
store since its last start: tests/nodes/test_history_off_heap.py checks that a
restart reads only what is live.
"""
from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pluggy

from miniupi.config import NodeConfig
from miniupi.contract.registry import Register, Setting, StorageKind
from miniupi.contract.store import Put, Store
from miniupi.plugins import storage_json, storage_sqlite

hookimpl = pluggy.HookimplMarker("miniupi")

LOG_NAME = "reads.log"


class CountingStore:
    def __init__(self, inner: Store, log: Path) -> None:
        self.inner = inner
        self._log = open(log, "a", buffering=1, encoding="utf-8")  # a line at a time: the test reads it live
        self._note("open")

    def _note(self, *words: str) -> None:
        self._log.write(" ".join(words) + "\n")

    def load(self, tables: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
        self._note("load", "*" if tables is None else ",".join(sorted(tables)))
        return self.inner.load(tables)

    def get(self, table: str, key: str) -> Any | None:
        self._note("get", table, key)
        return self.inner.get(table, key)

    def scan(self, table: str) -> Iterator[tuple[str, Any]]:
        self._note("scan", table)
        return self.inner.scan(table)

    def write(self, batch: Sequence[Put]) -> None:
        self.inner.write(batch)

    def close(self) -> None:
        self.inner.close()
        self._log.close()


def open_counting(node: NodeConfig, path: Path, settings: Mapping[str, Any]) -> Store:
    register = Register()  # the real kind, as its own plugin registers it, with its default settings
    (storage_sqlite if settings["inner"] == "sqlite" else storage_json).miniupi_register_kinds(register)
    kind = register.storage[settings["inner"]]
    inner = kind.open(node, path, {s.name: s.default for s in kind.settings})
    return CountingStore(inner, path / LOG_NAME)


def reads(data_dir: Path) -> list[str]:
    """What the node read from its store since it last opened it."""
    lines = (data_dir / LOG_NAME).read_text(encoding="utf-8").splitlines()
    return lines[len(lines) - lines[::-1].index("open"):]


@hookimpl
def miniupi_register_kinds(register: Register) -> None:
    register.add_storage(StorageKind("counting", open_counting, settings=(
        Setting("inner", "sqlite", '"sqlite" or "json"', lambda v: v in ("sqlite", "json")),)))
