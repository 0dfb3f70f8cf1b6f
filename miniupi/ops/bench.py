"""`miniupi bench`: a load test of cross-bank payments, with latency percentiles.

Closed loop (`--concurrency C --payments N`): C payers each pay as soon as
their last payment returned. Open loop (`--rate R --duration S`): payment i
is due at start + i/R whatever happened before, and its latency is counted
from that due time, so queueing inside the system is not hidden.

By default it boots a throw-away cluster (same path as `miniupi run`) on
free ports in a temporary directory, and removes that directory at the end,
on an error or Ctrl-C too. Only with --live does it drive a running cluster:
the one the cluster file names, found as every command finds it (--config,
then $MINIUPI_CONFIG, then config/cluster.toml); it says first which
accounts it opens there and how much money it issues, as both stay. Accounts
are opened through the treasury's bulk path with one shared password hash, so
setting up 100,000 accounts costs one argon2 hash, not 100,000.

`--storage postgres` boots a throw-away PostgreSQL server too, and
`--gateways N` makes N gateways sharing it; payer i starts at gateway
i % N, so every gateway carries load. Each payer logs in before the clock
starts; the CPU time of every process of a throw-away cluster (each node,
the PostgreSQL server with its backends, the load processes) is read from
/proc over the timed window alone and given per payment.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miniupi.config import ClusterConfig
from miniupi.errors import MiniupiError
from miniupi.nodes.garbage import quiet_garbage_collector

if TYPE_CHECKING:
    from miniupi.ops.postgres_server import LocalPostgres

PASSWORD = "bench-password"
PAYMENT_MINOR = 1  # one paisa: payers never run dry, whatever N is
OPENING_MINOR = 10**12
BULK_CHUNK = 5000  # names per bulk opening: well inside a message's 1 MiB
# A PostgreSQL backend publishes its statistics at most once a second, at the end of a transaction
# (the gateways' lease renewals make one every few seconds): wait for the last of the load's to show.
PG_STATS_FLUSH_S = 2.0


@dataclass(frozen=True)
class LoadPlan:
    """What one load process does; picklable for the worker processes."""

    config_path: str
    payers: tuple[str, ...]  # user@bank, one session each
    payees: dict[str, tuple[str, ...]]  # bank -> accounts there
    payments: int  # closed loop: how many; open loop: 0
    rate: float  # open loop: payments per second; closed loop: 0
    duration: float
    seed: int
    first_gateways: tuple[int, ...] = ()  # per payer: the index of the gateway its client starts at


@dataclass
class Result:
    ok: int
    failed: int
    latencies_ms: list[float]
    elapsed_s: float
    errors: dict[str, int]
    cpu_s: float = 0.0  # the load process's own CPU time (user + system) over elapsed_s


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of all values at or below it."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def summary(results: Sequence[Result], elapsed_s: float) -> dict[str, Any]:
    lat = sorted(x for r in results for x in r.latencies_ms)
    ok, failed = sum(r.ok for r in results), sum(r.failed for r in results)
    return {
        "payments": ok + failed,
        "ok": ok,
        "failed": failed,
        "throughput_per_s": round(ok / elapsed_s, 1) if elapsed_s else 0.0,
        "latency_ms": {name: round(percentile(lat, q), 2)
                       for name, q in (("p50", .5), ("p90", .9), ("p99", .99), ("p999", .999), ("max", 1.0))},
    }


# -- the load process -----------------------------------------------------


async def _drive(plan: LoadPlan, progress: Any, ready: Any, go: Any) -> Result:
    from miniupi.client.api import AsyncClient
    from miniupi.config import load_config

    cluster = load_config(plan.config_path)
    rng = random.Random(plan.seed)
    clients = [AsyncClient(cluster) for _ in plan.payers]
    for client, first in zip(clients, plan.first_gateways):
        client.gateways.current = first
    await asyncio.gather(*(c.login(p, PASSWORD) for c, p in zip(clients, plan.payers)))
    # Logins (an argon2 hash each at the banks) are set-up: the clock and the CPU count start after them.
    ready.value = 1
    await asyncio.to_thread(go.wait)
    other_banks = {p: [b for b in plan.payees if b != p.split("@")[1]] for p in plan.payers}
    latencies: list[float] = []
    errors: dict[str, int] = {}
    ok = 0

    async def pay_once(client: AsyncClient, payer: str, due: float) -> None:
        nonlocal ok
        bank = rng.choice(other_banks[payer])
        payee = f"{rng.choice(plan.payees[bank])}@{bank}"
        try:
            await client.pay(payee, PAYMENT_MINOR)
        except MiniupiError as e:
            errors[e.code] = errors.get(e.code, 0) + 1
        else:
            ok += 1
            latencies.append((time.perf_counter() - due) * 1000)
        progress.value += 1

    quiet_garbage_collector()  # as the nodes do: the load generator shares their two cores
    cpu_start = time.process_time()
    start = time.perf_counter()
    if plan.rate <= 0:
        remaining = [plan.payments]

        async def worker(client: AsyncClient, payer: str) -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                await pay_once(client, payer, time.perf_counter())

        await asyncio.gather(*(worker(c, p) for c, p in zip(clients, plan.payers)))
    else:
        total = int(plan.rate * plan.duration)
        tasks: set[asyncio.Task[None]] = set()
        for i in range(total):
            due = start + i / plan.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            k = i % len(clients)
            task = asyncio.create_task(pay_once(clients[k], plan.payers[k], due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    await asyncio.gather(*(c.close() for c in clients))
    return Result(ok, sum(errors.values()), latencies, elapsed, errors, cpu)


def _load_process(plan: LoadPlan, progress: Any, ready: Any, go: Any, out: Any) -> None:
    out.put(asdict(asyncio.run(_drive(plan, progress, ready, go))))


# -- CPU time -------------------------------------------------------------


def _processes() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds of it and of its children it reaped), for every process now."""
    tick = os.sysconf("SC_CLK_TCK")
    table: dict[int, tuple[int, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # gone since the listing
        # utime, stime, cutime, cstime: fields 14-17 of proc(5), counted here from the state (field 3).
        table[int(entry.name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]) / tick)
    return table


def tree_cpu_s(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each named process and all its descendants.

    A live process counts its own time and that of the children it reaped;
    its live children count theirs; so each process's time is counted once
    (PostgreSQL's backends are children of the postmaster, which reaps them).
    """
    table = _processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    used: dict[str, float] = {}
    for name, root in pids.items():
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            if pid in table:
                total += table[pid][1]
                todo.extend(children.get(pid, ()))
        used[name] = total
    return used


def postgres_counters(server: LocalPostgres) -> dict[str, int]:
    """The server's transactions committed, WAL syncs and WAL bytes so far, over every database."""
    import psycopg

    with psycopg.connect(**server.connection(), autocommit=True) as conn:
        commits = conn.execute("SELECT sum(xact_commit) FROM pg_stat_database").fetchone()
        wal = conn.execute("SELECT wal_sync, wal_bytes FROM pg_stat_wal").fetchone()
    assert commits is not None and wal is not None
    return {"commits": int(commits[0]), "wal_syncs": int(wal[0]), "wal_bytes": int(wal[1])}


def cpu_report(used_s: dict[str, float], kinds: dict[str, str], load_s: float, ok: int,
               window_s: float) -> dict[str, Any]:
    """CPU per acknowledged payment, in ms, by kind of process (gateways, banks, postgres, load) and in all."""
    seconds = {**used_s, "load": load_s}
    by_kind: dict[str, float] = {kind: 0.0 for kind in ("gateways", "banks")}
    for name, s in sorted(seconds.items(), key=lambda item: item[0] == "load"):  # the load last
        kind = kinds.get(name, name)
        by_kind[kind] = by_kind.get(kind, 0.0) + s
    total = sum(seconds.values())
    per = 1000 / ok if ok else 0.0
    return {
        "ms_per_payment": {**{k: round(v * per, 3) for k, v in by_kind.items()}, "all": round(total * per, 3)},
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "cores_busy": round(total / window_s, 2) if window_s > 0 else 0.0,
    }


# -- set-up ---------------------------------------------------------------


def account_names(per_bank: int, prefix: str = "a") -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(per_bank))


async def open_bench_accounts(cluster: ClusterConfig, per_bank: int, opening: int = OPENING_MINOR,
                              prefix: str = "a") -> dict[str, tuple[str, ...]]:
    """Open PREFIX0..PREFIX{per_bank-1} at every bank through the treasury's bulk door at the gateway.

    Their opening balances are money issued, which the audit at the end counts.
    """
    from miniupi.client.api import AsyncClient
    from miniupi.nodes.passwords import hash_password

    password_hash = await asyncio.to_thread(hash_password, PASSWORD)
    names = account_names(per_bank, prefix)
    async with AsyncClient(cluster, identity="treasury", timeout=120) as treasury:
        for bank in cluster.banks:
            for i in range(0, len(names), BULK_CHUNK):
                await treasury.open_accounts(bank, names[i:i + BULK_CHUNK], password_hash, opening)
    return {bank: names for bank in cluster.banks}


def bench_spec(banks: int, storage: str, gateways: int = 1, bank_storage: str | None = None,
               metrics: bool = False) -> dict[str, Any]:
    """The throw-away cluster: one [gateway] on `storage`, or [gateways.gw1..gwN] sharing it; banks on
    `bank_storage` (default `storage`); with `metrics`, every node serving them on a free port."""
    spec: dict[str, Any] = {"cluster": {"name": "bench"}}
    if gateways == 1:
        spec["gateway"] = {"storage": storage}
    else:
        spec["gateways"] = {f"gw{i}": {"storage": storage} for i in range(1, gateways + 1)}
    spec["banks"] = {f"bank_{i}": {"storage": bank_storage or storage} for i in range(banks)}
    if metrics:
        from miniupi.ops.testing import free_ports

        nodes = [spec["gateway"]] if gateways == 1 else list(spec["gateways"].values())
        nodes += spec["banks"].values()
        for node, port in zip(nodes, free_ports(len(nodes))):
            node["metrics_port"] = port
    return spec


@dataclass(frozen=True)
class BenchOptions:
    config: str | None  # the cluster file, found as every command finds it; only read with `live`
    live: bool  # drive the running cluster of `config` instead of a throw-away one
    banks: int
    storage: str  # the gateways'
    bank_storage: str
    gateways: int
    accounts: int
    concurrency: int
    payments: int
    rate: float
    duration: float
    processes: int
    seed: int
    audit: bool
    metrics: bool = False  # every node of the throw-away cluster serves its metrics: what they cost


def planned_payments(opts: BenchOptions) -> int:
    return opts.payments if opts.rate <= 0 else int(opts.rate * opts.duration)


def opening_per_account(opts: BenchOptions) -> int:
    """Enough for every payment of the run to come from one payer: nobody runs dry, little is issued."""
    return max(1, planned_payments(opts)) * PAYMENT_MINOR


def live_warning(cluster: ClusterConfig, opts: BenchOptions, prefix: str) -> str:
    """What --live leaves in a running cluster, said before it is done."""
    from miniupi.money import format_amount

    names = account_names(opts.accounts, prefix)
    span = names[0] if len(names) == 1 else f"{names[0]} to {names[-1]}"
    issued = opening_per_account(opts) * opts.accounts * len(cluster.banks)
    return (f"bench: --live: opening {opts.accounts * len(cluster.banks)} accounts ({span} at "
            f"{', '.join(cluster.banks)}) in the running cluster of {cluster.path}, and issuing "
            f"{format_amount(issued)} {cluster.currency} to them through the treasury; they stay there")


def run_bench(opts: BenchOptions, json_output: bool) -> dict[str, Any]:
    """Set up, drive the load with a progress bar, print the table, audit; remove what was booted."""
    from miniupi.config import load_config
    from miniupi.ops.testing import LocalCluster, local_postgres

    say = (lambda *a: print(*a, file=sys.stderr)) if json_output else print
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupted)  # so the clean-up runs on SIGTERM too
    # Closed last in, first out: the cluster stops, then PostgreSQL, then the folder goes.
    stack = contextlib.ExitStack()
    try:
        stack.callback(signal.signal, signal.SIGTERM, previous_sigterm)
        meters: dict[str, int] = {}  # process name -> pid whose CPU (with its descendants') is counted
        kinds: dict[str, str] = {}
        postgres: LocalPostgres | None = None
        if opts.live:
            cluster = load_config(opts.config)
            prefix = f"bench_{os.urandom(4).hex()}_"  # never a name someone has, never one of an earlier run
            say(live_warning(cluster, opts, prefix))
        else:
            root = Path(tempfile.mkdtemp(prefix="miniupi-bench-"))
            stack.callback(shutil.rmtree, root, ignore_errors=True)
            if "postgres" in (opts.storage, opts.bank_storage):
                postgres = stack.enter_context(local_postgres())
                meters["postgres"] = postgres.pid
            spec = bench_spec(opts.banks, opts.storage, opts.gateways, opts.bank_storage, opts.metrics)
            local = LocalCluster(root, spec, postgres=postgres).start()
            stack.callback(local.stop)
            cluster, prefix = local.config, "a"
            for node in cluster.nodes:
                meters[node.name] = local.supervisor.pid(node.name)
                kinds[node.name] = "gateways" if node.name in cluster.gateways else "banks"
        stores = opts.storage if opts.bank_storage == opts.storage else f"{opts.storage}, banks on {opts.bank_storage}"
        gateways = len(cluster.gateways)
        say(f"bench: seed {opts.seed}; {gateways} gateway{'s' if gateways > 1 else ''}, {len(cluster.banks)} banks, "
            f"{opts.accounts} accounts each" + ("" if opts.live else f", on {stores}")
            + f", concurrency {opts.concurrency}, {opts.processes} load process(es)")
        t = time.perf_counter()
        payees = asyncio.run(open_bench_accounts(cluster, opts.accounts, opening_per_account(opts), prefix))
        say(f"bench: opened {opts.accounts * len(cluster.banks)} accounts in {time.perf_counter() - t:.1f}s")
        result = _run_load(cluster, payees, opts, show_progress=True, meters=meters, kinds=kinds, postgres=postgres)
        if opts.audit:
            from miniupi.ops.audit import audit

            report = asyncio.run(audit(cluster, settle_s=60))
            result["audit_ok"] = report.ok
            result["audit_violations"] = report.violations[:20]
        if json_output:
            print(json.dumps(result))
        else:
            print_table(result)
        return result
    finally:
        stack.close()


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _run_load(cluster: ClusterConfig, payees: dict[str, tuple[str, ...]], opts: BenchOptions,
              show_progress: bool, meters: dict[str, int] | None = None,
              kinds: dict[str, str] | None = None, postgres: LocalPostgres | None = None) -> dict[str, Any]:
    """Drive the load; with `meters` (name -> pid), count their CPU over the timed window too, and with
    `postgres`, the server's commits and WAL syncs."""
    from tqdm import tqdm

    banks = list(cluster.banks)
    payers = [f"{payees[banks[i % len(banks)]][i // len(banks) % opts.accounts]}@{banks[i % len(banks)]}"
              for i in range(opts.concurrency)]
    first_gateways = [i % len(cluster.gateways) for i in range(opts.concurrency)]  # every gateway carries load
    ctx = mp.get_context("spawn")
    progress = [ctx.Value("q", 0, lock=False) for _ in range(opts.processes)]
    ready = [ctx.Value("b", 0, lock=False) for _ in range(opts.processes)]
    go = ctx.Event()
    out = ctx.Queue()
    plans = []
    for k in range(opts.processes):
        mine = tuple(payers[k::opts.processes])
        share = opts.payments // opts.processes + (1 if k < opts.payments % opts.processes else 0)
        plans.append(LoadPlan(str(cluster.path), mine, payees, share, opts.rate / opts.processes,
                              opts.duration, opts.seed + k, tuple(first_gateways[k::opts.processes])))
    total = planned_payments(opts)
    procs = [ctx.Process(target=_load_process, args=(plan, progress[k], ready[k], go, out), daemon=True)
             for k, plan in enumerate(plans)]
    load_before = os.getloadavg()[0]
    for p in procs:
        p.start()

    def check_alive() -> None:
        if any(p.exitcode not in (None, 0) for p in procs):
            raise MiniupiError(f"a load process failed (exit {[p.exitcode for p in procs]})")

    while not all(r.value for r in ready):  # every payer logged in
        check_alive()
        time.sleep(0.05)
    pg_before = postgres_counters(postgres) if postgres else {}
    cpu_before = tree_cpu_s(meters or {})
    start = time.perf_counter()
    go.set()
    results: list[Result] = []
    with tqdm(total=total, unit="pay", disable=not show_progress, file=sys.stderr, dynamic_ncols=True) as bar:
        while len(results) < len(procs):
            done = sum(v.value for v in progress)
            bar.update(done - bar.n)
            while not out.empty():
                results.append(Result(**out.get()))
            check_alive()
            if len(results) < len(procs):
                time.sleep(0.1)
        bar.update(sum(v.value for v in progress) - bar.n)
    cpu_after = tree_cpu_s(meters or {})
    window = time.perf_counter() - start
    load_after = os.getloadavg()[0]
    for p in procs:
        p.join(10)
    if postgres:
        time.sleep(PG_STATS_FLUSH_S)
        pg_after = postgres_counters(postgres)
    elapsed = max(r.elapsed_s for r in results) if results else window
    result = summary(results, elapsed)
    errors: dict[str, int] = {}
    for r in results:
        for code, n in r.errors.items():
            errors[code] = errors.get(code, 0) + n
    result["errors"] = errors
    result["seed"] = opts.seed
    result["gateways"] = len(cluster.gateways)
    if not opts.live:
        result["storage"], result["bank_storage"] = opts.storage, opts.bank_storage
    result["load_average_1m"] = {"before": round(load_before, 2), "after": round(load_after, 2)}
    if meters:
        used = {name: cpu_after[name] - cpu_before[name] for name in meters}
        result["cpu"] = cpu_report(used, kinds or {}, sum(r.cpu_s for r in results), result["ok"], window)
    if postgres and result["ok"]:
        result["postgres"] = {f"{name}_per_payment": round((pg_after[name] - pg_before[name]) / result["ok"], 2)
                              for name in pg_before}
    result["command"] = " ".join(["miniupi", *sys.argv[1:]]) if sys.argv and "bench" in sys.argv else ""
    return result


def print_table(result: dict[str, Any]) -> None:
    lat = result["latency_ms"]
    rows = [
        ("payments", f"{result['payments']}"),
        ("ok / failed", f"{result['ok']} / {result['failed']}"),
        ("throughput", f"{result['throughput_per_s']:.1f} payments/s"),
        ("latency p50", f"{lat['p50']:.2f} ms"),
        ("latency p90", f"{lat['p90']:.2f} ms"),
        ("latency p99", f"{lat['p99']:.2f} ms"),
        ("latency p99.9", f"{lat['p999']:.2f} ms"),
        ("latency max", f"{lat['max']:.2f} ms"),
    ]
    if result.get("errors"):
        rows.append(("errors", ", ".join(f"{k} {v}" for k, v in sorted(result["errors"].items()))))
    cpu = result.get("cpu")
    if cpu:
        per = cpu["ms_per_payment"]
        rows.append(("CPU per payment", f"{per['all']:.3f} ms: " + ", ".join(
            f"{kind} {ms:.3f}" for kind, ms in per.items() if kind != "all")
            + f" ({cpu['cores_busy']:.2f} cores busy)"))
    else:
        rows.append(("CPU per payment", "not measured with --live (the nodes may run on other hosts)"))
    pg = result.get("postgres")
    if pg:
        rows.append(("PostgreSQL", f"{pg['commits_per_payment']:.2f} commits, {pg['wal_syncs_per_payment']:.2f} WAL syncs, "
                                   f"{pg['wal_bytes_per_payment']:.0f} WAL bytes per payment"))
    rows.append(("load average", "{before:.2f} before, {after:.2f} after (1 minute)".format(**result["load_average_1m"])))
    if "audit_ok" in result:
        rows.append(("audit", "every invariant held" if result["audit_ok"] else
                     "VIOLATIONS: " + "; ".join(result["audit_violations"])))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def default_seed() -> int:
    return int.from_bytes(os.urandom(4), "big")
