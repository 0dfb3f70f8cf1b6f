"""The bank's memory holds only what is live: the ledger over both real stores, without gRPC.

Settled transactions leave memory once their write is durable and are read
back by key; history is paged from its index; the audit's reading stays one
moment however long it streams; and a store the previous version wrote is
upgraded once, keeping every answer it gave.
"""
from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from miniupi.contract.store import Put, Store
from miniupi.nodes import bank_store
from miniupi.nodes.bank_store import FORMAT, LIVE_TABLES, history_key, load_live
from miniupi.nodes.group_commit import GroupCommit
from miniupi.nodes.ledger import Ledger
from miniupi.nodes.participants import Leg
from miniupi.plugins.storage_json import JsonStore
from miniupi.plugins.storage_sqlite import FILE_NAME, SqliteStore

Opener = Callable[[Path], Store]
STORES = {"sqlite": lambda path: SqliteStore(path / FILE_NAME), "json": JsonStore}


@pytest.fixture(params=sorted(STORES))
def open_store(request: pytest.FixtureRequest) -> Opener:
    return STORES[request.param]


def _ledger(store: Store, inline: bool = True) -> tuple[Ledger, GroupCommit]:
    commit = GroupCommit(store) if inline else GroupCommit(store, inline_after_quiet_s=None)
    return Ledger("bank_a", "INR", commit, load_live(store, store.load(LIVE_TABLES))), commit


def _debit(amount: int, account: str = "alice") -> tuple[Leg, ...]:
    return (Leg(account, -amount, "bob@bank_b"),)


def test_settled_transactions_leave_memory_and_old_ids_get_their_stored_answers(open_store: Opener,
                                                                                 tmp_path: Path) -> None:
    paid, aborted, unknown, deposit = (str(uuid.uuid4()) for _ in range(4))

    async def first() -> None:
        ledger, commit = _ledger(open_store(tmp_path))
        await ledger.open_account("alice", "pw", 1000)
        assert (await ledger.prepare(paid, "INR", _debit(300))).yes
        assert (await ledger.prepare(aborted, "INR", _debit(100))).yes
        assert set(ledger.txns) == {paid, aborted}
        await ledger.commit(paid)
        await ledger.abort(aborted)
        assert await ledger.abort(unknown) is False
        assert await ledger.deposit(deposit, "alice", 50) == 750
        assert ledger.txns == {} and ledger.prepared == set()  # nothing live is left in memory
        await check(ledger)
        await commit.close()

    async def check(ledger: Ledger) -> None:
        for txn_id, state in ((paid, "committed"), (aborted, "aborted"), (unknown, "aborted"),
                              (deposit, "deposited")):
            vote = await ledger.prepare(txn_id, "INR", _debit(1))
            assert (vote.yes, vote.refusal, vote.detail) == (False, "ALREADY_DECIDED",
                                                              f"transaction {txn_id} is already {state}")
        assert await ledger.commit(paid) is True and await ledger.abort(aborted) is True
        assert await ledger.abort(unknown) is True  # remembered now
        assert await ledger.deposit(deposit, "alice", 50) == 750
        assert ledger.account("alice").balance == 750 and ledger.txns == {}

    async def after_reopen() -> None:
        ledger, commit = _ledger(open_store(tmp_path))
        await check(ledger)
        entries, older = await ledger.history("alice", 10)
        assert [(e.txn_id, e.delta) for e in entries] == [(deposit, 50), (paid, -300)] and older == 0
        await commit.close()

    asyncio.run(first())
    asyncio.run(after_reopen())


def test_history_pages_walk_the_index_down_and_pass_over_a_gap(open_store: Opener, tmp_path: Path) -> None:
    async def scenario() -> None:
        store = open_store(tmp_path)
        ledger, commit = _ledger(store)
        await ledger.open_account("alice", "pw", 10_000)
        ids = []
        for n in range(25):
            ids.append(str(uuid.uuid4()))
            await ledger.prepare(ids[-1], "INR", _debit(n + 1))
            await ledger.commit(ids[-1])
        assert ledger.account("alice").entries == 25
        got, before = [], 0
        while True:
            entries, before = await ledger.history("alice", 7, before)
            got.append([e.n for e in entries])
            if not before:
                break
        assert got == [[25, 24, 23, 22, 21, 20, 19], [18, 17, 16, 15, 14, 13, 12], [11, 10, 9, 8, 7, 6, 5],
                       [4, 3, 2, 1]]
        store.write([Put("history", history_key("alice", 10), None)])  # a row never written: a gap
        entries, before = await ledger.history("alice", 3, 12)
        assert ([e.n for e in entries], before) == ([11, 9, 8], 8)
        assert [e.txn_id for e in entries] == [ids[10], ids[8], ids[7]]
        entries, before = await ledger.history("alice", 5, 2)
        assert ([(e.n, e.txn_id, e.counterparty, e.delta) for e in entries], before) == (
            [(1, ids[0], "bob@bank_b", -1)], 0)
        await commit.close()

    asyncio.run(scenario())


