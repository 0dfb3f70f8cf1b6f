"""The storage plugins and GroupCommit, against real files."""
from __future__ import annotations

import asyncio
import errno
import hashlib
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
from miniupi.contract.store import Conflict, Expect, Put, Store, StoreDamaged
from miniupi.nodes.group_commit import GroupCommit

Opener = Callable[[Path], Store]


def open_sqlite(path: Path) -> SqliteStore:
    return SqliteStore(path / "store.sqlite3")


def open_json(path: Path) -> JsonStore:
    return JsonStore(path)


def postgres_opener(request: pytest.FixtureRequest) -> Opener:
    """Stores on the session's PostgreSQL server, a schema per directory: reopening a path reopens its schema."""
    from psycopg.conninfo import make_conninfo

    from miniupi.plugins.storage_postgres import PostgresStore

    conninfo = make_conninfo(**request.getfixturevalue("miniupi_postgres").connection())

    def open_postgres(path: Path) -> Store:
        return PostgresStore(conninfo, "t_" + hashlib.sha256(str(path).encode()).hexdigest()[:20])

    return open_postgres


@pytest.fixture(params=[open_sqlite, open_json, postgres_opener], ids=["sqlite", "json", "postgres"])
def open_store(request: pytest.FixtureRequest) -> Opener:
    return request.param(request) if request.param is postgres_opener else request.param


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


