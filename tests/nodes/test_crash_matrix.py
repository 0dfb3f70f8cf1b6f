"""The crash matrix: kill -9 a node at every step of 2PC, restart it, and the payment still ends right.

DESIGN.md section 2, "Recovery": presumed abort at the gateway for anything
without a durable decision, decisions resent until acknowledged, banks that
voted YES asking the gateway instead of deciding alone. Each case below arms
one fault with tests/plugins/faults.py (SIGKILL of the node at a hook, only
for that payment's id), pays once, lets supervisord restart the dead node,
then checks:

- the fault really fired (a crash that never happened proves nothing);
- the client's first answer is the expected one (a kill inside a call is
  UNAVAILABLE: the client cannot know the outcome);
- sending the same id again gives the final answer, and again after the
  cluster settles (idempotency across the crash);
- the audit of the whole cluster finds no violation and nothing in doubt;
- money moved exactly once (COMMITTED) or not at all (any refusal): the
  balances, the holds and each bank's record of the id say so.

The matrix. Payments go from a payer at bank_a (sqlite) to a payee at bank_b
(json); "payer"/"payee" below are their banks.

  payment that commits (payer has 10.00, pays 4.00):
    gateway  before_prepare        -> UNAVAILABLE, then ABORTED (presumed abort)
    gateway  before_decision       -> UNAVAILABLE, then ABORTED (presumed abort)
    gateway  after_decision        -> UNAVAILABLE, then COMMITTED (decision resent at restart)
    gateway  after_decision_sent   -> COMMITTED (the client is answered once the decision is
                                      durable, before the acks; the ack is never stored)
    gateway  after_decision_sent + payee before_apply
                                   -> phase 2 reached only the payer's bank, then both nodes died:
                                      COMMITTED
    payer/payee before_vote, after_vote
                                   -> ABORTED (that bank's prepare failed; a durable YES is
                                      released by the gateway's Abort)
    payer/payee before_apply, after_apply
                                   -> COMMITTED at once; the dead bank commits when it is back

  payment refused by the payer's bank (payer has 3.00, pays 4.00; the payer
  votes NO, so its after_vote and apply steps never run):
    gateway  before_decision       -> UNAVAILABLE, then ABORTED (presumed abort beats the refusal)
    gateway  after_decision        -> UNAVAILABLE, then insufficient funds
    gateway  after_decision_sent   -> insufficient funds
    payer    before_vote (NO)      -> ABORTED: the NO never reached the gateway
    payee    before_vote, after_vote, before_apply, after_apply
                                   -> insufficient funds (the payer's refusal is what the client hears)

  payment refused by the payee's bank (to an account bank_b does not have;
  now the payer votes YES and must release its hold on the abort):
    payer    before_vote, after_vote
                                   -> ABORTED (the payer's failure is the first refusal)
    payer    before_apply, after_apply
                                   -> unknown account (NOT_FOUND); the hold is released after restart
    payee    before_vote (NO)      -> ABORTED
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conftest import PASSWORD, PLUGIN_DIR, unique_name, wait_for
from miniupi.ops.audit import audit, collect
from miniupi.client.api import Client
from miniupi.errors import FailedPrecondition, MiniupiError, NotFound, Unauthenticated, Unavailable
from miniupi.contract.hookspecs import hookimpl
from miniupi.contract.manager import NodeHooks, plugin_manager
from miniupi.nodes.coordinator import Coordinator, Payment
from miniupi.nodes.gateway import GatewayServicer
from miniupi.nodes.patience import BUSY_IN_FLIGHT, PATIENCE_AT_REFERENCE_S, REFERENCE_RATE_PER_S, PreparePatience
from miniupi.nodes.group_commit import GroupCommit
from miniupi.nodes.participants import YES, Ack, Vote
from miniupi.ops.testing import LocalCluster
from miniupi.v1 import common_pb2, gateway_pb2

sys.path.insert(0, str(PLUGIN_DIR))  # the nodes load it from PYTHONPATH; the test arms it directly
import faults  # noqa: E402

pytestmark = pytest.mark.timeout(120)
TIMEOUT_S = 2  # prepare_timeout_s and call_timeout_s: a bank in doubt asks after 4 s
SPEC = {
    "cluster": {"name": "crash_matrix", "prepare_timeout_s": TIMEOUT_S, "call_timeout_s": TIMEOUT_S,
                "max_opening_deposit": "10000.00"},  # Register opens with deposits here
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
    "plugins": {"load": ["faults"]},
}
PAYER_BANK, PAYEE_BANK = "bank_a", "bank_b"
AMOUNT = 4_00
SETTLE_S = 30.0

COMMITTED, ABORTED = "COMMITTED", "Aborted"
# A client whose gateway died mid-call gets no status at all: NoAnswer, the transport failure.
INSUFFICIENT, UNKNOWN_ACCOUNT, UNAVAILABLE = "InsufficientFunds", "UnknownAccount", "NoAnswer"


@dataclass(frozen=True)
class Scenario:
    payer_opening: int
    payee_exists: bool
    answer: str  # what the client hears when nothing goes wrong


SCENARIOS = {
    "commits": Scenario(10_00, True, COMMITTED),
    "payer_refuses": Scenario(3_00, True, INSUFFICIENT),
    "payee_refuses": Scenario(10_00, False, UNKNOWN_ACCOUNT),
}


@dataclass(frozen=True)
class Case:
    scenario: str
    faults: tuple[dict[str, Any], ...]  # "node" is gateway, payer or payee
    first: str  # the answer to the call that crashed
    final: str  # the answer to the same id once everything is back
    notes: dict[str, Any] = field(default_factory=dict)


def gw(point: str, **match: Any) -> dict[str, Any]:
    return {"node": "gateway", "point": point, "action": "kill", **match}


def bank(side: str, point: str, **match: Any) -> dict[str, Any]:
    return {"node": side, "point": point, "action": "kill", **match}


CASES = {
    # -- controls: each scenario with no fault at all --
    **{f"{kind}/no-fault": Case(kind, (), s.answer, s.answer) for kind, s in SCENARIOS.items()},
    # -- a payment that commits --
    "commits/gateway-before_prepare": Case("commits", (gw("before_prepare"),), UNAVAILABLE, ABORTED),
    "commits/gateway-before_decision": Case("commits", (gw("before_decision", decision="COMMITTED"),),
                                            UNAVAILABLE, ABORTED),
    "commits/gateway-after_decision": Case("commits", (gw("after_decision", decision="COMMITTED"),),
                                           UNAVAILABLE, COMMITTED),
    # The answer leaves with the handler's return; after_decision_sent needs a whole bank round after
    # that (and the decision waits up to 50 ms for company first), so the client has the final answer.
    "commits/gateway-after_decision_sent": Case("commits", (gw("after_decision_sent", bank=PAYER_BANK),),
                                                COMMITTED, COMMITTED),
    "commits/gateway-after_decision_sent-one_bank_reached": Case(
        "commits", (bank("payee", "before_apply"), gw("after_decision_sent", bank=PAYER_BANK)),
        COMMITTED, COMMITTED),
    "commits/payer-before_vote": Case("commits", (bank("payer", "before_vote", yes=True),), ABORTED, ABORTED),
    "commits/payer-after_vote": Case("commits", (bank("payer", "after_vote"),), ABORTED, ABORTED),
    "commits/payer-before_apply": Case("commits", (bank("payer", "before_apply", decision="COMMITTED"),),
                                       COMMITTED, COMMITTED),
    "commits/payer-after_apply": Case("commits", (bank("payer", "after_apply", decision="COMMITTED"),),
                                      COMMITTED, COMMITTED),
    "commits/payee-before_vote": Case("commits", (bank("payee", "before_vote", yes=True),), ABORTED, ABORTED),
    "commits/payee-after_vote": Case("commits", (bank("payee", "after_vote"),), ABORTED, ABORTED),
    "commits/payee-before_apply": Case("commits", (bank("payee", "before_apply", decision="COMMITTED"),),
                                       COMMITTED, COMMITTED),
    "commits/payee-after_apply": Case("commits", (bank("payee", "after_apply", decision="COMMITTED"),),
                                      COMMITTED, COMMITTED),
    # -- a payment the payer's bank refuses --
    "payer_refuses/gateway-before_decision": Case("payer_refuses", (gw("before_decision", decision="ABORTED"),),
                                                  UNAVAILABLE, ABORTED),
    "payer_refuses/gateway-after_decision": Case("payer_refuses", (gw("after_decision", decision="ABORTED"),),
                                                 UNAVAILABLE, INSUFFICIENT),
    "payer_refuses/gateway-after_decision_sent": Case(
        "payer_refuses", (gw("after_decision_sent", bank=PAYER_BANK, decision="ABORTED"),), INSUFFICIENT, INSUFFICIENT),
    "payer_refuses/payer-before_vote": Case("payer_refuses", (bank("payer", "before_vote", yes=False),),
                                            ABORTED, ABORTED),
    "payer_refuses/payee-before_vote": Case("payer_refuses", (bank("payee", "before_vote", yes=True),),
                                            INSUFFICIENT, INSUFFICIENT),
    "payer_refuses/payee-after_vote": Case("payer_refuses", (bank("payee", "after_vote"),),
                                           INSUFFICIENT, INSUFFICIENT),
    "payer_refuses/payee-before_apply": Case("payer_refuses", (bank("payee", "before_apply", decision="ABORTED"),),
                                             INSUFFICIENT, INSUFFICIENT),
    "payer_refuses/payee-after_apply": Case("payer_refuses", (bank("payee", "after_apply", decision="ABORTED"),),
                                            INSUFFICIENT, INSUFFICIENT),
    # -- a payment the payee's bank refuses --
    "payee_refuses/payer-before_vote": Case("payee_refuses", (bank("payer", "before_vote", yes=True),),
                                            ABORTED, ABORTED),
    "payee_refuses/payer-after_vote": Case("payee_refuses", (bank("payer", "after_vote"),), ABORTED, ABORTED),
    "payee_refuses/payer-before_apply": Case("payee_refuses", (bank("payer", "before_apply", decision="ABORTED"),),
                                             UNKNOWN_ACCOUNT, UNKNOWN_ACCOUNT),
    "payee_refuses/payer-after_apply": Case("payee_refuses", (bank("payer", "after_apply", decision="ABORTED"),),
                                            UNKNOWN_ACCOUNT, UNKNOWN_ACCOUNT),
    "payee_refuses/payee-before_vote": Case("payee_refuses", (bank("payee", "before_vote", yes=False),),
                                            ABORTED, ABORTED),
}
SIDES = {"gateway": "gateway", "payer": PAYER_BANK, "payee": PAYEE_BANK}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with pytest.MonkeyPatch.context() as env:
        # Before boot: supervisord passes it to every node.
        env.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")])))
        with LocalCluster(tmp_path_factory.mktemp("crash_matrix"), SPEC) as c:
            yield c


def gateway_reaches_every_bank(cluster: LocalCluster, timeout_s: float = 15.0) -> None:
    """Wait until the gateway's own links reach every bank again.

    A bank that answers its own health check is not yet proof that the
    gateway's channel to it has reconnected, and a case's first answer must
    not depend on that. NOT_FOUND for an account nobody has can only come
    from the bank itself.
    """
    with cluster.client("admin") as admin:
        for name in cluster.config.banks:
            wait_for(f"the gateway to reach {name}", lambda: reached(admin, name), timeout_s=timeout_s)


def reached(admin: Client, bank_name: str) -> bool:
    try:
        admin.balance(f"nobody@{bank_name}")
    except NotFound:
        return True
    except Unavailable:
        return False
    raise AssertionError(f"nobody@{bank_name} has an account")


@pytest.fixture(autouse=True)
def every_node_up_and_nothing_armed(cluster: LocalCluster) -> Iterator[None]:
    """A failing case must not leave a fault armed or a node down for the next one."""
    gateway_reaches_every_bank(cluster)
    yield
    faults.disarm(cluster.config.data_dir)
    for node in cluster.config.nodes:
        with contextlib.suppress(ProcessLookupError, RuntimeError):
            cluster.kill_node(node.name, signal.SIGCONT)
        cluster.start_node(node.name)


def label(e: MiniupiError) -> str:
    """The error's class name; insufficient funds whether it arrives as its own class or as FAILED_PRECONDITION."""
    if isinstance(e, FailedPrecondition) and "insufficient funds" in e.message:
        return INSUFFICIENT
    return type(e).__name__


