"""Security, the UPI features (issue 19) attacked from outside: refunds, collect requests, status by id,
daily limits and settlement.

The attackers are a customer with a valid session (through the library, the
command line, and raw stubs built from the protos alone), the admin and the
treasury certificates, and a bank paused mid-way. The guarantees:

- the committed refunds of a payment never add up to more than it, whatever
  the ids, amounts and fields sent, and however many arrive at once;
- a collect request is paid once, by its payer, and never after a decline or
  its expiry; nobody else can approve, decline or read it;
- anyone but the parties hears for a real id exactly what an unknown id gets;
- the daily limit holds under concurrent payments and approvals;
- settlement refuses nonsense windows with a reason, and its nets sum to zero;
- a note reaches another user's screen as one plain line, and a payer's list
  of requests always fits one reply however many requesters ask it;
- nothing secret reaches a log.

One cluster for the module (gateway on SQLite, bank_a on SQLite, bank_b on
JSON), with a daily limit of 100.00 in Asia/Kolkata.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest

from conftest import PASSWORD, cli_login, log_lines, me, money, refusal, unique_name, wait_logged
from miniupi.client.api import AsyncClient, Client, CollectRequest, PayResult
from miniupi.contract.identity import ADMIN, SESSION_METADATA_KEY
from miniupi.errors import (
    AlreadyExists,
    DailyLimitReached,
    MiniupiError,
    NotFound,
    NotRefundable,
    PermissionDenied,
    RequestClosed,
    TooManyRequests,
    Unavailable,
)
from miniupi.nodes import collect
from miniupi.nodes.collect import CollectBook, Request
from miniupi.nodes.coordinator import Payment, Txn
from miniupi.nodes.limits import DailyLimit
from miniupi.ops.audit import audit
from miniupi.ops.testing import LocalCluster
from miniupi.rich_status import error_of
from miniupi.tls import dial
from miniupi.v1 import common_pb2, gateway_pb2

pytestmark = pytest.mark.timeout(120)

LIMIT = 100_00
SPEC = {
    "cluster": {"name": "sec-upi", "prepare_timeout_s": 2, "call_timeout_s": 2, "max_opening_deposit": "10000.00",
                "daily_limit": "100.00", "time_zone": "Asia/Kolkata"},
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
CLIENT_RECEIVE_LIMIT = 4 * 1024 * 1024  # gRPC's default for a client's replies, which miniupi's client keeps
# The most requests one account may be asked at once (collect.MAX_PENDING_PER_PAYER on the fixed branch).
INBOX_BOUND = 500


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("sec-upi"), SPEC) as c:
        yield c


# -- helpers -------------------------------------------------------------------------


def words(e: MiniupiError, the_id: str) -> tuple[object, ...]:
    """What a caller can tell of a refusal, with the id it names blanked out."""
    return type(e), e.code, e.reason, e.message.replace(the_id, "ID")


def paid(payer: Client, payee: Client, amount: int) -> str:
    txn_id = str(uuid.uuid4())
    assert payer.pay(me(payee), amount, txn_id=txn_id).state == "COMMITTED"
    return txn_id


@contextlib.contextmanager
def raw_gateway(cluster: LocalCluster, identity: str = "client") -> Iterator[grpc.Channel]:
    config = cluster.config
    with dial(config.certs_dir, identity, "gateway", config.gateway.address, aio=False) as channel:
        yield channel


def raw_call(channel: grpc.Channel, method: str, request: Any, client: Client | None = None,
             extra: bytes = b"") -> tuple[str, str, Any]:
    """(status code name, miniupi reason or '', reply or details) of one call from a stub built from the protos
    alone; `extra` is appended to the serialized request (fields this version does not know)."""
    reply_type = {"Refund": gateway_pb2.PayReply, "ApproveRequest": gateway_pb2.PayReply,
                  "RequestMoney": gateway_pb2.CollectRequest, "DeclineRequest": gateway_pb2.CollectRequest,
                  "GetTransaction": gateway_pb2.TransactionReply, "Settlement": gateway_pb2.SettlementReply,
                  "ListRequests": gateway_pb2.ListRequestsReply}[method]
    call = channel.unary_unary(f"/miniupi.v1.Gateway/{method}", request_serializer=lambda b: b,
                               response_deserializer=reply_type.FromString)
    metadata = ((SESSION_METADATA_KEY, client.session.key),) if client and client.session else None
    try:
        return "OK", "", call(request.SerializeToString() + extra, metadata=metadata, timeout=10)
    except grpc.RpcError as e:
        error = error_of(e)
        return e.code().name, error.reason if error is not None else "", e.details()


def final(call: Callable[[], object], timeout_s: float = 30.0) -> object:
    """Send the same call while the answer is UNAVAILABLE; the answer, or the refusal as an object."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except Unavailable:
            if time.monotonic() > deadline:
                pytest.fail(f"no final answer after {timeout_s}s")
            time.sleep(0.2)
        except MiniupiError as e:
            return e


