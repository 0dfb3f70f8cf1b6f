"""Beyond paying, through the real command line and the REPL: txn, refund, request, requests,
approve, decline, the daily limit and settlement.

One cluster for the module, with three banks, a daily limit and one
per-account override; every test opens its own accounts and uses client
homes of its own. Each refusal is checked as a user meets it: a non-zero
exit, exactly one line on stderr, no traceback.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pexpect
import pytest

from miniupi.errors import PermissionDenied
from miniupi.ops.testing import LocalCluster
from conftest import PASSWORD, open_account, unique_name
from conftest import cli_fails as fails, cli_login as login, cli_ok as ok

pytestmark = pytest.mark.timeout(120)

ZONE = "Asia/Kolkata"
SPEC = {
    "cluster": {"name": "upi", "prepare_timeout_s": 3, "call_timeout_s": 3, "max_opening_deposit": "10000.00",
                "daily_limit": "1000.00", "time_zone": ZONE},
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}, "bank_c": {"storage": "sqlite"}},
    # Registered by the daily limit test: its own limit, below the cluster's.
    "daily_limits": {"thrifty@bank_a": "30.00"},
}
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("upi"), SPEC) as c:
        yield c


@pytest.fixture(autouse=True)
def gateway_up_afterwards(cluster: LocalCluster) -> Iterator[None]:
    yield
    cluster.start_node("gateway")


def customer(cluster: LocalCluster, home: Path, bank: str = "bank_a", initial: int = 0) -> str:
    """A fresh account, logged in at the command line in `home`."""
    account = open_account(cluster, bank, initial)
    login(cluster, account, home)
    return account


def pay(cluster: LocalCluster, home: Path, to: str, amount: str) -> str:
    """Pay through the command line; returns the txn id."""
    answer = json.loads(ok(cluster, "pay", to, amount, "--json", home=home))
    assert answer["state"] == "COMMITTED", answer
    return answer["txn_id"]


def balance(cluster: LocalCluster, account: str) -> int:
    with cluster.client() as c:
        c.login(account, PASSWORD)
        return c.balance().balance


# -- txn ------------------------------------------------------------------------------


def test_txn_shows_a_payment_to_its_payer_and_its_payee_in_words_and_json(cluster: LocalCluster,
                                                                          tmp_path: Path) -> None:
    payer = customer(cluster, tmp_path / "payer", "bank_a", 50_00)
    payee = customer(cluster, tmp_path / "payee", "bank_b")
    txn_id = pay(cluster, tmp_path / "payer", payee, "12.50")

    for home in (tmp_path / "payer", tmp_path / "payee"):
        lines = ok(cluster, "txn", txn_id, home=home).splitlines()
        assert lines[0] == f"txn {txn_id}: COMMITTED"
        assert lines[1:4] == ["  amount     12.50 INR", f"  from       {payer}", f"  to         {payee}"]
        assert re.fullmatch(r"  created    \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", lines[4]), lines
        assert re.fullmatch(r"  decided    \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", lines[5]), lines
        assert lines[6:] == ["  refunded   0.00 of 12.50 INR"]

    data = json.loads(ok(cluster, "txn", txn_id, "--json", home=tmp_path / "payee"))
    assert {k: data[k] for k in ("txn_id", "state", "from", "to", "amount", "currency", "refund_of", "request_id",
                                 "refusal", "refunds", "refunded")} == {
        "txn_id": txn_id, "state": "COMMITTED", "from": payer, "to": payee, "amount": "12.50", "currency": "INR",
        "refund_of": None, "request_id": None, "refusal": None, "refunds": [], "refunded": "0.00"}
    assert 0 < data["created_at"] <= data["decided_at"] <= time.time()


def test_txn_of_someone_elses_payment_is_not_found_exactly_as_an_unknown_id(cluster: LocalCluster,
                                                                            tmp_path: Path) -> None:
    payer = customer(cluster, tmp_path / "payer", "bank_a", 10_00)
    payee = open_account(cluster, "bank_b", 0)
    customer(cluster, tmp_path / "stranger", "bank_a")
    txn_id = pay(cluster, tmp_path / "payer", payee, "1.00")
    unknown = str(uuid.uuid4())

    stranger = fails(cluster, "txn", txn_id, home=tmp_path / "stranger")
    nobody = fails(cluster, "txn", unknown, home=tmp_path / "stranger")

    assert stranger == f"miniupi: no transaction {txn_id}"
    assert stranger.replace(txn_id, unknown) == nobody  # nothing tells a real id from a made-up one
    assert payer not in stranger and payee not in stranger
    assert fails(cluster, "txn", "not-an-id", home=tmp_path / "stranger") == \
        "miniupi: transaction id is not a UUID: 'not-an-id'"
    assert fails(cluster, "txn", txn_id, home=tmp_path / "logged-out") == \
        "miniupi: not logged in; run: miniupi login USER@BANK"


def test_txn_admin_reads_any_transaction_with_the_admin_certificate(cluster: LocalCluster, tmp_path: Path) -> None:
    customer(cluster, tmp_path / "payer", "bank_a", 10_00)
    payee = open_account(cluster, "bank_c", 0)
    txn_id = pay(cluster, tmp_path / "payer", payee, "2.00")

    out = ok(cluster, "txn", txn_id, "--admin", home=tmp_path / "admin-has-no-session")

    assert out.startswith(f"txn {txn_id}: COMMITTED\n  amount     2.00 INR\n")


def test_txn_of_a_payment_still_in_the_outbox_is_queued_and_needs_no_gateway(cluster: LocalCluster,
                                                                             tmp_path: Path) -> None:
    home = tmp_path / "home"
    payer = customer(cluster, home, "bank_a", 10_00)
    payee = open_account(cluster, "bank_b", 0)
    cluster.stop_node("gateway")
    queued = json.loads(ok(cluster, "pay", payee, "3.25", "--json", home=home))
    assert queued["state"] == "QUEUED"

    started = time.monotonic()
    lines = ok(cluster, "txn", queued["txn_id"], home=home).splitlines()
    assert time.monotonic() - started < 5
    data = json.loads(ok(cluster, "txn", queued["txn_id"], "--json", home=home))

    assert lines[0] == f"txn {queued['txn_id']}: QUEUED in this client's outbox, not answered by the gateway yet"
    assert lines[1:4] == ["  amount     3.25 INR", f"  from       {payer}", f"  to         {payee}"]
    assert re.fullmatch(r"  attempts   1, next .*\(gateway unreachable\)", lines[5]), lines
    assert (data["state"], data["outbox_state"], data["amount"], data["to"], data["attempts"]) == \
        ("QUEUED", "queued", "3.25", payee, 1)
    assert data["next_attempt_at"] > 0 and data["last_error"] == "gateway unreachable"

    cluster.start_node("gateway")
    ok(cluster, "sync", home=home)
    assert ok(cluster, "txn", queued["txn_id"], home=home).startswith(f"txn {queued['txn_id']}: COMMITTED\n")


# -- refunds -----------------------------------------------------------------------------


def test_refund_part_then_the_rest_then_more_is_refused_and_both_sides_show_the_links(cluster: LocalCluster,
                                                                                      tmp_path: Path) -> None:
    payer = customer(cluster, tmp_path / "payer", "bank_a", 100_00)
    payee = customer(cluster, tmp_path / "payee", "bank_b")
    txn_id = pay(cluster, tmp_path / "payer", payee, "25.00")

    first = ok(cluster, "refund", txn_id, "10", home=tmp_path / "payee")
    match = re.fullmatch(rf"refunded 10\.00 INR of {txn_id} to {payer} \(refund ({UUID})\); "
                         r"10\.00 of 25\.00 INR refunded in all\n", first)
    assert match, first
    rest = json.loads(ok(cluster, "refund", txn_id, "--json", home=tmp_path / "payee"))
    over = fails(cluster, "refund", txn_id, "0.01", home=tmp_path / "payee")
    again = fails(cluster, "refund", txn_id, home=tmp_path / "payee")

    assert {k: rest[k] for k in ("txn_id", "state", "amount", "currency", "to", "refunded", "payment_amount")} == {
        "txn_id": txn_id, "state": "COMMITTED", "amount": "15.00", "currency": "INR", "to": payer,
        "refunded": "25.00", "payment_amount": "25.00"}
    assert over == (f"miniupi: refund of 0.01 INR exceeds what is left to refund of {txn_id}: "
                    "0.00 of 25.00 INR")
    assert again == f"miniupi: payment {txn_id} is already refunded in full"
    assert balance(cluster, payer) == 100_00 and balance(cluster, payee) == 0

    shown = ok(cluster, "txn", txn_id, home=tmp_path / "payer")
    assert f"  refunds    {match.group(1)}  10.00 INR  COMMITTED\n" in shown
    assert f"             {rest['refund_id']}  15.00 INR  COMMITTED\n" in shown
    assert shown.endswith("  refunded   25.00 of 25.00 INR\n")
    refund = json.loads(ok(cluster, "txn", rest["refund_id"], "--json", home=tmp_path / "payer"))
    assert (refund["from"], refund["to"], refund["amount"], refund["refund_of"]) == (payee, payer, "15.00", txn_id)

    history = json.loads(ok(cluster, "history", "--json", home=tmp_path / "payer"))
    by_id = {i["txn_id"]: i for i in history["entries"]}
    assert sorted(by_id[txn_id]["refunds"]) == sorted([match.group(1), rest["refund_id"]])
    assert by_id[rest["refund_id"]]["refund_of"] == txn_id
    assert f"(refund of {txn_id})" in ok(cluster, "history", home=tmp_path / "payee")


def test_refund_sent_again_with_the_same_id_refunds_once(cluster: LocalCluster, tmp_path: Path) -> None:
    payer = customer(cluster, tmp_path / "payer", "bank_a", 20_00)
    payee = customer(cluster, tmp_path / "payee", "bank_c")
    txn_id = pay(cluster, tmp_path / "payer", payee, "20.00")
    refund_id = str(uuid.uuid4())

    outs = [ok(cluster, "refund", txn_id, "5.00", "--id", refund_id, home=tmp_path / "payee") for _ in range(3)]

    assert outs[0] == (f"refunded 5.00 INR of {txn_id} to {payer} (refund {refund_id}); "
                       "5.00 of 20.00 INR refunded in all\n")
    assert outs[1:] == outs[:1] * 2
    assert balance(cluster, payer) == 5_00
    other = fails(cluster, "refund", txn_id, "6.00", "--id", refund_id, home=tmp_path / "payee")
    assert other.startswith("miniupi: ") and "already" in other  # the same id for another refund: the first stands


def test_refund_by_the_payer_is_refused(cluster: LocalCluster, tmp_path: Path) -> None:
    customer(cluster, tmp_path / "payer", "bank_a", 5_00)
    payee = open_account(cluster, "bank_b", 0)
    txn_id = pay(cluster, tmp_path / "payer", payee, "5.00")

    line = fails(cluster, "refund", txn_id, "1", home=tmp_path / "payer")

    assert line == f"miniupi: only the payee {payee} may refund payment {txn_id}"


def test_refund_of_a_refused_payment_or_of_a_refund_is_not_refundable(cluster: LocalCluster, tmp_path: Path) -> None:
    customer(cluster, tmp_path / "payer", "bank_a", 1_00)
    payee = customer(cluster, tmp_path / "payee", "bank_b")
    refused = json.loads(cluster.cli("pay", payee, "50.00", "--json", home=tmp_path / "payer").stdout)
    assert refused["state"] == "FAILED" and refused["code"] == "FAILED_PRECONDITION"  # insufficient funds

    line = fails(cluster, "refund", refused["txn_id"], home=tmp_path / "payee")

    assert line == (f"miniupi: payment {refused['txn_id']} did not commit; "
                    "only a committed payment can be refunded")
    aborted = json.loads(ok(cluster, "txn", refused["txn_id"], "--json", home=tmp_path / "payee"))
    assert aborted["state"] == "ABORTED" and aborted["refusal"]["reason"] == "INSUFFICIENT_FUNDS"
    assert "  refused    FAILED_PRECONDITION (INSUFFICIENT_FUNDS): insufficient funds" in \
        ok(cluster, "txn", refused["txn_id"], home=tmp_path / "payer")

    txn_id = pay(cluster, tmp_path / "payer", payee, "1.00")
    refund_id = json.loads(ok(cluster, "refund", txn_id, "--json", home=tmp_path / "payee"))["refund_id"]
    assert fails(cluster, "refund", refund_id, home=tmp_path / "payer") == \
        f"miniupi: {refund_id} is a refund of {txn_id}; a refund cannot be refunded"


def test_refund_amounts_and_ids_are_checked_before_anything_is_sent(cluster: LocalCluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    customer(cluster, home, "bank_a")
    txn_id = str(uuid.uuid4())
    assert fails(cluster, "refund", txn_id, "0", home=home) == \
        "miniupi: amount must be positive (leave it out to refund all that is left)"
    assert fails(cluster, "refund", txn_id, "-1", home=home).startswith("miniupi: ")
    assert fails(cluster, "refund", txn_id, "--id", "x", home=home) == "miniupi: transaction id is not a UUID: 'x'"
    assert fails(cluster, "refund", txn_id, home=home) == f"miniupi: no transaction {txn_id}"


# -- collect requests ------------------------------------------------------------------------


def test_request_is_listed_on_both_sides_approved_once_and_then_gone(cluster: LocalCluster, tmp_path: Path) -> None:
    payer = customer(cluster, tmp_path / "payer", "bank_a", 30_00)
    payee = customer(cluster, tmp_path / "payee", "bank_b")

    out = ok(cluster, "request", payer, "12.00", "--note", "lunch", home=tmp_path / "payee")
    match = re.fullmatch(rf'requested 12\.00 INR from {payer} "lunch" \(request ({UUID})\); expires [0-9: -]+\n', out)
    assert match, out
    request_id = match.group(1)

    to_me = ok(cluster, "requests", home=tmp_path / "payer")
    from_me = ok(cluster, "requests", home=tmp_path / "payee")
    assert re.fullmatch(rf'to me +{payee} +12\.00 INR  expires [0-9: -]+  "lunch"  request {request_id}\n', to_me)
    assert re.fullmatch(rf'from me +{payer} +12\.00 INR  expires [0-9: -]+  "lunch"  request {request_id}\n', from_me)
    [listed] = json.loads(ok(cluster, "requests", "--json", home=tmp_path / "payer"))
    assert {k: listed[k] for k in ("request_id", "from", "to", "amount", "note", "state", "direction")} == {
        "request_id": request_id, "from": payer, "to": payee, "amount": "12.00", "note": "lunch",
        "state": "PENDING", "direction": "to_me"}
    assert 890 < listed["expires_at"] - listed["created_at"] <= 900  # 15 minutes by default

    paid = ok(cluster, "approve", request_id, home=tmp_path / "payer")
    repeat = json.loads(ok(cluster, "approve", request_id, "--json", home=tmp_path / "payer"))

    assert paid == f"paid 12.00 INR to {payee} (txn {request_id})\n"
    assert repeat == {"txn_id": request_id, "request_id": request_id, "state": "COMMITTED", "to": payee,
                      "amount": "12.00", "currency": "INR"}
    assert balance(cluster, payer) == 18_00 and balance(cluster, payee) == 12_00  # paid once
    assert ok(cluster, "requests", home=tmp_path / "payer") == "no open requests\n"
    assert json.loads(ok(cluster, "requests", "--json", home=tmp_path / "payee")) == []
    assert "  request    " + request_id in ok(cluster, "txn", request_id, home=tmp_path / "payee")
    assert "(a collect request)" in ok(cluster, "history", home=tmp_path / "payer")


def test_request_sent_again_with_the_same_id_asks_once(cluster: LocalCluster, tmp_path: Path) -> None:
    payer = customer(cluster, tmp_path / "payer", "bank_a")
    customer(cluster, tmp_path / "payee", "bank_c")
    request_id = str(uuid.uuid4())
    first = json.loads(ok(cluster, "request", payer, "1.50", "--id", request_id, "--json", home=tmp_path / "payee"))
    again = json.loads(ok(cluster, "request", payer, "1.50", "--id", request_id, "--json", home=tmp_path / "payee"))
    assert first == again and first["request_id"] == request_id and first["state"] == "PENDING"
    assert len(json.loads(ok(cluster, "requests", "--json", home=tmp_path / "payer"))) == 1


def test_declined_request_cannot_be_approved_and_only_the_payer_may_answer(cluster: LocalCluster,
                                                                          tmp_path: Path) -> None:
    payer = customer(cluster, tmp_path / "payer", "bank_a", 10_00)
    payee = customer(cluster, tmp_path / "payee", "bank_b")
    request_id = json.loads(ok(cluster, "request", payer, "4.00", "--json", home=tmp_path / "payee"))["request_id"]

    assert fails(cluster, "approve", request_id, home=tmp_path / "payee") == \
        f"miniupi: only {payer}, who is asked to pay, may approve request {request_id}"
    assert fails(cluster, "decline", request_id, home=tmp_path / "payee") == \
        f"miniupi: only {payer}, who is asked to pay, may decline request {request_id}"
    assert ok(cluster, "decline", request_id, home=tmp_path / "payer") == \
        f"declined request {request_id}: 4.00 INR asked by {payee}\n"
    assert fails(cluster, "approve", request_id, home=tmp_path / "payer") == \
        f"miniupi: request {request_id} was declined"
    assert balance(cluster, payer) == 10_00
    assert ok(cluster, "requests", home=tmp_path / "payee") == "no open requests\n"
    customer(cluster, tmp_path / "stranger", "bank_c")
    assert fails(cluster, "approve", request_id, home=tmp_path / "stranger") == \
        f"miniupi: no collect request {request_id}"
    assert fails(cluster, "decline", "abc", home=tmp_path / "payer") == \
        "miniupi: request id is not a UUID as `miniupi requests` shows it: 'abc'"


def test_an_expired_request_cannot_be_approved(cluster: LocalCluster, tmp_path: Path) -> None:
    payer = customer(cluster, tmp_path / "payer", "bank_a", 10_00)
    customer(cluster, tmp_path / "payee", "bank_b")
    request_id = json.loads(ok(cluster, "request", payer, "1.00", "--expires", "1s", "--json",
                               home=tmp_path / "payee"))["request_id"]
    time.sleep(1.2)

    assert fails(cluster, "approve", request_id, home=tmp_path / "payer") == \
        f"miniupi: request {request_id} expired"
    assert ok(cluster, "requests", home=tmp_path / "payer") == "no open requests\n"
    assert balance(cluster, payer) == 10_00


def test_a_refused_approval_ends_the_request(cluster: LocalCluster, tmp_path: Path) -> None:
    payer = customer(cluster, tmp_path / "payer", "bank_a", 1_00)
    customer(cluster, tmp_path / "payee", "bank_b")
    request_id = json.loads(ok(cluster, "request", payer, "5.00", "--json", home=tmp_path / "payee"))["request_id"]

    assert fails(cluster, "approve", request_id, home=tmp_path / "payer") == "miniupi: insufficient funds"
    assert fails(cluster, "approve", request_id, home=tmp_path / "payer") == "miniupi: insufficient funds"
    assert ok(cluster, "requests", home=tmp_path / "payee") == "no open requests\n"  # FAILED: ask again
    assert ok(cluster, "txn", request_id, home=tmp_path / "payee").startswith(f"txn {request_id}: ABORTED\n")


@pytest.mark.parametrize("words, line", [
    (["--expires", "0s"], "argument --expires: not a duration from 1s to 7d: '0s' (such as 90s, 15m, 2h or 7d)"),
    (["--expires", "8d"], "argument --expires: not a duration from 1s to 7d: '8d' (such as 90s, 15m, 2h or 7d)"),
    (["--expires", "1.5h"], "argument --expires: not a duration from 1s to 7d: '1.5h' (such as 90s, 15m, 2h or 7d)"),
    (["--note", "x" * 141], "note must be at most 140 characters"),
    (["--note", "tab\there"], "note must not hold control or invisible format characters"),
])
def test_a_bad_duration_or_note_is_one_line(cluster: LocalCluster, tmp_path: Path, words: list[str],
                                            line: str) -> None:
    customer(cluster, tmp_path / "payee", "bank_b")
    payer = open_account(cluster, "bank_a", 0)
    got = fails(cluster, "request", payer, "1.00", *words, home=tmp_path / "payee")
    assert got.startswith(f"miniupi: {line}"), got
    assert ok(cluster, "requests", home=tmp_path / "payee") == "no open requests\n"


def test_asking_yourself_or_nobody_is_refused(cluster: LocalCluster, tmp_path: Path) -> None:
    payee = customer(cluster, tmp_path / "payee", "bank_b")
    assert fails(cluster, "request", payee, "1", home=tmp_path / "payee") == \
        "miniupi: you cannot ask yourself for money"
    nobody = f"{unique_name()}@bank_a"
    assert fails(cluster, "request", nobody, "1", home=tmp_path / "payee") == f"miniupi: unknown account {nobody}"
    assert fails(cluster, "request", "x@nowhere", "1", home=tmp_path / "payee").startswith("miniupi: unknown bank")


def test_at_most_100_pending_requests_per_requester(cluster: LocalCluster, tmp_path: Path) -> None:
    payee = customer(cluster, tmp_path / "payee", "bank_b")
    payer = open_account(cluster, "bank_a", 0)
    with cluster.client() as c:
        c.login(payee, PASSWORD)
        for _ in range(100):
            c.request_money(payer, 1_00)

    line = fails(cluster, "request", payer, "1.00", home=tmp_path / "payee")

    assert line == (f"miniupi: {payee} already has 100 pending requests; "
                    "wait for some to be answered or to expire")


# -- the daily limit ------------------------------------------------------------------------


def test_daily_limit_of_the_account_refuses_the_payment_past_it_and_refunds_do_not_count(
        cluster: LocalCluster, tmp_path: Path) -> None:
    thrifty, home = "thrifty@bank_a", tmp_path / "thrifty"
    with cluster.client() as c:
        c.register(thrifty, PASSWORD, 100_00)
    login(cluster, thrifty, home)
    friend = customer(cluster, tmp_path / "friend", "bank_b", 50_00)

    pay(cluster, home, friend, "20.00")
    refused = json.loads(cluster.cli("pay", friend, "15.00", "--json", home=home).stdout)
    line = fails(cluster, "pay", friend, "10.01", home=home)

    today = datetime.now(ZoneInfo(ZONE)).date()
    assert line == (f"miniupi: daily limit of 30.00 INR reached: {thrifty} has sent 20.00 INR today "
                    f"({today}, {ZONE})")
    assert (refused["state"], refused["code"]) == ("FAILED", "FAILED_PRECONDITION")
    # Refused before the gateway recorded it: the outbox still knows what happened.
    shown = ok(cluster, "txn", refused["txn_id"], home=home)
    assert shown.startswith(f"txn {refused['txn_id']}: FAILED, refused before the gateway recorded it")
    assert "  refused    FAILED_PRECONDITION (DAILY_LIMIT): daily limit of 30.00 INR reached" in shown

    incoming = pay(cluster, tmp_path / "friend", thrifty, "25.00")
    assert ok(cluster, "refund", incoming, home=home).startswith("refunded 25.00 INR of ")  # past the limit: fine
    pay(cluster, home, friend, "10.00")  # exactly up to the limit
    assert fails(cluster, "pay", friend, "0.01", home=home).startswith("miniupi: daily limit of 30.00 INR reached")
    assert balance(cluster, thrifty) == 100_00 - 30_00


def test_the_cluster_daily_limit_applies_to_every_other_account(cluster: LocalCluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    payer = customer(cluster, home, "bank_c", 2000_00)
    payee = open_account(cluster, "bank_a", 0)
    pay(cluster, home, payee, "600.00")
    assert fails(cluster, "pay", payee, "400.01", home=home).startswith(
        f"miniupi: daily limit of 1000.00 INR reached: {payer} has sent 600.00 INR today")
    pay(cluster, home, payee, "400.00")


# -- settlement ---------------------------------------------------------------------------------


def settlement(cluster: LocalCluster, *args: str) -> dict:
    return json.loads(ok(cluster, "settlement", "--json", *args, home=cluster.root / "home"))


def flows(report: dict, kind: str) -> dict[tuple[str, str], tuple[int, int]]:
    return {(f["from"], f["to"]): (f["payments"], f["amount_minor"]) for f in report[kind]}


def test_settlement_shows_gross_flows_net_positions_and_intra_bank_payments(cluster: LocalCluster,
                                                                           tmp_path: Path) -> None:
    """Flows into and out of bank_c, which no other test of this module pays to from bank_c's own accounts."""
    before = settlement(cluster)
    a = customer(cluster, tmp_path / "a", "bank_a", 50_00)
    c1 = customer(cluster, tmp_path / "c1", "bank_c")
    c2 = open_account(cluster, "bank_c", 0)
    b = open_account(cluster, "bank_b", 0)
    pay(cluster, tmp_path / "a", c1, "10.00")
    pay(cluster, tmp_path / "a", c1, "10.00")
    pay(cluster, tmp_path / "c1", b, "3.00")
    pay(cluster, tmp_path / "c1", a, "1.00")
    pay(cluster, tmp_path / "c1", c2, "5.00")

    after = settlement(cluster)

    def grew(kind: str) -> dict[tuple[str, str], tuple[int, int]]:
        old, new = flows(before, kind), flows(after, kind)
        return {k: (v[0] - old.get(k, (0, 0))[0], v[1] - old.get(k, (0, 0))[1]) for k, v in new.items()
                if v != old.get(k)}

    assert grew("gross") == {("bank_a", "bank_c"): (2, 20_00), ("bank_c", "bank_b"): (1, 3_00),
                             ("bank_c", "bank_a"): (1, 1_00)}
    assert grew("intra_bank") == {("bank_c", "bank_c"): (1, 5_00)}
    net_before = {n["bank"]: n["net_minor"] for n in before["net"]}
    net_after = {n["bank"]: n["net_minor"] for n in after["net"]}
    assert {bank: net_after[bank] - net_before[bank] for bank in net_after} == \
        {"bank_a": -19_00, "bank_b": 3_00, "bank_c": 16_00}
    assert sum(net_after.values()) == 0 and (after["net_sum"], after["net_sum_minor"]) == ("0.00", 0)
    assert (after["time_zone"], after["currency"], after["since"], after["until"]) == (ZONE, "INR", None, None)
    for n in after["net"]:
        assert n["position"] == ("owed" if n["net_minor"] > 0 else "owes" if n["net_minor"] < 0 else "even")

    table = ok(cluster, "settlement", home=cluster.root / "home").splitlines()
    assert table[0] == f"settlement of the payments committed from the start until now ({ZONE}), in INR"
    assert table[1] == "gross flows between banks:"
    c_net = net_after["bank_c"]
    assert any(re.fullmatch(rf"  bank_c  {'owed' if c_net > 0 else 'owes'} +{abs(c_net) // 100}\.\d\d INR", line)
               for line in table), table
    assert "payments within one bank (they move nothing between banks):" in table
    assert any(re.fullmatch(r"  bank_c  bank_c +1 +5\.00 INR", line) for line in table), table
    assert table[-1] == "check: the net positions sum to 0.00 INR"


