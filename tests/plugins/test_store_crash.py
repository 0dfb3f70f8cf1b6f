"""Crash safety of the stores: SIGKILL in the middle of writes, many times, and damaged files.

The crash loop runs tests/plugins/store_writer.py as a child that writes numbered,
deterministic batches (store_writer.batch) as fast as it can and records each
batch number once write() has returned. The parent kills it with SIGKILL at a
random moment, reopens the store and requires the state after exactly some
batch k, where k is at least the last acknowledged batch (an acknowledged
write is never lost) and at most one more (only the write in flight may have
landed), and the whole state must equal the model's (no part of a batch).
Then a new child carries on from k + 1 on the same files, so later kills hit
a store that has already recovered from earlier ones. The JSON store runs
with compact_after=5 and journal_share=0 (compact every fifth batch, however
small the journal), so a good share of the kills land inside compaction.

What a SIGKILL can and cannot show. It stops the process at any instruction,
but the kernel keeps everything already write()n: the page cache survives,
and is flushed later as if nothing happened. So this catches what a process
crash exposes: a batch written as several appends (a kill in between leaves
part of a batch), a snapshot rewritten in place (a kill after the truncation
leaves an empty or half snapshot), a journal truncated before the new
snapshot is in place, recovery that drops or misreads good lines, an
acknowledgement given before the data was even written. It cannot catch a
missing fsync (acknowledging before the data is on the disk, or a rename
whose directory was never synced): that loses data only on power loss or a
kernel crash, which a test in a process cannot cause. Those orders are
checked by reading the code (the comment at the top of storage_json.py) and
by the monkeypatched crashes in test_storage.py, not here.

How sharp it is, tried on deliberately broken copies of the stores: a JSON
journal truncated before the new snapshot is renamed in, recovery that drops
the last complete journal line, and SQLite writes without BEGIN/COMMIT (one
autocommit per statement) each failed every run; a snapshot written in
place (O_TRUNC, write, fsync, no rename) failed in 4 runs of 5 with 30 kills
and 6 of 6 with the 40 used here: the kill must land in the short gap between
the truncation and the end of the write. Kills are random, so a pass is evidence, not proof.

The JSON store's rotated compaction is also killed step by step: a child
kills itself the first, second or third time it reaches one of the steps
in storage_json.STEPS (from the writer during a rotation, or from the
compaction thread while the writer goes on), and the files it leaves must
be the ones that step leaves and reopen to the acknowledged state. Tried on
broken copies of the store, this failed for a compaction that removes the
rotated journal before its snapshot is in place, for an opening that drops
an unfinished compaction's rotated journal, and for a rotation that goes on
appending to the renamed journal.

The damage tests start a real `miniupi bank` node, stop it, spoil its store
files and require it to refuse to start: a non-zero exit with one line that
says "refusing to start" and names the spoiled file, and no traceback.
"""
from __future__ import annotations

import json
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w

import miniupi
from miniupi.ops.certs import init_certs
from miniupi.config import load_config
from miniupi.plugins import storage_json, storage_sqlite
from miniupi.contract.store import StoreDamaged
from miniupi.ops.testing import free_port
from store_writer import Tables, apply, batch, open_store

pytestmark = pytest.mark.timeout(120)

WRITER = Path(__file__).with_name("store_writer.py")
KILLS = 40
KILLS_PER_STEP = 4
COMPACT_AFTER = 5
CHILD_START_S = 15.0  # bound on a child reaching "opening" / "ready"
# Children import the very miniupi this process tests, whatever the venv's install points at.
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [str(Path(miniupi.__file__).resolve().parent.parent), *filter(None, [os.environ.get("PYTHONPATH")])])}
SEED = int(os.environ.get("MINIUPI_CRASH_SEED") or random.SystemRandom().randrange(2**32))


# --- the crash loop ----------------------------------------------------------


