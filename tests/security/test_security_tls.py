"""Security, transport: who may open a link to a node, and who a bank answers.

tests/security/test_mtls.py shows that the handshake fails; these tests show what a
refused caller could *not* do with real, state-changing calls against the
real node processes: no account opened, no hold placed, no payment recorded,
no failed login counted, and no line in the node's log, which the call-log
interceptor writes for every call that reaches a handler. Each refusal has
a control beside it that uses the same code path with a proper certificate.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from miniupi.ops import audit
from miniupi.contract.identity import SESSION_METADATA_KEY
from miniupi.ops.certs import CA_CERT, CA_KEY, issue_cert, make_ca
from miniupi.errors import Aborted
from miniupi.ops.testing import LocalCluster
from miniupi.tls import channel_credentials, dial
from miniupi.v1 import bank_pb2, bank_pb2_grpc, common_pb2, gateway_pb2, gateway_pb2_grpc
from conftest import admin_bank, bank_account, lines_with, presented_certificate, wait_logged

pytestmark = pytest.mark.timeout(120)

SPEC = {
    "cluster": {"name": "sec-tls", "prepare_timeout_s": 2, "call_timeout_s": 2},
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
}
SETUP = {"bank_a": {"alice": ("100.00", "alice-pw")}, "bank_b": {"bob": ("10.00", "bob-pw")}}
ALICE, BOB = 100_00, 10_00
LOOPBACK = ["localhost", "127.0.0.1"]
TIMEOUT = 5.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("sec_tls"), SPEC, accounts=SETUP) as c:
        yield c


# -- helpers -------------------------------------------------------------------


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def cluster_ca(cluster: LocalCluster) -> tuple[x509.Certificate, object]:
    certs = Path(cluster.config.certs_dir)
    cert = x509.load_pem_x509_certificate((certs / CA_CERT).read_bytes())
    key = serialization.load_pem_private_key((certs / CA_KEY).read_bytes(), password=None)
    return cert, key


def client_credentials(cluster: LocalCluster, kind: str) -> grpc.ChannelCredentials:
    """Credentials that trust the cluster's servers and present the certificate `kind` describes.

    Every certificate claims to be `admin`, the most privileged identity, so a
    refusal can only come from the certificate being bad, never from its name.
    """
    ca_pem = (Path(cluster.config.certs_dir) / CA_CERT).read_bytes()
    if kind == "no_certificate":
        return grpc.ssl_channel_credentials(root_certificates=ca_pem)
    if kind == "another_ca":
        ca, ca_key = make_ca("not the cluster CA")
        dates: tuple[dt.datetime | None, dt.datetime | None] = (None, None)
    else:
        ca, ca_key = cluster_ca(cluster)
        dates = {
            "expired": (now() - dt.timedelta(days=30), now() - dt.timedelta(days=1)),
            "not_yet_valid": (now() + dt.timedelta(days=1), now() + dt.timedelta(days=30)),
            "fresh": (None, None),
        }[kind]
    cert, key = issue_cert(ca, ca_key, "admin", LOOPBACK, *dates)  # type: ignore[arg-type]
    return grpc.ssl_channel_credentials(root_certificates=ca_pem, private_key=key, certificate_chain=cert)


def admin_gateway(cluster: LocalCluster) -> grpc.Channel:
    return grpc.secure_channel(cluster.config.gateway.address,
                               channel_credentials(cluster.config.certs_dir, "admin"))


def gateway_txn_ids(cluster: LocalCluster) -> set[str]:
    with admin_gateway(cluster) as channel:
        chunks = gateway_pb2_grpc.GatewayStub(channel).ListTransactions(gateway_pb2.ListTransactionsRequest(),
                                                                        timeout=TIMEOUT)
        return {t.txn_id for chunk in chunks for t in chunk.txns}


def flush_logs(cluster: LocalCluster, node: str) -> None:
    """Make a logged call with a unique marker and wait for its line (see wait_logged)."""
    marker = f"marker_{uuid.uuid4().hex[:10]}"
    if node == "gateway":
        with admin_gateway(cluster) as channel, pytest.raises(grpc.RpcError):
            gateway_pb2_grpc.GatewayStub(channel).Balance(gateway_pb2.BalanceRequest(account=f"{marker}@bank_a"),
                                                          timeout=TIMEOUT)
    else:
        assert bank_account(cluster, node, marker) is None
    wait_logged(cluster, node, marker)


def refused_code(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def login_key(cluster: LocalCluster, account: str, password: str) -> str:
    with grpc.secure_channel(cluster.config.gateway.address,
                             channel_credentials(cluster.config.certs_dir, "client")) as channel:
        return gateway_pb2_grpc.GatewayStub(channel).Login(
            gateway_pb2.LoginRequest(account=account, password=password), timeout=TIMEOUT).session_key


# -- who may connect at all ------------------------------------------------------

BAD_CLIENT_CERTIFICATES = ["no_certificate", "another_ca", "expired", "not_yet_valid"]


@pytest.mark.parametrize("node", ["gateway", "bank_a"])
def test_freshly_issued_certificate_from_the_cluster_ca_is_accepted(cluster: LocalCluster, node: str) -> None:
    """The control for the matrix below: the same credential builder, with good dates, gets in."""
    creds = client_credentials(cluster, "fresh")
    with grpc.secure_channel(cluster.config.node(node).address, creds) as channel:
        if node == "gateway":
            reply = gateway_pb2_grpc.GatewayStub(channel).Balance(
                gateway_pb2.BalanceRequest(account="alice@bank_a"), timeout=TIMEOUT)
        else:
            reply = bank_pb2_grpc.BankStub(channel).GetAccount(bank_pb2.AccountRequest(account="alice"),
                                                               timeout=TIMEOUT)
    assert reply.balance.minor == ALICE


@pytest.mark.parametrize("kind", BAD_CLIENT_CERTIFICATES)
def test_gateway_refuses_bad_client_certificate_before_any_handler_runs(cluster: LocalCluster, kind: str) -> None:
    """Register would open a funded account and Pay would move money, even with a real session key:
    neither reaches a handler, nothing is recorded and nothing is logged."""
    intruder = f"intruder_{uuid.uuid4().hex[:10]}"
    pay_id = str(uuid.uuid4())
    alice_key = login_key(cluster, "alice@bank_a", "alice-pw")  # a stolen, valid session key
    creds = client_credentials(cluster, kind)

    with grpc.secure_channel(cluster.config.gateway.address, creds) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        register = refused_code(lambda: stub.Register(gateway_pb2.RegisterRequest(
            account=f"{intruder}@bank_a", password="intruder-pw",
            initial=common_pb2.Money(minor=1_000_000_00, currency="INR")), timeout=TIMEOUT))
        pay = refused_code(lambda: stub.Pay(gateway_pb2.PayRequest(
            txn_id=pay_id, from_account="alice@bank_a", to_account="bob@bank_b",
            amount=common_pb2.Money(minor=50_00, currency="INR")),
            metadata=((SESSION_METADATA_KEY, alice_key),), timeout=TIMEOUT))

    assert (register, pay) == (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE)
    assert bank_account(cluster, "bank_a", intruder) is None
    assert bank_account(cluster, "bank_a", "alice") == (ALICE, 0)
    assert bank_account(cluster, "bank_b", "bob") == (BOB, 0)
    assert pay_id not in gateway_txn_ids(cluster)
    for node in ("gateway", "bank_a", "bank_b"):
        flush_logs(cluster, node)
    assert lines_with(cluster, "gateway", "method=Register", intruder) == []
    assert lines_with(cluster, "gateway", pay_id) == []
    assert lines_with(cluster, "bank_a", "method=OpenAccount", intruder) == []
    assert lines_with(cluster, "bank_a", pay_id) == [] and lines_with(cluster, "bank_b", pay_id) == []


@pytest.mark.parametrize("kind", BAD_CLIENT_CERTIFICATES)
def test_bank_refuses_bad_client_certificate_before_any_handler_runs(cluster: LocalCluster, kind: str) -> None:
    """OpenAccount would mint money and Prepare would freeze alice's funds; neither happens."""
    intruder = f"intruder_{uuid.uuid4().hex[:10]}"
    txn_id = str(uuid.uuid4())
    creds = client_credentials(cluster, kind)

    with grpc.secure_channel(cluster.config.banks["bank_a"].address, creds) as channel:
        stub = bank_pb2_grpc.BankStub(channel)
        opened = refused_code(lambda: stub.OpenAccount(bank_pb2.OpenAccountRequest(
            account=intruder, password="intruder-pw", initial=common_pb2.Money(minor=1_000_000_00, currency="INR")),
            timeout=TIMEOUT))
        prepared = refused_code(lambda: stub.Prepare(bank_pb2.PrepareRequest(txn_id=txn_id, currency="INR", legs=[
            bank_pb2.Leg(account="alice", delta_minor=-ALICE, counterparty="bob@bank_b")]), timeout=TIMEOUT))

    assert (opened, prepared) == (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE)
    assert bank_account(cluster, "bank_a", intruder) is None
    assert bank_account(cluster, "bank_a", "alice") == (ALICE, 0)  # no hold
    flush_logs(cluster, "bank_a")
    assert lines_with(cluster, "bank_a", "method=OpenAccount", intruder) == []
    assert lines_with(cluster, "bank_a", txn_id) == []


