"""The crash matrix for refunds and collect-request approvals: kill -9 a node at every step of their 2PC.

A refund and an approval are payments through the same 2PC as any other
(test_crash_matrix.py), with more to keep right around them: a refund's
share of its original (RefundBook), and a request whose state is read from
its payment. Each case arms one fault with tests/plugins/faults.py (SIGKILL
of a node at a hook, only for that payment's id), makes the call once, lets
supervisord restart the dead node, then checks:

- the fault really fired, and the first answer is the expected one (a kill
  of the gateway inside the call is no answer at all: NoAnswer);
- the client's retry with the same id (the refund id, or approving again)
  gets the final answer, and again once the cluster has settled;
- the audit finds no violation and nothing in doubt, and the issue's
  invariants hold (upi_helpers.upi_violations);
- money moved exactly once or not at all: balances, holds, each bank's record;
- a refund: the original shows exactly the committed refund, a refund of one
  paisa more than is left is refused, and what is left can still be refunded
  (an aborted refund gave its share back, a committed one kept it);
- an approval: the request is PAID iff its payment committed, else FAILED,
  and a decline is refused either way.

The flows. "payer"/"payee" are the banks of the refund's or approval's own payer and payee.
  refund:  the shop (bank_b) gives 4.00 of a 10.00 payment back to its customer (bank_a)
  approve: the customer (bank_a) pays a 4.00 request from the shop (bank_b)
Each flow has a scenario that commits and one its payer's bank refuses for
lack of funds (the shop spent the money; the customer has 3.00).
"""
from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from conftest import PASSWORD, PLUGIN_DIR, refusal, unique_name, wait_for
from miniupi.client.api import Client
from miniupi.errors import MiniupiError, RefundExceedsPayment, RequestClosed
from miniupi.ops.audit import collect
from miniupi.ops.testing import LocalCluster
from upi_helpers import (
    assert_cluster_clean,
    every_node_running,
    faults_on_pythonpath,
    gateway_reaches_every_bank,
    outcome,
    request_state,
    until_final,
    wait_restarted,
)

sys.path.insert(0, str(PLUGIN_DIR))  # the nodes load it from PYTHONPATH; the test arms it directly
import faults  # noqa: E402

pytestmark = pytest.mark.timeout(120)
TIMEOUT_S = 2
SPEC = {
    "cluster": {"name": "crash_matrix_upi", "prepare_timeout_s": TIMEOUT_S, "call_timeout_s": TIMEOUT_S,
                "max_opening_deposit": "10000.00"},
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
    "plugins": {"load": ["faults"]},
}
CUSTOMER_BANK, SHOP_BANK = "bank_a", "bank_b"
ORIGINAL, AMOUNT = 10_00, 4_00
COMMITTED, ABORTED, NO_ANSWER, INSUFFICIENT = "COMMITTED", "Aborted", "NoAnswer", "InsufficientFunds"
# Each flow's payer and payee bank.
SIDES = {"refund": {"gateway": "gateway", "payer": SHOP_BANK, "payee": CUSTOMER_BANK},
         "approve": {"gateway": "gateway", "payer": CUSTOMER_BANK, "payee": SHOP_BANK}}


@dataclass(frozen=True)
class Case:
    refused: bool  # the payer's bank refuses for lack of funds
    faults: tuple[dict[str, Any], ...]
    first: str
    final: str


def gw(point: str, **match: Any) -> dict[str, Any]:
    return {"node": "gateway", "point": point, "action": "kill", **match}


def bank(side: str, point: str, **match: Any) -> dict[str, Any]:
    return {"node": side, "point": point, "action": "kill", **match}


