"""How long a prepare may wait at its bank's link for other prepares to ride with.

A bank round costs both ends about the same however little it carries: a
message each way, the wake-ups of the threads that pass it on, and an
fsync. Waiting for company costs the payment latency, which pays back
only when the cores have other payments' work meanwhile, so a prepare
waits only while at least BUSY_IN_FLIGHT payments are in 2PC: a lone
payer, or a few, never wait. At 64 payers about 20 are in 2PC at any
moment (the rest are on their way in or out).

How long it waits follows its link's rate of prepares, as 1/sqrt(rate).
For a given number of rounds a second over all links, that split keeps
the average wait least: a link's wait is about half its interval between
rounds, and counts once per payment that crosses it. Each of two banks
at 1,200 payments/s sees 1,200 prepares/s and waits the 10 ms that
measured best there; each of 16 banks at 900 payments/s sees about 110
and waits about 33 ms. A fixed 10 ms left 16 banks' rounds so small that
they cost the banks a third more CPU per payment (docs/BENCHMARKS.md).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

BUSY_IN_FLIGHT = 8
PATIENCE_AT_REFERENCE_S = 0.010
REFERENCE_RATE_PER_S = 1200.0
MAX_PATIENCE_S = 0.040
# Each gap between prepares counts this much into a link's mean gap; a gap
# longer than MAX_GAP_S (a pause) counts as MAX_GAP_S, which is already
# enough for MAX_PATIENCE_S.
SMOOTHING = 0.1
MAX_GAP_S = 0.1


def patience_for_gap(mean_gap_s: float) -> float:
    """The wait that a link whose prepares come `mean_gap_s` apart earns."""
    return min(MAX_PATIENCE_S, PATIENCE_AT_REFERENCE_S * math.sqrt(mean_gap_s * REFERENCE_RATE_PER_S))


class PreparePatience:
    """Each bank link's mean gap between prepares, and the wait that gap earns."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}  # bank -> when its last prepare came
        self._mean_gap: dict[str, float] = {}

    def __call__(self, bank: str, in_flight: int) -> float:
        """How long a prepare to `bank` may wait, counting it as it arrives; `in_flight` includes its payment."""
        now = self._clock()
        last = self._last.get(bank)
        self._last[bank] = now
        if last is None:
            return 0.0
        gap = min(now - last, MAX_GAP_S)
        mean = self._mean_gap.get(bank)
        self._mean_gap[bank] = mean = gap if mean is None else mean + (gap - mean) * SMOOTHING
        return patience_for_gap(mean) if in_flight >= BUSY_IN_FLIGHT else 0.0
