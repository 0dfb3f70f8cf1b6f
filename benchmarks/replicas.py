"""One gateway on SQLite, one on PostgreSQL, two sharing PostgreSQL: back to back, CPU per payment of each.

    .venv/bin/python benchmarks/replicas.py --payments 10000 --repeats 2 [--json]

Runs `miniupi bench` three times in a row, each on a throw-away cluster of
two banks on SQLite (so the rows differ only in the gateways' store and
their number), with the same seed and concurrency, and prints one table:
payments/s, p50, p99, CPU per payment by process kind (gateways, banks,
PostgreSQL with its backends, the load), and the machine's 1-minute load
average before each run. --repeats runs the three again, in the same order.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from bench_run import bench_json

SETUPS: tuple[tuple[str, list[str]], ...] = (
    ("sqlite, 1 gateway", ["--storage", "sqlite"]),
    ("postgres, 1 gateway", ["--storage", "postgres", "--bank-storage", "sqlite"]),
    ("postgres, 2 gateways", ["--storage", "postgres", "--bank-storage", "sqlite", "--gateways", "2"]),
)
KINDS = ("gateways", "banks", "postgres", "load", "all")


def one_run(name: str, options: list[str], payments: int, concurrency: int, seed: int) -> dict[str, Any]:
    args = [*options, "--payments", str(payments), "--concurrency", str(concurrency), "--seed", str(seed)]
    load_before = os.getloadavg()[0]
    result = bench_json(args)
    if not result.get("audit_ok"):
        raise SystemExit(f"{name}: the audit failed: {result.get('audit_violations')}")
    cpu = result["cpu"]["ms_per_payment"]
    return {"run": name, "command": "miniupi bench " + " ".join(args), "load_average_1m": round(load_before, 2),
            "payments_per_s": result["throughput_per_s"], "ok": result["ok"], "failed": result["failed"],
            "p50_ms": result["latency_ms"]["p50"], "p99_ms": result["latency_ms"]["p99"],
            "cpu_ms_per_payment": {kind: cpu.get(kind, 0.0) for kind in KINDS},
            "cores_busy": result["cpu"]["cores_busy"], "postgres": result.get("postgres")}


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| run | load avg before | payments/s | p50 ms | p99 ms | CPU ms/payment: gateways | banks "
             "| postgres | load | all | cores busy | PostgreSQL commits / WAL syncs per payment |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cpu, pg = r["cpu_ms_per_payment"], r["postgres"]
        lines.append(f"| {r['run']} | {r['load_average_1m']:.2f} | {r['payments_per_s']:.0f} | {r['p50_ms']:.1f} "
                     f"| {r['p99_ms']:.1f} | " + " | ".join(f"{cpu[k]:.2f}" for k in KINDS)
                     + f" | {r['cores_busy']:.2f} | "
                     + (f"{pg['commits_per_payment']:.2f} / {pg['wal_syncs_per_payment']:.2f}" if pg else "-") + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--payments", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=1, help="run the three setups this many times, in order")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of the table")
    args = parser.parse_args()
    rows = []
    for repeat in range(args.repeats):
        for name, options in SETUPS:
            print(f"replicas: {name} (round {repeat + 1} of {args.repeats})", file=sys.stderr)
            rows.append(one_run(name, options, args.payments, args.concurrency, args.seed))
    command = " ".join(["benchmarks/replicas.py", *sys.argv[1:]])
    if args.json:
        print(json.dumps({"command": command, "cpus": os.cpu_count(), "runs": rows}))
    else:
        print(f"{command}: seed {args.seed}, concurrency {args.concurrency}, {os.cpu_count()} CPUs")
        print(markdown(rows))


if __name__ == "__main__":
    main()
