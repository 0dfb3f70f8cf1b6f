"""Jepsen's bank workload against a real miniupi cluster, under a seeded nemesis.

    .venv/bin/python benchmarks/chaos_run.py --duration 600 --seed 7     # or: make chaos DURATION=600 SEED=7

A gateway and three banks (sqlite, json, sqlite) run under supervisord as in
production; with `--replicas 2`, two gateways sharing a PostgreSQL server
(a throw-away one, on 127.0.0.1) in the gateway's place. Several clients, all in one asyncio loop, pay random amounts
between a fixed set of accounts (across banks and inside one bank; some
larger than the payer has). Meanwhile a nemesis, driven by its own seeded
random stream, SIGKILLs nodes (one or two at once, or at an exact 2PC step
through tests/plugins/faults.py), freezes them with SIGSTOP and thaws them
with SIGCONT after a bounded time, restarts them gracefully, or keeps them
down for a while; the gateway is a target like any bank.

Every payment is recorded with every answer it got: ok (COMMITTED), failed
(a definite refusal) or unknown (UNAVAILABLE, a timeout, a broken
connection). When the time is up the nemesis stops, every node is thawed
and running, and every unknown payment is sent again with its own id until
the gateway gives its stored answer. Then the checker reads the gateway and
every bank (miniupi.ops.audit.collect) and requires:

- the audit of DESIGN.md section 2 passes, with nothing in doubt after
  `settle_s` (30 s): total conserved, no negative balance, holds match;
- every account's balance is its opening plus exactly the payments this run
  saw applied (so nothing is applied twice or with other amounts), and the
  total equals the openings;
- an acknowledged payment is COMMITTED on both of its banks with its legs;
  a refused one on neither; an unknown one on both or neither, and it agrees
  with the answer the final resend got; one id never gets two different
  definite answers; no bank holds a payment nobody asked for;
- reads taken during the chaos never show a negative balance or any other
  violation the audit can see in a live cluster.

This lives in tests/ rather than the miniupi package: it is test tooling
(it uses the faults plugin and LocalCluster) shared by tests/ops/test_chaos.py,
which runs a short version in `make test`, and `make chaos`, which runs a
long one through the same code. The seed fixes the workload's choices and
the nemesis's schedule; the interleaving with the nodes is up to the OS, so
a replay repeats the same pressure, not the same history.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from miniupi.ops.audit import BankView, GatewayTxnView, audit, check, collect
from miniupi.client.api import AsyncClient, Session
from miniupi.errors import Internal, MiniupiError, NotFound, Unauthenticated, Unavailable
from miniupi.ops.supervision import SupervisionError
from miniupi.ops.postgres_server import LocalPostgres
from miniupi.ops.testing import LocalCluster, local_postgres
from miniupi.states import TxnState

PLUGIN_DIR = Path(__file__).resolve().parents[1] / "tests" / "plugins"  # the fault injection the nodes load
sys.path.insert(0, str(PLUGIN_DIR))
import faults  # noqa: E402  (the nodes load it from PYTHONPATH; the nemesis arms it)

PASSWORD = "chaos-pw"
BANKS = {"bank_a": "sqlite", "bank_b": "json", "bank_c": "sqlite"}
GATEWAY_POINTS = ("before_prepare", "before_decision", "after_decision", "after_decision_sent")
BANK_POINTS = ("before_vote", "after_vote", "before_apply", "after_apply")
FAULT_KINDS = ("kill", "kill_two", "pause", "restart", "down", "crash_at_point")
LIVE_RACE = re.compile(r" is initiated at the gateway but committed at ")
OK, FAILED, UNKNOWN = "ok", "failed", "unknown"
UNSENT = "unsent"  # an attempt stopped before the gateway's coordinator saw it (no session)


@dataclass(frozen=True)
class ChaosSettings:
    duration_s: float = 25.0
    seed: int = 1
    workers: int = 8
    rate: float = 100.0  # payments started per second by all workers together, at most
    accounts_per_bank: int = 4
    opening: int = 100_00
    timeout_s: float = 2.0  # prepare_timeout_s and call_timeout_s of the cluster
    fault_gap_s: tuple[float, float] = (0.3, 1.5)  # quiet time between two faults
    pause_s: tuple[float, float] = (0.3, 6.0)  # SIGSTOP lasts this long (past the 4 s in-doubt patience)
    down_s: tuple[float, float] = (1.0, 6.0)  # a stopped node stays down this long
    crash_wait_s: float = 3.0  # how long an armed crash_at_point may wait for its step
    settle_s: float = 30.0  # nothing may stay in doubt longer than this once all nodes are up
    resend_s: float = 60.0  # bound on resending the unknown payments at the end
    read_every_s: float = 3.0  # live reads of the whole cluster during the chaos
    replicas: int = 1  # gateways; more than one share a PostgreSQL server
    lease_s: float = 2.0  # their gateway_lease_s

    def command(self) -> str:
        return (f".venv/bin/python benchmarks/chaos_run.py --duration {self.duration_s:g} --seed {self.seed} "
                f"--workers {self.workers} --rate {self.rate:g}" + self._replicas())

    def make_command(self) -> str:
        more = f" CHAOS_ARGS='{self._replicas().strip()}'" if self.replicas > 1 else ""
        return f"make chaos DURATION={self.duration_s:g} SEED={self.seed}{more}"

    def _replicas(self) -> str:
        return f" --replicas {self.replicas}" if self.replicas > 1 else ""


@dataclass
class Op:
    """One payment and every answer it got, in order: ok, failed:Error: why, unknown:Error: why."""

    txn_id: str
    worker: int
    payer: str
    payee: str
    amount: int
    started: float
    answers: list[str] = field(default_factory=list)
    during_run: str = UNKNOWN  # what the clients knew when the chaos ended
    final: str = UNKNOWN  # after the unknown ones were sent again

    def definite(self) -> list[str]:
        return [a for a in self.answers if a.startswith((OK, FAILED))]

    def outcome(self) -> str:
        """ok or failed once any answer was definite; unsent if no attempt got past the session
        check (nothing can have happened); else unknown."""
        if definite := self.definite():
            return definite[0].split(":")[0]
        if self.answers and all(a.startswith(UNSENT) for a in self.answers):
            return UNSENT
        return UNKNOWN


@dataclass
class Fault:
    at: float  # seconds since the chaos began
    kind: str
    nodes: list[str]
    seconds: float = 0.0
    note: str = ""
    landed: bool = True  # False when the target was not running, or an armed step never came


@dataclass
class ChaosResult:
    settings: ChaosSettings
    ops: list[Op]
    faults: list[Fault]
    violations: list[str]
    summary: dict[str, Any]

    @property
    def ok(self) -> bool:
        return not self.violations


def classify(error: MiniupiError) -> str:
    """unknown when the payment may or may not have happened, else failed."""
    if isinstance(error, (Unavailable, Internal)) or type(error) is MiniupiError:
        return UNKNOWN  # a fault at the node, or a status we have no class for: no promise
    return FAILED


def new_txn_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def cluster_spec(settings: ChaosSettings) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "cluster": {"name": "chaos", "prepare_timeout_s": settings.timeout_s, "call_timeout_s": settings.timeout_s},
        "banks": {name: {"storage": storage} for name, storage in BANKS.items()},
        "plugins": {"load": ["faults"]},
    }
    if settings.replicas > 1:
        spec["cluster"]["gateway_lease_s"] = settings.lease_s
        spec["gateways"] = {f"gw{i}": {"storage": "postgres"} for i in range(1, settings.replicas + 1)}
    else:
        spec["gateway"] = {"storage": "sqlite"}
    return spec


def opening_accounts(settings: ChaosSettings) -> dict[str, dict[str, tuple[str, str]]]:
    amount = f"{settings.opening // 100}.{settings.opening % 100:02d}"
    return {bank: {f"acct{i}": (amount, PASSWORD) for i in range(settings.accounts_per_bank)} for bank in BANKS}


class Sessions:
    """One session per account, shared by every worker; renewed once if the gateway refuses it (expiry)."""

    def __init__(self) -> None:
        self.by_account: dict[str, Session] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.logins = 0
        self.login_failures = Counter[str]()

    async def get(self, client: AsyncClient, account: str, stale: Session | None = None) -> Session | None:
        async with self._locks[account]:
            session = self.by_account.get(account)
            if session is not None and session is not stale:
                return session
            try:
                session = await client.login(account, PASSWORD)
            except MiniupiError as e:
                self.login_failures[f"{type(e).__name__}: {e.message[:40]}"] += 1
                return None
            self.logins += 1
            self.by_account[account] = session
            return session


class Chaos:
    def __init__(self, cluster: LocalCluster, settings: ChaosSettings, log: Callable[[str], None]) -> None:
        self.cluster, self.settings, self.log = cluster, settings, log
        self.accounts = [f"{user}@{bank}" for bank, users in opening_accounts(settings).items() for user in users]
        self.nodes = [n.name for n in cluster.config.nodes]
        self.sessions = Sessions()
        self.ops: list[Op] = []
        self.faults: list[Fault] = []
        self.live_violations: list[tuple[float, str]] = []
        self.skipped = 0
        self.race_ids: dict[str, int] = {}  # id seen INITIATED at the gateway, COMMITTED at a bank -> read number
        self.reads = Counter[str]()
        self.stop = asyncio.Event()
        self.began = 0.0

    # -- the clients ------------------------------------------------------

    async def attempt(self, client: AsyncClient, op: Op) -> None:
        """Send the payment once; a session the gateway forgot (it restarted) is renewed and the id sent again."""
        session = await self.sessions.get(client, op.payer)
        for _ in range(3):
            if session is None:
                op.answers.append(f"{UNSENT}:NotSent: could not log in")
                return
            client.session = session
            try:
                await client.pay(op.payee, op.amount, txn_id=op.txn_id)
            except Unauthenticated:
                # Refused by the session check, before the coordinator: this attempt did nothing.
                session = await self.sessions.get(client, op.payer, stale=session)
                continue
            except MiniupiError as e:
                op.answers.append(f"{classify(e)}:{type(e).__name__}: {e.message}")
                return
            op.answers.append(OK)
            return
        op.answers.append(f"{UNSENT}:NotSent: session refused three times")

    async def worker(self, index: int) -> None:
        s = self.settings
        rng = random.Random(f"{s.seed}/worker/{index}")
        async with AsyncClient(self.cluster.config) as client:
            while not self.stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), rng.expovariate(s.rate / s.workers))
                if self.stop.is_set():
                    break
                payer, payee = rng.sample(self.accounts, 2)
                amount = rng.randint(1, s.opening // 5) if rng.random() < 0.85 else rng.randint(s.opening // 2, s.opening * 2)
                txn_id = new_txn_id(rng)
                if await self.sessions.get(client, payer) is None:
                    self.skipped += 1  # could not log in (the gateway or the payer's bank away): nothing sent
                    await self._sleep(0.2)
                    continue
                op = Op(txn_id, index, payer, payee, amount, time.monotonic() - self.began)
                self.ops.append(op)
                await self.attempt(client, op)
                if op.outcome() == UNKNOWN and rng.random() < 0.5 and not self.stop.is_set():
                    await asyncio.sleep(rng.uniform(0.1, 2.0))  # the same id again, while the chaos goes on
                    await self.attempt(client, op)

    # -- the nemesis ------------------------------------------------------

    def _signal(self, node: str, sig: int) -> bool:
        try:
            self.cluster.kill_node(node, sig)
        except (RuntimeError, ProcessLookupError, SupervisionError):
            return False  # not running now (restarting, or in supervisord's backoff)
        return True

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def inject(self, kind: str, node: str, rng: random.Random) -> Fault:
        fault = Fault(round(time.monotonic() - self.began, 2), kind, [node])
        if kind == "kill":
            if not await asyncio.to_thread(self._signal, node, signal.SIGKILL):
                fault.note, fault.landed = "not running", False
        elif kind == "kill_two":
            other = rng.choice([n for n in self.nodes if n != node])
            fault.nodes.append(other)
            hits = await asyncio.gather(*(asyncio.to_thread(self._signal, n, signal.SIGKILL) for n in fault.nodes))
            missed = [n for n, hit in zip(fault.nodes, hits) if not hit]
            if missed:
                fault.note, fault.landed = f"not running: {', '.join(missed)}", len(missed) < 2
        elif kind == "pause":
            fault.seconds = round(rng.uniform(*self.settings.pause_s), 2)
            pid = await asyncio.to_thread(self.cluster.supervisor.pid, node)
            if pid is None:
                fault.note, fault.landed = "not running", False
            else:
                try:
                    os.kill(pid, signal.SIGSTOP)
                    await asyncio.sleep(fault.seconds)  # not cut short: a pause always ends by itself
                finally:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
        elif kind == "restart":
            try:
                await asyncio.to_thread(self.cluster.supervisor.restart, node)
            except SupervisionError as e:
                fault.note, fault.landed = f"restart: {e}", False
        elif kind == "down":
            fault.seconds = round(rng.uniform(*self.settings.down_s), 2)
            try:
                await asyncio.to_thread(self.cluster.supervisor.stop, node)
                await asyncio.sleep(fault.seconds)
            except SupervisionError as e:
                fault.note, fault.landed = f"stop: {e}", False
            finally:
                try:
                    await asyncio.to_thread(self.cluster.supervisor.start, node)
                except SupervisionError as e:
                    fault.note += f" start: {e}"
        elif kind == "crash_at_point":
            point = rng.choice(GATEWAY_POINTS if self.cluster.config.node(node).role == "gateway" else BANK_POINTS)
            data_dir = self.cluster.config.data_dir
            before = len(faults.fired(data_dir))
            faults.arm(data_dir, {"node": node, "point": point, "action": "kill"})
            deadline = time.monotonic() + self.settings.crash_wait_s
            while len(faults.fired(data_dir)) == before and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            left = faults.disarm(data_dir)
            fault.note, fault.landed = point + (" (not reached)" if left else ""), not left
        else:
            raise ValueError(kind)
        return fault

    async def nemesis(self) -> None:
        """Faults one after another, kinds and targets each in a shuffled round so all come up early."""
        rng = random.Random(f"{self.settings.seed}/nemesis")
        kinds: list[str] = []
        targets: list[str] = []
        while not self.stop.is_set():
            await self._sleep(rng.uniform(*self.settings.fault_gap_s))
            if self.stop.is_set():
                break
            if not kinds:
                kinds = list(FAULT_KINDS)
                rng.shuffle(kinds)
            if not targets:
                targets = list(self.nodes)
                rng.shuffle(targets)
            fault = await self.inject(kinds.pop(), targets.pop(), rng)
            self.faults.append(fault)
            self.log(f"  t={fault.at:6.1f}s nemesis {fault.kind:<14} {'+'.join(fault.nodes):<16} "
                     f"{f'{fault.seconds:.1f}s' if fault.seconds else '':>5} {fault.note}")

    # -- live reads -------------------------------------------------------

    async def reader(self) -> None:
        """Read the whole cluster now and then; whatever it shows must already be sane."""
        while not self.stop.is_set():
            await self._sleep(self.settings.read_every_s)
            if self.stop.is_set():
                break
            try:
                gateway, banks = await asyncio.wait_for(collect(self.cluster.config, timeout=3.0), 10.0)
            except (MiniupiError, TimeoutError, OSError):
                self.reads["unavailable"] += 1  # a node down or frozen: no reading this time
                continue
            self.reads["taken"] += 1
            report = check(gateway, banks, settled=False)
            at = round(time.monotonic() - self.began, 1)
            for v in report.violations:
                if LIVE_RACE.search(v):
                    # The banks are read before the gateway, so the gateway's record is never older
                    # than a bank's and this should not happen; if it does, it counts here, and as a
                    # violation once it outlives one whole read. An ABORTED gateway with a
                    # committing bank is a violation at once.
                    self.reads["initiated_then_committed"] += 1
                    txn_id = v.split()[0]
                    if self.race_ids.get(txn_id, self.reads["taken"]) != self.reads["taken"]:
                        # Not a race any more: still undecided at the gateway one whole read later.
                        self.live_violations.append((at, f"{v}, and still so one read later"))
                    self.race_ids[txn_id] = self.reads["taken"]
                else:
                    self.live_violations.append((at, v))

    # -- the end ----------------------------------------------------------

    def heal(self) -> None:
        """Thaw every node, start any that is down, wait until all serve and the gateway reaches every bank."""
        faults.disarm(self.cluster.config.data_dir)
        for node in self.nodes:
            self._signal(node, signal.SIGCONT)
        for node in self.nodes:
            self.cluster.start_node(node, timeout=60)
        self.cluster.wait_ready(timeout=60)
        # A node restarted just now serves before supervisord calls it RUNNING (startsecs = 1).
        deadline = time.monotonic() + 15
        while True:
            status = {n.name: n.state for n in self.cluster.supervisor.status()}
            late = {node: status.get(node) for node in self.nodes if status.get(node) != "RUNNING"}
            if not late:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"not RUNNING after healing: {late}")
            time.sleep(0.2)

    async def gateway_reaches_every_bank(self, timeout_s: float = 30.0) -> None:
        """The gateway's links wait out their reconnect backoff; NOT_FOUND comes only from a bank itself."""
        deadline = time.monotonic() + timeout_s
        async with AsyncClient(self.cluster.config, identity="admin") as admin:
            for bank in BANKS:
                while True:
                    try:
                        await admin.balance(f"nobody@{bank}")
                    except NotFound:
                        break
                    except Unavailable:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"the gateway cannot reach {bank} {timeout_s}s after healing")
                        await asyncio.sleep(0.2)

    async def resend_unknowns(self) -> None:
        """Send every payment without a definite answer again, with its own id, until it has one (bounded)."""
        deadline = time.monotonic() + self.settings.resend_s
        clients = [AsyncClient(self.cluster.config) for _ in range(self.settings.workers)]
        try:
            while (pending := [op for op in self.ops if op.outcome() == UNKNOWN]) and time.monotonic() < deadline:
                queue = list(pending)

                async def drain(client: AsyncClient) -> None:
                    while queue:
                        await self.attempt(client, queue.pop())

                await asyncio.gather(*(drain(c) for c in clients))
                if any(op.outcome() == UNKNOWN for op in pending):
                    await asyncio.sleep(1.0)
        finally:
            for c in clients:
                await c.close()

    async def run(self) -> tuple[list[str], dict[str, Any]]:
        s = self.settings
        # Before any fault: what is wrong here is not the chaos's doing, and is reported as such.
        boot = await audit(self.cluster.config, settle_s=s.settle_s)
        self.began = time.monotonic()
        workers = [asyncio.create_task(self.worker(i)) for i in range(s.workers)]
        side = [asyncio.create_task(self.nemesis()), asyncio.create_task(self.reader())]
        await asyncio.sleep(s.duration_s)
        self.stop.set()
        chaos_s = time.monotonic() - self.began
        # Bounded: a worker finishes its call (client timeout), the nemesis its fault (pause, down, restart).
        _, late = await asyncio.wait(workers + side, timeout=60)
        for task in late:
            task.cancel()
        await asyncio.gather(*workers, *side, return_exceptions=True)
        for op in self.ops:
            op.during_run = op.outcome()

        t = time.monotonic()
        await asyncio.to_thread(self.heal)
        await self.gateway_reaches_every_bank()
        heal_s = time.monotonic() - t
        t = time.monotonic()
        await self.resend_unknowns()
        for op in self.ops:
            op.final = op.outcome()
        resend_s = time.monotonic() - t
        t = time.monotonic()
        report = await audit(self.cluster.config, settle_s=s.settle_s)
        settle_s = time.monotonic() - t
        gateway, banks = await collect(self.cluster.config)

        at_boot = set(boot.violations)
        violations = [f"at boot, before any fault: {v}" for v in boot.violations]
        repeated = [v for v in report.violations if v in at_boot]
        repeated += [v for _, v in self.live_violations if v in at_boot]
        violations += [f"audit: {v}" for v in report.violations if v not in at_boot]
        violations += [f"live read at t={at}s: {v}" for at, v in self.live_violations if v not in at_boot]
        violations += verify(self.ops, gateway, banks, s.opening)
        summary = self.summary(report.as_dict(), chaos_s, heal_s, resend_s, settle_s)
        summary["violations_at_boot"] = len(boot.violations)
        summary["violations_from_chaos"] = len(violations) - len(boot.violations)
        summary["boot_violations_seen_again"] = len(repeated)
        return violations, summary

    def summary(self, audit_report: dict[str, Any], chaos_s: float, heal_s: float, resend_s: float,
                settle_s: float) -> dict[str, Any]:
        during = Counter(op.during_run for op in self.ops)
        final = Counter(op.final for op in self.ops)
        resolved = Counter(op.final for op in self.ops if op.during_run == UNKNOWN)
        refusals = Counter(a.split(":")[1] for op in self.ops for a in op.answers if a.startswith((FAILED, UNSENT)))
        unknowns = Counter(a.split(":")[1] + ": " + a.split(": ", 1)[1][:40]
                           for op in self.ops for a in op.answers if a.startswith(UNKNOWN))
        return {
            "seed": self.settings.seed,
            "skipped_no_login": self.skipped,
            "command": self.settings.command(),
            "duration_s": round(chaos_s, 1),
            "payments": {
                "attempted": len(self.ops),
                "ok": during[OK], "failed": during[FAILED], "unknown": during[UNKNOWN], "unsent": during[UNSENT],
                "unknown_resolved_ok": resolved[OK], "unknown_resolved_failed": resolved[FAILED],
                "still_unknown": final[UNKNOWN],
                "answers": sum(len(op.answers) for op in self.ops),
                "refusals": dict(refusals.most_common()),
                "unknown_answers": dict(unknowns.most_common(8)),
            },
            "faults": dict(Counter(f.kind for f in self.faults)),
            "faults_by_node": dict(Counter(n for f in self.faults for n in f.nodes)),
            "faults_not_landed": sum(1 for f in self.faults if not f.landed),
            "logins": self.sessions.logins, "login_failures": dict(self.sessions.login_failures.most_common(6)),
            "live_reads": {**self.reads, "initiated_then_committed_ids": len(self.race_ids)},
            "heal_s": round(heal_s, 1), "resend_s": round(resend_s, 1), "settle_s": round(settle_s, 1),
            "audit": audit_report,
        }