def answer(call: Any) -> tuple[str, str]:
    """("COMMITTED", "") or (the error's label, its message)."""
    try:
        return call().state, ""
    except MiniupiError as e:
        return label(e), e.message


def pay_until_decided(client: Client, payer: str, payee: str, txn_id: str, timeout_s: float = 30.0) -> tuple[str, str]:
    """Send the same id until the answer is final, with the same session: a restarted gateway keeps it."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.pay(payee, AMOUNT, txn_id=txn_id).state, ""
        except Unauthenticated as e:
            pytest.fail(f"the session of {payer} did not survive the crash: {e.message}")
        except Unavailable:
            pass
        except MiniupiError as e:
            return label(e), e.message
        if time.monotonic() > deadline:
            pytest.fail(f"{txn_id} still undecided after {timeout_s}s")
        time.sleep(0.2)


def restarted(cluster: LocalCluster, fired: list[dict[str, Any]]) -> None:
    """Wait until every node killed by a fault runs again with a new pid and serves."""
    for fault in fired:
        node, dead = fault["node"], fault["pid"]
        wait_for(f"{node} restarted by supervisord", lambda: cluster.supervisor.pid(node) not in (None, dead),
                 timeout_s=30)
        cluster.wait_ready(node, timeout=30)


def fired_for(data_dir: Path, txn_id: str, count: int) -> list[dict[str, Any]]:
    """The faults fired for `txn_id`, once all `count` have (else empty)."""
    got = [f for f in faults.fired(data_dir) if f.get("txn_id") == txn_id]
    return got if len(got) == count else []


def bank_reading(cluster: LocalCluster) -> tuple[dict[str, Any], dict[str, Any]]:
    gateway, banks = asyncio.run(collect(cluster.config))
    return gateway, {b.name: b for b in banks}


@pytest.mark.parametrize("case_id", list(CASES))
def test_killed_node_recovers_and_the_payment_ends_once_or_not_at_all(cluster: LocalCluster, case_id: str) -> None:
    case = CASES[case_id]
    scenario = SCENARIOS[case.scenario]
    data_dir = cluster.config.data_dir
    payer_user, payee_user = unique_name("payer"), unique_name("payee")
    payer, payee = f"{payer_user}@{PAYER_BANK}", f"{payee_user}@{PAYEE_BANK}"
    client = cluster.client()
    try:
        client.register(payer, PASSWORD, scenario.payer_opening)
        if scenario.payee_exists:
            client.register(payee, PASSWORD, 1_00)
        client.login(payer, PASSWORD)
        txn_id = str(uuid.uuid4())
        armed = [{**f, "node": SIDES[f["node"]], "txn_id": txn_id} for f in case.faults]
        faults.arm(data_dir, *armed)

        first = answer(lambda: client.pay(payee, AMOUNT, txn_id=txn_id))

        fired = wait_for("every armed fault to fire", lambda: fired_for(data_dir, txn_id, len(armed)),
                         timeout_s=15) if armed else []
        assert faults.armed(data_dir) == []
        restarted(cluster, fired)
        gateway_reaches_every_bank(cluster)
        final = pay_until_decided(client, payer, payee, txn_id)

        assert first[0] == case.first, f"first answer {first}"
        assert final[0] == case.final, f"final answer {final}"

        report = asyncio.run(audit(cluster.config, settle_s=SETTLE_S))
        assert report.ok, report.violations
        assert report.in_doubt == []

        # Once more after everything settled: the stored answer, and nothing moves.
        assert pay_until_decided(client, payer, payee, txn_id)[0] == case.final
        gateway, banks = bank_reading(cluster)
        moved = case.final == COMMITTED
        assert gateway[txn_id].state == ("COMMITTED" if moved else "ABORTED")
        assert gateway[txn_id].acked or not moved
        balance, held, _ = banks[PAYER_BANK].accounts[payer_user]
        assert (balance, held) == (scenario.payer_opening - AMOUNT * moved, 0)
        if scenario.payee_exists:
            balance, held, _ = banks[PAYEE_BANK].accounts[payee_user]
            assert (balance, held) == (1_00 + AMOUNT * moved, 0)
        payer_record = banks[PAYER_BANK].txns.get(txn_id)
        payee_record = banks[PAYEE_BANK].txns.get(txn_id)
        if moved:
            assert payer_record == ("COMMITTED", [(payer_user, -AMOUNT, payee)])
            assert payee_record == ("COMMITTED", [(payee_user, AMOUNT, payer)])
        else:
            assert payer_record is None or payer_record[0] == "ABORTED", payer_record
            assert payee_record is None or payee_record[0] == "ABORTED", payee_record
    finally:
        client.close()


def test_the_matrix_covers_every_2pc_step_on_every_node() -> None:
    """Each hook of hookspecs.py is killed at least once on each node where it runs."""
    covered = {(f["node"], f["point"]) for case in CASES.values() for f in case.faults}
    gateway_points = {"before_prepare", "before_decision", "after_decision", "after_decision_sent"}
    bank_points = {"before_vote", "after_vote", "before_apply", "after_apply"}
    expected = {("gateway", p) for p in gateway_points} | {(s, p) for s in ("payer", "payee") for p in bank_points}
    assert expected <= covered


# -- the commit point, in process: nobody hears a decision before it is durable ----------------
#
# Killing a node cannot land inside the decision write itself (the hooks sit before and after
# it), so these drive the Coordinator directly, with banks that vote YES at once and a store
# whose decision write the test holds back or fails. They pin DESIGN.md section 2, step 5: "The
# decision is made durable at the gateway before anyone is told: that write is the commit point."


class YesLinks:
    """The coordinator's participants (miniupi/nodes/participants.py), every bank voting YES and acknowledging."""

    def __init__(self) -> None:
        self.patience: list[float] = []  # each prepare's, in the order sent
        self.decisions: list[tuple[str, bool]] = []  # (bank, commit), in the order sent

    async def prepare(self, bank: str, txn_id: str, currency: str, legs: Any, patience_s: float = 0.0) -> Vote:
        self.patience.append(patience_s)
        return YES

    async def decide(self, bank: str, txn_id: str, commit: bool) -> Ack:
        self.decisions.append((bank, commit))
        return Ack(True)

    def __contains__(self, bank: str) -> bool:
        return True


