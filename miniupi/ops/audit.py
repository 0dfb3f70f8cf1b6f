"""`miniupi audit`: read every node and check the invariants of DESIGN.md section 2.

Every node streams its reading in id order: each bank its counters, its
accounts, then its transactions; the gateway its transactions and its
collect requests. The audit joins those streams by transaction id
(miniupi/ops/join.py) and hands each id to the checker
(miniupi/ops/invariants.py), reading each stream only as far as the join
needs: its memory follows the accounts, the pairs of banks, the (payer,
day) pairs under a daily limit and the refunds, not the payments stored.

The banks are read first: each bank's reading is one moment of its ledger,
fixed when its stream opens, and the gateway's streams after, so its record
of any id is never older than a bank's. Transactions still being decided
count as "in doubt"; once all nodes are up they must settle, so `audit`
reads again (bounded by `settle_s`) before it judges them as violations.

`check` judges a reading held in memory (`collect`, or views made by hand)
with the same checker: tests, the chaos run and small clusters use it.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from miniupi.config import ClusterConfig
from miniupi.errors import Unavailable
from miniupi.ops.invariants import (
    AuditReport,
    BankView,
    Checker,
    GatewayTxnView,
    GatewayView,
    Legs,
    RequestView,
)
from miniupi.ops.join import OutOfOrder, Run, hungry, ready
from miniupi.tls import dial
from miniupi.v1 import bank_pb2, bank_pb2_grpc, common_pb2, gateway_pb2, gateway_pb2_grpc

__all__ = ["AuditReport", "BankView", "GatewayTxnView", "GatewayView", "RequestView", "audit", "check", "collect"]

Row = tuple[str, GatewayTxnView | None, RequestView | None, dict[str, tuple[str, Legs]]]
# How long the audit waits for one gateway to connect before it reads through the next.
GATEWAY_CONNECT_S = 3.0


def _rows(key: str, values: Sequence[Any], banks: Sequence[str]) -> Row:
    """One joined id: the runs are the gateway's transactions, its requests, then each bank's."""
    return key, values[0], values[1], {bank: v for bank, v in zip(banks, values[2:]) if v is not None}


def check(gateway: Mapping[str, GatewayTxnView], banks: list[BankView], settled: bool = True,
          cluster: ClusterConfig | None = None) -> AuditReport:
    """Every invariant over one reading of the cluster held in memory; `settled` makes in-doubt a violation.

    The collect requests are checked when `gateway` is a GatewayView, which carries them; the daily
    limit when `cluster` is given, as it holds the limits and the time zone of their days.
    """
    requests = gateway.requests if isinstance(gateway, GatewayView) else None
    checker = Checker(banks, settled, cluster, requests=requests is not None)
    runs = [Run("the gateway", sorted(gateway.items()), done=True),
            Run("the gateway's requests", sorted((requests or {}).items()), done=True),
            *(Run(b.name, sorted(b.txns.items()), done=True) for b in banks)]
    names = [b.name for b in banks]
    for key, values in ready(runs):
        checker.observe(*_rows(key, values, names))
    txn_ids, request_ids = checker.lookups()
    return checker.finish({i: gateway.get(i) for i in txn_ids}, {i: (requests or {}).get(i) for i in request_ids})


# -- reading the nodes ---------------------------------------------------------------------------------


class _Stream:
    """A node's server stream, read one message at a time, each within `timeout` seconds."""

    def __init__(self, what: str, call: Any, timeout: float) -> None:
        self.what, self.call, self.timeout = what, call, timeout

    async def read(self) -> Any | None:
        """The next message, or None at the end."""
        try:
            message = await asyncio.wait_for(self.call.read(), self.timeout)
        except TimeoutError:
            self.call.cancel()
            raise Unavailable(f"cannot audit {self.what}: no answer within {self.timeout:g} s") from None
        except grpc.aio.AioRpcError as e:
            raise Unavailable(f"cannot audit {self.what}: {e.code().name} {e.details()}") from None
        return None if message is grpc.aio.EOF else message


