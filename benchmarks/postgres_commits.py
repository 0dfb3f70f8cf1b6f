"""How many commits a second this machine's PostgreSQL takes, and its CPU per commit.

    .venv/bin/python benchmarks/postgres_commits.py --seconds 10 [--json]

Boots a throw-away PostgreSQL server as `miniupi bench --storage postgres`
does (same defaults: synchronous_commit on, fsync on), then:

- `pg_test_fsync`: the disk's fdatasync rate for one 8 kB write, which bounds
  the commits of one connection that waits for each;
- `pgbench` with a script of one durable upsert into a table shaped like the
  postgres store's `kv` (a small JSON value under a random key), at 1, 8 and
  64 clients: commits per second, and the server's CPU (postmaster and
  backends, from /proc) per commit. Several clients share an fsync (group
  commit), so the rate grows with them until the CPU is spent.

The result says where PostgreSQL stops a gateway: its commits per payment
(from `miniupi bench --storage postgres`) against the rate here, and its CPU
per payment against the cores it has.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Any

from miniupi.ops.bench import tree_cpu_s
from miniupi.ops.testing import local_postgres

SCRIPT = """\\set k random(1, 10000000)
INSERT INTO kv (tbl, key, value) VALUES ('payments', :k::text, '{"state":"COMMITTED","amount":1,"from":"a1@bank_0","to":"a2@bank_1"}')
  ON CONFLICT (tbl, key) DO UPDATE SET value = EXCLUDED.value;
"""
TABLE = """CREATE TABLE kv (tbl text COLLATE "C" NOT NULL, key text COLLATE "C" NOT NULL,
                         value json NOT NULL, PRIMARY KEY (tbl, key))"""


def fdatasync_rate(bin_dir: str, directory: str) -> dict[str, float]:
    """pg_test_fsync's fdatasync of one 8 kB write, in the server's directory (its file system)."""
    out = subprocess.run([os.path.join(bin_dir, "pg_test_fsync"), "-s", "2", "-f", os.path.join(directory, "fsync.test")],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    match = re.search(r"^\s*fdatasync\s+([\d.,]+) ops/sec\s+(\d+) usecs/op", out, re.MULTILINE)
    if not match:
        raise SystemExit(f"pg_test_fsync said nothing of fdatasync:\n{out}")
    return {"ops_per_s": float(match.group(1).replace(",", "")), "usecs_per_op": float(match.group(2))}


def pgbench(bin_dir: str, server: Any, script: str, clients: int, seconds: int, pid: int) -> dict[str, float]:
    conn = server.connection()
    env = {**os.environ, "PGPASSWORD": conn["password"]}
    argv = [os.path.join(bin_dir, "pgbench"), "-n", "-h", conn["host"], "-p", str(conn["port"]), "-U", conn["user"],
            "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds), "-f", script, conn["dbname"]]
    before = tree_cpu_s({"postgres": pid})["postgres"]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=seconds + 60)
    used = tree_cpu_s({"postgres": pid})["postgres"] - before
    if out.returncode:
        raise SystemExit(f"pgbench failed: {out.stderr.strip()[-1000:]}")
    done = int(re.search(r"number of transactions actually processed: (\d+)", out.stdout).group(1))
    tps = float(re.search(r"tps = ([\d.]+)", out.stdout).group(1))
    return {"clients": clients, "commits_per_s": round(tps), "server_cpu_ms_per_commit": round(1000 * used / done, 3),
            "server_cores_busy": round(used / seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="per pgbench run")
    parser.add_argument("--clients", default="1,8,64", help="pgbench client counts, comma-separated")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with local_postgres() as server:
        bin_dir = str(server.bin_dir)
        if not shutil.which("pgbench", path=bin_dir):
            raise SystemExit(f"no pgbench in {bin_dir}")
        import psycopg

        with psycopg.connect(**server.connection(), autocommit=True) as conn:
            conn.execute(TABLE)
        script = server.root / "upsert.sql"
        script.write_text(SCRIPT)
        os.chmod(server.root, 0o711)  # pgbench runs as us; the server's user only needs to pass through
        fsync = fdatasync_rate(bin_dir, str(server.root))
        runs = [pgbench(bin_dir, server, str(script), int(c), args.seconds, server.pid) for c in args.clients.split(",")]
    result = {"command": " ".join(["benchmarks/postgres_commits.py", *sys.argv[1:]]),
              "load_average_1m_before": round(load_before, 2), "fdatasync": fsync, "pgbench": runs}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['command']} (load average before: {load_before:.2f})")
    print(f"fdatasync of 8 kB: {fsync['ops_per_s']:.0f}/s ({fsync['usecs_per_op']:.0f} us)")
    print("| clients | commits/s | server CPU ms per commit | server cores busy |")
    print("| --- | --- | --- | --- |")
    for r in runs:
        print(f"| {r['clients']} | {r['commits_per_s']} | {r['server_cpu_ms_per_commit']:.3f} | {r['server_cores_busy']:.2f} |")


if __name__ == "__main__":
    main()
