"""Security, roles and sessions: who may call which gateway method, with which key.

DESIGN.md section 3: a customer sees and spends only their own account; the
`admin` certificate may read every account and run audits but not move money;
banks may ask for decisions. A wrong, made-up, expired or revoked key is
UNAUTHENTICATED; the wrong owner is PERMISSION_DENIED. tests/nodes/test_payments.py
covers the plain cases through the client library; these go to the wire with
raw metadata so the gateway itself is what is tested, and they check that no
refused call moved money or recorded a payment.
"""
from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from miniupi.contract.identity import SESSION_METADATA_KEY
from miniupi.ops.testing import LocalCluster
from miniupi.tls import channel_credentials
from miniupi.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

pytestmark = pytest.mark.timeout(120)

SPEC = {
    "cluster": {"name": "sec-roles", "prepare_timeout_s": 2, "call_timeout_s": 2},
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
}
SETUP = {
    "bank_a": {"alice": ("100.00", "alice-pw"), "carol": ("50.00", "carol-pw")},
    "bank_b": {"bob": ("10.00", "bob-pw")},
}
PASSWORDS = {"alice@bank_a": "alice-pw", "carol@bank_a": "carol-pw", "bob@bank_b": "bob-pw"}
TIMEOUT = 5.0
OK = grpc.StatusCode.OK
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("sec_roles"), SPEC, accounts=SETUP) as c:
        yield c


@dataclass(frozen=True)
class Answer:
    code: grpc.StatusCode
    reply: Any = None
    details: str = ""


def call(cluster: LocalCluster, method: str, request: Any, key: str | None = None,
         identity: str = "client") -> Answer:
    """One raw gateway call as `identity`, with `key` (if any) as the session metadata."""
    metadata = None if key is None else ((SESSION_METADATA_KEY, key),)
    with grpc.secure_channel(cluster.config.gateway.address,
                             channel_credentials(cluster.config.certs_dir, identity)) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        try:
            reply = getattr(stub, method)(request, timeout=TIMEOUT, metadata=metadata)
            if method == "ListTransactions":
                reply = [t for chunk in reply for t in chunk.txns]
            return Answer(OK, reply)
        except grpc.RpcError as e:
            return Answer(e.code(), None, e.details() or "")


def login(cluster: LocalCluster, account: str) -> str:
    answer = call(cluster, "Login", gateway_pb2.LoginRequest(account=account, password=PASSWORDS[account]))
    assert answer.code == OK, answer
    return answer.reply.session_key


def balance(cluster: LocalCluster, account: str) -> tuple[int, int]:
    """(balance, available), read as the admin."""
    answer = call(cluster, "Balance", gateway_pb2.BalanceRequest(account=account), identity="admin")
    assert answer.code == OK, answer
    return answer.reply.balance.minor, answer.reply.available.minor


def recorded_ids(cluster: LocalCluster) -> set[str]:
    answer = call(cluster, "ListTransactions", gateway_pb2.ListTransactionsRequest(), identity="admin")
    assert answer.code == OK, answer
    return {t.txn_id for t in answer.reply}


def pay_request(payer: str, payee: str, amount: int, txn_id: str | None = None) -> gateway_pb2.PayRequest:
    return gateway_pb2.PayRequest(txn_id=txn_id or str(uuid.uuid4()), from_account=payer, to_account=payee,
                                  amount=common_pb2.Money(minor=amount, currency="INR"))


def everyones_money(cluster: LocalCluster) -> dict[str, tuple[int, int]]:
    return {account: balance(cluster, account) for account in PASSWORDS}


# -- customers ------------------------------------------------------------------


