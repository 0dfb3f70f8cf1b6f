"""What survives stops, restarts and kill -9 of nodes, and how payments fail while a node is down.

One cluster for the module (bank_a on sqlite, bank_b on json; prepare and call
timeouts of 3 s). Every test leaves every node running again, even when it fails.
"""
from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from miniupi.client.api import Client
from miniupi.errors import AlreadyExists, Aborted, FailedPrecondition, MiniupiError, Unavailable
from miniupi.ops.testing import LocalCluster
from conftest import me, money, wait_for

pytestmark = pytest.mark.timeout(180)

SPEC = {
    "cluster": {"name": "durability", "prepare_timeout_s": 3, "call_timeout_s": 3,
                "max_opening_deposit": "10000.00"},  # Register opens with deposits here
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
}
SETUP = {
    "bank_a": {"setup_a": ("50.00", "setup-pw")},
    "bank_b": {"setup_b": ("20.00", "setup-pw")},
}
BANKS = [pytest.param("bank_a", id="bank_a-sqlite"), pytest.param("bank_b", id="bank_b-json")]
OTHER = {"bank_a": "bank_b", "bank_b": "bank_a"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("durability"), SPEC, accounts=SETUP) as c:
        yield c


@pytest.fixture(autouse=True)
def all_nodes_up_afterwards(cluster: LocalCluster) -> Iterator[None]:
    """A failing test must not leave a node stopped or frozen for the next one."""
    yield
    for node in cluster.config.nodes:
        pid = cluster.supervisor.pid(node.name)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                cluster.kill_node(node.name, signal.SIGCONT)
        cluster.start_node(node.name)


def snapshot(client: Client) -> tuple[int, int, list[tuple[str, str, int, str, float]]]:
    """Everything the account shows its owner: balance, available, full history."""
    b = client.balance()
    history = [(i.txn_id, i.counterparty, i.delta, i.currency, i.applied_at) for i in client.history(limit=1000)]
    return b.balance, b.available, history


def new_pid(cluster: LocalCluster, node: str, old: int) -> int:
    return wait_for(f"{node} to run again with a new pid",
                    lambda: (pid := cluster.supervisor.pid(node)) not in (None, old) and pid)


# -- restarts keep the state -----------------------------------------------------


@pytest.mark.parametrize("bank", BANKS)
def test_stopped_and_started_bank_keeps_every_balance_and_history(cluster: LocalCluster,
                                                                  new_user: Callable[..., Client],
                                                                  bank: str) -> None:
    x1 = new_user(bank, 100_00)
    x2 = new_user(bank, 30_00)
    other = new_user(OTHER[bank], 40_00)
    x1.pay(me(other), 10_00)
    other.pay(me(x1), 2_50)
    x1.pay(me(x2), 5_00)  # within the bank
    x2.pay(me(other), 1_00)
    with pytest.raises(FailedPrecondition):
        x2.pay(me(other), 1_000_00)
    before = [snapshot(c) for c in (x1, x2, other)]
    assert [s[:2] for s in before] == [(87_50, 87_50), (34_00, 34_00), (48_50, 48_50)]
    assert [len(s[2]) for s in before] == [3, 2, 3]

    old = cluster.supervisor.pid(bank)
    assert old is not None
    cluster.stop_node(bank)
    assert cluster.supervisor.pid(bank) is None
    with pytest.raises(Unavailable):
        x1.balance()
    cluster.start_node(bank)

    assert cluster.supervisor.pid(bank) not in (None, old)
    assert [snapshot(c) for c in (x1, x2, other)] == before
    # And the restarted bank keeps working.
    assert x1.pay(me(other), 7_50).state == "COMMITTED"
    assert money(x1) == (80_00, 80_00) and money(other) == (56_00, 56_00)


