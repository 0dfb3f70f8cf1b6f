"""Two gateways sharing one real PostgreSQL, as real processes: one truth, takeover and fencing.

The cluster runs gw1 and gw2 on one PostgreSQL schema (the session's
server, miniupi_postgres), two banks of their own, a lease of 2 s and the
fault plugin. A gateway is frozen at an exact step of 2PC with the fault
action "stop" (SIGSTOP to itself), then either killed there for good (a
crash: supervisord is stopping it, so it does not come back) or let go on
after its lease lapsed (a pause). Every test ends with `miniupi audit`.
The same rules in one process, without PostgreSQL, are in test_replicas.py.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import grpc
import pytest

from conftest import (PASSWORD, PLUGIN_DIR, cli_ok, cluster_with_test_plugins, lines_with, open_account, two_gateways,
                      wait_for)
from miniupi.contract.identity import SESSION_METADATA_KEY
from miniupi.ops.postgres_server import LocalPostgres
from miniupi.ops.testing import LocalCluster
from miniupi.tls import dial
from miniupi.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

sys.path.insert(0, str(PLUGIN_DIR))
import faults  # noqa: E402

pytestmark = pytest.mark.timeout(300)
LEASE_S = 2.0
SPEC = two_gateways("replicas", LEASE_S)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, miniupi_postgres: LocalPostgres) -> Iterator[LocalCluster]:
    with cluster_with_test_plugins(tmp_path_factory.mktemp("replicas"), SPEC, postgres=miniupi_postgres) as c:
        yield c


def stub(cluster: LocalCluster, gateway: str) -> gateway_pb2_grpc.GatewayStub:
    """A customer's stub to that one gateway, with no failover."""
    channel = dial(cluster.config.certs_dir, "client", "gateway", cluster.config.gateways[gateway].address,
                   aio=False)
    return gateway_pb2_grpc.GatewayStub(channel)


def login(cluster: LocalCluster, gateway: str, account: str) -> tuple[tuple[str, str], ...]:
    reply = stub(cluster, gateway).Login(gateway_pb2.LoginRequest(account=account, password=PASSWORD), timeout=10)
    return ((SESSION_METADATA_KEY, reply.session_key),)


def pay_request(payer: str, payee: str, minor: int, txn_id: str | None = None) -> gateway_pb2.PayRequest:
    return gateway_pb2.PayRequest(txn_id=txn_id or str(uuid.uuid4()), from_account=payer, to_account=payee,
                                  amount=common_pb2.Money(minor=minor, currency="INR"))


def balance(cluster: LocalCluster, gateway: str, key: tuple[tuple[str, str], ...]) -> int:
    return stub(cluster, gateway).Balance(gateway_pb2.BalanceRequest(), metadata=key, timeout=10).balance.minor


def transaction(cluster: LocalCluster, gateway: str, key: tuple[tuple[str, str], ...],
                txn_id: str) -> gateway_pb2.GetTransactionReply:
    return stub(cluster, gateway).GetTransaction(gateway_pb2.GetTransactionRequest(txn_id=txn_id), metadata=key,
                                                 timeout=10)


def audit_ok(cluster: LocalCluster) -> None:
    report = json.loads(cli_ok(cluster, "audit", "--json", home=cluster.root))
    assert report["ok"], report["violations"]


def frozen_at(cluster: LocalCluster, gateway: str, point: str, txn_id: str) -> int:
    """Wait until the armed "stop" fault froze `gateway` at `point` for `txn_id`; its pid."""
    fired = wait_for(f"{gateway} frozen at {point}", lambda: [
        f for f in faults.fired(cluster.config.data_dir) if f["node"] == gateway and f["details"].get("txn_id") == txn_id])
    return fired[0]["pid"]


def frozen_payment(cluster: LocalCluster, point: str, amount: int
                   ) -> tuple[tuple[tuple[str, str], ...], gateway_pb2.PayRequest, Future, int]:
    """A fresh payer (logged in through gw2) pays `amount` through gw1, which the fault plugin freezes at
    `point` of that payment on its way to COMMITTED: its key, the request, the call and gw1's pid."""
    payer, payee = open_account(cluster, "bank_a", 10_000), open_account(cluster, "bank_b", 0)
    key = login(cluster, "gw2", payer)
    request = pay_request(payer, payee, amount)
    faults.arm(cluster.config.data_dir, {"node": "gw1", "point": point, "decision": "COMMITTED",
                                         "txn_id": request.txn_id, "action": "stop"})
    sent: Future = stub(cluster, "gw1").Pay.future(request, metadata=key, timeout=60)
    return key, request, sent, frozen_at(cluster, "gw1", point, request.txn_id)


