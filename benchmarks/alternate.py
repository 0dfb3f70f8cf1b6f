"""Two commits compared fairly on a noisy machine: their runs alternate.

    .venv/bin/python benchmarks/alternate.py e5ba8e2 HEAD --runs 3 --payments 10000
    .venv/bin/python benchmarks/alternate.py e5ba8e2 HEAD --runs 3 --payments 6000 --banks 16
    .venv/bin/python benchmarks/alternate.py e5ba8e2 HEAD --runs 3 --payments 2000 --concurrency 1

Checks each commit out in a throw-away git worktree and runs
benchmarks/cpu_per_payment.py (from this checkout) against it with
PYTHONPATH, one run of each commit in turn, so a neighbour slowing the
virtual machine down slows both alike. Prints each run, then each
commit's range over its runs: the ranges in docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("payments_per_s", "p50_ms", "p99_ms", "gateway_ms", "banks_ms", "load_generator_ms", "total_ms")


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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="miniupi-alternate-") as tmp:
        trees = {}
        for i, commit in enumerate(args.commits):
            trees[commit] = Path(tmp) / f"tree{i}"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(trees[commit]), commit],
                           check=True)
        try:
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