def verify(ops: list[Op], gateway: dict[str, GatewayTxnView], banks: list[BankView], opening: int) -> list[str]:
    """The bank workload's checker over the final readings; returns every violation found."""
    bad: list[str] = []
    by_bank = {b.name: b for b in banks}
    expected_balance: dict[tuple[str, str], int] = {
        (b.name, account): opening for b in banks for account in b.accounts}
    known = {op.txn_id for op in ops}
    for op in ops:
        payer_user, payer_bank = op.payer.split("@")
        payee_user, payee_bank = op.payee.split("@")
        legs: dict[str, list[tuple[str, int, str]]] = defaultdict(list)
        legs[payer_bank].append((payer_user, -op.amount, op.payee))
        legs[payee_bank].append((payee_user, op.amount, op.payer))
        records = {bank: by_bank[bank].txns.get(op.txn_id) for bank in legs}
        committed = [bank for bank, r in records.items() if r is not None and r[0] == TxnState.COMMITTED]
        applied = len(committed) == len(legs)
        what = f"{op.txn_id} ({op.payer} -> {op.payee} {op.amount}, answers {op.answers})"
        if committed and not applied:
            bad.append(f"{what} committed at {committed} only: applied on some banks, not all")
        for bank in committed:
            if sorted(records[bank][1]) != sorted(legs[bank]):
                bad.append(f"{what} committed at {bank} with legs {records[bank][1]}, not {legs[bank]}")
        g = gateway.get(op.txn_id)
        if applied and (g is None or g.state != TxnState.COMMITTED):
            bad.append(f"{what} applied but the gateway says {g.state if g else 'nothing'}")
        if len({a.split(": ")[0] for a in op.definite()}) > 1:  # ok, or failed:ErrorClass
            bad.append(f"{what} got different definite answers")
        if op.final == OK and not applied:
            bad.append(f"{what} acknowledged but not applied")
        if op.final in (FAILED, UNSENT) and committed:
            bad.append(f"{what} refused but applied")
        if applied:
            expected_balance[(payer_bank, payer_user)] -= op.amount
            expected_balance[(payee_bank, payee_user)] += op.amount
    total = 0
    for bank in banks:
        for txn_id, (state, _) in bank.txns.items():
            if state == TxnState.COMMITTED and txn_id not in known:
                bad.append(f"{txn_id} committed at {bank.name}, but no client ever sent it")
        for account, (balance, held, account_opening) in bank.accounts.items():
            total += balance
            where = f"{account}@{bank.name}"
            if account_opening != opening:
                bad.append(f"{where} opened with {account_opening}, not {opening}")
            if balance < 0:
                bad.append(f"{where} has a negative balance {balance}")
            if held:
                bad.append(f"{where} still holds {held} with every node up")
            if balance != expected_balance[(bank.name, account)]:
                bad.append(f"{where} has {balance}, but its opening plus the payments applied exactly once "
                           f"make {expected_balance[(bank.name, account)]}")
    if total != opening * len(expected_balance):
        bad.append(f"total money {total} is not the {opening * len(expected_balance)} the accounts opened with")
    return bad