class Model:
    """The state after batch k, computed forward (k never goes back)."""

    def __init__(self) -> None:
        self.k = 0
        self.tables: Tables = {}

    def at(self, k: int) -> Tables:
        assert k >= self.k, f"model asked to go back from {self.k} to {k}"
        while self.k < k:
            self.k += 1
            apply(self.tables, batch(self.k))
        return self.tables


def differences(got: Tables, want: Tables, limit: int = 8) -> list[str]:
    out = []
    for table in sorted(set(got) | set(want)):
        g, w = got.get(table, {}), want.get(table, {})
        for key in sorted(set(g) | set(w)):
            if g.get(key, "<absent>") != w.get(key, "<absent>"):
                out.append(f"{table}/{key}: stored {g.get(key, '<absent>')!r}, model {w.get(key, '<absent>')!r}")
    return out[:limit]


def read_until(proc: subprocess.Popen[bytes], marker: bytes, seen: bytearray, timeout: float) -> None:
    """Read the child's stdout into `seen` until a line `marker` is in it."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    while marker + b"\n" not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"store writer printed no {marker!r} within {timeout}s (seed {SEED})")
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                proc.wait(5)
                assert proc.stderr is not None
                pytest.fail(
                    f"store writer exited {proc.returncode} before {marker!r} (seed {SEED}):\n"
                    + proc.stderr.read().decode(errors="replace")[-3000:]
                )
            seen += chunk


def read_acks(path: Path) -> list[int]:
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    lines.pop()  # b"" after the last newline (a kill cannot tear a 10-byte write)
    return [int(line) for line in lines]


def json_files(directory: Path) -> dict[str, Any]:
    """What a JSON store's files say, before anything reopens them."""
    def last_batch(name: str) -> int | None:
        file = directory / name
        lines = file.read_bytes().splitlines() if file.exists() else []
        try:
            return json.loads(lines[-1])[0] if lines else None
        except ValueError:
            return None  # a torn last line
    journal = directory / storage_json.JOURNAL
    tmp = directory / storage_json.SNAPSHOT_TMP
    snapshot = directory / storage_json.SNAPSHOT
    return {
        "journal": journal.read_bytes() if journal.exists() else None,
        "rotated": last_batch(storage_json.ROTATED) if (directory / storage_json.ROTATED).exists() else None,
        "tmp": tmp.read_bytes() if tmp.exists() else None,
        "snapshot": json.loads(snapshot.read_bytes())["seq"] if snapshot.exists() else None,
    }


def evidence(kind: str, directory: Path) -> list[str]:
    """Where the kill landed, as far as the files tell (before anything reopens them)."""
    found = []
    if kind == "json":
        files = json_files(directory)
        if files["tmp"] is not None:
            found.append("in compaction, before the snapshot's rename")
        if files["rotated"] is not None:
            found.append("journal rotated, compaction unfinished")
            if files["snapshot"] is not None and files["snapshot"] >= files["rotated"]:
                found.append("in compaction, between the snapshot's rename and the rotated journal's removal")
        if files["journal"] is None:
            found.append("in rotation, between the rename and the new journal")
        elif files["journal"] and not files["journal"].endswith(b"\n"):
            found.append("torn journal line")
    else:
        wal = directory / (storage_sqlite.FILE_NAME + "-wal")
        if wal.exists() and wal.stat().st_size:
            found.append("WAL left to recover")
    return found


def reopen_and_check(kind: str, directory: Path, where: str) -> Tables:
    """Open the store as a node would; it must load, and SQLite must pass integrity_check."""
    try:
        store = open_store(kind, directory, COMPACT_AFTER)
    except StoreDamaged as e:
        pytest.fail(f"{where}: the store does not reopen after a kill: {e}")
    try:
        tables = store.load()
        if kind == "sqlite":
            conn = sqlite3.connect(directory / storage_sqlite.FILE_NAME)
            try:
                check = conn.execute("PRAGMA integrity_check").fetchall()
            finally:
                conn.close()
            assert check == [("ok",)], f"{where}: integrity_check: {check}"
    finally:
        store.close()
    if kind == "json":
        # Recovery cuts a torn last line away, so the next append starts clean.
        data = (directory / storage_json.JOURNAL).read_bytes()
        assert not data or data.endswith(b"\n"), f"{where}: the journal still ends in a torn line"
    return tables


