"""The client's outbox: every payment is written here, durably, before it is sent.

One SQLite file in the client home (0600, WAL, synchronous=FULL). A row is
keyed by its transaction id and belongs to its payer; `seq` keeps the order
the payments were taken in. The states:

    queued  --claim-->  sending  --final answer-->  done (result) | failed (code, reason, message)
       ^                   |
       +--- no answer -----+   (transport failure, session expired, interrupted)

A row left in `sending` by a process that died is pending all the same: the
next flush sends it again with the same id, and the gateway's idempotency
turns that resend into the stored result. That is what makes a payment
happen exactly once however often it is sent.

Every send is also logged in `attempts`, with its start, end, outcome and
the time of the retry it scheduled, for `miniupi queue` and for tests.

Finished rows are history, not work: they are kept for a retention period
(keep_days: the argument, else $MINIUPI_OUTBOX_KEEP_DAYS, else 30 days) so
that `miniupi queue --all` shows them, then pruned with their attempts, so
the file follows what is live rather than every payment ever made. Pruning
runs when an outbox is opened and at each flush, at most once an hour per
file (the time is kept in the file, so one-shot commands share it), as one
transaction that deletes only done and failed rows: a crash part-way
leaves the file as it was, and a queued or sending row is never touched,
however old. An id whose row was pruned can be queued again; the gateway's
idempotency still knows it.
"""
from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from miniupi.errors import AlreadyExists, FailedPrecondition, InvalidArgument, MiniupiError, from_status
from miniupi.inputs import parse_positive_number, quoted

OUTBOX_FILE = "outbox.sqlite3"
QUEUED, SENDING, DONE, FAILED = "queued", "sending", "done", "failed"
PENDING = (QUEUED, SENDING)

KEEP_DAYS_ENV = "MINIUPI_OUTBOX_KEEP_DAYS"
DEFAULT_KEEP_DAYS = 30.0
MAX_KEEP_DAYS = 36_500  # a hundred years: longer is a typo
PRUNE_EVERY_S = 3600.0  # a file is looked at for pruning at most this often
_DAY_S = 86_400.0
# The rows a prune may delete: finished, and finished before the cutoff (the partial index below).
_PRUNABLE = "state IN ('done', 'failed') AND finished_at < ?"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    txn_id          TEXT PRIMARY KEY,
    seq             INTEGER NOT NULL UNIQUE,
    payer           TEXT NOT NULL,
    payee           TEXT NOT NULL,
    amount          INTEGER NOT NULL,
    currency        TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('queued', 'sending', 'done', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,  -- sends so far
    failures        INTEGER NOT NULL DEFAULT 0,  -- transport failures in a row: the backoff exponent
    created_at      REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    last_error      TEXT NOT NULL DEFAULT '',    -- why it is still queued
    result          TEXT NOT NULL DEFAULT '',    -- the gateway's state when done (COMMITTED)
    error_code      TEXT NOT NULL DEFAULT '',    -- the refusal's status code when failed
    error           TEXT NOT NULL DEFAULT '',    -- the refusal's message when failed
    finished_at     REAL,
    error_reason    TEXT NOT NULL DEFAULT ''     -- the refusal's reason (errors.py) when failed
);
CREATE INDEX IF NOT EXISTS payments_pending ON payments (payer, seq) WHERE state IN ('queued', 'sending');
CREATE INDEX IF NOT EXISTS payments_finished ON payments (finished_at) WHERE state IN ('done', 'failed');
CREATE TABLE IF NOT EXISTS attempts (
    txn_id     TEXT NOT NULL,
    n          INTEGER NOT NULL,
    started_at REAL NOT NULL,
    ended_at   REAL,
    outcome    TEXT NOT NULL,                    -- sending, done, failed, unreachable, unauthenticated, interrupted
    detail     TEXT NOT NULL DEFAULT '',
    retry_at   REAL,                             -- the next attempt this one scheduled, if any
    PRIMARY KEY (txn_id, n)
);
CREATE TABLE IF NOT EXISTS housekeeping (
    name  TEXT PRIMARY KEY,                      -- pruned_at: when this file was last pruned
    value REAL NOT NULL
)
"""


@dataclass(frozen=True)
class OutboxEntry:
    txn_id: str
    seq: int
    payer: str
    payee: str
    amount: int  # minor units
    currency: str
    state: str
    attempts: int
    failures: int
    created_at: float
    next_attempt_at: float
    last_error: str
    result: str
    error_code: str
    error_message: str
    finished_at: float | None
    error_reason: str

    @property
    def pending(self) -> bool:
        return self.state in PENDING

    @property
    def error(self) -> MiniupiError | None:
        """The gateway's refusal, as the exception the client library would raise."""
        return from_status(self.error_code, self.error_message, self.error_reason) if self.state == FAILED else None

    def same_payment(self, payer: str, payee: str, amount: int, currency: str) -> bool:
        return (self.payer, self.payee, self.amount, self.currency) == (payer, payee, amount, currency)