def run_chaos(settings: ChaosSettings, root: Path, log: Callable[[str], None] = print,
              postgres: LocalPostgres | None = None) -> ChaosResult:
    """Boot a cluster in `root`, run the workload and the nemesis, heal, check. Needs tests/plugins on
    PYTHONPATH for the nodes (main() sets it; tests use monkeypatch.setenv). Several gateways run on
    `postgres`, or on a throw-away server of their own."""
    if settings.replicas > 1 and postgres is None:
        with local_postgres() as server:
            return run_chaos(settings, root, log, server)
    log(f"chaos: seed {settings.seed}, {settings.duration_s:g}s, {settings.workers} clients, "
        f"{settings.replicas} gateway{'s' if settings.replicas > 1 else ''}, cluster in {root}")
    log(f"replay: {settings.make_command()}   (or: {settings.command()})")
    cluster = LocalCluster(root, cluster_spec(settings), accounts=opening_accounts(settings),
                           postgres=postgres if settings.replicas > 1 else None)
    started = time.monotonic()
    try:
        cluster.start(timeout=60)
        chaos = Chaos(cluster, settings, log)
        violations, summary = asyncio.run(chaos.run())
    finally:
        with contextlib.suppress(Exception):
            for node in cluster.config.nodes:  # never leave a frozen process behind
                with contextlib.suppress(Exception):
                    cluster.kill_node(node.name, signal.SIGCONT)
        cluster.stop()
    summary["total_s"] = round(time.monotonic() - started, 1)
    summary["violations"] = len(violations)
    summary["machine"] = {"nproc": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()}
    summary["cluster_root"] = str(root)
    result = ChaosResult(settings, chaos.ops, chaos.faults, violations, summary)
    log(report_text(result))
    return result


