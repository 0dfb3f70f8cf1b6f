"""When to try again: exponential backoff with jitter and a cap.

The client's outbox uses it for queued payments (the defaults below), and
the gateway, with its own short settings, for phase 2's resends and for
writing the abort of a payment whose decision write failed.

After the n-th transport failure in a row, the next attempt waits

    nominal(n) = min(cap_s, base_s * factor ** (n - 1))
    delay(n)   = nominal(n) * (1 - jitter * u),   u uniform in [0, 1)

so with the defaults 5 s, 10 s, 20 s, ... 300 s, each cut by up to 20% at
random. Jitter only ever shortens a wait: base_s is the longest first wait
and cap_s the longest of any. The cut spreads clients out so that a metro
train full of phones does not retry in lock step when the signal returns.

Every setting can come from the environment (MINIUPI_RETRY_BASE_S,
MINIUPI_RETRY_FACTOR, MINIUPI_RETRY_CAP_S, MINIUPI_RETRY_JITTER), so tests
and impatient users can use a small base. The random source is passed in,
so a seeded random.Random makes the schedule exact.
"""
from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, fields

from miniupi.errors import InvalidArgument

ENV_PREFIX = "MINIUPI_RETRY_"


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 5.0  # wait after the first failure
    factor: float = 2.0  # each further failure multiplies the wait by this
    cap_s: float = 300.0  # no wait is longer than this
    jitter: float = 0.2  # share of each wait that may be cut at random, 0 <= jitter < 1

    def __post_init__(self) -> None:
        if not self.base_s > 0:
            raise InvalidArgument(f"retry base must be a positive number of seconds, not {self.base_s}")
        if not self.factor >= 1:
            raise InvalidArgument(f"retry factor must be at least 1, not {self.factor}")
        if not self.cap_s >= self.base_s:
            raise InvalidArgument(f"retry cap ({self.cap_s} s) must not be below the base ({self.base_s} s)")
        if not 0 <= self.jitter < 1:
            raise InvalidArgument(f"retry jitter must be a fraction from 0 up to (not including) 1, not {self.jitter}")

    def nominal(self, failures: int) -> float:
        """The wait after `failures` transport failures in a row, before jitter."""
        if failures < 1:
            return 0.0
        # Compare exponents, not powers, so a long outage cannot overflow the float.
        if (failures - 1) * math.log(self.factor) >= math.log(self.cap_s / self.base_s):
            return self.cap_s
        return min(self.cap_s, self.base_s * self.factor ** (failures - 1))

    def delay(self, failures: int, rng: random.Random) -> float:
        """The wait after `failures` transport failures in a row, jitter included.

        Draws exactly one number from `rng` per call (none for failures < 1).
        """
        if failures < 1:
            return 0.0
        return self.nominal(failures) * (1 - self.jitter * rng.random())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: float | None) -> RetryPolicy:
        """Defaults, then MINIUPI_RETRY_* variables, then explicit overrides (such as CLI flags)."""
        environ = os.environ if environ is None else environ
        values: dict[str, float] = {}
        for f in fields(cls):
            name = ENV_PREFIX + f.name.upper()
            if environ.get(name, "").strip():
                try:
                    values[f.name] = float(environ[name])
                except ValueError:
                    raise InvalidArgument(f"{name} must be a number, not {environ[name]!r}") from None
        values.update({k: float(v) for k, v in overrides.items() if v is not None})
        return cls(**values)

