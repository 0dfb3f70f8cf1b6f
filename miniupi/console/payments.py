"""The recent payments of every gateway, merged, for the console's table and each payment's timeline.

Each gateway keeps its own recent payments with the steps of their
two-phase commit (miniupi/nodes/timeline.py) and gives, to the admin, what
changed after a sequence number (RecentPayments). The console asks each
gateway for what changed since its last answer, at most KEEP payments, over
one mTLS channel per gateway kept while a page watches. A gateway whose
number went back, or that did not answer, restarted or may have: it is
asked again for everything it keeps. An answer of KEEP payments may leave
out older changes, so it replaces what that gateway had said.

A payment taken over by another gateway has steps at both: its rows are
merged by id, their steps by time. Memory is bounded: at most KEEP
payments per gateway, of at most the gateway's own steps each, and the
newest KEEP payments (by the time they were recorded) merged.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import grpc

from miniupi.config import ClusterConfig, NodeConfig
from miniupi.tls import CertsMissing, dial
from miniupi.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

KEEP = 50  # payments kept and shown: a few screenfuls of the table, and a reply a poll costs the gateway little
CALL_TIMEOUT_S = 1.0
FINAL = ("COMMITTED", "ABORTED")

Row = dict[str, Any]  # one payment as the page reads it (steps apart)


def trace_dict(t: gateway_pb2.PaymentTrace) -> Row:
    """A gateway's trace as plain data: the row, and its steps oldest first."""
    return {
        "txn_id": t.txn_id, "from": t.from_account, "to": t.to_account, "amount_minor": t.amount.minor,
        "currency": t.amount.currency, "state": _state(t.state), "reason": t.reason,
        "kind": t.kind, "created_at": t.created_at,
        "steps": [{"at": s.at, "step": s.step, "bank": s.bank, "detail": s.detail} for s in t.steps],
    }


def _state(state: int) -> str:
    """The state's name; a number this console does not know (a newer gateway's) as itself."""
    try:
        return common_pb2.TxnState.Name(state)
    except ValueError:
        return str(state)


def merge(traces: list[Row]) -> Row:
    """One payment seen by several gateways: the earliest record, every step in time order, and the
    settled state if any gateway has settled it (the newest such)."""
    if len(traces) == 1:
        return traces[0]
    by_last = sorted(traces, key=lambda t: t["steps"][-1]["at"] if t["steps"] else t["created_at"])
    settled = [t for t in by_last if t["state"] in FINAL]
    chosen = (settled or by_last)[-1]
    steps = sorted((s for t in traces for s in t["steps"]), key=lambda s: s["at"])
    return {**chosen, "created_at": min(t["created_at"] for t in traces), "steps": steps}


def newest_first(rows: list[Row]) -> list[Row]:
    """The order of the table (the page sorts the same way): newest record first, id breaking ties."""
    return sorted(rows, key=lambda r: (r["created_at"], r["txn_id"]), reverse=True)


@dataclass
class _Gateway:
    """What the console knows of one gateway's recent payments."""

    node: NodeConfig
    channel: grpc.aio.Channel | None = None
    after: int | None = None  # the last seq it answered with; None: ask for all it keeps
    traces: dict[str, Row] = field(default_factory=dict)
    problem: str | None = None


