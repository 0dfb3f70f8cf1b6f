"""Payments per second and latency percentiles, from the gateways' Prometheus metrics.

Each gateway with a `metrics_port` serves `http://HOST:METRICS_PORT/metrics`
with the counter `miniupi_payments_total{outcome,reason}` (outcome:
committed, aborted or refused) and the histogram `miniupi_payment_seconds`
(from a payment's record to its durable decision). The console scrapes each
gateway once a tick and turns what grew since the last tick into one point:
payments per second by outcome, and the p50 and p99 of the latencies of the
last QUANTILE_WINDOW ticks, estimated from the histogram's buckets as
Prometheus' histogram_quantile does. A counter that went down is a gateway
that restarted: what it counts now is all new. Several gateways are summed.
"""
from __future__ import annotations

import math
import urllib.request
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from miniupi.config import ClusterConfig, NodeConfig

PAYMENTS = "miniupi_payments"  # the counter's family name (its samples end in _total)
LATENCY = "miniupi_payment_seconds"
OUTCOMES = ("committed", "aborted", "refused")
QUANTILE_WINDOW = 10  # ticks of latencies behind each point's percentiles
SCRAPE_TIMEOUT_S = 1.0
# No proxy from the environment: a gateway's metrics are fetched from the gateway itself.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Reading:
    """One gateway's counters at one moment: payments by outcome, and the latency histogram's
    cumulative bucket counts by upper bound."""

    payments: dict[str, float] = field(default_factory=dict)
    buckets: dict[float, float] = field(default_factory=dict)


def parse(text: str) -> Reading:
    """A gateway's /metrics page, as far as the console uses it."""
    reading = Reading()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{PAYMENTS}_total":
                outcome = sample.labels.get("outcome", "")
                reading.payments[outcome] = reading.payments.get(outcome, 0.0) + sample.value
            elif sample.name == f"{LATENCY}_bucket":
                bound = float(sample.labels["le"])
                reading.buckets[bound] = reading.buckets.get(bound, 0.0) + sample.value
    return reading


def _grown(now: dict, before: dict | None) -> dict:
    """What each counter counted since `before`; all of it when a counter went down (a restart)."""
    if before is None:
        return dict.fromkeys(now, 0.0)
    if any(now.get(k, 0.0) < v for k, v in before.items()):
        return dict(now)
    return {k: v - before.get(k, 0.0) for k, v in now.items()}


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile of cumulative bucket counts, interpolated within its bucket; None with no
    observations. Above the last finite bound it is that bound, as in Prometheus."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


@dataclass(frozen=True)
class Point:
    """One tick of the charts: Unix seconds, payments/s by outcome, p50 and p99 in milliseconds."""

    t: float
    rates: dict[str, float | None]
    p50_ms: float | None
    p99_ms: float | None

    def as_dict(self) -> dict[str, object]:
        return {"t": round(self.t, 3), **self.rates, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms}


class Series:
    """The charts' points over the last `keep` ticks, made from one reading per gateway per tick."""

    def __init__(self, keep: int) -> None:
        self.points: deque[Point] = deque(maxlen=keep)
        self._last: dict[str, Reading] = {}
        self._last_t: float | None = None
        self._latencies: deque[dict[float, float]] = deque(maxlen=QUANTILE_WINDOW)

    def add(self, t: float, readings: dict[str, Reading | None]) -> Point:
        """The point for the readings taken at `t` (None: that gateway did not answer)."""
        dt = t - self._last_t if self._last_t is not None else None
        self._last_t = t
        payments: dict[str, float] = {}
        latencies: dict[float, float] = {}
        answered = False
        for name, reading in readings.items():
            if reading is None:
                self._last.pop(name, None)
                continue
            answered = True
            before = self._last.get(name)
            for outcome, n in _grown(reading.payments, before.payments if before else None).items():
                payments[outcome] = payments.get(outcome, 0.0) + n
            for bound, n in _grown(reading.buckets, before.buckets if before else None).items():
                latencies[bound] = latencies.get(bound, 0.0) + n
            self._last[name] = reading
        self._latencies.append(latencies)
        if not answered or not dt:
            point = Point(t, dict.fromkeys(OUTCOMES), None, None)
        else:
            window = _sum(self._latencies)
            p50, p99 = quantile(0.5, window), quantile(0.99, window)
            point = Point(t, {o: round(payments.get(o, 0.0) / dt, 2) for o in OUTCOMES},
                          None if p50 is None else round(p50 * 1000, 3), None if p99 is None else round(p99 * 1000, 3))
        self.points.append(point)
        return point


def _sum(histograms: Iterable[dict[float, float]]) -> dict[float, float]:
    total: dict[float, float] = {}
    for h in histograms:
        for bound, n in h.items():
            total[bound] = total.get(bound, 0.0) + n
    return total


def metrics_port(node: NodeConfig) -> int | None:
    """The node's `metrics_port`, or None where the cluster file gives it none (or knows no such key)."""
    return getattr(node, "metrics_port", None)


def scraped(cluster: ClusterConfig) -> Sequence[NodeConfig]:
    """The gateways whose metrics the charts show."""
    return [node for node in cluster.gateways.values() if metrics_port(node)]


def metrics_url(node: NodeConfig) -> str:
    host = node.host
    return f"http://{f'[{host}]' if ':' in host else host}:{metrics_port(node)}/metrics"


def scrape(node: NodeConfig) -> Reading | None:
    """One gateway's reading, or None if it does not answer (blocking: run it in a thread)."""
    try:
        with _OPENER.open(metrics_url(node), timeout=SCRAPE_TIMEOUT_S) as reply:
            return parse(reply.read().decode())
    except (OSError, ValueError):
        return None
