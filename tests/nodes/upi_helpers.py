"""Helpers for the tests of refunds, collect requests, daily limits and status by id.

They read the cluster the way an operator would: as the admin, through the
gateway's ListTransactions stream (every transaction with its refund and
request links, then every collect request) and the banks' Audit streams
(miniupi.ops.audit). `upi_violations` checks the invariants the issue adds
on top of the audit's own, from those readings alone.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from conftest import PLUGIN_DIR, wait_for
from miniupi.client.api import Client
from miniupi.errors import MiniupiError, NotFound, Unavailable
from miniupi.nodes.txn_index import CACHE_ENV
from miniupi.ops.audit import audit
from miniupi.ops.testing import LocalCluster
from miniupi.tls import dial
from miniupi.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

SETTLE_S = 30.0


@dataclass(frozen=True)
class GatewayTxn:
    txn_id: str
    payer: str
    payee: str
    amount: int
    state: str
    acked: bool
    refund_of: str
    request_id: str
    created_at: float
    decided_at: float


@dataclass(frozen=True)
class StoredRequest:
    request_id: str
    payer: str
    payee: str
    amount: int
    state: str  # PENDING, PAYING, PAID, FAILED, DECLINED or EXPIRED


def gateway_listing(cluster: LocalCluster) -> tuple[dict[str, GatewayTxn], dict[str, StoredRequest]]:
    """Every transaction and every collect request the gateway holds, as the admin reads them."""
    txns: dict[str, GatewayTxn] = {}
    requests: dict[str, StoredRequest] = {}
    config = cluster.config
    with dial(config.certs_dir, "admin", "gateway", config.gateway.address, aio=False) as channel:
        for chunk in gateway_pb2_grpc.GatewayStub(channel).ListTransactions(
                gateway_pb2.ListTransactionsRequest(), timeout=15):
            for t in chunk.txns:
                txns[t.txn_id] = GatewayTxn(t.txn_id, t.from_account, t.to_account, t.amount.minor,
                                            common_pb2.TxnState.Name(t.state), t.acknowledged, t.refund_of,
                                            t.request_id, t.created_at, t.decided_at)
            for r in chunk.requests:
                requests[r.request_id] = StoredRequest(
                    r.request_id, r.from_account, r.to_account, r.amount.minor,
                    gateway_pb2.RequestState.Name(r.state).removeprefix("REQUEST_"))
    return txns, requests


def request_state(cluster: LocalCluster, request_id: str) -> str:
    return gateway_listing(cluster)[1][request_id].state


def upi_violations(cluster: LocalCluster) -> list[str]:
    """The issue's invariants over the gateway's records: committed refunds never exceed their
    original, a refund gives back a committed payment to its payer, an approved request is paid by
    exactly one payment whose details are the request's, and a request's state is its payment's."""
    txns, requests = gateway_listing(cluster)
    bad: list[str] = []
    refunded: dict[str, int] = defaultdict(int)
    for t in txns.values():
        if not t.refund_of:
            continue
        original = txns.get(t.refund_of)
        if original is None:
            bad.append(f"refund {t.txn_id} of unknown payment {t.refund_of}")
            continue
        if (t.payer, t.payee) != (original.payee, original.payer):
            bad.append(f"refund {t.txn_id} goes {t.payer}->{t.payee}, its original {original.payer}->{original.payee}")
        if original.refund_of:
            bad.append(f"refund {t.txn_id} refunds the refund {original.txn_id}")
        if t.state == "COMMITTED":
            if original.state != "COMMITTED":
                bad.append(f"refund {t.txn_id} committed for {original.state} payment {original.txn_id}")
            refunded[t.refund_of] += t.amount
    for original_id, amount in refunded.items():
        if amount > txns[original_id].amount:
            bad.append(f"refunds of {original_id} add up to {amount}, more than its {txns[original_id].amount}")
    for r in requests.values():
        paid_by = [t for t in txns.values() if t.request_id == r.request_id]
        if any(t.txn_id != r.request_id for t in paid_by):
            bad.append(f"request {r.request_id} is linked to payments {[t.txn_id for t in paid_by]}")
        payment = txns.get(r.request_id)
        if payment is None:
            if r.state in ("PAYING", "PAID", "FAILED"):
                bad.append(f"request {r.request_id} is {r.state} without a payment")
            continue
        if (payment.payer, payment.payee, payment.amount, payment.request_id) != (r.payer, r.payee, r.amount,
                                                                                  r.request_id):
            bad.append(f"request {r.request_id} paid by a payment with other details: {payment}")
        expected = {"COMMITTED": "PAID", "ABORTED": "FAILED", "INITIATED": "PAYING"}[payment.state]
        if r.state != expected:
            bad.append(f"request {r.request_id} is {r.state} but its payment is {payment.state}")
    for t in txns.values():
        if t.request_id and t.request_id not in requests:
            bad.append(f"payment {t.txn_id} pays unknown request {t.request_id}")
    return bad


