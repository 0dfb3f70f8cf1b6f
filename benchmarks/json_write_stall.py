"""The longest write while the JSON store compacts a large snapshot in the background.

    .venv/bin/python benchmarks/json_write_stall.py --payments 1000000 --json

Seeds a JsonStore in a fresh directory with `--accounts` accounts and
`--payments` settled payments, shaped as a bank writes them
(benchmarks/json_compaction.py), and compacts them into a snapshot (about
200 MB at a million payments). Then writes a bank's batches (8 prepares, 8
commits and their accounts: 24 puts) back to back, with real fsyncs, as
the group commit's writer thread would, and times each write: first
`--baseline` writes with no compaction, then writes while a compaction of
that snapshot runs behind them, from the write that rotates the journal
until the compaction has finished. Reports the longest and the 99th
percentile write of each, how long the compaction took (what every write
used to wait for when compaction ran inside write()), the process's
resident memory (VmRSS, and its peak during the compaction, VmHWM after a
reset), and what reopening the store costs in a fresh process: time, and
resident memory after it and at its peak. With `--journal-mb N` it first
writes more batches until the journal holds N MB (a restart replays it;
the compaction rule lets it grow to the snapshot's size).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from miniupi.contract.store import Put
from miniupi.plugins.storage_json import JsonStore

from json_compaction import PER_BATCH, account, txn

SEED_PUTS = 5_000  # puts per seeding write: the seed is not what is measured


def status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    """Make VmHWM start again from the current VmRSS (Linux 4.0 and later)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def summary(times_s: list[float]) -> dict[str, float]:
    ms = [t * 1000 for t in times_s]
    return {"writes": len(ms), "longest_ms": round(max(ms), 1), "p99_ms": round(percentile(ms, 0.99), 2),
            "p50_ms": round(statistics.median(ms), 2)}


class Bank:
    """A bank's batches: each prepares 8 new payments and commits the 8 of the batch before."""

    def __init__(self, accounts: int) -> None:
        self.accounts = accounts
        self.rng = random.Random(7)
        self.previous: list[tuple[str, list[list[object]]]] = []

    def legs(self) -> list[list[object]]:
        return [[f"a{self.rng.randrange(self.accounts)}", -100, "x@bank_1"]]

    def batch(self) -> list[Put]:
        prepared = [(str(uuid.uuid4()), self.legs()) for _ in range(PER_BATCH)]
        puts = [Put("txns", i, txn("PREPARED", legs)) for i, legs in prepared]
        puts += [Put("txns", i, txn("COMMITTED", legs)) for i, legs in self.previous]
        puts += [Put("accounts", str(legs[0][0]), account(self.rng.randrange(10**9))) for _, legs in self.previous]
        self.previous = prepared
        return puts


def seed(store: JsonStore, bank: Bank, accounts: int, payments: int) -> None:
    for start in range(0, accounts, SEED_PUTS):
        store.write([Put("accounts", f"a{i}", account(10**9)) for i in range(start, min(start + SEED_PUTS, accounts))])
    for start in range(0, payments, SEED_PUTS):
        store.write([Put("txns", str(uuid.uuid4()), txn("COMMITTED", bank.legs()))
                     for _ in range(min(SEED_PUTS, payments - start))])


REOPEN = """
import json, sys, time
from pathlib import Path
from miniupi.plugins.storage_json import JsonStore
def mb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
before = mb("VmRSS")
began = time.perf_counter()
store = JsonStore(Path(sys.argv[1]))
took = time.perf_counter() - began
print(json.dumps({"reopen_s": round(took, 2), "rss_mb": round(mb("VmRSS"), 1), "peak_rss_mb": round(mb("VmHWM"), 1),
                  "rss_mb_before": round(before, 1)}))
store.close()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--payments", type=int, default=1_000_000, help="settled payments in the snapshot")
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--baseline", type=int, default=2_000, help="writes timed with no compaction running")
    parser.add_argument("--journal-mb", type=float, default=0.0, help="journal to leave for the reopen to replay")
    parser.add_argument("--dir", type=Path, default=None, help="where the store goes (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="leave the store's files behind")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="miniupi-jsonstall-"))

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    load_before = os.getloadavg()[0]
    # Thresholds out of reach: compactions happen only when asked for (compact_soon).
    store = JsonStore(directory, compact_after=10**9, journal_share=1e9)
    bank = Bank(args.accounts)
    began = time.perf_counter()
    seed(store, bank, args.accounts, args.payments)
    store.compact_soon()
    store.write(bank.batch())
    store.wait_for_compaction()
    snapshot_mb = store.snapshot_file.stat().st_size / 1e6
    say(f"seeded {args.payments} payments, a {snapshot_mb:.0f} MB snapshot, in {time.perf_counter() - began:.0f} s")

    baseline = []
    for _ in range(args.baseline):
        batch = bank.batch()
        t0 = time.perf_counter()
        store.write(batch)
        baseline.append(time.perf_counter() - t0)
    rss_before = status_mb("VmRSS")

    reset_peak()
    during: list[float] = []
    store.compact_soon()
    began = time.perf_counter()
    while True:
        batch = bank.batch()
        t0 = time.perf_counter()
        store.write(batch)
        during.append(time.perf_counter() - t0)
        if store.wait_for_compaction(0):
            break
    compaction_s = time.perf_counter() - began
    peak_during, rss_after = status_mb("VmHWM"), status_mb("VmRSS")
    assert store.compactions == 2 and store.failed_compactions == 0, (store.compactions, store.failed_compactions)
    snapshot_mb = store.snapshot_file.stat().st_size / 1e6
    say(f"compacted a {snapshot_mb:.0f} MB snapshot in {compaction_s:.1f} s behind {len(during)} writes")
    while store.journal_file.stat().st_size < args.journal_mb * 1e6:
        store.write(bank.batch())
    journal_mb = store.journal_file.stat().st_size / 1e6
    store.close()

    reopened = json.loads(subprocess.run([sys.executable, "-c", REOPEN, str(directory)], check=True,
                                         capture_output=True, text=True).stdout)
    result = {
        "payments": args.payments, "accounts": args.accounts, "snapshot_mb": round(snapshot_mb, 1),
        "compaction_s": round(compaction_s, 2),
        "during_compaction": {**summary(during), "rotating_write_ms": round(during[0] * 1000, 1)},
        "without_compaction": summary(baseline),
        "longest_write_ms": round(max(during) * 1000, 1),
        "rss_mb": {"before": round(rss_before, 1), "peak_during_compaction": round(peak_during, 1),
                   "after": round(rss_after, 1)},
        "reopen": {**reopened, "journal_mb": round(journal_mb, 1)},
        "cpus": os.cpu_count(),
        # The machine's 1-minute load average before and after: the writes share it with everything else.
        "loadavg": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    if not args.keep:
        shutil.rmtree(directory)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
