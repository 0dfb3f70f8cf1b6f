"""Memory, restart time and speed of a cluster that already holds N settled payments.

    .venv/bin/python benchmarks/history_scale.py --payments 1000000 --storage sqlite --json

Seeds N settled payments straight into the fresh stores of a gateway and
two banks (fast, not through 2PC, but as the nodes' own record functions
write them: gateway_store.py and bank_store.py describe the tables), starts
the cluster, then measures:

- restart_s: each node stopped, started again and timed until it answers
  its health check (the slowest node is the headline);
- rss_mb: each node's resident memory after the restarts and after a load
  run (the largest node is the headline);
- throughput_per_s and p99_ms: `miniupi bench --live` at 64 payers;
- history_ms: the median of 20 `History` pages of 50 entries for the
  busiest account (one payment in ten goes to it), through the gateway.

Payments go from h0..h999 at bank_0 to bank_1 (every tenth to `busy`), one
paisa each, so every balance adds up and `miniupi audit` would pass.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from miniupi.client.api import Client
from miniupi.contract.registry import check_plugins
from miniupi.contract.store import Put, Store
from miniupi.nodes import bank_store, gateway_store
from miniupi.nodes.coordinator import Payment, Txn
from miniupi.nodes.ledger import Account, BankTxn
from miniupi.nodes.participants import Leg
from miniupi.nodes.passwords import hash_password
from miniupi.ops.bench import PASSWORD, bench_spec
from miniupi.ops.testing import LocalCluster
from miniupi.states import TxnState

from bench_run import bench_json
from memory_per_payment import resident_bytes

PAYERS = 1000  # accounts at bank_0 that pay, and at bank_1 that are paid
OPENING = 10**9  # each payer's opening balance, minor units: far above what N payments of one paisa take
CHUNK = 20_000  # puts per seeding write


def txn_id(i: int) -> str:
    """A deterministic UUID-shaped id per payment, so reruns seed the same history."""
    return f"00000000-0000-4000-8000-{i:012d}"


def payee_of(i: int) -> str:
    return "busy" if i % 10 == 0 else f"h{(i * 7) % PAYERS}"


def open_stores(cluster: LocalCluster) -> dict[str, Store]:
    plugins = check_plugins(cluster.config)
    return {node.name: plugins.open_store(node) for node in cluster.config.nodes}


def seed(cluster: LocalCluster, n: int, progress: bool) -> float:
    """Write n settled payments into the cluster's fresh stores; returns the seconds it took."""
    started = time.monotonic()
    stores = open_stores(cluster)
    gateway = stores["gateway"]
    now = time.time()
    base = now - n * 0.001 - 3600  # applied one a millisecond, ending an hour ago
    sent: dict[str, int] = {}
    received: dict[str, int] = {}
    puts: dict[str, list[Put]] = {name: [] for name in stores}

    def flush(force: bool = False) -> None:
        for name, batch in puts.items():
            if batch and (force or len(batch) >= CHUNK):
                stores[name].write(batch)
                batch.clear()

    for i in range(n):
        at = base + i * 0.001
        tid, payer, payee = txn_id(i), f"h{i % PAYERS}", payee_of(i)
        payment = Payment(tid, f"{payer}@bank_0", f"{payee}@bank_1", 1, "INR")
        puts["gateway"].append(Put("txns", tid, Txn(payment, TxnState.COMMITTED, acked=True, created_at=at,
                                                    decided_at=at).record()))
        sent[payer] = sent.get(payer, 0) + 1
        received[payee] = received.get(payee, 0) + 1
        for bank, name, account, delta, other in (("bank_0", payer, payer, -1, payment.payee),
                                                   ("bank_1", payee, payee, 1, payment.payer)):
            counts = sent if delta < 0 else received
            puts[bank].append(Put("txns", tid, BankTxn(tid, TxnState.COMMITTED, (Leg(account, delta, other),),
                                                       at, at).record()))
            puts[bank].append(Put("history", bank_store.history_key(name, counts[name]),
                                  bank_store.history_row(tid, other, delta, at)))
        if i % CHUNK == CHUNK - 1:
            flush()
            if progress:
                print(f"\rseeded {i + 1:,} of {n:,}", end="", file=sys.stderr, flush=True)
    flush(force=True)
    password_hash = hash_password(PASSWORD)
    for bank, names, counts, sign in (("bank_0", [f"h{k}" for k in range(PAYERS)], sent, -1),
                                      ("bank_1", [f"h{k}" for k in range(PAYERS)] + ["busy"], received, 1)):
        opening = OPENING if sign < 0 else 0
        accounts = [Account(name, opening + sign * counts.get(name, 0), password_hash, base, opening,
                            entries=counts.get(name, 0)) for name in names]
        stores[bank].write([Put("accounts", a.name, a.record()) for a in accounts]
                           + [Put("meta", "format", bank_store.FORMAT),
                              Put("meta", "deposits", opening * len(accounts))])
    gateway.write([Put(gateway_store.META, gateway_store.FORMAT_KEY,
                       {"version": gateway_store.FORMAT, "since": now})])
    for store in stores.values():
        store.close()
    if progress:
        print(file=sys.stderr)
    return time.monotonic() - started


def restart_seconds(cluster: LocalCluster, name: str) -> float:
    cluster.stop_node(name)
    started = time.monotonic()
    cluster.start_node(name, timeout=600)
    return time.monotonic() - started


def rss_mb(cluster: LocalCluster) -> dict[str, float]:
    return {node.name: round(resident_bytes(cluster.supervisor.pid(node.name)) / 2**20, 1)
            for node in cluster.config.nodes}


def history_ms(cluster: LocalCluster) -> float:
    admin = Client(cluster.config, identity="admin")
    admin.history("busy@bank_1", limit=50)  # a first call opens the channel
    times = []
    for _ in range(20):
        started = time.perf_counter()
        page = admin.history("busy@bank_1", limit=50)
        times.append((time.perf_counter() - started) * 1000)
        assert len(page) == 50
    return round(statistics.median(times), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--payments", type=int, default=100_000, help="settled payments to seed (default 100000)")
    parser.add_argument("--storage", choices=["sqlite", "json"], default="sqlite")
    parser.add_argument("--load", type=int, default=60_000, help="payments in the load run (default 60000)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="miniupi-history-"))
    cluster = LocalCluster(root, bench_spec(2, args.storage))
    seed_s = seed(cluster, args.payments, progress=not args.json) if args.payments else 0.0
    cluster.start(timeout=600)
    try:
        restart = {node.name: round(restart_seconds(cluster, node.name), 2) for node in cluster.config.nodes}
        after_restart = rss_mb(cluster)
        load = bench_json(["--config", str(cluster.config_path), "--live", "--concurrency", "64",
                           "--payments", str(args.load), "--no-audit"])
        after_load = rss_mb(cluster)
        history = history_ms(cluster) if args.payments >= 500 else 0.0
    finally:
        cluster.stop()
    result: dict[str, Any] = {
        "payments": args.payments, "storage": args.storage, "seed_s": round(seed_s, 1),
        "restart_s": max(restart.values()), "rss_mb": max(after_load.values()),
        "throughput_per_s": load["throughput_per_s"], "p99_ms": load["latency_ms"]["p99"], "history_ms": history,
        "nodes": {name: {"restart_s": restart[name], "rss_mb_after_restart": after_restart[name],
                         "rss_mb_after_load": after_load[name]} for name in restart},
        "load_payments": args.load,
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