class DecisionStore:
    """A store whose write of a decision (COMMITTED/ABORTED) waits for `release`, or fails
    (always, or the first `fail_first` times)."""

    def __init__(self, fail: bool = False, fail_first: int = 0) -> None:
        self.fail, self.fail_first = fail, fail_first
        self.deciding = threading.Event()
        self.release = threading.Event()
        self.durable: dict[str, str] = {}
        self.records: dict[tuple[str, str], Any] = {}

    def load(self, tables: Any = None) -> dict[str, dict[str, Any]]:
        return {}

    def get(self, table: str, key: str) -> Any:
        return self.records.get((table, key))  # a payment acknowledged by every bank is read back

    def scan(self, table: str) -> Iterator[tuple[str, Any]]:
        return iter(())

    def write(self, batch: Any) -> None:
        txns = [put for put in batch if put.table == "txns"]
        if any(put.value and put.value.get("state") != "INITIATED" for put in txns):
            self.deciding.set()
            self.release.wait(10)
            if self.fail or self.fail_first > 0:
                self.fail_first -= 1
                raise OSError(28, "No space left on device")
        for put in txns:
            self.durable[put.key] = put.value["state"]
        self.records.update(((put.table, put.key), put.value) for put in batch)

    def close(self) -> None:
        pass


