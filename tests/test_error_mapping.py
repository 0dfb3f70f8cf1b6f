"""Refusals end to end: every kind leaves a running node as a status code AND a reason, and comes back as its class.

For each kind of refusal, the raw answer is read from a plain gRPC channel
(the code, and the `google.rpc.ErrorInfo` reason parsed with grpc_status,
as any other language's client would), and the client library must raise
the matching class of miniupi/errors.py. Nothing here matches message text.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from miniupi.client.api import Client, Session, is_transport_failure
from miniupi.contract.identity import SESSION_METADATA_KEY
from miniupi.errors import (
    DOMAIN,
    SENT_BY_NODES,
    AccountExists,
    AccountLocked,
    Aborted,
    AlreadyExists,
    BadCredentials,
    BankUnavailable,
    InsufficientFunds,
    InvalidAmount,
    MiniupiError,
    NoAnswer,
    PermissionDenied,
    SessionExpired,
    UnknownAccount,
    UnknownBank,
)
from miniupi.ops.testing import LocalCluster
from miniupi.tls import channel_credentials
from miniupi.v1 import bank_pb2, common_pb2, gateway_pb2


pytestmark = pytest.mark.timeout(120)

ATTEMPTS = 3
SPEC = {
    "cluster": {"name": "errors", "prepare_timeout_s": 2, "call_timeout_s": 2,
                "login_attempts": ATTEMPTS, "login_lockout_s": 600},
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
}
SETUP = {
    "bank_a": {"alice": ("10.00", "alice-pw"), "dave": ("1.00", "dave-pw"), "erin": ("1.00", "erin-pw")},
    "bank_b": {"bob": ("5.00", "bob-pw")},
}
ALICE, BOB = "alice@bank_a", "bob@bank_b"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("errors"), SPEC, accounts=SETUP) as c:
        yield c


@dataclass(frozen=True)
class Refused:
    code: grpc.StatusCode
    reason: str | None  # None: the status carried no miniupi ErrorInfo


def refused(error: grpc.RpcError) -> Refused:
    status = rpc_status.from_call(error)
    if status is None:
        return Refused(error.code(), None)
    infos = []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            infos.append(info)
    assert [i.domain for i in infos] == [DOMAIN], status
    return Refused(error.code(), infos[0].reason)


def raw(cluster: LocalCluster, method: str, request: Message | bytes, key: str | None = None,
        identity: str = "client", node: str = "gateway", stream: bool = False) -> Refused:
    """One call on a plain channel, bytes in and out; it must be refused."""
    service = "Gateway" if node == "gateway" else "Bank"
    data = request if isinstance(request, bytes) else request.SerializeToString()
    metadata = None if key is None else ((SESSION_METADATA_KEY, key),)
    with grpc.secure_channel(cluster.config.node(node).address,
                             channel_credentials(cluster.config.certs_dir, identity)) as channel:
        path = f"/miniupi.v1.{service}/{method}"
        with pytest.raises(grpc.RpcError) as failed:
            if stream:
                list(channel.unary_stream(path)(data, timeout=10, metadata=metadata))
            else:
                channel.unary_unary(path)(data, timeout=10, metadata=metadata)
    return refused(failed.value)


def key_of(cluster: LocalCluster, account: str, password: str) -> str:
    with cluster.client() as c:
        return c.login(account, password).key


def pay_request(to: str, minor: int, txn_id: str | None = None, payer: str = ALICE) -> gateway_pb2.PayRequest:
    return gateway_pb2.PayRequest(txn_id=txn_id or str(uuid.uuid4()), from_account=payer, to_account=to,
                                  amount=common_pb2.Money(minor=minor, currency="INR"))


def library_raises(cluster: LocalCluster, expected: type[MiniupiError], act: Callable[[Client], Any],
                   login: tuple[str, str] | None = (ALICE, "alice-pw")) -> MiniupiError:
    with cluster.client() as client:
        if login is not None:
            client.login(*login)
        with pytest.raises(MiniupiError) as caught:
            act(client)
    assert type(caught.value) is expected, caught.value
    assert caught.value.reason == expected.reason
    return caught.value


A_PAYMENT = str(uuid.uuid4())  # paid once by the duplicate-id case, then reused with other details

# name: (raw call, code, reason, what the library does, the class it must raise)
CASES: dict[str, tuple[Callable[[LocalCluster, str], Refused], grpc.StatusCode, str,
                       Callable[[Client], Any] | None, type[MiniupiError] | None]] = {
    "insufficient_funds": (lambda c, k: raw(c, "Pay", pay_request(BOB, 1_000_00), k),
                           grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS",
                           lambda client: client.pay(BOB, 1_000_00), InsufficientFunds),
    "unknown_account": (lambda c, k: raw(c, "Pay", pay_request("nobody@bank_b", 1_00), k),
                        grpc.StatusCode.NOT_FOUND, "UNKNOWN_ACCOUNT",
                        lambda client: client.pay("nobody@bank_b", 1_00), UnknownAccount),
    "unknown_bank": (lambda c, k: raw(c, "Pay", pay_request("bob@bank_zz", 1_00), k),
                     grpc.StatusCode.NOT_FOUND, "UNKNOWN_BANK",
                     lambda client: client.pay("bob@bank_zz", 1_00), UnknownBank),
    "bad_amount": (lambda c, k: raw(c, "Pay", pay_request(BOB, 0), k),
                   grpc.StatusCode.INVALID_ARGUMENT, "INVALID_AMOUNT",
                   lambda client: client.pay(BOB, -1_00), InvalidAmount),
    "not_logged_in": (lambda c, k: raw(c, "Balance", gateway_pb2.BalanceRequest()),
                      grpc.StatusCode.UNAUTHENTICATED, "NOT_LOGGED_IN", None, None),
    "unknown_session": (lambda c, k: raw(c, "Balance", gateway_pb2.BalanceRequest(), "0123.not-a-key"),
                        grpc.StatusCode.UNAUTHENTICATED, "SESSION_EXPIRED",
                        lambda client: setattr(client, "session", Session(ALICE, "0123.not-a-key", 4e9))
                        or client.balance(), SessionExpired),
    "wrong_password": (lambda c, k: raw(c, "Login", gateway_pb2.LoginRequest(account="erin@bank_a", password="x")),
                       grpc.StatusCode.UNAUTHENTICATED, "BAD_CREDENTIALS",
                       lambda client: client.login("erin@bank_a", "y"), BadCredentials),
    "wrong_owner": (lambda c, k: raw(c, "Balance", gateway_pb2.BalanceRequest(account=BOB), k),
                    grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED",
                    lambda client: client.balance(BOB), PermissionDenied),
    "duplicate_id_other_details": (lambda c, k: raw(c, "Pay", pay_request(BOB, 2_00, A_PAYMENT), k),
                                   grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS",
                                   lambda client: client.pay(BOB, 3_00, txn_id=A_PAYMENT), AlreadyExists),
    "account_exists_at_the_bank": (lambda c, k: raw(c, "Register", gateway_pb2.RegisterRequest(
                                       account=ALICE, password="another-pw")),
                                   grpc.StatusCode.ALREADY_EXISTS, "ACCOUNT_EXISTS",
                                   lambda client: client.register(ALICE, "another-pw"), AccountExists),
    "malformed_bytes": (lambda c, k: raw(c, "Pay", b"\xff\xff\xff", k),
                        grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST", None, None),
    "unknown_field": (lambda c, k: raw(c, "Pay", pay_request(BOB, 1_00).SerializeToString() + b"\xa0\x06\x01", k),
                      grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST", None, None),
    "customer_lists_transactions": (lambda c, k: raw(c, "ListTransactions", gateway_pb2.ListTransactionsRequest(),
                                                     k, stream=True),
                                    grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED", None, None),
    "customer_issues_money": (lambda c, k: raw(c, "Deposit", gateway_pb2.DepositRequest(
                                  txn_id=str(uuid.uuid4()), account=ALICE,
                                  amount=common_pb2.Money(minor=1_00, currency="INR")), k),
                              grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED",
                              lambda client: client.deposit(ALICE, 1_00), PermissionDenied),
    "customer_calls_a_bank": (lambda c, k: raw(c, "GetAccount", bank_pb2.AccountRequest(account="alice"),
                                               node="bank_a"),
                              grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED", None, None),
    "customer_streams_a_bank_audit": (lambda c, k: raw(c, "Audit", bank_pb2.AuditRequest(), node="bank_a",
                                                       stream=True),
                                      grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED", None, None),
    "admin_reads_an_unknown_account_at_a_bank": (lambda c, k: raw(c, "GetAccount", bank_pb2.AccountRequest(
                                                     account="nobody"), identity="admin", node="bank_a"),
                                                 grpc.StatusCode.NOT_FOUND, "UNKNOWN_ACCOUNT", None, None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_refusal_leaves_with_its_code_and_reason_and_returns_as_its_class(cluster: LocalCluster,
                                                                             case: str) -> None:
    call, code, reason, act, expected = CASES[case]
    key = key_of(cluster, ALICE, "alice-pw")
    if case == "duplicate_id_other_details":
        with cluster.client() as client:
            client.login(ALICE, "alice-pw")
            assert client.pay(BOB, 1_00, txn_id=A_PAYMENT).state == "COMMITTED"

    assert call(cluster, key) == Refused(code, reason)
    assert reason in {cls.reason for cls in SENT_BY_NODES}
    if act is not None:
        assert expected is not None and expected.code == code.name
        library_raises(cluster, expected, act, login=None if case in ("wrong_password", "unknown_session")
                       else (ALICE, "alice-pw"))


def test_a_locked_account_is_refused_as_ACCOUNT_LOCKED(cluster: LocalCluster) -> None:
    for _ in range(ATTEMPTS - 1):
        assert raw(cluster, "Login", gateway_pb2.LoginRequest(account="dave@bank_a", password="wrong")) == \
            Refused(grpc.StatusCode.UNAUTHENTICATED, "BAD_CREDENTIALS")
    # The last attempt allowed locks the account; then even the right password is refused.
    assert raw(cluster, "Login", gateway_pb2.LoginRequest(account="dave@bank_a", password="wrong")) == \
        Refused(grpc.StatusCode.PERMISSION_DENIED, "ACCOUNT_LOCKED")
    assert raw(cluster, "Login", gateway_pb2.LoginRequest(account="dave@bank_a", password="dave-pw")) == \
        Refused(grpc.StatusCode.PERMISSION_DENIED, "ACCOUNT_LOCKED")
    library_raises(cluster, AccountLocked, lambda client: client.login("dave@bank_a", "dave-pw"), login=None)


def test_a_bank_down_aborts_a_payment_and_makes_reads_at_it_bank_unavailable(cluster: LocalCluster) -> None:
    alice, bob = key_of(cluster, ALICE, "alice-pw"), key_of(cluster, BOB, "bob-pw")
    cluster.stop_node("bank_b")
    try:
        assert raw(cluster, "Pay", pay_request(BOB, 1_00), alice) == Refused(grpc.StatusCode.ABORTED, "PAYMENT_ABORTED")
        assert raw(cluster, "Balance", gateway_pb2.BalanceRequest(), bob) == \
            Refused(grpc.StatusCode.UNAVAILABLE, "BANK_UNAVAILABLE")
        library_raises(cluster, Aborted, lambda client: client.pay(BOB, 1_00))
        with cluster.client(session=Session(BOB, bob, 4e9)) as client:
            with pytest.raises(BankUnavailable) as caught:
                client.balance()
        assert not is_transport_failure(caught.value)  # the gateway answered: it is the bank that is down
    finally:
        cluster.start_node("bank_b")


def test_a_gateway_down_is_a_status_without_a_reason_and_the_library_says_no_answer(cluster: LocalCluster) -> None:
    key = key_of(cluster, ALICE, "alice-pw")
    cluster.stop_node("gateway")
    try:
        assert raw(cluster, "Balance", gateway_pb2.BalanceRequest(), key) == Refused(grpc.StatusCode.UNAVAILABLE, None)
        with cluster.client(session=Session(ALICE, key, 4e9)) as client:
            with pytest.raises(NoAnswer) as caught:
                client.balance()
        assert is_transport_failure(caught.value)
    finally:
        cluster.start_node("gateway")
