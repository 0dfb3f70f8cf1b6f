"""Status by id (GetTransaction through `Client.transaction`): what each party may read, and how fast.

One cluster for the module (bank_a on sqlite, bank_b on json). The gateway
answers from its own memory, so a status check takes well under UPI's 10 s
even while a bank is stopped or frozen mid-payment; and anyone but the
payer, the payee and the admin hears exactly what an unknown id gets, so
ids cannot be probed.
"""
from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import PASSWORD, me, money, refusal, wait_for
from miniupi.client.api import STATUS_TIMEOUT_S, Client
from miniupi.errors import InsufficientFunds, InvalidArgument, MiniupiError, NotFound, NotLoggedIn
from miniupi.ops.testing import LocalCluster
from upi_helpers import assert_cluster_clean, every_node_running, gateway_reaches_every_bank

pytestmark = pytest.mark.timeout(120)

TIMEOUT_S = 3
SPEC = {
    "cluster": {"name": "status", "prepare_timeout_s": TIMEOUT_S, "call_timeout_s": TIMEOUT_S,
                "max_opening_deposit": "10000.00"},
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
}
# "Within 10 s" is the promise; an answer from memory comes far sooner. This bound only tells a
# status that went to a bank (and waited for it) from one that did not.
PROMPT_S = 5.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("status"), SPEC) as c:
        yield c


@pytest.fixture(autouse=True)
def every_node_up_afterwards(cluster: LocalCluster) -> Iterator[None]:
    yield
    every_node_running(cluster)


def timed(call: Callable[[], object]) -> tuple[object, float]:
    start = time.monotonic()
    return call(), time.monotonic() - start


