"""Paying offline through the command line: the outbox queues, `sync` sends, nothing is paid twice.

One cluster for the module; every test opens its own accounts and uses a
client home of its own, and leaves the gateway running. The outbox is read
straight from its SQLite file, as a second witness next to the CLI's words.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from miniupi.backoff import RetryPolicy
from miniupi.client.api import AsyncClient
from miniupi.ops.testing import LocalCluster
from conftest import PASSWORD, open_account, wait_for
from conftest import cli_login as login, cli_ok as ok

pytestmark = pytest.mark.timeout(120)

SPEC = {
    "cluster": {"name": "offline", "prepare_timeout_s": 3, "call_timeout_s": 3,
                "max_opening_deposit": "10000.00"},  # Register opens with deposits here
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
}
QUEUED_LINE = "queued: gateway unreachable, will retry"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("offline"), SPEC) as c:
        yield c


@pytest.fixture(autouse=True)
def gateway_up_afterwards(cluster: LocalCluster) -> Iterator[None]:
    yield
    cluster.start_node("gateway")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def money(cluster: LocalCluster, account: str) -> tuple[int, int]:
    with cluster.client() as c:
        c.login(account, PASSWORD)
        b = c.balance()
        return b.balance, b.available


def history_ids(cluster: LocalCluster, account: str) -> list[str]:
    """The account's applied payments, oldest first."""
    with cluster.client() as c:
        c.login(account, PASSWORD)
        return [i.txn_id for i in reversed(c.history(limit=1000))]


def outbox_rows(home: Path) -> list[dict[str, object]]:
    """The outbox file as it is on disk, in queue order."""
    with contextlib.closing(sqlite3.connect(home / "outbox.sqlite3")) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM payments ORDER BY seq")]


def attempt_outcomes(home: Path, txn_id: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(home / "outbox.sqlite3")) as db:
        return [r[0] for r in db.execute("SELECT outcome FROM attempts WHERE txn_id = ? ORDER BY n", (txn_id,))]


