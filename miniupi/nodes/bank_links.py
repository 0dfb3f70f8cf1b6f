"""The gateway's long-lived mTLS channels to every bank, one per bank.

Prepares and decisions go out through a Batcher per bank and kind, so
under load one PrepareMany or DecideMany call carries many payments.

Calls on them wait for the channel to be ready (bounded by each call's
timeout) rather than failing at once: a bank that was just restarted is
reached as soon as it listens, not after the channel's reconnect backoff,
and a bank that stays down costs a payment its prepare timeout, no more.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import grpc

from miniupi.config import ClusterConfig
from miniupi.errors import NotFound
from miniupi.nodes.batcher import Batcher
from miniupi.tls import channel_credentials
from miniupi.v1 import bank_pb2, bank_pb2_grpc

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # A restarted bank should be found again quickly, not after minutes of backoff.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]


class BankLinks:
    def __init__(self, cluster: ClusterConfig, identity: str = "gateway") -> None:
        creds = channel_credentials(cluster.certs_dir, identity)
        self._channels = {
            name: grpc.aio.secure_channel(node.address, creds, options=CHANNEL_OPTIONS)
            for name, node in cluster.banks.items()
        }
        self._stubs = {name: bank_pb2_grpc.BankStub(ch) for name, ch in self._channels.items()}
        self._prepares = {name: Batcher(self._prepare_many(stub, cluster.prepare_timeout_s))
                          for name, stub in self._stubs.items()}
        self._decisions = {name: Batcher(self._decide_many(stub, cluster.call_timeout_s))
                           for name, stub in self._stubs.items()}

    @staticmethod
    def _prepare_many(stub: bank_pb2_grpc.BankStub, timeout: float) -> Callable[
            [list[bank_pb2.PrepareRequest]], Awaitable[Sequence[bank_pb2.PrepareReply]]]:
        async def send(prepares: list[bank_pb2.PrepareRequest]) -> Sequence[bank_pb2.PrepareReply]:
            reply = await stub.PrepareMany(bank_pb2.PrepareManyRequest(prepares=prepares), timeout=timeout,
                                           wait_for_ready=True)
            return reply.votes
        return send

    @staticmethod
    def _decide_many(stub: bank_pb2_grpc.BankStub, timeout: float) -> Callable[
            [list[bank_pb2.Decision]], Awaitable[Sequence[bank_pb2.DecisionOutcome]]]:
        async def send(decisions: list[bank_pb2.Decision]) -> Sequence[bank_pb2.DecisionOutcome]:
            reply = await stub.DecideMany(bank_pb2.DecideManyRequest(decisions=decisions), timeout=timeout,
                                          wait_for_ready=True)
            return reply.outcomes
        return send

    async def prepare(self, bank: str, request: bank_pb2.PrepareRequest) -> bank_pb2.PrepareReply:
        """The bank's vote, sent in a batch with other payments' prepares to that bank."""
        if bank not in self._prepares:
            raise NotFound(f"unknown bank {bank}")
        return await self._prepares[bank].submit(request)

    async def decide(self, bank: str, txn_id: str, commit: bool) -> bank_pb2.DecisionOutcome:
        """Phase 2 for one transaction at one bank, batched like `prepare`."""
        if bank not in self._decisions:
            raise NotFound(f"unknown bank {bank}")
        return await self._decisions[bank].submit(bank_pb2.Decision(txn_id=txn_id, commit=commit))

    def __contains__(self, bank: str) -> bool:
        return bank in self._stubs

    def stub(self, bank: str) -> bank_pb2_grpc.BankStub:
        try:
            return self._stubs[bank]
        except KeyError:
            raise NotFound(f"unknown bank {bank}") from None

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
