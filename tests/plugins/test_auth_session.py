"""The gateway's session store on a fake clock and a fake log: keys expire, expired ones leave memory
and the store, and what the store keeps is enough to restart with and never a key.

These drive miniupi/plugins/auth_session.py's SessionStore directly; the
cluster tests (test_security_roles.py, test_offline_session.py,
test_sessions_durable.py) cover expiry and restarts through a running gateway.
"""
from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

import pytest

from miniupi.contract.store import Put
from miniupi.errors import StoreUnavailable, Unauthenticated
from miniupi.plugins.auth_session import LAST_USE_WRITE_FRACTION, TABLE, SessionStore

IDLE_S, MAX_S = 900.0, 86_400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Log:
    """The gateway's store as the session store sees it: every put, applied to a dict of tables."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Any]] = {}
        self.waited: list[list[Put]] = []  # batches written with `write`, in order
        self.later: list[list[Put]] = []  # batches queued with `write_later`
        self.fail = False

    def _apply(self, batch: Sequence[Put]) -> None:
        for put in batch:
            if put.value is None:
                self.tables.get(put.table, {}).pop(put.key, None)
            else:
                self.tables.setdefault(put.table, {})[put.key] = dict(put.value)

    async def write(self, batch: Sequence[Put]) -> None:
        if self.fail:
            raise StoreUnavailable("store write failed: disk full")
        self.waited.append(list(batch))
        self._apply(batch)

    def write_later(self, batch: Sequence[Put]) -> None:
        self.later.append(list(batch))
        self._apply(batch)

    async def barrier(self) -> None:
        pass


def loaded(clock: Clock, log: Log | None = None, tables: dict[str, dict[str, Any]] | None = None) -> SessionStore:
    store = SessionStore(IDLE_S, MAX_S, clock)
    asyncio.run(store.load(tables if tables is not None else {}, log or Log()))
    return store


def start(store: SessionStore, account: str) -> str:
    return asyncio.run(store.start(account))[0]


def resolve(store: SessionStore, key: str) -> str:
    return asyncio.run(store.resolve(key))


def test_sessions_never_used_again_are_swept_from_memory_and_the_store_by_later_logins() -> None:
    clock, log = Clock(), Log()
    store = loaded(clock, log)
    for i in range(1000):
        start(store, f"user{i}@bank_a")
    clock.now += IDLE_S + 1

    key = start(store, "late@bank_a")

    assert len(store._sessions) == 1
    assert resolve(store, key) == "late@bank_a"
    assert list(log.tables[TABLE]) == [key.split(".")[0]]


def test_a_sweep_keeps_every_session_used_within_the_idle_time() -> None:
    clock = Clock()
    store = loaded(clock)
    first = start(store, "first@bank_a")
    idle = [start(store, f"idle{i}@bank_a") for i in range(10)]
    clock.now += IDLE_S / 2
    assert resolve(store, first) == "first@bank_a"  # the oldest session, but used since
    clock.now += IDLE_S / 2 + 1

    start(store, "next@bank_a")

    assert len(store._sessions) == 2
    assert resolve(store, first) == "first@bank_a"
    for key in idle:
        with pytest.raises(Unauthenticated, match="not recognised"):
            resolve(store, key)


def test_the_store_keeps_the_secrets_hash_account_and_times_never_the_key() -> None:
    clock, log = Clock(), Log()
    store = loaded(clock, log)

    key = start(store, "alice@bank_a")

    session_id, _, secret = key.partition(".")
    assert log.waited == [[Put(TABLE, session_id, {
        "account": "alice@bank_a", "secret_sha256": hashlib.sha256(secret.encode()).hexdigest(),
        "started": clock.now, "last_used": clock.now})]]
    assert secret not in repr(log.tables)


def test_a_restart_keeps_live_sessions_and_purges_expired_and_logged_out_ones() -> None:
    clock, log = Clock(), Log()
    store = loaded(clock, log)
    out, idle, old = (start(store, f"{n}@bank_a") for n in ("out", "idle", "old"))
    assert asyncio.run(store.end(out)) == "out@bank_a"
    # "old" and "live" stay in use until "old" outlives max_s; "idle" is never used again.
    while clock.now < 1_000_000.0 + MAX_S - 10:
        clock.now += IDLE_S / 2
        resolve(store, old)
    live = start(store, "live@bank_a")
    clock.now += 20  # now "old" is past max_s

    again = loaded(clock, log, {t: dict(rows) for t, rows in log.tables.items()})

    assert resolve(again, live) == "live@bank_a"
    for key in (out, idle, old):
        with pytest.raises(Unauthenticated, match="not recognised"):
            resolve(again, key)
    assert list(log.tables[TABLE]) == [live.split(".")[0]]  # the expired rows purged on load


def test_uses_write_the_last_use_seldom_and_a_restart_expires_early_never_late() -> None:
    clock, log = Clock(), Log()
    store = loaded(clock, log)
    key = start(store, "alice@bank_a")
    step = IDLE_S * LAST_USE_WRITE_FRACTION / 10
    for _ in range(100):  # ten write-intervals' worth of calls
        clock.now += step
        resolve(store, key)
    assert 9 <= len(log.later) <= 11  # not one write per call
    used, kept = clock.now, {t: {k: dict(v) for k, v in rows.items()} for t, rows in log.tables.items()}

    def restarted_at(now: float) -> SessionStore:
        clock.now = now
        return loaded(clock, Log(), {t: dict(rows) for t, rows in kept.items()})

    # Used within the idle time by less than one write interval: still live after a restart.
    assert resolve(restarted_at(used + IDLE_S * (1 - LAST_USE_WRITE_FRACTION) - 1), key) == "alice@bank_a"
    # Idle too long by the real last use: refused after a restart, whatever the store lagged behind.
    with pytest.raises(Unauthenticated):
        resolve(restarted_at(used + IDLE_S + 1), key)


def test_a_logout_the_store_refuses_leaves_the_key_working_and_says_so() -> None:
    clock, log = Clock(), Log()
    store = loaded(clock, log)
    key = start(store, "alice@bank_a")
    log.fail = True

    with pytest.raises(StoreUnavailable):
        asyncio.run(store.end(key))

    assert resolve(store, key) == "alice@bank_a"  # memory says what the disk says
    log.fail = False
    assert asyncio.run(store.end(key)) == "alice@bank_a"
    with pytest.raises(Unauthenticated):
        resolve(store, key)
    assert log.tables[TABLE] == {}


def test_a_login_the_store_refuses_hands_out_no_key() -> None:
    clock, log = Clock(), Log()
    store = loaded(clock, log)
    log.fail = True

    with pytest.raises(StoreUnavailable):
        start(store, "alice@bank_a")

    assert not store._sessions and not log.tables


def test_unreadable_rows_are_dropped_on_load_not_a_crash() -> None:
    clock, log = Clock(), Log()
    store = loaded(clock, log, {TABLE: {"a": {"account": "x@bank_a"}, "b": "junk"}})
    assert not store._sessions
    assert log.waited == [[Put(TABLE, "a", None), Put(TABLE, "b", None)]]


# -- gateways sharing one store -----------------------------------------------------------------


class SharedLog(Log):
    """One store for several gateways' session stores: `store.get` reads its tables."""

    @property
    def store(self) -> SharedLog:
        return self

    def get(self, table: str, key: str) -> Any | None:
        row = self.tables.get(table, {}).get(key)
        return None if row is None else dict(row)