@pytest.mark.parametrize("other", [
    "bob@bank_b",               # exists, at another bank
    "carol@bank_a",             # exists, at the same bank
    "nobody_here@bank_b",       # does not exist
    "someone@bank_zz",          # no such bank
    "not an address",
])
def test_customer_may_not_read_another_account_and_cannot_tell_whether_it_exists(
        cluster: LocalCluster, other: str) -> None:
    """The refusal is the same whoever is named, so it is no oracle for which accounts exist."""
    key = login(cluster, "alice@bank_a")
    answers = [call(cluster, "Balance", gateway_pb2.BalanceRequest(account=other), key),
               call(cluster, "History", gateway_pb2.HistoryRequest(account=other), key)]
    assert [a.code for a in answers] == [PERMISSION_DENIED, PERMISSION_DENIED], answers
    for answer in answers:
        assert "alice@bank_a" in answer.details  # says who may not, and nothing about the other account
        assert "10.00" not in answer.details and "1000" not in answer.details


def test_customer_session_opens_no_admin_or_node_method(cluster: LocalCluster) -> None:
    key = login(cluster, "alice@bank_a")
    assert call(cluster, "ListTransactions", gateway_pb2.ListTransactionsRequest(), key).code == PERMISSION_DENIED
    assert call(cluster, "GetDecision", gateway_pb2.GetDecisionRequest(txn_id=str(uuid.uuid4())),
                key).code == PERMISSION_DENIED


# What each certificate gets from each gateway method when it sends no session key.
NO_SESSION = {
    #             Balance           ListTransactions   GetDecision
    "client":  (UNAUTHENTICATED, UNAUTHENTICATED, PERMISSION_DENIED),
    "bank_a":  (UNAUTHENTICATED, UNAUTHENTICATED, OK),
    "bank_b":  (UNAUTHENTICATED, UNAUTHENTICATED, OK),
    "gateway": (UNAUTHENTICATED, UNAUTHENTICATED, PERMISSION_DENIED),
    "admin":   (OK, OK, OK),
}


@pytest.mark.parametrize("identity", list(NO_SESSION))
def test_what_each_certificate_may_call_without_a_session(cluster: LocalCluster, identity: str) -> None:
    """Banks may ask for decisions and nothing else; only the admin's certificate is a credential by itself."""
    codes = (
        call(cluster, "Balance", gateway_pb2.BalanceRequest(account="alice@bank_a"), identity=identity).code,
        call(cluster, "ListTransactions", gateway_pb2.ListTransactionsRequest(), identity=identity).code,
        call(cluster, "GetDecision", gateway_pb2.GetDecisionRequest(txn_id=str(uuid.uuid4())),
             identity=identity).code,
    )
    assert codes == NO_SESSION[identity]


# -- made-up, revoked and stolen keys ------------------------------------------------


def forged_keys(real: str, other: str) -> dict[str, str]:
    """Keys an attacker could try, built from a real key "ID.SECRET" and another user's key."""
    real_id, _, real_secret = real.partition(".")
    other_id, _, _ = other.partition(".")
    return {
        "empty": "",
        "random_uuid": str(uuid.uuid4()),
        "random_same_shape": f"{secrets.token_hex(16)}.{secrets.token_urlsafe(32)}",
        "id_alone": real_id,
        "id_and_dot": f"{real_id}.",
        "id_with_wrong_secret": f"{real_id}.{secrets.token_urlsafe(32)}",
        "id_with_secret_one_char_off": f"{real_id}.{real_secret[:-1]}{'A' if real_secret[-1] != 'A' else 'B'}",
        "secret_alone": f".{real_secret}",
        "secret_with_another_sessions_id": f"{other_id}.{real_secret}",
        "key_plus_a_char": real + "x",
        "key_less_a_char": real[:-1],
        "key_upper_case": real.upper(),
        "two_keys": f"{real}.{real}",
        "long": "k" * 4000,
    }