class Payments:
    """The merged recent payments of every gateway of `cluster`, and what changed since the last poll."""

    def __init__(self, cluster: ClusterConfig, keep: int = KEEP) -> None:
        self.keep = keep
        self._gateways = [_Gateway(node) for node in cluster.gateways.values()]
        self._rows: dict[str, Row] = {}  # txn_id -> merged trace, the newest `keep`
        self._version = 0  # bumped by every change of a merged trace; a row's "v" says which
        self._fresh = True  # nothing published since the last forget(): publish even an empty table
        self._problems: list[str] = []  # the gateways that did not answer the last poll, and why

    async def poll(self) -> dict[str, Any] | None:
        """Ask every gateway once; the "payments" event's data if anything changed, else None."""
        replaced = await asyncio.gather(*(self._ask(g) for g in self._gateways))
        merged: dict[str, list[Row]] = {}
        for g in self._gateways:
            for txn_id, trace in g.traces.items():
                merged.setdefault(txn_id, []).append(trace)
        kept = newest_first([merge(traces) for traces in merged.values()])[:self.keep]
        changed = []
        rows = {}
        for trace in kept:
            before = self._rows.get(trace["txn_id"])
            if before is not None and _same(before, trace):
                rows[trace["txn_id"]] = before
                continue
            self._version += 1
            rows[trace["txn_id"]] = {**trace, "v": self._version}
            changed.append(rows[trace["txn_id"]])
        # Rows leave the table only when it is full, by the order the page keeps too, or when a
        # gateway's payments were replaced: then the page is sent them all.
        whole = any(replaced) or self._fresh
        problems = [g.problem for g in self._gateways if g.problem]
        quiet = not changed and not whole and problems == self._problems
        self._rows, self._fresh, self._problems = rows, False, problems
        if quiet:
            return None
        return self._event(list(rows.values()) if whole else changed, whole)

    def whole(self) -> dict[str, Any]:
        """Every kept payment: what a page that opens now starts from."""
        return self._event(list(self._rows.values()), True)

    def timeline(self, txn_id: str) -> Row | None:
        """One kept payment with every step; None once it is no longer among the recent ones."""
        return self._rows.get(txn_id)

    async def forget(self) -> None:
        """Nobody watches: hold nothing, and close the channels; the next page starts afresh."""
        for g in self._gateways:
            if g.channel is not None:
                await g.channel.close()
            g.channel, g.after, g.traces, g.problem = None, None, {}, None
        self._rows, self._fresh, self._problems = {}, True, []

    # -- inside ---------------------------------------------------------------------------------

    def _event(self, rows: list[Row], whole: bool) -> dict[str, Any]:
        return {"payments": [_row(r) for r in newest_first(rows)], "whole": whole, "keep": self.keep,
                "note": "; ".join(self._problems) or None}

    async def _ask(self, g: _Gateway) -> bool:
        """Take in what the gateway changed since it last answered; True if its payments were replaced."""
        try:
            if g.channel is None:
                g.channel = dial(g.node.cluster.certs_dir, "admin", g.node.identity, g.node.address)
            reply = await gateway_pb2_grpc.GatewayStub(g.channel).RecentPayments(
                gateway_pb2.RecentPaymentsRequest(after=g.after or 0, limit=self.keep), timeout=CALL_TIMEOUT_S)
        except CertsMissing:
            g.problem = f"{g.node.name}: no admin certificate to read its payments"
            return False
        except grpc.RpcError as e:
            g.problem = f"no payments from {g.node.name} ({e.code().name.lower()})"
            # It may be restarting: ask again for everything it keeps when it answers, on a channel
            # dialled afresh rather than one waiting out its reconnect backoff.
            g.after = None
            channel, g.channel = g.channel, None
            if channel is not None:
                await channel.close()
            return False
        g.problem = None
        replace = g.after is None or reply.seq < g.after or len(reply.payments) >= self.keep
        if replace:
            g.traces = {}
        for t in reply.payments:
            g.traces[t.txn_id] = trace_dict(t)
        if len(g.traces) > self.keep:
            g.traces = {r["txn_id"]: r for r in newest_first(list(g.traces.values()))[:self.keep]}
        g.after = reply.seq
        return replace


def _same(before: Row, now: Row) -> bool:
    return all(before[k] == now[k] for k in now)


def _row(r: Row) -> Row:
    """A kept payment as the table gets it: everything but the steps, which the timeline fetches."""
    return {k: v for k, v in r.items() if k != "steps"} | {"steps": len(r["steps"])}
