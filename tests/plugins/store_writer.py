"""The child process of test_store_crash.py: writes numbered batches until it is killed.

    python tests/plugins/store_writer.py KIND DIRECTORY START ACKS COMPACT_AFTER [STEP NTH]

Opens the store (KIND "sqlite" or "json") in DIRECTORY, checks that it holds
the state after batch START - 1, prints "ready", then writes batch(START),
batch(START + 1), ... in a tight loop. After each write() returns it appends
the batch number to the file ACKS (one unsynced write: a killed process's
page cache survives, so the parent reads every acknowledgement made).
With STEP and NTH (JSON only), it kills itself with SIGKILL the NTH time
its store reaches that step of a rotation or compaction (storage_json.STEPS),
from whichever thread takes the step, after printing "killed at STEP".

The batches live here, not in the test file, so that parent and child share
one model without the child paying for importing pytest on every restart.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from miniupi.contract.store import Put, Store

ACCOUNTS = 6
BIG_KEYS = 48
RUN_AT_MOST_S = 20.0  # the parent kills it long before; this only bounds an orphan

Tables = dict[str, dict[str, Any]]


def batch(i: int) -> list[Put]:
    """Batch number i (from 1): several tables, and deletes, all a function of i.

    Every batch sets meta/n = i and touches keys that only it can give these
    values, so a loaded state pins down the batch it ends at, and any batch
    applied only in part shows as a state no prefix of batches produces.
    """
    puts = [
        Put("meta", "n", i),
        Put("acct", f"a{i % ACCOUNTS}", {"paise": 1000 * i + 1, "last": i}),
        Put("acct", f"a{(5 * i + 2) % ACCOUNTS}", {"paise": 1000 * i + 2, "last": i}),
        Put("txn", f"t{i}", {"i": i, "state": "APPLIED", "note": "₹" * (i % 5)}),
        # A few hundred bytes per key keep the snapshot tens of kB, so that
        # compaction takes a real share of the time the kills land in.
        Put("big", f"k{i % BIG_KEYS}", f"{i}:" + "x" * (200 + i % 97)),
    ]
    if i > 3:
        puts.append(Put("txn", f"t{i - 3}", None))  # txn keeps the last three
    if i % 7 == 0:
        puts.append(Put("acct", f"a{(i // 7) % ACCOUNTS}", None))
    if i % 11 == 0:
        puts.append(Put("flag", "eleven", i))  # a table that comes ...
    if i % 11 == 3:
        puts.append(Put("flag", "eleven", None))  # ... and goes again
    return puts


def apply(tables: Tables, puts: list[Put]) -> None:
    """Apply puts in order, as a store must; an emptied table is no table."""
    for table, key, value in puts:
        if value is None:
            rows = tables.get(table, {})
            rows.pop(key, None)
            if not rows:
                tables.pop(table, None)
        else:
            tables.setdefault(table, {})[key] = value


def open_store(kind: str, directory: Path, compact_after: int,
               on_step: Callable[[str], None] | None = None) -> Store:
    if kind == "sqlite":
        from miniupi.plugins.storage_sqlite import FILE_NAME, SqliteStore

        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return SqliteStore(directory / FILE_NAME)
    if kind == "json":
        from miniupi.plugins.storage_json import JsonStore

        # journal_share=0: compact every compact_after batches whatever the
        # snapshot's size, so that kills keep landing inside compaction.
        return JsonStore(directory, compact_after=compact_after, journal_share=0.0, on_step=on_step)
    raise ValueError(f"unknown store kind {kind!r}")


def kill_at(step: str, nth: int) -> Callable[[str], None]:
    reached = 0

    def on_step(name: str) -> None:
        nonlocal reached
        if name == step:
            reached += 1
            if reached == nth:
                os.write(1, f"killed at {step}\n".encode())
                os.kill(os.getpid(), signal.SIGKILL)

    return on_step


def main(argv: list[str]) -> int:
    kind, directory, start_arg, acks, compact_after, *step_nth = argv
    start = int(start_arg)
    os.write(1, b"opening\n")
    on_step = kill_at(step_nth[0], int(step_nth[1])) if step_nth else None
    store = open_store(kind, Path(directory), int(compact_after), on_step)
    n = store.load().get("meta", {}).get("n", 0)
    if n != start - 1:
        os.write(2, f"store holds batch {n}, expected {start - 1}\n".encode())
        return 3
    fd = os.open(acks, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.write(1, b"ready\n")
    deadline = time.monotonic() + RUN_AT_MOST_S
    i = start
    while time.monotonic() < deadline:
        store.write(batch(i))
        os.write(fd, b"%d\n" % i)
        i += 1
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
