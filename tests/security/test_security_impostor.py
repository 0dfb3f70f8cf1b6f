"""Security, impostors: a server holding a valid certificate of the cluster, but not the one dialled.

Every leaf comes from the one cluster CA, so a valid certificate proves
nothing about *which* node answers. An attacker who can listen on a node's
port (a stopped node, a shared host) with the customers' shared `client.pem`,
or with another bank's certificate, must get nothing: every miniupi client
pins the identity it meant to reach, so the TLS handshake fails and not
one request, password included, reaches the impostor. Each impostor here is a
real gRPC server over real mTLS that records every call it receives.
"""
from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import miniupi
from miniupi.errors import Aborted, Unavailable
from miniupi.ops.testing import LocalCluster
from miniupi.tls import CLIENT_ONLY_LEAF, WRONG_IDENTITY, dial, server_credentials
from miniupi.v1 import bank_pb2, bank_pb2_grpc, common_pb2, gateway_pb2
from conftest import bank_account, lines_with, presented_certificate, wait_for

pytestmark = pytest.mark.timeout(180)

SPEC = {
    # Short bounds, so a bank in doubt asks the gateway about a prepare within ~3 s.
    "cluster": {"name": "sec-impostor", "prepare_timeout_s": 1, "call_timeout_s": 1},
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
}
SETUP = {"bank_a": {"alice": ("100.00", "alice-pw")}, "bank_b": {"bob": ("10.00", "bob-pw")}}
ALICE, BOB = 100_00, 10_00


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("sec_impostor"), SPEC, accounts=SETUP) as c:
        yield c


class Impostor(grpc.GenericRpcHandler):
    """Answers every method; notes each one. GetDecision says COMMITTED, VerifyPassword says yes."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        self.calls.append(details.method)
        method = details.method.rsplit("/", 1)[-1]
        reply = {
            "GetDecision": gateway_pb2.GetDecisionReply(state=common_pb2.COMMITTED),
            "VerifyPassword": bank_pb2.VerifyPasswordReply(ok=True),
            "Login": gateway_pb2.LoginReply(session_key="stolen", expires_at=time.time() + 3600),
        }.get(method, bank_pb2.PrepareReply(yes=True))
        return grpc.unary_unary_rpc_method_handler(lambda request, context: reply.SerializeToString())


@contextlib.contextmanager
def impostor_on(cluster: LocalCluster, node: str, certificate: str) -> Iterator[Impostor]:
    """Stop `node` and serve an Impostor on its address with `certificate`'s leaf; the node is back after."""
    cluster.stop_node(node)
    recorder = Impostor()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[recorder])
    server.add_secure_port(cluster.config.node(node).address,
                           server_credentials(cluster.config.certs_dir, certificate))
    server.start()
    try:
        yield recorder
    finally:
        server.stop(None).wait()
        cluster.start_node(node)


def serves(cluster: LocalCluster, node: str, certificate: str) -> bool:
    """Whether what listens at `node`'s address presents `certificate`'s leaf (read without checking it)."""
    certs = Path(cluster.config.certs_dir)
    leaf = x509.load_pem_x509_certificate((certs / f"{certificate}.pem").read_bytes())
    return presented_certificate(cluster.config.node(node).address, certs) == leaf.public_bytes(
        serialization.Encoding.DER)


# Why the handshake fails: a client-only leaf may not serve at all; a bank's may, but it names bank_a.
REFUSAL = {"client": CLIENT_ONLY_LEAF, "bank_a": WRONG_IDENTITY}