def test_a_write_whose_expectations_hold_is_applied_whole(open_store: Opener, tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.write([Put("txns", "t1", {"state": "INITIATED", "owner": "gw1", "n": 2**63 - 1})])
    store.write([Put("txns", "t1", {"state": "COMMITTED", "owner": "gw1"}), Put("txns", "t2", {"owner": "gw1"}),
                 Put("other", "x", 1)],
                expect=[Expect("txns", "t1", "owner", "gw1"), Expect("txns", "t1", "state", "INITIATED"),
                        Expect("txns", "t2", None)])
    store.close()
    assert reopened(open_store, tmp_path) == {
        "txns": {"t1": {"state": "COMMITTED", "owner": "gw1"}, "t2": {"owner": "gw1"}}, "other": {"x": 1}}


@pytest.mark.parametrize("expect", [
    Expect("txns", "t1", "owner", "gw2"),  # another value
    Expect("txns", "t1", "missing", None),  # a field must be there to match, even a null
    Expect("txns", "t1", "n", True),  # 1 is not true in JSON
    Expect("txns", "absent", "owner", "gw1"),  # no row at all
    Expect("txns", "list", "owner", "gw1"),  # not an object
    Expect("txns", "t1", None),  # a row that must be absent is there
], ids=["other-value", "missing-field", "bool-is-not-int", "absent-row", "not-an-object", "row-exists"])
def test_a_write_whose_expectation_fails_raises_conflict_and_applies_nothing(
        open_store: Opener, tmp_path: Path, expect: Expect) -> None:
    store = open_store(tmp_path)
    store.write([Put("txns", "t1", {"owner": "gw1", "n": 1}), Put("txns", "list", ["owner"])])
    before = store.load()
    batch = [Put("txns", "other", 1), Put("txns", "t1", None), Put(expect.table, expect.key, {"owner": "me"})]
    with pytest.raises(Conflict):
        store.write(batch, expect=[expect])
    assert store.load() == before
    store.write([Put("txns", "after", 2)])  # still usable
    store.close()
    assert reopened(open_store, tmp_path) == {**before, "txns": {**before["txns"], "after": 2}}


def test_an_absent_row_expectation_needs_a_put_of_its_key(open_store: Opener, tmp_path: Path) -> None:
    store = open_store(tmp_path)
    for batch in ([Put("t", "other", 1)], [Put("t", "k", 1), Put("t", "k", None)]):
        with pytest.raises(ValueError):
            store.write(batch, expect=[Expect("t", "k", None)])
    assert store.load() == {}
    store.close()


def test_claim_takes_rows_of_the_named_owners_in_key_order_and_writes_them(open_store: Opener, tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.write([Put("work", f"k{n}", {"owner": ["dead1", "dead2", "alive"][n % 3], "n": n}) for n in range(9)]
                + [Put("work", "odd", ["owner", "dead1"]), Put("work", "nested", {"x": {"owner": "dead1"}}),
                   Put("work", "nul", {"owner": "dead1", "note": "a\u0000b"}), Put("elsewhere", "e", {"owner": "dead1"})])
    first = store.claim("work", "owner", ["dead1", "dead2"], "me", 4)
    assert first == [(f"k{n}", {"owner": "me", "n": n}) for n in (0, 1, 3, 4)]
    rest = store.claim("work", "owner", {"dead1", "dead2"}, "me", 100)
    assert [key for key, _ in rest] == ["k6", "k7", "nul"] and rest[-1][1] == {"owner": "me", "note": "a\u0000b"}
    assert store.claim("work", "owner", ["dead1"], "me", 100) == [] and store.claim("work", "owner", [], "me", 5) == []
    store.close()
    rows = reopened(open_store, tmp_path)
    assert sorted(k for k, v in rows["work"].items() if isinstance(v, dict) and v.get("owner") == "me") == \
        ["k0", "k1", "k3", "k4", "k6", "k7", "nul"]
    assert rows["elsewhere"] == {"e": {"owner": "dead1"}} and rows["work"]["nested"] == {"x": {"owner": "dead1"}}


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


@pytest.mark.parametrize("content", [
    b"{not json", b"[]", b'{"seq": 1}', b'{"seq": 1, "tables": {"t": 5}}', b'{"tables": {}}',
    b'{"seq": 1, "tables": {"t": {"k": NaN}}}', b'{"seq": 1, "tables": {"t": {"k": null}}}',
    b'{"seq": -1, "tables": {}}', b'{"seq": true, "tables": {}}', b'{"seq": 1, "tables": {}} x',
    b'{"seq": 1, "tables": {"t": {"k": 1,}}}', b'{"seq": 1, "tables": {"t": {"k" 1}}}',
    b'{"seq": 1, "tables": {"t": {"k": }}}', b'{"seq": 1, "tables": {"t": {}, "t": {}}}',
    b'{"seq": 1, "seq": 2, "tables": {}}', b'{"seq": 1, "tables": {"t": {"k": "\xff"}}}', b"",
])
def test_json_unreadable_snapshot_is_damage(tmp_path: Path, content: bytes) -> None:
    (tmp_path / storage_json.SNAPSHOT).write_bytes(content)
    with pytest.raises(StoreDamaged, match=str(tmp_path / storage_json.SNAPSHOT)):
        open_json(tmp_path)


def test_json_a_snapshot_edited_by_hand_loads_and_compacts(tmp_path: Path) -> None:
    """Values are kept as the snapshot's text: spaces, new lines and raw UTF-8 included."""
    tables = {"t": {"k": {"a": [1, 2.5, "₹ \\ \""], "b": None}, "é": "x", "n": -0.0}, "u": {"k": True}}
    (tmp_path / storage_json.SNAPSHOT).write_text(
        json.dumps({"note": "by hand", "seq": 2, "tables": {**tables, "empty": {}}}, indent=2, ensure_ascii=False)
        + "\n", encoding="utf-8")
    store = JsonStore(tmp_path, compact_after=1, journal_share=0.0)
    assert store.load() == tables and store.get("t", "é") == "x"
    store.write([Put("u", "k", False)])
    store.write([Put("u", "j", 1)])  # rotates and compacts the hand-made values out again
    compacted(store)
    store.close()
    expected = {**tables, "u": {"k": False, "j": 1}}
    assert json.loads((tmp_path / storage_json.SNAPSHOT).read_bytes())["tables"] == {**tables, "u": {"k": False}}
    assert reopened(open_json, tmp_path) == expected


def compacted(store: JsonStore) -> None:
    assert store.wait_for_compaction(10), "compaction did not finish within 10 s"


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
        compacted(store)
        assert store.load() == model
        assert len(journal.read_bytes().splitlines()) <= 3
        assert not (tmp_path / storage_json.ROTATED).exists()
        snapshots.append(snapshot.stat().st_ino if snapshot.exists() else 0)
    store.close()
    # The journal was rotated at writes 4, 7 and 10 only, and compacted behind them.
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
    store.write([Put("n", "n", 0)])  # the journal had outgrown the empty snapshot: rotated first
    compacted(store)
    before = snapshot.stat()
    assert before.st_size > 10_000
    n = 0
    while journal.stat().st_size < before.st_size:
        n += 1
        store.write([Put("n", "n", n)])
        assert store.wait_for_compaction(0), f"a compaction began after {n} small batches"
        assert snapshot.stat().st_ino == before.st_ino, f"rewritten after {n} small batches"
        if n == 100:  # a reopened store reads the snapshot's size from the file
            store.close()
            store = JsonStore(tmp_path, compact_after=1)
    assert n > 200  # each small line pays for a share of the next rewrite
    store.write([Put("n", "n", n + 1)])  # the journal is now the snapshot's size: rotated first
    compacted(store)
    assert snapshot.stat().st_ino != before.st_ino
    assert len(journal.read_bytes().splitlines()) == 1
    store.close()
    assert reopened(open_json, tmp_path) == {"big": {p.key: p.value for p in big}, "n": {"n": n + 1}}


@pytest.mark.parametrize("share", [-1.0, float("nan")])
def test_json_journal_share_must_be_a_number_of_at_least_0(tmp_path: Path, share: float) -> None:
    with pytest.raises(ValueError, match="journal_share"):
        JsonStore(tmp_path, journal_share=share)


class Gate:
    """An on_step hook that holds the thread reaching `step` until released."""

    def __init__(self, step: str) -> None:
        self.step = step
        self.reached = threading.Event()
        self.release = threading.Event()
        self.steps: list[tuple[str, str]] = []  # (step, thread name)

    def __call__(self, step: str) -> None:
        self.steps.append((step, threading.current_thread().name))
        if step == self.step:
            self.reached.set()
            assert self.release.wait(10), "the test never released the compaction"


def apply_model(model: dict[str, dict[str, Any]], puts: Sequence[Put]) -> None:
    for table, key, value in puts:
        if value is None:
            rows = model.get(table, {})
            rows.pop(key, None)
            if not rows:
                model.pop(table, None)
        else:
            model.setdefault(table, {})[key] = value


def check_reads(store: JsonStore, model: dict[str, dict[str, Any]]) -> None:
    assert store.load() == model
    for table in [*model, "gone", "never"]:
        assert store.load([table]) == ({table: model[table]} if table in model else {})
        assert list(store.scan(table)) == sorted(model.get(table, {}).items())
        for key in ["k0", "k1", "k5", "k13", "new0", "absent"]:
            assert store.get(table, key) == model.get(table, {}).get(key)


@pytest.mark.parametrize("held_at", ["snapshot begun", "snapshot written", "replace synced"])
def test_json_writes_go_on_and_reads_are_right_while_a_compaction_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held_at: str) -> None:
    """No write waits for a compaction: held at any step, writes still complete, and reads see them."""
    # The snapshot in pieces of three rows, each flushed: what a large one does.
    monkeypatch.setattr(storage_json, "SNAPSHOT_PIECE_ROWS", 3)
    monkeypatch.setattr(storage_json, "SNAPSHOT_SYNC_BYTES", 1)
    gate = Gate(held_at)
    store = JsonStore(tmp_path, compact_after=20, journal_share=0.0, on_step=gate)
    model: dict[str, dict[str, Any]] = {}
    for i in range(20):
        puts = [Put("t", f"k{i}", {"i": i}), Put("gone", f"k{i}", i), Put("count", "n", i)]
        store.write(puts)
        apply_model(model, puts)
    at_rotation = json.loads(json.dumps(model))
    first = [Put("t", "new0", "after")]
    store.write(first)  # rotates, then appends to the new journal
    apply_model(model, first)
    assert gate.reached.wait(10)
    check_reads(store, model)
    # Overwrite, delete and add keys of the state being written out; empty a table; add one.
    for i in range(30):
        puts = [Put("t", f"k{i % 20}", {"i": i, "again": True}), Put("t", f"k{(i + 7) % 20}", None),
                Put("gone", f"k{i % 20}", None), Put("fresh", f"k{i}", [i]), Put("count", "n", 100 + i)]
        store.write(puts)
        apply_model(model, puts)
        check_reads(store, model)
    assert "gone" not in model
    assert not store.wait_for_compaction(0), "the compaction finished while held"
    assert (tmp_path / storage_json.ROTATED).exists()
    gate.release.set()
    compacted(store)
    check_reads(store, model)
    # The snapshot holds exactly the state at the rotation; the journal everything since.
    written = json.loads((tmp_path / storage_json.SNAPSHOT).read_bytes())
    assert written == {"seq": 20, "tables": at_rotation}
    lines = (tmp_path / storage_json.JOURNAL).read_bytes().splitlines()
    assert [json.loads(line)[0] for line in lines] == list(range(21, 52))
    assert not (tmp_path / storage_json.ROTATED).exists()
    assert [s for s, _ in gate.steps] == list(storage_json.STEPS)
    assert {t for s, t in gate.steps if s in storage_json.STEPS[4:]} == {"json-compaction"}
    store.write([Put("count", "n", -1)])  # the journal grew past compact_after meanwhile: rotated again
    apply_model(model, [Put("count", "n", -1)])
    compacted(store)
    assert json.loads((tmp_path / storage_json.SNAPSHOT).read_bytes())["seq"] == 51
    store.close()
    assert reopened(open_json, tmp_path) == model


def test_json_reads_from_another_thread_see_whole_batches_through_compactions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads come from the event loop while the writer thread writes and the compaction thread
    writes out and folds changes back, one row at a time here: each read sees whole batches."""
    monkeypatch.setattr(storage_json, "FOLD_ROWS", 1)
    store = JsonStore(tmp_path, compact_after=5, journal_share=0.0)
    store.write([Put("h", f"k{j:02d}", 0) for j in range(50)])
    stop, errors, reads = threading.Event(), [], [0]

    def reader() -> None:
        last = 0
        try:
            while not stop.is_set():
                pair = store.load(["a", "b"])
                assert pair.get("a") == pair.get("b"), pair  # set by the same batch
                n = pair.get("a", {}).get("x", 0)
                assert n >= last, (n, last)
                last = n
                assert (store.get("a", "x") or 0) >= n
                keys = [k for k, _ in store.scan("h")]
                assert keys == sorted(set(keys)), keys
                reads[0] += 1
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(1, 301):
            store.write([Put("a", "x", i), Put("h", f"k{i % 50:02d}", i), Put("h", f"k{(i + 25) % 50:02d}", None),
                         Put("b", "x", i)])
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[0]
    assert reads[0] > 10 and store.compactions > 5, (reads, store.compactions)
    compacted(store)
    expected = store.load()
    store.close()
    assert reopened(open_json, tmp_path) == expected
    assert expected["a"] == expected["b"] == {"x": 300}


def test_json_the_old_snapshot_and_the_rotated_journal_are_freed_a_piece_at_a_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Freed at once, a large file's blocks hold up a concurrent journal fdatasync (ext4)."""
    monkeypatch.setattr(storage_json, "FREE_BYTES", 400)
    monkeypatch.setattr(storage_json, "FREE_PAUSE_S", 0.0)
    store = JsonStore(tmp_path, compact_after=1_000)  # compacted only when asked (compact_soon)
    for i in range(4):
        if i == 3:
            store.compact_soon()
        store.write([Put("t", f"k{i}", "x" * 600)])
    compacted(store)  # the first snapshot: no old one to free, a rotated journal of three lines
    old_snapshot = (tmp_path / storage_json.SNAPSHOT).stat().st_size
    for i in range(4, 7):
        store.write([Put("t", f"k{i}", "x" * 600)])
    rotated = (tmp_path / storage_json.JOURNAL).stat().st_size  # four lines, to be rotated next
    real_ftruncate, cuts = os.ftruncate, []

    def ftruncate(fd: int, length: int) -> None:
        cuts.append((os.fstat(fd).st_size, length, os.fstat(fd).st_nlink))
        real_ftruncate(fd, length)

    monkeypatch.setattr(os, "ftruncate", ftruncate)
    store.compact_soon()
    store.write([Put("t", "k7", 0)])  # rotates
    compacted(store)
    store.close()
    assert old_snapshot > 1000 and rotated > 1000
    # Only files already removed (no link left), each from its size down to 0, 400 bytes at a time.
    assert all(links == 0 for _, _, links in cuts), cuts
    for size in (old_snapshot, rotated):
        steps = [(before, after) for before, after, _ in cuts if before > after]
        chain = [size]
        for before, after in steps:
            if before == chain[-1]:
                chain.append(after)
        assert chain[-1] == 0 and all(a - b <= 400 for a, b in zip(chain, chain[1:])), (size, cuts)
    assert reopened(open_json, tmp_path) == {"t": {**{f"k{i}": "x" * 600 for i in range(7)}, "k7": 0}}


def copy_files(directory: Path, to: Path) -> None:
    """The files as they are at this moment: what a crash here leaves on disk."""
    to.mkdir()
    for file in directory.iterdir():
        (to / file.name).write_bytes(file.read_bytes())


def test_json_a_crash_at_any_step_of_a_compaction_reloads_the_acknowledged_state(tmp_path: Path) -> None:
    """The files as each step leaves them reopen to the last acknowledged batch, and the
    reopened store finishes the compaction. (Kills of a real process: test_store_crash.py.)"""
    directory = tmp_path / "store"
    acked = threading.Event()  # the write that rotates has returned
    images: list[tuple[str, int]] = []

    def on_step(step: str) -> None:
        if threading.current_thread().name == "json-compaction":
            assert acked.wait(10)  # the files as the compaction leaves them, the rotating write done
        copy_files(directory, tmp_path / step)
        images.append((step, 4 if acked.is_set() else 3))

    store = JsonStore(directory, compact_after=3, journal_share=0.0, on_step=on_step)
    models = [{}]
    for i in range(1, 5):
        store.write([Put("t", f"k{i}", i), Put("t", f"k{i - 2}", None), Put("n", "n", i)])
        apply_model(model := json.loads(json.dumps(models[-1])), [Put("t", f"k{i}", i), Put("t", f"k{i - 2}", None),
                                                                 Put("n", "n", i)])
        models.append(model)
        if i == 4:
            acked.set()
    compacted(store)
    store.close()
    assert [step for step, _ in images] == list(storage_json.STEPS)
    for step, n in images:
        image = tmp_path / step
        again = JsonStore(image, compact_after=3, journal_share=0.0)
        try:
            assert again.load() == models[n], step
            compacted(again)  # an interrupted compaction is finished on opening
            again.write([Put("n", "n", 5)])
            compacted(again)
        finally:
            again.close()
        assert not (image / storage_json.ROTATED).exists() and not (image / storage_json.SNAPSHOT_TMP).exists()
        assert reopened(open_json, image) == {**models[n], "n": {"n": 5}}, step


def rotated_but_not_compacted(directory: Path) -> tuple[JsonStore, Gate]:
    """A store whose journal was rotated (batches 1-3 in journal.old.jsonl, 4 in journal.jsonl)
    and whose compaction is held before it writes anything."""
    gate = Gate("snapshot begun")
    store = JsonStore(directory, compact_after=3, journal_share=0.0, on_step=gate)
    for i in range(1, 5):
        store.write([Put("t", f"k{i}", i)])
    assert gate.reached.wait(10)
    return store, gate


def close_held(store: JsonStore, gate: Gate) -> None:
    """Close while the compaction is held: it stops where it is, as a crash would."""
    closing = threading.Thread(target=store.close)
    closing.start()
    gate.release.set()
    closing.join(10)
    assert not closing.is_alive()


def test_json_a_store_closed_during_a_compaction_finishes_it_on_opening(tmp_path: Path) -> None:
    store, gate = rotated_but_not_compacted(tmp_path)
    close_held(store, gate)
    rotated = tmp_path / storage_json.ROTATED
    assert [json.loads(line)[0] for line in rotated.read_bytes().splitlines()] == [1, 2, 3]
    assert not (tmp_path / storage_json.SNAPSHOT_TMP).exists()
    again = JsonStore(tmp_path, compact_after=3, journal_share=0.0)
    assert again.load() == {"t": {f"k{i}": i for i in range(1, 5)}}
    compacted(again)
    assert not rotated.exists() and json.loads((tmp_path / storage_json.SNAPSHOT).read_bytes())["seq"] == 3
    again.close()


@pytest.mark.parametrize("spoil", ["garbage in a line", "torn last line", "lost line", "removed"])
def test_json_a_damaged_rotated_journal_is_damage(tmp_path: Path, spoil: str) -> None:
    store, gate = rotated_but_not_compacted(tmp_path)
    close_held(store, gate)
    rotated = tmp_path / storage_json.ROTATED
    lines = rotated.read_bytes().splitlines(keepends=True)
    if spoil == "garbage in a line":
        rotated.write_bytes(lines[0] + b"\x00#garbage#\xff\n" + lines[2])
        match = f"{rotated}: line 2 is not JSON"
    elif spoil == "torn last line":  # never a batch in flight: the rotated journal was whole
        rotated.write_bytes(lines[0] + lines[1] + lines[2][:-5])
        match = f"{rotated}: its last line is not a whole batch"
    elif spoil == "lost line":
        rotated.write_bytes(lines[0] + lines[2])
        match = f"{rotated}: line 2 is batch 3, expected 2"
    else:
        rotated.unlink()
        match = "journal.jsonl: line 1 is batch 4 but .*snapshot.json holds only up to 0"
    with pytest.raises(StoreDamaged, match=match):
        open_json(tmp_path)


def test_json_the_new_journal_must_follow_the_rotated_one(tmp_path: Path) -> None:
    store, gate = rotated_but_not_compacted(tmp_path)
    close_held(store, gate)
    journal = tmp_path / storage_json.JOURNAL
    journal.write_bytes(journal.read_bytes().replace(b"[4,", b"[5,", 1))
    with pytest.raises(StoreDamaged, match=f"{journal}: line 1 is batch 5, expected 4"):
        open_json(tmp_path)


FAIL_ONCE = {
    # in the compaction thread: logged, retried, no write fails
    "snapshot write": ("write", "compaction"),
    "snapshot fsync": ("fsync", "compaction"),
    "replace": ("replace", "compaction"),
    "directory fsync after the replace": ("fsync dir", "compaction"),
    "removing the rotated journal": ("unlink", "compaction"),
    # in the writer: fails the write that rotates, which the next write takes up again
    "rename": ("rename", "writer"),
    "directory fsync after the rename": ("fsync dir", "writer"),
    "new journal": ("open", "writer"),
}


@pytest.mark.parametrize("failing", list(FAIL_ONCE))
def test_json_a_failed_rotation_or_compaction_loses_nothing_and_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    call, where = FAIL_ONCE[failing]
    store = JsonStore(tmp_path, compact_after=2, journal_share=0.0)
    store.retry_s = (0.05, 0.05)
    store.write([Put("t", "a", 1)])
    store.write([Put("t", "b", 2)])
    failed = []

    def once(real: Callable[..., Any], applies: Callable[..., bool]) -> Callable[..., Any]:
        def call_it(*args: Any, **kwargs: Any) -> Any:
            in_thread = threading.current_thread().name == "json-compaction"
            if not failed and in_thread == (where == "compaction") and applies(*args):
                failed.append(failing)
                raise OSError(errno.EIO, "injected")
            return real(*args, **kwargs)
        return call_it

    def is_dir(fd: int) -> bool:
        return stat.S_ISDIR(os.fstat(fd).st_mode)

    patches = {
        "write": (os, "write", lambda fd, data: True),
        "fsync": (os, "fsync", lambda fd: not is_dir(fd)),
        "fsync dir": (os, "fsync", is_dir),
        "replace": (os, "replace", lambda *a: True),
        "unlink": (os, "unlink", lambda path, *a: Path(path).name == storage_json.ROTATED),
        "rename": (os, "rename", lambda *a: True),
        "open": (os, "open", lambda path, *a, **k: Path(path).name == storage_json.JOURNAL),
    }
    module, name, applies = patches[call]
    logged: list[str] = []
    sink = logger.add(logged.append, level="ERROR", format="{message}")
    try:
        with monkeypatch.context() as m:
            m.setattr(module, name, once(getattr(module, name), applies))
            if where == "writer":
                with pytest.raises(OSError, match="injected"):
                    store.write([Put("t", "c", 3)])  # rotates first, and fails: nothing written
                assert store.load() == {"t": {"a": 1, "b": 2}}
                store.write([Put("t", "c", 3)])  # the rotation is finished, then the append
            else:
                store.write([Put("t", "c", 3)])  # rotates; the compaction fails behind it
                store._compact_after = 1_000  # and no other rotation follows it here
                for n in range(4, 10):  # writes go on meanwhile
                    store.write([Put("t", f"n{n}", n)])
            compacted(store)
    finally:
        logger.remove(sink)
    assert failed == [failing]
    expected = {"t": {"a": 1, "b": 2, "c": 3, **({} if where == "writer" else {f"n{n}": n for n in range(4, 10)})}}
    assert store.load() == expected
    assert store.compactions == 1 and store.failed_compactions == (where == "compaction")
    if where == "compaction":
        assert len(logged) == 1 and "compaction failed, trying again" in logged[0] and "injected" in logged[0], logged
    assert json.loads((tmp_path / storage_json.SNAPSHOT).read_bytes())["seq"] == 2
    assert not (tmp_path / storage_json.ROTATED).exists() and not (tmp_path / storage_json.SNAPSHOT_TMP).exists()
    assert (tmp_path / storage_json.JOURNAL).read_bytes().startswith(b"[3,")
    store.close()
    assert reopened(open_json, tmp_path) == expected


def test_json_a_compaction_that_keeps_failing_leaves_a_usable_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = JsonStore(tmp_path, compact_after=2, journal_share=0.0)
    store.retry_s = (0.01, 0.02)

    def refuse(*args: object) -> None:
        raise OSError(errno.ENOSPC, "injected")

    expected = {"t": {f"k{i}": i for i in range(30)}}
    with monkeypatch.context() as m:
        m.setattr(os, "replace", refuse)
        for i in range(30):
            store.write([Put("t", f"k{i}", i)])
        deadline = time.monotonic() + 10
        while store.failed_compactions < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.failed_compactions >= 3 and not store.wait_for_compaction(0)
        assert store.load() == expected
        store.close()  # stops the retries
    assert (tmp_path / storage_json.ROTATED).exists() and not (tmp_path / storage_json.SNAPSHOT).exists()
    assert not (tmp_path / storage_json.SNAPSHOT_TMP).exists()
    again = JsonStore(tmp_path, compact_after=2, journal_share=0.0)
    assert again.load() == expected
    compacted(again)  # the disk works again: the compaction is finished
    assert json.loads((tmp_path / storage_json.SNAPSHOT).read_bytes())["seq"] == 2
    again.close()
    assert reopened(open_json, tmp_path) == expected


def test_json_missing_snapshot_after_compaction_is_damage(tmp_path: Path) -> None:
    store = JsonStore(tmp_path, compact_after=1)
    store.write([Put("t", "a", 1)])
    store.write([Put("t", "b", 2)])  # compacts batch 1 away, journal starts at 2
    compacted(store)
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
    compacted(store)
    assert store.load()["acct"]["alice"] == {"paise": 100}
    store.close()
    assert reopened(open_json, tmp_path) == {"acct": {"alice": {"paise": 100}, "bob": 1}}


def test_json_files_are_private(tmp_path: Path, umask_022: None) -> None:
    directory = tmp_path / "store"
    store, gate = rotated_but_not_compacted(directory)
    assert mode(directory / storage_json.ROTATED) == 0o600
    assert mode(directory / storage_json.JOURNAL) == 0o600
    gate.release.set()
    compacted(store)
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
