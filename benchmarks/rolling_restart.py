"""Payments lost to rolling bank restarts under load.

    .venv/bin/python benchmarks/rolling_restart.py --runs 4 --restarts 6

Boots a two-bank cluster, drives `miniupi bench --config` against it at 64
payers, and once the load is running stops and starts each bank in turn
(what `miniupi restart bank_0` asks supervisord for), one restart a second.
A bank that restarts cleanly should cost payments a wait, not an abort:
prints each run's failed payments by status code and whether the bench's
audit held, then the failed payments over all runs.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from miniupi.ops.bench import bench_spec
from miniupi.ops.testing import LocalCluster

from bench_run import bench_json

WARM_UP_S = 5.0  # the load generator logs its payers in before paying


def one_run(restarts: int, payments: int, concurrency: int, storage: str) -> dict[str, Any]:
    with LocalCluster(Path(tempfile.mkdtemp(prefix="miniupi-rolling-")), bench_spec(2, storage)) as cluster:
        result: dict[str, Any] = {}
        load = threading.Thread(target=lambda: result.update(bench_json(
            ["--config", str(cluster.config_path), "--live", "--concurrency", str(concurrency), "--payments", str(payments)])))
        load.start()
        time.sleep(WARM_UP_S)
        banks = sorted(cluster.config.banks)
        for i in range(restarts):
            if not load.is_alive():
                raise SystemExit(f"rolling_restart: the load ended after {i} restarts; raise --payments")
            cluster.stop_node(banks[i % len(banks)])
            cluster.start_node(banks[i % len(banks)])
            time.sleep(1.0)
        load.join()
    return {"restarts": restarts, "ok": result["ok"], "failed": result["failed"], "errors": result.get("errors", {}),
            "audit_ok": result.get("audit_ok"), "payments_per_s": result["throughput_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--restarts", type=int, default=6)
    parser.add_argument("--payments", type=int, default=30000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--storage", default="sqlite")
    args = parser.parse_args()
    failed = []
    for _ in range(args.runs):
        row = one_run(args.restarts, args.payments, args.concurrency, args.storage)
        print(json.dumps(row), flush=True)
        failed.append(row["failed"])
    print(json.dumps({"runs": args.runs, "restarts_per_run": args.restarts, "failed_per_run": failed}))


if __name__ == "__main__":
    main()
