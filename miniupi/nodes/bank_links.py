"""The gateway's long-lived mTLS channels to every bank, one per bank.

Prepares and decisions go out through a Batcher per bank and kind, so
under load one PrepareMany or DecideMany call carries many payments.

Calls on them wait for the channel to be ready (bounded by each call's
timeout) rather than failing at once: a bank that was just restarted is
reached as soon as it listens, not after the channel's reconnect backoff,
and a bank that stays down costs a payment its prepare timeout, no more.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

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


def _batched(call: Callable[..., Awaitable[Any]], request: Callable[[list[Any]], Any],
             results: Callable[[Any], Sequence[Any]], timeout: float) -> Batcher[Any, Any]:
    """A Batcher whose batches go out as one `call(request(items))`, answered by `results(reply)`."""

    async def send(items: list[Any]) -> Sequence[Any]:
        return results(await call(request(items), timeout=timeout, wait_for_ready=True))

    return Batcher(send)


class BankLinks:
    def __init__(self, cluster: ClusterConfig, identity: str = "gateway") -> None:
        creds = channel_credentials(cluster.certs_dir, identity)
        self._channels = {
            name: grpc.aio.secure_channel(node.address, creds, options=CHANNEL_OPTIONS)
            for name, node in cluster.banks.items()
        }
        self._stubs = {name: bank_pb2_grpc.BankStub(ch) for name, ch in self._channels.items()}
        self._prepares = {
            name: _batched(stub.PrepareMany, lambda items: bank_pb2.PrepareManyRequest(prepares=items),
                           lambda reply: reply.votes, cluster.prepare_timeout_s)
            for name, stub in self._stubs.items()}
        self._decisions = {
            name: _batched(stub.DecideMany, lambda items: bank_pb2.DecideManyRequest(decisions=items),
                           lambda reply: reply.outcomes, cluster.call_timeout_s)
            for name, stub in self._stubs.items()}

    def prepare(self, bank: str, request: bank_pb2.PrepareRequest) -> asyncio.Future[bank_pb2.PrepareReply]:
        """The bank's vote, sent in a batch with other payments' prepares to that bank."""
        if bank not in self._prepares:
            raise NotFound(f"unknown bank {bank}")
        return self._prepares[bank].submit(request)

    def decide(self, bank: str, txn_id: str, commit: bool) -> asyncio.Future[bank_pb2.DecisionOutcome]:
        """Phase 2 for one transaction at one bank, batched like `prepare`."""
        if bank not in self._decisions:
            raise NotFound(f"unknown bank {bank}")
        return self._decisions[bank].submit(bank_pb2.Decision(txn_id=txn_id, commit=commit))

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
