"""The outbox file on its own: private, durable at once, keyed by id, ordered per payer, one sender at a time.

Real SQLite files and real child processes that die without closing them;
no gateway is running (the one test that builds a client only needs its
address to be configured).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
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
from miniupi.client.home import client_home
from miniupi.client.outbox import Outbox
from miniupi.client.sync import Courier
from miniupi.errors import AlreadyExists, InsufficientFunds, InvalidArgument, NotFound
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


# -- pruning: finished entries are kept for the retention period, then go -----------------

DAY = 86_400.0


def rows_and_attempts(path: Path) -> tuple[dict[str, tuple[object, ...]], dict[str, list[tuple[object, ...]]]]:
    """Every payment row by id and every attempt row by id, read with plain SQLite (which prunes nothing)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        payments = {row[0]: row for row in db.execute("SELECT * FROM payments")}
        attempts: dict[str, list[tuple[object, ...]]] = {}
        for row in db.execute("SELECT * FROM attempts ORDER BY txn_id, n"):
            attempts.setdefault(row[0], []).append(row)
    return payments, attempts


def finish(box: Outbox, txn_id: str, at: float, refused: bool = False) -> None:
    """Take the payment, send it once and record the gateway's final answer `at` that time."""
    box.add(txn_id, "alice@bank_a", "bob@bank_b", 1_00, "INR", now=at - 1)
    n = box.claim(txn_id, now=at - 1)
    if refused:
        error = InsufficientFunds("insufficient funds")
        box.finish_failed(txn_id, n, error.code, error.message, now=at, reason=error.reason)
    else:
        box.finish_done(txn_id, n, "COMMITTED", now=at)


