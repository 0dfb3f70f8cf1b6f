"""Payments end to end: client -> gateway -> banks, over mTLS, with 2PC.

One cluster for the module (bank_a on sqlite, bank_b on json); every test
opens its own accounts, so the tests do not depend on each other's order.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest

from miniupi.contract.identity import SESSION_METADATA_KEY
from miniupi.client.api import AsyncClient, Client, HistoryItem, Session
from miniupi.errors import (
    AlreadyExists,
    FailedPrecondition,
    InsufficientFunds,
    InvalidAmount,
    InvalidArgument,
    MiniupiError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    UnknownAccount,
    UnknownBank,
)
from miniupi.ops.testing import LocalCluster
from miniupi.tls import channel_credentials
from miniupi.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from conftest import PASSWORD, me, money, unique_name

pytestmark = pytest.mark.timeout(120)

SPEC = {
    "cluster": {"name": "payments", "prepare_timeout_s": 3, "call_timeout_s": 3,
                "max_opening_deposit": "10000.00"},  # Register opens with deposits here
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("payments"), SPEC) as c:
        yield c


def assert_insufficient_funds(error: MiniupiError) -> None:
    assert isinstance(error, FailedPrecondition), type(error)
    assert error.code == "FAILED_PRECONDITION"
    assert "insufficient funds" in error.message


# -- payments that go through ------------------------------------------------


@pytest.mark.parametrize(("payer_bank", "payee_bank"), [
    ("bank_a", "bank_b"),  # sqlite -> json
    ("bank_b", "bank_a"),  # json -> sqlite
    ("bank_a", "bank_a"),  # within one sqlite bank
    ("bank_b", "bank_b"),  # within one json bank
])
def test_payment_moves_exact_amount_and_shows_in_both_histories(new_user: Callable[..., Client], payer_bank: str,
                                                                payee_bank: str) -> None:
    payer = new_user(payer_bank, 100_00)
    payee = new_user(payee_bank, 7_00)
    txn_id = str(uuid.uuid4())
    before = time.time()

    result = payer.pay(me(payee), 12_34, txn_id=txn_id)

    assert (result.txn_id, result.state) == (txn_id, "COMMITTED")
    assert money(payer) == (100_00 - 12_34, 100_00 - 12_34)
    assert money(payee) == (7_00 + 12_34, 7_00 + 12_34)
    [paid] = payer.history()
    [received] = payee.history()
    assert (paid.txn_id, paid.counterparty, paid.delta, paid.currency) == (txn_id, me(payee), -12_34, "INR")
    assert (received.txn_id, received.counterparty, received.delta, received.currency) == (txn_id, me(payer), 12_34, "INR")
    assert before - 5 <= paid.applied_at <= time.time() + 5
    assert before - 5 <= received.applied_at <= time.time() + 5


def test_history_lists_several_payments_newest_first_with_signed_deltas(new_user: Callable[..., Client]) -> None:
    alice = new_user("bank_a", 50_00)
    bob = new_user("bank_b", 50_00)
    t1, t2, t3 = (str(uuid.uuid4()) for _ in range(3))
    alice.pay(me(bob), 1_00, txn_id=t1)
    bob.pay(me(alice), 2_50, txn_id=t2)
    alice.pay(me(bob), 3_00, txn_id=t3)

    def rows(items: list[HistoryItem]) -> list[tuple[str, str, int]]:
        return [(i.txn_id, i.counterparty, i.delta) for i in items]

    assert rows(alice.history()) == [(t3, me(bob), -3_00), (t2, me(bob), 2_50), (t1, me(bob), -1_00)]
    assert rows(bob.history()) == [(t3, me(alice), 3_00), (t2, me(alice), -2_50), (t1, me(alice), 1_00)]
    assert rows(alice.history(limit=1)) == [(t3, me(bob), -3_00)]
    assert money(alice) == (50_00 - 1_00 + 2_50 - 3_00,) * 2
    assert money(bob) == (50_00 + 1_00 - 2_50 + 3_00,) * 2


# -- idempotency ---------------------------------------------------------------


def test_repeated_id_returns_first_result_and_moves_no_money(new_user: Callable[..., Client]) -> None:
    payer = new_user("bank_a", 20_00)
    payee = new_user("bank_b", 0)
    txn_id = str(uuid.uuid4())
    first = payer.pay(me(payee), 5_00, txn_id=txn_id)

    again = [payer.pay(me(payee), 5_00, txn_id=txn_id) for _ in range(3)]

    assert first.state == "COMMITTED"
    assert all((r.txn_id, r.state) == (txn_id, "COMMITTED") for r in again)
    assert money(payer) == (15_00, 15_00)
    assert money(payee) == (5_00, 5_00)
    assert [i.txn_id for i in payer.history()] == [txn_id]
    assert [i.txn_id for i in payee.history()] == [txn_id]


def test_same_id_sent_concurrently_runs_once(cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payer = new_user("bank_a", 20_00)
    payee = new_user("bank_b", 0)
    txn_id = str(uuid.uuid4())
    session = payer.session

    async def send_all() -> list[object]:
        async with AsyncClient(cluster.config, session=session) as c:
            return await asyncio.gather(*(c.pay(me(payee), 4_00, txn_id=txn_id) for _ in range(8)),
                                        return_exceptions=True)

    results = asyncio.run(send_all())

    assert [getattr(r, "state", r) for r in results] == ["COMMITTED"] * 8
    assert money(payer) == (16_00, 16_00)
    assert money(payee) == (4_00, 4_00)
    assert [i.txn_id for i in payee.history()] == [txn_id]


@pytest.mark.parametrize("change", ["amount", "payee"])
def test_reused_id_for_another_payment_is_refused_and_moves_no_money(new_user: Callable[..., Client],
                                                                     change: str) -> None:
    payer = new_user("bank_a", 20_00)
    payee = new_user("bank_b", 0)
    other = new_user("bank_b", 0)
    txn_id = str(uuid.uuid4())
    payer.pay(me(payee), 5_00, txn_id=txn_id)

    with pytest.raises(AlreadyExists):
        if change == "amount":
            payer.pay(me(payee), 6_00, txn_id=txn_id)
        else:
            payer.pay(me(other), 5_00, txn_id=txn_id)

    assert money(payer) == (15_00, 15_00)
    assert money(payee) == (5_00, 5_00)
    assert money(other) == (0, 0)
    assert [i.txn_id for i in payer.history()] == [txn_id]
    assert other.history() == []


def test_reused_id_by_another_payer_is_refused_and_moves_no_money(new_user: Callable[..., Client]) -> None:
    first = new_user("bank_a", 20_00)
    second = new_user("bank_a", 20_00)
    payee = new_user("bank_b", 0)
    txn_id = str(uuid.uuid4())
    first.pay(me(payee), 5_00, txn_id=txn_id)

    with pytest.raises(AlreadyExists):
        second.pay(me(payee), 5_00, txn_id=txn_id)

    assert money(second) == (20_00, 20_00)
    assert money(payee) == (5_00, 5_00)
    assert second.history() == []


def test_repeated_id_of_refused_payment_gets_same_refusal_even_after_funds_arrive(
        new_user: Callable[..., Client]) -> None:
    payer = new_user("bank_a", 2_00)
    payee = new_user("bank_b", 0)
    donor = new_user("bank_b", 100_00)
    txn_id = str(uuid.uuid4())
    with pytest.raises(MiniupiError) as first:
        payer.pay(me(payee), 5_00, txn_id=txn_id)
    assert_insufficient_funds(first.value)

    with pytest.raises(MiniupiError) as second:
        payer.pay(me(payee), 5_00, txn_id=txn_id)
    assert_insufficient_funds(second.value)
    assert type(second.value) is type(first.value)
    assert second.value.message == first.value.message

    # The refusal is final for this id: money that arrives later does not revive it.
    donor.pay(me(payer), 10_00)
    with pytest.raises(MiniupiError) as third:
        payer.pay(me(payee), 5_00, txn_id=txn_id)
    assert_insufficient_funds(third.value)
    assert money(payer) == (12_00, 12_00)
    assert money(payee) == (0, 0)
    assert payee.history() == []


# -- refusals ------------------------------------------------------------------


def test_insufficient_funds_is_raised_as_InsufficientFunds(new_user: Callable[..., Client]) -> None:
    """The client library turns statuses back into the domain's classes (errors.py)."""
    payer = new_user("bank_a", 1_00)
    payee = new_user("bank_b", 0)
    with pytest.raises(InsufficientFunds, match="insufficient funds"):
        payer.pay(me(payee), 2_00)


