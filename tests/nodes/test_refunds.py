"""Refunds end to end: a payment back from payee to payer through the same 2PC, never more than the original.

One cluster for the module (bank_a on sqlite, bank_b on json). Originals go
from a payer at bank_a to a payee at bank_b, so a refund goes bank_b -> bank_a.
The tests attack the rules the issue sets: only the payee refunds, only a
committed payment, never a refund; idempotent by the refund's own id; the sum
of committed refunds never exceeds the original, under twenty concurrent
requests, with a bank or the gateway killed among them, and across restarts.
"""
from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest

from conftest import PLUGIN_DIR, me, money, refusal, wait_for
from miniupi.client.api import AsyncClient, Client, RefundItem
from miniupi.errors import (
    AlreadyExists,
    InsufficientFunds,
    InvalidAmount,
    InvalidArgument,
    MiniupiError,
    NotFound,
    NotRefundable,
    PermissionDenied,
    RefundExceedsPayment,
    Unavailable,
)
from miniupi.ops.testing import LocalCluster
from miniupi.contract.identity import SESSION_METADATA_KEY
from miniupi.tls import dial
from miniupi.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from upi_helpers import (
    assert_cluster_clean,
    every_node_running,
    faults_on_pythonpath,
    gateway_listing,
    gateway_reaches_every_bank,
    kill_and_restart,
    outcome,
    until_final,
    wait_restarted,
    tiny_gateway_cache,
)

sys.path.insert(0, str(PLUGIN_DIR))  # the nodes load it from PYTHONPATH; the test arms it directly
import faults  # noqa: E402

pytestmark = pytest.mark.timeout(180)

