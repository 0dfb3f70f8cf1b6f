"""How long a prepare waits for company: only when busy, and longer on a quieter link."""
from __future__ import annotations

import pytest

from miniupi.nodes.patience import (
    BUSY_IN_FLIGHT,
    MAX_PATIENCE_S,
    PATIENCE_AT_REFERENCE_S,
    REFERENCE_RATE_PER_S,
    PreparePatience,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def steady(patience: PreparePatience, clock: Clock, bank: str, rate_per_s: float, in_flight: int,
           count: int = 200) -> float:
    """The patience of the last of `count` prepares to `bank` coming `1 / rate_per_s` apart."""
    waits = []
    for _ in range(count):
        clock.now += 1 / rate_per_s
        waits.append(patience(bank, in_flight))
    return waits[-1]


def test_a_lone_payer_or_a_few_never_wait() -> None:
    clock = Clock()
    patience = PreparePatience(clock)
    assert steady(patience, clock, "bank_0", 50, in_flight=1) == 0.0
    assert steady(patience, clock, "bank_0", 50, in_flight=BUSY_IN_FLIGHT - 1) == 0.0
    assert steady(patience, clock, "bank_0", 50, in_flight=BUSY_IN_FLIGHT) > 0.0


def test_the_first_prepare_to_a_bank_goes_at_once() -> None:
    assert PreparePatience(Clock())("bank_0", in_flight=64) == 0.0


def test_a_busy_link_at_the_reference_rate_waits_the_reference_patience() -> None:
    clock = Clock()
    wait = steady(PreparePatience(clock), clock, "bank_0", REFERENCE_RATE_PER_S, in_flight=64)
    assert wait == pytest.approx(PATIENCE_AT_REFERENCE_S, rel=0.01)


def test_a_link_with_nine_times_fewer_prepares_waits_three_times_as_long() -> None:
    clock = Clock()
    wait = steady(PreparePatience(clock), clock, "bank_0", REFERENCE_RATE_PER_S / 9, in_flight=64)
    assert wait == pytest.approx(3 * PATIENCE_AT_REFERENCE_S, rel=0.01)


def test_a_quiet_link_waits_no_longer_than_the_cap() -> None:
    clock = Clock()
    patience = PreparePatience(clock)
    assert steady(patience, clock, "bank_0", 10, in_flight=64) == MAX_PATIENCE_S
    clock.now += 3600  # an hour's pause counts as one long gap, not as an hour
    assert patience("bank_0", in_flight=64) == MAX_PATIENCE_S
    assert steady(patience, clock, "bank_0", REFERENCE_RATE_PER_S, in_flight=64, count=100) == pytest.approx(
        PATIENCE_AT_REFERENCE_S, rel=0.05)


def test_the_mean_gap_follows_a_change_of_rate_within_tens_of_prepares() -> None:
    clock = Clock()
    patience = PreparePatience(clock)
    steady(patience, clock, "bank_0", REFERENCE_RATE_PER_S / 9, in_flight=64)
    assert steady(patience, clock, "bank_0", REFERENCE_RATE_PER_S, in_flight=64, count=60) < 1.1 * PATIENCE_AT_REFERENCE_S


def test_each_link_keeps_its_own_rate() -> None:
    clock = Clock()
    patience = PreparePatience(clock)
    waits: dict[str, float] = {}
    for i in range(900):  # bank_0 gets 8 prepares for each of bank_1's
        clock.now += 1 / REFERENCE_RATE_PER_S
        bank = "bank_1" if i % 9 == 8 else "bank_0"
        waits[bank] = patience(bank, in_flight=64)
    assert waits["bank_0"] < 1.1 * PATIENCE_AT_REFERENCE_S
    assert waits["bank_1"] == pytest.approx(3 * PATIENCE_AT_REFERENCE_S, rel=0.02)
