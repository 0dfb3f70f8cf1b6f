"""The gateway's session store on a fake clock: keys expire, and expired ones leave memory.

These drive miniupi/plugins/auth_session.py's SessionStore directly; the
cluster tests (test_security_roles.py, test_offline_session.py) cover
expiry through a running gateway, the absolute lifetime included.
"""
from __future__ import annotations

import pytest

from miniupi.errors import Unauthenticated
from miniupi.plugins.auth_session import SessionStore

IDLE_S, MAX_S = 900.0, 86_400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_never_used_again_are_swept_from_memory_by_later_logins() -> None:
    clock = Clock()
    store = SessionStore(IDLE_S, MAX_S, clock)
    for i in range(1000):
        store.start(f"user{i}@bank_a")
    clock.now += IDLE_S + 1

    key, _ = store.start("late@bank_a")

    assert len(store._sessions) == 1
    assert store.resolve(key) == "late@bank_a"


def test_a_sweep_keeps_every_session_used_within_the_idle_time() -> None:
    clock = Clock()
    store = SessionStore(IDLE_S, MAX_S, clock)
    first, _ = store.start("first@bank_a")
    idle = [store.start(f"idle{i}@bank_a")[0] for i in range(10)]
    clock.now += IDLE_S / 2
    assert store.resolve(first) == "first@bank_a"  # the oldest session, but used since
    clock.now += IDLE_S / 2 + 1

    store.start("next@bank_a")

    assert len(store._sessions) == 2
    assert store.resolve(first) == "first@bank_a"
    for key in idle:
        with pytest.raises(Unauthenticated, match="not recognised"):
            store.resolve(key)