def child(kind: str, directory: Path, start: int, acks: Path, *kill_at: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), kind, str(directory), str(start), str(acks), str(COMPACT_AFTER), *kill_at],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=CHILD_ENV,
    )


def run_until_killed(kind: str, directory: Path, start: int, acks: Path, rng: random.Random) -> str:
    """Start a writer at batch `start`, SIGKILL it at a random moment; return when that was."""
    proc = child(kind, directory, start, acks)
    try:
        seen = bytearray()
        read_until(proc, b"opening", seen, CHILD_START_S)
        if rng.random() < 0.2:  # now and then while it opens (and recovers) the store
            when = "during open"
            time.sleep(rng.uniform(0, 0.004))
        else:
            read_until(proc, b"ready", seen, CHILD_START_S)
            when = "while writing"
            time.sleep(rng.uniform(0.005, 0.080))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if proc.returncode != -signal.SIGKILL:  # it died of something else first
            assert proc.stderr is not None
            pytest.fail(
                f"store writer exited {proc.returncode} before the kill (seed {SEED}):\n"
                + proc.stderr.read().decode(errors="replace")[-3000:]
            )
        return when
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def check_reopened(kind: str, directory: Path, k: int, acks_file: Path, model: Model,
                   where: str) -> tuple[int, list[int], int]:
    """After a kill of a writer that started at batch k + 1: the store reopens to the state
    after exactly some batch n, the last acknowledged one or the one in flight.
    Returns n, the acknowledged batches and the last of them (k if none)."""
    acks = read_acks(acks_file)
    assert acks == list(range(k + 1, k + 1 + len(acks))), f"{where}: acknowledgements out of order"
    floor = acks[-1] if acks else k  # durable before the kill: must be there
    tables = reopen_and_check(kind, directory, where)
    n = tables.get("meta", {}).get("n", 0)
    assert n >= floor, f"{where}: store holds batch {n}, but batch {floor} was acknowledged: a write was lost"
    assert n <= floor + 1, f"{where}: store holds batch {n}, but {floor} was the last write that returned"
    want = model.at(n)
    assert tables == want, f"{where}: not the state after batch {n}: " + "; ".join(differences(tables, want))
    return n, acks, floor


@pytest.mark.parametrize("kind", ["sqlite", "json"])
def test_kill_during_writes_always_reopens_consistent(kind: str, tmp_path: Path) -> None:
    print(f"seed {SEED} (set MINIUPI_CRASH_SEED to repeat the kill delays)")
    rng = random.Random(f"{SEED}-{kind}")
    directory = tmp_path / "store"
    model = Model()
    k = 0  # the batch the store holds, as last checked
    stats: Counter[str] = Counter()
    began = time.monotonic()
    for run in range(1, KILLS + 1):
        acks_file = tmp_path / f"acks{run}"
        when = run_until_killed(kind, directory, k + 1, acks_file, rng)
        where = f"{kind}, kill {run} {when} (seed {SEED})"
        for item in evidence(kind, directory):
            stats[item] += 1
        n, acks, floor = check_reopened(kind, directory, k, acks_file, model, where)
        stats["kills " + when] += 1
        stats["runs that acknowledged writes"] += bool(acks)
        stats["in-flight batch found on disk"] += n == floor + 1
        k = n

    took = time.monotonic() - began
    print(f"{kind}: {KILLS} kills, {k} batches in {took:.1f}s; " + ", ".join(f"{v} {s}" for s, v in sorted(stats.items())))
    # Not vacuous: most kills must land after real writes, not all in start-up.
    assert stats["runs that acknowledged writes"] >= KILLS // 2, stats
    # The last state is still a store a node can carry on with.
    store = open_store(kind, directory, COMPACT_AFTER)
    store.write(batch(k + 1))
    store.close()
    assert reopen_and_check(kind, directory, f"{kind}, after the last kill") == model.at(k + 1)