async def _acked(coordinator: Coordinator, txn_id: str, within_s: float) -> bool:
    """Whether phase 2 of `txn_id` is acknowledged by every bank within `within_s`."""
    for _ in range(int(within_s * 100)):
        if coordinator.txns[txn_id].acked:
            return True
        await asyncio.sleep(0.01)
    return coordinator.txns[txn_id].acked


def test_a_plugin_hook_that_raises_after_a_bank_acknowledged_does_not_stop_phase_two() -> None:
    """The hook runs once a bank has acknowledged; its failure is the plugin's, not the bank's. Taken
    for a missing acknowledgement it sent the decision again, and the resend's own call of the hook
    ended the resend task: the payment stayed unacknowledged, resent after every restart."""
    fired: list[str] = []

    class AuditTrail:
        @hookimpl
        def miniupi_after_decision_sent(self, bank: str) -> None:
            fired.append(bank)
            raise RuntimeError("the plugin's audit trail is down")

    async def scenario() -> bool:
        store = DecisionStore()
        store.release.set()
        coordinator = Coordinator(YesLinks(), GroupCommit(store), {}, TIMEOUT_S, TIMEOUT_S,  # type: ignore[arg-type]
                                  NodeHooks(plugin_manager(AuditTrail()), None))
        txn_id = str(uuid.uuid4())
        assert await coordinator.pay(Payment(txn_id, "p@bank_a", "q@bank_b", AMOUNT, "INR")) == "COMMITTED"
        return await _acked(coordinator, txn_id, within_s=1.0)  # phase 2 runs after the answer

    assert asyncio.run(scenario())
    assert sorted(fired) == ["bank_a", "bank_b"]  # every acknowledgement still reaches the plugin, once