@dataclass(frozen=True)
class Attempt:
    txn_id: str
    n: int
    started_at: float
    ended_at: float | None
    outcome: str
    detail: str
    retry_at: float | None


_COLUMNS = ("txn_id, seq, payer, payee, amount, currency, state, attempts, failures, created_at, "
            "next_attempt_at, last_error, result, error_code, error, finished_at, error_reason")


def check_keep_days(days: float) -> float:
    """The library's keep_days, refused in one line unless a number of days above 0 and at most MAX_KEEP_DAYS."""
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not (
            math.isfinite(days) and 0 < days <= MAX_KEEP_DAYS):
        raise InvalidArgument(f"keep_days must be a number of days above 0 and at most {MAX_KEEP_DAYS}, not {days!r}")
    return float(days)


def keep_days_from_env(environ: Mapping[str, str] | None = None) -> float:
    """$MINIUPI_OUTBOX_KEEP_DAYS (a plain decimal, such as 7 or 0.5), else DEFAULT_KEEP_DAYS."""
    environ = os.environ if environ is None else environ
    raw = environ.get(KEEP_DAYS_ENV, "").strip()
    if not raw:
        return DEFAULT_KEEP_DAYS
    try:
        return parse_positive_number(raw, MAX_KEEP_DAYS)
    except InvalidArgument:
        raise InvalidArgument(f"{KEEP_DAYS_ENV} must be a number of days above 0 and at most {MAX_KEEP_DAYS}, "
                              f"not {quoted(raw)}") from None


