"""A session that expires while payments wait: they stay queued until the payer logs in again.

Sessions in this cluster last 5 seconds, so the network can "return" after
the session is gone without the test waiting long.
"""
from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from miniupi.client.home import load_session
from miniupi.ops.testing import LocalCluster
from conftest import PASSWORD, open_account, wait_for

pytestmark = pytest.mark.timeout(120)

SESSION_S = 5
SPEC = {
    "cluster": {"name": "sessions", "prepare_timeout_s": 3, "call_timeout_s": 3,
                "max_opening_deposit": "10000.00"},  # Register opens with deposits here
    "gateway": {"storage": "sqlite", "session_max_s": SESSION_S},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("sessions"), SPEC) as c:
        yield c


def outbox_states(home: Path) -> list[tuple[str, int]]:
    with contextlib.closing(sqlite3.connect(home / "outbox.sqlite3")) as db:
        return list(db.execute("SELECT state, attempts FROM payments ORDER BY seq"))


def test_payments_queued_when_the_session_expires_wait_for_a_new_login_and_none_is_dropped(
        cluster: LocalCluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    payer, payee = open_account(cluster, "bank_a", 10_00), open_account(cluster, "bank_b", 0)
    assert cluster.cli("login", payer, "--password-stdin", input=PASSWORD + "\n", home=home).returncode == 0
    cluster.stop_node("gateway")
    try:
        for amount in ("1.00", "2.00"):
            r = cluster.cli("pay", payee, amount, home=home)
            assert (r.returncode, r.stdout) == (0, "queued: gateway unreachable, will retry\n"), r.stderr
    finally:
        cluster.start_node("gateway")
    before = outbox_states(home)
    assert before == [("queued", 2), ("queued", 0)]  # each pay tried the oldest first
    session = load_session(home)
    assert session is not None
    wait_for("the session to expire", lambda: time.time() > session.expires_at + 0.1, timeout_s=SESSION_S + 5)

    r = cluster.cli("sync", home=home)

    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == f"miniupi: session for {payer} expired; log in again: miniupi login {payer}; " \
                       "2 payments stay queued\n"
    assert outbox_states(home) == before  # nothing sent on an expired session
    r = cluster.cli("balance", home=home)
    assert r.returncode == 1 and "expired" in r.stderr and "login" in r.stderr
    assert outbox_states(home) == before

    r = cluster.cli("login", payer, "--password-stdin", input=PASSWORD + "\n", home=home)
    assert r.returncode == 0 and r.stderr == \
        f"2 payments from {payer} queued: they go with your next command, or run: miniupi sync\n"
    r = cluster.cli("sync", home=home)

    assert r.returncode == 0, r.stderr
    assert [line.split(" (txn")[0] for line in r.stdout.splitlines()] == \
        [f"paid 1.00 INR to {payee}", f"paid 2.00 INR to {payee}"]
    assert [s for s, _ in outbox_states(home)] == ["done", "done"]
    with cluster.client() as c:
        c.login(payer, PASSWORD)
        assert c.balance().balance == 7_00
