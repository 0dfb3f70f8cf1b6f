"""A bank that voted YES never decides alone: it asks the gateways.

Normally the gateway's phase 2 reaches the bank first. This loop covers
the rest (the gateway's messages lost, or the gateway down for long):
every prepared transaction older than the gateway's own time to decide is
asked about with GetDecision until the answer is COMMITTED or ABORTED.

Several gateways share one store (miniupi/nodes/replicas.py), so any of
them answers for every payment, from that store: the bank asks them in
turn until one answers, and its decision is final. A payment still
undecided is INITIATED in the store (its gateway writes it before any
prepare), so presumed abort answers only for ids never recorded.
"""
from __future__ import annotations

import asyncio
import contextlib
import time

import grpc
from loguru import logger

from miniupi.config import NodeConfig
from miniupi.nodes.bank_links import CHANNEL_OPTIONS
from miniupi.nodes.ledger import Ledger
from miniupi.tls import dial, impostor
from miniupi.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

CHECK_EVERY_S = 1.0


async def resolve_in_doubt(ledger: Ledger, node: NodeConfig) -> None:
    """Run until cancelled, applying the gateways' decision to old prepared transactions."""
    cluster = node.cluster
    patience = cluster.prepare_timeout_s + cluster.call_timeout_s
    async with contextlib.AsyncExitStack() as channels:
        stubs: dict[NodeConfig, gateway_pb2_grpc.GatewayStub] = {}
        for gateway in cluster.gateways.values():
            # Pinned to `gateway`: a decision from any other server would commit or abort on its word.
            channel = await channels.enter_async_context(
                dial(cluster.certs_dir, node.name, gateway.identity, gateway.address, CHANNEL_OPTIONS))
            stubs[gateway] = gateway_pb2_grpc.GatewayStub(channel)
        while True:
            await asyncio.sleep(CHECK_EVERY_S)
            try:
                await _ask_about_old_prepares(ledger, stubs, patience, cluster.call_timeout_s)
            except Exception as e:  # a store error must not end the loop; the next round retries
                logger.error("resolving in-doubt transactions failed: {!r}", e)


async def _ask_about_old_prepares(ledger: Ledger, stubs: dict[NodeConfig, gateway_pb2_grpc.GatewayStub],
                                  patience: float, timeout: float) -> None:
    now = time.time()
    old = [t for t in map(ledger.txns.get, list(ledger.prepared)) if t and now - t.prepared_at > patience]
    away: set[NodeConfig] = set()  # gateways that did not answer this round: asked again next round
    for txn in old:
        state = None
        for gateway, stub in stubs.items():
            if gateway in away:
                continue
            try:
                reply = await stub.GetDecision(gateway_pb2.GetDecisionRequest(txn_id=txn.txn_id), timeout=timeout)
            except grpc.aio.AioRpcError as e:
                if impostor(e.details()):
                    logger.error("refusing the server at {}: its certificate is not the gateway's ({})",
                                 gateway.address, e.details())
                else:
                    logger.debug("in doubt about {}: {} said {}", txn.txn_id, gateway.name, e.code().name)
                away.add(gateway)
                continue
            state = reply.state
            break
        if state is None:
            break  # no gateway answers; ask again next round
        if txn.txn_id not in ledger.prepared:
            continue  # phase 2 arrived meanwhile
        if state == common_pb2.COMMITTED:
            logger.info("in-doubt {} resolved: COMMITTED", txn.txn_id)
            await ledger.commit(txn.txn_id)
        elif state == common_pb2.ABORTED:
            logger.info("in-doubt {} resolved: ABORTED", txn.txn_id)
            await ledger.abort(txn.txn_id)
