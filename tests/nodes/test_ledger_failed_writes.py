"""A bank's memory after failed store writes is what a restart would load: the ledger over a store that fails
on demand, its failing write interleaved with other writers' batches of the same account.

A failed write is one of two things to the ledger: nothing reached the disk
(a refused connection), or everything did and only the answer was lost (the
connection dropped after COMMIT, as when PostgreSQL restarts under load).
Either way no hold may be released twice, and no later batch may carry a
change the failed one made in memory to the disk.
"""
from __future__ import annotations

import asyncio
import queue
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from miniupi.contract.store import Expect, Put
from miniupi.errors import StoreUnavailable
from miniupi.nodes.bank_store import LIVE_TABLES, load_live
from miniupi.nodes.group_commit import GroupCommit
from miniupi.nodes.ledger import Ledger
from miniupi.nodes.participants import Leg
from miniupi.plugins.storage_json import JsonStore


class FailingStore:
    """A JsonStore whose next write fails on demand: before applying anything, or after applying all of it
    (its answer lost); `gate`, when set, keeps that write waiting until it is opened."""

    def __init__(self, path: Path) -> None:
        self.inner = JsonStore(path)
        self.after_applying: bool | None = None  # None: writes go through
        self.gate: threading.Event | None = None
        self.entered = threading.Event()  # the failing write has begun

    def fail_next(self, after_applying: bool = False, gate: threading.Event | None = None) -> None:
        self.after_applying, self.gate = after_applying, gate

    def write(self, batch: Sequence[Put], expect: Sequence[Expect] = ()) -> None:
        after_applying, self.after_applying = self.after_applying, None
        if after_applying is None:
            return self.inner.write(batch, expect)
        self.entered.set()
        if self.gate is not None:
            self.gate.wait()
        if after_applying:
            self.inner.write(batch, expect)
        raise OSError("server closed the connection unexpectedly")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _open(path: Path, inline: bool = True) -> tuple[Ledger, GroupCommit, FailingStore]:
    store = FailingStore(path)
    commit = GroupCommit(store) if inline else GroupCommit(store, inline_after_quiet_s=None)
    return Ledger("bank_a", "INR", commit, load_live(store.inner, store.inner.load(LIVE_TABLES))), commit, store


def _debit(amount: int) -> tuple[Leg, ...]:
    return (Leg("alice", -amount, "bob@bank_b"),)


def _state(ledger: Ledger) -> tuple[Any, ...]:
    """What a restart must find again: every account's numbers and the prepared transactions."""
    accounts = {name: (a.balance, a.held, a.incoming) for name, a in ledger.accounts.items()}
    prepared = {t: ledger.txns[t].legs for t in ledger.prepared}
    return accounts, prepared, ledger.meta.get("deposits", 0)


async def _as_a_restart_finds_it(ledger: Ledger, commit: GroupCommit, path: Path) -> None:
    await commit.close()
    reopened, again, _ = _open(path)
    assert _state(ledger) == _state(reopened)
    await again.close()


async def _until(event: threading.Event) -> None:
    while not event.is_set():
        await asyncio.sleep(0.001)


async def _prepare_landing_unanswered(ledger: Ledger, store: FailingStore, amount: int) -> str:
    """Open alice and prepare a debit of hers whose write reaches the disk but is reported failed: its id."""
    await ledger.open_account("alice", "pw", 1000)
    txn = str(uuid.uuid4())
    store.fail_next(after_applying=True)
    [vote] = await ledger.prepare_many([(txn, "INR", _debit(amount))])
    assert isinstance(vote, StoreUnavailable)
    return txn


