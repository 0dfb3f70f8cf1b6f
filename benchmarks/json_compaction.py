"""What the JSON store's compaction costs as a node's state grows.

    .venv/bin/python benchmarks/json_compaction.py --accounts 100000 --batches 150000

Writes a bank's batches straight to a JsonStore in a fresh directory, as a
bank under load does: each batch prepares 8 new payments and commits the
8 of the batch before, with their accounts (24 puts). Every payment stays
in the state, as it does at a node, so the snapshot grows all the time.
Prints one JSON line per window of batches: the process's CPU per batch
(the compaction thread's included), its longest write and the compactions
finished in it; then the totals, with the time to reopen the store at the
end (a restart replays the journal, which the rule lets grow to the
snapshot's size). Real files and real fsyncs, as at a node. Compactions run
behind the writes: benchmarks/json_write_stall.py measures what a write
waits for meanwhile.
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import uuid
from pathlib import Path

from miniupi.plugins.storage_json import JsonStore
from miniupi.contract.store import Put

PER_BATCH = 8
HASH = "$argon2id$v=19$m=19456,t=2,p=1$" + "s" * 22 + "$" + "h" * 43


def account(balance: int) -> dict[str, object]:
    return {"balance": balance, "password_hash": HASH, "opened_at": 1.7e9, "opening": 10**9,
            "failed_logins": 0, "locked_until": 0.0}


def txn(state: str, legs: list[list[object]]) -> dict[str, object]:
    return {"state": state, "legs": legs, "prepared_at": 1.7e9, "decided_at": None if state == "PREPARED" else 1.7e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--batches", type=int, default=150_000)
    parser.add_argument("--window", type=int, default=10_000)
    args = parser.parse_args()
    rng = random.Random(7)
    store = JsonStore(Path(tempfile.mkdtemp(prefix="miniupi-jsoncompact-")))
    for start in range(0, args.accounts, 5000):
        store.write([Put("accounts", f"a{i}", account(10**9)) for i in range(start, min(start + 5000, args.accounts))])
    previous: list[tuple[str, list[list[object]]]] = []
    totals = {"batches": 0, "compactions": 0, "cpu_s": 0.0, "longest_write_ms": 0.0}
    window = {"cpu_s": 0.0, "longest_write_ms": 0.0, "compactions": 0}
    # The store's CPU: the whole process's, the compaction thread's included, less
    # what this thread spends making batches.
    window_began, making = time.process_time(), 0.0
    for n in range(1, args.batches + 1):
        made = time.thread_time()
        prepared = [(str(uuid.uuid4()), [[f"a{rng.randrange(args.accounts)}", -100, "x@bank_1"]])
                    for _ in range(PER_BATCH)]
        batch = [Put("txns", i, txn("PREPARED", legs)) for i, legs in prepared]
        batch += [Put("txns", i, txn("COMMITTED", legs)) for i, legs in previous]
        batch += [Put("accounts", str(legs[0][0]), account(rng.randrange(10**9))) for _, legs in previous]
        previous = prepared
        making += time.thread_time() - made
        compactions = store.compactions
        wall = time.perf_counter()
        store.write(batch)
        window["longest_write_ms"] = max(window["longest_write_ms"], (time.perf_counter() - wall) * 1000)
        window["compactions"] += store.compactions - compactions
        if n % args.window == 0 or n == args.batches:
            window["cpu_s"] = time.process_time() - window_began - making
            in_window = (n - 1) % args.window + 1
            size = store.snapshot_file.stat().st_size if store.snapshot_file.exists() else 0
            print(json.dumps({"batches": n, "payments_in_state": n * PER_BATCH, "snapshot_mb": round(size / 1e6, 1),
                              "cpu_ms_per_batch": round(window["cpu_s"] / in_window * 1000, 3),
                              "longest_write_ms": round(window["longest_write_ms"], 1),
                              "compactions": window["compactions"]}), flush=True)
            totals["compactions"] += window["compactions"]
            totals["cpu_s"] += window["cpu_s"]
            totals["longest_write_ms"] = max(totals["longest_write_ms"], window["longest_write_ms"])
            window = {"cpu_s": 0.0, "longest_write_ms": 0.0, "compactions": 0}
            window_began, making = time.process_time(), 0.0
    totals["batches"] = args.batches
    store.close()
    wall = time.perf_counter()
    JsonStore(store.directory).close()
    print(json.dumps({"accounts": args.accounts, **totals, "cpu_s": round(totals["cpu_s"], 1),
                      "longest_write_ms": round(totals["longest_write_ms"], 1),
                      "journal_mb": round(store.journal_file.stat().st_size / 1e6, 1),
                      "reopen_s": round(time.perf_counter() - wall, 2)}))


if __name__ == "__main__":
    main()