def last_pruned(path: Path, at: float) -> None:
    """Write the time this file was last pruned, as a process that pruned it then would have (if it keeps one)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'housekeeping'").fetchone():
            db.execute("UPDATE housekeeping SET value = ? WHERE name = 'pruned_at'", (at,))
            db.commit()


def test_pruning_drops_only_finished_entries_past_retention_and_keeps_every_queued_and_sending_one(
        tmp_path: Path) -> None:
    path, now = tmp_path / "outbox.sqlite3", time.time()
    ids = {name: str(uuid.uuid4()) for name in (
        "queued_old", "sending_old", "requeued_old", "stamped_queued",
        "done_old", "failed_old", "done_29d", "failed_1d", "done_now")}
    with contextlib.closing(Outbox(path, keep_days=30)) as box:
        for name in ("queued_old", "sending_old", "requeued_old", "stamped_queued"):
            box.add(ids[name], "alice@bank_a", "bob@bank_b", 1_00, "INR", now=now - 400 * DAY)
        box.claim(ids["sending_old"], now=now - 400 * DAY)  # its sender died: still pending
        n = box.claim(ids["requeued_old"], now=now - 399 * DAY)
        box.requeue(ids["requeued_old"], n, "unreachable", "gateway unreachable", retry_at=now - 398 * DAY,
                    transport_failure=True, now=now - 399 * DAY)
        finish(box, ids["done_old"], now - 31 * DAY)
        finish(box, ids["failed_old"], now - 30 * DAY - 1, refused=True)
        finish(box, ids["done_29d"], now - 29 * DAY)
        finish(box, ids["failed_1d"], now - DAY, refused=True)
        finish(box, ids["done_now"], now)
        # The state alone protects a row: a queued one with an ancient finish time written into it stays.
        box._db.execute("UPDATE payments SET finished_at = ? WHERE txn_id = ?", (now - 999 * DAY,
                                                                                  ids["stamped_queued"]))
        before_rows, before_attempts = rows_and_attempts(path)

        assert box.prune(now) == 2
        assert box.prune(now) == 0  # the same cutoff again finds nothing more

    after_rows, after_attempts = rows_and_attempts(path)
    gone = {ids["done_old"], ids["failed_old"]}
    assert set(after_rows) == set(before_rows) - gone
    assert after_rows == {k: v for k, v in before_rows.items() if k not in gone}  # the rest untouched
    assert after_attempts == {k: v for k, v in before_attempts.items() if k not in gone}
    with contextlib.closing(Outbox(path, keep_days=30)) as box:
        assert [e.txn_id for e in box.pending()] == [ids[n] for n in (
            "queued_old", "sending_old", "requeued_old", "stamped_queued")]
        assert [e.state for e in box.pending()] == ["queued", "sending", "queued", "queued"]


def test_pruning_runs_when_an_outbox_is_opened_at_most_once_an_hour_whichever_process_opens_it(
        tmp_path: Path) -> None:
    path, old = tmp_path / "outbox.sqlite3", str(uuid.uuid4())
    with contextlib.closing(Outbox(path, keep_days=1)) as box:  # opening it pruned it: an hour starts now
        now = time.time()
        finish(box, old, now - 2 * DAY)
        assert box.prune_if_due(now) == 0 and box.get(old) is not None
        assert box.prune_if_due(now + 3601) == 1 and box.get(old) is None
    for minutes_ago, kept in ((59, True), (61, False)):
        with contextlib.closing(Outbox(path, keep_days=1)) as box:
            finish(box, old := str(uuid.uuid4()), now - 2 * DAY)
        last_pruned(path, time.time() - minutes_ago * 60)
        with contextlib.closing(Outbox(path, keep_days=1)) as box:  # as the next command opens it
            assert (box.get(old) is not None) == kept, minutes_ago


class _Committed:
    state = "COMMITTED"


class _AlwaysCommits:
    """A Payer (sync.py) whose every payment the gateway answers COMMITTED at once; its session never ends."""

    def __init__(self, account: str) -> None:
        self.session = Session(account, "id.secret", float("inf"))

    async def pay(self, to: str, amount: int, *, txn_id: str | None = None,
                  from_account: str | None = None) -> _Committed:
        return _Committed()


def test_a_sender_that_runs_for_weeks_keeps_the_outbox_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """One outbox open for 40 days of a fake clock, 5 payments a day: rows and pages level off."""
    keep, per_day = 3, 5
    clock = [time.time()]
    monkeypatch.setenv("MINIUPI_OUTBOX_KEEP_DAYS", str(keep))
    box = Outbox(tmp_path / "outbox.sqlite3")
    courier = Courier(box, RetryPolicy(), clock=lambda: clock[0])
    payer = _AlwaysCommits("alice@bank_a")
    counts: list[tuple[int, int]] = []
    pages: list[int] = []

    async def forty_days() -> None:
        for _ in range(40):
            clock[0] += DAY
            for _ in range(per_day):
                box.add(str(uuid.uuid4()), "alice@bank_a", "bob@bank_b", 1_00, "INR", now=clock[0])
            report = await courier.flush(payer)
            assert len(report.finished) == per_day and report.pending == 0
            counts.append((box._db.execute("SELECT COUNT(*) FROM payments").fetchone()[0],
                           box._db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]))
            pages.append(box._db.execute("PRAGMA page_count").fetchone()[0])

    try:
        asyncio.run(forty_days())
    finally:
        box.close()
    # Today's payments and those of the last `keep` days; the day before that went at today's flush.
    steady = per_day * (keep + 1)
    assert counts[keep:] == [(steady, steady)] * (40 - keep), counts
    assert max(pages[20:]) <= max(pages[:20]), pages  # freed pages are reused: the file stops growing


def test_a_bad_retention_is_refused_in_one_line_before_the_file_is_made(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    for bad in (0, -1, float("nan"), float("inf"), 36_501, True, "7"):
        with pytest.raises(InvalidArgument, match=r"^keep_days must be a number of days above 0") as refused:
            Outbox(path, keep_days=bad)  # type: ignore[arg-type]
        assert "\n" not in refused.value.message
    assert not path.exists()
    with contextlib.closing(Outbox(path, keep_days=0.5)) as box:
        assert box.keep_days == 0.5


def test_queue_all_still_shows_the_recent_finished_entries_after_a_prune(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = LocalCluster(tmp_path / "cluster")  # configured, never started: `queue` reads only the file
    home = client_home(tmp_path / "home")
    now = time.time()
    ids = {name: str(uuid.uuid4()) for name in ("queued_old", "done_40d", "failed_31d", "done_2d", "failed_1h")}
    with contextlib.closing(Outbox.in_home(home)) as box:
        box.add(ids["queued_old"], "alice@bank_a", "bob@bank_b", 1_00, "INR", now=now - 100 * DAY)
        finish(box, ids["done_40d"], now - 40 * DAY)
        finish(box, ids["failed_31d"], now - 31 * DAY, refused=True)
        finish(box, ids["done_2d"], now - 2 * DAY)
        finish(box, ids["failed_1h"], now - 3600, refused=True)

    def shown(*args: str) -> str:
        r = cluster.cli("queue", "--all", *args, home=home)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        return r.stdout

    last_pruned(home / "outbox.sqlite3", now - 2 * 3600)
    assert [e["txn_id"] for e in json.loads(shown("--json"))] == \
        [ids["queued_old"], ids["done_2d"], ids["failed_1h"]]  # the default 30 days
    text = shown()
    assert ids["done_2d"] in text and ids["failed_1h"] in text and ids["done_40d"] not in text

    monkeypatch.setenv("MINIUPI_OUTBOX_KEEP_DAYS", "1.5")
    last_pruned(home / "outbox.sqlite3", now - 2 * 3600)
    assert [e["txn_id"] for e in json.loads(shown("--json"))] == [ids["queued_old"], ids["failed_1h"]]


CHILD_PRUNES = """\
import sys, time
from miniupi.client.outbox import Outbox
print("opening", flush=True)
Outbox(sys.argv[1])  # never pruned before: opening it prunes it, keeping 30 days
print("pruned", flush=True)
time.sleep(60)
"""


def test_a_prune_killed_at_any_moment_loses_nothing_queued(tmp_path: Path) -> None:
    """A big outbox pruned by a child killed with SIGKILL at random moments: all or nothing, queued intact."""
    template, now = tmp_path / "template.sqlite3", time.time()
    with contextlib.closing(Outbox(template)) as box:
        for i in range(60):
            txn_id = str(uuid.uuid4())
            box.add(txn_id, f"payer{i % 3}@bank_a", "bob@bank_b", 1_00 + i, "INR", now=now - 90 * DAY)
            if i % 4 == 0:
                box.claim(txn_id, now=now - 90 * DAY)  # left sending by a sender that died
        old, recent = now - 60 * DAY, now - DAY
        db = box._db
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO payments (txn_id, seq, payer, payee, amount, currency, state, attempts, created_at, "
            "next_attempt_at, result, finished_at) VALUES (?, ?, 'alice@bank_a', 'bob@bank_b', ?, 'INR', ?, 1, ?, ?, "
            "'COMMITTED', ?)",
            [(str(uuid.uuid4()), 1000 + i, 1 + i, "done" if i % 7 else "failed", at, at, at)
             for i, at in enumerate([old] * 50_000 + [recent] * 500)])
        db.execute("INSERT INTO attempts SELECT txn_id, 1, created_at, finished_at, state, '', NULL "
                   "FROM payments WHERE finished_at IS NOT NULL")
        db.execute("COMMIT")
    last_pruned(template, 0.0)  # long ago: the next open prunes
    rows, attempts = rows_and_attempts(template)
    pending = {k: v for k, v in rows.items() if v[6] in ("queued", "sending")}
    finished = set(rows) - set(pending)
    kept = {k for k in finished if rows[k][15] == recent}
    assert len(pending) == 60 and len(finished) == 50_500 and len(kept) == 500

    def prune_in_child(path: Path, kill_after: float | None) -> tuple[float, bool]:
        """Run the child on a fresh copy; kill it `kill_after` s into its prune (None: once done).
        Returns how long it ran after opening, and whether it had finished the prune."""
        path.unlink(missing_ok=True)
        shutil.copyfile(template, path)
        child = subprocess.Popen([sys.executable, "-c", CHILD_PRUNES, str(path)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=environ)
        try:
            assert child.stdout is not None and child.stdout.readline() == "opening\n"
            start = time.monotonic()
            if kill_after is None:
                assert child.stdout.readline() == "pruned\n", child.stderr and child.stderr.read()
            else:
                time.sleep(kill_after)
            took = time.monotonic() - start
            child.kill()
            assert child.wait(10) == -9  # it was killed, it did not stop on its own
            return took, kill_after is None or "pruned" in child.stdout.read()
        finally:
            child.kill()
            child.wait(10)

    def check(path: Path) -> str:
        with contextlib.closing(sqlite3.connect(path)) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        now_rows, now_attempts = rows_and_attempts(path)
        for txn_id, row in pending.items():  # every queued and sending entry, exactly as it was
            assert now_rows.get(txn_id) == row and now_attempts.get(txn_id) == attempts.get(txn_id), txn_id
        left = set(now_rows) - set(pending)
        assert set(now_attempts) <= set(now_rows)  # an entry and its attempts go together
        assert all(now_attempts.get(k) == attempts.get(k) for k in left)
        # All there, or the old ones gone: never a part of them.
        outcome = {frozenset(finished): "untouched", frozenset(kept): "pruned"}.get(frozenset(left), "")
        assert outcome, f"{len(left)} of {len(finished)} finished entries left, {len(kept)} of them recent"
        return outcome

    environ = {k: v for k, v in os.environ.items() if k != "MINIUPI_OUTBOX_KEEP_DAYS"}  # the default: 30 days
    copy = tmp_path / "outbox.sqlite3"
    durations = []
    for _ in range(2):  # the quicker of two undisturbed prunes: kills before it land inside one
        took, done = prune_in_child(copy, None)
        assert done and check(copy) == "pruned"
        durations.append(took)
    duration = min(durations)
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    outcomes = []
    for _ in range(6):
        _, done = prune_in_child(copy, rng.uniform(0, 0.9 * duration))
        outcomes.append((done, check(copy)))
        with contextlib.closing(Outbox(copy, keep_days=30)) as box:  # the next command finishes the job
            assert len(box.pending()) == 60
        assert check(copy) == "pruned"
    assert not all(done for done, _ in outcomes), (seed, duration, outcomes)  # some kills came mid-prune
