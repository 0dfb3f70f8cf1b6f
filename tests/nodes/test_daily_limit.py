"""The daily limit: what one payer may send per calendar day, enforced by the gateway without a race.

One cluster for the module (its gateway on json) with daily_limit 100.00 in
Asia/Kolkata and per-account exceptions in a top-level [daily_limits] table. Every test
opens fresh payers, so each starts the day at zero. The attacks: payments
sent at once that together pass the limit, refusals and aborts that must
free their share, refunds that must not count against the refunder,
collect approvals that must, and a gateway killed with payments counted
before it and one in flight when it dies. The calendar day itself is
checked in process against the zone's midnight, which a live cluster
cannot be made to cross.
"""
from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from conftest import PASSWORD, PLUGIN_DIR, me, money, refusal, unique_name
from dict_store import DictStore
from miniupi.client.api import AsyncClient, Client
from miniupi.contract.store import Put
from miniupi.errors import DailyLimitReached, InsufficientFunds, UnknownAccount
from miniupi.nodes.coordinator import Payment, Txn
from miniupi.nodes.limits import DailyLimit
from miniupi.ops.testing import LocalCluster
from miniupi.states import TxnState
from upi_helpers import (
    assert_cluster_clean,
    every_node_running,
    faults_on_pythonpath,
    kill_and_restart,
    outcome,
    request_state,
    until_final,
    wait_restarted,
    gateway_reaches_every_bank,
    tiny_gateway_cache,
)

sys.path.insert(0, str(PLUGIN_DIR))  # the nodes load it from PYTHONPATH; the test arms it directly
import faults  # noqa: E402

pytestmark = pytest.mark.timeout(180)