def _gateway_txn(t: gateway_pb2.GatewayTxn) -> GatewayTxnView:
    return GatewayTxnView(t.from_account, t.to_account, t.amount.minor, common_pb2.TxnState.Name(t.state),
                          t.acknowledged, t.refund_of, t.request_id, t.created_at, t.decided_at)


def _request(q: gateway_pb2.CollectRequest) -> RequestView:
    return RequestView(q.from_account, q.to_account, q.amount.minor,
                       gateway_pb2.RequestState.Name(q.state).removeprefix("REQUEST_"))


def _bank_txns(chunk: bank_pb2.BankAuditChunk) -> list[tuple[str, tuple[str, Legs]]]:
    return [(t.txn_id, (t.state, [(leg.account, leg.delta_minor, leg.counterparty) for leg in t.legs]))
            for t in chunk.txns]


@dataclass
class _Reading:
    """The streams of one reading: every bank's (counters and accounts read), then the gateway's."""

    banks: list[BankView]
    feeds: dict[int, Callable[[], Any]]  # a run's index -> a coroutine function that reads more of it
    runs: list[Run]

    async def rows(self) -> AsyncIterator[Row]:
        """Every id, joined across the nodes, in increasing order, read as far as needed."""
        names = [b.name for b in self.banks]
        try:
            while True:
                for key, values in ready(self.runs):
                    yield _rows(key, values, names)
                starving = hungry(self.runs)
                if not starving:
                    return
                await self.feeds[self.runs.index(starving[0])]()
        except OutOfOrder as e:
            raise Unavailable(f"cannot audit: {e}") from None


@contextlib.asynccontextmanager
async def _reading(cluster: ClusterConfig, timeout: float) -> AsyncIterator[_Reading]:
    async with contextlib.AsyncExitStack() as stack:
        def channel(peer: str, address: str) -> grpc.aio.Channel:
            return dial(cluster.certs_dir, "admin", peer, address)

        async def open_bank(name: str) -> tuple[BankView, Run, Callable[[], Any]]:
            ch = await stack.enter_async_context(channel(name, cluster.banks[name].address))
            stream = _Stream(name, bank_pb2_grpc.BankStub(ch).Audit(bank_pb2.AuditRequest()), timeout)
            view, run = BankView(name), Run(name)
            # The counters and the accounts come first: read them whole (they follow the accounts), up to
            # the first transactions.
            while (chunk := await stream.read()) is not None:
                view.deposits += chunk.deposits_minor
                view.treasury += chunk.treasury_minor
                for a in chunk.accounts:
                    view.accounts[a.account] = (a.balance_minor, a.held_minor, a.opening_minor)
                if chunk.txns:
                    run.extend(_bank_txns(chunk))
                    break
            else:
                run.done = True

            async def feed() -> None:
                chunk = await stream.read()
                if chunk is None:
                    run.done = True
                else:
                    run.extend(_bank_txns(chunk))
            return view, run, feed

        try:
            banks = await asyncio.gather(*(open_bank(name) for name in cluster.banks))
        except OutOfOrder as e:
            raise Unavailable(f"cannot audit: {e}") from None
        ch = await stack.enter_async_context(await _a_gateway(cluster, timeout))
        gateway = _Stream("the gateway", gateway_pb2_grpc.GatewayStub(ch).ListTransactions(
            gateway_pb2.ListTransactionsRequest()), timeout)
        txns, requests = Run("the gateway"), Run("the gateway's requests")

        async def feed_gateway() -> None:
            chunk = await gateway.read()
            if chunk is None:
                txns.done = requests.done = True
                return
            txns.extend((t.txn_id, _gateway_txn(t)) for t in chunk.txns)
            requests.extend((q.request_id, _request(q)) for q in chunk.requests)
            # One stream in id order, a request after the payment of its id: whatever id a chunk ends
            # with, no payment up to it is still to come, nor a request below it (or up to it, when a
            # request ends the chunk).
            last_txn = chunk.txns[-1].txn_id if chunk.txns else ""
            last_request = chunk.requests[-1].request_id if chunk.requests else ""
            last = max(last_txn, last_request)
            txns.arrived(last)
            requests.arrived(last, inclusive=last_request == last)

        runs = [txns, requests, *(run for _, run, _ in banks)]
        feeds = {0: feed_gateway, 1: feed_gateway, **{2 + i: feed for i, (_, _, feed) in enumerate(banks)}}
        yield _Reading([view for view, _, _ in banks], feeds, runs)