class FailingStore:
    """The real store, but a write carrying `fail` waits for `release`, then fails, as a disk filling up."""

    def __init__(self, inner: Store) -> None:
        self.inner, self.fail = inner, ""
        self.holding, self.release = threading.Event(), threading.Event()

    def load(self, tables: Any = None) -> dict[str, dict[str, Any]]:
        return self.inner.load(tables)

    def get(self, table: str, key: str) -> Any:
        return self.inner.get(table, key)

    def scan(self, table: str) -> Any:
        return self.inner.scan(table)

    def write(self, batch: Sequence[Put]) -> None:
        if self.fail and any(put.key == self.fail for put in batch):
            self.holding.set()
            self.release.wait(10)
            raise OSError(28, "No space left on device")
        self.inner.write(batch)

    def close(self) -> None:
        self.inner.close()


def test_a_commit_queued_behind_a_failed_write_fails_with_it_and_no_row_is_numbered_twice(open_store: Opener,
                                                                                          tmp_path: Path) -> None:
    """Two commits number rows 1 and 2; the first's write fails after the second was numbered. The second's
    batch holds the account's row with the first's debit in it, so it must not go down either: both fail,
    memory is as the disk, and done again they number rows 1 and 2 once each."""
    first, second = str(uuid.uuid4()), str(uuid.uuid4())

    async def scenario() -> None:
        store = FailingStore(open_store(tmp_path))
        ledger, commit = _ledger(store, inline=False)
        await ledger.open_account("alice", "pw", 1000)
        assert (await ledger.prepare_many([(first, "INR", _debit(10)), (second, "INR", _debit(20))]))[0].yes
        store.fail = first
        failing = asyncio.create_task(ledger.commit(first))
        await asyncio.to_thread(store.holding.wait, 5)
        later = asyncio.create_task(ledger.commit(second))
        await asyncio.sleep(0.05)
        store.release.set()
        for task in (failing, later):
            with pytest.raises(Exception, match="could not make the batch durable"):
                await task
        alice = ledger.account("alice")
        assert (alice.balance, alice.held, alice.entries) == (1000, 30, 0)
        assert store.inner.get("accounts", "alice")["balance"] == 1000
        store.fail = ""
        assert await ledger.commit(first) is True and await ledger.commit(second) is True
        entries, _ = await ledger.history("alice", 10)
        assert [(e.n, e.txn_id) for e in entries] == [(2, second), (1, first)]
        assert (ledger.account("alice").balance, ledger.account("alice").held) == (970, 0)
        await commit.close()
        reopened, commit = _ledger(open_store(tmp_path))
        assert (reopened.account("alice").entries, reopened.account("alice").balance) == (2, 970)
        await commit.close()

    asyncio.run(scenario())


def test_an_audit_view_stays_the_moment_it_was_taken(open_store: Opener, tmp_path: Path) -> None:
    """The audit streams over many awaits while payments go on; what it reads must still add up."""
    settled, live, deposit, later, later_deposit = (str(uuid.uuid4()) for _ in range(5))

    async def scenario() -> None:
        ledger, commit = _ledger(open_store(tmp_path))
        await ledger.open_account("alice", "pw", 1000)
        await ledger.open_account("bob", "pw", 0)
        await ledger.prepare(settled, "INR", _debit(100))
        await ledger.commit(settled)
        await ledger.deposit(deposit, "bob", 40)
        await ledger.prepare(live, "INR", (Leg("alice", -200, "bob@bank_a"), Leg("bob", 200, "alice@bank_a")))
        with ledger.audit_view() as view:
            # Meanwhile: the live one commits, another payment and a deposit come and settle, an account opens.
            await ledger.commit(live)
            await ledger.prepare(later, "INR", _debit(50))
            await ledger.commit(later)
            await ledger.deposit(later_deposit, "alice", 5)
            await ledger.open_account("carol", "pw", 7)
            accounts = view.accounts(view.names)
            txns = {txn_id: (state, legs) for txn_id, state, legs in view.txns()}
            assert (view.deposits, view.treasury) == (1040, 40)
        assert ledger._views == set()
        assert accounts == [("alice", 900, 200, 1000), ("bob", 40, 0, 0)]
        assert txns == {settled: ("COMMITTED", _debit(100)), deposit: ("DEPOSITED", (Leg("bob", 40, "treasury"),)),
                        live: ("PREPARED", (Leg("alice", -200, "bob@bank_a"), Leg("bob", 200, "alice@bank_a")))}
        with ledger.audit_view() as view:  # and now, all of it
            assert [a[:2] for a in view.accounts(view.names)] == [("alice", 655), ("bob", 240), ("carol", 7)]
            assert {t[0]: t[1] for t in view.txns()} == {settled: "COMMITTED", deposit: "DEPOSITED",
                                                          live: "COMMITTED", later: "COMMITTED",
                                                          later_deposit: "DEPOSITED"}
        await commit.close()

    asyncio.run(scenario())