LIMIT = 100_00
BIG, TIGHT, UNLIMITED = "bigspender@bank_a", "tight@bank_a", "unlimited@bank_b"
SPEC = {
    "cluster": {"name": "limits", "prepare_timeout_s": 2, "call_timeout_s": 2,
                "max_opening_deposit": "10000.00", "daily_limit": "100.00", "time_zone": "Asia/Kolkata"},
    "gateway": {"storage": "json"},  # the other modules run it on sqlite: requests and limits survive both
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
    "daily_limits": {BIG: "500.00", TIGHT: "10.00", UNLIMITED: "0.00"},
    "plugins": {"load": ["faults"]},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with faults_on_pythonpath(), tiny_gateway_cache(), LocalCluster(tmp_path_factory.mktemp("limits"), SPEC) as c:
        yield c


@pytest.fixture(autouse=True)
def every_node_up_afterwards(cluster: LocalCluster) -> Iterator[None]:
    yield
    faults.disarm(cluster.config.data_dir)
    every_node_running(cluster)


def over_the_limit(call: Callable[[], object]) -> DailyLimitReached:
    e = refusal(call)
    assert isinstance(e, DailyLimitReached) and e.code == "FAILED_PRECONDITION", e
    assert e.message.startswith("daily limit of "), e.message
    return e


def pay_all_at_once(cluster: LocalCluster, payer: Client, to: str, amounts: list[int]) -> list[object]:
    """Every payment sent at once, half from each of two logins of the payer (two devices)."""
    with cluster.client() as c:
        other = c.login(me(payer), PASSWORD)

    async def send() -> list[object]:
        async with AsyncClient(cluster.config, session=payer.session) as a, \
                AsyncClient(cluster.config, session=other) as b:
            return list(await asyncio.gather(*((a if i % 2 else b).pay(to, amount)
                                               for i, amount in enumerate(amounts)), return_exceptions=True))

    return asyncio.run(send())


# -- the bound, and races for it --------------------------------------------------------


def test_two_payments_at_once_that_together_pass_the_limit_never_both_commit(
        cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payee = new_user("bank_b")
    for _ in range(5):
        payer = new_user("bank_a", 200_00)
        answers = [outcome(a) for a in pay_all_at_once(cluster, payer, me(payee), [60_00, 60_00])]
        assert sorted(answers) == ["COMMITTED", "DailyLimitReached"], answers
        assert money(payer) == (140_00, 140_00)
    assert money(payee) == (5 * 60_00, 5 * 60_00)


def test_many_payments_at_once_fill_the_limit_exactly_and_not_one_paisa_more(
        cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payer, payee = new_user("bank_a", 500_00), new_user("bank_b")

    answers = [outcome(a) for a in pay_all_at_once(cluster, payer, me(payee), [20_00] * 10)]

    assert answers.count("COMMITTED") == 5 and answers.count("DailyLimitReached") == 5, answers
    e = over_the_limit(lambda: payer.pay(me(payee), 1))
    assert "100.00 INR" in e.message and "100.00 INR today" in e.message and "Asia/Kolkata" in e.message, e.message
    assert money(payer) == (400_00, 400_00)
    assert money(payee) == (100_00, 100_00)


def test_the_limit_is_per_payer_and_receiving_money_does_not_raise_it(new_user: Callable[..., Client]) -> None:
    a, b = new_user("bank_a", 300_00), new_user("bank_b", 300_00)
    assert a.pay(me(b), 100_00).state == "COMMITTED"
    over_the_limit(lambda: a.pay(me(b), 1))
    assert b.pay(me(a), 100_00).state == "COMMITTED"  # b has its own day
    over_the_limit(lambda: a.pay(me(b), 1))
    over_the_limit(lambda: b.pay(me(a), 1))


def test_a_payment_over_the_limit_by_itself_is_refused_and_leaves_no_trace(new_user: Callable[..., Client]) -> None:
    payer, payee = new_user("bank_a", 300_00), new_user("bank_b")
    txn_id = str(uuid.uuid4())
    over_the_limit(lambda: payer.pay(me(payee), 100_01, txn_id=txn_id))
    assert outcome(refusal(lambda: payer.transaction(txn_id))) == "NotFound"
    assert payer.pay(me(payee), 100_00, txn_id=txn_id).state == "COMMITTED"  # the id stayed free


def test_a_repeat_of_a_payment_that_used_up_the_day_gets_its_answer_not_the_limit(
        cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payer, payee = new_user("bank_a", 300_00), new_user("bank_b")
    txn_id = str(uuid.uuid4())
    answers = [outcome(a) for a in asyncio.run(_same_id_at_once(cluster, payer, me(payee), txn_id, 100_00, 4))]
    assert answers == ["COMMITTED"] * 4, answers
    assert payer.pay(me(payee), 100_00, txn_id=txn_id).state == "COMMITTED"
    over_the_limit(lambda: payer.pay(me(payee), 1))
    assert money(payer) == (200_00, 200_00)


async def _same_id_at_once(cluster: LocalCluster, payer: Client, to: str, txn_id: str, amount: int,
                           times: int) -> list[object]:
    async with AsyncClient(cluster.config, session=payer.session) as c:
        return list(await asyncio.gather(*(c.pay(to, amount, txn_id=txn_id) for _ in range(times)),
                                         return_exceptions=True))


# -- what frees a share, and what does not count -------------------------------------------


def test_a_refused_payment_frees_its_share_of_the_day(new_user: Callable[..., Client]) -> None:
    payer, payee, friend = new_user("bank_a", 10_00), new_user("bank_b"), new_user("bank_b", 200_00)

    assert isinstance(refusal(lambda: payer.pay(me(payee), 80_00)), InsufficientFunds)
    assert friend.pay(me(payer), 100_00).state == "COMMITTED"
    assert isinstance(refusal(lambda: payer.pay(f"{unique_name()}@bank_b", 90_00)), UnknownAccount)

    assert payer.pay(me(payee), 100_00).state == "COMMITTED"  # nothing of the refused 170.00 counts
    over_the_limit(lambda: payer.pay(me(payee), 1))


def test_refunds_do_not_count_against_the_refunder_and_do_not_give_the_payer_a_new_day(
        new_user: Callable[..., Client]) -> None:
    payer, shop, other = new_user("bank_a", 200_00), new_user("bank_b", 200_00), new_user("bank_a")
    original = str(uuid.uuid4())
    assert payer.pay(me(shop), 100_00, txn_id=original).state == "COMMITTED"
    assert shop.pay(me(other), 100_00).state == "COMMITTED"  # the shop's own day is used up
    over_the_limit(lambda: shop.pay(me(other), 1))

    assert shop.refund(original, 60_00).state == "COMMITTED"
    assert shop.refund(original).state == "COMMITTED"  # the 40.00 left

    # The payer sent 100.00 today; having it back does not undo the sending.
    over_the_limit(lambda: payer.pay(me(shop), 1))
    assert money(payer) == (200_00, 200_00)
    assert money(shop) == (100_00, 100_00)


def test_approving_a_collect_request_counts_against_the_payer(cluster: LocalCluster,
                                                             new_user: Callable[..., Client]) -> None:
    payer, requester = new_user("bank_a", 300_00), new_user("bank_b")
    assert payer.pay(me(requester), 30_00).state == "COMMITTED"
    big = requester.request_money(me(payer), 80_00)
    fits = requester.request_money(me(payer), 70_00)

    over_the_limit(lambda: payer.approve(big.request_id))
    over_the_limit(lambda: payer.approve(big.request_id))
    assert request_state(cluster, big.request_id) == "PENDING"  # refused before any payment: still open

    assert payer.approve(fits.request_id).state == "COMMITTED"
    assert money(payer) == (200_00, 200_00)
    over_the_limit(lambda: payer.approve(big.request_id))


def test_per_account_exceptions_to_the_limit(cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payee = new_user("bank_b")
    clients = {}
    for account in (BIG, TIGHT, UNLIMITED):
        c = cluster.client()
        c.register(account, PASSWORD, 2000_00)
        c.login(account, PASSWORD)
        clients[account] = c
    try:
        big, tight, unlimited = clients[BIG], clients[TIGHT], clients[UNLIMITED]
        assert big.pay(me(payee), 300_00).state == "COMMITTED"
        over_the_limit(lambda: big.pay(me(payee), 200_01))
        assert big.pay(me(payee), 200_00).state == "COMMITTED"
        over_the_limit(lambda: big.pay(me(payee), 1))

        e = over_the_limit(lambda: tight.pay(me(payee), 10_01))
        assert "10.00 INR" in e.message, e.message
        assert tight.pay(me(payee), 10_00).state == "COMMITTED"

        for _ in range(3):  # "0.00" for an account: no limit at all
            assert unlimited.pay(me(payee), 500_00).state == "COMMITTED"
        assert money(unlimited) == (500_00, 500_00)
    finally:
        for c in clients.values():
            c.close()


# -- restarts ---------------------------------------------------------------------------


def test_payments_before_a_gateway_crash_still_count_and_one_in_flight_at_the_crash_does_not(
        cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payer, payee = new_user("bank_a", 300_00), new_user("bank_b")
    assert payer.pay(me(payee), 40_00).state == "COMMITTED"
    in_flight = str(uuid.uuid4())
    dead = cluster.supervisor.pid("gateway")
    assert dead is not None
    faults.arm(cluster.config.data_dir, {"node": "gateway", "point": "before_decision", "txn_id": in_flight,
                                         "action": "kill"})

    assert outcome(refusal(lambda: payer.pay(me(payee), 50_00, txn_id=in_flight))) == "NoAnswer"
    assert faults.disarm(cluster.config.data_dir) == []
    wait_restarted(cluster, "gateway", dead)
    gateway_reaches_every_bank(cluster)

    assert outcome(until_final(lambda: payer.pay(me(payee), 50_00, txn_id=in_flight))) == "Aborted"
    over_the_limit(lambda: payer.pay(me(payee), 60_01))  # the 40.00 before the crash counts
    assert payer.pay(me(payee), 60_00).state == "COMMITTED"  # the aborted 50.00 does not

    kill_and_restart(cluster, "gateway")
    over_the_limit(lambda: payer.pay(me(payee), 1))
    assert money(payer) == (200_00, 200_00)
    assert_cluster_clean(cluster)


# -- the calendar day, in process --------------------------------------------------------


def _limit(zone: str, store: DictStore | None = None) -> DailyLimit:
    cluster = SimpleNamespace(zone=ZoneInfo(zone), time_zone=zone, currency="INR",
                              daily_limit_of=lambda account: LIMIT)
    return DailyLimit(cluster, store)  # type: ignore[arg-type]


def _at(zone: str, *when: int) -> float:
    return datetime(*when, tzinfo=ZoneInfo(zone)).timestamp()  # type: ignore[misc]


def _payment(amount: int, refund_of: str = "") -> Payment:
    return Payment(str(uuid.uuid4()), "p@bank_a", "q@bank_b", amount, "INR", refund_of=refund_of)


def test_the_day_is_the_cluster_zones_calendar_day() -> None:
    ist = "Asia/Kolkata"
    limit = _limit(ist)
    limit.admit(_payment(LIMIT), _at(ist, 2026, 3, 1, 5, 0, 0))  # 23:30 on 28 February in UTC
    # Midnight in UTC is 05:30 in Kolkata: it starts nothing.
    for when in (_at(ist, 2026, 3, 1, 6, 0, 0), _at(ist, 2026, 3, 1, 23, 59, 59)):
        with pytest.raises(DailyLimitReached):
            limit.admit(_payment(1), when)
    # Midnight in Kolkata does.
    limit.admit(_payment(LIMIT), _at(ist, 2026, 3, 2, 0, 0, 1))
    assert limit.sent_today("p@bank_a", _at(ist, 2026, 3, 2, 12, 0, 0)) == LIMIT

    utc = _limit("UTC")
    utc.admit(_payment(LIMIT), _at("UTC", 2026, 3, 1, 23, 0, 0))
    with pytest.raises(DailyLimitReached):  # 04:29 in Kolkata the next day, but still the 1st in UTC
        utc.admit(_payment(1), _at("UTC", 2026, 3, 1, 23, 59, 0))
    utc.admit(_payment(LIMIT), _at("UTC", 2026, 3, 2, 0, 0, 0))


def test_an_abort_after_midnight_gives_back_nothing_of_the_new_day() -> None:
    ist = "Asia/Kolkata"
    limit = _limit(ist)
    yesterday = _at(ist, 2026, 3, 1, 23, 59, 0)
    late = _payment(60_00)
    limit.admit(late, yesterday)
    today = _at(ist, 2026, 3, 2, 0, 1, 0)
    limit.admit(_payment(LIMIT), today)
    limit.release(Txn(late, TxnState.ABORTED, created_at=yesterday))
    with pytest.raises(DailyLimitReached):
        limit.admit(_payment(1), today)
    assert limit.sent_today("p@bank_a", today) == LIMIT


def test_refunds_never_count_and_a_restart_counts_only_todays_committed_payments() -> None:
    limit = _limit("UTC")
    for _ in range(5):
        limit.admit(_payment(LIMIT, refund_of=str(uuid.uuid4())), time.time())
    assert limit.sent_today("p@bank_a", time.time()) == 0

    store = DictStore()
    limit = _limit("UTC", store)
    now = time.time()
    for amount, state, created_at, refund_of in [
            (30_00, TxnState.COMMITTED, now, ""),
            (40_00, TxnState.ABORTED, now, ""),
            (50_00, TxnState.COMMITTED, now, "x"),  # a refund
            (70_00, TxnState.COMMITTED, now - 2 * 86400, ""),  # another day
    ]:
        p = Payment(str(uuid.uuid4()), "p@bank_a", "q@bank_b", amount, "INR", refund_of=refund_of)
        limit.admit(p, created_at)
        txn = Txn(p, TxnState.INITIATED, created_at=created_at)
        # As the coordinator writes a decision: the record and the guard's row in one batch.
        store.write([Put("txns", p.txn_id, {**txn.record(), "state": state}), *limit.deciding(txn, state)])
        limit.decided(txn, state, True)
    limit.admit(_payment(20_00), now)  # in flight when the gateway dies: a restart presumes it aborted
    assert limit.sent_today("p@bank_a", now) == 50_00

    store.reads.clear()
    restarted = _limit("UTC", store)
    assert restarted.sent_today("p@bank_a", now) == 30_00
    assert store.reads["scan", "txns"] == 0 and store.gets("daily") == 1  # one row: this payer's day