def test_prepares_wait_for_company_only_while_many_payments_are_in_flight() -> None:
    async def scenario() -> tuple[list[float], list[float], int]:
        store = DecisionStore()
        store.release.set()
        links = YesLinks()
        coordinator = Coordinator(links, GroupCommit(store), {}, TIMEOUT_S, TIMEOUT_S)  # type: ignore[arg-type]
        ticks = itertools.count()  # each link sees a prepare every 1 / REFERENCE_RATE_PER_S
        coordinator._patience = PreparePatience(lambda: next(ticks) / (2 * REFERENCE_RATE_PER_S))
        await coordinator.pay(Payment(str(uuid.uuid4()), "p@bank_a", "q@bank_b", AMOUNT, "INR"))
        alone, links.patience = links.patience, []
        await asyncio.gather(*(coordinator.pay(Payment(str(uuid.uuid4()), "p@bank_a", "q@bank_b", AMOUNT, "INR"))
                               for _ in range(BUSY_IN_FLIGHT + 4)))
        return alone, links.patience, coordinator._in_flight

    alone, crowd, in_flight_after = asyncio.run(scenario())
    assert alone == [0.0, 0.0]  # a lone payer's prepares go at once
    assert crowd.count(0.0) < len(crowd) and max(crowd) == pytest.approx(PATIENCE_AT_REFERENCE_S)
    assert in_flight_after == 0


