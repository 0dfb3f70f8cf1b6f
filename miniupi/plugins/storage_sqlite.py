"""The default store: one SQLite file in WAL mode, a row per key.

SQLite gives atomic, fsync'd transactions, an index on (table, key) and a
self-check on open for free. Writes go down on one connection, from the
group commit's writer thread; reads use a second one, so under WAL a read
never waits for a write and sees only committed batches.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miniupi.contract.hookspecs import hookimpl
from miniupi.contract.registry import Register, StorageKind
from miniupi.contract.expectations import check_claim, claimable, claimed, inserted_keys, last_puts, require
from miniupi.contract.store import Expect, Put, StoreDamaged

if TYPE_CHECKING:
    from collections.abc import Mapping

    from miniupi.config import NodeConfig

NAME = "sqlite"
FILE_NAME = "store.sqlite3"
SCAN_PAGE = 1000  # rows read at once by scan()
# Files up to this size get SQLite's quick_check at every open (about 0.13 s at this size here);
# larger ones are checked as their pages are read.
QUICK_CHECK_MAX_BYTES = 64 * 2**20

_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    tbl TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (tbl, key)
) WITHOUT ROWID
"""


class SqliteStore:
    """A Store in one SQLite file; see miniupi.contract.store.Store."""

    def __init__(self, file: Path) -> None:
        self.file = Path(file)
        # Create the file ourselves so it is 0600 whatever the umask; SQLite
        # gives its -wal and -shm files the database file's mode.
        os.close(os.open(self.file, os.O_WRONLY | os.O_CREAT, 0o600))
        # The connection is made here but used from GroupCommit's writer
        # thread; the store never uses it from two threads at once.
        conn = sqlite3.connect(self.file, isolation_level=None, check_same_thread=False)
        try:
            # A whole-file check costs time in proportion to the history stored, and restart time
            # must not: a small file is checked whole at every open, a large one page by page as
            # it is read (SQLite checks each page it reads; see _damage).
            thorough = self.file.stat().st_size <= QUICK_CHECK_MAX_BYTES
            check = conn.execute("PRAGMA quick_check" if thorough else "PRAGMA schema_version").fetchall()
            if thorough and check != [("ok",)]:
                raise StoreDamaged(f"{self.file}: SQLite quick_check failed: {check[0][0]}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # durable when COMMIT returns
            conn.execute(_SCHEMA)
        except sqlite3.OperationalError:
            conn.close()
            raise  # locked, unreadable, out of space: a problem, but not damage
        except sqlite3.DatabaseError as e:
            conn.close()
            raise StoreDamaged(f"{self.file}: not a usable SQLite database: {e}") from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        # The reader: the event loop's gets and scans, and load() from a worker thread before
        # serving, never two at once; autocommit, so each statement reads the latest commit.
        self._read = sqlite3.connect(self.file, isolation_level=None, check_same_thread=False)

    def load(self, tables: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
        loaded: dict[str, dict[str, Any]] = {}
        with self._damage():
            return self._load(loaded, tables)

    def _load(self, loaded: dict[str, dict[str, Any]], tables: Collection[str] | None) -> dict[str, dict[str, Any]]:
        if tables is None:
            rows = self._read.execute("SELECT tbl, key, value FROM kv")
        else:
            names = sorted(set(tables))
            rows = self._read.execute(
                f"SELECT tbl, key, value FROM kv WHERE tbl IN ({','.join('?' * len(names))})", names)
        for tbl, key, value in rows:
            loaded.setdefault(tbl, {})[key] = self._decode(tbl, key, value)
        return loaded

    def get(self, table: str, key: str) -> Any | None:
        with self._damage():
            row = self._read.execute("SELECT value FROM kv WHERE tbl = ? AND key = ?", (table, key)).fetchone()
        return None if row is None else self._decode(table, key, row[0])

    def scan(self, table: str) -> Iterator[tuple[str, Any]]:
        # Pages by key rather than one long cursor: no read transaction stays open across the
        # caller's awaits, so the WAL can still be checkpointed while an audit streams.
        after = None
        while True:
            with self._damage():
                if after is None:
                    page = self._read.execute("SELECT key, value FROM kv WHERE tbl = ? ORDER BY key LIMIT ?",
                                              (table, SCAN_PAGE)).fetchall()
                else:
                    page = self._read.execute(
                        "SELECT key, value FROM kv WHERE tbl = ? AND key > ? ORDER BY key LIMIT ?",
                        (table, after, SCAN_PAGE)).fetchall()
            for key, value in page:
                yield key, self._decode(table, key, value)
            if len(page) < SCAN_PAGE:
                return
            after = page[-1][0]

    @contextlib.contextmanager
    def _damage(self) -> Iterator[None]:
        """A read that meets a page SQLite finds malformed is StoreDamaged, as at open."""
        try:
            yield
        except sqlite3.OperationalError:
            raise  # locked, out of memory, I/O: trouble, not damage
        except sqlite3.DatabaseError as e:
            raise StoreDamaged(f"{self.file}: not a usable SQLite database: {e}") from None

    def _decode(self, table: str, key: str, value: str) -> Any:
        try:
            return json.loads(value)
        except ValueError:
            raise StoreDamaged(f"{self.file}: value of {table}/{key} is not JSON") from None

    def write(self, batch: Sequence[Put], expect: Sequence[Expect] = ()) -> None:
        # Collapse to the last write per key so upserts and deletes can go
        # down as two order-free executemany calls; encode everything first
        # so a bad value fails before the transaction starts.
        last = last_puts(batch)
        inserted_keys(batch, expect)
        if not last:
            return
        upserts = [(t, k, _encode(v)) for (t, k), v in last.items() if v is not None]
        deletes = [tk for tk, v in last.items() if v is None]
        with self._transaction() as conn:
            # BEGIN IMMEDIATE holds the database's write lock from here to COMMIT, so what the
            # expectations read cannot change before the batch goes down, whatever process writes.
            for e in expect:
                row = conn.execute("SELECT value FROM kv WHERE tbl = ? AND key = ?", (e.table, e.key)).fetchone()
                require(e, None if row is None else self._decode(e.table, e.key, row[0]))
            if upserts:
                conn.executemany("INSERT OR REPLACE INTO kv (tbl, key, value) VALUES (?, ?, ?)", upserts)
            if deletes:
                conn.executemany("DELETE FROM kv WHERE tbl = ? AND key = ?", deletes)

    def claim(self, table: str, field: str, owners: Collection[str], owner: str, limit: int) -> list[tuple[str, Any]]:
        check_claim(table, field, owner, limit)
        owners = sorted(set(owners))
        if not owners or limit == 0:
            return []
        with self._transaction() as conn:
            # No row locks in SQLite: the write lock of BEGIN IMMEDIATE makes a claim whole, and two
            # claimers take turns, the second seeing the first's rows as already taken.
            rows = conn.execute(
                f"SELECT key, value FROM kv WHERE tbl = ? AND value ->> ? IN ({','.join('?' * len(owners))}) "
                "ORDER BY key LIMIT ?", (table, field, *owners, limit)).fetchall()
            taken = [(key, claimed(value, field, owner)) for key, text in rows
                     if claimable(value := self._decode(table, key, text), field, owners)]
            conn.executemany("UPDATE kv SET value = ? WHERE tbl = ? AND key = ?",
                             [(_encode(value), table, key) for key, value in taken])
        return taken

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """The writer's connection inside BEGIN IMMEDIATE: COMMIT if the block ends, ROLLBACK if it raises."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._read.close()
        self._conn.close()


def open_sqlite(node: NodeConfig, path: Path, settings: Mapping[str, Any]) -> SqliteStore:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return SqliteStore(path / FILE_NAME)


@hookimpl
def miniupi_register_kinds(register: Register) -> None:
    register.add_storage(StorageKind(NAME, open_sqlite))