# -- who a bank answers -------------------------------------------------------------


@pytest.mark.parametrize(("caller", "bank", "victim", "balance"), [
    ("bank_a", "bank_b", "bob", BOB),      # one bank calling another
    ("bank_b", "bank_a", "alice", ALICE),  # ... in either direction
    ("client", "bank_a", "alice", ALICE),  # a customer's certificate skipping the gateway
])
def test_bank_answers_only_gateway_and_admin_and_a_refused_call_changes_nothing(
        cluster: LocalCluster, caller: str, bank: str, victim: str, balance: int) -> None:
    """Every state-changing bank method, called with a good cluster certificate that is not the
    gateway's: PERMISSION_DENIED, and afterwards the bank behaves as if it never heard of it."""
    intruder = f"intruder_{uuid.uuid4().hex[:10]}"
    hold_id, abort_id = str(uuid.uuid4()), str(uuid.uuid4())
    creds = channel_credentials(cluster.config.certs_dir, caller)
    with grpc.secure_channel(cluster.config.node(bank).address, creds) as channel:
        stub = bank_pb2_grpc.BankStub(channel)
        calls = {
            "OpenAccount": lambda: stub.OpenAccount(bank_pb2.OpenAccountRequest(
                account=intruder, password="x", initial=common_pb2.Money(minor=1_000_000_00, currency="INR")),
                timeout=TIMEOUT),
            "Prepare": lambda: stub.Prepare(bank_pb2.PrepareRequest(txn_id=hold_id, currency="INR", legs=[
                bank_pb2.Leg(account=victim, delta_minor=-balance, counterparty=f"{intruder}@bank_a")]),
                timeout=TIMEOUT),
            "Abort": lambda: stub.Abort(bank_pb2.DecisionRequest(txn_id=abort_id), timeout=TIMEOUT),
            "Commit": lambda: stub.Commit(bank_pb2.DecisionRequest(txn_id=hold_id), timeout=TIMEOUT),
            # Ten wrong guesses would lock the victim out if they were counted (login_attempts = 5).
            **{f"VerifyPassword#{i}": (lambda: stub.VerifyPassword(
                bank_pb2.VerifyPasswordRequest(account=victim, password="guess"), timeout=TIMEOUT))
               for i in range(10)},
            "GetAccount": lambda: stub.GetAccount(bank_pb2.AccountRequest(account=victim), timeout=TIMEOUT),
            "History": lambda: stub.History(bank_pb2.BankHistoryRequest(account=victim), timeout=TIMEOUT),
            "Audit": lambda: list(stub.Audit(bank_pb2.AuditRequest(), timeout=TIMEOUT)),
        }
        codes = {name: refused_code(call) for name, call in calls.items()}
        # And every method of the service, including any added since this test was written.
        for method in bank_pb2.DESCRIPTOR.services_by_name["Bank"].methods:
            path = f"/{method.containing_service.full_name}/{method.name}"
            if method.client_streaming:
                stream = channel.stream_stream(path)
                codes[f"{method.name} (empty)"] = refused_code(lambda: list(stream(iter([b""]), timeout=TIMEOUT)))
                continue
            call = channel.unary_stream(path) if method.server_streaming else channel.unary_unary(path)
            codes[f"{method.name} (empty)"] = refused_code(
                lambda: list(call(b"", timeout=TIMEOUT)) if method.server_streaming else call(b"", timeout=TIMEOUT))
    assert codes == {name: grpc.StatusCode.PERMISSION_DENIED for name in codes}

    assert bank_account(cluster, bank, intruder) is None
    assert bank_account(cluster, bank, victim) == (balance, 0)
    # The refused Abort was not recorded: a prepare of that id still gets a YES (then it is released).
    with grpc.secure_channel(cluster.config.node(bank).address,
                             channel_credentials(cluster.config.certs_dir, "gateway")) as channel:
        gateway = bank_pb2_grpc.BankStub(channel)
        vote = gateway.Prepare(bank_pb2.PrepareRequest(txn_id=abort_id, currency="INR", legs=[
            bank_pb2.Leg(account=victim, delta_minor=1, counterparty="admin@bank_a")]), timeout=TIMEOUT)
        gateway.Abort(bank_pb2.DecisionRequest(txn_id=abort_id), timeout=TIMEOUT)
    assert vote.yes, vote
    # The refused guesses were not counted: the victim is not locked out.
    password = {"alice": "alice-pw", "bob": "bob-pw"}[victim]
    assert login_key(cluster, f"{victim}@{bank}", password)
    # The refusals are logged as such; no line shows one of them succeeding.
    flush_logs(cluster, bank)
    for needle in (intruder, hold_id):
        refused = [line for line in lines_with(cluster, bank, needle)
                   if "caller=gateway " not in line and "caller=admin " not in line]
        assert refused and all("code=PERMISSION_DENIED" in line for line in refused), refused