@pytest.mark.parametrize("shape", list(forged_keys("i.s", "j.t")))
def test_made_up_session_key_is_unauthenticated_and_leaves_the_real_session_alone(
        cluster: LocalCluster, shape: str) -> None:
    real = login(cluster, "alice@bank_a")
    other = login(cluster, "carol@bank_a")
    forged = forged_keys(real, other)[shape]
    assert forged != real
    before = everyones_money(cluster)
    txn_id = str(uuid.uuid4())

    answers = {
        "Balance": call(cluster, "Balance", gateway_pb2.BalanceRequest(), forged),
        "History": call(cluster, "History", gateway_pb2.HistoryRequest(), forged),
        "Pay": call(cluster, "Pay", pay_request("alice@bank_a", "bob@bank_b", 1_00, txn_id), forged),
        # A forged Logout naming the real session's id must not end the real session.
        "Logout": call(cluster, "Logout", gateway_pb2.LogoutRequest(), forged),
    }

    assert {m: a.code for m, a in answers.items()} == {m: UNAUTHENTICATED for m in answers}, answers
    assert everyones_money(cluster) == before
    assert txn_id not in recorded_ids(cluster)
    mine = call(cluster, "Balance", gateway_pb2.BalanceRequest(), real)
    assert mine.code == OK and mine.reply.account == "alice@bank_a"


def test_logout_revokes_that_key_only(cluster: LocalCluster) -> None:
    first, second = login(cluster, "alice@bank_a"), login(cluster, "alice@bank_a")
    assert first != second
    assert call(cluster, "Logout", gateway_pb2.LogoutRequest(), first).code == OK
    before = everyones_money(cluster)
    txn_id = str(uuid.uuid4())

    refused = [call(cluster, "Balance", gateway_pb2.BalanceRequest(), first),
               call(cluster, "Pay", pay_request("alice@bank_a", "bob@bank_b", 1_00, txn_id), first),
               call(cluster, "Logout", gateway_pb2.LogoutRequest(), first)]

    assert [a.code for a in refused] == [UNAUTHENTICATED] * 3, refused
    assert everyones_money(cluster) == before and txn_id not in recorded_ids(cluster)
    assert call(cluster, "Balance", gateway_pb2.BalanceRequest(), second).code == OK


def test_stolen_key_works_only_for_its_own_account_not_the_thiefs(cluster: LocalCluster) -> None:
    """Sending carol's key while naming alice's account as payer is PERMISSION_DENIED: the key decides
    who the caller is, the request never does."""
    carol = login(cluster, "carol@bank_a")
    before = everyones_money(cluster)
    txn_id = str(uuid.uuid4())
    answer = call(cluster, "Pay", pay_request("alice@bank_a", "carol@bank_a", 1_00, txn_id), carol)
    assert answer.code == PERMISSION_DENIED
    assert everyones_money(cluster) == before and txn_id not in recorded_ids(cluster)


# -- the admin ------------------------------------------------------------------


def test_admin_reads_any_accounts_balance_and_history(cluster: LocalCluster) -> None:
    key = login(cluster, "carol@bank_a")
    txn_id = str(uuid.uuid4())
    paid = call(cluster, "Pay", pay_request("carol@bank_a", "bob@bank_b", 2_00, txn_id), key)
    assert paid.code == OK and paid.reply.state == common_pb2.COMMITTED

    for account, delta in (("carol@bank_a", -2_00), ("bob@bank_b", 2_00)):
        read = call(cluster, "Balance", gateway_pb2.BalanceRequest(account=account), identity="admin")
        assert read.code == OK and read.reply.account == account
        history = call(cluster, "History", gateway_pb2.HistoryRequest(account=account), identity="admin")
        assert history.code == OK
        assert [(e.txn_id, e.delta_minor) for e in history.reply.entries if e.txn_id == txn_id] == [(txn_id, delta)]
    decision = call(cluster, "GetDecision", gateway_pb2.GetDecisionRequest(txn_id=txn_id), identity="admin")
    assert decision.reply.state == common_pb2.COMMITTED
    assert txn_id in recorded_ids(cluster)
    # The admin has no account of its own, so it must say which one it means.
    assert call(cluster, "Balance", gateway_pb2.BalanceRequest(), identity="admin").code == \
        grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("with_session", [False, True])