@pytest.mark.parametrize("certificate", ["client", "bank_a"])
def test_gateway_sends_nothing_to_a_bank_impostor(cluster: LocalCluster, certificate: str) -> None:
    """With `client.pem` (or bank_a's own leaf) on bank_b's port, bob cannot log in and a payment to
    him aborts: the impostor says yes to every password and every vote, and hears nothing."""
    with impostor_on(cluster, "bank_b", certificate) as impostor:
        assert serves(cluster, "bank_b", certificate)  # control: it listens, with that leaf
        impostor.calls.clear()
        with cluster.client() as bob:
            with pytest.raises(Unavailable, match="bank_b"):
                bob.login("bob@bank_b", "any password at all")
        with cluster.client() as alice:
            alice.login("alice@bank_a", "alice-pw")
            with pytest.raises(Aborted, match="bank_b"):
                alice.pay("bob@bank_b", 1_00)
        assert impostor.calls == []
        wait_for("the gateway's log of the refusal and its reason", lambda: lines_with(
            cluster, "gateway", "refusing the server at", "its certificate is not bank_b's", REFUSAL[certificate]))
    assert bank_account(cluster, "bank_a", "alice") == (ALICE, 0)  # the hold went with the abort
    assert bank_account(cluster, "bank_b", "bob") == (BOB, 0)


@pytest.mark.parametrize("certificate", ["client", "bank_a"])
def test_login_sends_no_password_to_a_gateway_impostor(cluster: LocalCluster, certificate: str,
                                                        tmp_path: Path) -> None:
    with impostor_on(cluster, "gateway", certificate) as impostor:
        assert serves(cluster, "gateway", certificate)
        impostor.calls.clear()
        r = cluster.cli("login", "alice@bank_a", "--password-stdin", input="alice-pw\n", home=tmp_path)
        assert r.returncode != 0
        assert r.stderr.strip().count("\n") == 0 and "not the gateway" in r.stderr, r.stderr
        with cluster.client() as alice:
            with pytest.raises(Unavailable, match="not the gateway"):
                alice.login("alice@bank_a", "alice-pw")
        assert impostor.calls == []
    assert not (tmp_path / "session.json").exists()


def test_bank_in_doubt_takes_no_decision_from_a_gateway_impostor(cluster: LocalCluster) -> None:
    """bank_b votes yes for a credit to bob, then only an impostor answers at the gateway's address,
    saying COMMITTED to every GetDecision. bank_b must not ask it, and bob's money must not move;
    once the real gateway is back, presumed abort settles the payment it never recorded."""
    txn_id = str(uuid.uuid4())
    with impostor_on(cluster, "gateway", "bank_a") as impostor:
        with dial(cluster.config.certs_dir, "gateway", "bank_b", cluster.config.banks["bank_b"].address,
                  aio=False) as channel:
            vote = bank_pb2_grpc.BankStub(channel).Prepare(bank_pb2.PrepareRequest(
                txn_id=txn_id, currency="INR",
                legs=[bank_pb2.Leg(account="bob", delta_minor=5_00, counterparty="alice@bank_a")]), timeout=5)
        assert vote.yes
        # The bank asks about a prepare older than prepare_timeout_s + call_timeout_s, every second.
        wait_for("bank_b's log of the refusal", lambda: lines_with(
            cluster, "bank_b", "refusing the server at", "not the gateway's"), timeout_s=20)
        assert impostor.calls == []
        assert bank_account(cluster, "bank_b", "bob") == (BOB, 0)
    # The real gateway never recorded txn_id: it answers ABORTED, and the credit is dropped.
    wait_for("bank_b to learn the abort", lambda: txn_aborted_at_bank_b(cluster, txn_id), timeout_s=20)
    assert bank_account(cluster, "bank_b", "bob") == (BOB, 0)


def txn_aborted_at_bank_b(cluster: LocalCluster, txn_id: str) -> bool:
    """Whether bank_b reports txn_id ABORTED, as the admin reads it."""
    with dial(cluster.config.certs_dir, "admin", "bank_b", cluster.config.banks["bank_b"].address,
              aio=False) as channel:
        for chunk in bank_pb2_grpc.BankStub(channel).Audit(bank_pb2.AuditRequest(), timeout=5):
            for txn in chunk.txns:
                if txn.txn_id == txn_id:
                    return txn.state == "ABORTED"
    return False


def test_every_channel_the_package_opens_is_pinned_by_tls_dial() -> None:
    """A channel opened any other way would check the host, not the identity: the hole this file is about."""
    package = Path(miniupi.__file__).parent
    unpinned = [str(path.relative_to(package)) for path in package.rglob("*.py")
                if path.name != "tls.py" and "v1" not in path.parts and "secure_channel(" in path.read_text()]
    assert unpinned == []
