"""The gateway's long-lived mTLS channels to every bank, one per bank.

Calls on them wait for the channel to be ready (bounded by each call's
timeout) rather than failing at once: a bank that was just restarted is
reached as soon as it listens, not after the channel's reconnect backoff,
and a bank that stays down costs a payment its prepare timeout, no more.
"""
from __future__ import annotations

import grpc

from miniupi.config import ClusterConfig
from miniupi.errors import NotFound
from miniupi.tls import channel_credentials
from miniupi.v1 import bank_pb2_grpc

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