def test_a_bank_asking_for_the_decision_never_hears_one_that_is_not_yet_durable() -> None:
    """A bank in doubt asks GetDecision. If it hears COMMITTED before the gateway's write is
    durable and the gateway then dies, the restarted gateway presumes abort: one bank commits,
    the other aborts."""
    txn_id = str(uuid.uuid4())

    async def scenario() -> list[tuple[str, bool]]:
        store = DecisionStore()
        coordinator = Coordinator(YesLinks(), GroupCommit(store), {}, TIMEOUT_S, TIMEOUT_S)  # type: ignore[arg-type]
        servicer = GatewayServicer(SimpleNamespace(call_timeout_s=TIMEOUT_S), coordinator, YesLinks(), None, None)  # type: ignore[arg-type]
        paying = asyncio.create_task(coordinator.pay(Payment(txn_id, "p@bank_a", "q@bank_b", AMOUNT, "INR")))
        await asyncio.to_thread(store.deciding.wait, 5)
        heard: list[tuple[str, bool]] = []  # (state told to the bank, was it durable by then)

        async def ask() -> None:
            reply = await servicer.GetDecision(gateway_pb2.GetDecisionRequest(txn_id=txn_id), None)
            heard.append((common_pb2.TxnState.Name(reply.state), txn_id in store.durable
                          and store.durable[txn_id] != "INITIATED"))

        asking = asyncio.create_task(ask())
        await asyncio.sleep(0.2)  # the write is still held back
        store.release.set()
        await asyncio.gather(paying, asking)
        return heard

    heard = asyncio.run(scenario())
    assert heard and all(durable or state not in ("COMMITTED", "ABORTED") for state, durable in heard), heard