CASES = {
    "no-fault": Case(False, (), COMMITTED, COMMITTED),
    "gateway-before_prepare": Case(False, (gw("before_prepare"),), NO_ANSWER, ABORTED),
    "gateway-before_decision": Case(False, (gw("before_decision", decision="COMMITTED"),), NO_ANSWER, ABORTED),
    "gateway-after_decision": Case(False, (gw("after_decision", decision="COMMITTED"),), NO_ANSWER, COMMITTED),
    "gateway-after_decision_sent": Case(False, (gw("after_decision_sent", decision="COMMITTED", side="payer"),),
                                        COMMITTED, COMMITTED),
    "gateway-after_decision_sent-one_bank_reached": Case(
        False, (bank("payee", "before_apply"), gw("after_decision_sent", side="payer")), COMMITTED, COMMITTED),
    "payer-before_vote": Case(False, (bank("payer", "before_vote", yes=True),), ABORTED, ABORTED),
    "payer-after_vote": Case(False, (bank("payer", "after_vote"),), ABORTED, ABORTED),
    "payer-before_apply": Case(False, (bank("payer", "before_apply", decision="COMMITTED"),), COMMITTED, COMMITTED),
    "payer-after_apply": Case(False, (bank("payer", "after_apply", decision="COMMITTED"),), COMMITTED, COMMITTED),
    "payee-before_vote": Case(False, (bank("payee", "before_vote", yes=True),), ABORTED, ABORTED),
    "payee-after_vote": Case(False, (bank("payee", "after_vote"),), ABORTED, ABORTED),
    "payee-before_apply": Case(False, (bank("payee", "before_apply", decision="COMMITTED"),), COMMITTED, COMMITTED),
    "payee-after_apply": Case(False, (bank("payee", "after_apply", decision="COMMITTED"),), COMMITTED, COMMITTED),
    "refused/no-fault": Case(True, (), INSUFFICIENT, INSUFFICIENT),
    "refused/gateway-before_decision": Case(True, (gw("before_decision", decision="ABORTED"),), NO_ANSWER, ABORTED),
    "refused/gateway-after_decision": Case(True, (gw("after_decision", decision="ABORTED"),), NO_ANSWER,
                                           INSUFFICIENT),
    "refused/payer-before_vote": Case(True, (bank("payer", "before_vote", yes=False),), ABORTED, ABORTED),
    "refused/payee-after_vote": Case(True, (bank("payee", "after_vote"),), INSUFFICIENT, INSUFFICIENT),
    "refused/payee-after_apply": Case(True, (bank("payee", "after_apply", decision="ABORTED"),), INSUFFICIENT,
                                      INSUFFICIENT),
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with faults_on_pythonpath(), LocalCluster(tmp_path_factory.mktemp("crash_matrix_upi"), SPEC) as c:
        yield c


@pytest.fixture(autouse=True)
def every_node_up_and_nothing_armed(cluster: LocalCluster) -> Iterator[None]:
    gateway_reaches_every_bank(cluster)
    yield
    faults.disarm(cluster.config.data_dir)
    every_node_running(cluster)


def login(cluster: LocalCluster, account: str, opening: int) -> Client:
    c = cluster.client()
    c.register(account, PASSWORD, opening)
    c.login(account, PASSWORD)
    return c


def bank_state(cluster: LocalCluster) -> dict[str, Any]:
    _, banks = asyncio.run(collect(cluster.config))
    return {b.name: b for b in banks}


def fired_for(txn_id: str, count: int, data_dir: Any) -> list[dict[str, Any]]:
    got = [f for f in faults.fired(data_dir) if f.get("txn_id") == txn_id]
    return got if len(got) == count else []


def arm(cluster: LocalCluster, flow: str, case: Case, txn_id: str) -> list[dict[str, Any]]:
    sides = SIDES[flow]
    armed = []
    for f in case.faults:
        f = {**f, "node": sides[f["node"]], "txn_id": txn_id}
        if "side" in f:  # a bank named by its part in this flow
            f["bank"] = sides[f.pop("side")]
        armed.append(f)
    faults.arm(cluster.config.data_dir, *armed)
    return armed


@pytest.mark.parametrize("case_id", list(CASES))
def test_a_refund_killed_at_any_step_ends_once_or_not_at_all_and_keeps_the_ceiling(
        cluster: LocalCluster, case_id: str) -> None:
    case = CASES[case_id]
    data_dir = cluster.config.data_dir
    customer_user, shop_user, third_user = unique_name("cust"), unique_name("shop"), unique_name("third")
    customer, shop_addr = f"{customer_user}@{CUSTOMER_BANK}", f"{shop_user}@{SHOP_BANK}"
    cust, shop = login(cluster, customer, 30_00), login(cluster, shop_addr, 0)
    third = login(cluster, f"{third_user}@{CUSTOMER_BANK}", 0)
    try:
        original = str(uuid.uuid4())
        assert cust.pay(shop_addr, ORIGINAL, txn_id=original).state == COMMITTED
        if case.refused:  # the shop spent it: 2.00 left, less than the refund
            assert shop.pay(f"{third_user}@{CUSTOMER_BANK}", 8_00).state == COMMITTED
        shop_before = ORIGINAL - 8_00 * case.refused
        refund_id = str(uuid.uuid4())
        armed = arm(cluster, flow="refund", case=case, txn_id=refund_id)

        def refund() -> object:
            return shop.refund(original, AMOUNT, refund_id=refund_id)

        first = outcome(_once(refund))
        fired = wait_for("every armed fault to fire", lambda: fired_for(refund_id, len(armed), data_dir),
                         timeout_s=15) if armed else []
        assert faults.armed(data_dir) == []
        for f in fired:
            wait_restarted(cluster, f["node"], f["pid"])
        gateway_reaches_every_bank(cluster)
        final = outcome(until_final(refund))

        assert first == case.first, f"first answer {first}"
        assert final == case.final, f"final answer {final}"
        assert_cluster_clean(cluster)
        assert outcome(until_final(refund)) == case.final

        moved = case.final == COMMITTED
        banks = bank_state(cluster)
        assert banks[CUSTOMER_BANK].accounts[customer_user][:2] == (30_00 - ORIGINAL + AMOUNT * moved, 0)
        assert banks[SHOP_BANK].accounts[shop_user][:2] == (shop_before - AMOUNT * moved, 0)
        for name, user, delta, other in ((SHOP_BANK, shop_user, -AMOUNT, customer),
                                         (CUSTOMER_BANK, customer_user, AMOUNT, shop_addr)):
            record = banks[name].txns.get(refund_id)
            if moved:
                assert record == ("COMMITTED", [(user, delta, other)]), (name, record)
            else:
                assert record is None or record[0] == "ABORTED", (name, record)

        # The ceiling: exactly the committed refund is counted, before and after this crash.
        t = cust.transaction(original)
        assert t.refunded == AMOUNT * moved
        assert [(r.txn_id, r.state) for r in t.refunds] in ([(refund_id, "COMMITTED" if moved else "ABORTED")], [])
        left = ORIGINAL - AMOUNT * moved
        assert isinstance(refusal(lambda: shop.refund(original, left + 1)), RefundExceedsPayment)
        if case.refused:
            with cluster.client("treasury") as treasury:
                treasury.deposit(shop_addr, ORIGINAL)
        assert shop.refund(original).state == COMMITTED  # all that is left: an aborted refund gave its share back
        assert cust.transaction(original).refunded == ORIGINAL
        assert isinstance(refusal(lambda: shop.refund(original, 1)), RefundExceedsPayment)
        assert cust.balance().balance == 30_00
        assert_cluster_clean(cluster)
    finally:
        for c in (cust, shop, third):
            c.close()


@pytest.mark.parametrize("case_id", list(CASES))
def test_an_approval_killed_at_any_step_pays_once_or_not_at_all_and_the_request_says_which(
        cluster: LocalCluster, case_id: str) -> None:
    case = CASES[case_id]
    data_dir = cluster.config.data_dir
    customer_user, shop_user = unique_name("cust"), unique_name("shop")
    customer, shop_addr = f"{customer_user}@{CUSTOMER_BANK}", f"{shop_user}@{SHOP_BANK}"
    opening = 3_00 if case.refused else 10_00
    cust, shop = login(cluster, customer, opening), login(cluster, shop_addr, 1_00)
    try:
        request_id = shop.request_money(customer, AMOUNT, note="crash me").request_id
        armed = arm(cluster, flow="approve", case=case, txn_id=request_id)

        def approve() -> object:
            return cust.approve(request_id)

        first = outcome(_once(approve))
        fired = wait_for("every armed fault to fire", lambda: fired_for(request_id, len(armed), data_dir),
                         timeout_s=15) if armed else []
        assert faults.armed(data_dir) == []
        for f in fired:
            wait_restarted(cluster, f["node"], f["pid"])
        gateway_reaches_every_bank(cluster)
        final = outcome(until_final(approve))

        assert first == case.first, f"first answer {first}"
        assert final == case.final, f"final answer {final}"
        assert_cluster_clean(cluster)
        assert outcome(until_final(approve)) == case.final  # approving again: the same, nothing more

        moved = case.final == COMMITTED
        assert request_state(cluster, request_id) == ("PAID" if moved else "FAILED")
        assert isinstance(refusal(lambda: cust.decline(request_id)), RequestClosed)
        assert cust.requests() == [] and shop.requests() == []
        banks = bank_state(cluster)
        assert banks[CUSTOMER_BANK].accounts[customer_user][:2] == (opening - AMOUNT * moved, 0)
        assert banks[SHOP_BANK].accounts[shop_user][:2] == (1_00 + AMOUNT * moved, 0)
        for name, user, delta, other in ((CUSTOMER_BANK, customer_user, -AMOUNT, shop_addr),
                                         (SHOP_BANK, shop_user, AMOUNT, customer)):
            record = banks[name].txns.get(request_id)
            if moved:
                assert record == ("COMMITTED", [(user, delta, other)]), (name, record)
            else:
                assert record is None or record[0] == "ABORTED", (name, record)
        t = shop.transaction(request_id)
        assert (t.state, t.request_id) == ("COMMITTED" if moved else "ABORTED", request_id)
    finally:
        cust.close()
        shop.close()


def _once(call: Callable[[], object]) -> object:
    try:
        return call()
    except MiniupiError as e:
        return e


def test_the_matrix_covers_every_2pc_step_on_every_node() -> None:
    covered = {(f["node"], f["point"]) for case in CASES.values() for f in case.faults}
    gateway_points = {"before_prepare", "before_decision", "after_decision", "after_decision_sent"}
    bank_points = {"before_vote", "after_vote", "before_apply", "after_apply"}
    expected = {("gateway", p) for p in gateway_points} | {(s, p) for s in ("payer", "payee") for p in bank_points}
    assert expected <= covered