def test_settlement_reads_its_window_in_the_cluster_time_zone(cluster: LocalCluster, tmp_path: Path) -> None:
    customer(cluster, tmp_path / "a", "bank_a", 5_00)
    pay(cluster, tmp_path / "a", open_account(cluster, "bank_b", 0), "1.00")
    # A minute ago on the cluster's clock. Read as UTC it would be 5.5 hours ahead, and find nothing.
    since = (datetime.now(ZoneInfo(ZONE)) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")

    recent = settlement(cluster, "--since", since)
    future = settlement(cluster, "--since", since + "+00:00")
    past = settlement(cluster, "--until", "2020-01-01")

    assert recent["since"] == datetime.fromisoformat(since).replace(tzinfo=ZoneInfo(ZONE)).isoformat()
    assert flows(recent, "gross").get(("bank_a", "bank_b"), (0, 0))[0] >= 1
    assert flows(future, "gross") == {} and flows(past, "gross") == {}
    assert [n["position"] for n in past["net"]] == ["even"] * 3
    assert past["until"] == "2020-01-01T00:00:00+05:30"


@pytest.mark.parametrize("args, line", [
    (["--since", "yesterday"], "miniupi: argument --since: not a date or time: 'yesterday' "
                               "(such as 2026-12-06 or 2026-12-06T10:30) (see: miniupi settlement --help)"),
    (["--until", "2026-02-30"], "miniupi: argument --until: not a date or time: '2026-02-30' "
                                "(such as 2026-12-06 or 2026-12-06T10:30) (see: miniupi settlement --help)"),
    (["--since", "2026-12-07", "--until", "2026-12-06"], "miniupi: --until must be after --since"),
])
def test_settlement_refuses_a_bad_window_in_one_line(cluster: LocalCluster, args: list[str], line: str) -> None:
    assert fails(cluster, "settlement", *args, home=cluster.root / "home") == line


def test_settlement_is_the_admins_alone_at_the_gateway(cluster: LocalCluster, tmp_path: Path) -> None:
    account = open_account(cluster, "bank_a", 0)
    with cluster.client() as c:
        c.login(account, PASSWORD)
        with pytest.raises(PermissionDenied, match="only the admin may read the settlement"):
            c.settlement()


# -- the REPL -------------------------------------------------------------------------------------


def test_repl_announces_a_request_to_me_once_never_mine_and_runs_the_new_verbs(cluster: LocalCluster,
                                                                             tmp_path: Path) -> None:
    me = open_account(cluster, "bank_a", 50_00)
    asker = open_account(cluster, "bank_b", 20_00)
    transcript = tmp_path / "transcript.txt"
    env = {**os.environ, "MINIUPI_CONFIG": str(cluster.config_path), "MINIUPI_HOME": str(tmp_path / "home"),
           "MINIUPI_REQUEST_POLL_S": "0.2"}
    repl = pexpect.spawn(sys.executable, ["-m", "miniupi", "client"], env=env, cwd=str(cluster.root),
                         encoding="utf-8", timeout=20, dimensions=(40, 250))
    repl.logfile_read = transcript.open("w")
    try:
        repl.expect_exact("miniupi> ")
        repl.sendline(f"login {me}")
        repl.expect_exact("password: ")
        repl.sendline(PASSWORD)
        repl.expect_exact(f"{me}> ")

        with cluster.client() as other:
            other.login(asker, PASSWORD)
            asked = other.request_money(me, 12_00, note="lunch")
            repl.expect(rf'request {asked.request_id} from {asker}: 12\.00 INR "lunch" \(expires [0-9: -]+\); '
                        rf'type: approve {asked.request_id}')
            repl.sendline(f"approve {asked.request_id}")
            repl.expect_exact(f"paid 12.00 INR to {asker} (txn {asked.request_id})")
            repl.sendline("requests")
            repl.expect_exact("no open requests")

            repl.sendline(f"request {asker} 2.00 --note back --expires 10m")
            repl.expect(rf'requested 2\.00 INR from {asker} "back" \(request ({UUID})\); expires')
            mine = repl.match.group(1)
            repl.sendline("requests")
            repl.expect(rf'from me +{asker} +2\.00 INR  expires [0-9: -]+  "back"  request {mine}')

            declined = other.request_money(me, 1_00)
            repl.expect_exact(f"request {declined.request_id} from {asker}: 1.00 INR (expires ")
            repl.sendline(f"decline {declined.request_id}")
            repl.expect_exact(f"declined request {declined.request_id}: 1.00 INR asked by {asker}")

            paid_me = other.pay(me, 4_00)
        repl.sendline(f"refund {paid_me.txn_id} 1.50")
        repl.expect_exact(f"refunded 1.50 INR of {paid_me.txn_id} to {asker} (refund ")
        repl.sendline(f"txn {paid_me.txn_id}")
        repl.expect_exact("  refunded   1.50 of 4.00 INR")
        repl.sendline("request x@bank_b 1 --expires soon")
        repl.expect_exact("error: argument --expires: not a duration from 1s to 7d: 'soon'")
        repl.sendline("settlement --since 2020-01-01")
        repl.expect_exact("check: the net positions sum to 0.00 INR")
        repl.expect_exact(f"{me}> ")
        time.sleep(0.6)  # a few more rounds of the watcher: nothing more to announce
        repl.sendline("quit")
        repl.expect_exact("bye")
        repl.expect(pexpect.EOF)
    finally:
        repl.close(force=True)
    assert repl.exitstatus == 0
    text = transcript.read_text()
    assert "Traceback" not in text
    assert text.count(f"request {asked.request_id} from") == 1  # announced once, though listed until approved
    assert f"request {mine} from" not in text  # my own request is never announced to me
    assert balance(cluster, me) == 50_00 - 12_00 + 4_00 - 1_50
