"""Mutual TLS on every link: who may connect at all, and who may call a bank.

The refusals are checked next to a control that uses the very same address and
code path with a proper certificate, so a test can only pass because of the
certificate, not because the node was unreachable.
"""
from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from miniupi.ops.certs import CA_CERT, cert_pem, issue_cert, make_ca
from miniupi.client.api import Client
from miniupi.errors import Unauthenticated
from miniupi.nodes.server import HANDSHAKE_TIMEOUT_S
from miniupi.ops.testing import LocalCluster
from miniupi.tls import channel_credentials
from miniupi.v1 import bank_pb2, bank_pb2_grpc, common_pb2, gateway_pb2, gateway_pb2_grpc


pytestmark = pytest.mark.timeout(90)

SPEC = {
    "cluster": {"name": "mtls", "prepare_timeout_s": 3, "call_timeout_s": 3},
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
}
SETUP = {"bank_a": {"alice": ("100.00", "alice-pw")}, "bank_b": {"bob": ("10.00", "bob-pw")}}
HOSTS = ["localhost", "127.0.0.1"]
NODES = ["gateway", "bank_a", "bank_b"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("mtls"), SPEC, accounts=SETUP) as c:
        yield c


def cluster_ca(cluster: LocalCluster) -> bytes:
    return (Path(cluster.config.certs_dir) / CA_CERT).read_bytes()


def untrusted_credentials(cluster: LocalCluster, kind: str) -> grpc.ChannelCredentials:
    """Credentials that trust the cluster's server certificates but present no (good) client certificate."""
    ca = cluster_ca(cluster)
    if kind == "no_client_cert":
        return grpc.ssl_channel_credentials(root_certificates=ca)
    # A certificate from another CA, even one claiming a trusted identity.
    name = {"foreign_ca_client": "client", "foreign_ca_gateway": "gateway", "foreign_ca_admin": "admin"}[kind]
    other_ca, other_key = make_ca("not the cluster CA")
    cert, key = issue_cert(other_ca, other_key, name, hosts=HOSTS)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def health(cluster: LocalCluster, node: str, creds: grpc.ChannelCredentials) -> int:
    with grpc.secure_channel(cluster.config.node(node).address, creds) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def real_rpc(cluster: LocalCluster, node: str, creds: grpc.ChannelCredentials) -> object:
    """One real call of the node's own service: Login at the gateway, GetAccount at a bank."""
    with grpc.secure_channel(cluster.config.node(node).address, creds) as channel:
        if node == "gateway":
            return gateway_pb2_grpc.GatewayStub(channel).Login(
                gateway_pb2.LoginRequest(account="alice@bank_a", password="alice-pw"), timeout=5)
        return bank_pb2_grpc.BankStub(channel).GetAccount(bank_pb2.AccountRequest(account="alice"), timeout=5)


@pytest.mark.parametrize("node", NODES)
def test_properly_certified_identities_connect(cluster: LocalCluster, node: str) -> None:
    """The control for the refusals below: same addresses, same calls, proper certificates."""
    identity = "client" if node == "gateway" else "admin"
    creds = channel_credentials(cluster.config.certs_dir, identity)
    assert health(cluster, node, creds) == health_pb2.HealthCheckResponse.SERVING
    if node != "bank_b":
        assert real_rpc(cluster, node, creds) is not None


@pytest.mark.parametrize("kind", ["no_client_cert", "foreign_ca_client", "foreign_ca_gateway", "foreign_ca_admin"])
@pytest.mark.parametrize("node", NODES)
def test_connection_without_cluster_certificate_is_refused(cluster: LocalCluster, node: str, kind: str) -> None:
    creds = untrusted_credentials(cluster, kind)
    with pytest.raises(grpc.RpcError) as health_refused:
        health(cluster, node, creds)
    assert health_refused.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError) as rpc_refused:
        real_rpc(cluster, node, creds)
    assert rpc_refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_server_with_certificate_from_another_ca_is_not_trusted(cluster: LocalCluster) -> None:
    """The other direction: a client that trusts only the cluster CA refuses a server outside it."""
    ca = cluster_ca(cluster)
    other_ca, other_key = make_ca("not the cluster CA")
    other_ca_pem = cert_pem(other_ca)
    assert other_ca_pem != ca
    certs = Path(cluster.config.certs_dir)
    creds = grpc.ssl_channel_credentials(root_certificates=other_ca_pem,
                                         private_key=(certs / "client.key").read_bytes(),
                                         certificate_chain=(certs / "client.pem").read_bytes())
    with pytest.raises(grpc.RpcError) as refused:
        health(cluster, "gateway", creds)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def _bank_calls(stub: bank_pb2_grpc.BankStub) -> dict[str, Callable[[], object]]:
    txn_id = str(uuid.uuid4())
    return {
        "GetAccount": lambda: stub.GetAccount(bank_pb2.AccountRequest(account="alice"), timeout=5),
        "History": lambda: stub.History(bank_pb2.BankHistoryRequest(account="alice"), timeout=5),
        "VerifyPassword": lambda: stub.VerifyPassword(
            bank_pb2.VerifyPasswordRequest(account="alice", password="alice-pw"), timeout=5),
        "OpenAccount": lambda: stub.OpenAccount(bank_pb2.OpenAccountRequest(
            account="intruder", password="x", initial=common_pb2.Money(minor=1_000_000_00, currency="INR")),
            timeout=5),
        "Prepare": lambda: stub.Prepare(bank_pb2.PrepareRequest(txn_id=txn_id, currency="INR", legs=[
            bank_pb2.Leg(account="alice", delta_minor=-50_00, counterparty="bob@bank_b")]), timeout=5),
        "Commit": lambda: stub.Commit(bank_pb2.DecisionRequest(txn_id=txn_id), timeout=5),
        "Abort": lambda: stub.Abort(bank_pb2.DecisionRequest(txn_id=txn_id), timeout=5),
    }


