"""Which gateway a client sends to, and moving on to the next when one cannot be reached.

A client knows every gateway of the cluster file. It sends each call to the
gateway that answered last (the first of the file, to begin with); when that
one cannot be reached, it sends the very same request, with its ids and the
session key, to the next, and so on: each gateway once per call, so a call
makes at most as many attempts as there are gateways and then fails as the
preferred gateway's attempt did. The user is never asked to log in again for
it; a gateway that shares the others' sessions accepts the key as it is.

Only a failure that says the gateway was not reached, or went away, moves on:

- UNAVAILABLE or CANCELLED without a miniupi reason: the connection was
  refused, broke, or the handshake refused a server that is not the
  gateway (nothing was sent to that one);
- DEADLINE_EXCEEDED on a channel that never connected.

Anything else is the gateway's answer and is returned or raised as it is: a
refusal, its own UNAVAILABLE with a reason (BANK_UNAVAILABLE: nothing
decided, send it later), and a timeout on a connected channel, where the
gateway may still be working on the call (the outbox sends it again, with
the same id, after its backoff). Sending a call again elsewhere is safe
because every write a client makes carries an id the client made (a
payment's, a refund's, a collect request's, a deposit's), and a gateway
answers a repeated id with its first result instead of acting twice; reads,
login and logout are harmless to repeat. Register is the one call whose lost
answer comes back on a resend as "account exists", which is then true.

gRPC's own client-side balancing (an `ipv4:` target listing every gateway,
with pick_first or round_robin) would pin the name `gateway` on each address
as well, but it fails the call that met a dead address instead of sending it
to the next, takes addresses only (no host names), and hides which gateway a
call reached; the loop here is short and says all of that plainly.
"""
from __future__ import annotations

import asyncio
from typing import Any

import grpc

from miniupi.config import ClusterConfig, NodeConfig
from miniupi.rich_status import error_of
from miniupi.tls import dial, impostor
from miniupi.v1 import gateway_pb2_grpc

_NOT_REACHED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


class Gateways:
    """One channel per gateway of the cluster, made when first needed, and the gateway to send to now."""

    def __init__(self, cluster: ClusterConfig, identity: str, close_grace_s: float) -> None:
        self.cluster, self.identity, self._grace = cluster, identity, close_grace_s
        self.nodes: list[NodeConfig] = list(cluster.gateways.values())
        self.current = 0  # index in nodes of the gateway that answered last
        self._channels: list[grpc.aio.Channel | None] = [None] * len(self.nodes)
        self._stubs: list[gateway_pb2_grpc.GatewayStub | None] = [None] * len(self.nodes)
        self._retired: set[asyncio.Future[None]] = set()

    @property
    def preferred(self) -> NodeConfig:
        """The gateway the next call goes to first."""
        return self.nodes[self.current]

    def _stub(self, i: int) -> gateway_pb2_grpc.GatewayStub:
        channel, stub = self._channels[i], self._stubs[i]
        if channel is not None and stub is not None:
            if channel.get_state(try_to_connect=False) != grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                return stub
            # A failed channel fails calls at once until its own backoff ends (up to two minutes after
            # a long outage); the client keeps its own schedule, so each try gets a channel that dials now.
            # The old one is closed in the background, once any call still on it is over.
            closing = asyncio.ensure_future(channel.close(grace=self._grace))
            self._retired.add(closing)
            closing.add_done_callback(self._retired.discard)
        # A redial gets a private subchannel pool: it must really dial again, not inherit the shared
        # connection's backoff.
        options = (("grpc.use_local_subchannel_pool", 1),) if channel is not None else ()
        node = self.nodes[i]
        self._channels[i] = channel = dial(self.cluster.certs_dir, self.identity, node.identity, node.address,
                                           options)
        self._stubs[i] = stub = gateway_pb2_grpc.GatewayStub(channel)
        return stub

    def _not_reached(self, i: int, e: grpc.aio.AioRpcError) -> bool:
        """Whether `e` says gateway i was not reached or went away, rather than answered."""
        if error_of(e) is not None:
            return False  # a miniupi reason: the gateway's own answer
        if e.code() in _NOT_REACHED:
            return True
        channel = self._channels[i]
        return (e.code() == grpc.StatusCode.DEADLINE_EXCEEDED and channel is not None
                and channel.get_state(try_to_connect=False) != grpc.ChannelConnectivity.READY)

    async def call(self, method: str, request: Any, *, timeout: float, metadata: Any) -> Any:
        """The reply of the first gateway reached, from the preferred one on; each gateway is tried once.

        When none is reached, raises the failure of a gateway whose handshake showed an
        impostor if there was one (it must not go unsaid), else the preferred gateway's.
        """
        failures: list[grpc.aio.AioRpcError] = []
        for step in range(len(self.nodes)):
            i = (self.current + step) % len(self.nodes)
            try:
                reply = await getattr(self._stub(i), method)(request, timeout=timeout, metadata=metadata)
            except grpc.aio.AioRpcError as e:
                if not self._not_reached(i, e):
                    self.current = i  # a refusal is an answer: this gateway is up
                    raise
                failures.append(e)
                continue
            self.current = i
            return reply
        raise next((e for e in failures if impostor(e.details())), failures[0])

    async def close(self) -> None:
        for channel in self._channels:
            if channel is not None:
                await channel.close()
        await asyncio.gather(*self._retired, return_exceptions=True)