class Outbox:
    """The outbox file. Plain blocking SQLite: each write is a short local fsync."""

    def __init__(self, path: str | os.PathLike[str], keep_days: float | None = None) -> None:
        """keep_days: how long finished entries stay (default: $MINIUPI_OUTBOX_KEEP_DAYS, else 30)."""
        # Checked before the file is touched: a bad setting makes nothing.
        self.keep_days = keep_days_from_env() if keep_days is None else check_keep_days(keep_days)
        self.path = Path(path)
        if not self.path.exists():
            # Made 0600 before SQLite opens it; its -wal and -shm files copy these permissions.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._transaction() as db:
                for statement in _statements(_SCHEMA):
                    db.execute(statement)
                columns = {row[1] for row in db.execute("PRAGMA table_info(payments)")}
                if "error_reason" not in columns:  # an outbox from before reasons were kept
                    db.execute("ALTER TABLE payments ADD COLUMN error_reason TEXT NOT NULL DEFAULT ''")
        except sqlite3.DatabaseError as e:  # not an outbox, or not ours to write: the user's to sort out
            self._db.close()
            raise FailedPrecondition(f"cannot use the outbox {self.path}: {e}") from None
        self.prune_if_due()

    @classmethod
    def in_home(cls, home: Path) -> Outbox:
        return cls(home / OUTBOX_FILE)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic, durable write; IMMEDIATE so two processes never interleave."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    # -- reading ----------------------------------------------------------

    def _rows(self, where: str, args: tuple[object, ...] = ()) -> list[OutboxEntry]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM payments {where}", args).fetchall()
        return [OutboxEntry(*row) for row in rows]

    def get(self, txn_id: str) -> OutboxEntry | None:
        found = self._rows("WHERE txn_id = ?", (txn_id,))
        return found[0] if found else None

    def pending(self, payer: str | None = None) -> list[OutboxEntry]:
        """Queued and sending payments in the order they were taken (of one payer, or all)."""
        if payer is None:
            return self._rows("WHERE state IN ('queued', 'sending') ORDER BY seq")
        return self._rows("WHERE payer = ? AND state IN ('queued', 'sending') ORDER BY seq", (payer,))

    def head(self, payer: str) -> OutboxEntry | None:
        """The payer's oldest pending payment: the only one that may be sent next."""
        found = self._rows("WHERE payer = ? AND state IN ('queued', 'sending') ORDER BY seq LIMIT 1", (payer,))
        return found[0] if found else None

    def recent(self, limit: int = 50) -> list[OutboxEntry]:
        """Every state, newest last: the pending ones and what finished lately."""
        return list(reversed(self._rows("ORDER BY seq DESC LIMIT ?", (limit,))))

    def attempts(self, txn_id: str) -> list[Attempt]:
        rows = self._db.execute(
            "SELECT txn_id, n, started_at, ended_at, outcome, detail, retry_at FROM attempts "
            "WHERE txn_id = ? ORDER BY n", (txn_id,)).fetchall()
        return [Attempt(*row) for row in rows]

    # -- writing ----------------------------------------------------------

    def add(self, txn_id: str, payer: str, payee: str, amount: int, currency: str,
            now: float | None = None) -> OutboxEntry:
        """Queue a payment, durably. The same id for the same payment returns the row it already has."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            existing = self.get(txn_id)
            if existing is not None:
                if not existing.same_payment(payer, payee, amount, currency):
                    raise AlreadyExists(f"transaction id {txn_id} was already used for a different payment")
                return existing
            db.execute(
                "INSERT INTO payments (txn_id, seq, payer, payee, amount, currency, state, created_at, next_attempt_at)"
                " VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM payments), ?, ?, ?, ?, 'queued', ?, ?)",
                (txn_id, payer, payee, amount, currency, now, now))
        entry = self.get(txn_id)
        assert entry is not None
        return entry

    def claim(self, txn_id: str, now: float | None = None) -> int:
        """Mark the payment as being sent; returns this attempt's number (1, 2, ...)."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            (n,) = db.execute("SELECT attempts + 1 FROM payments WHERE txn_id = ? AND state IN ('queued', 'sending')",
                              (txn_id,)).fetchone() or (None,)
            if n is None:
                raise KeyError(f"{txn_id} is not pending in the outbox")
            db.execute("UPDATE payments SET state = 'sending', attempts = ? WHERE txn_id = ?", (n, txn_id))
            db.execute("INSERT INTO attempts (txn_id, n, started_at, outcome) VALUES (?, ?, ?, 'sending')",
                       (txn_id, n, now))
        return n

    def finish_done(self, txn_id: str, n: int, result: str, now: float | None = None) -> OutboxEntry:
        """The gateway's final answer was yes: keep its result."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            db.execute("UPDATE payments SET state = 'done', result = ?, last_error = '', finished_at = ? "
                       "WHERE txn_id = ?", (result, now, txn_id))
            self._end_attempt(db, txn_id, n, now, "done", result, None)
        return self._must_get(txn_id)

    def finish_failed(self, txn_id: str, n: int, code: str, message: str, now: float | None = None,
                      reason: str = "") -> OutboxEntry:
        """The gateway's final answer was a refusal: keep it, never send again."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            db.execute("UPDATE payments SET state = 'failed', error_code = ?, error = ?, error_reason = ?, "
                       "last_error = '', finished_at = ? WHERE txn_id = ?", (code, message, reason, now, txn_id))
            self._end_attempt(db, txn_id, n, now, "failed", f"{code}: {message}", None)
        return self._must_get(txn_id)

    def requeue(self, txn_id: str, n: int, outcome: str, reason: str, retry_at: float,
                transport_failure: bool, now: float | None = None) -> OutboxEntry:
        """No final answer: back to queued, to be sent again from `retry_at`.

        A transport failure counts towards the backoff. The payer's later
        payments wait at least as long, for the same reason, since they may
        only go after this one.
        """
        now = time.time() if now is None else now
        with self._transaction() as db:
            db.execute("UPDATE payments SET state = 'queued', last_error = ?, next_attempt_at = ?, "
                       "failures = failures + ? WHERE txn_id = ?", (reason, retry_at, int(transport_failure), txn_id))
            db.execute("UPDATE payments SET next_attempt_at = MAX(next_attempt_at, ?), last_error = ? "
                       "WHERE state IN ('queued', 'sending') AND txn_id != ? AND "
                       "payer = (SELECT payer FROM payments WHERE txn_id = ?)",
                       (retry_at, reason, txn_id, txn_id))
            self._end_attempt(db, txn_id, n, now, outcome, reason, retry_at)
        return self._must_get(txn_id)

    def note(self, payer: str, reason: str) -> None:
        """Say why the payer's queue is waiting when no attempt could be made (no valid session)."""
        with self._transaction() as db:
            db.execute("UPDATE payments SET last_error = ? WHERE payer = ? AND state IN ('queued', 'sending')",
                       (reason, payer))

    # -- pruning ----------------------------------------------------------

    def prune(self, now: float | None = None) -> int:
        """Delete the entries that finished more than keep_days before `now`, with their attempts.

        One transaction, so a crash part-way deletes nothing; only done and
        failed rows match, so nothing queued or sending is ever deleted.
        Returns how many entries went.
        """
        now = time.time() if now is None else now
        cutoff = now - self.keep_days * _DAY_S
        with self._transaction() as db:
            db.execute(f"DELETE FROM attempts WHERE txn_id IN (SELECT txn_id FROM payments WHERE {_PRUNABLE})",
                       (cutoff,))
            gone = db.execute(f"DELETE FROM payments WHERE {_PRUNABLE}", (cutoff,)).rowcount
            db.execute("INSERT INTO housekeeping (name, value) VALUES ('pruned_at', ?) "
                       "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (now,))
        return gone

    def prune_if_due(self, now: float | None = None) -> int:
        """prune(), unless any process pruned this file less than PRUNE_EVERY_S ago: usually one read.

        Housekeeping never stands in a payment's way: if the file is busy
        (or full), the prune waits for the next time, and the command goes on.
        """
        now = time.time() if now is None else now
        try:
            row = self._db.execute("SELECT value FROM housekeeping WHERE name = 'pruned_at'").fetchone()
            if row is not None and now - PRUNE_EVERY_S < row[0] <= now:  # a clock set back makes it due
                return 0
            return self.prune(now)
        except sqlite3.OperationalError:
            return 0

    @staticmethod
    def _end_attempt(db: sqlite3.Connection, txn_id: str, n: int, now: float, outcome: str, detail: str,
                     retry_at: float | None) -> None:
        db.execute("UPDATE attempts SET ended_at = ?, outcome = ?, detail = ?, retry_at = ? WHERE txn_id = ? AND n = ?",
                   (now, outcome, detail, retry_at, txn_id, n))

    def _must_get(self, txn_id: str) -> OutboxEntry:
        entry = self.get(txn_id)
        if entry is None:
            raise KeyError(f"{txn_id} is not in the outbox")
        return entry


def _statements(script: str) -> list[str]:
    """The schema's statements one by one (executescript would commit on its own)."""
    return [s.strip() for s in script.split(";") if s.strip()]
