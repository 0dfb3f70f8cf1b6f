"""What watching the console costs: `miniupi bench --live` with a console page open and without, alternating.

    .venv/bin/python benchmarks/console_cost.py --pairs 3 --payments 10000

Boots one cluster (a gateway serving its metrics, two banks on SQLite, the
console, as `miniupi run` runs them) and drives it with `miniupi bench
--live`, same seed and payments every run. With the console: the console
runs and a real Chromium page (Playwright, the distribution's chromium) is
signed in on it for the whole run, so the nodes panel, the charts and the
live payments table all update. Without: the console is stopped, so nothing
polls. The sides alternate, the first of each pair taking turns, so a
neighbour slowing the machine down slows both alike. Prints each run (with
the 1-minute load average before it, and the cores the console and the
browser kept busy, and the gateway's CPU per payment, each over the whole
bench, account opening included), then each side's median and the ratio of the medians: the
figures in docs/BENCHMARKS.md. The audit runs once at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

from miniupi.ops.bench import bench_spec
from miniupi.ops.testing import LocalCluster, free_port

MINIUPI = Path(sys.executable).parent / "miniupi"
CONSOLE = "console"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pids: list[int]) -> float:
    """User and system CPU seconds of these processes and their reaped children, from /proc."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / TICKS


def browser_pids() -> list[int]:
    """Every Chromium process below this one (browser, renderers, GPU, network): Playwright gives no pid."""
    found, todo = [], [os.getpid()]
    while todo and len(found) < 4096:
        pid = todo.pop()
        try:
            children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            continue
        for child in children:
            todo.append(child)
            try:
                name = Path(f"/proc/{child}/comm").read_text()
            except OSError:
                continue
            if "chrom" in name:
                found.append(child)
    return found


def bench(cluster: LocalCluster, args: argparse.Namespace) -> dict:
    command = [str(MINIUPI), "bench", "--live", "--config", str(cluster.config.path), "--json", "--no-audit",
               "--seed", str(args.seed), "--payments", str(args.payments), "--concurrency", str(args.concurrency),
               "--accounts", str(args.accounts)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=900).stdout
    return json.loads(out.strip().splitlines()[-1])


def one_run(cluster: LocalCluster, browser: Browser, console_on: bool, args: argparse.Namespace) -> dict:
    load = os.getloadavg()[0]
    console: list[int] = []
    chromium: list[int] = []
    context = None
    if console_on:
        cluster.supervisor.control("start", CONSOLE)
        url = cluster.cli("console", "--url").stdout.strip()
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        page = context.new_page()
        page.goto(url)
        page.locator("#live").filter(has_text="live").wait_for(timeout=15_000)
        page.locator("#payments .empty").wait_for(state="attached", timeout=15_000)
        console, chromium = [cluster.supervisor.pid(CONSOLE) or 0], browser_pids()
    gateway = [cluster.supervisor.pid("gateway") or 0]
    before = cpu_s(console), cpu_s(chromium), cpu_s(gateway)
    t = time.monotonic()
    result = bench(cluster, args)
    wall = time.monotonic() - t
    used = cpu_s(console) - before[0], cpu_s(chromium) - before[1], cpu_s(gateway) - before[2]
    if context is not None:
        rows = context.pages[0].locator("#payments tbody tr").count()
        context.close()
        cluster.supervisor.control("stop", CONSOLE)
        assert rows > 0, "the page showed no payments during the bench"
    return {"console": "open" if console_on else "stopped", "payments_per_s": result["throughput_per_s"],
            "p50_ms": result["latency_ms"]["p50"], "p99_ms": result["latency_ms"]["p99"],
            "failed": result["failed"], "load_1m_before": round(load, 2),
            "gateway_cpu_ms_per_payment": round(used[2] * 1000 / max(1, result["ok"]), 3),
            "console_cores": round(used[0] / wall, 3), "browser_cores": round(used[1] / wall, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--payments", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(json.dumps({"command": " ".join(["benchmarks/console_cost.py", *sys.argv[1:]]), "commit": commit}),
          flush=True)
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("console_cost: no chromium on PATH (scripts/ensure_chromium.sh installs it)")
    spec = bench_spec(2, "sqlite")
    spec["gateway"]["metrics_port"] = free_port()  # the console's charts read it, as a watched cluster's do
    spec[CONSOLE] = {}
    rows: dict[str, list[dict]] = {"stopped": [], "open": []}
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="miniupi-console-cost-")))
        cluster = stack.enter_context(LocalCluster(root, spec))
        cluster.supervisor.control("stop", CONSOLE)
        playwright = stack.enter_context(sync_playwright())
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        stack.callback(browser.close)
        for pair in range(args.pairs):
            for console_on in ((False, True) if pair % 2 == 0 else (True, False)):
                row = one_run(cluster, browser, console_on, args)
                rows[row["console"]].append(row)
                print(json.dumps({"pair": pair + 1, **row}), flush=True)
        audit = cluster.cli("audit")
        print(json.dumps({"audit": audit.stdout.strip().splitlines()[-1:] if audit.returncode == 0 else audit.stderr}))
    medians = {side: statistics.median(r["payments_per_s"] for r in runs) for side, runs in rows.items()}
    print(json.dumps({"median_payments_per_s": medians, "ratio_open_to_stopped":
                      round(medians["open"] / medians["stopped"], 3),
                      "pair_ratios": [round(o["payments_per_s"] / s["payments_per_s"], 3)
                                      for s, o in zip(rows["stopped"], rows["open"])]}))


if __name__ == "__main__":
    main()