def _old_format(store: Store, ids: dict[str, str]) -> None:
    """Records exactly as the previous version wrote them: no format, no index tables, no entry counts."""
    def txn(state: str, legs: list[list[Any]], decided_at: float | None, **more: Any) -> dict[str, Any]:
        return {"state": state, "legs": legs, "prepared_at": 900.0, "decided_at": decided_at, **more}

    account = {"password_hash": "x", "opened_at": 800.0, "failed_logins": 0, "locked_until": 0.0}
    store.write([
        Put("accounts", "alice", {**account, "balance": 114_00, "opening": 100_00}),
        Put("accounts", "bob", {**account, "balance": 5_00, "opening": 0}),
        Put("meta", "deposits", 125_00), Put("meta", "treasury", 25_00),
        Put("txns", ids["received"], txn("COMMITTED", [["alice", 4_00, "carol@bank_b"]], 1001.0)),
        Put("txns", ids["deposit"], txn("DEPOSITED", [["alice", 25_00, "treasury"]], 1002.0, balance=129_00)),
        Put("txns", ids["paid"], txn("COMMITTED", [["alice", -10_00, "carol@bank_b"]], 1003.0)),
        Put("txns", ids["inside"], txn("COMMITTED", [["alice", -5_00, "bob@bank_a"], ["bob", 5_00, "alice@bank_a"]],
                                       1004.0)),
        Put("txns", ids["aborted"], txn("ABORTED", [["alice", -1_00, "carol@bank_b"]], 1005.0)),
        Put("txns", ids["doubt"], txn("PREPARED", [["alice", -3_00, "carol@bank_b"]], None)),
    ])


def test_a_store_of_the_previous_format_is_upgraded_once_keeping_history_and_answers(open_store: Opener,
                                                                                      tmp_path: Path) -> None:
    ids = {name: str(uuid.uuid4()) for name in ("received", "deposit", "paid", "inside", "aborted", "doubt")}
    store = open_store(tmp_path)
    _old_format(store, ids)
    store.close()

    async def scenario() -> None:
        store = open_store(tmp_path)
        tables = store.load(LIVE_TABLES)
        assert "format" not in tables["meta"]
        ledger = Ledger("bank_a", "INR", GroupCommit(store), load_live(store, tables))
        assert tables["meta"]["format"] == FORMAT and store.get("meta", "format") == FORMAT
        assert set(ledger.txns) == ledger.prepared == {ids["doubt"]}
        alice = ledger.account("alice")
        assert (alice.balance, alice.held, alice.entries, ledger.account("bob").entries) == (114_00, 3_00, 4, 1)
        entries, _ = await ledger.history("alice", 10)
        assert [(e.n, e.txn_id, e.delta, e.counterparty, e.applied_at) for e in entries] == [
            (4, ids["inside"], -5_00, "bob@bank_a", 1004.0), (3, ids["paid"], -10_00, "carol@bank_b", 1003.0),
            (2, ids["deposit"], 25_00, "treasury", 1002.0), (1, ids["received"], 4_00, "carol@bank_b", 1001.0)]
        assert [e.txn_id for e in (await ledger.history("bob", 10))[0]] == [ids["inside"]]
        for old in ("paid", "aborted", "deposit"):
            assert (await ledger.prepare(ids[old], "INR", _debit(1))).refusal == "ALREADY_DECIDED"
        assert await ledger.deposit(ids["deposit"], "alice", 25_00) == 129_00
        assert await ledger.commit(ids["inside"]) is True
        await ledger.commit(ids["doubt"])
        fresh = str(uuid.uuid4())
        await ledger.prepare(fresh, "INR", _debit(1_00))
        await ledger.commit(fresh)
        assert [e.n for e in (await ledger.history("alice", 2))[0]] == [6, 5]
        await ledger._commit.close()

    asyncio.run(scenario())
    again = open_store(tmp_path)
    try:
        tables = again.load(LIVE_TABLES)
        assert bank_store.upgrade(again, tables) is False  # once only
        assert tables["accounts"]["alice"]["entries"] == 6 and not tables.get("in_doubt")
    finally:
        again.close()


