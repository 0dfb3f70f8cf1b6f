"""Collect requests end to end: a payee asks, the payer approves (a payment whose id is the request's) or declines.

One cluster for the module (the gateway on json, bank_a on sqlite, bank_b on
json). Requests go to a payer at bank_a from a requester at bank_b unless a
test says otherwise. The tests attack the rules the issue sets: only the payer approves or
declines; a declined, expired or failed request is closed; approving twice,
or from two devices at once, pays once; an approval racing a decline never
ends both paid and declined; requests are durable at the gateway and survive
a kill -9 of it.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from conftest import PASSWORD, me, money, refusal, unique_name
from miniupi.client.api import AsyncClient, Client, CollectRequest, Session
from miniupi.errors import (
    AlreadyExists,
    InsufficientFunds,
    InvalidAmount,
    InvalidArgument,
    MiniupiError,
    NotFound,
    PermissionDenied,
    RequestClosed,
    TooManyRequests,
    UnknownAccount,
    UnknownBank,
)
from miniupi.nodes.collect import DEFAULT_EXPIRY_S, MAX_EXPIRY_S, MAX_NOTE, MAX_PENDING_PER_REQUESTER
from miniupi.ops.testing import LocalCluster
from upi_helpers import (
    assert_cluster_clean,
    every_node_running,
    gateway_listing,
    kill_and_restart,
    outcome,
    request_state,
    upi_violations,
    tiny_gateway_cache,
)

pytestmark = pytest.mark.timeout(180)

SPEC = {
    "cluster": {"name": "collect", "prepare_timeout_s": 2, "call_timeout_s": 2,
                "max_opening_deposit": "10000.00"},
    "gateway": {"storage": "json"},  # the other modules run it on sqlite: requests and limits survive both
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with tiny_gateway_cache(), LocalCluster(tmp_path_factory.mktemp("collect"), SPEC) as c:
        yield c


@pytest.fixture(autouse=True)
def every_node_up_afterwards(cluster: LocalCluster) -> Iterator[None]:
    yield
    every_node_running(cluster)


def asked(requester: Client, payer: Client, amount: int, **kwargs: object) -> CollectRequest:
    r = requester.request_money(me(payer), amount, **kwargs)  # type: ignore[arg-type]
    assert r.state == "PENDING", r
    return r


def state_of(requester: Client, r: CollectRequest) -> str:
    """The request's state as its requester reads it: asking again with the same id and details."""
    return requester.request_money(r.payer, r.amount, note=r.note, request_id=r.request_id).state


def second_device(cluster: LocalCluster, account: str) -> Session:
    """Another login of the same account: another session key, as a second phone would hold."""
    with cluster.client() as c:
        return c.login(account, PASSWORD)


# -- the happy path ------------------------------------------------------------------


def test_a_request_is_listed_to_both_and_approving_it_pays_once(cluster: LocalCluster,
                                                                new_user: Callable[..., Client]) -> None:
    payer, requester = new_user("bank_a", 50_00), new_user("bank_b", 1_00)
    before = time.time()

    r = requester.request_money(me(payer), 12_34, note="dinner 🍜")

    uuid.UUID(r.request_id)
    assert (r.payer, r.payee, r.amount, r.currency, r.note, r.state) == (me(payer), me(requester), 12_34, "INR",
                                                                         "dinner 🍜", "PENDING")
    assert before - 5 <= r.created_at <= time.time() + 5
    assert r.expires_at - r.created_at == pytest.approx(DEFAULT_EXPIRY_S, abs=1)
    assert [x.request_id for x in payer.requests()] == [r.request_id]
    assert [x.request_id for x in requester.requests()] == [r.request_id]

    result = payer.approve(r.request_id)

    assert (result.txn_id, result.state) == (r.request_id, "COMMITTED")
    assert money(payer) == (50_00 - 12_34,) * 2
    assert money(requester) == (1_00 + 12_34,) * 2
    assert state_of(requester, r) == "PAID"
    assert payer.requests() == [] and requester.requests() == []  # paid: no longer open
    t = requester.transaction(r.request_id)
    assert (t.payer, t.payee, t.amount, t.state, t.request_id) == (me(payer), me(requester), 12_34, "COMMITTED",
                                                                    r.request_id)
    [paid] = payer.history()
    assert (paid.txn_id, paid.delta, paid.request_id) == (r.request_id, -12_34, r.request_id)
    # Approving again answers the same and moves nothing.
    assert [payer.approve(r.request_id).state for _ in range(3)] == ["COMMITTED"] * 3
    assert money(payer) == (50_00 - 12_34,) * 2
    assert upi_violations(cluster) == []