@pytest.mark.parametrize("how", ["restart", "sigkill"])
def test_gateway_restart_keeps_idempotency(cluster: LocalCluster, new_user: Callable[..., Client], how: str) -> None:
    payer = new_user("bank_a", 20_00)
    payee = new_user("bank_b", 0)
    paid, refused = str(uuid.uuid4()), str(uuid.uuid4())
    assert payer.pay(me(payee), 6_00, txn_id=paid).state == "COMMITTED"
    with pytest.raises(FailedPrecondition) as first_refusal:
        payer.pay(me(payee), 50_00, txn_id=refused)

    old = cluster.supervisor.pid("gateway")
    assert old is not None
    if how == "restart":
        cluster.restart_node("gateway")
    else:
        cluster.kill_node("gateway")
        new_pid(cluster, "gateway", old)
        cluster.wait_ready("gateway")
    assert cluster.supervisor.pid("gateway") not in (None, old)
    # No login: the sessions outlive the gateway process (tests/nodes/test_sessions_restart.py).

    again = payer.pay(me(payee), 6_00, txn_id=paid)
    assert (again.txn_id, again.state) == (paid, "COMMITTED")
    with pytest.raises(AlreadyExists):
        payer.pay(me(payee), 7_00, txn_id=paid)
    # A refused id stays refused, even though 50.00 is still more than the payer has.
    with pytest.raises(FailedPrecondition) as second_refusal:
        payer.pay(me(payee), 50_00, txn_id=refused)
    assert second_refusal.value.message == first_refusal.value.message
    assert money(payer) == (14_00, 14_00)
    assert money(payee) == (6_00, 6_00)
    assert [i.txn_id for i in payee.history()] == [paid]


# -- payments while a bank is down --------------------------------------------------


@pytest.mark.parametrize(("payer_bank", "payee_bank", "down"), [
    ("bank_a", "bank_b", "bank_b"),  # the payee's bank is down
    ("bank_b", "bank_a", "bank_b"),  # the payer's bank is down
    ("bank_b", "bank_a", "bank_a"),  # the payee's bank (sqlite) is down
    ("bank_b", "bank_b", "bank_b"),  # both accounts in the bank that is down
])
def test_payment_to_stopped_bank_fails_cleanly_in_time_and_moves_no_money(
        cluster: LocalCluster, new_user: Callable[..., Client], payer_bank: str, payee_bank: str, down: str) -> None:
    payer = new_user(payer_bank, 10_00)
    payee = new_user(payee_bank, 1_00)
    txn_id = str(uuid.uuid4())
    cluster.stop_node(down)

    start = time.monotonic()
    with pytest.raises((Aborted, Unavailable)) as failed:
        payer.pay(me(payee), 4_00, txn_id=txn_id)
    elapsed = time.monotonic() - start

    assert elapsed < 10, f"took {elapsed:.1f}s"
    assert down in failed.value.message
    for c in (payer, payee):
        if me(c).endswith("@" + down):
            with pytest.raises(Unavailable):
                c.balance()
        else:
            # The running bank is told to abort: no hold stays behind.
            wait_for("no hold on the running side", lambda c=c: money(c)[0] == money(c)[1], timeout_s=10)
    cluster.start_node(down)

    assert money(payer) == (10_00, 10_00)  # available == balance: no hold left
    assert money(payee) == (1_00, 1_00)
    assert payer.history() == [] and payee.history() == []
    # The id is decided: sending it again does not run it now that the bank is back.
    if isinstance(failed.value, Aborted):
        with pytest.raises(Aborted):
            payer.pay(me(payee), 4_00, txn_id=txn_id)
        assert money(payer) == (10_00, 10_00) and money(payee) == (1_00, 1_00)
    assert payer.pay(me(payee), 4_00).state == "COMMITTED"
    assert money(payer) == (6_00, 6_00) and money(payee) == (5_00, 5_00)


