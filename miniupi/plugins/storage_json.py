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
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miniupi.contract.hookspecs import hookimpl
from miniupi.contract.registry import Register, StorageKind, setting_at_least
from miniupi.contract.store import Put, StoreDamaged

if TYPE_CHECKING:
    from collections.abc import Mapping

    from miniupi.config import NodeConfig

NAME = "json"
SNAPSHOT = "snapshot.json"
JOURNAL = "journal.jsonl"

# Formats and why a crash at any point reloads to the same state.
#
# snapshot.json is {"seq": S, "tables": {table: {key: value}}}: every batch
# numbered up to S. A journal line is [n, [[table, key, value], ...]]\n,
# batch n, with null for a delete; line numbers are consecutive. Loading
# replays only lines with n > S and refuses a gap after S.
#
# A batch is acknowledged only after its line, newline included, is
# fsync'd. So a last line without its newline, or not parseable, is a
# batch whose write never returned: it is dropped and truncated away so
# the next append starts on a clean line. Anywhere else it is damage.
#
# Compaction: (1) write snapshot.json.tmp and fsync it, (2) os.replace it
# onto snapshot.json and fsync the directory, (3) truncate the journal and
# fsync it. A crash before (2) leaves the old snapshot and the full journal
# (the stray .tmp is never read). Between (2) and (3) it leaves the new
# snapshot, or the old one if the rename was not yet durable, and the full
# journal; the new snapshot's S covers every journal line, so all are
# skipped. After (3) the journal is empty. The truncation is durable before
# line S + 1 is appended, so old and new lines never mix. (Replaying old
# lines would even be harmless, as puts are idempotent, but the numbers
# also catch lost or misordered lines.) Compaction runs before a batch is
# appended, so a failed compaction fails a write that changed nothing.

_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
# fdatasync skips the timestamp-only inode flush that fsync adds on every
# append; the new length, which an append changes, is still made durable.
_sync_data = getattr(os, "fdatasync", os.fsync)
# Rows encoded and written at once while compacting: the snapshot goes to
# disk in pieces rather than as a second copy of the whole state in memory.
SNAPSHOT_PIECE_ROWS = 10_000
# Compaction defaults; a node's [NODE.json] sub-table may set either.
COMPACT_AFTER = 10_000
JOURNAL_SHARE = 1.0

Ops = list[tuple[str, str, str | None]]  # (table, key, encoded value or None to delete)


def _no_constant(name: str) -> Any:
    """NaN and Infinity parse as JSON but are never written here (allow_nan=False): damage."""
    raise ValueError(f"{name} is not a value this store writes")