def files_at(step: str, files: dict[str, Any], where: str) -> None:
    """The files as the step leaves them: the kill landed where it was meant to."""
    rotated, tmp, journal, snapshot = files["rotated"], files["tmp"], files["journal"], files["snapshot"]
    if step in ("rotated journal removed", "compacted"):
        assert rotated is None, f"{where}: {files}"
        return
    assert rotated is not None, f"{where}: no rotated journal: {files}"
    if step in ("renamed", "rename synced"):
        assert journal is None, f"{where}: {files}"
    elif step in ("journal created", "rotated"):
        assert journal == b"", f"{where}: {files}"  # the next batch is not appended yet
    elif step == "snapshot begun":
        assert tmp and not tmp.endswith(b"}}"), f"{where}: {files}"  # written in part
    elif step == "snapshot written":
        assert tmp is not None and json.loads(tmp)["seq"] == rotated, f"{where}: {files}"
    else:  # "snapshot replaced", "replace synced"
        assert tmp is None and snapshot == rotated, f"{where}: {files}"


@pytest.mark.parametrize("step", storage_json.STEPS)
def test_json_kill_at_every_step_of_a_rotated_compaction(step: str, tmp_path: Path) -> None:
    """A kill at each step of a rotation (in the writer) and of the compaction behind it (in its
    thread, while the writer goes on) reopens to the acknowledged state. Each run kills at the
    first, second or third time the step is reached, and the next run carries on from the files
    that kill left, so some kills also land in a compaction that an opening took up again."""
    rng = random.Random(f"{SEED}-{step}")
    directory = tmp_path / "store"
    model = Model()
    k = 0
    for run in range(1, KILLS_PER_STEP + 1):
        acks_file = tmp_path / f"acks{run}"
        nth = rng.randint(1, 3)
        where = f"json, kill {run} at {step!r} (time {nth}, seed {SEED})"
        proc = child("json", directory, k + 1, acks_file, step, str(nth))
        try:
            out, err = proc.communicate(timeout=CHILD_START_S + 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"{where}: the writer never reached the step:\n{out.decode()}\n{err.decode()[-3000:]}")
        assert proc.returncode == -signal.SIGKILL and f"killed at {step}\n".encode() in out, (
            f"{where}: exited {proc.returncode}:\n{out.decode()}\n{err.decode()[-3000:]}")
        files_at(step, json_files(directory), where)
        n, acks, floor = check_reopened("json", directory, k, acks_file, model, where)
        if step in storage_json.STEPS[:4]:  # in the writer, before the batch's line is appended
            assert n == floor, f"{where}: the batch in flight during a rotation is on disk"
        k = n
    store = open_store("json", directory, COMPACT_AFTER)
    store.write(batch(k + 1))
    store.close()
    assert reopen_and_check("json", directory, f"json, after the kills at {step!r}") == model.at(k + 1)


# --- a damaged store stops the node ------------------------------------------


def spoil_json_journal(data_dir: Path) -> Path:
    """Garbage in the middle of the first of several journal lines: not a torn tail."""
    journal = data_dir / storage_json.JOURNAL
    lines = journal.read_bytes().split(b"\n")
    assert len(lines) >= 3, f"need at least two journal lines to spoil one in the middle: {lines!r}"
    garbage, middle = b"\x00#garbage#\xff", len(lines[0]) // 2
    lines[0] = lines[0][:middle] + garbage + lines[0][middle + len(garbage):]
    journal.write_bytes(b"\n".join(lines))
    return journal