BAD_PAYMENTS = {
    # name: (how to build the payee address from the real payee, amount, txn id or None, expected error)
    "insufficient_funds": (lambda payee, payer: payee, 10_01, None, InsufficientFunds),
    "unknown_payee_account": (lambda payee, payer: f"{unique_name('nobody')}@{payee.split('@')[1]}", 1_00, None,
                              UnknownAccount),
    "unknown_bank": (lambda payee, payer: f"{payee.split('@')[0]}@bank_zz", 1_00, None, UnknownBank),
    "zero_amount": (lambda payee, payer: payee, 0, None, InvalidAmount),
    "negative_amount": (lambda payee, payer: payee, -5_00, None, InvalidAmount),
    "malformed_txn_id": (lambda payee, payer: payee, 1_00, "not-a-uuid", InvalidArgument),
    "upper_case_txn_id": (lambda payee, payer: payee, 1_00, str(uuid.uuid4()).upper(), InvalidArgument),
    "timestamp_txn_id": (lambda payee, payer: payee, 1_00, str(int(time.time())), InvalidArgument),
    "pay_yourself": (lambda payee, payer: payer, 1_00, None, InvalidArgument),
    "malformed_payee_address": (lambda payee, payer: "no-at-sign", 1_00, None, InvalidArgument),
}