def assert_audit_clean(cluster: LocalCluster) -> None:
    report = asyncio.run(audit(cluster.config, settle_s=20))
    assert report.ok, report.violations
    assert report.in_doubt == []


# -- refunds never exceed their original -------------------------------------------


def test_twenty_refunds_at_once_with_the_payees_bank_paused_never_give_back_more_than_was_paid(
        cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payer, payee = new_user("bank_a", 50_00), new_user("bank_b", 0)
    original = paid(payer, payee, 30_00)
    # 7.00 each, then half of them "all that is left" (no amount): together far more than 30.00.
    asks = [(str(uuid.uuid4()), 0 if i > 10 and i % 2 else 7_00) for i in range(20)]

    async def refund_all(batch: list[tuple[str, int]]) -> list[object]:
        async with AsyncClient(cluster.config, session=payee.session) as c:
            return await asyncio.gather(*(c.refund(original, amount, refund_id=rid) for rid, amount in batch),
                                        return_exceptions=True)

    async def around_a_pause() -> None:
        # The first ten reach a frozen bank and time out (2 s), so they abort and give their share back
        # while the bank, thawed, may still vote on them; the other ten race for what is left.
        pid = cluster.kill_node("bank_b", signal.SIGSTOP)  # the payee's bank, where every refund debits
        try:
            frozen = asyncio.ensure_future(refund_all(asks[:10]))
            await asyncio.sleep(2.5)
        finally:
            os.kill(pid, signal.SIGCONT)
        await asyncio.gather(frozen, refund_all(asks[10:]))

    asyncio.run(around_a_pause())
    for rid, amount in asks:  # every id to its final answer, sent again as a client would
        final(lambda rid=rid, amount=amount: payee.refund(original, amount, refund_id=rid))

    t = payer.transaction(original)
    committed = [r for r in t.refunds if r.state == "COMMITTED"]
    assert sum(r.amount for r in committed) == t.refunded <= 30_00
    assert {r.txn_id for r in t.refunds} <= {rid for rid, _ in asks}
    assert money(payer) == (20_00 + t.refunded, 20_00 + t.refunded)
    assert money(payee) == (30_00 - t.refunded, 30_00 - t.refunded)
    assert isinstance(refusal(lambda: payee.refund(original, 30_00 - t.refunded + 1)), MiniupiError)
    assert_audit_clean(cluster)


def test_a_refund_id_cannot_take_a_payment_a_request_or_a_deposit(cluster: LocalCluster,
                                                                   new_user: Callable[..., Client]) -> None:
    payer, payee = new_user("bank_a", 60_00), new_user("bank_b", 0)
    original, other = paid(payer, payee, 20_00), paid(payer, payee, 5_00)
    pending = payee.request_money(me(payer), 3_00).request_id
    with cluster.client("treasury") as treasury:
        deposit = treasury.deposit(me(payee), 1_00).txn_id
    taken = {"the original itself": original, "another payment": other, "a pending request": pending,
             "a deposit": deposit}

    for what, the_id in taken.items():
        for amount in (1_00, 0):  # an amount, and "all that is left"
            e = refusal(lambda: payee.refund(original, amount, refund_id=the_id))
            assert isinstance(e, AlreadyExists), (what, amount, e)

    assert payer.transaction(original).refunds == ()
    assert money(payee) == (26_00, 26_00)
    assert payer.approve(pending).state == "COMMITTED"  # the request is untouched and pays as asked
    # And the other way: a refund's id is taken for every other use.
    refund_id = payee.refund(original, 2_00).txn_id
    assert isinstance(refusal(lambda: payer.pay(me(payee), 2_00, txn_id=refund_id)), AlreadyExists)
    assert isinstance(refusal(lambda: payee.request_money(me(payer), 2_00, request_id=refund_id)), AlreadyExists)
    with cluster.client("treasury") as treasury:
        assert isinstance(refusal(lambda: treasury.deposit(me(payer), 2_00, txn_id=refund_id)), AlreadyExists)
    assert payer.transaction(original).refunded == 2_00


def test_hostile_refund_amounts_and_unknown_fields_from_a_raw_client_move_nothing(
        cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payer, payee = new_user("bank_a", 20_00), new_user("bank_b", 0)
    original = paid(payer, payee, 10_00)
    cases = [  # amount, currency, the refusal's reason
        (-1, "", "INVALID_AMOUNT"), (INT64_MIN, "", "INVALID_AMOUNT"), (INT64_MIN, "INR", "INVALID_AMOUNT"),
        (INT64_MAX, "", "REFUND_EXCEEDS_PAYMENT"), (10_01, "INR", "REFUND_EXCEEDS_PAYMENT"),
        (0, "INR", "INVALID_AMOUNT"), (1, "USD", "INVALID_AMOUNT"), (1, "inr", "INVALID_AMOUNT"),
    ]
    with raw_gateway(cluster) as channel:
        for minor, currency, reason in cases:
            request = gateway_pb2.RefundRequest(txn_id=str(uuid.uuid4()), original_txn_id=original,
                                                amount=common_pb2.Money(minor=minor, currency=currency))
            code, got, _ = raw_call(channel, "Refund", request, payee)
            assert (code, got) == ({"INVALID_AMOUNT": "INVALID_ARGUMENT"}.get(reason, "FAILED_PRECONDITION"),
                                   reason), (minor, currency)
        # Fields this version does not know, top-level and inside the amount: refused whole.
        request = gateway_pb2.RefundRequest(txn_id=str(uuid.uuid4()), original_txn_id=original,
                                            amount=common_pb2.Money(minor=1_00))
        for extra in (b"\xf8\x06\x01", b"\x1a\x03\xf8\x06\x01"):  # field 111; a Money (field 3) holding field 111
            assert raw_call(channel, "Refund", request, payee, extra)[:2] == ("INVALID_ARGUMENT", "MALFORMED_REQUEST")
        # The payer, the admin and the treasury may not refund, known id or not.
        assert raw_call(channel, "Refund", request, payer)[:2] == ("PERMISSION_DENIED", "PERMISSION_DENIED")
    with raw_gateway(cluster, ADMIN) as channel:
        assert raw_call(channel, "Refund", request)[:2] == ("PERMISSION_DENIED", "PERMISSION_DENIED")
    with raw_gateway(cluster, "treasury") as channel:
        assert raw_call(channel, "Refund", request)[:2] == ("PERMISSION_DENIED", "PERMISSION_DENIED")
    t = payer.transaction(original)
    assert (t.refunds, t.refunded) == ((), 0)
    assert money(payer) == (10_00, 10_00)


# -- probing other people's ids ----------------------------------------------------------


def test_strangers_hear_for_others_ids_exactly_what_unknown_ids_get(cluster: LocalCluster,
                                                                    new_user: Callable[..., Client]) -> None:
    payer, payee, stranger = new_user("bank_a", 40_00), new_user("bank_b", 0), new_user("bank_a", 10_00)
    payment = paid(payer, payee, 10_00)
    refund = payee.refund(payment, 1_00).txn_id
    pending = payee.request_money(me(payer), 2_00).request_id
    settled = payee.request_money(me(payer), 3_00).request_id
    payer.approve(settled)
    declined = payee.request_money(me(payer), 4_00).request_id
    payer.decline(declined)
    real = {"payment": payment, "refund": refund, "pending request": pending, "paid request": settled,
            "declined request": declined}
    unknown = str(uuid.uuid4())
    probes: dict[str, Callable[[str], object]] = {
        "txn": stranger.transaction,
        "refund": lambda i: stranger.refund(i, 1),
        "refund all": lambda i: stranger.refund(i),
        "approve": stranger.approve,
        "decline": stranger.decline,
    }
    for probe_name, probe in probes.items():
        baseline = refusal(lambda: probe(unknown))
        assert type(baseline) is NotFound, (probe_name, baseline)
        for what, the_id in real.items():
            got = refusal(lambda: probe(the_id))
            assert words(got, the_id) == words(baseline, unknown), (probe_name, what, got, baseline)
    # Raw stubs: the same status code, reason and details.
    with raw_gateway(cluster) as channel:
        for what, the_id in real.items():
            for method, request in (("GetTransaction", gateway_pb2.GetTransactionRequest(txn_id=the_id)),
                                    ("ApproveRequest", gateway_pb2.ApproveRequestRequest(request_id=the_id)),
                                    ("DeclineRequest", gateway_pb2.DeclineRequestRequest(request_id=the_id))):
                got = raw_call(channel, method, request, stranger)
                blank = type(request)()
                blank.CopyFrom(request)
                setattr(blank, request.DESCRIPTOR.fields[0].name, unknown)
                base = raw_call(channel, method, blank, stranger)
                assert (got[0], got[1], got[2].replace(the_id, "ID")) == (base[0], base[1],
                                                                         base[2].replace(unknown, "ID")), (what, method)
    # The treasury is refused the same way for any id; the admin reads the real ones.
    with raw_gateway(cluster, "treasury") as channel:
        assert raw_call(channel, "GetTransaction", gateway_pb2.GetTransactionRequest(txn_id=payment)) == \
            raw_call(channel, "GetTransaction", gateway_pb2.GetTransactionRequest(txn_id=unknown))
    with cluster.client(ADMIN) as admin:
        assert admin.transaction(payment).refunded == 1_00
    # The stranger's own list shows nothing of theirs.
    assert stranger.requests() == []


# -- collect requests ---------------------------------------------------------------------


def test_a_request_is_paid_once_only_by_its_payer_and_never_after_a_decline_or_its_expiry(
        cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    payer, requester, stranger = new_user("bank_a", 50_00), new_user("bank_b", 0), new_user("bank_a", 50_00)
    r = requester.request_money(me(payer), 5_00).request_id
    assert isinstance(refusal(lambda: requester.approve(r)), PermissionDenied)
    assert isinstance(refusal(lambda: stranger.approve(r)), NotFound)
    assert isinstance(refusal(lambda: requester.decline(r)), PermissionDenied)
    with cluster.client(ADMIN) as admin:
        assert isinstance(refusal(lambda: admin.approve(r)), PermissionDenied)

    # Two devices approving and one declining, all at once, several times over: never more than one payment.
    second = cluster.client()
    second.login(me(payer), PASSWORD)
    outcomes = []
    for _ in range(5):
        rid = requester.request_money(me(payer), 1_00).request_id

        async def race(rid: str = rid) -> list[object]:
            async with AsyncClient(cluster.config, session=payer.session) as a, \
                    AsyncClient(cluster.config, session=second.session) as b:
                return await asyncio.gather(a.approve(rid), b.approve(rid), a.decline(rid), b.approve(rid),
                                            return_exceptions=True)

        answers = asyncio.run(race())
        paid_answers = [a for a in answers if isinstance(a, PayResult)]
        declined_answers = [a for a in answers if isinstance(a, CollectRequest)]
        assert not (paid_answers and declined_answers), answers
        assert all(isinstance(a, (PayResult, CollectRequest, RequestClosed)) for a in answers), answers
        outcomes.append(bool(paid_answers))
    second.close()

    expired = requester.request_money(me(payer), 6_00, expires_in_s=1).request_id
    declined = requester.request_money(me(payer), 7_00).request_id
    payer.decline(declined)
    time.sleep(1.1)
    for rid in (expired, declined):
        assert isinstance(refusal(lambda: payer.approve(rid)), RequestClosed)
    assert isinstance(refusal(lambda: payer.decline(expired)), RequestClosed)
    assert payer.approve(r).state == payer.approve(r).state == "COMMITTED"

    spent = 5_00 + 1_00 * sum(outcomes)
    assert money(payer) == (50_00 - spent, 50_00 - spent)
    assert money(requester) == (spent, spent)
    assert {q.request_id for q in payer.requests()} == set()


def test_a_note_never_starts_a_new_line_or_sends_a_terminal_sequence(cluster: LocalCluster,
                                                                      new_user: Callable[..., Client]) -> None:
    payer, requester = new_user("bank_a", 10_00), new_user("bank_b", 0)
    hostile = ["\x1b[2J", "\x1b]0;pwned\x07", "a\nb", "a\rb", "\x9b31m", "\u202eevil", "\u200b", "\ufeff",
               "\u2028fake line", "\u2029fake paragraph", "\U000e0041", "x" * 141]
    with raw_gateway(cluster) as channel:
        for note in hostile:
            request = gateway_pb2.MoneyRequest(request_id=str(uuid.uuid4()), from_account=me(payer),
                                               amount=common_pb2.Money(minor=1_00), note=note)
            assert raw_call(channel, "RequestMoney", request, requester)[:2] == ("INVALID_ARGUMENT",
                                                                                 "INVALID_ARGUMENT"), repr(note)
    assert payer.requests() == []
    # What a note may hold is shown as typed, on one line.
    fine = "lunch 😀 {} %s <b> \\x1b ü"
    requester.request_money(me(payer), 1_00, note=fine)
    (listed,) = payer.requests()
    assert listed.note == fine


def test_the_requests_verb_shows_a_note_as_one_plain_line(cluster: LocalCluster, tmp_path: Path,
                                                          new_user: Callable[..., Client]) -> None:
    payer_account = f"{unique_name()}@bank_a"
    with cluster.client() as c:
        c.register(payer_account, PASSWORD, 0)
    requester = new_user("bank_b", 0)
    note = "z" * 130 + "😀" * 10
    rid = requester.request_money(payer_account, 1_00, note=note).request_id
    home = tmp_path / "payer"
    cli_login(cluster, payer_account, home)
    r = cluster.cli("requests", home=home)
    assert r.returncode == 0, r.stderr
    (line,) = r.stdout.splitlines()
    assert rid in line and note in line
    assert not any(unicodedata.category(ch).startswith("C") for ch in r.stdout.replace("\n", ""))


def test_a_payer_asked_by_many_requesters_keeps_a_list_that_fits_one_reply(
        cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    """Finding: requests asked of one account were unbounded; about 70 fresh accounts asking 100 each
    (with 140-emoji notes) made the payer's ListRequests reply pass 4 MB, so `miniupi requests` failed
    ("Received message larger than max") and the REPL never announced a request again, for 7 days."""
    victim = new_user("bank_a", 0)
    per_requester = collect.MAX_PENDING_PER_REQUESTER
    requesters = [new_user("bank_b", 0) for _ in range(INBOX_BOUND // per_requester + 1)]
    note = "😀" * collect.MAX_NOTE  # the largest note: 4 bytes a character

    async def spam() -> list[list[object]]:
        async def one(requester: Client) -> list[object]:  # one after another: the requesters race each other
            answers: list[object] = []
            async with AsyncClient(cluster.config, session=requester.session) as c:
                for _ in range(per_requester):
                    try:
                        answers.append(await c.request_money(me(victim), 1, note=note, expires_in_s=3600))
                    except MiniupiError as e:
                        answers.append(e)
            return answers
        return await asyncio.gather(*(one(r) for r in requesters))

    by_requester = asyncio.run(spam())
    answers = [a for answers in by_requester for a in answers]
    assert all(isinstance(a, (CollectRequest, TooManyRequests)) for a in answers), answers[:3]
    assert sum(isinstance(a, CollectRequest) for a in answers) == INBOX_BOUND
    listed = victim.requests()
    assert len(listed) == INBOX_BOUND
    # At the bound, with the most the payer may itself ask on top, the reply fits with room to spare.
    with raw_gateway(cluster) as channel:
        reply = raw_call(channel, "ListRequests", gateway_pb2.ListRequestsRequest(), victim)[2]
    largest = max(r.ByteSize() for r in reply.requests) + 4  # a repeated field's tag and length
    assert (INBOX_BOUND + per_requester) * largest < CLIENT_RECEIVE_LIMIT // 2
    # The refusal tells the requester nothing of the payer's requests; answering one frees a place.
    turned_away = next(i for i, got in enumerate(by_requester) if any(isinstance(a, TooManyRequests) for a in got))
    again = refusal(lambda: requesters[turned_away].request_money(me(victim), 1))
    assert isinstance(again, TooManyRequests) and str(INBOX_BOUND) not in again.message, again
    victim.decline(listed[0].request_id)
    assert requesters[turned_away].request_money(me(victim), 1).state == "PENDING"


def test_one_requester_cannot_make_the_gateway_hold_requests_without_bound() -> None:
    """A requester with the shortest expiry (1 s) has 100 pending at a time, about 100 new ones a second:
    the gateway's memory holds only the open ones, and each expired one leaves it (its row stays in the
    store, as a settled payment's does)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "nodes"))
    from dict_store import DictStore
    from miniupi.nodes.group_commit import GroupCommit
    from miniupi.nodes.txn_index import TxnIndex

    async def ask_all() -> tuple[int, int]:
        store = DictStore()
        commit = GroupCommit(store)
        book = CollectBook(commit, {}, TxnIndex(store, Txn.from_record), set())  # type: ignore[arg-type]
        start, asks, most_open = time.time(), 2000, 0
        for i in range(asks):  # one a second for over half an hour of the gateway's clock, each expiring at once
            at = start + i * 1.01
            with contextlib.suppress(MiniupiError):
                await book.ask(Request(str(uuid.uuid4()), "victim@bank_a", "spammer@bank_b", 1, "INR", "", at, at + 1))
            most_open = max(most_open, book.open_count)
        await commit.close()
        return most_open, len(store.tables.get(collect.TABLE, {}))

    most_open, stored = asyncio.run(ask_all())
    assert most_open <= collect.MAX_PENDING_PER_REQUESTER
    assert stored == 2000  # every request is still answerable by id, from the store


def test_a_payment_cannot_be_refunded_in_more_pieces_than_one_status_reply_shows(
        cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    """A payee giving a payment back a paisa at a time: the hundred-and-first refund is refused, so the
    payment's status (and the payer's history entry) stays far below what a client takes in one reply."""
    from miniupi.nodes.refunds import MAX_REFUNDS_PER_PAYMENT

    payer, payee = new_user("bank_a", 10_00), new_user("bank_b", 0)
    paid = payer.pay(me(payee), 5_00)
    for _ in range(MAX_REFUNDS_PER_PAYMENT):
        payee.refund(paid.txn_id, 1)
    with pytest.raises(NotRefundable, match="the most one payment may have"):
        payee.refund(paid.txn_id, 1)
    status = payer.transaction(paid.txn_id)
    assert len(status.refunds) == MAX_REFUNDS_PER_PAYMENT and status.refunded == MAX_REFUNDS_PER_PAYMENT
    left = 10_00 - 5_00 + MAX_REFUNDS_PER_PAYMENT
    assert money(payer) == (left, left)


# -- daily limit ------------------------------------------------------------------------------


def test_approvals_and_payments_at_once_never_pass_the_daily_limit(cluster: LocalCluster,
                                                                   new_user: Callable[..., Client]) -> None:
    payer = new_user("bank_a", 500_00)
    requesters = [new_user("bank_b", 0) for _ in range(4)]
    payee = new_user("bank_b", 0)
    requests = [r.request_money(me(payer), 30_00).request_id for r in requesters]

    async def all_at_once() -> list[object]:
        async with AsyncClient(cluster.config, session=payer.session) as c:
            return await asyncio.gather(*(c.approve(rid) for rid in requests),
                                        *(c.pay(me(payee), 30_00) for _ in range(3)), return_exceptions=True)

    answers = asyncio.run(all_at_once())
    committed = [a for a in answers if isinstance(a, PayResult)]
    assert len(committed) == 3, answers  # 3 x 30.00 fit in 100.00; a fourth would not
    assert all(isinstance(a, (PayResult, DailyLimitReached)) for a in answers), answers
    assert money(payer) == (500_00 - 90_00, 500_00 - 90_00)
    # A refund to the payer gives it no new room; approvals the limit refused leave their requests pending.
    approved = [rid for rid, a in zip(requests, answers) if isinstance(a, PayResult)]
    if approved:
        requesters[requests.index(approved[0])].refund(approved[0])
    e = refusal(lambda: payer.pay(me(payee), 10_01))
    assert isinstance(e, DailyLimitReached) and e.message.startswith("daily limit of 100.00 INR reached"), e
    assert len(payer.requests()) == len(requests) - len(approved)


def test_a_clock_stepping_back_over_midnight_gives_no_payer_a_second_allowance_for_the_day() -> None:
    """A clock stepped back over midnight (NTP, a restored VM) must not give a payer that day's limit again:
    totals are kept per day and payer, never one running day that restarts on any change of date."""
    ist = ZoneInfo("Asia/Kolkata")
    limit = DailyLimit(SimpleNamespace(zone=ist, time_zone="Asia/Kolkata", currency="INR",  # type: ignore[arg-type]
                                       daily_limit_of=lambda account: LIMIT))

    def payment(amount: int) -> Payment:
        return Payment(str(uuid.uuid4()), "p@bank_a", "q@bank_b", amount, "INR")

    midnight = datetime(2026, 12, 7, tzinfo=ist).timestamp()
    limit.admit(payment(LIMIT), midnight - 10)  # all of 6 December's allowance
    limit.admit(payment(1_00), midnight + 1)  # 7 December begins
    with pytest.raises(DailyLimitReached):  # the clock steps back 3 s: 6 December again, already spent
        limit.admit(payment(1_00), midnight - 2)


# -- settlement -------------------------------------------------------------------------------


def test_settlement_refuses_nonsense_windows_with_a_reason_and_its_nets_sum_to_zero(
        cluster: LocalCluster, new_user: Callable[..., Client]) -> None:
    customer = new_user("bank_a", 1_00)
    with raw_gateway(cluster, ADMIN) as channel:
        for since, until in ((math.nan, 0), (0, math.nan), (math.inf, 0), (0, math.inf), (-math.inf, 0),
                             (-1, 0), (0, -1e-300), (10.0, 10.0), (20.0, 10.0)):
            got = raw_call(channel, "Settlement", gateway_pb2.SettlementRequest(since=since, until=until))
            assert got[:2] == ("INVALID_ARGUMENT", "INVALID_ARGUMENT"), (since, until, got)
        for since, until in ((0, 0), (1e308, 0), (0, 1e308), (5e-324, 1e-323), (1.0, 1e308)):
            code, _, reply = raw_call(channel, "Settlement", gateway_pb2.SettlementRequest(since=since, until=until))
            assert code == "OK", (since, until, reply)
            assert sum(n.net.minor for n in reply.net) == 0
            assert {n.bank for n in reply.net} == set(cluster.config.banks)
    with raw_gateway(cluster) as channel:
        assert raw_call(channel, "Settlement", gateway_pb2.SettlementRequest(), customer)[:2] == (
            "PERMISSION_DENIED", "PERMISSION_DENIED")
    with raw_gateway(cluster, "treasury") as channel:
        assert raw_call(channel, "Settlement", gateway_pb2.SettlementRequest())[0] == "PERMISSION_DENIED"


@pytest.mark.parametrize("window", [
    ["--until", "9999-12-31T23:59:59-23:59"],  # past the year 9999 in the cluster's zone
    ["--since", "9999-12-31T23:59:59-23:59"],
    ["--until", "1970-01-01T05:30"],  # the epoch in Asia/Kolkata: 0 on the wire, which means "open"
    ["--until", "1970-01-01T05:29"],  # before the epoch
])
def test_a_settlement_window_the_report_cannot_show_is_one_line_not_a_traceback_or_a_wrong_report(
        cluster: LocalCluster, window: list[str]) -> None:
    r = cluster.cli("settlement", *window)
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    (line,) = r.stderr.splitlines()
    assert line.startswith("miniupi: ") and window[0] in line, line


# -- logs ---------------------------------------------------------------------------------------


def test_no_password_session_key_or_note_reaches_a_log(cluster: LocalCluster) -> None:
    password, note = "Upi-Secret-Pw-" + uuid.uuid4().hex, "private-note-" + uuid.uuid4().hex
    payer_account, payee_account = f"{unique_name()}@bank_a", f"{unique_name()}@bank_b"
    with cluster.client() as payer, cluster.client() as payee:
        payer.register(payer_account, password, 30_00)
        payee.register(payee_account, password, 0)
        keys = [payer.login(payer_account, password).key, payee.login(payee_account, password).key]
        txn = payer.pay(payee_account, 10_00).txn_id
        payee.refund(txn, 1_00)
        request = payee.request_money(payer_account, 2_00, note=note).request_id
        payer.requests()
        payer.approve(request)
        payer.transaction(txn)
        payer.logout()
    wait_logged(cluster, "gateway", request)
    secrets = [password, note, *keys, *(k.split(".")[1] for k in keys)]
    for node in ("gateway", "bank_a", "bank_b"):
        leaked = [line for line in log_lines(cluster, node) if any(s in line for s in secrets)]
        assert leaked == [], (node, leaked[:3])