def report_text(result: ChaosResult) -> str:
    s, p = result.summary, result.summary["payments"]
    lines = [
        f"chaos {'PASSED' if result.ok else 'FAILED'}: seed {s['seed']}, {s['duration_s']}s of chaos, "
        f"{s['total_s']}s in all",
        f"  payments: {p['attempted']} attempted, {p['ok']} ok, {p['failed']} failed, {p['unknown']} unknown, "
        f"{p['unsent']} unsent -> unknown ones resent: {p['unknown_resolved_ok']} ok, "
        f"{p['unknown_resolved_failed']} failed, {p['still_unknown']} still unknown "
        f"({s['skipped_no_login']} not attempted: no login)",
        f"  refusals: {p['refusals']}",
        f"  unknown answers: {p['unknown_answers']}",
        f"  faults: {s['faults']} on {s['faults_by_node']} ({s['faults_not_landed']} did not land)",
        f"  live reads: {s['live_reads']}; logins {s['logins']}, failed: {s['login_failures']}",
        f"  healed in {s['heal_s']}s, unknowns resent in {s['resend_s']}s, settled in {s['settle_s']}s; "
        f"audit: {s['audit']['committed']} committed, {s['audit']['aborted']} aborted, "
        f"{s['audit']['in_doubt']} in doubt",
        f"  violations: {len(result.violations)} ({s['violations_at_boot']} at boot, before any fault, "
        f"seen again {s['boot_violations_seen_again']} times; {s['violations_from_chaos']} from the chaos)",
        *(f"    {v}" for v in result.violations[:50]),
        f"  replay: {result.settings.make_command()}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of chaos (default 60)")
    parser.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    parser.add_argument("--workers", type=int, default=ChaosSettings.workers)
    parser.add_argument("--rate", type=float, default=ChaosSettings.rate, help="payments/s, all clients together")
    parser.add_argument("--root", type=Path, default=None, help="cluster directory (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the cluster directory even when it passes")
    parser.add_argument("--json", type=Path, default=None, help="write the summary and every fault here")
    parser.add_argument("--replicas", type=int, default=1,
                        help="gateways, sharing a throw-away PostgreSQL when more than one (default 1)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    settings = ChaosSettings(duration_s=args.duration, seed=seed, workers=args.workers, rate=args.rate,
                             replicas=args.replicas)
    root = args.root or Path(tempfile.mkdtemp(prefix=f"miniupi-chaos-{seed}-"))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")]))
    result = run_chaos(settings, root)
    if args.json:
        args.json.write_text(json.dumps({**result.summary, "settings": asdict(settings),
                                         "faults_list": [asdict(f) for f in result.faults],
                                         "violations_list": result.violations}, indent=2))
    if result.ok and not args.keep and args.root is None:
        shutil.rmtree(root, ignore_errors=True)
    elif not result.ok:
        print(f"logs kept in {root} (cluster.log, data/NODE/NODE.log)")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