@pytest.mark.parametrize("payee_bank", ["bank_a", "bank_b"])
@pytest.mark.parametrize("case", list(BAD_PAYMENTS))
def test_bad_payment_gets_clear_error_and_changes_no_balance(new_user: Callable[..., Client], case: str,
                                                             payee_bank: str) -> None:
    make_to, amount, txn_id, expected = BAD_PAYMENTS[case]
    payer = new_user("bank_a", 10_00)
    payee = new_user(payee_bank, 3_00)
    to = make_to(me(payee), me(payer))

    with pytest.raises(MiniupiError) as refused:
        payer.pay(to, amount, txn_id=txn_id)

    assert type(refused.value) is expected, refused.value
    assert refused.value.message and refused.value.code == expected.code and refused.value.reason == expected.reason
    if case == "insufficient_funds":
        assert_insufficient_funds(refused.value)
    assert money(payer) == (10_00, 10_00)  # available == balance: no hold left behind
    assert money(payee) == (3_00, 3_00)
    assert payer.history() == [] and payee.history() == []
    # The account still works: the refusal left nothing stuck.
    assert payer.pay(me(payee), 10_00).state == "COMMITTED"
    assert money(payer) == (0, 0) and money(payee) == (13_00, 13_00)


# -- concurrency ---------------------------------------------------------------


@pytest.mark.parametrize(("payer_bank", "payee_bank"), [("bank_a", "bank_b"), ("bank_b", "bank_a"),
                                                        ("bank_b", "bank_b")])
def test_concurrent_payments_beyond_balance_commit_exactly_what_it_covers(
        cluster: LocalCluster, new_user: Callable[..., Client], payer_bank: str, payee_bank: str) -> None:
    initial, amount, n = 10_00, 3_00, 20
    k = initial // amount  # 3
    payer = new_user(payer_bank, initial)
    payee = new_user(payee_bank, 0)
    session, to = payer.session, me(payee)

    async def send_all() -> list[object]:
        # The client is made inside the running loop, as grpc.aio requires.
        async with AsyncClient(cluster.config, session=session) as c:
            return await asyncio.gather(*(c.pay(to, amount) for _ in range(n)), return_exceptions=True)

    results = asyncio.run(send_all())

    committed = [r for r in results if getattr(r, "state", None) == "COMMITTED"]
    refused = [r for r in results if isinstance(r, MiniupiError)]
    assert len(committed) == k, results
    assert len(refused) == n - k, results
    for error in refused:
        assert_insufficient_funds(error)
    assert len({r.txn_id for r in committed}) == k
    assert money(payer) == (initial - k * amount, initial - k * amount)
    assert money(payee) == (k * amount, k * amount)
    assert sorted(i.txn_id for i in payee.history()) == sorted(r.txn_id for r in committed)
    assert all(i.delta == -amount for i in payer.history())


def test_concurrent_payments_between_two_accounts_conserve_money(cluster: LocalCluster,
                                                                 new_user: Callable[..., Client]) -> None:
    a = new_user("bank_a", 5_00)
    b = new_user("bank_b", 5_00)

    async def ping_pong() -> list[object]:
        async with AsyncClient(cluster.config, session=a.session) as ca, \
                AsyncClient(cluster.config, session=b.session) as cb:
            calls = [ca.pay(me(b), 1_00) for _ in range(15)] + [cb.pay(me(a), 1_00) for _ in range(15)]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(ping_pong())

    assert all(getattr(r, "state", None) == "COMMITTED" or isinstance(r, FailedPrecondition) for r in results), results
    a_paid = sum(1 for r in results[:15] if getattr(r, "state", None) == "COMMITTED")
    b_paid = sum(1 for r in results[15:] if getattr(r, "state", None) == "COMMITTED")
    assert money(a) == (5_00 - a_paid * 1_00 + b_paid * 1_00,) * 2
    assert money(b) == (5_00 + a_paid * 1_00 - b_paid * 1_00,) * 2
    assert money(a)[0] + money(b)[0] == 10_00
    assert money(a)[0] >= 0 and money(b)[0] >= 0


# -- who may do what ------------------------------------------------------------


def test_paying_from_another_account_is_permission_denied(new_user: Callable[..., Client]) -> None:
    mallory = new_user("bank_a", 10_00)
    victim = new_user("bank_b", 50_00)

    with pytest.raises(PermissionDenied):
        mallory.pay(me(mallory), 10_00, from_account=me(victim))
    with pytest.raises(PermissionDenied):
        mallory.pay(me(victim), 1_00, from_account=me(victim))

    assert money(victim) == (50_00, 50_00)
    assert money(mallory) == (10_00, 10_00)