def test_the_admin_may_read_a_bank_but_not_move_money_open_accounts_or_guess_passwords(
        cluster: LocalCluster) -> None:
    """The admin may not do at a bank what it may not do at the gateway."""
    victim = "alice"
    txn = str(uuid.uuid4())
    with admin_bank(cluster, "bank_a") as channel:
        stub = bank_pb2_grpc.BankStub(channel)
        refused = {
            "Prepare": refused_code(lambda: stub.Prepare(bank_pb2.PrepareRequest(txn_id=txn, currency="INR", legs=[
                bank_pb2.Leg(account=victim, delta_minor=1_000_00, counterparty="admin@bank_a")]), timeout=TIMEOUT)),
            "Commit": refused_code(lambda: stub.Commit(bank_pb2.DecisionRequest(txn_id=txn), timeout=TIMEOUT)),
            "DecideAndPrepare": refused_code(lambda: list(stub.DecideAndPrepare(
                iter([bank_pb2.DecideAndPrepareRequest()]), timeout=TIMEOUT))),
            "OpenAccount": refused_code(lambda: stub.OpenAccount(bank_pb2.OpenAccountRequest(
                account="admins_own", password="x"), timeout=TIMEOUT)),
            "VerifyPassword": refused_code(lambda: stub.VerifyPassword(bank_pb2.VerifyPasswordRequest(
                account=victim, password="guess"), timeout=TIMEOUT)),
        }
        balance = stub.GetAccount(bank_pb2.AccountRequest(account=victim), timeout=TIMEOUT).balance.minor
    assert refused == {name: grpc.StatusCode.PERMISSION_DENIED for name in refused}
    assert bank_account(cluster, "bank_a", victim) == (balance, 0)
    assert bank_account(cluster, "bank_a", "admins_own") is None


