"""The bank's ledger as a plain object over a real store: 2PC rules without gRPC."""
from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path

import pytest

from miniupi.contract.hookspecs import hookimpl
from miniupi.contract.manager import NodeHooks, plugin_manager
from miniupi.errors import AlreadyExists, FailedPrecondition, InvalidArgument, Unavailable
from miniupi.nodes import ledger as ledger_module
from miniupi.nodes.bank_store import LIVE_TABLES, load_live
from miniupi.nodes.ledger import Ledger
from miniupi.nodes.participants import Leg
from miniupi.plugins.storage_json import JsonStore
from miniupi.nodes.group_commit import GroupCommit


def _open(path: Path, **kwargs: object) -> tuple[Ledger, GroupCommit]:
    store = JsonStore(path)
    commit = GroupCommit(store)
    return Ledger("bank_a", "INR", commit, load_live(store, store.load(LIVE_TABLES)), **kwargs), commit


def _debit(amount: int) -> tuple[Leg, ...]:
    return (Leg("alice", -amount, "bob@bank_b"),)


def run(coro):  # one event loop per test, as the node has one
    return asyncio.run(coro)


def test_prepare_holds_commit_applies_and_a_repeat_changes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger, commit = _open(tmp_path)
        await ledger.open_account("alice", "pw", 1000)
        txn = str(uuid.uuid4())
        assert (await ledger.prepare(txn, "INR", _debit(300))).yes
        assert (ledger.accounts["alice"].balance, ledger.accounts["alice"].held) == (1000, 300)
        assert (await ledger.prepare(txn, "INR", _debit(300))).yes  # a resent prepare: same vote
        assert ledger.accounts["alice"].held == 300
        await ledger.commit(txn)
        await ledger.commit(txn)
        assert (ledger.accounts["alice"].balance, ledger.accounts["alice"].held) == (700, 0)
        await commit.close()

    run(scenario())


def test_the_available_balance_bounds_concurrent_holds(tmp_path: Path) -> None:
    async def scenario() -> list[bool]:
        ledger, commit = _open(tmp_path)
        await ledger.open_account("alice", "pw", 1000)
        votes = await asyncio.gather(*(ledger.prepare(str(uuid.uuid4()), "INR", _debit(300)) for _ in range(5)))
        await commit.close()
        return [v.yes for v in votes]

    assert sorted(run(scenario())) == [False, False, True, True, True]