def replicas(n: int = 2) -> tuple[Clock, SharedLog, list[SessionStore]]:
    clock, log = Clock(), SharedLog()
    stores = [SessionStore(IDLE_S, MAX_S, clock, shared=True) for _ in range(n)]
    for store in stores:
        asyncio.run(store.load({}, log))
    return clock, log, stores


def test_a_session_started_at_one_gateway_works_at_the_other_and_a_logout_at_either_ends_it_at_both() -> None:
    _, _, (gw1, gw2) = replicas()
    key, _ = asyncio.run(gw1.start("alice@bank_a"))
    assert resolve(gw2, key) == "alice@bank_a"
    assert resolve(gw1, key) == "alice@bank_a"
    assert asyncio.run(gw2.end(key)) == "alice@bank_a"
    for gateway in (gw1, gw2):
        with pytest.raises(Unauthenticated):
            resolve(gateway, key)


def test_a_wrong_secret_is_refused_at_the_gateway_that_did_not_start_the_session() -> None:
    _, _, (gw1, gw2) = replicas()
    key, _ = asyncio.run(gw1.start("alice@bank_a"))
    session_id, _, secret = key.partition(".")
    with pytest.raises(Unauthenticated):
        resolve(gw2, f"{session_id}.{secret[:-1]}x")
    with pytest.raises(Unauthenticated):
        resolve(gw2, f"{'0' * 32}.{secret}")


def test_a_session_used_at_one_gateway_is_not_swept_as_idle_by_the_other() -> None:
    clock, log, (gw1, gw2) = replicas()
    key, _ = asyncio.run(gw1.start("alice@bank_a"))
    resolve(gw2, key)
    for _ in range(8):  # used at gw1 only, for twice the idle time
        clock.now += IDLE_S / 4
        resolve(gw1, key)
    asyncio.run(gw2.start("bob@bank_b"))  # gw2's sweep finds the session idle in its own memory
    assert key.partition(".")[0] in log.tables[TABLE]
    assert resolve(gw2, key) == "alice@bank_a"


def test_a_session_idle_everywhere_is_swept_from_the_shared_store() -> None:
    clock, log, (gw1, gw2) = replicas()
    key, _ = asyncio.run(gw1.start("alice@bank_a"))
    clock.now += IDLE_S + 1
    asyncio.run(gw2.start("bob@bank_b"))
    asyncio.run(gw1.start("carol@bank_b"))
    assert key.partition(".")[0] not in log.tables[TABLE]
    with pytest.raises(Unauthenticated):
        resolve(gw2, key)