def test_a_decision_that_failed_to_reach_the_disk_is_never_reported() -> None:
    """The decision write fails (disk full): after a restart the gateway will presume abort, so
    neither a bank (GetDecision) nor the client repeating the id may be told COMMITTED now."""
    txn_id = str(uuid.uuid4())
    payment = Payment(txn_id, "p@bank_a", "q@bank_b", AMOUNT, "INR")

    async def scenario() -> tuple[str, str]:
        store = DecisionStore(fail=True)
        store.release.set()
        coordinator = Coordinator(YesLinks(), GroupCommit(store), {}, TIMEOUT_S, TIMEOUT_S)  # type: ignore[arg-type]
        with contextlib.suppress(Exception):
            await coordinator.pay(payment)
        told_bank = coordinator.decision(txn_id)
        try:
            told_client = await coordinator.pay(payment)
        except MiniupiError as e:
            told_client = type(e).__name__
        return told_bank, told_client

    told_bank, told_client = asyncio.run(scenario())
    assert told_bank != "COMMITTED", "GetDecision would tell a bank to commit a payment the disk never saw decided"
    assert told_client != "COMMITTED", "the client is told COMMITTED; after a restart the payment is ABORTED"


def test_a_payment_whose_decision_write_failed_is_aborted_once_the_store_writes_again() -> None:
    """Its banks hold the payer's money until they hear a decision. The gateway left such a
    payment undecided until a restart presumed abort; now it writes the abort itself as soon as
    the store takes writes again, and tells the banks."""
    txn_id = str(uuid.uuid4())
    payment = Payment(txn_id, "p@bank_a", "q@bank_b", AMOUNT, "INR")

    async def scenario() -> tuple[str | None, list[tuple[str, bool]], list[str | None], str, str]:
        store = DecisionStore(fail_first=1)
        store.release.set()
        told_when: list[str | None] = []  # what the disk held for the payment each time a bank was told

        class Links(YesLinks):
            async def decide(self, bank: str, txn: str, commit: bool) -> Any:
                told_when.append(store.durable.get(txn))
                return await super().decide(bank, txn, commit)

        links = Links()
        coordinator = Coordinator(links, GroupCommit(store), {}, TIMEOUT_S, TIMEOUT_S)  # type: ignore[arg-type]
        with pytest.raises(Unavailable):
            await coordinator.pay(payment)
        await _acked(coordinator, txn_id, within_s=5.0)  # the first retry comes within 0.2 s
        try:
            again = await coordinator.pay(payment)
        except MiniupiError as e:
            again = type(e).__name__
        return store.durable.get(txn_id), sorted(links.decisions), told_when, coordinator.decision(txn_id), again

    durable, decisions, told_when, told_bank, again = asyncio.run(scenario())
    assert durable == "ABORTED"
    assert decisions == [("bank_a", False), ("bank_b", False)]
    assert told_when == ["ABORTED", "ABORTED"]  # the banks heard of the abort only once it was on disk
    assert told_bank == "ABORTED"
    assert again == "Aborted"