def kill_for_good(cluster: LocalCluster, gateway: str, pid: int) -> None:
    """SIGKILL a frozen gateway while supervisord is stopping it, so it stays down (a crash, not a restart)."""
    stopping = threading.Thread(target=cluster.stop_node, args=(gateway,))
    stopping.start()
    time.sleep(0.5)  # supervisord has sent SIGTERM, which a stopped process cannot act on
    os.kill(pid, signal.SIGKILL)
    stopping.join(30)
    assert not stopping.is_alive()


def test_one_id_sent_to_both_gateways_at_once_is_one_2pc_one_debit_and_both_answer_its_result(
        cluster: LocalCluster) -> None:
    payer, payee = open_account(cluster, "bank_a", 10_000), open_account(cluster, "bank_b", 0)
    key = login(cluster, "gw1", payer)
    gateways = {name: stub(cluster, name) for name in ("gw1", "gw2")}
    with ThreadPoolExecutor(8) as pool:
        for _ in range(10):
            request = pay_request(payer, payee, 1_00)
            answers = list(pool.map(lambda name: gateways[name].Pay(request, metadata=key, timeout=20),
                                    ["gw1", "gw2", "gw2", "gw1"]))
            assert {a.state for a in answers} == {common_pb2.COMMITTED}
    # Each of the ten debited once. A read through the gateway that did not run a payment may come to the
    # bank before that payment's phase 2 does (reads are in step only through the one that answered).
    wait_for("the ten debits", lambda: balance(cluster, "gw2", key) == 10_000 - 10 * 1_00)
    time.sleep(1)
    assert balance(cluster, "gw1", key) == balance(cluster, "gw2", key) == 10_000 - 10 * 1_00
    audit_ok(cluster)


def test_a_login_through_one_gateway_pays_and_reads_through_the_other_and_a_logout_holds_at_both(
        cluster: LocalCluster) -> None:
    payer, payee = open_account(cluster, "bank_a", 5_000), open_account(cluster, "bank_b", 0)
    key = login(cluster, "gw1", payer)
    request = pay_request(payer, payee, 12_34)
    assert stub(cluster, "gw2").Pay(request, metadata=key, timeout=20).state == common_pb2.COMMITTED
    assert balance(cluster, "gw2", key) == 5_000 - 12_34
    assert transaction(cluster, "gw1", key, request.txn_id).state == common_pb2.COMMITTED
    stub(cluster, "gw2").Logout(gateway_pb2.LogoutRequest(), metadata=key, timeout=10)
    for name in ("gw1", "gw2"):
        with pytest.raises(grpc.RpcError) as refused:
            balance(cluster, name, key)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("point", [
    "before_decision",  # phase 1: prepared at both banks, undecided: the survivor runs phase 1 again
    "after_decision",  # phase 2: decided, no bank told yet: the survivor resends the decision
])
def test_a_gateway_killed_in_2pc_has_its_payment_finished_by_the_other_within_the_lease(
        cluster: LocalCluster, point: str) -> None:
    try:
        key, request, sent, pid = frozen_payment(cluster, point, 25_00)
        kill_for_good(cluster, "gw1", pid)
        killed = time.monotonic()
        with pytest.raises(grpc.RpcError):
            sent.result(timeout=30)  # the connection died with it
        # The client's resend of the same id reaches gw2, which waits for the takeover and answers it, once.
        assert stub(cluster, "gw2").Pay(request, metadata=key, timeout=LEASE_S * 3 + 10).state == common_pb2.COMMITTED
        took = time.monotonic() - killed
        assert transaction(cluster, "gw2", key, request.txn_id).state == common_pb2.COMMITTED
        assert lines_with(cluster, "gw2", "took over 1 payments of gw1")
        wait_for("the banks to apply it", lambda: balance(cluster, "gw2", key) == 10_000 - 25_00)
        assert took < LEASE_S * 3 + 5
    finally:
        cluster.start_node("gw1")
    audit_ok(cluster)


