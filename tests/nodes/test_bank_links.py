"""The gateway's round streams to banks, against a real bank over mTLS.

A round stream lives as long as the gateway, so it must survive what a
long-lived connection meets: a bank too slow to answer, and keepalive
pings while the link is idle.
"""
from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import grpc
import pytest

from miniupi.errors import Unavailable
from miniupi.nodes.bank_links import CHANNEL_OPTIONS, BankLinks, _answer, _Rounds
from miniupi.nodes.participants import YES, Ack, Refusal, Vote
from miniupi.nodes.server import SERVER_OPTIONS
from miniupi.ops.testing import LocalCluster
from miniupi.tls import channel_credentials, server_credentials
from miniupi.v1 import bank_pb2, bank_pb2_grpc
from conftest import PASSWORD, bank_account, open_account


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("bank_links")) as c:
        yield c


def _abort(txn_id: str) -> bank_pb2.Decision:
    return bank_pb2.Decision(txn_id=txn_id, commit=False)


def test_a_round_that_times_out_ends_its_stream_and_its_late_reply_reaches_no_later_round(
        cluster: LocalCluster) -> None:
    """Freeze the bank so a round times out, thaw it, and send a round of a different size: its
    answer must be its own (the frozen round's reply, arriving late, would not fit it)."""
    late, later = [str(uuid.uuid4())], [str(uuid.uuid4()), str(uuid.uuid4())]

    async def main() -> tuple[BaseException | None, list[object], object, object]:
        creds = channel_credentials(cluster.config.certs_dir, "gateway")
        async with grpc.aio.secure_channel(cluster.config.banks["bank_a"].address, creds,
                                           options=CHANNEL_OPTIONS) as channel:
            rounds = _Rounds(bank_pb2_grpc.BankStub(channel), prepare_timeout=1, call_timeout=1)
            await rounds.send([_abort(str(uuid.uuid4()))])  # the stream is open
            old_stream = rounds._call
            cluster.kill_node("bank_a", signal.SIGSTOP)
            try:
                failure = None
                try:
                    await rounds.send([_abort(i) for i in late])
                except TimeoutError as e:
                    failure = e
            finally:
                cluster.kill_node("bank_a", signal.SIGCONT)
            answers = await rounds.send([_abort(i) for i in later])
            new_stream = rounds._call
            rounds.close()
        return failure, answers, old_stream, new_stream

    failure, answers, old_stream, new_stream = asyncio.run(main())
    assert isinstance(failure, TimeoutError)
    assert new_stream is not old_stream
    # An abort for an id the bank never saw is applied and recorded, so a late prepare is refused.
    assert [(o.applied, o.known) for o in answers] == [(True, False), (True, False)]  # type: ignore[attr-defined]


def test_a_read_waits_until_the_decisions_already_sent_to_its_bank_are_answered(cluster: LocalCluster) -> None:
    """The gateway answers a payment once its decision is durable, before the banks apply it.
    Balance and History first wait in `settled`, so a read made after the answer sees the
    payment: freeze the bank with a decision on its way, and the wait must last until it thaws."""

    async def main() -> tuple[tuple[bool, bool], bool]:
        links = BankLinks(cluster.config)
        try:
            await links.decide("bank_a", str(uuid.uuid4()), commit=False)  # the stream is open
            cluster.kill_node("bank_a", signal.SIGSTOP)
            try:
                decision = links.decide("bank_a", str(uuid.uuid4()), commit=False)
                read = asyncio.ensure_future(links.settled("bank_a"))
                await asyncio.sleep(0.5)
                while_frozen = (decision.done(), read.done())
            finally:
                cluster.kill_node("bank_a", signal.SIGCONT)
            await asyncio.wait_for(read, 5)
            return while_frozen, decision.done() and decision.result().applied
        finally:
            await links.close()

    while_frozen, applied = asyncio.run(main())
    assert while_frozen == (False, False)
    assert applied


