"""Whole clusters whose nodes keep their state in PostgreSQL: payments and the audit, a bank
restart, PostgreSQL restarted under load, and the managed server that `miniupi run` runs."""
from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from miniupi.errors import Aborted, Unavailable
from miniupi.ops.postgres_server import LocalPostgres
from miniupi.ops.testing import LocalCluster, local_postgres
from conftest import PASSWORD, money, open_account, wait_for

ON_POSTGRES: dict[str, Any] = {
    "cluster": {"name": "pg", "prepare_timeout_s": 3, "call_timeout_s": 3, "max_opening_deposit": "10000.00"},
    "gateway": {"storage": "postgres"},
    "banks": {"bank_a": {"storage": "postgres"}, "bank_b": {"storage": "postgres"}},
}
TWO_GATEWAYS: dict[str, Any] = {
    "cluster": {**ON_POSTGRES["cluster"], "name": "pg2", "gateway_lease_s": 2},
    "gateways": {"gw1": {"storage": "postgres"}, "gw2": {"storage": "postgres"}},
    "banks": ON_POSTGRES["banks"],
}


def audit_ok(cluster: LocalCluster) -> dict[str, Any]:
    run = cluster.cli("audit", "--json", "--wait", "60")
    assert run.returncode == 0, (run.stdout, run.stderr)
    return json.loads(run.stdout)


def pay_rounds(cluster: LocalCluster, payer: str, payee: str, count: int, amount: int = 100) -> None:
    with cluster.client() as c:
        c.login(payer, PASSWORD)
        for _ in range(count):
            c.pay(payee, amount)


def test_payments_on_postgres_pass_the_audit_and_a_bank_restart_keeps_balances(
        miniupi_cluster: Callable[..., LocalCluster], miniupi_postgres: LocalPostgres) -> None:
    cluster = miniupi_cluster(ON_POSTGRES, postgres=miniupi_postgres)
    alice, bob = open_account(cluster, "bank_a", 5_000), open_account(cluster, "bank_b", 1_000)
    pay_rounds(cluster, alice, bob, 10)
    pay_rounds(cluster, bob, alice, 3, 50)
    report = audit_ok(cluster)
    assert report["ok"] and report["committed"] >= 13
    cluster.restart_node("bank_a")
    cluster.restart_node("gateway")
    with cluster.client() as c:
        c.login(alice, PASSWORD)  # sessions were in PostgreSQL too
        assert money(c) == (5_000 - 1_000 + 150, 5_000 - 1_000 + 150)
        c.pay(bob, 1)
    assert audit_ok(cluster)["ok"]
    assert not [f for node in ("gateway", "bank_a", "bank_b") for f in (cluster.config.data_dir / node).glob("store.*")]


@pytest.fixture
def own_postgres() -> Iterator[LocalPostgres]:
    with local_postgres() as server:
        yield server


@pytest.mark.parametrize("spec", [ON_POSTGRES, TWO_GATEWAYS], ids=["one gateway", "two gateways"])
def test_postgresql_restarted_under_load_fails_payments_cleanly_then_they_resume(
        miniupi_cluster: Callable[..., LocalCluster], own_postgres: LocalPostgres, spec: dict[str, Any]) -> None:
    cluster = miniupi_cluster(spec, postgres=own_postgres)
    payers = [open_account(cluster, "bank_a", 100_000) for _ in range(3)]
    payee = open_account(cluster, "bank_b", 0)
    outcomes: dict[str, int] = {"committed": 0, "unavailable": 0, "aborted": 0}
    committed_after_restart = threading.Event()
    restarted = threading.Event()
    stop = threading.Event()
    errors: list[BaseException] = []

    def payer(account: str) -> None:
        try:
            with cluster.client() as c:
                c.login(account, PASSWORD)
                deadline = time.monotonic() + 120
                while not stop.is_set() and time.monotonic() < deadline:
                    try:
                        c.pay(payee, 1, txn_id=str(uuid.uuid4()))
                        outcomes["committed"] += 1
                        if restarted.is_set():
                            committed_after_restart.set()
                    except Unavailable:
                        outcomes["unavailable"] += 1
                        time.sleep(0.1)
                    except Aborted:
                        outcomes["aborted"] += 1
        except BaseException as e:  # noqa: B036 - reported by the test below
            errors.append(e)

    threads = [threading.Thread(target=payer, args=(account,)) for account in payers]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 30
        while outcomes["committed"] < 20:
            assert time.monotonic() < deadline and not errors, (outcomes, errors)
            time.sleep(0.05)
        own_postgres.stop()
        time.sleep(3)
        own_postgres.start()
        restarted.set()
        assert committed_after_restart.wait(60), f"payments did not resume: {outcomes}"
        time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors
    assert outcomes["unavailable"] + outcomes["aborted"] > 0, outcomes
    report = audit_ok(cluster)  # no restart: what the outage left unwritten is written again by itself
    assert report["ok"], report
    with cluster.client() as c:
        c.login(payee, PASSWORD)
        # Each payment the client saw committed is applied once; one that got no answer may have been too.
        assert outcomes["committed"] <= money(c)[0] <= outcomes["committed"] + outcomes["unavailable"]


@pytest.fixture
def enterable_root() -> Iterator[Path]:
    """A cluster directory the postgres user may enter when we are root (pytest's own tmp is 0700)."""
    root = Path(tempfile.mkdtemp(prefix="miniupi-managed-"))
    os.chmod(root, 0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_miniupi_run_runs_the_managed_postgresql_first_and_nodes_use_it(enterable_root: Path) -> None:
    spec = {**ON_POSTGRES, "postgres": {"managed": True},
            "banks": {"bank_a": {"storage": "postgres", "postgres": {"managed": True}}, "bank_b": {"storage": "sqlite"}},
            "gateway": {"storage": "postgres", "postgres": {"managed": True}}}
    with LocalCluster(enterable_root, spec) as cluster:
        alice, bob = open_account(cluster, "bank_a", 1_000), open_account(cluster, "bank_b", 0)
        pay_rounds(cluster, alice, bob, 3)
        assert audit_ok(cluster)["ok"]
        postgres = wait_for("postgres RUNNING (after its startsecs)", lambda: next(
            (s for s in cluster.supervisor.status() if s.name == "postgres" and s.state == "RUNNING"), None))
        assert postgres.address == f"127.0.0.1:{cluster.config.postgres.port}"
        cluster.restart_node("bank_a")
        assert cluster.cli("restart", "postgres").returncode == 0
        with cluster.client() as c:
            c.login(alice, PASSWORD)
            assert money(c)[0] == 700
    data = cluster.config.data_dir
    assert stat.S_IMODE((data / "postgres.password").stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "postgres").stat().st_mode) == 0o700
    assert (data / "postgres" / "PG_VERSION").exists()
    password = (data / "postgres.password").read_text().strip()
    for f in [*data.glob("*.stderr"), *data.glob("*/*.log"), data / "supervisord.conf"]:
        assert password not in f.read_text(errors="replace"), f
