"""A bank keeps only what is live in memory: history is paged from its index, old ids are answered
from its store, and a restart reads accounts, meta and the in-doubt transactions, nothing settled.

One cluster for the module: bank_a on SQLite and bank_b on JSON, each through
the `counting` storage kind (tests/plugins/counting_storage.py), the real
store underneath that also logs every read, so a test can see what a
restarted bank asked of its store. prepare_timeout_s is long, so that a
transaction left in doubt here stays in doubt for the test's length instead
of being resolved with the gateway. The last test boots clusters of its own,
on a store written in the previous layout.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from miniupi.client.api import Client, HistoryItem
from miniupi.contract.registry import check_plugins
from miniupi.contract.store import Put, Store
from miniupi.errors import AlreadyExists, InvalidArgument
from miniupi.nodes.passwords import hash_password
from miniupi.ops.testing import LocalCluster
from miniupi.tls import dial
from miniupi.v1 import bank_pb2, bank_pb2_grpc, common_pb2
from conftest import PASSWORD, PLUGIN_DIR, bank_account, cli_fails, cli_login, cli_ok, lines_with, me, money, wait_for

pytestmark = pytest.mark.timeout(240)

SPEC = {
    "cluster": {"name": "off_heap", "prepare_timeout_s": 60, "call_timeout_s": 3, "max_opening_deposit": "10000.00"},
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "counting"},
              "bank_b": {"storage": "counting", "counting": {"inner": "json"}}},
    "plugins": {"load": ["counting_storage"]},
}
BANKS = [pytest.param("bank_a", id="sqlite"), pytest.param("bank_b", id="json")]
OTHER = {"bank_a": "bank_b", "bank_b": "bank_a"}
LIVE_LOAD = "load accounts,in_doubt,meta"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with pytest.MonkeyPatch.context() as env:
        # Before boot: supervisord passes it to every node.
        env.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")])))
        with LocalCluster(tmp_path_factory.mktemp("off_heap"), SPEC) as c:
            yield c


@pytest.fixture(autouse=True)
def all_nodes_up_afterwards(cluster: LocalCluster) -> Iterator[None]:
    """A failing test must not leave a node stopped for the next one."""
    yield
    for node in cluster.config.nodes:
        cluster.start_node(node.name)


def reads(cluster: LocalCluster, bank: str) -> list[str]:
    """What `bank` read from its store since it last opened it (tests/plugins/counting_storage.py)."""
    lines = (cluster.config.banks[bank].data_dir / "reads.log").read_text().splitlines()
    return lines[len(lines) - lines[::-1].index("open"):]


@contextlib.contextmanager
def as_gateway(cluster: LocalCluster, bank: str) -> Iterator[bank_pb2_grpc.BankStub]:
    """The bank's own API, called with the gateway's certificate, as the gateway calls it."""
    with dial(cluster.config.certs_dir, "gateway", bank, cluster.config.banks[bank].address, aio=False) as ch:
        yield bank_pb2_grpc.BankStub(ch)


def prepare(stub: bank_pb2_grpc.BankStub, txn_id: str, account: str, delta: int, counterparty: str
            ) -> bank_pb2.PrepareReply:
    return stub.Prepare(bank_pb2.PrepareRequest(txn_id=txn_id, currency="INR", legs=[
        bank_pb2.Leg(account=account.split("@")[0], delta_minor=delta, counterparty=counterparty)]), timeout=5)


def restart(cluster: LocalCluster, bank: str, how: str = "restart") -> None:
    if how == "kill":
        old = cluster.kill_node(bank, signal.SIGKILL)
        wait_for(f"{bank} to run again", lambda: cluster.supervisor.pid(bank) not in (None, old))
        cluster.wait_ready(bank)
    else:
        cluster.restart_node(bank)


def rows(items: list[HistoryItem]) -> list[tuple[str, int, str, float]]:
    return [(i.txn_id, i.delta, i.counterparty, i.applied_at) for i in items]


@pytest.mark.parametrize("bank", BANKS)
def test_paging_a_long_history_returns_every_entry_once_in_order_across_a_restart(
        cluster: LocalCluster, new_user: Callable[..., Client], bank: str) -> None:
    owner = new_user(bank, 1_000_00)
    other = new_user(OTHER[bank], 1_000_00)
    made = []
    with cluster.client(identity="treasury") as treasury:
        for n in range(300):
            if n % 3 == 0:
                made.append(owner.pay(me(other), 1_00 + n).txn_id)
            elif n % 3 == 1:
                made.append(other.pay(me(owner), 2_00 + n).txn_id)
            else:
                made.append(treasury.deposit(me(owner), 3_00 + n).txn_id)
    # One page holds all 300: the order to expect, the order the bank applied them in (a payment to the
    # owner is applied in phase 2, after its payer was answered, so a deposit may come first).
    everything = owner.history(limit=1000)
    assert sorted(i.txn_id for i in everything) == sorted(made)

    pages: list[list[HistoryItem]] = []
    cursor = ""
    while len(pages) < 20:  # 140 of 300
        page = owner.history_page(limit=7, before=cursor)
        pages.append(page.items)
        cursor = page.next_cursor
    restart(cluster, bank, how="kill" if bank == "bank_b" else "restart")
    newer = owner.pay(me(other), 1_00).txn_id  # after the cursor was given: on no older page
    while cursor:
        page = owner.history_page(limit=7, before=cursor)
        pages.append(page.items)
        cursor = page.next_cursor
    assert [len(p) for p in pages] == [7] * 42 + [6]
    assert rows([i for p in pages for i in p]) == rows(everything)
    assert rows(owner.history(limit=2)) == rows([owner.history(limit=1)[0], everything[0]])
    assert owner.history(limit=1)[0].txn_id == newer
    with cluster.client(identity="admin") as admin:  # the admin pages any account the same way
        first = admin.history_page(me(owner), 299)
        assert rows(first.items) == rows(owner.history(limit=1) + everything[:298]) and first.next_cursor
        last = admin.history_page(me(owner), 299, first.next_cursor)
        assert (rows(last.items), last.next_cursor) == (rows(everything[298:]), "")


def test_bad_cursors_are_refused_in_one_line(cluster: LocalCluster, new_user: Callable[..., Client],
                                            tmp_path: Path) -> None:
    owner = new_user("bank_a", 100_00)
    other = new_user("bank_b", 100_00)
    for _ in range(3):
        owner.pay(me(other), 1_00)
    cursor = owner.history_page(limit=1).next_cursor
    theirs = other.history_page(limit=1).next_cursor
    row, tag = cursor.split(".")
    assert row == "3" and theirs and owner.history_page(limit=5, before=cursor).next_cursor == ""
    for bad in ["garbage", "", "3", f"{row}.{tag}0", f"{row},{tag}", f" {cursor}", f"0{cursor}", f"{cursor}\n",
                "9" * 200, theirs, f"1.{tag}", f"4.{tag}", f"999999999999.{tag}", "3.ABCDEF", "-2." + tag]:
        if not bad:
            continue  # empty is the first page, not a bad cursor
        with pytest.raises(InvalidArgument) as refused:
            owner.history_page(limit=5, before=bad)
        message = refused.value.message
        assert "cursor" in message and "\n" not in message and len(message) < 200, (bad, message)

    home = tmp_path / "home"
    cli_login(cluster, me(owner), home)
    assert "bad history cursor 'garbage'" in cli_fails(cluster, "history", "--before", "garbage", home=home)
    assert "is not from a page of" in cli_fails(cluster, "history", "--before", theirs, home=home)
    assert "argument --before: not a history cursor" in cli_fails(cluster, "history", "--before", "a b",
                                                                   home=home)
    first = cli_ok(cluster, "history", "--limit", "2", home=home).splitlines()
    assert len(first) == 3 and first[-1] == \
        f"older payments: run: miniupi history --limit 2 --before {owner.history_page(limit=2).next_cursor}"
    following = first[-1].split("run: miniupi ")[1].split()
    second = cli_ok(cluster, *following, home=home).splitlines()
    assert len(second) == 1 and "older payments" not in second[0]
    shown = json.loads(cli_ok(cluster, *following, "--json", home=home))
    assert len(shown["entries"]) == 1 and shown["next_cursor"] is None
    shown = json.loads(cli_ok(cluster, "history", "--limit", "1", "--json", home=home))
    assert shown["next_cursor"] == owner.history_page(limit=1).next_cursor


def test_an_old_id_after_a_restart_is_answered_from_the_store_and_moves_nothing(
        cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payer = new_user("bank_a", 50_00)
    payee = new_user("bank_b", 0)
    paid, deposited = str(uuid.uuid4()), str(uuid.uuid4())
    assert payer.pay(me(payee), 5_00, txn_id=paid).state == "COMMITTED"
    assert money(payee) == (5_00, 5_00)  # applied at bank_b too (the gateway's Balance waits for phase 2)
    with as_gateway(cluster, "bank_b") as bank_b:
        first = bank_b.Deposit(bank_pb2.BankDepositRequest(
            txn_id=deposited, account=me(payee).split("@")[0], amount=common_pb2.Money(minor=7_00, currency="INR")),
            timeout=5)
    assert first.balance.minor == 12_00
    payee.pay(me(payer), 1_00)  # the payee's balance moves on: a repeat still gets its first answer

    restart(cluster, "bank_a")
    restart(cluster, "bank_b", how="kill")
    with as_gateway(cluster, "bank_a") as bank_a:
        vote = prepare(bank_a, paid, me(payer), -5_00, me(payee))
        assert (vote.yes, bank_pb2.VoteRefusal.Name(vote.refusal)) == (False, "ALREADY_DECIDED")
        assert "already committed" in vote.detail
        assert bank_a.Commit(bank_pb2.DecisionRequest(txn_id=paid), timeout=5).known  # acknowledged again
        with pytest.raises(grpc.RpcError) as refused:
            bank_a.Abort(bank_pb2.DecisionRequest(txn_id=paid), timeout=5)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"get txns {paid}" in reads(cluster, "bank_a")  # read on demand, by key
    with as_gateway(cluster, "bank_b") as bank_b:
        vote = prepare(bank_b, paid, me(payee), 5_00, me(payer))
        assert (vote.yes, bank_pb2.VoteRefusal.Name(vote.refusal)) == (False, "ALREADY_DECIDED")
        again = bank_b.Deposit(bank_pb2.BankDepositRequest(
            txn_id=deposited, account=me(payee).split("@")[0], amount=common_pb2.Money(minor=7_00, currency="INR")),
            timeout=5)
        assert again.balance.minor == 12_00  # the stored answer, not today's balance
        with pytest.raises(grpc.RpcError) as refused:
            bank_b.Deposit(bank_pb2.BankDepositRequest(
                txn_id=deposited, account=me(payee).split("@")[0],
                amount=common_pb2.Money(minor=8_00, currency="INR")), timeout=5)
        assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert (payer.pay(me(payee), 5_00, txn_id=paid).txn_id, money(payer), money(payee)) == (
        paid, (46_00, 46_00), (11_00, 11_00))
    with pytest.raises(AlreadyExists):
        payer.pay(me(payee), 6_00, txn_id=paid)
    assert [i.txn_id for i in payer.history()].count(paid) == 1


def test_a_restart_reads_only_what_is_live(cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payer = new_user("bank_a", 100_00)
    payee = new_user("bank_b", 0)
    for _ in range(30):
        payer.pay(me(payee), 1_00)
    before = (payer.history(limit=1000), payee.history(limit=1000))
    doubt = str(uuid.uuid4())
    with as_gateway(cluster, "bank_a") as bank_a:
        assert prepare(bank_a, doubt, me(payer), -2_00, me(payee)).yes  # no decision: in doubt

    restart(cluster, "bank_a")
    restart(cluster, "bank_b")
    # Nothing settled is read: the live tables, then the one in-doubt record by key.
    assert reads(cluster, "bank_a") == [LIVE_LOAD, f"get txns {doubt}"]
    assert reads(cluster, "bank_b") == [LIVE_LOAD]
    assert bank_account(cluster, "bank_a", me(payer).split("@")[0]) == (70_00, 2_00)  # the hold survived
    assert (payer.history(limit=1000), payee.history(limit=1000)) == before
    with as_gateway(cluster, "bank_a") as bank_a:
        assert bank_a.Abort(bank_pb2.DecisionRequest(txn_id=doubt), timeout=5).known
    assert bank_account(cluster, "bank_a", me(payer).split("@")[0]) == (70_00, 0)
    restart(cluster, "bank_a")
    assert reads(cluster, "bank_a") == [LIVE_LOAD]  # decided: no longer in doubt


@pytest.mark.parametrize("kind", ["sqlite", "json"])
def test_a_bank_started_on_a_store_of_the_previous_format_upgrades_it_once(tmp_path: Path, kind: str) -> None:
    """The store as the previous version left it (every table loaded whole, no index tables): the
    first start builds the indexes in one pass, and history, holds and old ids' answers are intact."""
    spec = {"cluster": {"name": "old_format", "prepare_timeout_s": 60, "call_timeout_s": 3},
            "gateway": {"storage": "sqlite"}, "banks": {"bank_a": {"storage": kind}}}
    local = LocalCluster(tmp_path, spec)
    ids = {name: str(uuid.uuid4()) for name in ("received", "deposit", "paid", "inside", "aborted", "doubt")}
    store = check_plugins(local.config).open_store(local.config.banks["bank_a"])
    try:
        write_previous_format(store, ids, hash_password(PASSWORD))
    finally:
        store.close()

    with local:
        with local.client() as alice, local.client() as bob:
            alice.login("alice@bank_a", PASSWORD)
            bob.login("bob@bank_a", PASSWORD)
            expected = [(ids["inside"], -5_00, "bob@bank_a", 1004.0), (ids["paid"], -10_00, "carol@bank_b", 1003.0),
                        (ids["deposit"], 25_00, "treasury", 1002.0), (ids["received"], 4_00, "carol@bank_b", 1001.0)]
            assert rows(alice.history()) == expected
            assert rows(bob.history()) == [(ids["inside"], 5_00, "alice@bank_a", 1004.0)]
            paged, cursor = [], ""
            while True:
                page = alice.history_page(limit=1, before=cursor)
                paged += page.items
                cursor = page.next_cursor
                if not cursor:
                    break
            assert rows(paged) == expected
            assert money(alice) == (114_00, 111_00)  # the in-doubt payment's hold
            with as_gateway(local, "bank_a") as bank_a:
                for old in ("paid", "aborted", "deposit"):
                    vote = prepare(bank_a, ids[old], "alice@bank_a", -1_00, "carol@bank_b")
                    assert bank_pb2.VoteRefusal.Name(vote.refusal) == "ALREADY_DECIDED"
                again = bank_a.Deposit(bank_pb2.BankDepositRequest(
                    txn_id=ids["deposit"], account="alice", amount=common_pb2.Money(minor=25_00, currency="INR")),
                    timeout=5)
                assert again.balance.minor == 129_00  # the answer it gave then
                assert bank_a.Commit(bank_pb2.DecisionRequest(txn_id=ids["inside"]), timeout=5).known
                assert bank_a.Abort(bank_pb2.DecisionRequest(txn_id=ids["doubt"]), timeout=5).known
            assert money(alice) == (114_00, 114_00)
            paid = alice.pay("bob@bank_a", 1_00).txn_id
            assert [i.txn_id for i in alice.history(limit=2)] == [paid, ids["inside"]]
            local.restart_node("bank_a")
            assert rows(alice.history(limit=5)[1:]) == expected
        assert len(lines_with(local, "bank_a", "store upgraded to format")) == 1  # the first start only


def write_previous_format(store: Store, ids: dict[str, str], password_hash: str) -> None:
    """Records exactly as the previous version wrote them: no format in meta, no in_doubt or history
    table, no entry count in an account. The ids sort in any order: history follows decided_at."""
    def txn(state: str, legs: list[list[object]], decided_at: float | None, **more: object) -> dict[str, object]:
        return {"state": state, "legs": legs, "prepared_at": time.time(), "decided_at": decided_at, **more}

    account = {"password_hash": password_hash, "opened_at": 800.0, "failed_logins": 0, "locked_until": 0.0}
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
