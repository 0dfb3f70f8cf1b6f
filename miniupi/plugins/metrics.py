"""Prometheus metrics of a node, served over HTTP at the metrics_port its cluster file gives it.

Counts and durations come from the hooks (decisions, votes, phases, store
writes), and the live counts from the node's readings when a scrape asks,
so a payment pays a hook call per event (a few microseconds) and nothing
for the gauges. Each node has a registry of its own: the process-wide default one
is never served. A node without a metrics_port serves nothing and its hooks
return at once.

The endpoint is prometheus_client's own threaded HTTP server, on the node's
host: it needs no event loop, so a scrape never waits for the node's loop,
nor the loop for a scrape.
"""
from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, start_http_server
from prometheus_client.process_collector import ProcessCollector

from miniupi.config import NodeConfig
from miniupi.contract.hookspecs import hookimpl
from miniupi.contract.interceptors import MethodInterceptor
from miniupi.errors import AccountLocked, MiniupiError

# Seconds: a payment or a phase, from a millisecond to the 10 s of a prepare timeout.
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
# Seconds: one durable write, from an fsync on a fast disk to a stalled one.
WRITE_BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
# Writers' batches sharing one durable write.
ITEMS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# The gateway methods that pay, and the kind of payment each makes.
PAYING = {"Pay": "payment", "Refund": "refund", "ApproveRequest": "request"}
OUTCOMES = {"COMMITTED": "committed", "ABORTED": "aborted"}
# What the gateway's readings (miniupi_node_loaded) mean, as gauges.
READINGS = {
    "payments_in_flight": "Payments recorded and not yet decided.",
    "decisions_unacknowledged": "Decided payments not yet acknowledged by every bank.",
    "sessions_live": "Sessions kept in memory: used within session_idle_s (expired ones go at the next login).",
}


class NodeMetrics:
    """One node's metrics, its registry and the HTTP server that serves them."""

    def __init__(self, node: NodeConfig, readings: dict[str, Callable[[], int]]) -> None:
        self.node = node
        self.registry = r = CollectorRegistry()
        info = Gauge("miniupi_node_info", "This node: always 1.", ["node", "role"], registry=r)
        info.labels(node.name, node.role).set(1)
        self.write_seconds = Histogram("miniupi_store_write_seconds", "One durable write of the group commit.",
                                       buckets=WRITE_BUCKETS, registry=r)
        self.write_items = Histogram("miniupi_store_write_items", "Writers' batches (payments' records, decisions, "
                                     "...) sharing one durable write.", buckets=ITEMS_BUCKETS, registry=r)
        for name, read in readings.items():
            Gauge(f"miniupi_{name}", READINGS.get(name, name), registry=r).set_function(read)
        self._server: Any = None
        self._bank() if node.role == "bank" else self._gateway()
        ProcessCollector(registry=r)  # the standard process_* metrics (CPU, memory, open files), listed last

    def _bank(self) -> None:
        r = self.registry
        votes = Counter("miniupi_bank_votes", "Votes on prepares, by vote (yes or no).", ["vote"], registry=r)
        self.votes = {True: votes.labels("yes"), False: votes.labels("no")}
        decisions = Counter("miniupi_bank_decisions", "Decisions applied to prepared transactions.",
                            ["decision"], registry=r)
        self.decisions = {d: decisions.labels(label) for d, label in OUTCOMES.items()}

    def _gateway(self) -> None:
        r = self.registry
        self.payments = Counter("miniupi_payments", "Payments by outcome (committed, aborted: the durable "
                                "decision; refused: before any 2PC), refusal reason and kind.",
                                ["outcome", "reason", "kind"], registry=r)
        self._outcomes: dict[tuple[str, str, str], Any] = {}
        for kind in PAYING.values():
            self.outcome("committed", "", kind)
        self.payment_seconds = Histogram("miniupi_payment_seconds", "A new payment, from its record to its "
                                         "durable decision.", buckets=LATENCY_BUCKETS, registry=r)
        phases = Histogram("miniupi_2pc_phase_seconds", "The gateway's 2PC phases: prepare (the prepares sent to "
                           "every vote in), decision_write (the commit point), phase2 (the decision sent to every "
                           "ack in).", ["phase"], buckets=LATENCY_BUCKETS, registry=r)
        self.phases = {phase: phases.labels(phase) for phase in ("prepare", "decision_write", "phase2")}
        self.phases["payment"] = self.payment_seconds
        prepares = Histogram("miniupi_bank_prepare_seconds", "One bank's answer to a prepare, as the gateway waits "
                             "for it.", ["bank"], buckets=LATENCY_BUCKETS, registry=r)
        self.prepares = {bank: prepares.labels(bank) for bank in self.node.cluster.banks}
        self.lockouts = Counter("miniupi_lockouts", "Logins refused because the account is locked.", registry=r)
        self.repeats = Counter("miniupi_repeated_ids", "Payments asked again for an id already known (outbox "
                               "resends, retries): answered from its record.", registry=r)

    def outcome(self, outcome: str, reason: str, kind: str) -> Any:
        """The counter of one outcome, reason and kind, made on its first use."""
        key = (outcome, reason, kind)
        child = self._outcomes.get(key)
        if child is None:
            child = self._outcomes[key] = self.payments.labels(outcome, reason, kind)
        return child

    def serve(self, port: int) -> None:
        try:
            self._server, _ = start_http_server(port, self.node.host, self.registry)
        except OSError as e:
            raise OSError(f"cannot serve metrics on {self.node.host}:{port}: {e.strerror or e}") from None

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


