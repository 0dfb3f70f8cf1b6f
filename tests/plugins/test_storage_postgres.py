"""The postgres storage kind against real PostgreSQL servers: races decided by the database, its
settings, its schema, a server restarted under writes, and reads awaited on the event loop. (The Store contract itself runs on
postgres in test_storage.py.)"""
from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg_pool import PoolTimeout

from miniupi.config import parse_config
from miniupi.contract.registry import PluginChoiceError, check_plugins
from miniupi.contract.store import Conflict, Expect, Put, StoreDamaged, read_table
from miniupi.errors import StoreUnavailable
from miniupi.ops.postgres_server import LocalPostgres
from miniupi.ops.testing import local_postgres
from miniupi.plugins import storage_postgres
from miniupi.plugins.storage_postgres import PostgresStore, PostgresUnreachable, conninfo, open_postgres


@pytest.fixture
def dsn(miniupi_postgres: LocalPostgres) -> str:
    return make_conninfo(**miniupi_postgres.connection())


@pytest.fixture
def schema() -> str:
    return f"t_{uuid.uuid4().hex[:16]}"


@pytest.fixture
def stores(dsn: str, schema: str) -> Iterator[list[PostgresStore]]:
    """Open stores on one schema; each is a process's worth of connections of its own."""
    opened: list[PostgresStore] = []
    yield opened
    for store in opened:
        store.close()


