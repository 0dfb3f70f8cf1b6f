"""Resident memory each settled payment costs the gateway and a bank.

    .venv/bin/python benchmarks/memory_per_payment.py --payments 30000

Nodes keep only live state in memory and read settled records from their
stores, so with SQLite this should stay near zero; a JSON store keeps its
whole state in memory, so its nodes still grow. Boots a two-bank cluster, runs a warm-up bench, then reads the gateway's and
bank_0's resident set size (VmRSS) before and after `--payments` more.
Every payment is cross-bank, so each of the two banks sees all of them.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from miniupi.ops.bench import bench_spec
from miniupi.ops.testing import LocalCluster

from bench_run import bench_json

WARM_UP_PAYMENTS = 5000  # logins, channels, caches: what the first payments allocate once


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise SystemExit(f"memory_per_payment: no VmRSS for process {pid}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--payments", type=int, default=30000)
    parser.add_argument("--storage", default="sqlite")
    args = parser.parse_args()
    with LocalCluster(Path(tempfile.mkdtemp(prefix="miniupi-memory-")), bench_spec(2, args.storage)) as cluster:
        pids = {name: cluster.supervisor.pid(name) for name in ("gateway", "bank_0")}
        load = ["--config", str(cluster.config_path), "--live", "--concurrency", "64", "--no-audit"]
        bench_json([*load, "--payments", str(WARM_UP_PAYMENTS)])
        before = {name: resident_bytes(pid) for name, pid in pids.items()}
        bench_json([*load, "--payments", str(args.payments)])
        after = {name: resident_bytes(pid) for name, pid in pids.items()}
    print(json.dumps({"payments": args.payments, "storage": args.storage, **{
        name: {"resident_mib": round(after[name] / 2**20, 1),
               "bytes_per_payment": round((after[name] - before[name]) / args.payments)} for name in pids}}))


if __name__ == "__main__":
    main()