def test_a_gateway_stopping_cleanly_sends_the_decisions_still_waiting_for_company(cluster: LocalCluster) -> None:
    """A decision waits up to 50 ms for a prepare to ride with. Stop the gateway straight after a
    payment (SIGTERM, as `miniupi stop gateway` does): before it exits, the banks must have the
    decision, so nothing waits in doubt while the gateway is down."""
    payer, payee = open_account(cluster, "bank_a", 10_00), open_account(cluster, "bank_b", 0)
    try:
        with cluster.client() as alice:
            alice.login(payer, PASSWORD)
            assert alice.pay(payee, 3_00).state == "COMMITTED"
            cluster.stop_node("gateway")  # not restarted until we start it: nobody can resend the decision
        at_bank_b = bank_account(cluster, "bank_b", payee.split("@")[0])
    finally:
        cluster.start_node("gateway")
    assert at_bank_b == (3_00, 0)


def test_a_stopping_bank_ends_the_gateways_stream_between_rounds(cluster: LocalCluster) -> None:
    """The gateway's round stream stays open for good, so a bank that waited for it to close
    sat out its whole shutdown grace (2 s) on every stop, and the stream then ended CANCELLED.
    A stopping bank ends a stream that is between rounds at once, and cleanly: status OK, which
    the gateway takes as "open a new stream next round"."""

    async def main() -> tuple[object, object, object]:
        creds = channel_credentials(cluster.config.certs_dir, "gateway")
        async with grpc.aio.secure_channel(cluster.config.banks["bank_a"].address, creds,
                                           options=CHANNEL_OPTIONS) as channel:
            rounds = _Rounds(bank_pb2_grpc.BankStub(channel), prepare_timeout=5, call_timeout=5)
            try:
                await rounds.send([_abort(str(uuid.uuid4()))])  # the stream is open, between rounds
                stream = rounds._call
                await asyncio.to_thread(cluster.stop_node, "bank_a")
                try:
                    code = await asyncio.wait_for(stream.code(), 5)
                    details = await stream.details()
                finally:
                    await asyncio.to_thread(cluster.start_node, "bank_a")
                answers = await rounds.send([_abort(str(uuid.uuid4()))])  # a new stream, to the new bank
            finally:
                rounds.close()
        return code, details, answers

    code, details, answers = asyncio.run(main())
    assert code == grpc.StatusCode.OK, details
    assert [o.applied for o in answers] == [True]  # type: ignore[attr-defined]


class _StoppingBank(bank_pb2_grpc.BankServicer):
    """Stands in for a bank whose stop ends the gateway's stream just as a round arrives.

    Its first stream answers one round, then ends with OK without reading the next, as
    BankServicer.end_streams leaves it; later streams answer every round. The real bank meets
    this only when a round comes within a moment of its stop, which no test can bring about on
    demand, so this server plays that moment over the same mTLS, with the cluster's
    certificates. `waits_for_the_round`: the end comes once the next round has arrived (so the
    gateway's write succeeds and its read meets the end), or straight after the first answer
    (so the end races the gateway's next write, which gRPC then fails with INTERNAL).
    """

    def __init__(self, waits_for_the_round: bool) -> None:
        self.waits_for_the_round = waits_for_the_round
        self.streams = 0
        self.answered: list[list[str]] = []  # each answered round's decision ids, in order

    async def DecideAndPrepare(self, requests, context):  # type: ignore[no-untyped-def]
        self.streams += 1
        ends_early = self.streams == 1
        async for request in requests:
            if ends_early and self.answered:
                return  # status OK, the round unanswered
            self.answered.append([d.txn_id for d in request.decisions])
            yield bank_pb2.DecideAndPrepareReply(
                outcomes=[bank_pb2.DecisionOutcome(applied=True, known=False) for _ in request.decisions])
            if ends_early and not self.waits_for_the_round:
                return