def test_requests_lists_the_open_ones_to_and_from_me_oldest_first(new_user: Callable[..., Client]) -> None:
    me_, a, b = new_user("bank_a", 50_00), new_user("bank_b", 50_00), new_user("bank_a", 50_00)
    to_me = asked(a, me_, 1_00)
    from_me = asked(me_, b, 2_00)
    declined = asked(b, me_, 3_00)
    paid = asked(a, me_, 4_00)
    expiring = asked(me_, a, 5_00, expires_in_s=1)
    last = asked(b, me_, 6_00)
    me_.decline(declined.request_id)
    me_.approve(paid.request_id)
    time.sleep(1.2)

    assert [r.request_id for r in me_.requests()] == [to_me.request_id, from_me.request_id, last.request_id]
    assert [r.request_id for r in a.requests()] == [to_me.request_id]
    assert [r.request_id for r in b.requests()] == [from_me.request_id, last.request_id]
    assert state_of(me_, expiring) == "EXPIRED"


def test_the_same_request_id_returns_the_first_request_and_other_details_are_refused(
        new_user: Callable[..., Client]) -> None:
    payer, requester, other = new_user("bank_a", 50_00), new_user("bank_b"), new_user("bank_a")
    r = asked(requester, payer, 7_00, note="rent")

    again = requester.request_money(me(payer), 7_00, note="rent", request_id=r.request_id)
    assert again == r  # the first one, with its own times

    for call in (lambda: requester.request_money(me(payer), 7_01, note="rent", request_id=r.request_id),
                 lambda: requester.request_money(me(payer), 7_00, note="Rent", request_id=r.request_id),
                 lambda: requester.request_money(me(other), 7_00, note="rent", request_id=r.request_id),
                 lambda: other.request_money(me(payer), 7_00, note="rent", request_id=r.request_id)):
        assert isinstance(refusal(call), AlreadyExists)
    assert [x.request_id for x in payer.requests()] == [r.request_id]


# -- refusals when asking -------------------------------------------------------------