def test_reading_another_account_is_permission_denied(new_user: Callable[..., Client]) -> None:
    mallory = new_user("bank_a", 0)
    victim = new_user("bank_b", 50_00)
    with pytest.raises(PermissionDenied):
        mallory.balance(me(victim))
    with pytest.raises(PermissionDenied):
        mallory.history(me(victim))
    # Naming one's own account explicitly is fine.
    assert mallory.balance(me(mallory)).balance == 0


def test_calls_without_session_are_unauthenticated(cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payee = new_user("bank_b", 0)
    with cluster.client() as anonymous:
        for call in (anonymous.balance, anonymous.history, lambda: anonymous.pay(me(payee), 1_00)):
            with pytest.raises(Unauthenticated):
                call()

    # The gateway itself refuses, not only the client library: raw calls with no session key.
    with grpc.secure_channel(cluster.config.gateway.address,
                             channel_credentials(cluster.config.certs_dir, "client")) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        requests = [
            (stub.Balance, gateway_pb2.BalanceRequest(account=me(payee))),
            (stub.History, gateway_pb2.HistoryRequest(account=me(payee))),
            (stub.Pay, gateway_pb2.PayRequest(txn_id=str(uuid.uuid4()), from_account=me(payee),
                                              to_account="x@bank_a",
                                              amount=common_pb2.Money(minor=1, currency="INR"))),
        ]
        for method, request in requests:
            with pytest.raises(grpc.RpcError) as refused:
                method(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as forged:
                method(request, timeout=10, metadata=((SESSION_METADATA_KEY, "forged-key"),))
            assert forged.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_made_up_session_key_is_unauthenticated(cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    victim = new_user("bank_a", 10_00)
    payee = new_user("bank_b", 0)
    forged = Session(me(victim), "A" * 43, time.time() + 3600)
    with cluster.client(session=forged) as c:
        with pytest.raises(Unauthenticated):
            c.balance()
        with pytest.raises(Unauthenticated):
            c.pay(me(payee), 1_00)
    assert money(victim) == (10_00, 10_00)


def test_old_session_key_is_refused_after_logout(cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    user = new_user("bank_a", 10_00)
    payee = new_user("bank_b", 0)
    old = user.session
    user.logout()
    assert user.session is None

    with cluster.client(session=old) as replay:
        with pytest.raises(Unauthenticated):
            replay.balance()
        with pytest.raises(Unauthenticated):
            replay.pay(me(payee), 1_00)
    assert money(payee) == (0, 0)
    # Logging in again gives a new, working key.
    assert old is not None
    session = user.login(old.account, PASSWORD)
    assert session.key != old.key
    assert money(user) == (10_00, 10_00)


def test_wrong_password_or_unknown_account_is_unauthenticated(cluster: LocalCluster,
                                                              new_user: Callable[..., Client]) -> None:
    user = new_user("bank_b", 0)
    with cluster.client() as c:
        with pytest.raises(Unauthenticated):
            c.login(me(user), PASSWORD + "x")
        with pytest.raises(Unauthenticated):
            c.login(me(user), "")
        with pytest.raises(Unauthenticated):
            c.login(f"{unique_name('ghost')}@bank_b", PASSWORD)
        assert c.session is None


def test_registering_an_existing_account_is_already_exists_and_keeps_it(cluster: LocalCluster,
                                                                        new_user: Callable[..., Client]) -> None:
    user = new_user("bank_a", 4_00)
    with cluster.client() as c:
        with pytest.raises(AlreadyExists):
            c.register(me(user), "another-password", 999_00)
        with pytest.raises(Unauthenticated):  # the password was not replaced
            c.login(me(user), "another-password")
    assert money(user) == (4_00, 4_00)  # nor the balance


@pytest.mark.parametrize(("account", "initial", "expected"), [
    ("Bad Name@bank_a", 0, InvalidArgument),
    ("no_bank", 0, InvalidArgument),
    ("someone@bank_zz", 0, NotFound),
    ("negative@bank_a", -1_00, InvalidArgument),
])
def test_bad_registration_is_refused_clearly(cluster: LocalCluster, account: str, initial: int,
                                             expected: type[MiniupiError]) -> None:
    if account.startswith("negative"):
        account = f"{unique_name()}@bank_a"
    with cluster.client() as c:
        with pytest.raises(expected):
            c.register(account, PASSWORD, initial)
        if expected is not NotFound and "@" in account and account.islower():
            with pytest.raises(Unauthenticated):  # nothing was opened
                c.login(account, PASSWORD)
