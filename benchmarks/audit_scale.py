"""Wall time and peak memory of `miniupi audit` on a cluster that holds N settled payments.

    .venv/bin/python benchmarks/audit_scale.py --payments 1000000 --root /tmp/audit-1m --json

Seeds N settled payments into the fresh SQLite stores of a gateway and two
banks, exactly as benchmarks/history_scale.py does (skipped when `--root`
already holds a cluster seeded with N), starts the cluster, then runs
`miniupi audit --json` as a user would, `--runs` times, and reports each
run's wall time, the audit process's peak resident memory and CPU time
(its own rusage, read with wait4), with the machine's load average before
each run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from miniupi.ops.bench import bench_spec
from miniupi.ops.testing import LocalCluster

from history_scale import seed


def audit_run(cluster: LocalCluster) -> dict[str, Any]:
    """One `miniupi audit --json --wait 0` against the cluster: its verdict, seconds and peak RSS."""
    env = {**os.environ, "MINIUPI_CONFIG": str(cluster.config_path), "MINIUPI_HOME": str(cluster.root / "home")}
    load = os.getloadavg()[0]
    started = time.monotonic()
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen([sys.executable, "-m", "miniupi", "audit", "--json", "--wait", "0"],
                                stdout=subprocess.PIPE, stderr=errors, env=env, cwd=cluster.root)
        assert proc.stdout is not None
        out = proc.stdout.read()  # to its end; then wait4 reaps the child with its own rusage
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        errors.seek(0)
        err = errors.read()
    report = json.loads(out) if out.strip() else {}
    return {"ok": bool(report.get("ok")), "exit": proc.returncode, "seconds": round(seconds, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "load_average": round(load, 2),
            "committed": report.get("committed"), "violations": report.get("violations", [])[:3],
            "stderr": err.decode()[-300:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--payments", type=int, default=100_000, help="settled payments to seed (default 100000)")
    parser.add_argument("--root", type=Path, help="the cluster's directory, kept and reused (default: a new one)")
    parser.add_argument("--runs", type=int, default=1, help="audits to run (default 1)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="miniupi-audit-"))
    marker = root / "seeded"
    cluster = LocalCluster(root, bench_spec(2, "sqlite"))
    seed_s = 0.0
    if not marker.exists() or marker.read_text() != str(args.payments):
        if marker.exists():
            raise SystemExit(f"{root} holds another seeding ({marker.read_text()} payments); give a fresh --root")
        seed_s = seed(cluster, args.payments, progress=not args.json)
        marker.write_text(str(args.payments))
    cluster.start(timeout=600)
    try:
        runs = [audit_run(cluster) for _ in range(args.runs)]
    finally:
        cluster.stop()
    result = {"payments": args.payments, "seed_s": round(seed_s, 1), "runs": runs}
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