def test_an_upgrade_cut_short_is_done_again_from_the_start(open_store: Opener, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The format is written last: a crash before it leaves a store that upgrades again, to the same rows."""
    ids = {name: str(uuid.uuid4()) for name in ("received", "deposit", "paid", "inside", "aborted", "doubt")}
    store = open_store(tmp_path)
    _old_format(store, ids)
    write = store.write

    def crash_at_the_format(batch: Sequence[Put]) -> None:
        if any(put.table == "meta" and put.key == "format" for put in batch):
            raise OSError("killed")
        write(batch)

    store.write = crash_at_the_format  # type: ignore[method-assign]
    with pytest.raises(OSError):
        load_live(store, store.load(LIVE_TABLES))
    store.write = write  # type: ignore[method-assign]
    tables = load_live(store, store.load(LIVE_TABLES))
    assert tables["meta"]["format"] == FORMAT and set(tables["txns"]) == {ids["doubt"]}
    rows = dict(store.scan("history"))
    assert len(rows) == 5 and rows[history_key("alice", 2)][0] == ids["deposit"]
    store.close()


def test_a_store_of_a_later_format_is_refused(open_store: Opener, tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.write([Put("meta", "format", FORMAT + 1)])
    with pytest.raises(bank_store.StoreDamaged, match=f"format {FORMAT + 1}"):
        load_live(store, store.load(LIVE_TABLES))
    store.close()


def test_an_in_doubt_row_without_its_record_is_damage(open_store: Opener, tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.write([Put("meta", "format", FORMAT), Put("in_doubt", "t1", 1)])
    with pytest.raises(bank_store.StoreDamaged, match="in_doubt names t1"):
        load_live(store, store.load(LIVE_TABLES))
    store.close()


def test_restart_reads_no_settled_record(open_store: Opener, tmp_path: Path) -> None:
    """However many settled transactions the store holds, opening the ledger reads none of them."""
    async def fill() -> str:
        ledger, commit = _ledger(open_store(tmp_path))
        await ledger.open_account("alice", "pw", 100_000)
        for _ in range(200):
            txn_id = str(uuid.uuid4())
            await ledger.prepare(txn_id, "INR", _debit(1))
            await ledger.commit(txn_id)
        doubt = str(uuid.uuid4())
        await ledger.prepare(doubt, "INR", _debit(1))
        await commit.close()
        return doubt

    doubt = asyncio.run(fill())
    store = open_store(tmp_path)
    read: list[tuple[str, ...]] = []
    get, scan = store.get, store.scan
    store.get = lambda table, key: (read.append(("get", table, key)), get(table, key))[1]  # type: ignore[method-assign]
    store.scan = lambda table: (read.append(("scan", table)), scan(table))[1]  # type: ignore[method-assign]
    started = time.monotonic()
    tables = load_live(store, store.load(LIVE_TABLES))
    assert time.monotonic() - started < 5
    assert read == [("get", "txns", doubt)] and set(tables) == {"accounts", "meta", "in_doubt", "txns"}
    store.close()


def test_a_new_store_is_written_nothing_until_its_first_accounts_which_bring_the_format(open_store: Opener,
                                                                                      tmp_path: Path) -> None:
    """A bank that refuses its setup file must leave its store empty (tests/security/test_security_ceiling.py)."""
    async def scenario() -> None:
        store = open_store(tmp_path)
        ledger, commit = _ledger(store)
        assert store.load() == {}
        assert await ledger.abort(str(uuid.uuid4())) is False  # a txn, and still no layout to speak of
        await ledger.open_account("alice", "pw", 10)
        assert store.get("meta", "format") == FORMAT
        await commit.close()

    asyncio.run(scenario())
    store = open_store(tmp_path)
    tables = store.load(LIVE_TABLES)
    assert bank_store.upgrade(store, tables) is False and tables["accounts"]["alice"]["entries"] == 0
    store.close()