def test_abort_releases_the_hold_and_an_unknown_abort_refuses_a_later_prepare(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger, commit = _open(tmp_path)
        await ledger.open_account("alice", "pw", 1000)
        txn, late = str(uuid.uuid4()), str(uuid.uuid4())
        await ledger.prepare(txn, "INR", _debit(400))
        await ledger.abort(txn)
        assert ledger.accounts["alice"].held == 0
        with pytest.raises(FailedPrecondition):
            await ledger.commit(txn)
        assert not await ledger.abort(late)  # unknown id: remembered as aborted
        vote = await ledger.prepare(late, "INR", _debit(1))
        assert not vote.yes and vote.refusal == "ALREADY_DECIDED"
        await commit.close()

    run(scenario())


def test_a_reused_id_with_other_legs_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger, commit = _open(tmp_path)
        await ledger.open_account("alice", "pw", 1000)
        txn = str(uuid.uuid4())
        await ledger.prepare(txn, "INR", _debit(100))
        vote = await ledger.prepare(txn, "INR", _debit(900))
        assert not vote.yes and ledger.accounts["alice"].held == 100
        await commit.close()

    run(scenario())


def test_prepared_transactions_and_holds_survive_a_reopen(tmp_path: Path) -> None:
    txn, done = str(uuid.uuid4()), str(uuid.uuid4())

    async def before() -> None:
        ledger, commit = _open(tmp_path)
        await ledger.open_account("alice", "pw", 1000)
        await ledger.prepare(done, "INR", _debit(100))
        await ledger.commit(done)
        await ledger.prepare(txn, "INR", _debit(250))
        await commit.close()

    async def after() -> None:
        ledger, commit = _open(tmp_path)
        alice = ledger.accounts["alice"]
        assert (alice.balance, alice.held, ledger.prepared) == (900, 250, {txn})
        assert [e.txn_id for e in (await ledger.history("alice", 10))[0]] == [done]
        await ledger.commit(txn)
        assert (alice.balance, alice.held) == (650, 0)
        with pytest.raises(AlreadyExists):
            await ledger.open_account("alice", "pw", 5)
        await commit.close()

    run(before())
    run(after())


def test_a_batch_is_decided_item_by_item_with_one_durable_write(tmp_path: Path) -> None:
    """DecideAndPrepare's halves: one refused item leaves the others alone, and the batch shares one write."""
    async def scenario() -> None:
        ledger, commit = _open(tmp_path)
        await ledger.open_account("alice", "pw", 1000)
        writes: list[int] = []
        store_write = ledger._commit._store.write
        ledger._commit._store.write = lambda puts: (writes.append(len(puts)), store_write(puts))[1]
        a, b, c, d = (str(uuid.uuid4()) for _ in range(4))
        votes = await ledger.prepare_many([(a, "INR", _debit(600)), (b, "INR", ()), (c, "INR", _debit(600)),
                                           (d, "INR", _debit(300)), (a, "INR", _debit(600))])
        assert votes[0].yes
        assert isinstance(votes[1], InvalidArgument)  # no legs: refused alone
        assert (votes[2].yes, votes[2].refusal) == (False, "INSUFFICIENT_FUNDS")  # a's hold counts already
        assert votes[3].yes and votes[4].yes  # a repeat of a in the same batch: the same vote
        assert writes == [4]  # a's and d's records, and each named in_doubt
        results = await ledger.decide_many([(a, True), (d, False), (c, True), (str(uuid.uuid4()), False)])
        assert results[:2] == [True, True] and isinstance(results[2], FailedPrecondition) and results[3] is False
        # a's record, its in_doubt row gone, alice's history row and account; d's and its in_doubt row;
        # the remembered unknown abort
        assert writes == [4, 7]
        alice = ledger.account("alice")
        assert (alice.balance, alice.held, ledger.prepared) == (400, 0, set())
        # Decisions go first: the hold an abort releases is free for a prepare of the same batch.
        e, f = str(uuid.uuid4()), str(uuid.uuid4())
        assert (await ledger.prepare_many([(e, "INR", _debit(300))]))[0].yes
        outcomes, votes = await ledger.decide_and_prepare([(e, False)], [(f, "INR", _debit(400))])
        assert outcomes == [True] and votes[0].yes and writes[-1] == 4
        await commit.close()
        reopened, commit = _open(tmp_path)
        assert reopened.account("alice").balance == 400 and reopened.find_txn(d).state == "ABORTED"
        assert (reopened.account("alice").held, reopened.prepared) == (400, {f})
        await commit.close()

    run(scenario())


def test_a_batch_whose_write_fails_leaves_memory_as_it_was(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger, commit = _open(tmp_path)
        await ledger.open_account("alice", "pw", 1000)
        a, b, c, unknown = (str(uuid.uuid4()) for _ in range(4))
        assert (await ledger.prepare_many([(a, "INR", _debit(100)), (b, "INR", _debit(200))]))[0].yes
        before = ledger.account("alice")
        state = ((before.balance, before.held, before.entries), set(ledger.prepared), set(ledger.txns))
        store_write = ledger._commit._store.write

        def failing(puts: object) -> None:
            raise OSError("disk full")

        ledger._commit._store.write = failing
        outcomes, votes = await ledger.decide_and_prepare([(a, True), (b, False), (unknown, False)],
                                                          [(c, "INR", _debit(300))])
        assert all(isinstance(x, Unavailable) for x in [*outcomes, *votes])
        after = ledger.account("alice")
        assert ((after.balance, after.held, after.entries), set(ledger.prepared), set(ledger.txns)) == state
        assert ledger.txns[a].state == ledger.txns[b].state == "PREPARED"
        ledger._commit._store.write = store_write  # the disk is back: the same batch goes through
        outcomes, votes = await ledger.decide_and_prepare([(a, True), (b, False), (unknown, False)],
                                                          [(c, "INR", _debit(300))])
        assert outcomes == [True, True, False] and votes[0].yes
        assert (ledger.account("alice").balance, ledger.account("alice").held) == (900, 300)
        await commit.close()

    run(scenario())


def test_a_plugin_hook_that_raises_refuses_only_its_own_item(tmp_path: Path) -> None:
    async def scenario() -> None:
        bad = str(uuid.uuid4())

        class FraudRules:
            @hookimpl
            def miniupi_before_vote(self, txn_id: str) -> None:
                if txn_id == bad:
                    raise RuntimeError("fraud rules are down")

        ledger, commit = _open(tmp_path, hooks=NodeHooks(plugin_manager(FraudRules()), None))
        await ledger.open_account("alice", "pw", 1000)
        good = str(uuid.uuid4())
        votes = await ledger.prepare_many([(good, "INR", _debit(100)), (bad, "INR", _debit(100))])
        assert votes[0].yes and isinstance(votes[1], Unavailable) and "fraud rules are down" in votes[1].message
        assert (ledger.account("alice").held, ledger.prepared) == (100, {good})
        await commit.close()
        reopened, commit = _open(tmp_path)
        assert reopened.prepared == {good}
        await commit.close()

    run(scenario())


def test_failed_logins_lock_the_account_durably(tmp_path: Path) -> None:
    async def fail_until_locked() -> list[tuple[bool, float]]:
        ledger, commit = _open(tmp_path, login_attempts=3, login_lockout_s=60)
        await ledger.open_account("alice", "right", 0)
        results = [await ledger.check_password("alice", "wrong") for _ in range(3)]
        results.append(await ledger.check_password("alice", "right"))
        await commit.close()
        return results

    async def after_restart() -> tuple[bool, float]:
        ledger, commit = _open(tmp_path, login_attempts=3, login_lockout_s=60)
        result = await ledger.check_password("alice", "right")
        await commit.close()
        return result

    results = run(fail_until_locked())
    assert results[:2] == [(False, 0.0), (False, 0.0)]
    assert results[2][0] is False and 59 < results[2][1] <= 60  # locked from the reservation, before the hash
    assert results[3][0] is False and 0 < results[3][1] <= 60  # locked: even the right password waits
    ok, locked_for = run(after_restart())
    assert not ok and locked_for > 0


def _credit(amount: int) -> tuple[Leg, ...]:
    return (Leg("bob", amount, "alice@bank_b"),)


def test_credits_in_flight_count_against_the_ceiling_and_are_rebuilt_on_reopen(tmp_path: Path) -> None:
    async def before() -> list[str]:
        ledger, commit = _open(tmp_path, max_balance=1000)
        await ledger.open_account("bob", "pw", 900)
        txns = [str(uuid.uuid4()) for _ in range(5)]
        votes = await asyncio.gather(*(ledger.prepare(t, "INR", _credit(30)) for t in txns))
        assert [v.yes for v in votes].count(True) == 3  # 900 + 3 * 30 fits under 1000; a fourth would not
        refused = next(v for v in votes if not v.yes)
        assert refused.refusal == "BALANCE_CEILING" and "would exceed its ceiling of 10.00 INR" in refused.detail
        yes = [t for t, v in zip(txns, votes) if v.yes]
        await ledger.commit(yes[0])
        assert (ledger.account("bob").balance, ledger.account("bob").incoming) == (930, 60)
        await commit.close()
        return yes[1:]

    async def after(prepared: list[str]) -> None:
        ledger, commit = _open(tmp_path, max_balance=1000)
        assert ledger.account("bob").incoming == 60
        assert not (await ledger.prepare(str(uuid.uuid4()), "INR", _credit(11))).yes
        await ledger.abort(prepared[0])
        assert (await ledger.prepare(str(uuid.uuid4()), "INR", _credit(40))).yes  # the abort made room
        await ledger.commit(prepared[1])
        assert ledger.account("bob").balance + ledger.account("bob").incoming == 1000
        await commit.close()

    run(after(run(before())))


@pytest.mark.parametrize("name", ["alice", "nobody"])
def test_concurrent_logins_check_at_most_login_attempts_passwords(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """50 logins at once, the right password 30th: 5 are checked, the other 45 (the right one too) find a lock.

    Every check is held open until the refusals are in, so all 50 are in
    flight together; a name without an account is counted alike.
    """
    attempts, logins = 5, 50
    checked: list[str] = []
    release = threading.Event()
    real_verify = ledger_module.verify_password

    def held_verify(stored_hash: str, password: str) -> bool:
        checked.append(password)
        release.wait(10)
        return real_verify(stored_hash, password)

    monkeypatch.setattr(ledger_module, "verify_password", held_verify)
    fired: list[str] = []

    class CountChecks:
        @hookimpl
        def miniupi_before_password_check(self, account: str) -> None:
            fired.append(account)

    async def scenario() -> tuple[list[tuple[bool, float]], tuple[bool, float]]:
        ledger, commit = _open(tmp_path, login_attempts=attempts, login_lockout_s=60,
                               hooks=NodeHooks(plugin_manager(CountChecks()), None))
        await ledger.open_account("alice", "right", 0)
        passwords = ["wrong"] * logins
        passwords[29] = "right"
        tasks = [asyncio.create_task(ledger.check_password(name, p)) for p in passwords]
        deadline = asyncio.get_running_loop().time() + 5
        while sum(t.done() for t in tasks) < logins - attempts and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        release.set()
        results = await asyncio.gather(*tasks)
        after = await ledger.check_password(name, "right")
        await commit.close()
        return results, after

    results, after = run(scenario())

    assert len(checked) == attempts and fired == [name] * attempts
    assert not any(ok for ok, _ in results)
    assert sum(locked_for > 0 for _, locked_for in results) >= logins - attempts + 1
    assert results[29][1] > 0  # the right password, sent 30th, was refused as locked
    assert not after[0] and after[1] > 0  # still locked, and refused without a check


def test_a_right_password_among_the_reserved_checks_logs_in_and_lifts_the_lock(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[tuple[bool, float]], tuple[bool, float]]:
        ledger, commit = _open(tmp_path, login_attempts=3, login_lockout_s=60)
        await ledger.open_account("alice", "right", 0)
        passwords = ["wrong", "right", "wrong", "wrong", "wrong", "wrong"]
        results = await asyncio.gather(*(ledger.check_password("alice", p) for p in passwords))
        after = await ledger.check_password("alice", "right")
        await commit.close()
        return results, after

    results, after = run(scenario())
    assert [ok for ok, _ in results] == [False, True, False, False, False, False]
    assert all(locked_for > 0 for _, locked_for in results[3:])  # refused unchecked: the third reservation locked
    assert after == (True, 0.0)  # the right password was one of the three checked, so the lock is lifted


def test_names_without_an_account_lock_like_accounts_in_a_bounded_table(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_module, "MAX_STRANGERS", 3)

    async def scenario() -> tuple[dict[str, list[tuple[bool, bool]]], list[str]]:
        ledger, commit = _open(tmp_path, login_attempts=3, login_lockout_s=60)
        await ledger.open_account("alice", "right", 0)
        answers = {name: [(ok, locked_for > 0) for ok, locked_for in
                          [await ledger.check_password(name, "wrong") for _ in range(4)]]
                   for name in ("alice", "nobody")}
        for name in ("x1", "x2", "x3"):
            await ledger.check_password(name, "wrong")
        await commit.close()
        return answers, list(ledger._strangers)

    answers, remembered = run(scenario())
    assert answers["alice"] == answers["nobody"] == [(False, False), (False, False), (False, True), (False, True)]
    assert remembered == ["x1", "x2", "x3"]  # the least recently guessed name was forgotten first


def test_a_deposit_survives_a_restart_with_its_history_its_answer_and_the_issued_totals(tmp_path: Path) -> None:
    """A deposit is one durable write: after a reopen the account, its history, the bank's issued
    totals and the repeat's stored answer are as they were, and a repeat still credits nothing."""
    txn = str(uuid.uuid4())

    async def before() -> None:
        ledger, commit = _open(tmp_path)
        await ledger.open_account("alice", "pw", 1000)
        assert await ledger.deposit(txn, "alice", 500) == 1500
        paid = str(uuid.uuid4())
        assert (await ledger.prepare(paid, "INR", _debit(200))).yes
        await ledger.commit(paid)
        await commit.close()

    async def after() -> None:
        ledger, commit = _open(tmp_path)
        assert await ledger.deposit(txn, "alice", 500) == 1500  # the stored answer, not today's balance
        assert ledger.accounts["alice"].balance == 1300
        assert [(e.delta, e.counterparty) for e in (await ledger.history("alice", 10))[0]] == \
            [(-200, "bob@bank_b"), (500, "treasury")]
        assert (ledger.meta["deposits"], ledger.meta["treasury"]) == (1500, 500)
        with pytest.raises(AlreadyExists):
            await ledger.deposit(txn, "alice", 501)
        await commit.close()

    run(before())
    run(after())


def test_a_payment_reusing_a_deposits_id_is_refused_and_its_abort_leaves_the_deposit(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger, commit = _open(tmp_path)
        await ledger.open_account("alice", "pw", 1000)
        txn = str(uuid.uuid4())
        await ledger.deposit(txn, "alice", 500)
        vote = await ledger.prepare(txn, "INR", _debit(100))
        assert (vote.yes, vote.refusal) == (False, "ALREADY_DECIDED")
        assert await ledger.abort(txn) is False  # the gateway's abort of that payment: nothing to release
        with pytest.raises(FailedPrecondition):
            await ledger.commit(txn)
        assert (ledger.accounts["alice"].balance, ledger.find_txn(txn).state) == (1500, "DEPOSITED")
        await commit.close()

    run(scenario())