def test_payment_from_frozen_bank_aborts_after_prepare_timeout_and_leaves_no_hold(
        cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    """SIGSTOP the payer's bank: it accepts the connection but never answers, so only the
    prepare timeout ends the payment; when it wakes it must not keep a hold."""
    payer = new_user("bank_b", 10_00)
    payee = new_user("bank_a", 1_00)
    bank = "bank_b"
    txn_id = str(uuid.uuid4())
    cluster.kill_node(bank, signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises((Aborted, Unavailable)) as failed:
            payer.pay(me(payee), 4_00, txn_id=txn_id)
        elapsed = time.monotonic() - start
    finally:
        cluster.kill_node(bank, signal.SIGCONT)

    assert 2.5 <= elapsed < 10, f"took {elapsed:.1f}s; the prepare timeout is 3s"
    assert bank in failed.value.message
    # The frozen bank may now read the stale Prepare and place a hold; the
    # gateway's retried Abort must release it.
    wait_for("payer's hold to be released", lambda: money(payer) == (10_00, 10_00), timeout_s=20)
    assert money(payee) == (1_00, 1_00)
    assert payer.history() == [] and payee.history() == []
    if isinstance(failed.value, Aborted):
        with pytest.raises(Aborted):
            payer.pay(me(payee), 4_00, txn_id=txn_id)
    assert payer.pay(me(payee), 4_00).state == "COMMITTED"
    assert money(payer) == (6_00, 6_00) and money(payee) == (5_00, 5_00)


# -- kill -9 ---------------------------------------------------------------------------


@pytest.mark.parametrize("bank", BANKS)
def test_bank_killed_with_sigkill_is_restarted_by_supervisord_and_keeps_balances(
        cluster: LocalCluster, new_user: Callable[..., Client], bank: str) -> None:
    x = new_user(bank, 60_00)
    other = new_user(OTHER[bank], 5_00)
    for _ in range(5):
        x.pay(me(other), 3_00)
    other.pay(me(x), 1_00)
    before = [snapshot(c) for c in (x, other)]
    assert [s[:2] for s in before] == [(46_00, 46_00), (19_00, 19_00)]

    old = cluster.kill_node(bank)  # right after the last acknowledged payment
    new_pid(cluster, bank, old)
    cluster.wait_ready(bank, timeout=30)

    assert [snapshot(c) for c in (x, other)] == before
    assert x.pay(me(other), 46_00).state == "COMMITTED"
    assert money(x) == (0, 0) and money(other) == (65_00, 65_00)


# -- setup files -------------------------------------------------------------------------


@pytest.mark.parametrize("bank", BANKS)
def test_setup_file_accounts_are_loaded_once_and_restart_keeps_paid_balance(
        cluster: LocalCluster, new_user: Callable[..., Client], bank: str) -> None:
    user, opening = {"bank_a": ("setup_a", 50_00), "bank_b": ("setup_b", 20_00)}[bank]
    payee = new_user(OTHER[bank], 0)
    with cluster.client() as c:
        c.login(f"{user}@{bank}", "setup-pw")
        balance_now = c.balance().balance
        # The first start opened the account with the setup file's balance (any earlier
        # run of this test in the module has only paid out of it).
        assert balance_now <= opening
        c.pay(me(payee), 5_00)
        assert c.balance().balance == balance_now - 5_00

        old = cluster.supervisor.pid(bank)
        cluster.restart_node(bank)
        assert cluster.supervisor.pid(bank) not in (None, old)
        assert c.balance().balance == balance_now - 5_00
        c.login(f"{user}@{bank}", "setup-pw")  # the stored password hash survives too
        assert len(c.history(limit=1000)) == (opening - balance_now) // 5_00 + 1
    assert money(payee) == (5_00, 5_00)


def test_setup_file_account_starts_with_the_setup_balance(cluster: LocalCluster) -> None:
    """The other half of the setup file test: the file was read at all, with the right amounts."""
    with cluster.client() as c:
        c.login("setup_a@bank_a", "setup-pw")
        history = c.history(limit=1000)
        assert c.balance().balance == 50_00 + sum(i.delta for i in history)
        c.login("setup_b@bank_b", "setup-pw")
        history = c.history(limit=1000)
        assert c.balance().balance == 20_00 + sum(i.delta for i in history)
    with cluster.client() as c, pytest.raises(MiniupiError):
        c.login("setup_a@bank_a", "wrong")