@contextlib.contextmanager
def black_hole(port: int) -> Iterator[None]:
    """A listener on the gateway's port that never answers: calls hang until their deadline."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(64)
        yield


# -- the same code path online -----------------------------------------------------


def test_online_payment_goes_through_the_outbox_and_prints_as_before(cluster: LocalCluster, home: Path) -> None:
    payer, payee = open_account(cluster, "bank_a", 10_00), open_account(cluster, "bank_b", 0)
    login(cluster, payer, home)

    out = ok(cluster, "pay", payee, "2.50", home=home)

    [row] = outbox_rows(home)
    assert out == f"paid 2.50 INR to {payee} (txn {row['txn_id']})\n"
    assert (row["payer"], row["payee"], row["amount"], row["state"], row["result"], row["attempts"]) == \
        (payer, payee, 2_50, "done", "COMMITTED", 1)
    assert attempt_outcomes(home, str(row["txn_id"])) == ["done"]
    assert ok(cluster, "queue", home=home) == "no queued payments\n"
    assert money(cluster, payee) == (2_50, 2_50)
    assert (home / "outbox.sqlite3").stat().st_mode & 0o777 == 0o600


# -- the README's tunnel -------------------------------------------------------------


def test_the_readme_sequence_drains_the_queue_after_the_gateway_returns_with_no_login(
        cluster: LocalCluster, home: Path) -> None:
    """README, Offline payments: stop the gateway, pay three times, start it, `miniupi sync`. No login."""
    payer, payee = open_account(cluster, "bank_a", 50_00), open_account(cluster, "bank_b", 0)
    login(cluster, payer, home)
    cluster.stop_node("gateway")
    assert ok(cluster, "pay", payee, "12.00", home=home) == QUEUED_LINE + "\n"
    answer = json.loads(ok(cluster, "pay", payee, "3.50", "--json", home=home))
    assert (answer["state"], answer["reason"]) == ("QUEUED", "gateway unreachable")
    assert ok(cluster, "pay", payee, "1.25", home=home) == QUEUED_LINE + "\n"
    assert ok(cluster, "queue", home=home).startswith("3 payments queued, oldest first:\n")
    ids = [str(r["txn_id"]) for r in outbox_rows(home)]
    cluster.start_node("gateway")

    out = ok(cluster, "sync", home=home)

    assert out.splitlines() == [f"paid {a} INR to {payee} (txn {t})" for a, t in zip(("12.00", "3.50", "1.25"), ids)]
    assert [(r["state"], r["result"]) for r in outbox_rows(home)] == [("done", "COMMITTED")] * 3
    assert ok(cluster, "queue", home=home) == "no queued payments\n"
    assert money(cluster, payer) == (50_00 - 16_75, 50_00 - 16_75)
    assert money(cluster, payee) == (16_75, 16_75)
    assert history_ids(cluster, payee) == ids  # each applied once, in the order taken
    assert history_ids(cluster, payer) == ids


# -- ten payments in a tunnel ---------------------------------------------------------


def test_ten_payments_taken_offline_are_applied_once_in_order_after_the_client_is_killed(
        cluster: LocalCluster, home: Path) -> None:
    payer, payee = open_account(cluster, "bank_a", 100_00), open_account(cluster, "bank_b", 0)
    login(cluster, payer, home)
    amounts = [f"1.{i:02d}" for i in range(1, 11)]  # distinct, so the order shows
    cluster.stop_node("gateway")

    for i, amount in enumerate(amounts):
        if i % 2:
            answer = json.loads(ok(cluster, "pay", payee, amount, "--json", home=home))
            assert (answer["state"], answer["to"], answer["amount"]) == ("QUEUED", payee, amount)
        else:
            assert ok(cluster, "pay", payee, amount, home=home) == QUEUED_LINE + "\n"
    queued = json.loads(ok(cluster, "queue", "--json", home=home))
    assert [(q["amount"], q["state"]) for q in queued] == [(a, "QUEUED") for a in amounts]
    ids = [q["txn_id"] for q in queued]

    # The client is killed while it waits for an answer to the first payment.
    with black_hole(cluster.config.gateway.port):
        env = {**os.environ, "MINIUPI_CONFIG": str(cluster.config_path), "MINIUPI_HOME": str(home)}
        sync = subprocess.Popen([sys.executable, "-m", "miniupi", "sync"], env=env, cwd=cluster.root,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for("the first payment to be sending", lambda: outbox_rows(home)[0]["state"] == "sending")
        finally:
            sync.kill()
            sync.wait(10)
    assert [r["state"] for r in outbox_rows(home)] == ["sending"] + ["queued"] * 9

    cluster.start_node("gateway")
    out = ok(cluster, "sync", home=home)  # the session outlived the restart: no login

    assert out.splitlines() == [f"paid {a} INR to {payee} (txn {t})" for a, t in zip(amounts, ids)]
    rows = outbox_rows(home)
    assert [(r["txn_id"], r["state"], r["result"]) for r in rows] == [(t, "done", "COMMITTED") for t in ids]
    assert attempt_outcomes(home, ids[0])[-2:] == ["sending", "done"]  # the killed attempt, then the resend
    total = sum(101 + i for i in range(10))
    assert money(cluster, payer) == (100_00 - total, 100_00 - total)
    assert money(cluster, payee) == (total, total)
    assert history_ids(cluster, payee) == ids  # each once, in the order taken
    assert history_ids(cluster, payer) == ids
    assert ok(cluster, "sync", home=home) == "nothing to send\n"
    assert ok(cluster, "queue", home=home) == "no queued payments\n"


def test_sync_while_gateway_down_keeps_everything_queued_and_fails_with_one_line(
        cluster: LocalCluster, home: Path) -> None:
    payer, payee = open_account(cluster, "bank_a", 10_00), open_account(cluster, "bank_b", 0)
    login(cluster, payer, home)
    cluster.stop_node("gateway")
    ok(cluster, "pay", payee, "1.00", home=home)

    r = cluster.cli("sync", home=home)

    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == "miniupi: gateway unreachable; 1 payment stays queued\n"
    [row] = outbox_rows(home)
    assert (row["state"], row["attempts"], row["failures"], row["last_error"]) == \
        ("queued", 2, 2, "gateway unreachable")


# -- refusals are final ---------------------------------------------------------------


def test_queued_payment_refused_for_insufficient_funds_ends_failed_and_is_not_retried(
        cluster: LocalCluster, home: Path) -> None:
    payer, payee = open_account(cluster, "bank_a", 3_00), open_account(cluster, "bank_b", 0)
    login(cluster, payer, home)
    cluster.stop_node("gateway")
    assert ok(cluster, "pay", payee, "5.00", home=home) == QUEUED_LINE + "\n"
    assert ok(cluster, "pay", payee, "1.00", home=home) == QUEUED_LINE + "\n"
    refused, later = (str(r["txn_id"]) for r in outbox_rows(home))
    cluster.start_node("gateway")

    out = ok(cluster, "sync", home=home)

    assert out.splitlines() == [
        f"payment of 5.00 INR to {payee} failed: insufficient funds (txn {refused})",
        f"paid 1.00 INR to {payee} (txn {later})",  # a refusal does not hold up the rest
    ]
    row = outbox_rows(home)[0]
    assert (row["state"], row["error_code"], row["error"]) == ("failed", "FAILED_PRECONDITION", "insufficient funds")
    outcomes = attempt_outcomes(home, refused)
    assert outcomes[-1] == "failed" and outcomes.count("failed") == 1
    # Nothing sends it again: not sync, not another command's flush.
    assert ok(cluster, "sync", home=home) == "nothing to send\n"
    assert ok(cluster, "balance", home=home) == f"{payer}: 2.00 INR\n"
    assert ok(cluster, "pay", payee, "0.50", home=home).startswith("paid 0.50 INR")
    assert attempt_outcomes(home, refused) == outcomes
    assert json.loads(ok(cluster, "queue", "--json", home=home)) == []
    failed = [e for e in json.loads(ok(cluster, "queue", "--all", "--json", home=home)) if e["txn_id"] == refused]
    assert [(e["state"], e["code"], e["error"]) for e in failed] == [("FAILED", "FAILED_PRECONDITION",
                                                                     "insufficient funds")]
    assert money(cluster, payer) == (1_50, 1_50)
    assert money(cluster, payee) == (1_50, 1_50)
    assert history_ids(cluster, payee)[:1] == [later]


def test_pay_refused_online_prints_one_line_and_is_kept_as_failed(cluster: LocalCluster, home: Path) -> None:
    payer, payee = open_account(cluster, "bank_a", 1_00), open_account(cluster, "bank_b", 0)
    login(cluster, payer, home)

    r = cluster.cli("pay", payee, "5.00", home=home)

    assert (r.returncode, r.stdout, r.stderr) == (1, "", "miniupi: insufficient funds\n")
    [row] = outbox_rows(home)
    assert (row["state"], row["error"]) == ("failed", "insufficient funds")
    assert ok(cluster, "sync", home=home) == "nothing to send\n"
    assert attempt_outcomes(home, str(row["txn_id"])) == ["failed"]


def test_bad_input_is_refused_before_it_is_queued_even_offline(cluster: LocalCluster, home: Path) -> None:
    payer = open_account(cluster, "bank_a", 1_00)
    login(cluster, payer, home)
    cluster.stop_node("gateway")
    for args, words in [(("someone@bank_zz", "1.00"), "unknown bank"), (("no-at-sign", "1.00"), "address"),
                        ((payer, "1.00"), "same account"), (("x@bank_b", "0"), "positive"),
                        (("x@bank_b", "1.00", "--id", "not-a-uuid"), "not a UUID")]:
        r = cluster.cli("pay", *args, home=home)
        assert r.returncode == 1 and words in r.stderr and len(r.stderr.splitlines()) == 1, (args, r.stderr)
    assert outbox_rows(home) == []


# -- the library ------------------------------------------------------------------------


def test_library_takes_payments_offline_and_sends_them_later_in_blocking_and_asyncio_forms(
        cluster: LocalCluster, tmp_path: Path) -> None:
    """After the gateway returns, `sync` and `deliver_forever` send with the session they had: no login."""
    payer, payee = open_account(cluster, "bank_a", 20_00), open_account(cluster, "bank_b", 0)
    outbox = tmp_path / "outbox.sqlite3"
    with cluster.client(outbox=outbox) as c:
        session = c.login(payer, PASSWORD)
        assert c.submit(payee, 1_00).state == "done"
        cluster.stop_node("gateway")
        queued = c.submit(payee, 2_00)
        assert (queued.state, queued.last_error) == ("queued", "gateway unreachable")
        cluster.start_node("gateway")

    async def later() -> list[tuple[str, str]]:
        async with AsyncClient(cluster.config, session=session, outbox=outbox) as a:
            report = await a.sync()
            assert report.stopped is None and report.pending == 0
            return [(e.txn_id, e.state) for e in report.finished]

    assert asyncio.run(later()) == [(queued.txn_id, "done")]
    assert money(cluster, payee) == (3_00, 3_00)

    async def in_the_background() -> tuple[list[str], list[str]]:
        sent: list[str] = []  # payments that got their final answer
        stuck: list[str] = []
        async with AsyncClient(cluster.config, session=session, outbox=outbox,
                               retry=RetryPolicy(base_s=0.2, cap_s=1)) as a:
            await asyncio.to_thread(cluster.stop_node, "gateway")
            entries = [a.enqueue(payee, amount) for amount in (4_00, 5_00)]
            task = asyncio.create_task(a.deliver_forever(on_finished=lambda e: sent.append(f"{e.txn_id} {e.state}"),
                                                         on_stuck=lambda e, _: stuck.append(e.message)))
            try:
                await asyncio.sleep(0.5)  # it tries, and finds the gateway away
                await asyncio.to_thread(cluster.start_node, "gateway")
                for _ in range(300):  # 30 s at most
                    if len(sent) == len(entries):
                        break
                    await asyncio.sleep(0.1)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            assert sent == [f"{e.txn_id} done" for e in entries], (sent, stuck)
        return sent, stuck

    sent, stuck = asyncio.run(in_the_background())
    assert not [m for m in stuck if "log in" in m]  # never asked for a login
    assert money(cluster, payee) == (12_00, 12_00)
    assert history_ids(cluster, payee)[-2:] == [s.split()[0] for s in sent]