@pytest.mark.parametrize("waits_for_the_round", [True, False], ids=["end-read", "end-races-write"])
def test_a_round_that_meets_a_stopping_banks_clean_end_of_stream_goes_again_on_a_new_one(
        cluster: LocalCluster, waits_for_the_round: bool) -> None:
    """The bank never read that round, so sending it again is safe (and would be even if it
    had: prepares and decisions are idempotent). Taken as a failure, it aborted the payments
    of that round on every rolling restart of a bank. (Where the end races the write, the
    gateway may also see the end first and open a new stream anyway: all three ways must
    answer the round.)"""
    first, second = [str(uuid.uuid4())], [str(uuid.uuid4()), str(uuid.uuid4())]

    async def main() -> tuple[list[object], _StoppingBank]:
        bank = _StoppingBank(waits_for_the_round)
        server = grpc.aio.server(options=SERVER_OPTIONS)
        bank_pb2_grpc.add_BankServicer_to_server(bank, server)
        port = server.add_secure_port("127.0.0.1:0", server_credentials(cluster.config.certs_dir, "bank_a"))
        await server.start()
        creds = channel_credentials(cluster.config.certs_dir, "gateway")
        try:
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options=CHANNEL_OPTIONS) as channel:
                rounds = _Rounds(bank_pb2_grpc.BankStub(channel), prepare_timeout=5, call_timeout=5)
                await rounds.send([_abort(i) for i in first])
                answers = await rounds.send([_abort(i) for i in second])
                rounds.close()
        finally:
            await server.stop(None)
        return answers, bank

    answers, bank = asyncio.run(main())
    assert [o.applied for o in answers] == [True, True]  # type: ignore[attr-defined]
    assert bank.streams == 2 and bank.answered == [first, second]


def test_banks_accept_the_gateways_keepalive_pings_on_an_idle_stream() -> None:
    """A server takes a client's keepalive pings as abuse when they come more often than its
    minimum interval without data (gRPC's default: 5 minutes), and answers with GOAWAY
    "too_many_pings". The gateway pings its idle round streams every 30 s; before banks allowed
    that, the first payment after two idle minutes failed ("bank unavailable: Too many pings").
    Reproducing it takes minutes of idling, so this pins the rule the two settings must keep."""
    server, client = dict(SERVER_OPTIONS), dict(CHANNEL_OPTIONS)
    assert server["grpc.http2.min_ping_interval_without_data_ms"] < client["grpc.keepalive_time_ms"]


# -- the adapter's translation, without a bank ------------------------------------------------


def test_every_refusal_a_bank_can_send_reaches_the_coordinator_by_its_domain_name() -> None:
    for number in [*bank_pb2.VoteRefusal.values(), 99]:  # 99: a reason from a newer bank
        vote = _answer(bank_pb2.PrepareReply(yes=False, refusal=number, detail="why"))
        name = bank_pb2.VoteRefusal.Name(number) if number != 99 else "VOTE_REFUSAL_UNSPECIFIED"
        assert vote == Vote(False, Refusal(name), "why")
    assert _answer(bank_pb2.PrepareReply(yes=True)) == YES
    assert _answer(bank_pb2.DecisionOutcome(applied=True, known=False)) == Ack(True)
    assert _answer(bank_pb2.DecisionOutcome(applied=False, error="never prepared")) == Ack(False, "never prepared")


class _RefusedCall:
    """A DecideAndPrepare stream whose first write fails, as on a link that is down."""

    def done(self) -> bool:
        return False

    def cancel(self) -> None:
        pass

    async def write(self, request: object) -> None:
        raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                   "connection refused")


def test_a_failed_round_reaches_the_coordinator_as_unavailable_not_as_a_grpc_error() -> None:
    stub = SimpleNamespace(DecideAndPrepare=lambda wait_for_ready: _RefusedCall())
    rounds = _Rounds(stub, prepare_timeout=1, call_timeout=1)  # type: ignore[arg-type]
    with pytest.raises(Unavailable, match="UNAVAILABLE connection refused"):
        asyncio.run(rounds.answers([_abort(str(uuid.uuid4()))]))