class HeldStore:
    """A store whose writer holds the batch carrying `hold` until `release`, and fails any batch
    writing `fail` (deleting it goes through), as a disk that fills up while a write is under way."""

    def __init__(self) -> None:
        self.hold, self.fail = "", ""
        self.holding, self.release = threading.Event(), threading.Event()
        self.records: dict[tuple[str, str], Any] = {}

    def load(self, tables: Any = None) -> dict[str, dict[str, Any]]:
        return {}

    def get(self, table: str, key: str) -> Any:
        return self.records.get((table, key))

    def scan(self, table: str) -> Iterator[tuple[str, Any]]:
        return iter(())

    def write(self, batch: Any) -> None:
        keys = {put.key for put in batch}
        if self.hold in keys:
            self.holding.set()
            self.release.wait(10)
        if any(put.key == self.fail and put.value is not None for put in batch):
            raise OSError(28, "No space left on device")
        self.records.update(((put.table, put.key), put.value) for put in batch)

    def close(self) -> None:
        pass


def test_a_repeated_payment_whose_barrier_shares_a_failing_write_is_told_to_ask_again() -> None:
    """A repeat is answered from memory only after a barrier write. When that barrier went down
    in the same batch as another payment's failing write, the repeat got the raw OSError, which
    the client saw as gRPC UNKNOWN; it is UNAVAILABLE, which clients retry, like any refused write."""
    done, held, failing = (str(uuid.uuid4()) for _ in range(3))

    async def scenario() -> BaseException | str:
        store = HeldStore()
        coordinator = Coordinator(YesLinks(), GroupCommit(store, inline_after_quiet_s=None), {},  # type: ignore[arg-type]
                                  TIMEOUT_S, TIMEOUT_S)
        earlier = Payment(done, "p@bank_a", "q@bank_b", AMOUNT, "INR")
        assert await coordinator.pay(earlier) == "COMMITTED"
        store.hold, store.fail = held, failing
        holding = asyncio.create_task(coordinator.pay(Payment(held, "p@bank_a", "q@bank_b", AMOUNT, "INR")))
        await asyncio.to_thread(store.holding.wait, 5)  # the writer is busy: what follows queues together
        refused = asyncio.create_task(coordinator.pay(Payment(failing, "p@bank_a", "q@bank_b", AMOUNT, "INR")))
        repeat = asyncio.create_task(coordinator.pay(earlier))
        await asyncio.sleep(0.05)
        store.release.set()
        with contextlib.suppress(Unavailable):  # its decision, if queued behind the failing write, fails with it
            await holding
        with pytest.raises(Unavailable):
            await refused
        try:
            return await repeat
        except BaseException as e:  # noqa: BLE001 - what the servicer would see
            return e

    answer = asyncio.run(scenario())
    assert isinstance(answer, Unavailable), repr(answer)
    assert "No space left on device" in answer.message
