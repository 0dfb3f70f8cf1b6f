"""A stdlib-only store: a JSON snapshot plus an append-only journal.

Each write batch is one journal line and one fsync, however large the
state. The snapshot is rewritten only once the journal holds
`compact_after` batches and has grown to `journal_share` times the
snapshot's own size (1.0 unless told). A rewrite costs about the
snapshot's size, so each journal byte pays for at most about two bytes of
rewriting however large the state grows; a fixed count of batches made
that cost grow with the state, by half over a million payments at a bank
(benchmarks/json_compaction.py). The price: a restart may replay a
journal as large as the snapshot, a line at a time. Plain files make the
state easy to read by hand.

No write waits for a compaction. When one is due, the writer only rotates
the journal (journal.jsonl becomes journal.old.jsonl and appends go on in
a fresh journal.jsonl: a rename, a new file, two directory fsyncs), and a
background thread writes the new snapshot and removes the rotated journal
(benchmarks/json_write_stall.py measures the longest write meanwhile).

Memory: the whole state, each value kept as its JSON text (a JSON store
cannot page settled history out of memory; docs/BENCHMARKS.md has the
figures). While a compaction runs, the changes made since the rotation
are kept in a second, smaller layer over the state as it was at the
rotation; the compaction writes that state out, then folds the layer back
in: never a second copy of the whole state. Opening holds the snapshot's
text besides the state it becomes, until it is read.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from json.decoder import scanstring
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from miniupi.contract.hookspecs import hookimpl
from miniupi.contract.registry import Register, StorageKind, setting_at_least
from miniupi.contract.expectations import check_claim, claimable, claimed, inserted_keys, require
from miniupi.contract.store import Expect, Put, StoreDamaged

if TYPE_CHECKING:
    from collections.abc import Mapping

    from miniupi.config import NodeConfig

NAME = "json"
SNAPSHOT = "snapshot.json"
SNAPSHOT_TMP = SNAPSHOT + ".tmp"
JOURNAL = "journal.jsonl"
ROTATED = "journal.old.jsonl"

# Formats and why a crash at any point reloads to the last acknowledged state.
#
# snapshot.json is {"seq": S, "tables": {table: {key: value}}}: every batch
# numbered up to S. A journal line is [n, [[table, key, value], ...]]\n,
# batch n, with null for a delete. Loading reads the snapshot, then
# journal.old.jsonl if there is one, then journal.jsonl, as one sequence of
# lines: numbers consecutive across both files, the first at most S + 1
# (a gap is damage), and only lines with n > S are applied.
#
# A batch is acknowledged only after its line, newline included, is
# fsync'd. So a last line of journal.jsonl without its newline, or not
# parseable, is a batch whose write never returned: it is dropped and
# truncated away so the next append starts on a clean line. Anywhere else,
# journal.old.jsonl's last line included, it is damage: that file is only
# ever a journal.jsonl that was complete when it was rotated (below).
#
# Rotation, in the writer, between two batches, once the last batch R is
# durable in journal.jsonl: (1) rename journal.jsonl to journal.old.jsonl
# and fsync the directory; (2) create a new, empty journal.jsonl and fsync
# the directory. Only then is batch R + 1 appended, to the new file, so no
# batch is acknowledged before both names are durable; and (2) starts only
# once (1) is durable, so no disk ever holds the new journal.jsonl without
# journal.old.jsonl. A crash during (1) leaves journal.jsonl or
# journal.old.jsonl, holding lines up to R either way; after (1), with no
# journal.jsonl yet or an empty one: either reloads to R, and opening
# creates the missing journal.jsonl. A rotation that failed on the way is
# finished before the next append.
#
# Compaction, in a background thread, of the state after batch R: the
# writer applies a batch to memory only after its line is durable, and from
# the rotation on it applies batches to a layer of changes over the state,
# never to the state itself, so the thread reads exactly batches 1..R
# while the writer carries on. (3) Write snapshot.json.tmp with seq R and
# fsync it; (4) os.replace it onto snapshot.json and fsync the directory;
# (5) remove journal.old.jsonl and fsync the directory; then (6), in memory
# only, fold the layer of changes into the state. A crash before (4) leaves
# the old snapshot S and both journals, which hold every batch after S (the
# stray .tmp is never read, and is removed at the next opening). After (4)
# the new snapshot R (or the old one, if the rename was not yet durable)
# and both journals: journal.old.jsonl's lines are all <= R and skipped,
# journal.jsonl's start at R + 1. (5) begins only once (4) is durable, so
# after (5) snapshot R and journal.jsonl from R + 1 are all there is.
#
# Opening finishes what a crash interrupted: if journal.old.jsonl holds a
# batch after the snapshot's, it opens in the state of a running
# compaction (the state after R, the changes after it layered on top) and
# starts the thread; if it holds none, the snapshot covers it (step (4)
# was done): the directory is fsync'd, so that snapshot is durable, and
# only then journal.old.jsonl removed. A failed compaction is logged,
# its .tmp removed, and retried from (3) after a pause, while writes go on:
# until it succeeds both journals stay, and with them every batch. At most
# one compaction runs: the next rotation waits until (6) is done.

_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_encode_key = json.encoder.encode_basestring_ascii  # what _encode does with a str, minus its dispatch
# fdatasync skips the timestamp-only inode flush that fsync adds on every
# append; the new length, which an append changes, is still made durable.
_sync_data = getattr(os, "fdatasync", os.fsync)
# Rows encoded and written at once while compacting: the snapshot goes to
# disk in pieces rather than as a second copy of the whole state in memory.
# A piece is built in C calls alone (no bytecode per row) and the thread lets
# go of the GIL in os.write after each, every half a millisecond or so, so
# that the writer and the event loop get it back at once rather than after
# the interpreter's 5 ms switch interval.
SNAPSHOT_PIECE_ROWS = 500
# The new snapshot is flushed to disk every this many bytes as it is written:
# a journal append's fsync then never waits behind more than this much of it.
# Flushed only at the end, 200 MB held a concurrent append's fdatasync up to
# 80 ms; every 16 MB, 28 ms; every 4 MB, 17-25 ms (one disk, measured apart
# from the store, while others shared the machine).
SNAPSHOT_SYNC_BYTES = 4_000_000
# The old snapshot and the rotated journal, once removed, are shrunk by this
# much at a time, this long apart, before they are closed (_free_gradually).
FREE_BYTES = 16_000_000
FREE_PAUSE_S = 0.01
# Changes folded back into the state at once after a compaction, under the
# lock that readers and the writer take for a moment each.
FOLD_ROWS = 2_000
# Compaction defaults; a node's [NODE.json] sub-table may set either.
COMPACT_AFTER = 10_000
JOURNAL_SHARE = 1.0
# A failed compaction is tried again after this long, doubling up to the second figure.
RETRY_S = (1.0, 60.0)
# The steps of a rotation (in the writer) and a compaction (in its thread), in
# order, as JsonStore's on_step names them: each is called once its step is done.
STEPS = ("renamed", "rename synced", "journal created", "rotated",
         "snapshot begun", "snapshot written", "snapshot replaced", "replace synced",
         "rotated journal removed", "compacted")

Ops = list[tuple[str, str, str | None]]  # (table, key, encoded value or None to delete)
Tables = dict[str, dict[str, str]]
Changes = dict[str, dict[str, str | None]]  # None: deleted since the rotation


class _Stopped(Exception):
    """The store was closed while its compaction ran."""


def _no_constant(name: str) -> Any:
    """NaN and Infinity parse as JSON but are never written here (allow_nan=False): damage."""
    raise ValueError(f"{name} is not a value this store writes")


class JsonStore:
    """A Store in directory `directory`; see miniupi.contract.store.Store.

    `on_step`, for tests, is called with the name of each step of a rotation
    and a compaction as it is reached (from the thread that takes it).
    """

    def __init__(self, directory: Path, compact_after: int = COMPACT_AFTER, journal_share: float = JOURNAL_SHARE,
                 *, on_step: Callable[[str], None] | None = None) -> None:
        if compact_after < 1:
            raise ValueError("compact_after must be at least 1")
        if not journal_share >= 0:  # also refuses NaN
            raise ValueError(f"journal_share must be a number of at least 0, not {journal_share!r}")
        self.directory = Path(directory)
        self.snapshot_file = self.directory / SNAPSHOT
        self.journal_file = self.directory / JOURNAL
        self.rotated_file = self.directory / ROTATED
        self._compact_after, self._journal_share = compact_after, journal_share
        self._on_step = on_step
        self.retry_s = RETRY_S
        # Values are kept JSON-encoded: callers may mutate the objects they
        # wrote, and a snapshot must hold what was written, not what is now.
        # The lock makes each batch appear to readers at once, and keeps the
        # writer and the fold of changes from crossing.
        self._lock = threading.Lock()
        self._tables: Tables = {}  # no empty tables; as of batch _compacting_seq while a compaction runs
        self._changes: Changes | None = None  # since the rotation, while a compaction runs
        self._seq = 0  # number of the last batch applied
        self._compacting_seq = 0  # the batch the running compaction writes out
        self._journal_lines = 0
        self._journal_size = 0
        self._snapshot_size = 0
        self._unusable: str | None = None
        self._rotating = False  # a rotation failed on the way: finish it before the next append
        self._renamed = False
        self._new_fd = -1
        self._compact_asked = False
        self._idle = threading.Event()  # no compaction running
        self._idle.set()
        self._stop = threading.Event()
        self._compactor: threading.Thread | None = None
        self.compactions = 0  # finished since opening
        self.failed_compactions = 0
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd = os.open(self.journal_file, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / SNAPSHOT_TMP)  # a compaction's leftover: never read
            snapshot_seq = self._seq = self._read_snapshot()
            previous = self._replay_rotated(snapshot_seq)
            if self._seq > snapshot_seq:  # a compaction was under way: carry on with it
                self._changes, self._compacting_seq = {}, self._seq
                self._idle.clear()
            self._replay_journal(snapshot_seq, previous)
            _fsync_dir(self.directory)  # the journal's directory entry may be new; see the comment at the top
            if self._changes is None and self.rotated_file.exists():
                os.unlink(self.rotated_file)  # every line in it is in the snapshot
                _fsync_dir(self.directory)
        except BaseException:
            os.close(self._fd)
            raise
        if self._changes is not None:
            self._start_compaction()

    # --- reads: from any thread, while the writer and a compaction run ---

    def load(self, tables: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
        self._check_usable()
        # The encoded rows are copied under the lock (the strings are shared, not
        # copied), so that the writer waits for no decoding.
        taken: Tables = {}
        with self._lock:
            changes = self._changes or {}
            for table in [*self._tables, *(t for t in changes if t not in self._tables)]:
                if tables is not None and table not in tables:
                    continue
                rows = dict(self._tables.get(table, ()))
                for key, value in changes.get(table, {}).items():
                    if value is None:
                        rows.pop(key, None)
                    else:
                        rows[key] = value
                if rows:
                    taken[table] = rows
        return {table: {k: json.loads(v) for k, v in rows.items()} for table, rows in taken.items()}

    def get(self, table: str, key: str) -> Any | None:
        self._check_usable()
        value = self._encoded(table, key)
        return None if value is None else json.loads(value)

    def scan(self, table: str) -> Iterator[tuple[str, Any]]:
        self._check_usable()
        # The keys at the start, sorted; each value as it is when reached, and
        # a key deleted since is passed over.
        with self._lock:
            keys: Collection[str] = list(self._tables.get(table, ()))
            if self._changes is not None and table in self._changes:
                keys = set(keys).union(self._changes[table])
        for key in sorted(keys):
            value = self._encoded(table, key)
            if value is not None:
                yield key, json.loads(value)

    def _encoded(self, table: str, key: str) -> str | None:
        with self._lock:
            if self._changes is not None and key in (changed := self._changes.get(table, ())):
                return changed[key]  # type: ignore[index]
            return self._tables.get(table, {}).get(key)

    # --- the writer: one thread at a time ---

    def write(self, batch: Sequence[Put], expect: Sequence[Expect] = ()) -> None:
        self._check_usable()
        ops: Ops = []
        for table, key, value in batch:
            if not isinstance(table, str) or not isinstance(key, str):
                raise TypeError(f"table and key must be str, got {table!r}, {key!r}")
            ops.append((table, key, None if value is None else _encode(value)))
        inserted_keys(batch, expect)
        if not ops:
            return
        # One process and one writer own this store, so the state read here is
        # the state the batch lands on: nothing can come in between.
        for e in expect:
            current = self._encoded(e.table, e.key)
            require(e, None if current is None else json.loads(current))
        if self._rotating or (self._idle.is_set() and (self._compact_asked or (
                self._journal_lines >= self._compact_after
                and self._journal_size >= self._journal_share * self._snapshot_size))):
            self._rotate()
        seq = self._seq + 1
        body = ",".join(f"[{_encode(t)},{_encode(k)},{'null' if v is None else v}]" for t, k, v in ops)
        self._append(f"[{seq},[{body}]]\n".encode())
        self._journal_lines += 1
        self._apply(seq, ops)

    def claim(self, table: str, field: str, owners: Collection[str], owner: str, limit: int) -> list[tuple[str, Any]]:
        # The writer's own call, like write(): it reads the rows and writes them with no
        # other writer in between. A scan of the table: the JSON store has no index on fields.
        check_claim(table, field, owner, limit)
        taken: list[tuple[str, Any]] = []
        if limit > 0 and owners:
            for key, value in self.scan(table):
                if claimable(value, field, owners):
                    taken.append((key, claimed(value, field, owner)))
                    if len(taken) == limit:
                        break
        self.write([Put(table, key, value) for key, value in taken])
        return taken

    def compact_soon(self) -> None:
        """Rotate at the next write whatever the thresholds, unless a compaction runs (benchmarks, tests)."""
        self._compact_asked = True

    def wait_for_compaction(self, timeout: float | None = None) -> bool:
        """Wait until no compaction runs; False if one still does after `timeout` seconds."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        if self._fd >= 0:
            self._unusable = "store is closed"
            self._stop.set()  # a compaction stops where it is: as safe as a crash there
            if self._compactor is not None:
                self._compactor.join()
            for fd in (self._new_fd, self._fd):
                if fd >= 0:
                    os.close(fd)
            self._fd = self._new_fd = -1

    def _check_usable(self) -> None:
        if self._unusable is not None:
            raise RuntimeError(f"{self.journal_file}: {self._unusable}")

    def _step(self, name: str) -> None:
        if self._on_step is not None:
            self._on_step(name)

    def _apply(self, seq: int, ops: Ops) -> None:
        with self._lock:
            if self._changes is not None:
                changes = self._changes
                for table, key, value in ops:
                    changes.setdefault(table, {})[key] = value
            else:
                tables = self._tables
                for table, key, value in ops:
                    if value is not None:
                        tables.setdefault(table, {})[key] = value
                    elif (rows := tables.get(table)) is not None:
                        rows.pop(key, None)
                        if not rows:
                            del tables[table]
            self._seq = seq

    def _append(self, data: bytes) -> None:
        try:
            _write_all(self._fd, data)
            _sync_data(self._fd)
        except BaseException:
            # Cut off whatever part of the line got in, so the next append
            # does not glue onto it and turn a failed write into damage.
            try:
                os.ftruncate(self._fd, self._journal_size)
                os.fsync(self._fd)
            except OSError as e:
                self._unusable = f"journal may hold a partial line (truncate failed: {e}); reopen the store"
            raise
        self._journal_size += len(data)

    def _rotate(self) -> None:
        """Steps (1) and (2) at the top, then start the compaction. A failure
        fails the write that asked, having changed nothing it wrote; the next
        write takes the rotation up where it stopped."""
        self._rotating = True
        if not self._renamed:
            os.rename(self.journal_file, self.rotated_file)
            self._renamed = True
            self._step("renamed")
        _fsync_dir(self.directory)
        self._step("rename synced")
        if self._new_fd < 0:
            self._new_fd = os.open(self.journal_file, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            self._step("journal created")
        _fsync_dir(self.directory)
        with contextlib.suppress(OSError):
            os.close(self._fd)  # journal.old.jsonl now: only read again at the next opening
        self._fd, self._new_fd = self._new_fd, -1
        self._renamed = self._rotating = self._compact_asked = False
        self._journal_lines = self._journal_size = 0
        with self._lock:
            self._changes, self._compacting_seq = {}, self._seq
        self._idle.clear()
        self._step("rotated")
        self._start_compaction()

    # --- the compaction thread ---

    def _start_compaction(self) -> None:
        self._compactor = threading.Thread(target=self._compaction, name="json-compaction", daemon=True)
        self._compactor.start()

    def _compaction(self) -> None:
        pause = self.retry_s[0]
        while True:
            try:
                self._write_snapshot()
                break
            except Exception as e:
                with contextlib.suppress(OSError):
                    os.unlink(self.directory / SNAPSHOT_TMP)
                if isinstance(e, _Stopped):
                    return
                self.failed_compactions += 1
                logger.error("{}: compaction failed, trying again in {:g} s; every batch is still in the journals: {!r}",
                             self.directory, pause, e)
                if self._stop.wait(pause):
                    return
                pause = min(2 * pause, self.retry_s[1])
        self._fold_changes()

    def _write_snapshot(self) -> None:
        """Steps (3) to (5) at the top."""
        tmp = self.directory / SNAPSHOT_TMP
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # a leftover from a failed try; O_EXCL below then makes it 0600
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        size = synced = 0
        try:
            for piece in self._snapshot_pieces():
                if self._stop.is_set():
                    raise _Stopped
                _write_all(fd, piece)
                if not size:
                    self._step("snapshot begun")
                size += len(piece)
                if size - synced >= SNAPSHOT_SYNC_BYTES:
                    _sync_data(fd)
                    synced = size
            os.fsync(fd)
        finally:
            os.close(fd)
        self._step("snapshot written")
        removed: list[int] = []  # the old snapshot and the rotated journal, held open to free their blocks
        try:
            with contextlib.suppress(FileNotFoundError):
                removed.append(os.open(self.snapshot_file, os.O_WRONLY))
            os.replace(tmp, self.snapshot_file)
            self._snapshot_size = size
            self._step("snapshot replaced")
            _fsync_dir(self.directory)
            self._step("replace synced")
            with contextlib.suppress(FileNotFoundError):
                removed.append(os.open(self.rotated_file, os.O_WRONLY))
                os.unlink(self.rotated_file)
            self._step("rotated journal removed")
            _fsync_dir(self.directory)
            for fd in removed:  # both names are gone, durably: what the files held no longer matters
                self._free_gradually(fd)
        finally:
            for fd in removed:
                os.close(fd)

    def _free_gradually(self, fd: int) -> None:
        """Shrink a removed file a few MB at a time before it is closed. Freed at once, a 200 MB
        file's blocks held a concurrent journal fdatasync 17-22 ms (ext4 frees them in the journal
        commit that the fdatasync waits for); 16 MB every 10 ms, 4 ms."""
        with contextlib.suppress(OSError):  # closing frees the rest at once: slower, no less safe
            size = os.fstat(fd).st_size
            while size > 0 and not self._stop.is_set():
                size = max(0, size - FREE_BYTES)
                os.ftruncate(fd, size)
                self._stop.wait(FREE_PAUSE_S)

    def _fold_changes(self) -> None:
        """Step (6): the changes since the rotation into the state, a few at a time."""
        while not self._stop.is_set():
            with self._lock:
                changes, tables = self._changes, self._tables
                assert changes is not None
                moved = 0
                while changes and moved < FOLD_ROWS:
                    table = next(iter(changes))
                    changed, rows = changes[table], tables.get(table)
                    while changed and moved < FOLD_ROWS:
                        key, value = changed.popitem()
                        moved += 1
                        if value is not None:
                            if rows is None:
                                rows = tables[table] = {}
                            rows[key] = value
                        elif rows is not None:
                            rows.pop(key, None)
                    if rows is not None and not rows:
                        del tables[table]
                    if not changed:
                        del changes[table]
                if not changes:
                    self._changes = None
                    break
        else:
            return
        self.compactions += 1
        self._step("compacted")  # before the writer may rotate again
        self._idle.set()

    def _snapshot_pieces(self) -> Iterator[bytes]:
        """snapshot.json's text, SNAPSHOT_PIECE_ROWS rows at a time, from the state the writer no longer changes."""
        yield f'{{"seq":{self._compacting_seq},"tables":{{'.encode()
        for n, (table, rows) in enumerate(self._tables.items()):
            yield f'{"," if n else ""}{_encode(table)}:{{'.encode()
            keys, values = iter(rows), iter(rows.values())  # in step: nothing changes the dict meanwhile
            separator = ""
            while piece := ",".join(map(":".join, zip(map(_encode_key, itertools.islice(keys, SNAPSHOT_PIECE_ROWS)),
                                                      itertools.islice(values, SNAPSHOT_PIECE_ROWS)))):
                yield (separator + piece).encode()
                separator = ","
            yield b"}"
        yield b"}}"

    # --- opening ---

    def _read_snapshot(self) -> int:
        """Load snapshot.json into memory and return its batch number (0 if none yet)."""
        try:
            raw = self.snapshot_file.read_bytes()
        except FileNotFoundError:
            return 0
        self._snapshot_size = len(raw)
        try:
            text = raw.decode()
            del raw
            seq, self._tables = _parse_snapshot(text)
        except (ValueError, StopIteration):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise StoreDamaged(f"{self.snapshot_file}: not a snapshot this store wrote") from None
        return seq

    def _replay_rotated(self, snapshot_seq: int) -> int | None:
        """Apply journal.old.jsonl's lines after the snapshot; return its last batch number."""
        try:
            journal = open(self.rotated_file, "rb")
        except FileNotFoundError:
            return None
        with journal:
            previous, _, _, torn = self._replay(journal, self.rotated_file, snapshot_seq, None)
        if torn:
            raise StoreDamaged(f"{self.rotated_file}: its last line is not a whole batch")
        return previous

    def _replay_journal(self, snapshot_seq: int, previous: int | None) -> None:
        with open(self.journal_file, "rb") as journal:
            _, good_size, lines, _ = self._replay(journal, self.journal_file, snapshot_seq, previous)
        if good_size < os.fstat(self._fd).st_size:
            os.ftruncate(self._fd, good_size)  # the torn last line: see the comment at the top
            os.fsync(self._fd)
        self._journal_size, self._journal_lines = good_size, lines

    def _replay(self, journal: Any, path: Path, snapshot_seq: int,
                previous: int | None) -> tuple[int | None, int, int, bool]:
        """Apply a journal's lines after the snapshot, one at a time: it may be as large as the snapshot.

        Returns the last batch number (or `previous` if none), the size of its
        whole lines, their count, and whether a torn last line follows them.
        """
        good_size = 0
        lines = iter(journal)
        line = next(lines, b"")
        number = 0
        while line.endswith(b"\n"):  # a complete line; what is left after them is a torn one, or b""
            number += 1
            following = next(lines, b"")
            where = f"{path}: line {number}"
            try:
                entry = json.loads(line[:-1], parse_constant=_no_constant)  # as written: no newline
            except ValueError:
                if not following:
                    return previous, good_size, number - 1, True
                raise StoreDamaged(f"{where} is not JSON") from None
            if not _is_entry(entry):
                raise StoreDamaged(f"{where} is not a batch this store wrote")
            seq, puts = entry
            if previous is not None and seq != previous + 1:
                raise StoreDamaged(f"{where} is batch {seq}, expected {previous + 1}")
            if previous is None and seq > snapshot_seq + 1:
                raise StoreDamaged(f"{where} is batch {seq} but {self.snapshot_file} holds only up to {snapshot_seq}")
            previous = seq
            if seq > snapshot_seq:
                self._apply(seq, [(t, k, None if v is None else _encode(v)) for t, k, v in puts])
            good_size += len(line)
            line = following
        return previous, good_size, number, bool(line)


_skip_whitespace = re.compile(r"[ \t\n\r]*").match
_scan_value = json.JSONDecoder(parse_constant=_no_constant).scan_once  # (value, end) of the JSON value at an index


def _skip(text: str, i: int) -> int:
    return i if text[i:i + 1] not in (" ", "\n", "\t", "\r") else _skip_whitespace(text, i).end()


def _value(text: str, i: int) -> tuple[Any, int]:
    try:
        return _scan_value(text, i)
    except StopIteration:  # what scan_once raises where no value starts
        raise ValueError(f"no JSON value at {i}") from None


def _members(text: str, i: int, member: Callable[[str, int], int]) -> int:
    """Read the JSON object that starts at text[i], calling member(key, where its value starts)
    for each member in turn, which returns where that value ends; return where the object ends."""
    if text[i:i + 1] != "{":
        raise ValueError(f"no object at {i}")
    i = _skip(text, i + 1)
    if text[i:i + 1] == "}":
        return i + 1
    while True:
        if text[i:i + 1] != '"':
            raise ValueError(f"no key at {i}")
        key, i = scanstring(text, i + 1)
        i = _skip(text, i)
        if text[i:i + 1] != ":":
            raise ValueError(f"no ':' at {i}")
        i = _skip(text, member(key, _skip(text, i + 1)))
        if text[i:i + 1] == "}":
            return i + 1
        if text[i:i + 1] != ",":
            raise ValueError(f"no ',' or '}}' at {i}")
        i = _skip(text, i + 1)


def _parse_snapshot(text: str) -> tuple[int, Tables]:
    """snapshot.json's batch number and tables, each value kept as its own JSON text.

    json.loads would build the whole state as Python objects, about three
    times the size of its text, only for it to be encoded again: a load
    peaked at 1.2 GB for a snapshot of 173 MB, and left 0.9 GB resident. Here
    each value is parsed (it must be valid JSON, and never null), then
    dropped, and its text kept as it stands in the file. Raises ValueError.
    """
    found: dict[str, Any] = {}
    tables: Tables = {}
    names: set[str] = set()

    def table(name: str, i: int) -> int:
        rows: dict[str, str] = {}

        def row(key: str, j: int) -> int:
            value, end = _value(text, j)
            if value is None:
                raise ValueError(f"null at {j}")
            rows[key] = text[j:end]
            return end

        if name in names:
            raise ValueError(f"table {name!r} twice")
        names.add(name)
        end = _members(text, i, row)
        if rows:
            tables[name] = rows
        return end

    def member(key: str, i: int) -> int:
        if key in found:
            raise ValueError(f"{key!r} twice")
        if key == "tables":
            found[key] = True
            return _members(text, i, table)
        found[key], end = _value(text, i)
        return end

    end = _members(text, _skip(text, 0), member)
    if _skip(text, end) != len(text) or "tables" not in found or not _is_seq(found.get("seq")):
        raise ValueError("not a snapshot")
    return found["seq"], tables


def _is_seq(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_entry(entry: Any) -> bool:
    return (
        isinstance(entry, list)
        and len(entry) == 2
        and _is_seq(entry[0])
        and isinstance(entry[1], list)
        and all(
            isinstance(put, list) and len(put) == 3 and isinstance(put[0], str) and isinstance(put[1], str)
            for put in entry[1]
        )
    )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_json(node: NodeConfig, path: Path, settings: Mapping[str, Any]) -> JsonStore:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return JsonStore(path, settings["compact_after"], settings["journal_share"])


@hookimpl
def miniupi_register_kinds(register: Register) -> None:
    # Set per node in its sub-table, such as [banks.bank_b.json] compact_after = 50000.
    register.add_storage(StorageKind(NAME, open_json, settings=(
        setting_at_least("compact_after", COMPACT_AFTER, 1, whole=True),
        setting_at_least("journal_share", JOURNAL_SHARE, 0),
    )))
