"""Two commits compared fairly on a noisy machine: their runs alternate.

    .venv/bin/python benchmarks/alternate.py e5ba8e2 HEAD --runs 3 --payments 10000
    .venv/bin/python benchmarks/alternate.py e5ba8e2 HEAD --runs 3 --payments 6000 --banks 16
    .venv/bin/python benchmarks/alternate.py e5ba8e2 HEAD --runs 3 --payments 2000 --concurrency 1
    .venv/bin/python benchmarks/alternate.py f56ff22 HEAD --runs 3 --payments 5000 --replicas

Checks each commit out in a throw-away git worktree and runs
benchmarks/cpu_per_payment.py (from this checkout) against it with
PYTHONPATH, one run of each commit in turn, so a neighbour slowing the
virtual machine down slows both alike. Prints each run, then each
commit's range over its runs: the ranges in docs/BENCHMARKS.md.
--replicas runs benchmarks/replicas.py instead (SQLite, PostgreSQL, two
gateways on PostgreSQL: each run one row per setup, with the load average
before it), and gives the ranges per commit and setup.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("payments_per_s", "p50_ms", "p99_ms", "gateway_ms", "banks_ms", "load_generator_ms", "total_ms")


REPLICA_KEYS = ("payments_per_s", "p50_ms", "p99_ms", "load_average_1m")


def replicas_run(source: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One run of benchmarks/replicas.py: its rows, each with the CPU per payment flattened in."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "replicas.py"), "--repeats", "1", "--json",
         "--payments", str(args.payments), "--concurrency", str(args.concurrency)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(source)}, check=True)
    rows = json.loads(out.stdout.strip().splitlines()[-1])["runs"]
    return [{"setup": r["run"], **{k: r[k] for k in REPLICA_KEYS},
             **{f"cpu_ms_{kind}": ms for kind, ms in r["cpu_ms_per_payment"].items()}} for r in rows]


def replicas_ranges(rows: dict[str, list[dict[str, Any]]]) -> None:
    for commit, runs in rows.items():
        for setup in dict.fromkeys(r["setup"] for r in runs):
            mine = [r for r in runs if r["setup"] == setup]
            keys = [k for k in mine[0] if k != "setup"]
            print(json.dumps({"commit": commit, "setup": setup,
                              **{k: [min(r[k] for r in mine), max(r[k] for r in mine)] for k in keys}}))


def one_run(source: Path, args: argparse.Namespace) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "cpu_per_payment.py"), "--runs", "1",
         "--payments", str(args.payments), "--banks", str(args.banks), "--concurrency", str(args.concurrency)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(source)}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["median"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("commits", nargs=2, help="two commits, e.g. e5ba8e2 HEAD")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--payments", type=int, default=10000)
    parser.add_argument("--banks", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--replicas", action="store_true", help="run benchmarks/replicas.py instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="miniupi-alternate-") as tmp:
        trees = {}
        for i, commit in enumerate(args.commits):
            trees[commit] = Path(tmp) / f"tree{i}"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(trees[commit]), commit],
                           check=True)
        try:
            if args.replicas:
                setups: dict[str, list[dict[str, Any]]] = {c: [] for c in args.commits}
                for run in range(args.runs):
                    for commit, tree in trees.items():
                        for row in replicas_run(tree, args):
                            setups[commit].append(row)
                            print(json.dumps({"run": run + 1, "commit": commit, **row}), flush=True)
                replicas_ranges(setups)
                return
            rows: dict[str, list[dict[str, float]]] = {c: [] for c in args.commits}
            for run in range(args.runs):
                for commit, tree in trees.items():
                    rows[commit].append(one_run(tree, args))
                    print(json.dumps({"run": run + 1, "commit": commit, **rows[commit][-1]}), flush=True)
            for commit, runs in rows.items():
                print(json.dumps({"commit": commit, **{k: [min(r[k] for r in runs), max(r[k] for r in runs)]
                                                       for k in KEYS}}))
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


if __name__ == "__main__":
    main()