def test_of_fifty_writers_inserting_one_key_on_their_own_connections_exactly_one_wins(
        dsn: str, schema: str, stores: list[PostgresStore]) -> None:
    stores += [PostgresStore(dsn, schema, pool_size=1) for _ in range(50)]
    start = threading.Barrier(len(stores))
    won: list[int] = []
    lost: list[int] = []

    def insert(n: int) -> None:
        start.wait()
        try:
            stores[n].write([Put("txns", "t1", {"by": n}), Put("log", f"w{n}", n)], expect=[Expect("txns", "t1", None)])
            won.append(n)
        except Conflict:
            lost.append(n)

    threads = [threading.Thread(target=insert, args=(n,)) for n in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(won) == 1 and len(lost) == len(stores) - 1
    assert stores[0].load() == {"txns": {"t1": {"by": won[0]}}, "log": {f"w{won[0]}": won[0]}}


def test_two_writers_changing_one_row_on_a_condition_never_both_succeed(
        dsn: str, schema: str, stores: list[PostgresStore]) -> None:
    """The check runs under a row lock: a compare-and-set from two processes at once is serialised."""
    stores += [PostgresStore(dsn, schema, pool_size=1) for _ in range(2)]
    stores[0].write([Put("lease", "gw", {"owner": "a", "epoch": 0})])
    successes = [0, 0]

    def bump(n: int) -> None:
        for _ in range(40):
            row = stores[n].get("lease", "gw")
            try:
                stores[n].write([Put("lease", "gw", {**row, "epoch": row["epoch"] + 1})],
                                expect=[Expect("lease", "gw", "epoch", row["epoch"])])
                successes[n] += 1
            except Conflict:
                pass

    threads = [threading.Thread(target=bump, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert stores[0].get("lease", "gw")["epoch"] == sum(successes) > 0


def test_two_claimers_at_once_never_claim_a_row_twice(dsn: str, schema: str, stores: list[PostgresStore]) -> None:
    stores += [PostgresStore(dsn, schema, pool_size=1) for _ in range(2)]
    stores[0].write([Put("work", f"k{n:04d}", {"owner": "dead"}) for n in range(600)])
    claimed: list[list[str]] = [[], []]

    def claim(n: int) -> None:
        while batch := stores[n].claim("work", "owner", ["dead"], f"c{n}", 7):
            claimed[n] += [key for key, value in batch if value["owner"] == f"c{n}"]

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not set(claimed[0]) & set(claimed[1])
    assert sorted(claimed[0] + claimed[1]) == [f"k{n:04d}" for n in range(600)]
    rows = stores[0].load()["work"]
    assert all(rows[key] == {"owner": f"c{n}"} for n in (0, 1) for key in claimed[n])


def test_a_claim_passes_over_rows_another_transaction_holds(dsn: str, schema: str, stores: list[PostgresStore]) -> None:
    stores.append(PostgresStore(dsn, schema))
    stores[0].write([Put("work", k, {"owner": "dead"}) for k in ("a", "b", "c")])
    with psycopg.connect(dsn) as other, other.transaction():
        other.execute(f"SELECT 1 FROM {schema}.kv WHERE key = 'a' FOR UPDATE")
        started = time.monotonic()
        assert [key for key, _ in stores[0].claim("work", "owner", ["dead"], "me", 10)] == ["b", "c"]
        assert time.monotonic() - started < 5
    assert [key for key, _ in stores[0].claim("work", "owner", ["dead"], "me", 10)] == ["a"]


def test_nodes_sharing_a_database_keep_to_their_schemas_which_carry_a_version(
        dsn: str, stores: list[PostgresStore]) -> None:
    a, b = f"a_{uuid.uuid4().hex[:8]}", f"b_{uuid.uuid4().hex[:8]}"
    stores += [PostgresStore(dsn, a), PostgresStore(dsn, b)]
    stores[0].write([Put("t", "k", "a")])
    stores[1].write([Put("t", "k", "b")])
    assert stores[0].load() == {"t": {"k": "a"}} and stores[1].load() == {"t": {"k": "b"}}
    with psycopg.connect(dsn) as conn:
        assert conn.execute(f"SELECT version FROM {a}.miniupi_schema").fetchall() == [(1,)]


def test_a_schema_from_a_newer_miniupi_or_not_made_by_this_store_is_refused(dsn: str, schema: str) -> None:
    PostgresStore(dsn, schema).close()
    with psycopg.connect(dsn) as conn:
        conn.execute(f"UPDATE {schema}.miniupi_schema SET version = 99")
        conn.execute(f"CREATE SCHEMA {schema}_x")
        conn.execute(f"CREATE TABLE {schema}_x.accounts (id int)")
    with pytest.raises(StoreDamaged, match="version 99, newer"):
        PostgresStore(dsn, schema)
    with pytest.raises(StoreDamaged, match="tables this store did not make"):
        PostgresStore(dsn, f"{schema}_x")


def test_writes_during_a_postgresql_restart_fail_cleanly_then_resume_losing_and_doubling_nothing() -> None:
    with local_postgres() as server:
        store = PostgresStore(make_conninfo(**server.connection()), "restarts")
        acknowledged: list[int] = []
        failed: list[int] = []
        try:
            deadline = time.monotonic() + 90
            n = 0
            while len([a for a in acknowledged if a > 60]) < 40:
                assert time.monotonic() < deadline, f"writes did not resume: {len(failed)} failed"
                n += 1
                try:
                    store.write([Put("n", f"{n:06d}", n), Put("last", "n", n)])
                    acknowledged.append(n)
                except (psycopg.OperationalError, PoolTimeout):  # what the group commit turns into StoreUnavailable
                    failed.append(n)
                    time.sleep(0.05)
                if n == 30:
                    server.stop()  # a fast shutdown: every connection is cut
                elif n == 60:
                    server.start()
            assert failed and all(30 < f for f in failed)
            rows = store.load(["n"])["n"]
            # Every acknowledged write is there, once, under its own key; of those that failed, only the
            # one in flight when the server stopped may have landed (its COMMIT sent, the answer lost).
            assert set(acknowledged) <= {int(k) for k in rows} <= set(acknowledged) | set(failed[:1])
            assert all(rows[k] == int(k) for k in rows) and store.get("last", "n") == acknowledged[-1]
        finally:
            store.close()


def cluster_with(tmp_path: Path, settings: dict[str, Any], postgres: dict[str, Any] | None = None) -> Any:
    raw: dict[str, Any] = {"cluster": {"data_dir": str(tmp_path / "data")}, "gateway": {"port": 1},
                           "banks": {"b": {"port": 2, "storage": "postgres", "postgres": settings}}}
    if postgres is not None:
        raw["postgres"] = postgres
    return parse_config(raw, tmp_path / "c.toml")


@pytest.mark.parametrize("settings, message", [
    ({"dsn": "postgresql://u:secret@h/db"}, "without a password"),
    ({"dsn": "host=h password=secret"}, "without a password"),
    ({"password": "secret"}, "a password never goes in the cluster file"),
    ({"dsn_env": "NOT A NAME"}, "name of an environment variable"),
    ({"port": 0}, "a port number"),
    ({"pool_size": 0}, "at least 1"),
    ({"schema": "Bank-A"}, "a schema name"),
    ({"managed": True}, "no [postgres] table with managed = true"),
    ({"dsn_env": "X", "dsn": "host=h"}, "give one"),
    ({"hots": "h"}, "no setting 'hots'"),
], ids=["url-password", "keyword-password", "password", "env-name", "port", "pool", "schema", "managed-alone",
        "two-dsns", "typo"])
def test_bad_settings_are_one_line_at_config_load(tmp_path: Path, settings: dict[str, Any], message: str) -> None:
    with pytest.raises(PluginChoiceError) as e:
        check_plugins(cluster_with(tmp_path, settings))
    assert message in str(e.value) and "\n" not in str(e.value) and "secret" not in str(e.value)


def test_managed_takes_no_connection_settings_of_its_own(tmp_path: Path) -> None:
    with pytest.raises(PluginChoiceError, match="takes no connection settings"):
        check_plugins(cluster_with(tmp_path, {"managed": True, "host": "h"}, {"managed": True, "port": 5440}))
    check_plugins(cluster_with(tmp_path, {"managed": True}, {"managed": True, "port": 5440}))


def test_the_connection_comes_from_dsn_env_or_a_password_file(tmp_path: Path, miniupi_postgres: LocalPostgres) -> None:
    keywords = miniupi_postgres.connection()
    node = cluster_with(tmp_path, {}).node("b")
    env_settings = dict(check_plugins(cluster_with(tmp_path, {"dsn_env": "PG_FOR_B", "schema": "via_env"}))
                        .settings["b", "postgres"])
    with pytest.raises(PostgresUnreachable, match="PG_FOR_B is not set"):
        conninfo(node, env_settings, environ={})
    store = PostgresStore(conninfo(node, env_settings, environ={"PG_FOR_B": make_conninfo(**keywords)}), "via_env")
    store.write([Put("t", "k", 1)])
    store.close()
    password_file = tmp_path / "pw"
    password_file.write_text(keywords["password"] + "\n")
    file_settings = dict(check_plugins(cluster_with(tmp_path, {
        "host": "127.0.0.1", "port": keywords["port"], "user": "miniupi", "dbname": "miniupi",
        "password_file": str(password_file), "schema": "via_env"})).settings["b", "postgres"])
    store = open_postgres(node, tmp_path, file_settings)
    try:
        assert store.get("t", "k") == 1
    finally:
        store.close()
    password_file.write_text("wrong\n")
    with pytest.raises(PostgresUnreachable, match="password authentication failed") as e:
        open_postgres(node, tmp_path, file_settings)
    assert "wrong" not in str(e.value) and keywords["password"] not in str(e.value)


# -- many conditional batches, one commit (write_each) ------------------------------------------


def test_write_each_applies_every_batch_whose_expectations_hold_and_leaves_out_the_others(
        dsn: str, schema: str, stores: list[PostgresStore]) -> None:
    stores.append(PostgresStore(dsn, schema))
    store = stores[0]
    store.write([Put("txns", "taken", {"by": "other"}), Put("tally", "k", {"v": 3, "sum": 30})])
    answers = store.write_each([
        ([Put("txns", "new", {"by": "me"})], [Expect("txns", "new", None)]),
        ([Put("txns", "taken", {"by": "me"})], [Expect("txns", "taken", None)]),  # lost the race
        ([Put("tally", "k", {"v": 4, "sum": 35})], [Expect("tally", "k", "v", 3)]),
        ([Put("tally", "k", {"v": 4, "sum": 99})], [Expect("tally", "k", "v", 3)]),  # the row moved on
        ([Put("log", "plain", 1)], []),
    ])
    assert [type(a).__name__ for a in answers] == ["NoneType", "Conflict", "NoneType", "Conflict", "NoneType"]
    assert store.load() == {"txns": {"taken": {"by": "other"}, "new": {"by": "me"}},
                            "tally": {"k": {"v": 4, "sum": 35}}, "log": {"plain": 1}}


def test_write_each_with_a_failing_batch_applies_none(dsn: str, schema: str, stores: list[PostgresStore]) -> None:
    stores.append(PostgresStore(dsn, schema))
    with pytest.raises(ValueError):
        stores[0].write_each([([Put("t", "a", 1)], []), ([Put("t", "b", float("nan"))], [])])
    assert stores[0].load() == {}


def test_groups_from_two_processes_changing_shared_rows_in_opposite_orders_lose_no_update(
        dsn: str, schema: str, stores: list[PostgresStore]) -> None:
    """Two gateways' group commits, each bumping counters a and b by compare-and-set in its own order:
    every bump either lands once or answers Conflict, and no group fails (no deadlock reaches them)."""
    stores += [PostgresStore(dsn, schema, pool_size=1) for _ in range(2)]
    stores[0].write([Put("c", "a", {"v": 0}), Put("c", "b", {"v": 0})])
    landed = [0, 0]
    errors: list[BaseException] = []

    def bump(n: int) -> None:
        order = ["a", "b"] if n == 0 else ["b", "a"]
        try:
            for _ in range(60):
                rows = {key: stores[n].get("c", key) for key in order}
                answers = stores[n].write_each([
                    ([Put("c", key, {"v": rows[key]["v"] + 1})], [Expect("c", key, "v", rows[key]["v"])])
                    for key in order])
                landed[n] += sum(answer is None for answer in answers)
        except BaseException as e:  # noqa: B036 - the assertion below reports it
            errors.append(e)

    threads = [threading.Thread(target=bump, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    final = stores[0].load()["c"]
    assert final["a"]["v"] + final["b"]["v"] == sum(landed) > 0


# --- reads on the event loop (contract/store.py, AsyncReads) ---


def test_async_reads_see_what_the_sync_reads_see_and_scan_page_by_page(
        dsn: str, schema: str, stores: list[PostgresStore], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage_postgres, "SCAN_PAGE", 3)  # several pages from a few rows
    stores.append(PostgresStore(dsn, schema))
    store = stores[0]
    rows = {f"k{n}": {"n": n, "big": 10**30 + n} for n in range(8)}
    store.write([Put("t", key, value) for key, value in rows.items()] + [Put("other", "k1", 1)])

    async def scenario() -> None:
        assert await store.aget("t", "k1") == store.get("t", "k1") == rows["k1"]
        assert await store.aget("t", "absent") is None
        assert await store.aget_many("t", ["k2", "absent", "k7"]) == {"k2": rows["k2"], "k7": rows["k7"]}
        assert await store.aget_many("t", []) == {}
        assert [row async for row in store.ascan("t")] == list(store.scan("t")) == sorted(rows.items())
        assert await read_table(store, "other") == [("k1", 1)]
        await store.aclose()
        assert await store.aget("t", "k3") == rows["k3"]  # a read after aclose opens the pool again
        await store.aclose()

    asyncio.run(scenario())


def test_an_async_read_while_postgresql_is_down_is_store_unavailable_as_a_sync_one_then_reads_again() -> None:
    with local_postgres() as server:
        store = PostgresStore(make_conninfo(**server.connection()), "down")
        store.write([Put("t", "k", 1)])

        async def reads_again() -> bool:
            for _ in range(100):  # the pool reconnects within a second or so of the server's return
                try:
                    return await store.aget("t", "k") == 1
                except StoreUnavailable:
                    await asyncio.sleep(0.1)
            return False

        async def scenario() -> None:
            try:
                assert await store.aget("t", "k") == 1  # the async pool holds a connection now
                server.stop()  # a fast shutdown: every connection is cut
                with pytest.raises(StoreUnavailable, match="unavailable"):
                    await store.aget("t", "k")
                with pytest.raises(StoreUnavailable, match="unavailable"):
                    await store.aget_many("t", ["k"])
                with pytest.raises(StoreUnavailable, match="unavailable"):
                    store.get("t", "k")
                server.start()
                assert await reads_again(), "async reads did not resume after PostgreSQL came back"
            finally:
                await store.aclose()

        try:
            asyncio.run(scenario())
        finally:
            store.close()


def test_a_read_waiting_on_postgresql_leaves_the_event_loop_serving_other_coroutines(
        dsn: str, schema: str, stores: list[PostgresStore]) -> None:
    """A table lock (as a migration or VACUUM FULL takes) makes PostgreSQL hold the read's SELECT; the
    loop meanwhile runs this test's own queries. A read blocking the loop would return only once the
    lock is let go (after 15 s at most), and the test would find it done before the lock was."""
    stores.append(PostgresStore(dsn, schema))
    store = stores[0]
    store.write([Put("t", "k", "value")])
    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with psycopg.connect(dsn) as conn, conn.transaction():
            conn.execute(f"LOCK TABLE {schema}.kv IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(15)

    holder = threading.Thread(target=hold_lock)
    holder.start()

    async def scenario() -> None:
        assert await asyncio.to_thread(locked.wait, 15)
        reading = asyncio.ensure_future(store.aget("t", "k"))
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as watcher:
            for _ in range(500):  # until PostgreSQL shows the read waiting for the lock
                cursor = await watcher.execute(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = %s::regclass", (f"{schema}.kv",))
                if (await cursor.fetchone())[0]:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the read never waited on the lock")
        assert not reading.done()  # this coroutine ran while the read waited
        release.set()
        assert await asyncio.wait_for(reading, 15) == "value"
        await store.aclose()

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        holder.join(20)