async def _a_gateway(cluster: ClusterConfig, timeout: float) -> grpc.aio.Channel:
    """A channel to the first gateway that connects: several gateways answer from their one store."""
    for node in cluster.gateways.values():
        ch = dial(cluster.certs_dir, "admin", node.identity, node.address)
        try:
            await asyncio.wait_for(ch.channel_ready(), min(timeout, GATEWAY_CONNECT_S))
            return ch
        except TimeoutError:
            await ch.close()
    if len(cluster.gateways) == 1:
        return dial(cluster.certs_dir, "admin", cluster.gateway.identity, cluster.gateway.address)  # its error
    raise Unavailable(f"cannot audit: no gateway answers ({', '.join(cluster.gateways)})")


async def _look_up(cluster: ClusterConfig, txn_ids: set[str], request_ids: set[str], timeout: float
                   ) -> tuple[dict[str, GatewayTxnView], dict[str, RequestView]]:
    """The gateway's transactions and requests of these ids, read again from its stream."""
    txns: dict[str, GatewayTxnView] = {}
    requests: dict[str, RequestView] = {}
    if not txn_ids and not request_ids:
        return txns, requests
    async with await _a_gateway(cluster, timeout) as ch:
        stream = _Stream("the gateway", gateway_pb2_grpc.GatewayStub(ch).ListTransactions(
            gateway_pb2.ListTransactionsRequest()), timeout)
        while (chunk := await stream.read()) is not None:
            txns.update((t.txn_id, _gateway_txn(t)) for t in chunk.txns if t.txn_id in txn_ids)
            requests.update((q.request_id, _request(q)) for q in chunk.requests if q.request_id in request_ids)
    return txns, requests


async def _audited(cluster: ClusterConfig, settled: bool, timeout: float) -> AuditReport:
    """One reading of the cluster, judged as it streams."""
    async with _reading(cluster, timeout) as reading:
        checker = Checker(reading.banks, settled, cluster, requests=True)
        async for row in reading.rows():
            checker.observe(*row)
    return checker.finish(*await _look_up(cluster, *checker.lookups(), timeout))


async def collect(cluster: ClusterConfig, timeout: float = 30.0) -> tuple[GatewayView, list[BankView]]:
    """Read the gateway and every bank, as the admin, into memory: for tests and small clusters.

    `timeout` bounds the wait for each message of each node's stream.
    """
    gateway = GatewayView()
    async with _reading(cluster, timeout) as reading:
        banks = {b.name: b for b in reading.banks}
        async for txn_id, g, q, at_banks in reading.rows():
            if g is not None:
                gateway[txn_id] = g
            if q is not None:
                gateway.requests[txn_id] = q
            for name, txn in at_banks.items():
                banks[name].txns[txn_id] = txn
    return gateway, reading.banks


async def audit(cluster: ClusterConfig, settle_s: float = 30.0, timeout: float = 30.0) -> AuditReport:
    """Wait up to `settle_s` for in-doubt transactions to settle, then judge.

    `timeout` bounds the wait for each message of each node's stream, not the whole reading.
    """
    deadline = time.monotonic() + settle_s
    while True:
        report = await _audited(cluster, settled=False, timeout=timeout)
        if not report.in_doubt or time.monotonic() >= deadline:
            return await _audited(cluster, settled=True, timeout=timeout) if report.in_doubt else report
        await asyncio.sleep(0.5)
