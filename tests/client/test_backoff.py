"""The retry schedule: base, doubling, jitter bound and cap, as configured, and as really followed.

The first tests check the policy's arithmetic against an independent
formula with seeded random sources. The last one runs the real background
sender against a gateway address where nothing listens (real gRPC over
mTLS, a real outbox file) and reads each attempt's times from the outbox.
"""
from __future__ import annotations

import asyncio
import contextlib
import random
import time
from pathlib import Path

import pytest

from miniupi.ops.certs import init_certs
from miniupi.client.api import AsyncClient, Session
from miniupi.backoff import RetryPolicy
from miniupi.client.outbox import Outbox
from miniupi.errors import InvalidArgument
from miniupi.ops.testing import LocalCluster

pytestmark = pytest.mark.timeout(60)


def expected_delays(base: float, factor: float, cap: float, jitter: float, seed: int, n: int) -> list[float]:
    """The documented formula, written out again: min(cap, base * factor**(k-1)) cut by up to jitter."""
    rng = random.Random(seed)
    return [min(cap, base * factor ** (k - 1)) * (1 - jitter * rng.random()) for k in range(1, n + 1)]


def test_defaults_are_5_10_20_seconds_doubling_up_to_a_cap_of_300() -> None:
    policy = RetryPolicy()
    assert (policy.base_s, policy.factor, policy.cap_s, policy.jitter) == (5.0, 2.0, 300.0, 0.2)
    assert [policy.nominal(k) for k in range(1, 10)] == [5, 10, 20, 40, 80, 160, 300, 300, 300]
    assert policy.nominal(10_000) == 300  # a week offline does not overflow


@pytest.mark.parametrize("seed", [0, 1, 2024])
@pytest.mark.parametrize(("base", "factor", "cap", "jitter"), [(5, 2, 300, 0.2), (0.1, 3, 2, 0.5), (1, 2, 1, 0)])
def test_each_delay_is_the_nominal_wait_cut_by_at_most_the_jitter_share(
        seed: int, base: float, factor: float, cap: float, jitter: float) -> None:
    policy = RetryPolicy(base_s=base, factor=factor, cap_s=cap, jitter=jitter)
    rng = random.Random(seed)

    delays = [policy.delay(k, rng) for k in range(1, 13)]

    assert delays == pytest.approx(expected_delays(base, factor, cap, jitter, seed, 12), rel=1e-12)
    for k, d in enumerate(delays, start=1):
        nominal = min(cap, base * factor ** (k - 1))
        assert nominal * (1 - jitter) <= d <= nominal <= cap


def test_jitter_spreads_clients_across_the_whole_allowed_band() -> None:
    policy = RetryPolicy(base_s=10, jitter=0.5)
    firsts = [policy.delay(1, random.Random(seed)) for seed in range(400)]
    assert min(firsts) < 5.5 and max(firsts) > 9.5
    assert len({round(d, 3) for d in firsts}) > 300


def test_settings_come_from_the_environment_then_explicit_overrides() -> None:
    env = {"MINIUPI_RETRY_BASE_S": "0.25", "MINIUPI_RETRY_FACTOR": "3", "MINIUPI_RETRY_CAP_S": "9",
           "MINIUPI_RETRY_JITTER": "0"}
    assert RetryPolicy.from_env(env) == RetryPolicy(base_s=0.25, factor=3, cap_s=9, jitter=0)
    assert RetryPolicy.from_env(env, base_s=1.0, cap_s=None) == RetryPolicy(base_s=1, factor=3, cap_s=9, jitter=0)
    assert RetryPolicy.from_env({}) == RetryPolicy()


@pytest.mark.parametrize(("env", "words"), [
    ({"MINIUPI_RETRY_BASE_S": "soon"}, "MINIUPI_RETRY_BASE_S must be a number"),
    ({"MINIUPI_RETRY_BASE_S": "0"}, "positive"),
    ({"MINIUPI_RETRY_FACTOR": "0.5"}, "at least 1"),
    ({"MINIUPI_RETRY_CAP_S": "1"}, "must not be below the base"),
    ({"MINIUPI_RETRY_JITTER": "1"}, "fraction"),
])
def test_bad_settings_are_refused_with_the_reason(env: dict[str, str], words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        RetryPolicy.from_env(env)


def test_background_sender_retries_on_the_configured_schedule(tmp_path: Path) -> None:
    """Nothing listens at the gateway's address: every attempt is a real, failed mTLS dial."""
    cluster = LocalCluster(tmp_path / "cluster")  # configured and with certificates, never started
    init_certs(cluster.config)
    base, factor, cap, jitter, seed = 0.2, 2.0, 0.8, 0.5, 7
    policy = RetryPolicy(base_s=base, factor=factor, cap_s=cap, jitter=jitter)
    outbox_path = tmp_path / "outbox.sqlite3"
    session = Session("alice@bank_a", "id.secret", time.time() + 3600)

    async def run_for(seconds: float) -> str:
        async with AsyncClient(cluster.config, session=session, outbox=outbox_path, retry=policy,
                               rng=random.Random(seed)) as client:
            txn_id = client.enqueue("bob@bank_b", 1_00).txn_id
            task = asyncio.create_task(client.deliver_forever())
            await asyncio.sleep(seconds)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return txn_id

    txn_id = asyncio.run(run_for(3.2))  # attempts near 0, 0.2, 0.6, 1.4, 2.2, 3.0 s

    with contextlib.closing(Outbox(outbox_path)) as box:
        attempts = box.attempts(txn_id)
        entry = box.get(txn_id)
    assert entry is not None and entry.state == "queued"
    finished = [a for a in attempts if a.outcome == "unreachable"]
    assert len(finished) >= 5, attempts
    assert {a.detail for a in finished} == {"gateway unreachable"}
    assert entry.attempts == len(attempts) and entry.failures == len(finished)
    want = expected_delays(base, factor, cap, jitter, seed, len(finished))
    for a, delay in zip(finished, want):
        assert a.retry_at is not None and a.ended_at is not None
        assert a.retry_at - a.ended_at == pytest.approx(delay, abs=1e-6)  # exactly the seeded schedule
    for a, following in zip(finished, attempts[1:]):
        assert a.retry_at is not None
        late = following.started_at - a.retry_at
        assert 0 <= late < 0.15, (a, following)  # sent when due: never early, hardly late