TIMEOUT_S = 2
SPEC = {
    "cluster": {"name": "refunds", "prepare_timeout_s": TIMEOUT_S, "call_timeout_s": TIMEOUT_S,
                "max_opening_deposit": "10000.00"},
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
    "plugins": {"load": ["faults"]},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with faults_on_pythonpath(), tiny_gateway_cache(), LocalCluster(tmp_path_factory.mktemp("refunds"), SPEC) as c:
        yield c


@pytest.fixture(autouse=True)
def every_node_up_afterwards(cluster: LocalCluster) -> Iterator[None]:
    yield
    faults.disarm(cluster.config.data_dir)
    every_node_running(cluster)


def paid(payer: Client, payee: Client, amount: int) -> str:
    """A committed payment payer -> payee; its id."""
    txn_id = str(uuid.uuid4())
    assert payer.pay(me(payee), amount, txn_id=txn_id).state == "COMMITTED"
    return txn_id


def same_words(a: MiniupiError, a_id: str, b: MiniupiError, b_id: str) -> bool:
    """Two refusals that differ only by the id they name: nobody can tell one case from the other."""
    return (type(a), a.code, a.reason, a.message.replace(a_id, "ID")) == (type(b), b.code, b.reason,
                                                                             b.message.replace(b_id, "ID"))


# -- the happy paths ------------------------------------------------------------


def test_whole_refund_gives_the_money_back_and_both_sides_see_the_link(new_user: Callable[..., Client]) -> None:
    payer, payee = new_user("bank_a", 50_00), new_user("bank_b", 0)
    original = paid(payer, payee, 20_00)
    refund_id = str(uuid.uuid4())

    result = payee.refund(original, refund_id=refund_id)  # no amount: all that is left

    assert (result.txn_id, result.state) == (refund_id, "COMMITTED")
    assert money(payer) == (50_00, 50_00)
    assert money(payee) == (0, 0)
    for reader in (payer, payee):
        t = reader.transaction(original)
        assert (t.state, t.amount, t.refunded, t.refund_of) == ("COMMITTED", 20_00, 20_00, "")
        assert t.refunds == (RefundItem(refund_id, 20_00, "COMMITTED"),)
        r = reader.transaction(refund_id)
        assert (r.payer, r.payee, r.amount, r.state, r.refund_of, r.refunds) == (
            me(payee), me(payer), 20_00, "COMMITTED", original, ())
    got_back, paid_out = payer.history()
    assert (got_back.txn_id, got_back.delta, got_back.refund_of) == (refund_id, 20_00, original)
    assert (paid_out.txn_id, paid_out.delta, paid_out.refunds) == (original, -20_00, (refund_id,))
    gave_back, received = payee.history()
    assert (gave_back.txn_id, gave_back.delta, gave_back.refund_of) == (refund_id, -20_00, original)
    assert (received.txn_id, received.refunds) == (original, (refund_id,))


def test_partial_refunds_add_up_to_the_original_and_not_one_paisa_more(new_user: Callable[..., Client]) -> None:
    payer, payee = new_user("bank_a", 30_00), new_user("bank_b", 5_00)
    original = paid(payer, payee, 10_00)

    assert payee.refund(original, 2_50).state == "COMMITTED"
    assert payee.refund(original, 3_00).state == "COMMITTED"
    rest = payee.refund(original)  # no amount: the 4.50 left
    assert rest.state == "COMMITTED"
    assert payee.transaction(rest.txn_id).amount == 4_50

    over = refusal(lambda: payee.refund(original, 1))
    assert isinstance(over, RefundExceedsPayment) and over.code == "FAILED_PRECONDITION"
    assert "0.00 of 10.00" in over.message, over.message
    whole = refusal(lambda: payee.refund(original))
    assert isinstance(whole, RefundExceedsPayment) and "refunded in full" in whole.message
    t = payer.transaction(original)
    assert t.refunded == 10_00 and [r.amount for r in t.refunds] == [2_50, 3_00, 4_50]
    assert money(payer) == (30_00, 30_00)
    assert money(payee) == (5_00, 5_00)


def test_a_refund_over_the_payment_is_refused_whole_and_leaves_its_id_free(new_user: Callable[..., Client]) -> None:
    payer, payee = new_user("bank_a", 30_00), new_user("bank_b", 50_00)
    original = paid(payer, payee, 10_00)
    refund_id = str(uuid.uuid4())

    over = refusal(lambda: payee.refund(original, 10_01, refund_id=refund_id))

    assert isinstance(over, RefundExceedsPayment), over
    assert isinstance(refusal(lambda: payee.transaction(refund_id)), NotFound)  # nothing was recorded
    assert payee.transaction(original).refunds == ()
    assert money(payee) == (60_00, 60_00)
    # Refused before it was recorded, like any bad input: the id may be sent again with a good amount.
    assert payee.refund(original, 10_00, refund_id=refund_id).state == "COMMITTED"
    assert money(payer) == (30_00, 30_00)


def test_the_payment_of_a_collect_request_can_be_refunded_and_keeps_both_links(
        new_user: Callable[..., Client]) -> None:
    payer, requester = new_user("bank_a", 30_00), new_user("bank_b", 0)
    request_id = requester.request_money(me(payer), 8_00).request_id
    assert payer.approve(request_id).state == "COMMITTED"

    refund_id = requester.refund(request_id).txn_id

    t = payer.transaction(request_id)
    assert (t.request_id, t.refunded, [r.txn_id for r in t.refunds]) == (request_id, 8_00, [refund_id])
    r = payer.transaction(refund_id)
    assert (r.refund_of, r.request_id, r.amount) == (request_id, "", 8_00)
    assert payer.approve(request_id).state == "COMMITTED"  # approving again pays nothing more
    assert money(payer) == (30_00, 30_00)
    assert money(requester) == (0, 0)


# -- who may refund what ----------------------------------------------------------


def test_only_the_payee_may_refund_and_a_stranger_cannot_tell_the_payment_exists(
        cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payer, payee, stranger = new_user("bank_a", 30_00), new_user("bank_b", 0), new_user("bank_a", 30_00)
    original = paid(payer, payee, 10_00)
    unknown = str(uuid.uuid4())

    by_payer = refusal(lambda: payer.refund(original, 1_00))
    assert isinstance(by_payer, PermissionDenied), by_payer
    by_stranger = refusal(lambda: stranger.refund(original, 1_00))
    of_nothing = refusal(lambda: stranger.refund(unknown, 1_00))
    assert isinstance(by_stranger, NotFound) and type(by_stranger) is NotFound, by_stranger
    assert same_words(by_stranger, original, of_nothing, unknown), (by_stranger, of_nothing)
    # The payee asking about an unknown id hears the same words too.
    assert same_words(refusal(lambda: payee.refund(unknown, 1_00)), unknown, by_stranger, original)
    with cluster.client("admin") as admin:
        assert isinstance(refusal(lambda: admin.refund(original, 1_00)), PermissionDenied)

    assert payer.transaction(original).refunds == ()
    assert money(payer) == (20_00, 20_00)
    assert money(payee) == (10_00, 10_00)
    assert money(stranger) == (30_00, 30_00)


def test_a_refused_payment_cannot_be_refunded(new_user: Callable[..., Client]) -> None:
    payer, payee = new_user("bank_a", 1_00), new_user("bank_b", 50_00)
    txn_id = str(uuid.uuid4())
    assert isinstance(refusal(lambda: payer.pay(me(payee), 5_00, txn_id=txn_id)), InsufficientFunds)
    assert payee.transaction(txn_id).state == "ABORTED"

    for amount in (0, 1_00, 5_00):
        e = refusal(lambda: payee.refund(txn_id, amount))
        assert isinstance(e, NotRefundable) and "did not commit" in e.message, e

    assert money(payer) == (1_00, 1_00)
    assert money(payee) == (50_00, 50_00)


def test_an_aborted_payment_cannot_be_refunded(cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    """The payee's bank is down when it is paid: the prepare times out and the payment aborts."""
    payer, payee = new_user("bank_a", 20_00), new_user("bank_b", 50_00)
    txn_id = str(uuid.uuid4())
    cluster.stop_node("bank_b")
    try:
        aborted = refusal(lambda: payer.pay(me(payee), 5_00, txn_id=txn_id))
    finally:
        cluster.start_node("bank_b")
    gateway_reaches_every_bank(cluster)
    assert aborted.code == "ABORTED", aborted
    t = payee.transaction(txn_id)
    assert (t.state, t.refusal_code) == ("ABORTED", "ABORTED")

    e = refusal(lambda: payee.refund(txn_id, 5_00))
    assert isinstance(e, NotRefundable), e
    assert money(payer) == (20_00, 20_00)
    assert money(payee) == (50_00, 50_00)


def test_a_refund_cannot_be_refunded(new_user: Callable[..., Client]) -> None:
    payer, payee = new_user("bank_a", 30_00), new_user("bank_b", 0)
    original = paid(payer, payee, 10_00)
    refund_id = payee.refund(original, 4_00).txn_id

    # The refund's payee is the original payer: "refunding" it would pay the money out again.
    e = refusal(lambda: payer.refund(refund_id, 1_00))
    assert isinstance(e, NotRefundable) and "cannot be refunded" in e.message, e
    assert isinstance(refusal(lambda: payer.refund(refund_id)), NotRefundable)
    # Its payer is the refunder, who is not its payee.
    assert isinstance(refusal(lambda: payee.refund(refund_id, 1_00)), PermissionDenied)

    assert money(payer) == (24_00, 24_00)
    assert money(payee) == (6_00, 6_00)


# -- idempotency by the refund's own id ---------------------------------------------


def test_the_same_refund_id_gets_the_same_answer_and_refunds_once(new_user: Callable[..., Client]) -> None:
    payer, payee = new_user("bank_a", 30_00), new_user("bank_b", 0)
    original = paid(payer, payee, 10_00)
    first, rest = str(uuid.uuid4()), str(uuid.uuid4())

    answers = [payee.refund(original, 4_00, refund_id=first) for _ in range(3)]
    answers += [payee.refund(original, refund_id=rest) for _ in range(2)]  # the 6.00 left, then "the same"
    answers += [payee.refund(original, 6_00, refund_id=rest), payee.refund(original, refund_id=first)]

    assert [(a.txn_id, a.state) for a in answers] == [(first, "COMMITTED")] * 3 + [(rest, "COMMITTED")] * 3 + [
        (first, "COMMITTED")]
    assert isinstance(refusal(lambda: payee.refund(original, 5_00, refund_id=first)), AlreadyExists)
    t = payer.transaction(original)
    assert [(r.txn_id, r.amount, r.state) for r in t.refunds] == [(first, 4_00, "COMMITTED"),
                                                                 (rest, 6_00, "COMMITTED")]
    assert t.refunded == 10_00
    assert money(payer) == (30_00, 30_00)
    assert money(payee) == (0, 0)
    assert [i.txn_id for i in payer.history()].count(first) == 1


def test_a_refused_refund_repeated_gets_the_same_refusal(new_user: Callable[..., Client]) -> None:
    """The refunder spent the money: the refund aborts for lack of funds, and its id keeps that answer."""
    payer, payee, shop = new_user("bank_a", 30_00), new_user("bank_b", 0), new_user("bank_a", 0)
    original = paid(payer, payee, 10_00)
    paid(payee, shop, 8_00)
    refund_id = str(uuid.uuid4())

    answers = [refusal(lambda: payee.refund(original, 10_00, refund_id=refund_id)) for _ in range(3)]
    answers.append(refusal(lambda: payee.refund(original, refund_id=refund_id)))  # no amount: the same refund

    assert all(isinstance(e, InsufficientFunds) for e in answers), answers
    assert money(payee) == (2_00, 2_00)
    t = payer.transaction(original)
    assert t.refunds == (RefundItem(refund_id, 10_00, "ABORTED"),) and t.refunded == 0


def test_an_aborted_refund_frees_its_share_of_the_original(new_user: Callable[..., Client]) -> None:
    payer, payee, shop = new_user("bank_a", 30_00), new_user("bank_b", 0), new_user("bank_a", 20_00)
    original = paid(payer, payee, 10_00)
    paid(payee, shop, 8_00)
    assert isinstance(refusal(lambda: payee.refund(original, 10_00)), InsufficientFunds)

    paid(shop, payee, 8_00)  # the money is back
    assert payee.refund(original, 10_00).state == "COMMITTED"

    t = payer.transaction(original)
    assert [r.state for r in t.refunds] == ["ABORTED", "COMMITTED"] and t.refunded == 10_00
    assert isinstance(refusal(lambda: payee.refund(original, 1)), RefundExceedsPayment)
    assert money(payer) == (30_00, 30_00)


def test_a_refund_id_already_used_for_something_else_is_refused(cluster: LocalCluster,
                                                                 new_user: Callable[..., Client]) -> None:
    payer, payee, other = new_user("bank_a", 30_00), new_user("bank_b", 20_00), new_user("bank_a", 0)
    original = paid(payer, payee, 10_00)
    unrelated = paid(payee, other, 1_00)  # the refunder's own payment
    strangers = paid(other, payer, 50)  # a payment the refunder has no part in
    request = payee.request_money(me(payer), 3_00).request_id
    with cluster.client("treasury") as treasury:
        deposit = treasury.deposit(me(other), 1_00).txn_id

    for used in (original, unrelated, strangers, request, deposit):
        for amount in (0, 1_00, 10_00):
            e = refusal(lambda: payee.refund(original, amount, refund_id=used))
            assert isinstance(e, AlreadyExists), (used, amount, e)

    assert payer.transaction(original).refunds == ()
    assert money(payee) == (29_00, 29_00)
    assert money(payer) == (20_50, 20_50)


def test_malformed_refunds_are_refused(cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payer, payee = new_user("bank_a", 30_00), new_user("bank_b", 0)
    original = paid(payer, payee, 10_00)

    assert isinstance(refusal(lambda: payee.refund(original, -1_00)), InvalidAmount)
    assert isinstance(refusal(lambda: payee.refund(original, 1_00, refund_id="not-a-uuid")), InvalidArgument)
    assert isinstance(refusal(lambda: payee.refund(original.upper(), 1_00)), InvalidArgument)
    # What the library never sends: another currency, and a zero amount that names its currency.
    assert payee.session is not None
    with dial(cluster.config.certs_dir, "client", "gateway", cluster.config.gateway.address, aio=False) as ch:
        stub = gateway_pb2_grpc.GatewayStub(ch)
        for money_ in (common_pb2.Money(minor=1_00, currency="USD"), common_pb2.Money(minor=0, currency="INR")):
            with pytest.raises(grpc.RpcError) as raised:
                stub.Refund(gateway_pb2.RefundRequest(txn_id=str(uuid.uuid4()), original_txn_id=original,
                                                      amount=money_),
                            metadata=((SESSION_METADATA_KEY, payee.session.key),), timeout=5)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value  # type: ignore[attr-defined]
    assert payer.transaction(original).refunds == ()
    assert money(payee) == (10_00, 10_00)


# -- twenty at once ---------------------------------------------------------------


async def refund_storm(cluster: LocalCluster, refunder: Client, original: str, ids: list[str], amount: int,
                       kill: str = "", kill_after: int = 5, spread_s: float = 0.0) -> dict[str, object]:
    """Send one refund per id, all at once (or spread over `spread_s`), from one logged-in client;
    with `kill`, SIGKILL that node once `kill_after` have been answered. Returns each id's answer
    (a PayResult or the refusal)."""
    answers: dict[str, object] = {}
    async with AsyncClient(cluster.config, session=refunder.session) as c:
        async def one(i: int, refund_id: str) -> None:
            await asyncio.sleep(spread_s * i / len(ids))
            try:
                answers[refund_id] = await c.refund(original, amount, refund_id=refund_id)
            except MiniupiError as e:
                answers[refund_id] = e

        tasks = [asyncio.create_task(one(i, r)) for i, r in enumerate(ids)]
        if kill:
            deadline = time.monotonic() + 20
            while len(answers) < kill_after and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            assert len(answers) < len(ids), "every refund was answered before the kill: nothing was in flight"
            await asyncio.to_thread(cluster.kill_node, kill)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    return answers


def committed_refunds(cluster: LocalCluster, original: str) -> int:
    txns, _ = gateway_listing(cluster)
    return sum(t.amount for t in txns.values() if t.refund_of == original and t.state == "COMMITTED")


def test_twenty_concurrent_refunds_give_back_exactly_the_payment(cluster: LocalCluster,
                                                                   new_user: Callable[..., Client]) -> None:
    payer, payee = new_user("bank_a", 100_00), new_user("bank_b", 100_00)  # funds for every refund
    original = paid(payer, payee, 100_00)
    ids = [str(uuid.uuid4()) for _ in range(20)]

    answers = asyncio.run(refund_storm(cluster, payee, original, ids, 10_00))

    outcomes = [outcome(answers[r]) for r in ids]
    assert outcomes.count("COMMITTED") == 10, outcomes
    assert outcomes.count("RefundExceedsPayment") == 10, outcomes
    assert committed_refunds(cluster, original) == 100_00
    assert payer.transaction(original).refunded == 100_00
    assert money(payer) == (100_00, 100_00)
    assert money(payee) == (100_00, 100_00)
    # The refused ones left no trace; each committed one answers the same when repeated.
    for r in ids:
        again = until_final(lambda: payee.refund(original, 10_00, refund_id=r))
        assert outcome(again) == outcome(answers[r]), r
    assert money(payer) == (100_00, 100_00)
    assert_cluster_clean(cluster)


# A node killed among the refunds: by the test at a moment (SIGKILL while refunds are in flight), or by
# the fault plugin at a step of the sixth refund, so the crash surely lands inside one.
KILLS = {
    "refunders-bank-timed": ("bank_b", None),
    "refund-payees-bank-timed": ("bank_a", None),
    "gateway-timed": ("gateway", None),
    "refunders-bank-after_vote": ("bank_b", "after_vote"),
    "refund-payees-bank-after_vote": ("bank_a", "after_vote"),
    "gateway-before_decision": ("gateway", "before_decision"),
}


@pytest.mark.parametrize("kill", list(KILLS))
def test_twenty_concurrent_refunds_with_a_node_killed_midway_never_exceed_the_payment(
        cluster: LocalCluster, new_user: Callable[..., Client], kill: str) -> None:
    victim, point = KILLS[kill]
    payer, payee = new_user("bank_a", 100_00), new_user("bank_b", 100_00)
    original = paid(payer, payee, 100_00)
    ids = [str(uuid.uuid4()) for _ in range(20)]
    dead = cluster.supervisor.pid(victim)
    assert dead is not None
    if point:
        faults.arm(cluster.config.data_dir, {"node": victim, "point": point, "txn_id": ids[5], "action": "kill"})

    answers = asyncio.run(refund_storm(cluster, payee, original, ids, 10_00, kill="" if point else victim,
                                       spread_s=0.3))

    if point:
        assert faults.disarm(cluster.config.data_dir) == [], "the fault never fired"
    wait_restarted(cluster, victim, dead)
    gateway_reaches_every_bank(cluster)
    # The answers a crash left open are asked again with the same id until final.
    final = {r: until_final(lambda: payee.refund(original, 10_00, refund_id=r))
             if isinstance(a, Unavailable) else a for r, a in answers.items()}
    assert_cluster_clean(cluster)
    committed = committed_refunds(cluster, original)
    told_committed = [r for r in ids if outcome(final[r]) == "COMMITTED"]
    assert committed <= 100_00
    assert committed == 10_00 * len(told_committed), {r: outcome(a) for r, a in final.items()}
    if point:
        assert outcome(final[ids[5]]) == "Aborted", final[ids[5]]  # it died before its decision
    assert money(payer) == (committed, committed)
    assert money(payee) == (200_00 - committed, 200_00 - committed)
    assert wait_for("the gateway to report the committed refunds",
                    lambda: payer.transaction(original).refunded == committed, timeout_s=10)

    # Across a restart of the gateway the ceiling holds: the sums are rebuilt from its store.
    kill_and_restart(cluster, "gateway")
    left = 100_00 - committed
    assert payer.transaction(original).refunded == committed
    assert isinstance(refusal(lambda: payee.refund(original, left + 1)), RefundExceedsPayment)
    if left:
        assert payee.refund(original).state == "COMMITTED"  # exactly what is left
    assert isinstance(refusal(lambda: payee.refund(original, 1)), RefundExceedsPayment)
    assert isinstance(refusal(lambda: payee.refund(original)), RefundExceedsPayment)
    assert money(payer) == (100_00, 100_00)
    assert money(payee) == (100_00, 100_00)
    assert_cluster_clean(cluster)


# -- restarts -----------------------------------------------------------------------


def test_refund_links_and_sums_survive_a_gateway_crash(cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payer, payee = new_user("bank_a", 30_00), new_user("bank_b", 0)
    original = paid(payer, payee, 10_00)
    first = payee.refund(original, 3_00).txn_id
    second = payee.refund(original, 2_00).txn_id

    kill_and_restart(cluster, "gateway")

    t = payer.transaction(original)
    assert [(r.txn_id, r.amount, r.state) for r in t.refunds] == [(first, 3_00, "COMMITTED"),
                                                                 (second, 2_00, "COMMITTED")]
    assert t.refunded == 5_00
    assert payee.transaction(first).refund_of == original
    [_, _, paid_out] = payer.history()
    assert paid_out.txn_id == original and set(paid_out.refunds) == {first, second}
    assert payee.refund(original, 3_00, refund_id=first).state == "COMMITTED"  # the same, nothing more
    assert isinstance(refusal(lambda: payee.refund(original, 5_01)), RefundExceedsPayment)
    assert payee.refund(original).state == "COMMITTED"
    assert money(payer) == (30_00, 30_00)
    assert money(payee) == (0, 0)
