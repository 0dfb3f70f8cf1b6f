"""The charts' figures from the gateways' metrics pages, as prometheus_client writes them."""
from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from miniupi.console.metrics import OUTCOMES, Series, parse, quantile

BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Gateway:
    """A gateway's metrics, made with the client library a gateway uses."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.payments = Counter("miniupi_payments", "payments by outcome", ["outcome", "reason"],
                                registry=self.registry)
        self.latency = Histogram("miniupi_payment_seconds", "record to durable decision", buckets=BUCKETS,
                                 registry=self.registry)

    def paid(self, n: int, seconds: float, outcome: str = "committed", reason: str = "") -> None:
        for _ in range(n):
            self.payments.labels(outcome, reason).inc()
            if outcome != "refused":
                self.latency.observe(seconds)

    def page(self) -> str:
        return generate_latest(self.registry).decode()


def test_a_page_is_read_into_payments_by_outcome_and_cumulative_buckets() -> None:
    g = Gateway()
    g.paid(3, 0.003)
    g.paid(2, 0.2, "aborted", "BANK_UNAVAILABLE")
    g.paid(1, 0, "aborted", "PAYMENT_ABORTED")
    g.paid(4, 0, "refused", "INSUFFICIENT_FUNDS")
    reading = parse(g.page())
    assert reading.payments == {"committed": 3, "aborted": 3, "refused": 4}
    assert reading.buckets[0.002] == 1 and reading.buckets[0.005] == 4 and reading.buckets[0.25] == 6
    assert reading.buckets[float("inf")] == 6


def test_quantiles_interpolate_within_their_bucket_as_prometheus_does() -> None:
    buckets = {0.01: 50.0, 0.1: 90.0, 1.0: 100.0, float("inf"): 100.0}
    assert quantile(0.5, buckets) == pytest.approx(0.01)
    assert quantile(0.7, buckets) == pytest.approx(0.01 + 0.09 * 20 / 40)
    assert quantile(0.99, buckets) == pytest.approx(0.1 + 0.9 * 9 / 10)
    assert quantile(0.5, {0.01: 0.0, float("inf"): 0.0}) is None  # nothing observed
    assert quantile(0.99, {0.01: 1.0, float("inf"): 10.0}) == 0.01  # beyond the last bound: that bound


def test_each_tick_is_the_rate_of_what_grew_and_the_percentiles_of_recent_payments() -> None:
    g = Gateway()
    series = Series(keep=300)
    g.paid(10, 0.003)
    first = series.add(100.0, {"gateway": parse(g.page())})
    assert first.rates == dict.fromkeys(OUTCOMES)  # one reading is no rate yet
    g.paid(40, 0.003)
    g.paid(8, 0.3, "aborted", "BANK_UNAVAILABLE")
    g.paid(2, 0, "refused", "INSUFFICIENT_FUNDS")
    point = series.add(102.0, {"gateway": parse(g.page())})
    assert point.rates == {"committed": 20.0, "aborted": 4.0, "refused": 1.0}
    assert 2.0 < point.p50_ms <= 5.0  # 40 of 48 in (2 ms, 5 ms]
    assert 250.0 < point.p99_ms <= 1000.0  # the aborted ones, slow
    assert point.as_dict()["committed"] == 20.0 and point.as_dict()["t"] == 102.0


def test_a_gateway_that_restarted_counts_from_zero_and_several_gateways_add_up() -> None:
    g1, g2 = Gateway(), Gateway()
    series = Series(keep=300)
    g1.paid(100, 0.003)
    series.add(0.0, {"gw1": parse(g1.page()), "gw2": parse(g2.page())})
    restarted = Gateway()
    restarted.paid(5, 0.003)
    g2.paid(7, 0.003)
    point = series.add(1.0, {"gw1": parse(restarted.page()), "gw2": parse(g2.page())})
    assert point.rates["committed"] == 12.0  # 5 since gw1's restart (not -95), and gw2's 7


def test_a_gateway_that_does_not_answer_leaves_a_gap_not_a_zero() -> None:
    g = Gateway()
    series = Series(keep=3)
    series.add(0.0, {"gateway": parse(g.page())})
    gap = series.add(1.0, {"gateway": None})
    assert gap.rates == dict.fromkeys(OUTCOMES) and gap.p50_ms is None
    g.paid(3, 0.003)
    series.add(2.0, {"gateway": parse(g.page())})  # its first reading again: no rate yet
    g.paid(3, 0.003)
    assert series.add(3.0, {"gateway": parse(g.page())}).rates["committed"] == 3.0
    assert [p.t for p in series.points] == [1.0, 2.0, 3.0]  # only the last `keep` ticks are kept
