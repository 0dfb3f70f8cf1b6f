"""Every figure in docs/BENCHMARKS.md, run one after another on this machine.

    .venv/bin/python benchmarks/figures.py > /tmp/figures.md

Each line runs `miniupi bench ... --json` (or benchmarks/echo.py) in a fresh
throw-away cluster and prints one markdown table row with the command, so
each figure can be re-run on its own. Seeds are fixed.
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench_run import bench_json

ROOT = Path(__file__).resolve().parent.parent
HEADLINE_REPEATS = 3  # the first row, run this many times: this virtual machine's spread is wide
RUNS = [
    ("closed loop, 64 payers, sqlite", ["--concurrency", "64", "--payments", "10000"]),
    ("closed loop, 64 payers, json", ["--concurrency", "64", "--payments", "10000", "--storage", "json"]),
    ("sequential, 1 payer, sqlite", ["--concurrency", "1", "--payments", "1000"]),
    ("open loop, 500/s for 10 s, sqlite", ["--rate", "500", "--duration", "10", "--concurrency", "64"]),
    ("100,000 accounts per bank, sqlite", ["--concurrency", "64", "--payments", "10000", "--accounts", "100000"]),
    ("100,000 accounts per bank, json", ["--concurrency", "64", "--payments", "10000", "--accounts", "100000",
                                         "--storage", "json"]),
    ("500,000 accounts per bank (1,000,000 in all), sqlite",
     ["--concurrency", "64", "--payments", "10000", "--accounts", "500000"]),
    ("16 banks, sqlite", ["--concurrency", "64", "--payments", "10000", "--banks", "16"]),
    ("16 banks, json", ["--concurrency", "64", "--payments", "10000", "--banks", "16", "--storage", "json"]),
]
ECHO = [
    ("raw gRPC echo over mTLS, 64 callers", ["--concurrency", "64", "--calls", "20000"]),
    ("raw gRPC echo over mTLS, 1 caller", ["--concurrency", "1", "--calls", "3000"]),
]


def main() -> None:
    print(f"<!-- {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, "
          f"python {platform.python_version()} -->")
    print("| run | payments/s | ok / failed | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | audit | command |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    headline = [(f"{RUNS[0][0]} (run {i + 1} of {HEADLINE_REPEATS})", RUNS[0][1]) for i in range(HEADLINE_REPEATS)]
    for name, args in headline + RUNS[1:]:
        r = bench_json([*args, "--seed", "7"])
        lat = r["latency_ms"]
        print(f"| {name} | {r['throughput_per_s']:.0f} | {r['ok']} / {r['failed']} | {lat['p50']:.2f} | "
              f"{lat['p90']:.2f} | {lat['p99']:.2f} | {lat['p999']:.2f} | {lat['max']:.2f} | "
              f"{'ok' if r.get('audit_ok') else 'FAILED'} | `miniupi bench {' '.join(args)} --seed 7` |", flush=True)
    print()
    print("| transport | calls/s | p50 ms | p99 ms | command |")
    print("| --- | --- | --- | --- | --- |")
    for name, args in ECHO:
        out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "echo.py"), *args], capture_output=True,
                             text=True, check=True)
        r = json.loads(out.stdout)
        print(f"| {name} | {r['calls_per_s']:.0f} | {r['latency_ms']['p50']:.3f} | {r['latency_ms']['p99']:.3f} | "
              f"`python benchmarks/echo.py {' '.join(args)}` |", flush=True)


if __name__ == "__main__":
    main()