def test_admin_may_not_pay_even_holding_a_customers_session(cluster: LocalCluster, with_session: bool) -> None:
    """Reading is the admin's role; moving money is not, whatever key it carries along."""
    key = login(cluster, "alice@bank_a") if with_session else None
    before = everyones_money(cluster)
    attempts = [pay_request("alice@bank_a", "bob@bank_b", 1_00), pay_request("", "bob@bank_b", 1_00)]
    answers = [call(cluster, "Pay", request, key, identity="admin") for request in attempts]
    assert [a.code for a in answers] == [PERMISSION_DENIED] * 2, answers
    assert everyones_money(cluster) == before
    assert not {r.txn_id for r in attempts} & recorded_ids(cluster)


# -- a gateway restart -----------------------------------------------------------


def test_gateway_restart_keeps_live_sessions_and_a_logged_out_key_stays_refused(cluster: LocalCluster) -> None:
    live, out = login(cluster, "bob@bank_b"), login(cluster, "bob@bank_b")
    assert call(cluster, "Balance", gateway_pb2.BalanceRequest(), live).code == OK
    assert call(cluster, "Logout", gateway_pb2.LogoutRequest(), out).code == OK
    before = everyones_money(cluster)

    cluster.restart_node("gateway")

    txn_id = str(uuid.uuid4())
    refused = [call(cluster, "Balance", gateway_pb2.BalanceRequest(), out),
               call(cluster, "Pay", pay_request("bob@bank_b", "alice@bank_a", 1_00, txn_id), out)]
    assert [a.code for a in refused] == [UNAUTHENTICATED] * 2, refused
    assert "log in again" in refused[0].details
    assert everyones_money(cluster) == before and txn_id not in recorded_ids(cluster)
    again = call(cluster, "Balance", gateway_pb2.BalanceRequest(), live)  # the same key, no login
    assert again.code == OK and again.reply.balance.minor == before["bob@bank_b"][0]


# -- expiry ---------------------------------------------------------------------

IDLE_S, MAX_S = 1.5, 4.0


@pytest.fixture(scope="module")
def short_sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    spec = {**SPEC, "gateway": {"storage": "sqlite", "session_idle_s": IDLE_S, "session_max_s": MAX_S}}
    with LocalCluster(tmp_path_factory.mktemp("sec_sessions"), spec, accounts=SETUP) as c:
        yield c


def test_key_unused_for_longer_than_session_idle_s_expires(short_sessions: LocalCluster) -> None:
    cluster = short_sessions
    key = login(cluster, "alice@bank_a")
    assert call(cluster, "Balance", gateway_pb2.BalanceRequest(), key).code == OK
    before = everyones_money(cluster)

    time.sleep(IDLE_S + 0.5)

    expired = call(cluster, "Balance", gateway_pb2.BalanceRequest(), key)
    assert expired.code == UNAUTHENTICATED and "expired" in expired.details
    txn_id = str(uuid.uuid4())
    assert call(cluster, "Pay", pay_request("alice@bank_a", "bob@bank_b", 1_00, txn_id), key).code == UNAUTHENTICATED
    assert everyones_money(cluster) == before and txn_id not in recorded_ids(cluster)
    assert call(cluster, "Balance", gateway_pb2.BalanceRequest(), login(cluster, "alice@bank_a")).code == OK


def test_key_in_constant_use_still_expires_after_session_max_s(short_sessions: LocalCluster) -> None:
    cluster = short_sessions
    answer = call(cluster, "Login", gateway_pb2.LoginRequest(account="bob@bank_b", password="bob-pw"))
    key, expires_at = answer.reply.session_key, answer.reply.expires_at
    started = time.time()
    assert started - 1 <= expires_at - MAX_S <= started + 1  # the reply says when, truthfully

    last_ok = started
    while True:
        got = call(cluster, "Balance", gateway_pb2.BalanceRequest(), key)
        if got.code != OK:
            break
        last_ok = time.time()
        assert last_ok < expires_at + 1, "the key outlived session_max_s"
        time.sleep(0.3)

    assert got.code == UNAUTHENTICATED and "expired" in got.details
    assert last_ok - started > IDLE_S  # kept alive past the idle limit, so it was the absolute limit that ended it
    assert time.time() >= expires_at - 0.5
    assert call(cluster, "Balance", gateway_pb2.BalanceRequest(), login(cluster, "bob@bank_b")).code == OK
