"""The gateway's long-lived mTLS channels to every bank, one per bank: the coordinator's Participants.

The coordinator speaks in votes and acknowledgements (participants.py);
this adapter turns them into bank protos and back, and a failed call into
Unavailable, so nothing of gRPC reaches it.

Prepares and decisions go out through one Batcher per bank, so one
DecideAndPrepare round carries the decisions of some payments and the
prepares of others: one message and one fsync at the bank for all. A
decision waits up to 50 ms for a prepare to ride with, so payments that
follow each other closely cost each bank one round each, not two; a
prepare waits as long as its caller allows. Rounds go over one
long-lived stream per bank, which costs both ends about half of what a
call per round does.

Rounds wait for the channel to be ready (bounded by each round's
timeout) rather than failing at once: a bank that was just restarted is
reached as soon as it listens, not after the channel's reconnect backoff,
and a bank that stays down costs a payment its prepare timeout, plus at
most one round ahead of it on that link (a decision-only round is bounded
by the call timeout).
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import grpc

from miniupi.config import ClusterConfig
from miniupi.errors import NotFound, Unavailable
from miniupi.nodes.batcher import Batcher
from miniupi.nodes.participants import YES, Ack, Leg, Refusal, Vote
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loguru import logger

from miniupi.tls import dial, impostor
from miniupi.v1 import bank_pb2, bank_pb2_grpc

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # A restarted bank should be found again quickly, not after minutes of backoff.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]


# Nobody waits on a decision once the client has its answer, so it waits
# for the next round of prepares to ride with. That round comes within a
# prepare's own longest wait (patience.MAX_PATIENCE_S, 40 ms) of the link
# being free, so a busy link sends almost no round of decisions alone: at
# 16 banks and 64 payers, 21 of 2,631 rounds.
DECISION_PATIENCE_S = 0.050

# How often a failing link's reason is read again, to log a new one (an impostor after a crash).
REPROBE_FAILING_LINK_S = 1.0

BankItem = bank_pb2.PrepareRequest | bank_pb2.Decision
BankAnswer = bank_pb2.PrepareReply | bank_pb2.DecisionOutcome

ACKED = Ack(True)
_REFUSALS = {bank_pb2.VoteRefusal.Value(refusal): refusal for refusal in Refusal}


def _answer(reply: BankAnswer) -> Vote | Ack:
    """A bank's answer in domain terms; the common ones are shared constants, so a round allocates none."""
    if isinstance(reply, bank_pb2.PrepareReply):
        if reply.yes:
            return YES
        return Vote(False, _REFUSALS.get(reply.refusal, Refusal.UNSPECIFIED), reply.detail)
    return ACKED if reply.applied else Ack(False, reply.error)


class _Rounds:
    """One long-lived DecideAndPrepare stream to a bank; a round is one request and its reply.

    Any failure of a round (the bank went away, the round timed out) ends
    the stream, and the next round opens a new one: a late reply can never
    be taken for a later round's. A stream the bank ended between rounds
    (it restarted) is replaced before it is used. A round that fails is not
    sent again here: as with a call, a prepare that fails aborts its payment
    and a decision is retried by the coordinator. The one exception is a
    round that met the clean end of a stopping bank's stream: the bank
    never read it, so it goes once more on a new stream.
    """

    def __init__(self, stub: bank_pb2_grpc.BankStub, prepare_timeout: float, call_timeout: float) -> None:
        self._stub, self._prepare_timeout, self._call_timeout = stub, prepare_timeout, call_timeout
        self._call: Any = None

    async def send(self, items: list[BankItem]) -> list[BankAnswer]:
        decisions = [i for i in items if isinstance(i, bank_pb2.Decision)]
        prepares = [i for i in items if isinstance(i, bank_pb2.PrepareRequest)]
        request = bank_pb2.DecideAndPrepareRequest(decisions=decisions, prepares=prepares)
        try:
            async with asyncio.timeout(self._prepare_timeout if prepares else self._call_timeout):
                reply = await self._exchange(request)
            if reply is grpc.aio.EOF:
                raise Unavailable("bank ended the stream")
            if (len(reply.outcomes), len(reply.votes)) != (len(decisions), len(prepares)):
                raise Unavailable(f"bank answered {len(reply.outcomes)} decisions and {len(reply.votes)} votes "
                                  f"for {len(decisions)} and {len(prepares)}")
        except BaseException:
            self.close()
            raise
        outcomes, votes = iter(reply.outcomes), iter(reply.votes)
        return [next(outcomes) if isinstance(i, bank_pb2.Decision) else next(votes) for i in items]

    async def answers(self, items: list[BankItem]) -> list[Vote | Ack]:
        """`send` in domain terms: a Vote or an Ack per item; a call that failed raises Unavailable."""
        try:
            return [_answer(reply) for reply in await self.send(items)]
        except grpc.aio.AioRpcError as e:
            raise Unavailable(f"{e.code().name} {e.details()}") from e

    async def _exchange(self, request: bank_pb2.DecideAndPrepareRequest) -> Any:
        """The round's reply, or EOF, on the open stream or a new one."""
        reused = self._call is not None and not self._call.done()
        if not reused:
            self._call = self._stub.DecideAndPrepare(wait_for_ready=True)
        try:
            await self._call.write(request)
        except grpc.aio.AioRpcError:
            if not reused:
                raise
            # The stream ended in gRPC's core but not yet for the call's own status task: the
            # core refuses the write and grpc.aio reports INTERNAL. The round never left, so it
            # goes on a new stream.
            self._call = None
            return await self._exchange(request)
        reply = await self._call.read()
        if reply is grpc.aio.EOF and reused and await self._call.code() == grpc.StatusCode.OK:
            # A stopping bank ends its streams between rounds with OK, and a round already on
            # its way is never read (bank.BankServicer.end_streams). Taken as a failure, it
            # cost every rolling restart of a bank about one round of aborted payments.
            self._call = None
            return await self._exchange(request)
        return reply

    def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None


