"""A bank that voted YES never decides alone: it asks the gateway.

Normally the gateway's phase 2 reaches the bank first. This loop covers
the rest (the gateway's messages lost, or the gateway down for long):
every prepared transaction older than the gateway's own time to decide is
asked about with GetDecision until the answer is COMMITTED or ABORTED.
"""
from __future__ import annotations

import asyncio
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
    """Run until cancelled, applying the gateway's decision to old prepared transactions."""
    cluster = node.cluster
    patience = cluster.prepare_timeout_s + cluster.call_timeout_s
    # Pinned to `gateway`: a decision from any other server would commit or abort on its word.
    async with dial(cluster.certs_dir, node.name, "gateway", cluster.gateway.address, CHANNEL_OPTIONS) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        while True:
            await asyncio.sleep(CHECK_EVERY_S)
            try:
                await _ask_about_old_prepares(ledger, node, stub, patience, cluster.call_timeout_s)
            except Exception as e:  # a store error must not end the loop; the next round retries
                logger.error("resolving in-doubt transactions failed: {!r}", e)


async def _ask_about_old_prepares(ledger: Ledger, node: NodeConfig, stub: gateway_pb2_grpc.GatewayStub,
                                  patience: float, timeout: float) -> None:
    now = time.time()
    old = [t for t in map(ledger.txns.get, list(ledger.prepared)) if t and now - t.prepared_at > patience]
    for txn in old:
        try:
            reply = await stub.GetDecision(gateway_pb2.GetDecisionRequest(txn_id=txn.txn_id),
                                           timeout=timeout)
        except grpc.aio.AioRpcError as e:
            if impostor(e.details()):
                logger.error("refusing the server at {}: its certificate is not the gateway's ({})",
                             node.cluster.gateway.address, e.details())
            else:
                logger.debug("in doubt about {}: gateway said {}", txn.txn_id, e.code().name)
            break  # the gateway is away; ask again next round
        if txn.txn_id not in ledger.prepared:
            continue  # phase 2 arrived meanwhile
        if reply.state == common_pb2.COMMITTED:
            logger.info("in-doubt {} resolved: COMMITTED", txn.txn_id)
            await ledger.commit(txn.txn_id)
        elif reply.state == common_pb2.ABORTED:
            logger.info("in-doubt {} resolved: ABORTED", txn.txn_id)
            await ledger.abort(txn.txn_id)
