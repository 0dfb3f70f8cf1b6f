"""A plugin that raises in a 2PC hook never leaves a payment undecided, nor changes a decided one.

The rule (miniupi/contract/hookspecs.py): a hook *before* a step may veto
it, and the step is refused cleanly (the payment is ABORTED, a vote is NO,
a decision waits to be sent again); a hook *after* a durable step is an
observer, whose exception is logged and ignored. Each case arms one
"raise" fault (tests/plugins/faults.py) for one payment on a running
cluster, pays, and checks the answer, the repeat, the balances and the
audit.
"""
from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import lines_with, PASSWORD, PLUGIN_DIR, unique_name, wait_for
from miniupi.errors import Aborted, MiniupiError
from miniupi.ops.audit import audit, collect
from miniupi.ops.testing import LocalCluster

sys.path.insert(0, str(PLUGIN_DIR))  # the nodes load it from PYTHONPATH; the test arms it directly
import faults  # noqa: E402

pytestmark = pytest.mark.timeout(120)
SPEC = {
    "cluster": {"name": "hooks", "prepare_timeout_s": 2, "call_timeout_s": 2, "max_opening_deposit": "10000.00"},
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
    "plugins": {"load": ["faults"]},
}
OPENING, AMOUNT = 10_00, 4_00
COMMITTED = "COMMITTED"

# (node, hook, what narrows it) -> the answer: COMMITTED, or the payment ABORTED by the veto.
CASES: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "gateway-before_prepare-vetoes": ("gateway", "before_prepare", {}, "PAYMENT_ABORTED"),
    "gateway-before_decision-vetoes": ("gateway", "before_decision", {"decision": COMMITTED}, "PAYMENT_ABORTED"),
    "gateway-after_decision-observes": ("gateway", "after_decision", {"decision": COMMITTED}, COMMITTED),
    "gateway-after_decision_sent-observes": ("gateway", "after_decision_sent", {"bank": "bank_a"}, COMMITTED),
    "payer-before_vote-vetoes": ("bank_a", "before_vote", {"yes": True}, "PAYMENT_ABORTED"),
    "payer-after_vote-observes": ("bank_a", "after_vote", {}, COMMITTED),
    "payee-before_apply-waits": ("bank_b", "before_apply", {"decision": COMMITTED}, COMMITTED),
    "payee-after_apply-observes": ("bank_b", "after_apply", {"decision": COMMITTED}, COMMITTED),
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with pytest.MonkeyPatch.context() as env:
        # Before boot: supervisord passes it to every node.
        env.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")])))
        with LocalCluster(tmp_path_factory.mktemp("hooks"), SPEC) as c:
            yield c


def answer(call: Any) -> str:
    """COMMITTED, or the reason of the refusal; an Aborted must be the whole of it."""
    try:
        return call().state
    except MiniupiError as e:
        assert isinstance(e, Aborted), e
        return e.reason


@pytest.mark.parametrize("case", list(CASES))
def test_a_hook_that_raises_leaves_the_payment_decided_and_the_audit_clean(cluster: LocalCluster,
                                                                         case: str) -> None:
    node, point, narrow, expected = CASES[case]
    data_dir = cluster.config.data_dir
    payer_user, payee_user = unique_name("payer"), unique_name("payee")
    payer, payee = f"{payer_user}@bank_a", f"{payee_user}@bank_b"
    txn_id = str(uuid.uuid4())
    with cluster.client() as client:
        client.register(payer, PASSWORD, OPENING)
        client.register(payee, PASSWORD, 0)
        client.login(payer, PASSWORD)
        faults.arm(data_dir, {"node": node, "point": point, "action": "raise", "txn_id": txn_id, **narrow})
        try:
            first = answer(lambda: client.pay(payee, AMOUNT, txn_id=txn_id))
            # Phase 2 runs after the answer: a fault there may fire a moment later.
            wait_for(f"the fault at {point} to fire",
                     lambda: [f["point"] for f in faults.fired(data_dir) if f.get("txn_id") == txn_id] == [point])
        finally:
            faults.disarm(data_dir)
        assert first == expected
        assert answer(lambda: client.pay(payee, AMOUNT, txn_id=txn_id)) == expected  # the stored answer

    report = asyncio.run(audit(cluster.config, settle_s=30))
    assert report.ok, report.violations
    assert report.in_doubt == []  # nothing left INITIATED, prepared or unacknowledged
    moved = expected == COMMITTED
    # Phase 2 ends, aborted or not: every bank acknowledges the decision.
    gateway, banks = wait_for("every bank to acknowledge the decision",
                              lambda: (reading := asyncio.run(collect(cluster.config)))[0][txn_id].acked and reading)
    by_name = {b.name: b for b in banks}
    assert gateway[txn_id].state == ("COMMITTED" if moved else "ABORTED")
    assert by_name["bank_a"].accounts[payer_user][:2] == (OPENING - AMOUNT * moved, 0)
    assert by_name["bank_b"].accounts[payee_user][:2] == (AMOUNT * moved, 0)
    # The node logs the plugin's failure for this payment (with its traceback, in the file).
    wait_for("the hook's failure in the node's log",
             lambda: [line for line in lines_with(cluster, node, txn_id) if " ERROR " in line or " WARNING " in line])