def test_bank_log_names_the_certificate_it_refused(cluster: LocalCluster) -> None:
    """DESIGN.md section 3: the call log records the caller of every call; for a refused call
    the caller is the very thing an operator needs to know."""
    probe = f"probe_{uuid.uuid4().hex[:10]}"
    with grpc.secure_channel(cluster.config.banks["bank_b"].address,
                             channel_credentials(cluster.config.certs_dir, "bank_a")) as channel:
        code = refused_code(lambda: bank_pb2_grpc.BankStub(channel).GetAccount(
            bank_pb2.AccountRequest(account=probe), timeout=TIMEOUT))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    wait_logged(cluster, "bank_b", probe)
    [line] = lines_with(cluster, "bank_b", probe)
    assert "code=PERMISSION_DENIED" in line
    assert "caller=bank_a " in line, line


# -- a server whose certificate is wrong -----------------------------------------------


def install_certificate(cluster: LocalCluster, node: str, cert_pem: bytes, key_pem: bytes) -> None:
    """Put a certificate in the node's files and restart it; return once it serves that certificate."""
    certs = Path(cluster.config.certs_dir)
    (certs / f"{node}.key").write_bytes(key_pem)
    (certs / f"{node}.pem").write_bytes(cert_pem)
    want = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    cluster.supervisor.restart(node)  # not restart_node: its readiness check would rightly refuse the node
    deadline = time.monotonic() + 30
    while presented_certificate(cluster.config.node(node).address, certs) != want:
        if time.monotonic() > deadline:
            pytest.fail(f"{node} did not come back serving the installed certificate")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def misnamed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A cluster of its own: its bank_b gets certificates it should not have."""
    with LocalCluster(tmp_path_factory.mktemp("sec_tls_server"), SPEC, accounts=SETUP) as c:
        yield c


BAD_SERVER_CERTIFICATES = {
    # The cluster's CA and the dialled host's names, but another bank's identity: every client pins the
    # identity it meant to reach, not the host.
    "another_identity": dict(name="bank_a", hosts=LOOPBACK),
    # Dates are checked on the server's certificate too (a not-yet-valid one takes the same path).
    "expired": dict(name="bank_b", hosts=LOOPBACK, not_before=now() - dt.timedelta(days=30),
                    not_after=now() - dt.timedelta(days=1)),
}


@pytest.mark.parametrize("kind", list(BAD_SERVER_CERTIFICATES))
def test_gateway_and_admin_refuse_a_bank_with_a_bad_server_certificate(misnamed: LocalCluster, kind: str) -> None:
    """Swap bank_b's certificate for a bad one from the *cluster* CA and restart it. The gateway
    pins bank_b's identity, checks it and the dates, and refuses: the payment aborts, no bank_b
    handler ever sees it, no money moves. With bank_b's own certificate back, it pays again."""
    cluster = misnamed
    certs = Path(cluster.config.certs_dir)
    saved = {name: (certs / name).read_bytes() for name in ("bank_b.pem", "bank_b.key")}
    cert, key = issue_cert(*cluster_ca(cluster), **BAD_SERVER_CERTIFICATES[kind])  # type: ignore[arg-type]
    install_certificate(cluster, "bank_b", cert, key)
    txn_id = str(uuid.uuid4())
    try:
        with admin_bank(cluster, "bank_b") as channel:
            direct = refused_code(lambda: bank_pb2_grpc.BankStub(channel).GetAccount(
                bank_pb2.AccountRequest(account="bob"), timeout=TIMEOUT))
        assert direct == grpc.StatusCode.UNAVAILABLE
        if kind == "another_identity":
            # Control: the same server is fine for a client that expects the identity on its certificate.
            with dial(certs, "admin", "bank_a", cluster.config.banks["bank_b"].address, aio=False) as channel:
                reply = bank_pb2_grpc.BankStub(channel).GetAccount(bank_pb2.AccountRequest(account="bob"),
                                                                   timeout=TIMEOUT)
            assert reply.balance.minor == BOB
        with cluster.client() as alice:
            alice.login("alice@bank_a", "alice-pw")
            with pytest.raises(Aborted, match="bank_b"):
                alice.pay("bob@bank_b", 1_00, txn_id=txn_id)
            balance = alice.balance()
        assert (balance.balance, balance.available) == (ALICE, ALICE)  # the hold was released too
    finally:
        for name, data in saved.items():
            (certs / name).write_bytes(data)
        cluster.restart_node("bank_b")

    # bank_b never held the prepare: at most it remembers the gateway's later abort, with no legs.
    _, banks = asyncio.run(audit.collect(cluster.config))
    assert next(b for b in banks if b.name == "bank_b").txns.get(txn_id) in (None, ("ABORTED", []))
    assert bank_account(cluster, "bank_b", "bob") == (BOB, 0)
    # Control: with its own certificate back, bank_b is trusted again and takes a payment.
    with cluster.client() as alice:
        alice.login("alice@bank_a", "alice-pw")
        deadline = time.monotonic() + 15
        while True:
            try:
                result = alice.pay("bob@bank_b", 1_00)
                break
            except Aborted:  # the gateway's link to bank_b may still be backing off
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
    assert result.state == "COMMITTED"
    # The client is answered before phase 2 ends; the bank's own view is read once the cluster settles.
    assert asyncio.run(audit.audit(cluster.config, settle_s=10)).ok
    assert bank_account(cluster, "bank_b", "bob") == (BOB + 1_00, 0)
    # Give the money back so every parametrized case starts from the same balances.
    with cluster.client() as bob:
        bob.login("bob@bank_b", "bob-pw")
        assert bob.pay("alice@bank_a", 1_00).state == "COMMITTED"
    # Settled, so the next case does not restart bank_b before the give-back's commit reaches it.
    report = asyncio.run(audit.audit(cluster.config, settle_s=10))
    assert report.violations == [] and not report.in_doubt