disable_created_metrics()  # no *_created series: a restart shows as counters starting again, as usual

_nodes: dict[str, NodeMetrics] = {}  # the node of this process, by name; none without a metrics_port
# Within a paying call: whether it reached the coordinator's record (a new id) or the id was known,
# so the call's error is then no refusal before 2PC.
_reached_2pc: contextvars.ContextVar[bool] = contextvars.ContextVar("miniupi_reached_2pc", default=False)


def _of(node: NodeConfig | None) -> NodeMetrics | None:
    """The node's metrics; None without a metrics_port (or for hooks called with no node, as tests do)."""
    return _nodes.get(node.name) if node is not None else None


@hookimpl
def miniupi_node_loaded(node: NodeConfig, readings: dict[str, Callable[[], int]]) -> None:
    if node.metrics_port is None:
        return
    metrics = NodeMetrics(node, readings)
    metrics.serve(node.metrics_port)
    _nodes[node.name] = metrics


@hookimpl
def miniupi_node_stopped(node: NodeConfig) -> None:
    metrics = _nodes.pop(node.name, None) if node is not None else None
    if metrics is not None:
        metrics.close()


@hookimpl
def miniupi_server_interceptors(node: NodeConfig) -> list[grpc.aio.ServerInterceptor]:
    return [PaymentCallInterceptor(node.name)] if node.metrics_port is not None and node.role == "gateway" else []


@hookimpl
def miniupi_after_store_write(node: NodeConfig, seconds: float, items: int) -> None:
    metrics = _of(node)
    if metrics is not None:
        metrics.write_seconds.observe(seconds)
        metrics.write_items.observe(items)


@hookimpl(tryfirst=True)
def miniupi_before_prepare(node: NodeConfig, txn_id: str) -> None:
    # First, so a plugin that vetoes the prepare after it cannot make this payment look refused too.
    _reached_2pc.set(True)


@hookimpl
def miniupi_repeated_id(node: NodeConfig, txn_id: str) -> None:
    _reached_2pc.set(True)
    metrics = _of(node)
    if metrics is not None:
        metrics.repeats.inc()


@hookimpl
def miniupi_after_prepare(node: NodeConfig, txn_id: str, bank: str, seconds: float) -> None:
    metrics = _of(node)
    if metrics is not None:
        metrics.prepares[bank].observe(seconds)


@hookimpl
def miniupi_after_phase(node: NodeConfig, txn_id: str, phase: str, seconds: float) -> None:
    metrics = _of(node)
    if metrics is not None:
        metrics.phases[phase].observe(seconds)


@hookimpl
def miniupi_after_decision(node: NodeConfig, txn_id: str, decision: str, reason: str, kind: str) -> None:
    metrics = _of(node)
    if metrics is not None:
        metrics.outcome(OUTCOMES[decision], reason, kind).inc()


@hookimpl
def miniupi_before_vote(node: NodeConfig, txn_id: str, yes: bool) -> None:
    metrics = _of(node)
    if metrics is not None and not yes:  # a YES counts once durable, in miniupi_after_vote
        metrics.votes[False].inc()


@hookimpl
def miniupi_after_vote(node: NodeConfig, txn_id: str, yes: bool) -> None:
    metrics = _of(node)
    if metrics is not None:
        metrics.votes[True].inc()


@hookimpl
def miniupi_after_apply(node: NodeConfig, txn_id: str, decision: str) -> None:
    metrics = _of(node)
    if metrics is not None:
        metrics.decisions[decision].inc()


class PaymentCallInterceptor(MethodInterceptor):
    """Counts what no hook sees: payments refused before any 2PC (bad input, a limit, no session),
    by their reason, and logins refused for a locked account."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def around_for(self, method: str) -> _Watch | None:
        name = method.rsplit("/", 1)[-1]
        return _Watch(self.node, name) if name in PAYING or name == "Login" else None


class _Watch:
    __slots__ = ("node", "method")

    def __init__(self, node: str, method: str) -> None:
        self.node, self.method = node, method

    def __call__(self, request: Any, context: grpc.aio.ServicerContext) -> _Watched:
        return _Watched(self)


class _Watched:
    __slots__ = ("watch",)

    def __init__(self, watch: _Watch) -> None:
        self.watch = watch

    async def __aenter__(self) -> None:
        _reached_2pc.set(False)

    async def __aexit__(self, exc_type: type[BaseException] | None, error: BaseException | None,
                        *traceback: object) -> None:
        if not isinstance(error, MiniupiError):
            return
        metrics = _nodes.get(self.watch.node)
        if metrics is None:
            return
        if self.watch.method == "Login":
            if isinstance(error, AccountLocked):
                metrics.lockouts.inc()
        elif not _reached_2pc.get():
            metrics.outcome("refused", error.reason, PAYING[self.watch.method]).inc()