def assert_cluster_clean(cluster: LocalCluster, settle_s: float = SETTLE_S) -> None:
    """The audit finds nothing wrong and nothing in doubt, and the issue's invariants hold."""
    report = asyncio.run(audit(cluster.config, settle_s=settle_s))
    assert report.ok, report.violations
    assert report.in_doubt == []
    assert upi_violations(cluster) == []


def gateway_reaches_every_bank(cluster: LocalCluster, timeout_s: float = 20.0) -> None:
    """Wait until the gateway's own links reach every bank: NOT_FOUND for nobody@bank comes only from it."""
    def reached(admin: Client, bank: str) -> bool:
        try:
            admin.balance(f"nobody@{bank}")
        except NotFound:
            return True
        except Unavailable:
            return False
        raise AssertionError(f"nobody@{bank} has an account")

    with cluster.client("admin") as admin:
        for name in cluster.config.banks:
            wait_for(f"the gateway to reach {name}", lambda: reached(admin, name), timeout_s=timeout_s)


def wait_restarted(cluster: LocalCluster, node: str, dead: int, timeout_s: float = 30.0) -> None:
    """Wait until supervisord runs `node` again with a pid other than `dead`, and it serves."""
    wait_for(f"supervisord to restart {node}", lambda: cluster.supervisor.pid(node) not in (None, dead),
             timeout_s=timeout_s)
    cluster.wait_ready(node, timeout=timeout_s)


def kill_and_restart(cluster: LocalCluster, node: str) -> None:
    """kill -9 the node, let supervisord bring it back, and wait until the gateway reaches every bank."""
    wait_restarted(cluster, node, cluster.kill_node(node))
    gateway_reaches_every_bank(cluster)


def until_final(call: Any, timeout_s: float = 30.0) -> Any:
    """Repeat `call` (the same id each time) while the answer is UNAVAILABLE; return the answer or
    the refusal (as the exception object)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except Unavailable:
            pass
        except MiniupiError as e:
            return e
        if time.monotonic() > deadline:
            pytest.fail(f"no final answer after {timeout_s}s")
        time.sleep(0.2)


def outcome(answer: Any) -> str:
    """"COMMITTED" for a PayResult, else the refusal's class name."""
    return answer.state if hasattr(answer, "state") else type(answer).__name__


@contextlib.contextmanager
def faults_on_pythonpath() -> Iterator[None]:
    """tests/plugins on PYTHONPATH for the nodes supervisord starts inside the block (`faults`)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")])))
        yield


@contextlib.contextmanager
def tiny_gateway_cache() -> Iterator[None]:
    """A gateway started inside the block keeps one settled payment and one idle sum per guard in memory:
    everything else it reads back from its store, so the module's tests run on those reads."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv(CACHE_ENV, "1")
        yield


def every_node_running(cluster: LocalCluster) -> None:
    """Start any node a failed test left stopped or frozen (SIGCONT is harmless to a running one)."""
    for node in cluster.config.nodes:
        with contextlib.suppress(ProcessLookupError, RuntimeError):
            cluster.kill_node(node.name, signal.SIGCONT)
        cluster.start_node(node.name)


__all__ = ["GatewayTxn", "StoredRequest", "gateway_listing", "request_state", "upi_violations",
           "assert_cluster_clean", "gateway_reaches_every_bank", "wait_restarted", "kill_and_restart",
           "until_final", "outcome", "faults_on_pythonpath", "tiny_gateway_cache", "every_node_running"]
