"""The console's recent payments (miniupi/console/payments.py): merged across gateways, and followed
through a gateway's restart.

The merge is plain data, read from the gateway's own messages; the following runs against a real
cluster, read as the admin over mTLS as the console reads it.
"""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import PASSWORD, cluster_with_test_plugins, open_account, two_gateways
from miniupi.console.payments import Payments, merge, newest_first, trace_dict
from miniupi.ops.testing import LocalCluster, LocalPostgres
from miniupi.v1 import common_pb2, gateway_pb2

pytestmark = pytest.mark.timeout(120)


def gateway_trace(txn_id: str, state: int, created_at: float, *steps: tuple[float, str, str, str]) -> dict[str, Any]:
    return trace_dict(gateway_pb2.PaymentTrace(
        txn_id=txn_id, from_account="alice@bank_a", to_account="bob@bank_b",
        amount=common_pb2.Money(minor=1250, currency="INR"), state=state, kind="payment", created_at=created_at,
        steps=[gateway_pb2.PaymentStep(at=at, step=step, bank=bank, detail=detail) for at, step, bank, detail in steps]))


def test_a_payment_taken_over_by_another_gateway_merges_its_steps_by_time_and_takes_the_settled_state() -> None:
    first = gateway_trace("t1", common_pb2.INITIATED, 10.0, (10.0, "recorded", "", ""),
                          (10.1, "prepare", "bank_a", ""), (10.2, "vote", "bank_a", "yes"))
    second = gateway_trace("t1", common_pb2.COMMITTED, 12.0, (12.0, "resent", "", "COMMITTED, attempt 1"),
                           (12.1, "ack", "bank_a", "COMMITTED"))
    for traces in ([first, second], [second, first]):
        merged = merge(traces)
        assert merged["state"] == "COMMITTED" and merged["created_at"] == 10.0
        assert [s["step"] for s in merged["steps"]] == ["recorded", "prepare", "vote", "resent", "ack"]
    assert (first["amount_minor"], first["currency"], first["from"], first["to"]) == (1250, "INR", "alice@bank_a",
                                                                                      "bob@bank_b")


def test_the_table_s_order_is_newest_record_first() -> None:
    rows = [gateway_trace(name, common_pb2.COMMITTED, at) for name, at in (("b", 1.0), ("a", 3.0), ("c", 2.0),
                                                                           ("d", 3.0))]
    assert [r["txn_id"] for r in newest_first(rows)] == ["d", "a", "c", "b"]


def pay_once(cluster: LocalCluster, payer: str, payee: str) -> str:
    txn_id = str(uuid.uuid4())
    with cluster.client() as client:
        client.login(payer, PASSWORD)
        client.pay(payee, 1_00, txn_id=txn_id)
    return txn_id


async def poll_until(payments: Payments, settled: str) -> dict[str, Any]:
    """Poll until the payment shows with both acknowledgements (bounded); the last event that changed."""
    event: dict[str, Any] = {}
    for _ in range(100):
        event = await payments.poll() or event
        row = payments.timeline(settled)
        if row is not None and sum(s["step"] == "ack" for s in row["steps"]) == 2:
            return event
        await asyncio.sleep(0.1)
    pytest.fail(f"{settled} never showed settled")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    spec = {"cluster": {"name": "console-payments", "max_opening_deposit": "10000.00"},
            "gateway": {"storage": "sqlite"}, "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}}}
    with LocalCluster(tmp_path_factory.mktemp("console-payments"), spec) as c:
        yield c


def test_the_console_takes_only_what_changed_and_starts_afresh_when_the_gateway_restarts(
        cluster: LocalCluster) -> None:
    payer, payee = open_account(cluster, "bank_a", 10_000), open_account(cluster, "bank_b", 0)

    def pay() -> str:
        return pay_once(cluster, payer, payee)

    async def watch() -> None:
        payments = Payments(cluster.config)
        try:
            first = await payments.poll()
            assert first is not None and first["whole"]  # a new page is told even of an empty table
            paid = await asyncio.to_thread(pay)
            await poll_until(payments, paid)
            assert [p["txn_id"] for p in payments.whole()["payments"]] == [paid]
            assert await payments.poll() is None  # nothing changed: nothing to push
            again = await asyncio.to_thread(pay)
            event = await poll_until(payments, again)
            assert again in [p["txn_id"] for p in event["payments"]]
            assert [p["txn_id"] for p in payments.whole()["payments"]] == [again, paid]

            await asyncio.to_thread(cluster.restart_node, "gateway")
            after = await asyncio.to_thread(pay)
            await poll_until(payments, after)
            # The restarted gateway keeps only what it saw since: the console's table is what it says.
            assert [p["txn_id"] for p in payments.whole()["payments"]] == [after]
            steps = payments.timeline(after)["steps"]
            assert [s["step"] for s in steps][:1] == ["recorded"]
        finally:
            await payments.forget()

    asyncio.run(watch())


def test_every_gateway_s_payments_show_and_one_that_does_not_answer_is_named(
        tmp_path: Any, miniupi_postgres: LocalPostgres) -> None:
    with cluster_with_test_plugins(tmp_path, two_gateways("console-two"), postgres=miniupi_postgres) as cluster:
        payer, payee = open_account(cluster, "bank_a", 10_000), open_account(cluster, "bank_b", 0)

        async def watch() -> None:
            payments = Payments(cluster.config)
            try:
                assert (await payments.poll())["note"] is None
                await asyncio.to_thread(cluster.stop_node, "gw1")
                through_gw2 = await asyncio.to_thread(pay_once, cluster, payer, payee)
                event = await poll_until(payments, through_gw2)
                assert event["note"].startswith("no payments from gw1 ("), event["note"]
                await asyncio.to_thread(cluster.start_node, "gw1")
                through_gw1 = await asyncio.to_thread(pay_once, cluster, payer, payee)
                await poll_until(payments, through_gw1)
                shown = payments.whole()
                assert shown["note"] is None
                assert [p["txn_id"] for p in shown["payments"]] == [through_gw1, through_gw2]
                assert all(p["state"] == "COMMITTED" for p in shown["payments"])
            finally:
                await payments.forget()

        asyncio.run(watch())