def test_an_abort_after_a_prepare_whose_write_landed_but_was_reported_failed_releases_one_hold(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger, commit, store = _open(tmp_path)
        txn = await _prepare_landing_unanswered(ledger, store, 1)
        assert await ledger.abort(txn)  # the gateway aborts what got no vote
        assert ledger.account("alice").held == 0
        await _as_a_restart_finds_it(ledger, commit, tmp_path)

    asyncio.run(scenario())


def test_a_repeated_prepare_whose_first_write_landed_but_was_reported_failed_is_held_once_and_commits(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger, commit, store = _open(tmp_path)
        txn = await _prepare_landing_unanswered(ledger, store, 5)
        assert (await ledger.prepare(txn, "INR", _debit(5))).yes
        assert (ledger.account("alice").held, ledger.prepared) == (5, {txn})
        assert await ledger.commit(txn)
        assert (ledger.account("alice").balance, ledger.account("alice").held) == (995, 0)
        await _as_a_restart_finds_it(ledger, commit, tmp_path)

    asyncio.run(scenario())


def test_an_abort_made_while_the_prepare_is_being_written_survives_that_write_failing(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger, commit, store = _open(tmp_path, inline=False)
        await ledger.open_account("alice", "pw", 1000)
        txn, gate = str(uuid.uuid4()), threading.Event()
        store.fail_next(gate=gate)
        prepare = asyncio.ensure_future(ledger.prepare_many([(txn, "INR", _debit(1))]))
        await _until(store.entered)
        abort = asyncio.ensure_future(ledger.decide_many([(txn, False)]))
        await asyncio.sleep(0)  # the abort is applied in memory and queued behind the failing write
        gate.set()
        [vote], [known] = await prepare, await abort
        assert isinstance(vote, StoreUnavailable)
        assert known is True or isinstance(known, StoreUnavailable)
        assert ledger.account("alice").held == 0 and not ledger.prepared
        await _as_a_restart_finds_it(ledger, commit, tmp_path)

    asyncio.run(scenario())


class SteppedStore(FailingStore):
    """Each write waits for the test to say how it ends: True goes down, False fails before applying."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.stepped = False
        self.outcomes: queue.Queue[bool] = queue.Queue()
        self.waiting = threading.Event()  # a write waits for its outcome
        self.written = 0  # writes ended, either way

    def write(self, batch: Sequence[Put], expect: Sequence[Expect] = ()) -> None:
        if not self.stepped:
            return self.inner.write(batch, expect)
        self.waiting.set()
        ok = self.outcomes.get()
        self.waiting.clear()
        try:
            if not ok:
                raise OSError("server closed the connection unexpectedly")
            self.inner.write(batch, expect)
        finally:
            self.written += 1


async def _quiet(commit: GroupCommit, store: SteppedStore) -> None:
    """Until every task waits on a write the store holds, or nothing is being written."""
    calm = 0
    while calm < 2:
        for _ in range(5):
            await asyncio.sleep(0)
        idle = not commit._pending and (commit._flusher is None or commit._flusher.done())
        calm = calm + 1 if store.waiting.is_set() or idle else 0
        if not calm:
            await asyncio.sleep(0.001)


ACCOUNTS = ("alice", "bob")
STEPS = st.one_of(
    st.tuples(st.just("prepare"), st.sampled_from(ACCOUNTS), st.integers(-400, 400).filter(bool)),
    st.tuples(st.just("decide"), st.integers(0, 12), st.booleans()),
    st.tuples(st.just("deposit"), st.sampled_from(ACCOUNTS), st.integers(1, 300)),
    st.tuples(st.just("write"), st.booleans(), st.just(0)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEPS, max_size=25))
def test_memory_after_failing_writes_interleaved_with_other_batches_is_what_a_restart_loads(
        tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, Any, Any]]) -> None:
    path = tmp_path_factory.mktemp("ledger")

    async def scenario() -> None:
        store = SteppedStore(path)
        commit = GroupCommit(store, inline_after_quiet_s=None)
        ledger = Ledger("bank_a", "INR", commit, load_live(store.inner, store.inner.load(LIVE_TABLES)))
        await ledger.open_accounts(ACCOUNTS, "hash", 500)
        store.stepped = True
        ids: list[str] = []
        tasks: list[asyncio.Future[Any]] = []
        for step in steps:
            if step[0] == "prepare":
                _, name, delta = step
                ids.append(str(uuid.uuid4()))
                tasks.append(asyncio.ensure_future(ledger.prepare_many([(ids[-1], "INR", (Leg(name, delta, "x@b"),))])))
            elif step[0] == "decide" and ids:
                tasks.append(asyncio.ensure_future(ledger.decide_many([(ids[step[1] % len(ids)], step[2])])))
            elif step[0] == "deposit":
                tasks.append(asyncio.ensure_future(ledger.deposit(str(uuid.uuid4()), step[1], step[2])))
            elif step[0] == "write" and store.waiting.is_set():
                written = store.written
                store.outcomes.put(step[1])
                while store.written == written:
                    await asyncio.sleep(0.001)
            await _quiet(commit, store)
            assert all(a.held >= 0 and a.incoming >= 0 for a in ledger.accounts.values())
        while not all(t.done() for t in tasks):  # the store is well again: everything queued goes down
            store.outcomes.put(True)
            await asyncio.sleep(0.001)
        await asyncio.gather(*tasks, return_exceptions=True)
        await _as_a_restart_finds_it(ledger, commit, path)

    asyncio.run(scenario())