@pytest.mark.parametrize("bank", ["bank_a", "bank_b"])
def test_client_certificate_calling_a_bank_directly_is_permission_denied(cluster: LocalCluster, bank: str) -> None:
    creds = channel_credentials(cluster.config.certs_dir, "client")
    with grpc.secure_channel(cluster.config.node(bank).address, creds) as channel:
        # The TLS link itself is fine (health is open to every cluster certificate) ...
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        # ... but every bank method is refused to a customer's certificate.
        for name, call in _bank_calls(bank_pb2_grpc.BankStub(channel)).items():
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, name
    # Nothing was held or opened.
    with cluster.client() as c:
        c.login("alice@bank_a", "alice-pw")
        b = c.balance()
        assert b.available == b.balance
        with pytest.raises(Unauthenticated):
            c.login(f"intruder@{bank}", "x")


def test_admin_certificate_passes_health_check_and_may_read_a_bank(cluster: LocalCluster) -> None:
    creds = channel_credentials(cluster.config.certs_dir, "admin")
    for bank in ("bank_a", "bank_b"):
        assert health(cluster, bank, creds) == health_pb2.HealthCheckResponse.SERVING
    with grpc.secure_channel(cluster.config.node("bank_b").address, creds) as channel:
        reply = bank_pb2_grpc.BankStub(channel).GetAccount(bank_pb2.AccountRequest(account="bob"), timeout=5)
    assert reply.account == "bob" and reply.balance.currency == "INR"


@pytest.mark.parametrize("identity", ["client", "bank_a"])
def test_customer_and_node_certificates_may_not_impersonate_a_bank_calling_another_bank(
        cluster: LocalCluster, identity: str) -> None:
    """Only the gateway and the admin call banks; a bank's own certificate calling another bank is refused too."""
    creds = channel_credentials(cluster.config.certs_dir, identity)
    with grpc.secure_channel(cluster.config.node("bank_b").address, creds) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            bank_pb2_grpc.BankStub(channel).GetAccount(bank_pb2.AccountRequest(account="bob"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_client_certificate_may_not_ask_the_gateway_for_decisions(cluster: LocalCluster) -> None:
    creds = channel_credentials(cluster.config.certs_dir, "client")
    with grpc.secure_channel(cluster.config.gateway.address, creds) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            gateway_pb2_grpc.GatewayStub(channel).GetDecision(
                gateway_pb2.GetDecisionRequest(txn_id=str(uuid.uuid4())), timeout=5)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_admin_certificate_may_read_any_account_but_not_spend_from_it(cluster: LocalCluster) -> None:
    """DESIGN.md section 3: a customer spends only their own account; the admin may *read* every
    account and run audits. Spending someone's money is no part of the admin role."""
    creds = channel_credentials(cluster.config.certs_dir, "admin")
    with grpc.secure_channel(cluster.config.gateway.address, creds) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)

        def balance(account: str) -> int:
            return stub.Balance(gateway_pb2.BalanceRequest(account=account), timeout=10).balance.minor

        before = balance("alice@bank_a"), balance("bob@bank_b")  # reading is the admin's right
        code = None
        try:
            stub.Pay(gateway_pb2.PayRequest(txn_id=str(uuid.uuid4()), from_account="alice@bank_a",
                                            to_account="bob@bank_b",
                                            amount=common_pb2.Money(minor=1_00, currency="INR")), timeout=10)
        except grpc.RpcError as e:
            code = e.code()
        after = balance("alice@bank_a"), balance("bob@bank_b")
    assert after == before, "the admin certificate, with no session, paid out of a customer's account"
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_customer_client_library_over_mtls_works_end_to_end(cluster: LocalCluster) -> None:
    """The client identity is good for the gateway: a full login and balance over mTLS."""
    with cluster.client() as c:
        c.login("bob@bank_b", "bob-pw")
        assert c.balance().account == "bob@bank_b"
        assert isinstance(c, Client)


@pytest.mark.parametrize("node", ["gateway", "bank_a"])
def test_connection_that_never_finishes_its_handshake_is_closed(cluster: LocalCluster, node: str) -> None:
    """A socket that says nothing after connecting is closed by the node, not held for gRPC's default 120 s."""
    host, port = cluster.config.node(node).address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.settimeout(HANDSHAKE_TIMEOUT_S + 10)  # bounded: a node that keeps it open fails here
        assert sock.recv(1) == b""  # the node closed it