def test_a_gateway_paused_past_its_lease_does_not_decide_the_payment_the_other_took_over(
        cluster: LocalCluster) -> None:
    """gw1 is paused holding YES from both banks; gw2 takes the payment over and a plugin of gw2 vetoes it,
    so the two would decide differently: only the owner's decision may be written (fencing)."""
    payer, payee = open_account(cluster, "bank_a", 10_000), open_account(cluster, "bank_b", 0)
    key = login(cluster, "gw2", payer)
    request = pay_request(payer, payee, 40_00)
    faults.arm(cluster.config.data_dir,
               {"node": "gw2", "point": "before_prepare", "txn_id": request.txn_id, "action": "raise"},
               {"node": "gw1", "point": "before_decision", "decision": "COMMITTED", "txn_id": request.txn_id,
                "action": "stop"})
    sent: Future = stub(cluster, "gw1").Pay.future(request, metadata=key, timeout=60)
    pid = frozen_at(cluster, "gw1", "before_decision", request.txn_id)
    wait_for("gw2 to take the payment over", lambda: transaction(
        cluster, "gw2", key, request.txn_id).state == common_pb2.ABORTED, timeout_s=LEASE_S * 3 + 5)
    assert frozen_at(cluster, "gw2", "before_prepare", request.txn_id)  # the veto of gw2's own run
    os.kill(pid, signal.SIGCONT)  # gw1 wakes with YES from both banks and tries to commit
    with pytest.raises(grpc.RpcError) as answer:
        sent.result(timeout=30)
    assert answer.value.code() == grpc.StatusCode.ABORTED  # the decision that stands, not its own
    wait_for("gw1 to see it lost the payment", lambda: lines_with(cluster, "gw1", request.txn_id, "taken over"))
    assert transaction(cluster, "gw1", key, request.txn_id).state == common_pb2.ABORTED
    wait_for("the hold to go", lambda: stub(cluster, "gw1").Balance(
        gateway_pb2.BalanceRequest(), metadata=key, timeout=10).available.minor == 10_000)
    assert balance(cluster, "gw1", key) == 10_000  # no bank ever heard COMMIT
    audit_ok(cluster)


def test_one_id_raced_as_a_deposit_at_one_gateway_and_a_payment_at_the_other_is_used_once(
        cluster: LocalCluster) -> None:
    payer, payee = open_account(cluster, "bank_a", 10_000), open_account(cluster, "bank_b", 0)
    key = login(cluster, "gw2", payer)
    channel = dial(cluster.config.certs_dir, "treasury", "gateway", cluster.config.gateways["gw1"].address,
                   aio=False)
    treasury, customer = gateway_pb2_grpc.GatewayStub(channel), stub(cluster, "gw2")
    deposited = paid = 0
    with ThreadPoolExecutor(2) as pool:
        for _ in range(10):
            txn_id = str(uuid.uuid4())
            calls = [pool.submit(treasury.Deposit, gateway_pb2.DepositRequest(
                         txn_id=txn_id, account=payee, amount=common_pb2.Money(minor=5_00, currency="INR")),
                         timeout=20),
                     pool.submit(customer.Pay, pay_request(payer, payee, 1_00, txn_id), metadata=key, timeout=20)]
            won = []
            for call in calls:
                try:
                    call.result()
                    won.append(True)
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.ALREADY_EXISTS, e
                    won.append(False)
            assert won.count(True) == 1, won
            deposited, paid = deposited + won[0], paid + won[1]
    channel.close()
    payee_key = login(cluster, "gw1", payee)
    wait_for("every winner applied", lambda: balance(cluster, "gw1", payee_key) == deposited * 5_00 + paid * 1_00)
    assert balance(cluster, "gw2", key) == 10_000 - paid * 1_00
    audit_ok(cluster)


def test_clients_paying_while_a_gateway_dies_lose_nothing_and_log_in_once(cluster: LocalCluster) -> None:
    payer, payee = open_account(cluster, "bank_a", 100_000), open_account(cluster, "bank_b", 0)
    committed: list[str] = []
    with cluster.client() as client:
        client.login(payer, PASSWORD)
        session = client.session
        for i in range(60):
            if i == 20:
                cluster.kill_node(client._async.gateways.nodes[client._async.gateways.current].name)
            txn_id = str(uuid.uuid4())
            if client.pay(payee, 1_00, txn_id=txn_id).state == "COMMITTED":
                committed.append(txn_id)
        assert client.session == session  # never asked to log in again
        # The killed gateway may have decided a payment it had not told the banks yet: its restart (or
        # the other gateway, past its lease) tells them, so it applies shortly after.
        wait_for("every committed payment applied", lambda: client.balance().balance == 100_000 - 60 * 1_00)
    assert len(committed) == 60
    wait_for("both gateways serving", lambda: all(
        lines_with(cluster, name, f"{name} serving on") for name in ("gw1", "gw2")))
    audit_ok(cluster)
