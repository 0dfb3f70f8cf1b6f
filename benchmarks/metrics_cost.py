"""What serving metrics costs: `miniupi bench` without and with `--metrics`, runs alternating.

    .venv/bin/python benchmarks/metrics_cost.py --runs 3 --payments 10000

The metrics plugin is loaded on every node either way; with `--metrics`
every node also has a metrics port, so its hooks count and time each
payment. Alternating the runs makes a neighbour slowing the virtual machine
down slow both alike; the gateway's CPU time per payment, read from /proc by
the bench itself, moves less with neighbours than payments/s do. Prints
each run, then each side's range: the figures in docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MINIUPI = Path(sys.executable).parent / "miniupi"


def one_run(metrics: bool, args: argparse.Namespace) -> dict[str, float]:
    command = [str(MINIUPI), "bench", "--json", "--no-audit", "--seed", str(args.seed), "--payments",
               str(args.payments), "--concurrency", str(args.concurrency), *(["--metrics"] if metrics else [])]
    result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT,
                                       timeout=900).stdout.strip().splitlines()[-1])
    cpu = result["cpu"]["ms_per_payment"]
    return {"payments_per_s": result["throughput_per_s"], "p50_ms": result["latency_ms"]["p50"],
            "p99_ms": result["latency_ms"]["p99"], "gateway_cpu_ms": cpu["gateways"], "banks_cpu_ms": cpu["banks"],
            "load_1m": result["load_average_1m"]["before"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--payments", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(json.dumps({"command": " ".join(["benchmarks/metrics_cost.py", *sys.argv[1:]])}), flush=True)
    rows: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    for run in range(args.runs):
        for side in rows:
            rows[side].append(one_run(side == "on", args))
            print(json.dumps({"run": run + 1, "metrics": side, **rows[side][-1]}), flush=True)
    for side, runs in rows.items():
        print(json.dumps({"metrics": side, **{k: [min(r[k] for r in runs), max(r[k] for r in runs)]
                                              for k in runs[0]}}))


if __name__ == "__main__":
    main()
