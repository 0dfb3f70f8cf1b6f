"""Where the CPU goes: milliseconds of CPU per payment for each process of a bench run.

    .venv/bin/python benchmarks/cpu_per_payment.py --payments 20000 --runs 3

Boots the same cluster `miniupi bench` boots, runs `miniupi bench --config`
against it and reads each node's CPU time from /proc before and after; the
load generator's is the bench process's own (its load processes included).
Throughput on a shared virtual machine moves with its neighbours; CPU per
payment moves much less, so this is the figure to compare changes by. Set-up
(account creation, one argon2 login per payer) is included, so longer runs
give lower, truer per-payment figures.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from miniupi.ops.bench import bench_spec
from miniupi.ops.testing import LocalCluster

from bench_run import bench_json


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def one_run(banks: int, storage: str, payments: int, concurrency: int) -> dict[str, float]:
    with LocalCluster(Path(tempfile.mkdtemp(prefix="miniupi-cpu-")), bench_spec(banks, storage)) as cluster:
        pids = {node.name: cluster.supervisor.pid(node.name) for node in cluster.config.nodes}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        load_before = os.times()
        result = bench_json(["--config", str(cluster.config_path), "--live", "--concurrency", str(concurrency),
                             "--payments", str(payments), "--no-audit"])
        load_after = os.times()
        used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    per = 1000 / result["ok"]
    load = (load_after.children_user - load_before.children_user
            + load_after.children_system - load_before.children_system)
    row = {"payments_per_s": result["throughput_per_s"], "p50_ms": result["latency_ms"]["p50"],
           "p99_ms": result["latency_ms"]["p99"],
           "gateway_ms": used["gateway"] * per,
           "banks_ms": sum(v for k, v in used.items() if k != "gateway") * per,
           "load_generator_ms": load * per}
    row["total_ms"] = row["gateway_ms"] + row["banks_ms"] + row["load_generator_ms"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--payments", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--banks", type=int, default=2)
    parser.add_argument("--storage", default="sqlite")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = [one_run(args.banks, args.storage, args.payments, args.concurrency) for _ in range(args.runs)]
    median = {k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]}
    print(json.dumps({"runs": args.runs, "payments": args.payments, "banks": args.banks, "storage": args.storage,
                      "median": median}))


if __name__ == "__main__":
    main()