def test_payer_payee_and_admin_read_a_committed_payment(cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payer, payee = new_user("bank_a", 50_00), new_user("bank_b")
    txn_id = str(uuid.uuid4())
    before = time.time()
    payer.pay(me(payee), 12_34, txn_id=txn_id)
    after = time.time()

    with cluster.client("admin") as admin:
        views = [payer.transaction(txn_id), payee.transaction(txn_id), admin.transaction(txn_id)]

    assert views[0] == views[1] == views[2]
    t = views[0]
    assert (t.txn_id, t.payer, t.payee, t.amount, t.currency, t.state) == (txn_id, me(payer), me(payee), 12_34,
                                                                           "INR", "COMMITTED")
    assert (t.refusal_code, t.refusal_reason, t.refusal_message) == ("", "", "")
    assert before - 1 <= t.created_at <= t.decided_at <= after + 1
    assert (t.refund_of, t.refunds, t.refunded, t.request_id) == ("", (), 0, "")


def test_a_refused_payment_shows_its_refusal(new_user: Callable[..., Client]) -> None:
    payer, payee = new_user("bank_a", 1_00), new_user("bank_b")
    txn_id = str(uuid.uuid4())
    refused = refusal(lambda: payer.pay(me(payee), 5_00, txn_id=txn_id))
    assert isinstance(refused, InsufficientFunds)

    for reader in (payer, payee):
        t = reader.transaction(txn_id)
        assert (t.state, t.refusal_code, t.refusal_reason) == ("ABORTED", "FAILED_PRECONDITION", "INSUFFICIENT_FUNDS")
        assert t.refusal_message == refused.message
        assert t.decided_at >= t.created_at > 0


def test_anyone_else_hears_what_an_unknown_id_gets(cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payer, payee, stranger = new_user("bank_a", 50_00), new_user("bank_b"), new_user("bank_a")
    txn_id = str(uuid.uuid4())
    payer.pay(me(payee), 1_00, txn_id=txn_id)
    unknown = str(uuid.uuid4())

    hidden = refusal(lambda: stranger.transaction(txn_id))
    missing = refusal(lambda: stranger.transaction(unknown))
    also_missing = refusal(lambda: payer.transaction(unknown))
    with cluster.client("admin") as admin:
        admin_missing = refusal(lambda: admin.transaction(unknown))

    assert type(hidden) is NotFound, hidden
    for other, other_id in ((missing, unknown), (also_missing, unknown), (admin_missing, unknown)):
        assert (type(other), other.code, other.reason, other.message.replace(other_id, "ID")) == (
            type(hidden), hidden.code, hidden.reason, hidden.message.replace(txn_id, "ID"))
    # A logged-out client, and ids that are not ids.
    with cluster.client() as nobody:
        assert isinstance(refusal(lambda: nobody.transaction(txn_id)), NotLoggedIn)
    for bad in ("", "x", txn_id.upper(), "{" + txn_id + "}"):
        assert isinstance(refusal(lambda: payer.transaction(bad)), InvalidArgument), bad


def test_a_status_check_is_answered_promptly_while_a_bank_is_down(cluster: LocalCluster,
                                                                  new_user: Callable[..., Client]) -> None:
    payer, payee = new_user("bank_a", 50_00), new_user("bank_b")
    committed, refused = str(uuid.uuid4()), str(uuid.uuid4())
    payer.pay(me(payee), 2_00, txn_id=committed)
    assert isinstance(refusal(lambda: payer.pay(me(payee), 500_00, txn_id=refused)), InsufficientFunds)
    cluster.stop_node("bank_b")
    try:
        for reader in (payer, payee):
            for txn_id, state in ((committed, "COMMITTED"), (refused, "ABORTED")):
                t, took = timed(lambda: reader.transaction(txn_id))
                assert t.state == state  # type: ignore[attr-defined]
                assert took < PROMPT_S, f"status took {took:.2f}s with bank_b down"
    finally:
        cluster.start_node("bank_b")
    assert STATUS_TIMEOUT_S <= 10


def test_the_status_of_a_payment_stuck_at_a_frozen_bank_is_answered_at_once(
        cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    """bank_b is frozen (SIGSTOP) while a payment to it is being prepared: the payment waits for the
    prepare timeout, and status checks meanwhile answer INITIATED at once, then its decision."""
    payer, payee = new_user("bank_a", 50_00), new_user("bank_b")
    txn_id = str(uuid.uuid4())
    answers: list[object] = []
    cluster.kill_node("bank_b", signal.SIGSTOP)
    # A Client runs on a loop of its own: the payment blocks one, the status checks use another.
    with cluster.client(session=payer.session) as watcher:
        try:
            paying = threading.Thread(target=lambda: answers.append(_answer(payer, me(payee), txn_id)))
            paying.start()
            seen = wait_for("the payment to be recorded", lambda: _state(watcher, txn_id), timeout_s=TIMEOUT_S)
            assert seen == "INITIATED"
            t, took = timed(lambda: watcher.transaction(txn_id))
            assert took < PROMPT_S and t.state == "INITIATED"  # type: ignore[attr-defined]
            assert t.decided_at == 0  # type: ignore[attr-defined]
            paying.join(TIMEOUT_S * 4)
            assert not paying.is_alive()
            t, took = timed(lambda: watcher.transaction(txn_id))
            assert took < PROMPT_S
            assert (t.state, t.refusal_code) == ("ABORTED", "ABORTED"), t  # type: ignore[attr-defined]
        finally:
            cluster.kill_node("bank_b", signal.SIGCONT)
    assert answers and getattr(answers[0], "code", None) == "ABORTED", answers
    gateway_reaches_every_bank(cluster)
    assert money(payer) == (50_00, 50_00)
    assert_cluster_clean(cluster)


def _answer(payer: Client, to: str, txn_id: str) -> object:
    try:
        return payer.pay(to, 3_00, txn_id=txn_id)
    except MiniupiError as e:
        return e


def _state(reader: Client, txn_id: str) -> str:
    try:
        return reader.transaction(txn_id).state
    except NotFound:
        return ""


def test_a_payment_only_the_outbox_holds_shows_as_queued(cluster: LocalCluster, tmp_path: Path,
                                                         new_user: Callable[..., Client]) -> None:
    """The issue: "A payment the client still holds in its outbox shows as queued." The gateway has
    never heard of it; the client that holds it says QUEUED, with what it will pay."""
    payer, payee, stranger = new_user("bank_a", 50_00), new_user("bank_b"), new_user("bank_a")
    with cluster.client(outbox=tmp_path / "outbox.sqlite3") as device:
        device.login(me(payer), PASSWORD)
        entry = device.enqueue(me(payee), 4_00)

        t = device.transaction(entry.txn_id)

        assert (t.txn_id, t.payer, t.payee, t.amount, t.state) == (entry.txn_id, me(payer), me(payee), 4_00,
                                                                   "QUEUED")
        # Offline too: what the outbox holds is all there is to tell.
        cluster.stop_node("gateway")
        try:
            offline = device.enqueue(me(payee), 5_00)
            assert device.transaction(offline.txn_id).state == "QUEUED"
            assert device.transaction(entry.txn_id).state == "QUEUED"
        finally:
            cluster.start_node("gateway")
        # Another account on the same device does not see this payer's queue: the gateway's answer stands.
        with cluster.client(outbox=tmp_path / "outbox.sqlite3") as shared:
            shared.login(me(stranger), PASSWORD)
            assert isinstance(refusal(lambda: shared.transaction(entry.txn_id)), NotFound)
        device.sync()
        assert device.transaction(entry.txn_id).state == "COMMITTED"
        assert device.transaction(offline.txn_id).state == "COMMITTED"
    assert money(payee) == (9_00, 9_00)