async def _last_error(channel: grpc.aio.Channel) -> str:
    """Why a failing channel fails: a call that does not wait for the link answers with its last error."""
    try:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
    except grpc.aio.AioRpcError as e:
        return e.details() or e.code().name
    return ""


def _failed(error: Exception) -> asyncio.Future[Any]:
    """An answer that is already a failure, so callers handle every bank's answer the same way."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(error)
    return future


class BankLinks:
    def __init__(self, cluster: ClusterConfig, identity: str = "gateway") -> None:
        # Each channel reaches only the bank it is for: a server holding any other certificate
        # of the cluster (a customer's, another bank's) fails the handshake (tls.pin).
        self._channels = {
            name: dial(cluster.certs_dir, identity, name, node.address, CHANNEL_OPTIONS)
            for name, node in cluster.banks.items()
        }
        self._addresses = {name: node.address for name, node in cluster.banks.items()}
        self._watchers: list[asyncio.Task[None]] = []
        self._stubs = {name: bank_pb2_grpc.BankStub(ch) for name, ch in self._channels.items()}
        self._rounds = {name: _Rounds(stub, cluster.prepare_timeout_s, cluster.call_timeout_s)
                        for name, stub in self._stubs.items()}
        self._batchers: dict[str, Batcher[BankItem, Vote | Ack]] = {
            name: Batcher(rounds.answers) for name, rounds in self._rounds.items()}
        self._call_timeout = cluster.call_timeout_s

    def watch(self) -> None:
        """Log why a link fails, once per change: calls that wait for a link see only a timeout."""
        self._watchers = [asyncio.create_task(self._watch(name, channel))
                          for name, channel in self._channels.items()]

    async def _watch(self, bank: str, channel: grpc.aio.Channel) -> None:
        said = ""
        while True:
            state = channel.get_state(try_to_connect=False)
            if state == grpc.ChannelConnectivity.READY and said:
                logger.info("link to {} at {} is up", bank, self._addresses[bank])
                said = ""
            elif state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                why = await _last_error(channel)
                if why and why != said:
                    if impostor(why):
                        logger.error("refusing the server at {}: its certificate is not {}'s; nothing is sent "
                                     "to it ({})", self._addresses[bank], bank, why)
                    else:
                        logger.warning("link to {} at {} failed: {}", bank, self._addresses[bank], why)
                    said = why
                # A failing channel stays in TRANSIENT_FAILURE while it keeps redialling, whatever
                # now answers there, so its reason is read again rather than awaited as a change.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(REPROBE_FAILING_LINK_S):
                        await channel.wait_for_state_change(state)
                continue
            await channel.wait_for_state_change(state)

    def prepare(self, bank: str, txn_id: str, currency: str, legs: Sequence[Leg],
                patience_s: float = 0.0) -> asyncio.Future[Vote]:
        """The bank's vote, sent in a batch with other payments' prepares to that bank.

        `patience_s`: how long the prepare may wait for others to ride with.
        """
        if bank not in self._batchers:
            return _failed(NotFound(f"unknown bank {bank}"))
        request = bank_pb2.PrepareRequest(txn_id=txn_id, currency=currency, legs=[
            bank_pb2.Leg(account=leg.account, delta_minor=leg.delta, counterparty=leg.counterparty) for leg in legs])
        return self._batchers[bank].submit(request, patience_s)  # type: ignore[return-value]

    def decide(self, bank: str, txn_id: str, commit: bool) -> asyncio.Future[Ack]:
        """Phase 2 for one transaction at one bank, batched like `prepare`."""
        if bank not in self._batchers:  # a decision from before the bank left the cluster file: keep retrying
            return _failed(NotFound(f"unknown bank {bank}"))
        return self._batchers[bank].submit(  # type: ignore[return-value]
            bank_pb2.Decision(txn_id=txn_id, commit=commit), DECISION_PATIENCE_S)

    async def settled(self, bank: str) -> None:
        """Wait (bounded) until what is already queued for `bank` has been answered.

        Clients are told a payment's outcome before the banks have applied
        it; a read made after that waits here, so it sees the payment. (A
        decision whose round failed is resent in the background with
        backoff; a read does not wait for that.)
        """
        try:
            async with asyncio.timeout(self._call_timeout):
                await self._batchers[bank].drain()
        except TimeoutError:
            pass  # the read goes on and meets the same slow bank

    def __contains__(self, bank: str) -> bool:
        return bank in self._stubs

    def stub(self, bank: str) -> bank_pb2_grpc.BankStub:
        try:
            return self._stubs[bank]
        except KeyError:
            raise NotFound(f"unknown bank {bank}") from None

    async def close(self, drain_s: float = 1.0) -> None:
        # Decisions still waiting for company go out first: a clean stop leaves no bank in doubt.
        try:
            async with asyncio.timeout(drain_s):
                await asyncio.gather(*(batcher.drain() for batcher in self._batchers.values()))
        except TimeoutError:
            pass  # a bank that is down hears them after the restart, as after a crash
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        for batcher in self._batchers.values():
            batcher.close()
        for rounds in self._rounds.values():
            rounds.close()
        for channel in self._channels.values():
            await channel.close()