class JsonStore:
    """A Store in directory `directory`; see miniupi.contract.store.Store."""

    def __init__(self, directory: Path, compact_after: int = COMPACT_AFTER, journal_share: float = JOURNAL_SHARE) -> None:
        if compact_after < 1:
            raise ValueError("compact_after must be at least 1")
        if not journal_share >= 0:  # also refuses NaN
            raise ValueError(f"journal_share must be a number of at least 0, not {journal_share!r}")
        self.directory = Path(directory)
        self.snapshot_file = self.directory / SNAPSHOT
        self.journal_file = self.directory / JOURNAL
        self._compact_after, self._journal_share = compact_after, journal_share
        # Values are kept JSON-encoded: callers may mutate the objects they
        # wrote, and a snapshot must hold what was written, not what is now.
        self._tables: dict[str, dict[str, str]] = {}
        self._seq = 0  # number of the last batch applied
        self._journal_lines = 0
        self._journal_size = 0
        self._snapshot_size = 0
        self._unusable: str | None = None
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd = os.open(self.journal_file, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self._seq = self._read_snapshot()
            self._replay_journal(self._seq)
            _fsync_dir(self.directory)  # the journal's directory entry may be new
        except BaseException:
            os.close(self._fd)
            raise

    def load(self, tables: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
        self._check_usable()
        return {t: {k: json.loads(v) for k, v in rows.items()} for t, rows in self._tables.items()
                if tables is None or t in tables}

    def get(self, table: str, key: str) -> Any | None:
        self._check_usable()
        value = self._tables.get(table, {}).get(key)
        return None if value is None else json.loads(value)

    def scan(self, table: str) -> Iterator[tuple[str, Any]]:
        self._check_usable()
        # The keys at the start, sorted (taken at once: the writer thread may change the table
        # meanwhile); each value as it is when reached, and a key deleted since is passed over.
        for key in sorted(self._tables.get(table, {})):
            value = self._tables.get(table, {}).get(key)
            if value is not None:
                yield key, json.loads(value)

    def write(self, batch: Sequence[Put]) -> None:
        self._check_usable()
        ops: Ops = []
        for table, key, value in batch:
            if not isinstance(table, str) or not isinstance(key, str):
                raise TypeError(f"table and key must be str, got {table!r}, {key!r}")
            ops.append((table, key, None if value is None else _encode(value)))
        if not ops:
            return
        if (self._journal_lines >= self._compact_after
                and self._journal_size >= self._journal_share * self._snapshot_size):
            self._compact()
        seq = self._seq + 1
        body = ",".join(f"[{_encode(t)},{_encode(k)},{'null' if v is None else v}]" for t, k, v in ops)
        self._append(f"[{seq},[{body}]]\n".encode())
        self._seq = seq
        self._journal_lines += 1
        self._apply(ops)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._unusable = "store is closed"

    def _check_usable(self) -> None:
        if self._unusable is not None:
            raise RuntimeError(f"{self.journal_file}: {self._unusable}")

    def _apply(self, ops: Ops) -> None:
        tables = self._tables
        for table, key, value in ops:
            if value is not None:
                tables.setdefault(table, {})[key] = value
            elif (rows := tables.get(table)) is not None:
                rows.pop(key, None)
                if not rows:
                    del tables[table]

    def _read_snapshot(self) -> int:
        """Load snapshot.json into memory and return its batch number (0 if none yet)."""
        try:
            raw = self.snapshot_file.read_bytes()
        except FileNotFoundError:
            return 0
        try:
            snapshot = json.loads(raw, parse_constant=_no_constant)
            seq, tables = snapshot["seq"], snapshot["tables"]
            ok = _is_seq(seq) and isinstance(tables, dict)
            ok = ok and all(
                isinstance(rows, dict) and None not in rows.values() for rows in tables.values()
            )
        except (ValueError, TypeError, KeyError):
            ok = False
        if not ok:
            raise StoreDamaged(f"{self.snapshot_file}: not a snapshot this store wrote")
        self._snapshot_size = len(raw)
        self._tables = {t: {k: _encode(v) for k, v in rows.items()} for t, rows in tables.items() if rows}
        return seq

    def _replay_journal(self, snapshot_seq: int) -> None:
        """Apply the journal's lines after the snapshot, one at a time: it may be as large as the snapshot."""
        good_size = 0
        previous: int | None = None
        with open(self.journal_file, "rb") as journal:
            lines = iter(journal)
            line = next(lines, b"")
            number = 0
            while line.endswith(b"\n"):  # a complete line; what is left after them is a torn one, or b""
                number += 1
                following = next(lines, b"")
                where = f"{self.journal_file}: line {number}"
                try:
                    entry = json.loads(line[:-1], parse_constant=_no_constant)  # as written: no newline
                except ValueError:
                    if not following:
                        break  # torn last line: see the comment at the top
                    raise StoreDamaged(f"{where} is not JSON") from None
                if not _is_entry(entry):
                    raise StoreDamaged(f"{where} is not a batch this store wrote")
                seq, puts = entry
                if previous is not None and seq != previous + 1:
                    raise StoreDamaged(f"{where} is batch {seq}, expected {previous + 1}")
                if previous is None and seq > snapshot_seq + 1:
                    raise StoreDamaged(
                        f"{where} is batch {seq} but {self.snapshot_file} holds only up to {snapshot_seq}"
                    )
                previous = seq
                if seq > snapshot_seq:
                    self._apply([(t, k, None if v is None else _encode(v)) for t, k, v in puts])
                    self._seq = seq
                good_size += len(line)
                self._journal_lines += 1
                line = following
        if good_size < os.fstat(self._fd).st_size:
            os.ftruncate(self._fd, good_size)
            os.fsync(self._fd)
        self._journal_size = good_size

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

    def _compact(self) -> None:
        """Fold the journal into a new snapshot; the order is argued at the top."""
        tmp = self.directory / (SNAPSHOT + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # a leftover from a crash; O_EXCL below then makes it 0600
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        size = 0
        try:
            for piece in self._snapshot_pieces():
                _write_all(fd, piece)
                size += len(piece)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.snapshot_file)
        _fsync_dir(self.directory)
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)
        # Only now: a compaction that failed on the way must run again before the next append.
        self._snapshot_size, self._journal_size, self._journal_lines = size, 0, 0

    def _snapshot_pieces(self) -> Iterator[bytes]:
        """snapshot.json's text, SNAPSHOT_PIECE_ROWS rows at a time."""
        yield f'{{"seq":{self._seq},"tables":{{'.encode()
        for n, (table, rows) in enumerate(self._tables.items()):
            yield f'{"," if n else ""}{_encode(table)}:{{'.encode()
            items = iter(rows.items())
            separator = ""
            while piece := list(itertools.islice(items, SNAPSHOT_PIECE_ROWS)):
                yield (separator + ",".join(f"{_encode(k)}:{v}" for k, v in piece)).encode()
                separator = ","
            yield b"}"
        yield b"}}"


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