def spoil_json_rotated_journal(data_dir: Path) -> Path:
    """The files as a rotation leaves them (journal.jsonl renamed, a new empty one), the rotated one spoiled."""
    journal, rotated = data_dir / storage_json.JOURNAL, data_dir / storage_json.ROTATED
    journal.rename(rotated)
    journal.write_bytes(b"")
    lines = rotated.read_bytes().split(b"\n")
    assert len(lines) >= 3, f"need at least two journal lines to spoil one in the middle: {lines!r}"
    lines[0] = lines[0][:len(lines[0]) // 2] + b"\x00#garbage#\xff"
    rotated.write_bytes(b"\n".join(lines))
    return rotated


def spoil_sqlite_garbled(data_dir: Path) -> Path:
    """Keep SQLite's 100-byte header, overwrite every byte after it."""
    file = data_dir / storage_sqlite.FILE_NAME
    size = file.stat().st_size
    assert size >= 4096, size
    with open(file, "r+b") as f:
        f.seek(100)
        f.write(b"\xa5" * (size - 100))
    return file


def spoil_sqlite_truncated(data_dir: Path) -> Path:
    """Cut the file in the middle of its first page."""
    file = data_dir / storage_sqlite.FILE_NAME
    size = file.stat().st_size
    assert size >= 4096, size
    os.truncate(file, 1000)
    return file


def clean_stop_files(kind: str, data_dir: Path) -> None:
    """After a clean stop nothing but the store file itself holds data."""
    if kind == "sqlite":
        wal = data_dir / (storage_sqlite.FILE_NAME + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0, "WAL not checkpointed at stop"


def start_bank(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "miniupi", "bank", "--name", "bank_a", "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=CHILD_ENV,
        )


@pytest.mark.parametrize(
    ("kind", "spoil"),
    [("json", spoil_json_journal), ("json", spoil_json_rotated_journal), ("sqlite", spoil_sqlite_garbled),
     ("sqlite", spoil_sqlite_truncated)],
    ids=["json-journal-garbage", "json-rotated-journal-garbage", "sqlite-garbled", "sqlite-truncated"],
)
def test_damaged_store_makes_the_bank_refuse_to_start(
    kind: str, spoil: Callable[[Path], Path], tmp_path: Path
) -> None:
    data, certs = tmp_path / "data", tmp_path / "certs"
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(tomli_w.dumps({"accounts": {
        f"user{i}": {"balance": f"{100 * i}.00", "password": f"pw-{i}-for-tests"} for i in range(1, 4)
    }}))
    config = tmp_path / "cluster.toml"
    config.write_text(tomli_w.dumps({
        "cluster": {"data_dir": str(data), "certs_dir": str(certs)},
        "gateway": {"port": free_port()},
        "banks": {"bank_a": {"port": free_port(), "storage": kind, "accounts": str(accounts)}},
    }))
    init_certs(load_config(config))

    # A healthy first life: open the setup accounts, serve, stop cleanly.
    log1 = tmp_path / "first.log"
    proc = start_bank(config, log1)
    try:
        deadline = time.monotonic() + 30
        while "serving" not in log1.read_text(errors="replace"):
            if proc.poll() is not None:
                pytest.fail(f"bank exited {proc.returncode} on its first start:\n{log1.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"bank not serving after 30s:\n{log1.read_text()[-3000:]}")
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log1.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    node_dir = data / "bank_a"
    clean_stop_files(kind, node_dir)

    spoiled = spoil(node_dir)

    log2 = tmp_path / "second.log"
    proc = start_bank(config, log2)
    try:
        rc = proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        pytest.fail(f"bank with a damaged {spoiled.name} neither refused nor stopped:\n{log2.read_text()[-3000:]}")
    output = log2.read_text(errors="replace")
    assert rc != 0, f"bank started on a damaged {spoiled.name}:\n{output[-3000:]}"
    assert "Traceback" not in output, f"a traceback instead of a clear refusal:\n{output[-5000:]}"
    assert "serving" not in output, output[-3000:]
    refusals = [line for line in output.splitlines() if "refusing to start" in line]
    assert refusals, f"no 'refusing to start' line:\n{output[-3000:]}"
    assert spoiled.name in refusals[0], f"the refusal does not name {spoiled.name}: {refusals[0]}"