def test_asking_is_refused_for_bad_input(cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payer, requester = new_user("bank_a", 50_00), new_user("bank_b")
    cases: list[tuple[Callable[[], object], type[MiniupiError]]] = [
        (lambda: requester.request_money(me(requester), 1_00), InvalidArgument),  # from myself
        (lambda: requester.request_money(f"{unique_name()}@bank_a", 1_00), UnknownAccount),
        (lambda: requester.request_money(f"{unique_name()}@bank_zz", 1_00), UnknownBank),
        (lambda: requester.request_money("nobank", 1_00), InvalidArgument),
        (lambda: requester.request_money(me(payer), 0), InvalidAmount),
        (lambda: requester.request_money(me(payer), -5_00), InvalidAmount),
        (lambda: requester.request_money(me(payer), cluster.config.max_balance + 1), InvalidAmount),
        (lambda: requester.request_money(me(payer), 1_00, note="x" * (MAX_NOTE + 1)), InvalidArgument),
        (lambda: requester.request_money(me(payer), 1_00, note="pay\nnow"), InvalidArgument),
        (lambda: requester.request_money(me(payer), 1_00, note="pay\u202enow"), InvalidArgument),  # bidi override
        (lambda: requester.request_money(me(payer), 1_00, note="a\u200bb"), InvalidArgument),  # zero width
        (lambda: requester.request_money(me(payer), 1_00, expires_in_s=MAX_EXPIRY_S + 1), InvalidArgument),
        (lambda: requester.request_money(me(payer), 1_00, request_id="not-a-uuid"), InvalidArgument),
        (lambda: requester.request_money(me(payer), 1_00, request_id=str(uuid.uuid4()).upper()), InvalidArgument),
    ]
    for call, expected in cases:
        e = refusal(call)
        assert type(e) is expected, (expected, e)
    with cluster.client("admin") as admin:
        assert isinstance(refusal(lambda: admin.request_money(me(payer), 1_00)), PermissionDenied)
        assert isinstance(refusal(lambda: admin.requests()), PermissionDenied)

    assert payer.requests() == [] and requester.requests() == []
    # The limits themselves are fine.
    longest = requester.request_money(me(payer), 1_00, note="n" * MAX_NOTE, expires_in_s=MAX_EXPIRY_S)
    assert longest.expires_at - longest.created_at == pytest.approx(MAX_EXPIRY_S, abs=1)


def test_a_request_id_cannot_be_a_payment_or_deposit_and_a_payment_cannot_take_a_request_id(
        cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payer, requester = new_user("bank_a", 50_00), new_user("bank_b", 50_00)
    r = asked(requester, payer, 5_00)
    payment = str(uuid.uuid4())
    assert payer.pay(me(requester), 1_00, txn_id=payment).state == "COMMITTED"
    with cluster.client("treasury") as treasury:
        deposit = treasury.deposit(me(requester), 1_00).txn_id
        assert isinstance(refusal(lambda: treasury.deposit(me(requester), 5_00, txn_id=r.request_id)), AlreadyExists)

    # Paying the request's id directly, even with its very details, would skip the request.
    assert isinstance(refusal(lambda: payer.pay(me(requester), 5_00, txn_id=r.request_id)), AlreadyExists)
    assert isinstance(refusal(lambda: requester.pay(me(payer), 5_00, txn_id=r.request_id)), AlreadyExists)
    for used in (payment, deposit):
        assert isinstance(refusal(lambda: requester.request_money(me(payer), 1_00, request_id=used)), AlreadyExists)
        assert isinstance(refusal(lambda: payer.approve(used)), NotFound)

    assert state_of(requester, r) == "PENDING"
    assert payer.approve(r.request_id).state == "COMMITTED"
    assert money(payer) == (44_00, 44_00)
    assert money(requester) == (57_00, 57_00)


def test_one_requester_may_have_only_so_many_pending_requests_even_asked_at_once(
        cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payer, requester = new_user("bank_a"), new_user("bank_b")
    extra = 5

    async def ask_all() -> list[object]:
        async with AsyncClient(cluster.config, session=requester.session) as c:
            return await asyncio.gather(*(c.request_money(me(payer), 1_00)
                                          for _ in range(MAX_PENDING_PER_REQUESTER + extra)),
                                        return_exceptions=True)

    answers = asyncio.run(ask_all())

    assert sum(isinstance(a, CollectRequest) for a in answers) == MAX_PENDING_PER_REQUESTER
    assert sum(isinstance(a, TooManyRequests) for a in answers) == extra, [a for a in answers
                                                                           if not isinstance(a, CollectRequest)]
    assert len(payer.requests()) == MAX_PENDING_PER_REQUESTER
    # Answering one frees a place.
    payer.decline(payer.requests()[0].request_id)
    asked(requester, payer, 1_00)
    assert isinstance(refusal(lambda: requester.request_money(me(payer), 1_00)), TooManyRequests)


# -- who may approve or decline, and when ------------------------------------------------


def test_only_the_payer_may_approve_or_decline_and_a_stranger_cannot_tell_the_request_exists(
        cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payer, requester, stranger = new_user("bank_a", 50_00), new_user("bank_b", 50_00), new_user("bank_a", 50_00)
    r = asked(requester, payer, 5_00)
    unknown = str(uuid.uuid4())

    for act in ("approve", "decline"):
        e = refusal(lambda: getattr(requester, act)(r.request_id))
        assert isinstance(e, PermissionDenied), (act, e)
        by_stranger = refusal(lambda: getattr(stranger, act)(r.request_id))
        of_nothing = refusal(lambda: getattr(stranger, act)(unknown))
        assert type(by_stranger) is NotFound and type(of_nothing) is NotFound, (by_stranger, of_nothing)
        assert by_stranger.message.replace(r.request_id, "ID") == of_nothing.message.replace(unknown, "ID")
        assert isinstance(refusal(lambda: getattr(payer, act)("not-a-uuid")), InvalidArgument)
    with cluster.client("admin") as admin:
        assert isinstance(refusal(lambda: admin.approve(r.request_id)), PermissionDenied)
        assert isinstance(refusal(lambda: admin.decline(r.request_id)), PermissionDenied)
    assert [x.request_id for x in stranger.requests()] == []

    assert state_of(requester, r) == "PENDING"
    assert money(payer) == (50_00, 50_00) and money(requester) == (50_00, 50_00)


def test_a_declined_request_cannot_be_approved(new_user: Callable[..., Client]) -> None:
    payer, requester = new_user("bank_a", 50_00), new_user("bank_b")
    r = asked(requester, payer, 5_00)

    declined = payer.decline(r.request_id)

    assert declined.state == "DECLINED" and declined.request_id == r.request_id
    assert payer.decline(r.request_id).state == "DECLINED"  # declining again changes nothing
    e = refusal(lambda: payer.approve(r.request_id))
    assert isinstance(e, RequestClosed) and "declined" in e.message, e
    assert isinstance(refusal(lambda: payer.pay(me(requester), 5_00, txn_id=r.request_id)), AlreadyExists)
    assert state_of(requester, r) == "DECLINED"
    assert money(payer) == (50_00, 50_00)
    assert isinstance(refusal(lambda: payer.transaction(r.request_id)), NotFound)  # no payment was made


def test_an_expired_request_can_be_neither_approved_nor_declined(new_user: Callable[..., Client]) -> None:
    payer, requester = new_user("bank_a", 50_00), new_user("bank_b")
    r = asked(requester, payer, 5_00, expires_in_s=1)
    time.sleep(1.2)

    e = refusal(lambda: payer.approve(r.request_id))
    assert isinstance(e, RequestClosed) and "expired" in e.message, e
    assert isinstance(refusal(lambda: payer.decline(r.request_id)), RequestClosed)
    assert state_of(requester, r) == "EXPIRED"
    assert payer.requests() == []
    assert money(payer) == (50_00, 50_00)


def test_an_approved_request_cannot_be_declined(new_user: Callable[..., Client]) -> None:
    payer, requester = new_user("bank_a", 50_00), new_user("bank_b")
    r = asked(requester, payer, 5_00)
    assert payer.approve(r.request_id).state == "COMMITTED"

    e = refusal(lambda: payer.decline(r.request_id))

    assert isinstance(e, RequestClosed) and "paid" in e.message, e
    assert state_of(requester, r) == "PAID"
    assert payer.approve(r.request_id).state == "COMMITTED"
    assert money(payer) == (45_00, 45_00) and money(requester) == (5_00, 5_00)


def test_an_approval_the_payer_cannot_afford_fails_and_approving_again_moves_nothing(
        cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payer, requester = new_user("bank_a", 3_00), new_user("bank_b", 1_00)
    r = asked(requester, payer, 5_00)

    first = refusal(lambda: payer.approve(r.request_id))

    assert isinstance(first, InsufficientFunds), first
    assert state_of(requester, r) == "FAILED"
    [failed] = [x for x in gateway_listing(cluster)[1].values() if x.request_id == r.request_id]
    assert failed.state == "FAILED"
    again = [refusal(lambda: payer.approve(r.request_id)) for _ in range(3)]
    assert all(type(e) is InsufficientFunds and e.message == first.message for e in again), again
    assert isinstance(refusal(lambda: payer.decline(r.request_id)), RequestClosed)
    t = payer.transaction(r.request_id)
    assert (t.state, t.refusal_reason, t.request_id) == ("ABORTED", "INSUFFICIENT_FUNDS", r.request_id)
    assert payer.requests() == []
    assert money(payer) == (3_00, 3_00) and money(requester) == (1_00, 1_00)
    assert upi_violations(cluster) == []


# -- races -----------------------------------------------------------------------------


def test_two_devices_approving_one_request_at_once_pay_once(cluster: LocalCluster,
                                                            new_user: Callable[..., Client]) -> None:
    rounds = 5
    payer, requester = new_user("bank_a", 100_00), new_user("bank_b", 0)
    phone, laptop = second_device(cluster, me(payer)), second_device(cluster, me(payer))
    assert phone.key != laptop.key
    requests = [asked(requester, payer, 3_00) for _ in range(rounds)]

    async def approve_twice(r: CollectRequest) -> list[object]:
        async with AsyncClient(cluster.config, session=phone) as a, AsyncClient(cluster.config, session=laptop) as b:
            return await asyncio.gather(a.approve(r.request_id), b.approve(r.request_id), return_exceptions=True)

    for r in requests:
        answers = asyncio.run(approve_twice(r))
        assert [(a.txn_id, a.state) for a in answers] == [(r.request_id, "COMMITTED")] * 2, answers  # type: ignore[union-attr]

    txns, _ = gateway_listing(cluster)
    for r in requests:
        assert [t.txn_id for t in txns.values() if t.request_id == r.request_id] == [r.request_id]
        assert state_of(requester, r) == "PAID"
    assert money(payer) == (100_00 - rounds * 3_00,) * 2
    assert money(requester) == (rounds * 3_00,) * 2
    assert len(payer.history()) == rounds
    assert_cluster_clean(cluster)


def test_approve_racing_decline_never_ends_both_paid_and_declined(cluster: LocalCluster,
                                                                  new_user: Callable[..., Client]) -> None:
    races = 10
    payer, requester = new_user("bank_a", 100_00), new_user("bank_b", 0)
    phone, laptop = second_device(cluster, me(payer)), second_device(cluster, me(payer))
    requests = [asked(requester, payer, 2_00) for _ in range(races)]

    async def race(a: AsyncClient, b: AsyncClient, r: CollectRequest, decline_first: bool) -> tuple[object, object]:
        approve, decline = a.approve(r.request_id), b.decline(r.request_id)
        if decline_first:  # the order the two are sent in alternates
            declined, approved = await asyncio.gather(decline, approve, return_exceptions=True)
        else:
            approved, declined = await asyncio.gather(approve, decline, return_exceptions=True)
        return approved, declined

    async def race_all() -> list[tuple[object, object]]:
        async with AsyncClient(cluster.config, session=phone) as a, AsyncClient(cluster.config, session=laptop) as b:
            return list(await asyncio.gather(*(race(a, b, r, i % 2 == 1) for i, r in enumerate(requests))))

    answers = asyncio.run(race_all())

    paid = 0
    for r, (approved, declined) in zip(requests, answers):
        state = state_of(requester, r)
        if outcome(approved) == "COMMITTED":
            assert isinstance(declined, RequestClosed), (approved, declined)
            assert state == "PAID"
            paid += 1
        else:
            assert isinstance(approved, RequestClosed), (approved, declined)
            assert isinstance(declined, CollectRequest) and declined.state == "DECLINED", declined
            assert state == "DECLINED"
            assert isinstance(refusal(lambda: payer.approve(r.request_id)), RequestClosed)
    assert money(payer) == (100_00 - paid * 2_00,) * 2
    assert money(requester) == (paid * 2_00,) * 2
    assert_cluster_clean(cluster)


# -- restarts --------------------------------------------------------------------------


def test_requests_survive_a_gateway_crash_and_a_pending_one_can_be_paid_after_it(
        cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payer, requester = new_user("bank_a", 20_00), new_user("bank_b", 0)
    pending = asked(requester, payer, 4_00, note="before the crash")
    declined = asked(requester, payer, 5_00)
    paid = asked(requester, payer, 6_00)
    failed = asked(requester, payer, 50_00)
    payer.decline(declined.request_id)
    payer.approve(paid.request_id)
    assert isinstance(refusal(lambda: payer.approve(failed.request_id)), InsufficientFunds)

    kill_and_restart(cluster, "gateway")

    assert [r.request_id for r in payer.requests()] == [pending.request_id]
    assert payer.requests()[0] == pending
    states = {r: request_state(cluster, r.request_id) for r in (pending, declined, paid, failed)}
    assert states == {pending: "PENDING", declined: "DECLINED", paid: "PAID", failed: "FAILED"}
    assert isinstance(refusal(lambda: payer.approve(declined.request_id)), RequestClosed)
    assert payer.approve(paid.request_id).state == "COMMITTED"
    assert isinstance(refusal(lambda: payer.approve(failed.request_id)), InsufficientFunds)
    assert payer.approve(pending.request_id).state == "COMMITTED"
    assert state_of(requester, pending) == "PAID"
    assert money(payer) == (20_00 - 6_00 - 4_00,) * 2
    assert money(requester) == (10_00, 10_00)
    assert_cluster_clean(cluster)
