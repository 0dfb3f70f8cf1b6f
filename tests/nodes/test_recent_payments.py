"""RecentPayments: the gateway's recent payments and their 2PC steps, as the console reads them.

A real cluster with the fault plugin: payments made through the client
library, read back as the admin over mTLS. The Timeline alone is in
test_timeline.py.
"""
from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator

import grpc
import pytest

from conftest import PASSWORD, PLUGIN_DIR, cluster_with_test_plugins, open_account, wait_for
from miniupi.contract.identity import SESSION_METADATA_KEY
from miniupi.errors import NoAnswer
from miniupi.ops.testing import LocalCluster
from miniupi.tls import dial
from miniupi.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

sys.path.insert(0, str(PLUGIN_DIR))
import faults  # noqa: E402

pytestmark = pytest.mark.timeout(180)
SPEC = {
    "cluster": {"name": "recent", "max_opening_deposit": "10000.00", "prepare_timeout_s": 3, "call_timeout_s": 3},
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "sqlite"}},
    "plugins": {"load": ["faults"]},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with cluster_with_test_plugins(tmp_path_factory.mktemp("recent"), SPEC) as c:
        yield c


def gateway(cluster: LocalCluster, identity: str) -> gateway_pb2_grpc.GatewayStub:
    channel = dial(cluster.config.certs_dir, identity, "gateway", cluster.config.gateway.address, aio=False)
    return gateway_pb2_grpc.GatewayStub(channel)


def recent(cluster: LocalCluster, after: int = 0) -> gateway_pb2.RecentPaymentsReply:
    return gateway(cluster, "admin").RecentPayments(gateway_pb2.RecentPaymentsRequest(after=after), timeout=10)


def trace(cluster: LocalCluster, txn_id: str) -> gateway_pb2.PaymentTrace | None:
    return next((t for t in recent(cluster).payments if t.txn_id == txn_id), None)


def steps(t: gateway_pb2.PaymentTrace) -> list[tuple[str, str, str]]:
    return [(s.step, s.bank, s.detail) for s in t.steps]


def test_a_payment_shows_each_bank_s_vote_and_acknowledgement_in_order(cluster: LocalCluster) -> None:
    payer, payee = open_account(cluster, "bank_a", 10_000), open_account(cluster, "bank_b", 0)
    seen = recent(cluster).seq
    with cluster.client() as client:
        client.login(payer, PASSWORD)
        paid = client.pay(payee, 25_00)
    t = wait_for("both acknowledgements", lambda: (t := trace(cluster, paid.txn_id)) and
                 sum(s.step == "ack" for s in t.steps) == 2 and t)
    assert (t.from_account, t.to_account, t.amount.minor, t.state, t.kind) == (
        payer, payee, 25_00, common_pb2.COMMITTED, "payment")
    got = steps(t)
    assert got[:3] == [("recorded", "", ""), ("prepare", "bank_a", ""), ("prepare", "bank_b", "")]
    assert sorted(got[3:5]) == [("vote", "bank_a", "yes"), ("vote", "bank_b", "yes")]
    assert got[5:7] == [("decided", "", "COMMITTED"), ("durable", "", "COMMITTED")]
    assert sorted(got[7:]) == [("ack", "bank_a", "COMMITTED"), ("ack", "bank_b", "COMMITTED")]
    assert [s.at for s in t.steps] == sorted(s.at for s in t.steps)
    assert t.steps[0].at == pytest.approx(t.created_at)
    later = recent(cluster, after=seen)
    assert [p.txn_id for p in later.payments] == [paid.txn_id]  # only what changed since
    assert recent(cluster, after=later.seq).payments == []
    assert later.gateway == "gateway"


def test_a_refused_payment_shows_the_bank_s_no_and_why(cluster: LocalCluster) -> None:
    payer, payee = open_account(cluster, "bank_a", 1_00), open_account(cluster, "bank_b", 0)
    txn_id = str(uuid.uuid4())
    with cluster.client() as client:
        client.login(payer, PASSWORD)
        with pytest.raises(Exception):
            client.pay(payee, 5_00, txn_id=txn_id)
    t = wait_for("the abort's acknowledgements", lambda: (t := trace(cluster, txn_id)) and
                 sum(s.step == "ack" for s in t.steps) == 2 and t)
    assert (t.state, t.reason) == (common_pb2.ABORTED, "INSUFFICIENT_FUNDS")
    votes = dict((bank, detail) for step, bank, detail in steps(t) if step == "vote")
    assert votes["bank_b"] == "yes" and votes["bank_a"].startswith("no: "), votes


def test_a_decision_resent_after_a_crash_shows_the_resend(cluster: LocalCluster) -> None:
    payer, payee = open_account(cluster, "bank_a", 10_000), open_account(cluster, "bank_b", 0)
    txn_id = str(uuid.uuid4())
    faults.arm(cluster.config.data_dir, {"node": "gateway", "point": "after_decision", "decision": "COMMITTED",
                                         "txn_id": txn_id, "action": "kill"})
    with cluster.client() as client:
        client.login(payer, PASSWORD)
        with pytest.raises(NoAnswer):
            client.pay(payee, 7_00, txn_id=txn_id)  # the gateway died with the decision durable, unsent
        cluster.wait_ready("gateway")  # supervisord brought it back, and it resends the decision
        assert client.pay(payee, 7_00, txn_id=txn_id).state == "COMMITTED"  # the client's resend: the same answer
    t = wait_for("the resend after the restart", lambda: (t := trace(cluster, txn_id)) and
                 sum(s.step == "ack" for s in t.steps) == 2 and t)
    assert steps(t)[0] == ("resent", "", "COMMITTED, attempt 1")  # what the restarted gateway saw of it
    assert t.state == common_pb2.COMMITTED


def test_only_the_admin_may_watch(cluster: LocalCluster) -> None:
    payer = open_account(cluster, "bank_a", 0)
    stub = gateway(cluster, "client")
    key = stub.Login(gateway_pb2.LoginRequest(account=payer, password=PASSWORD), timeout=10).session_key
    with pytest.raises(grpc.RpcError) as refused:
        stub.RecentPayments(gateway_pb2.RecentPaymentsRequest(), metadata=((SESSION_METADATA_KEY, key),), timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as treasury:
        gateway(cluster, "treasury").RecentPayments(gateway_pb2.RecentPaymentsRequest(), timeout=10)
    assert treasury.value.code() == grpc.StatusCode.PERMISSION_DENIED
