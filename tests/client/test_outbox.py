"""The outbox file on its own: private, durable at once, keyed by id, ordered per payer, one sender at a time.

Real SQLite files and real child processes that die without closing them;
no gateway is running (the one test that builds a client only needs its
address to be configured).
"""
from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from miniupi.ops.certs import init_certs
from miniupi.client.api import AsyncClient, Session
from miniupi.backoff import RetryPolicy
from miniupi.client.outbox import Outbox
from miniupi.errors import AlreadyExists, InsufficientFunds, NotFound
from miniupi.ops.testing import LocalCluster

pytestmark = pytest.mark.timeout(60)


def run_child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)


def test_outbox_file_is_private_and_written_with_wal_and_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with contextlib.closing(Outbox(path)) as box:
        box.add(str(uuid.uuid4()), "alice@bank_a", "bob@bank_b", 1_00, "INR")
        synchronous = box._db.execute("PRAGMA synchronous").fetchone()[0]  # per connection: ask the box's own
        for f in tmp_path.iterdir():
            assert f.stat().st_mode & 0o777 == 0o600, f
    assert synchronous == 2  # FULL
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_queued_payment_survives_a_kill_right_after_it_was_taken(tmp_path: Path) -> None:
    path, txn_id = tmp_path / "outbox.sqlite3", str(uuid.uuid4())
    child = run_child(
        "import os, signal\n"
        "from miniupi.client.outbox import Outbox\n"
        f"Outbox({str(path)!r}).add({txn_id!r}, 'alice@bank_a', 'bob@bank_b', 250, 'INR')\n"
        "os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint\n")
    assert child.returncode == -9, child.stderr
    with contextlib.closing(Outbox(path)) as box:
        entry = box.get(txn_id)
    assert entry is not None
    assert (entry.state, entry.payer, entry.payee, entry.amount, entry.attempts) == \
        ("queued", "alice@bank_a", "bob@bank_b", 250, 0)


def test_an_id_is_one_payment_the_same_payment_again_is_the_same_row(tmp_path: Path) -> None:
    txn_id = str(uuid.uuid4())
    with contextlib.closing(Outbox(tmp_path / "outbox.sqlite3")) as box:
        first = box.add(txn_id, "alice@bank_a", "bob@bank_b", 1_00, "INR")
        assert box.add(txn_id, "alice@bank_a", "bob@bank_b", 1_00, "INR") == first
        with pytest.raises(AlreadyExists, match=txn_id):
            box.add(txn_id, "alice@bank_a", "bob@bank_b", 2_00, "INR")
        assert box.pending() == [first]


def test_each_payers_queue_keeps_the_order_payments_were_taken_in(tmp_path: Path) -> None:
    with contextlib.closing(Outbox(tmp_path / "outbox.sqlite3")) as box:
        taken = [(str(uuid.uuid4()), payer) for payer in ["alice@bank_a", "carol@bank_b"] * 3]
        for txn_id, payer in taken:
            box.add(txn_id, payer, "bob@bank_b", 1_00, "INR")
        alice = [t for t, p in taken if p == "alice@bank_a"]
        assert [e.txn_id for e in box.pending("alice@bank_a")] == alice
        assert [e.txn_id for e in box.pending()] == [t for t, _ in taken]
        head = box.head("alice@bank_a")
        assert head is not None and head.txn_id == alice[0]
        # A failed send of the head holds back the payer's later payments, not anyone else's.
        n = box.claim(alice[0])
        box.requeue(alice[0], n, "unreachable", "gateway unreachable", retry_at=time.time() + 60,
                    transport_failure=True)
        assert {e.next_attempt_at > time.time() + 50 for e in box.pending("alice@bank_a")} == {True}
        assert {e.next_attempt_at < time.time() for e in box.pending("carol@bank_b")} == {True}


def test_only_one_process_sends_an_outbox_at_a_time(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster")  # configured, never started: nothing may be sent anyway
    init_certs(cluster.config)
    path = tmp_path / "home" / "outbox.sqlite3"
    path.parent.mkdir()
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl, sys, time\n"
                               f"f = open({str(path) + '.lock'!r}, 'w')\n"
                               "fcntl.flock(f, fcntl.LOCK_EX)\n"
                               "print('held', flush=True)\n"
                               "time.sleep(30)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"

        async def flush() -> tuple[bool, int]:
            session = Session("alice@bank_a", "id.secret", time.time() + 60)
            async with AsyncClient(cluster.config, session=session, outbox=path, retry=RetryPolicy()) as client:
                client.enqueue("bob@bank_b", 1_00)
                report = await client.sync(wait_s=0.3)
                return report.busy, client.queued()[0].attempts

        assert asyncio.run(flush()) == (True, 0)  # it waited, then left the payment to the holder
    finally:
        holder.kill()
        holder.wait(10)


def test_a_refusal_is_kept_with_its_reason_and_read_back_as_its_class(tmp_path: Path) -> None:
    txn_id = str(uuid.uuid4())
    with contextlib.closing(Outbox(tmp_path / "outbox.sqlite3")) as box:
        box.add(txn_id, "alice@bank_a", "bob@bank_b", 1_00, "INR")
        n = box.claim(txn_id)
        refusal = InsufficientFunds("worded any way")
        box.finish_failed(txn_id, n, refusal.code, refusal.message, reason=refusal.reason)
    with contextlib.closing(Outbox(tmp_path / "outbox.sqlite3")) as box:  # as the next command reads it
        entry = box.get(txn_id)
        assert entry is not None and entry.error_reason == "INSUFFICIENT_FUNDS"
        assert type(entry.error) is InsufficientFunds and entry.error.message == "worded any way"


def test_an_outbox_from_before_reasons_opens_and_keeps_its_refusals(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    txn_id = str(uuid.uuid4())
    with contextlib.closing(Outbox(path)) as box:
        box.add(txn_id, "alice@bank_a", "nobody@bank_b", 1_00, "INR")
        box.finish_failed(txn_id, box.claim(txn_id), "NOT_FOUND", "unknown account nobody@bank_b")
    with contextlib.closing(sqlite3.connect(path)) as db:  # the file as an older miniupi left it
        db.execute("ALTER TABLE payments DROP COLUMN error_reason")
        db.commit()
    with contextlib.closing(Outbox(path)) as box:
        entry = box.get(txn_id)
        assert entry is not None and entry.state == "failed" and entry.error_reason == ""
        assert type(entry.error) is NotFound and entry.error.message == "unknown account nobody@bank_b"
