"""The storage plugins and GroupCommit, against real files."""
from __future__ import annotations

import asyncio
import errno
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from miniupi.config import ClusterConfig, parse_config
from miniupi.errors import Unavailable
from miniupi.plugins import storage_json, storage_sqlite
from miniupi.plugins.storage_json import JsonStore
from miniupi.plugins.storage_sqlite import SqliteStore
from miniupi.contract.registry import Register, check_plugins
from miniupi.contract.store import Put, Store, StoreDamaged
from miniupi.nodes.group_commit import GroupCommit

Opener = Callable[[Path], Store]


def open_sqlite(path: Path) -> SqliteStore:
    return SqliteStore(path / "store.sqlite3")


def open_json(path: Path) -> JsonStore:
    return JsonStore(path)


@pytest.fixture(params=[open_sqlite, open_json], ids=["sqlite", "json"])
def open_store(request: pytest.FixtureRequest) -> Opener:
    return request.param


@pytest.fixture
def umask_022() -> Iterator[None]:
    """A permissive umask, so only the code's own modes can make files private."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def reopened(open_store: Opener, path: Path) -> dict[str, dict[str, Any]]:
    store = open_store(path)
    try:
        return store.load()
    finally:
        store.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cluster(tmp_path: Path) -> ClusterConfig:
    raw = {
        "cluster": {"data_dir": str(tmp_path / "data")},
        "gateway": {"port": 1},  # storage defaults to "sqlite"
        "banks": {"b": {"port": 2, "storage": "json"}},
    }
    return parse_config(raw, tmp_path / "c.toml")


# --- both stores -------------------------------------------------------------


def test_get_and_a_partial_load_read_one_key_and_only_the_named_tables(open_store: Opener, tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.write([Put("live", "a", 1), Put("settled", "t1", {"state": "COMMITTED"}), Put("settled", "t2", [2])])
    store.write([Put("settled", "t2", None)])
    assert store.get("settled", "t1") == {"state": "COMMITTED"}
    assert store.get("settled", "t2") is None and store.get("nothing", "x") is None
    assert store.load(["live", "absent"]) == {"live": {"a": 1}}
    store.close()
    again = open_store(tmp_path)
    try:
        assert again.get("settled", "t1") == {"state": "COMMITTED"} and again.load([]) == {}
    finally:
        again.close()


def test_scan_streams_a_table_in_key_order_across_pages(open_store: Opener, tmp_path: Path) -> None:
    store = open_store(tmp_path)
    keys = [f"k{n:05d}" for n in range(2_500)]  # more than one of the SQLite store's pages
    for start in range(0, len(keys), 500):
        store.write([Put("t", k, {"n": k}) for k in reversed(keys[start:start + 500])] + [Put("other", "x", 0)])
    assert [(k, v["n"]) for k, v in store.scan("t")] == [(k, k) for k in keys]
    assert list(store.scan("absent")) == []
    store.close()


def test_a_scan_survives_writes_made_while_it_runs(open_store: Opener, tmp_path: Path) -> None:
    """The audit streams a table while payments go on: each row it sees is whole, none twice."""
    store = open_store(tmp_path)
    store.write([Put("t", f"k{n:05d}", n) for n in range(3_000)])
    seen = []
    for i, (key, value) in enumerate(store.scan("t")):
        seen.append(key)
        if i % 500 == 0:
            store.write([Put("t", f"k{i + 1:05d}", None), Put("t", f"z{i}", -1), Put("t", f"k{i + 2:05d}", -2)])
        assert isinstance(value, int)
    assert len(seen) == len(set(seen)) and seen == sorted(seen)
    store.close()


def test_round_trip_across_reopen(open_store: Opener, tmp_path: Path) -> None:
    store = open_store(tmp_path)
    assert store.load() == {}
    store.write([Put("acct", "alice", {"paise": 500, "name": "Ålice ₹"}), Put("acct", "bob", [1, 2])])
    store.write([Put("acct", "bob", None), Put("acct", "carol", 7), Put("txn", "t1", "PREPARED")])
    # Within one batch the last write to a key wins, in either direction.
    store.write([Put("txn", "t2", "x"), Put("txn", "t2", None), Put("txn", "t3", None), Put("txn", "t3", True)])
    store.write([Put("gone", "k", 1)])
    store.write([Put("gone", "k", None), Put("acct", "nobody", None)])
    expected = {
        "acct": {"alice": {"paise": 500, "name": "Ålice ₹"}, "carol": 7},
        "txn": {"t1": "PREPARED", "t3": True},
    }
    assert store.load() == expected
    store.close()
    assert reopened(open_store, tmp_path) == expected


def test_empty_batch_is_a_no_op(open_store: Opener, tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.write([Put("t", "k", 1)])
    store.write([])
    store.close()
    assert reopened(open_store, tmp_path) == {"t": {"k": 1}}


@pytest.mark.parametrize("bad", [object(), float("nan"), {"nested": {1, 2}}], ids=["object", "nan", "set"])
def test_a_batch_with_an_unencodable_value_applies_nothing(open_store: Opener, tmp_path: Path, bad: Any) -> None:
    store = open_store(tmp_path)
    store.write([Put("t", "keep", 1)])
    with pytest.raises((TypeError, ValueError)):
        store.write([Put("t", "keep", None), Put("t", "new", 2), Put("t", "bad", bad)])
    assert store.load() == {"t": {"keep": 1}}
    store.write([Put("t", "after", 3)])  # the store is still usable
    store.close()
    assert reopened(open_store, tmp_path) == {"t": {"keep": 1, "after": 3}}


def test_keys_must_be_strings(open_store: Opener, tmp_path: Path) -> None:
    store = open_store(tmp_path)
    with pytest.raises(TypeError):
        store.write([Put("t", "ok", 1), Put("t", 5, 1)])  # type: ignore[arg-type]
    store.close()
    assert reopened(open_store, tmp_path) == {}


# --- SQLite ------------------------------------------------------------------


def test_sqlite_garbage_file_is_damage(tmp_path: Path) -> None:
    file = tmp_path / "store.sqlite3"
    file.write_bytes(b"this is not a database\n" * 200)
    with pytest.raises(StoreDamaged, match=str(file)):
        SqliteStore(file)


def test_sqlite_corrupt_pages_are_damage(tmp_path: Path) -> None:
    file = tmp_path / "store.sqlite3"
    store = SqliteStore(file)
    store.write([Put("t", f"k{i}", "x" * 200) for i in range(300)])
    store.close()
    data = bytearray(file.read_bytes())
    assert len(data) > 8192, "need pages beyond the header page to corrupt"
    data[4096:] = b"\xff" * (len(data) - 4096)  # keep the header, ruin every b-tree page after it
    file.write_bytes(bytes(data))
    with pytest.raises(StoreDamaged, match=str(file)):
        SqliteStore(file)


def test_sqlite_files_are_private(tmp_path: Path, umask_022: None) -> None:
    store = open_sqlite(tmp_path)
    store.write([Put("t", "k", 1)])
    try:
        for name in ("store.sqlite3", "store.sqlite3-wal", "store.sqlite3-shm"):
            assert mode(tmp_path / name) == 0o600, name
    finally:
        store.close()


# --- JSON --------------------------------------------------------------------


@pytest.mark.parametrize(
    "tail",
    [b'[3,[["t","c",', b'[3,[["t","c",3]]]', b'{"half": \n'],
    ids=["cut-mid-line", "no-newline", "invalid-last-line"],
)
def test_json_torn_last_line_is_dropped(tmp_path: Path, tail: bytes) -> None:
    store = open_json(tmp_path)
    store.write([Put("t", "a", 1)])
    store.write([Put("t", "b", 2)])
    store.close()
    journal = tmp_path / storage_json.JOURNAL
    good = journal.read_bytes()
    with open(journal, "ab") as f:
        f.write(tail)

    store = open_json(tmp_path)
    assert store.load() == {"t": {"a": 1, "b": 2}}
    assert journal.read_bytes() == good  # cut away, so the next line starts clean
    store.write([Put("t", "c", 3)])
    store.close()
    assert reopened(open_json, tmp_path) == {"t": {"a": 1, "b": 2, "c": 3}}


# NaN parses as JSON, but this store never writes it: a line holding one is damage, not a value.
@pytest.mark.parametrize("line", [b"garbage", b'[2,[["t","1",NaN]]]'], ids=["garbage", "nan"])
def test_json_garbage_before_the_last_line_is_damage(tmp_path: Path, line: bytes) -> None:
    store = open_json(tmp_path)
    for i in range(3):
        store.write([Put("t", str(i), i)])
    store.close()
    journal = tmp_path / storage_json.JOURNAL
    lines = journal.read_bytes().split(b"\n")
    lines[1] = line
    journal.write_bytes(b"\n".join(lines))
    with pytest.raises(StoreDamaged, match=f"{journal}: line 2 is not JSON"):
        open_json(tmp_path)


def test_json_lost_journal_line_is_damage(tmp_path: Path) -> None:
    store = open_json(tmp_path)
    for i in range(3):
        store.write([Put("t", str(i), i)])
    store.close()
    journal = tmp_path / storage_json.JOURNAL
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(lines[0] + lines[2])
    with pytest.raises(StoreDamaged, match="expected 2"):
        open_json(tmp_path)


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"seq": 1}', b'{"seq": 1, "tables": {"t": 5}}',
                                     b'{"seq": 1, "tables": {"t": {"k": NaN}}}'])
def test_json_unreadable_snapshot_is_damage(tmp_path: Path, content: bytes) -> None:
    (tmp_path / storage_json.SNAPSHOT).write_bytes(content)
    with pytest.raises(StoreDamaged, match=str(tmp_path / storage_json.SNAPSHOT)):
        open_json(tmp_path)


def test_json_compaction_keeps_state_and_rewrites_snapshot_rarely(tmp_path: Path) -> None:
    snapshot = tmp_path / storage_json.SNAPSHOT
    journal = tmp_path / storage_json.JOURNAL
    store = JsonStore(tmp_path, compact_after=3)
    model: dict[str, dict[str, Any]] = {}
    snapshots: list[int] = []  # inode after each write: os.replace makes a new one
    for i in range(1, 11):
        puts = [Put("t", f"k{i}", i), Put("u", "count", i)]
        if i % 4 == 0:
            puts.append(Put("t", f"k{i - 1}", None))
        store.write(puts)
        for table, key, value in puts:
            if value is None:
                model[table].pop(key)
            else:
                model.setdefault(table, {})[key] = value
        assert store.load() == model
        assert len(journal.read_bytes().splitlines()) <= 3
        snapshots.append(snapshot.stat().st_ino if snapshot.exists() else 0)
    store.close()
    # Compacted before writes 4, 7 and 10 only.
    changed_at = [i + 1 for i in range(1, 10) if snapshots[i] != snapshots[i - 1]]
    assert changed_at == [4, 7, 10]
    assert json.loads(snapshot.read_bytes())["seq"] == 9
    assert reopened(open_json, tmp_path) == model
    assert mode(snapshot) == 0o600


def test_json_compacts_only_once_the_journal_has_grown_to_the_snapshots_size(tmp_path: Path) -> None:
    """A fixed count of batches rewrote a large snapshot as often as a small one."""
    snapshot = tmp_path / storage_json.SNAPSHOT
    journal = tmp_path / storage_json.JOURNAL
    store = JsonStore(tmp_path, compact_after=1)
    big = [Put("big", f"k{i}", "x" * 100) for i in range(100)]
    store.write(big)
    store.write([Put("n", "n", 0)])  # the journal had outgrown the empty snapshot: compacted first
    before = snapshot.stat()
    assert before.st_size > 10_000
    n = 0
    while journal.stat().st_size < before.st_size:
        n += 1
        store.write([Put("n", "n", n)])
        assert snapshot.stat().st_ino == before.st_ino, f"rewritten after {n} small batches"
        if n == 100:  # a reopened store reads the snapshot's size from the file
            store.close()
            store = JsonStore(tmp_path, compact_after=1)
    assert n > 200  # each small line pays for a share of the next rewrite
    store.write([Put("n", "n", n + 1)])  # the journal is now the snapshot's size: compacted first
    assert snapshot.stat().st_ino != before.st_ino
    assert len(journal.read_bytes().splitlines()) == 1
    store.close()
    assert reopened(open_json, tmp_path) == {"big": {p.key: p.value for p in big}, "n": {"n": n + 1}}


@pytest.mark.parametrize("share", [-1.0, float("nan")])
def test_json_journal_share_must_be_a_number_of_at_least_0(tmp_path: Path, share: float) -> None:
    with pytest.raises(ValueError, match="journal_share"):
        JsonStore(tmp_path, journal_share=share)


@pytest.mark.parametrize("failing", ["replace", "directory fsync", "ftruncate", "journal fsync"])
def test_json_compaction_that_failed_runs_again_before_the_next_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """Until the truncated journal is durable, line S + 1 must not be appended to it."""
    snapshot, journal = tmp_path / storage_json.SNAPSHOT, tmp_path / storage_json.JOURNAL
    store = JsonStore(tmp_path, compact_after=2)
    store.write([Put("t", "a", 1)])
    store.write([Put("t", "b", 2)])
    real_fsync, journal_inode = os.fsync, journal.stat().st_ino  # compaction truncates it, same inode

    def fsync(fd: int) -> None:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        is_journal = os.fstat(fd).st_ino == journal_inode
        if (failing == "directory fsync" and is_dir) or (failing == "journal fsync" and is_journal):
            raise OSError(errno.EIO, "injected")
        real_fsync(fd)

    def refuse(*args: object) -> None:
        raise OSError(errno.EIO, "injected")

    with monkeypatch.context() as m:
        if failing in ("replace", "ftruncate"):
            m.setattr(os, failing, refuse)
        else:
            m.setattr(os, "fsync", fsync)
        with pytest.raises(OSError, match="injected"):
            store.write([Put("t", "c", 3)])  # compaction runs first, and fails
    failed_inode = snapshot.stat().st_ino if snapshot.exists() else None
    store.write([Put("t", "c", 3)])  # compacts again, then appends
    assert snapshot.stat().st_ino != failed_inode
    assert json.loads(snapshot.read_bytes())["seq"] == 2
    assert journal.read_bytes().startswith(b"[3,")
    assert len(journal.read_bytes().splitlines()) == 1
    store.close()
    assert reopened(open_json, tmp_path) == {"t": {"a": 1, "b": 2, "c": 3}}


@pytest.mark.parametrize("crash_in", ["replace", "ftruncate"])
def test_json_crash_during_compaction_reloads_same_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_in: str
) -> None:
    store = JsonStore(tmp_path, compact_after=2)
    store.write([Put("t", "a", 1)])
    store.write([Put("t", "a", 2), Put("t", "b", 1)])

    class Crash(Exception):
        pass

    def crash(*args: object) -> None:
        raise Crash

    with monkeypatch.context() as m:
        m.setattr(os, crash_in, crash)
        with pytest.raises(Crash):
            store.write([Put("t", "b", None)])  # compaction runs first, and fails
    store.close()
    if crash_in == "ftruncate":  # the new snapshot is in place over the full journal
        assert json.loads((tmp_path / storage_json.SNAPSHOT).read_bytes())["seq"] == 2
        assert len((tmp_path / storage_json.JOURNAL).read_bytes().splitlines()) == 2
    else:
        assert not (tmp_path / storage_json.SNAPSHOT).exists()

    store = JsonStore(tmp_path, compact_after=2)
    assert store.load() == {"t": {"a": 2, "b": 1}}
    store.write([Put("t", "b", None)])
    store.write([Put("t", "c", 3)])
    store.close()
    assert reopened(open_json, tmp_path) == {"t": {"a": 2, "c": 3}}


def test_json_missing_snapshot_after_compaction_is_damage(tmp_path: Path) -> None:
    store = JsonStore(tmp_path, compact_after=1)
    store.write([Put("t", "a", 1)])
    store.write([Put("t", "b", 2)])  # compacts batch 1 away, journal starts at 2
    store.close()
    (tmp_path / storage_json.SNAPSHOT).unlink()
    with pytest.raises(StoreDamaged, match="holds only up to 0"):
        open_json(tmp_path)


def test_json_snapshot_holds_what_was_written_not_later_mutations(tmp_path: Path) -> None:
    store = JsonStore(tmp_path, compact_after=1)
    value = {"paise": 100}
    store.write([Put("acct", "alice", value)])
    value["paise"] = 999_999  # changed in memory, never written
    store.write([Put("acct", "bob", 1)])  # compacts alice into the snapshot
    assert store.load()["acct"]["alice"] == {"paise": 100}
    store.close()
    assert reopened(open_json, tmp_path) == {"acct": {"alice": {"paise": 100}, "bob": 1}}


def test_json_files_are_private(tmp_path: Path, umask_022: None) -> None:
    directory = tmp_path / "store"
    store = JsonStore(directory, compact_after=1)
    store.write([Put("t", "a", 1)])
    store.write([Put("t", "b", 2)])
    store.close()
    assert mode(directory) == 0o700
    assert mode(directory / storage_json.JOURNAL) == 0o600
    assert mode(directory / storage_json.SNAPSHOT) == 0o600


# --- hooks -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plugin", "store_type", "name"),
    [(storage_sqlite, SqliteStore, "sqlite"), (storage_json, JsonStore, "json")],
    ids=["sqlite", "json"],
)
def test_each_store_plugin_registers_its_kind_by_name(
    tmp_path: Path, umask_022: None, plugin: Any, store_type: type, name: str
) -> None:
    register = Register()
    plugin.miniupi_register_kinds(register=register)
    assert list(register.storage) == [name] and register.auth == {}
    kind = register.storage[name]
    path = tmp_path / "stores" / name
    store = kind.open(cluster(tmp_path).gateway, path, {s.name: s.default for s in kind.settings})
    assert isinstance(store, store_type)
    assert mode(path) == 0o700
    store.write([Put("t", "k", 1)])
    store.close()


def test_each_node_opens_the_store_its_cluster_file_names_with_its_settings(tmp_path: Path) -> None:
    raw = {"cluster": {"data_dir": str(tmp_path / "data")}, "gateway": {"port": 1},
           "banks": {"b": {"port": 2, "storage": "json", "json": {"compact_after": 7, "journal_share": 0.5}},
                     "c": {"port": 3, "storage": "json"}}}
    nodes = parse_config(raw, tmp_path / "c.toml")
    plugins = check_plugins(nodes)
    stores = {node.name: plugins.open_store(node) for node in nodes.nodes}
    try:
        assert isinstance(stores["gateway"], SqliteStore)
        assert (stores["b"]._compact_after, stores["b"]._journal_share) == (7, 0.5)
        assert (stores["c"]._compact_after, stores["c"]._journal_share) == (
            storage_json.COMPACT_AFTER, storage_json.JOURNAL_SHARE)
    finally:
        for store in stores.values():
            store.close()


# --- GroupCommit -------------------------------------------------------------


class GatedStore:
    """Counts write calls; holds the first in the writer thread until released,
    and fails the first one when asked."""

    def __init__(self, inner: Store, fail_first: bool = False) -> None:
        self.inner = inner
        self.fail_first = fail_first
        self.calls: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def load(self, tables: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
        return self.inner.load(tables)

    def get(self, table: str, key: str) -> Any | None:
        return self.inner.get(table, key)

    def scan(self, table: str) -> Iterator[tuple[str, Any]]:
        return self.inner.scan(table)

    def write(self, batch: Sequence[Put]) -> None:
        self.calls.append(len(batch))
        self.entered.set()
        assert self.release.wait(5), "test never released the writer"
        if self.fail_first and len(self.calls) == 1:
            raise OSError("disk full")
        self.inner.write(batch)

    def close(self) -> None:
        self.inner.close()


def test_group_commit_shares_writes_and_keeps_order(open_store: Opener, tmp_path: Path) -> None:
    store = GatedStore(open_store(tmp_path))
    writers = 50

    async def main() -> None:
        gc = GroupCommit(store, inline_after_quiet_s=None)
        first = asyncio.create_task(gc.write([Put("t", "first", 0)]))
        await asyncio.to_thread(store.entered.wait, 5)  # first batch is in the writer thread
        rest = [
            asyncio.create_task(gc.write([Put("t", f"k{i}", i), Put("t", "last", i)])) for i in range(writers)
        ]
        await asyncio.sleep(0)  # every writer queues behind the first batch
        store.release.set()
        await asyncio.gather(first, *rest)
        await gc.close()

    asyncio.run(main())
    assert len(store.calls) < writers + 1
    assert sum(store.calls) == 1 + 2 * writers
    expected = {"first": 0, "last": writers - 1, **{f"k{i}": i for i in range(writers)}}
    assert reopened(open_store, tmp_path) == {"t": expected}


def test_group_commit_failure_reaches_every_waiter(open_store: Opener, tmp_path: Path) -> None:
    store = GatedStore(open_store(tmp_path), fail_first=True)
    store.release.set()

    async def main() -> list[BaseException | None]:
        gc = GroupCommit(store, inline_after_quiet_s=None)
        results = await asyncio.gather(
            *(gc.write([Put("t", f"lost{i}", i)]) for i in range(10)), return_exceptions=True
        )
        await gc.write([Put("t", "kept", 1)])  # a later batch still goes down
        await gc.close()
        return results

    results = asyncio.run(main())
    assert store.calls == [10, 1]
    # An answer for the caller (UNAVAILABLE: try again), not a raw OSError that gRPC reports as UNKNOWN.
    assert all(isinstance(r, Unavailable) and r.message == "store write failed: disk full"
               and isinstance(r.__cause__, OSError) for r in results)
    assert reopened(open_store, tmp_path) == {"t": {"kept": 1}}


def test_a_failed_write_on_a_quiet_store_is_unavailable_too(open_store: Opener, tmp_path: Path) -> None:
    store = GatedStore(open_store(tmp_path), fail_first=True)
    store.release.set()

    async def main() -> BaseException | None:
        gc = GroupCommit(store)  # quiet: the write goes down on the loop itself
        try:
            await gc.write([Put("t", "lost", 0)])
        except Exception as e:
            return e
        finally:
            await gc.close()
        return None

    logged: list[str] = []
    sink = logger.add(logged.append, level="ERROR", format="{message}")
    try:
        failed = asyncio.run(main())
    finally:
        logger.remove(sink)
    assert isinstance(failed, Unavailable) and failed.message == "store write failed: disk full", repr(failed)
    assert logged == ["store write of 1 puts failed: OSError('disk full')\n"]  # the node's log keeps the reason
    assert reopened(open_store, tmp_path) == {}


class ThreadRecordingStore:
    """Records which thread each write ran on; each write takes at least delay_s, like a slow disk."""

    def __init__(self, inner: Store, delay_s: float = 0.0) -> None:
        self.inner, self.delay_s = inner, delay_s
        self.threads: list[str] = []

    def load(self, tables: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
        return self.inner.load(tables)

    def get(self, table: str, key: str) -> Any | None:
        return self.inner.get(table, key)

    def scan(self, table: str) -> Iterator[tuple[str, Any]]:
        return self.inner.scan(table)

    def write(self, batch: Sequence[Put]) -> None:
        self.threads.append(threading.current_thread().name)
        time.sleep(self.delay_s)
        self.inner.write(batch)

    def close(self) -> None:
        self.inner.close()


class FailsOnceStore(ThreadRecordingStore):
    """Its first write fails (the disk is full), later ones go through."""

    def write(self, batch: Sequence[Put]) -> None:
        if not self.threads:
            self.threads.append(threading.current_thread().name)
            raise OSError("disk full")
        super().write(batch)


def test_after_a_failed_write_the_loop_leaves_the_disk_to_the_writer_thread_until_one_succeeds(
        open_store: Opener, tmp_path: Path) -> None:
    """A failing disk is often a slow one too. The gateway retries a failed decision's abort
    every few seconds from a quiet store; written on the loop, each retry froze the whole node
    for as long as the disk took to fail again."""
    store = FailsOnceStore(open_store(tmp_path))

    async def main() -> None:
        gc = GroupCommit(store, inline_after_quiet_s=0.01)
        with pytest.raises(Unavailable):
            await gc.write([Put("t", "lost", 0)])  # quiet: on the loop
        await asyncio.sleep(0.05)  # quiet again, but the last write failed
        await gc.write([Put("t", "retried", 1)])
        await asyncio.sleep(0.05)  # the disk works again
        await gc.write([Put("t", "later", 2)])
        await gc.close()

    asyncio.run(main())
    main_thread = threading.main_thread().name
    assert store.threads[0] == main_thread and store.threads[1].startswith("store"), store.threads
    assert store.threads[2] == main_thread, store.threads
    assert reopened(open_store, tmp_path) == {"t": {"retried": 1, "later": 2}}


@pytest.mark.parametrize("disk", ["fast", "slower_than_the_quiet_time"])
def test_a_write_to_a_quiet_store_goes_down_on_the_loop_and_busy_writes_are_grouped(
        open_store: Opener, tmp_path: Path, disk: str) -> None:
    """A lone write skips the hand-off to the writer thread; writes that come together still share
    one, even when each write takes longer than the quiet time (quiet counts from a write's end)."""
    store = ThreadRecordingStore(open_store(tmp_path), delay_s=0.0 if disk == "fast" else 0.06)

    async def main() -> None:
        gc = GroupCommit(store, inline_after_quiet_s=0.05)
        await gc.write([Put("t", "lone", 1)])
        for wave in range(3):  # back to back: each wave starts as the last write ends
            await asyncio.gather(*(gc.write([Put("t", f"busy{i}", wave)]) for i in range(20)))
        await asyncio.sleep(0.1)  # quiet again
        await gc.write([Put("t", "lone_again", 2)])
        await gc.close()

    asyncio.run(main())
    main_thread = threading.main_thread().name
    # The first of the busy writes finds the store just used, so it queues like the rest.
    assert store.threads[0] == main_thread and store.threads[-1] == main_thread
    busy = store.threads[1:-1]
    assert busy and all(name.startswith("store") for name in busy) and len(busy) < 3 * 20
    assert reopened(open_store, tmp_path) == {"t": {"lone": 1, "lone_again": 2, **{f"busy{i}": 2 for i in range(20)}}}


def test_sqlite_damage_in_a_file_too_large_to_check_at_open_is_found_where_it_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Restart time must not follow the history stored, so a large file is not checked whole at open."""
    file = tmp_path / "store.sqlite3"
    store = SqliteStore(file)
    store.write([Put("t", f"k{i}", "x" * 200) for i in range(300)])
    store.close()
    data = bytearray(file.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)
    file.write_bytes(bytes(data))
    monkeypatch.setattr(storage_sqlite, "QUICK_CHECK_MAX_BYTES", 1024)
    store = SqliteStore(file)  # opens: only the header was read
    try:
        with pytest.raises(StoreDamaged, match=str(file)):
            store.load(["t"])
        with pytest.raises(StoreDamaged, match=str(file)):
            store.get("t", "k1")
        with pytest.raises(StoreDamaged, match=str(file)):
            list(store.scan("t"))
    finally:
        store.close()
