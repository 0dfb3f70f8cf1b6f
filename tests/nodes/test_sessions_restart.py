"""Sessions survive a gateway killed with SIGKILL: live keys work after supervisord restarts it,
logged-out and expired ones stay refused, and a crash between a session's write and its answer
never yields a key that works unrecorded nor a logged-out key that works again.

The gateway's store is SQLite in one run of the module and JSON in the other:
sessions go through the store contract, so both must keep them. Sessions here
go idle after IDLE_S, so an expired key takes seconds, not minutes.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import PASSWORD, PLUGIN_DIR, cli_login, cli_ok, open_account, wait_for
from miniupi.client.api import Session
from miniupi.client.home import load_session
from miniupi.errors import MiniupiError, Unauthenticated
from miniupi.ops.testing import LocalCluster

sys.path.insert(0, str(PLUGIN_DIR))  # the nodes load it from PYTHONPATH; the test arms it directly
import faults  # noqa: E402

pytestmark = pytest.mark.timeout(180)
IDLE_S = 8.0


@pytest.fixture(scope="module", params=["sqlite", "json"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    spec = {
        "cluster": {"name": "sessions", "prepare_timeout_s": 3, "call_timeout_s": 3,
                    "max_opening_deposit": "10000.00"},
        "gateway": {"storage": request.param, "session_idle_s": IDLE_S, "session_max_s": 3600},
        "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
        "plugins": {"load": ["faults"]},
    }
    with pytest.MonkeyPatch.context() as env:
        # Before boot: supervisord passes it to every node.
        env.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")])))
        with LocalCluster(tmp_path_factory.mktemp(f"sessions-{request.param}"), spec) as c:
            yield c


def login(cluster: LocalCluster, account: str) -> Session:
    with cluster.client() as c:
        return c.login(account, PASSWORD)


def balance_with(cluster: LocalCluster, session: Session) -> int:
    """The balance read with this very key, on a fresh connection."""
    with cluster.client(session=session) as c:
        return c.balance().balance


def wait_for_a_new_gateway(cluster: LocalCluster, dead: int) -> None:
    wait_for("supervisord to restart the gateway",
             lambda: cluster.supervisor.pid("gateway") not in (None, dead), timeout_s=30)
    cluster.wait_ready("gateway")


def kill_gateway_and_wait_for_its_restart(cluster: LocalCluster) -> None:
    wait_for_a_new_gateway(cluster, cluster.kill_node("gateway"))


@contextlib.contextmanager
def crash_after_session_written(cluster: LocalCluster, account: str, change: str) -> Iterator[None]:
    """SIGKILL the gateway once `change` ("login" or "logout") of `account`'s session is durable and
    before it answers: the call in the block must fail for that, and supervisord bring the gateway back."""
    data_dir = cluster.config.data_dir
    pid = cluster.supervisor.pid("gateway")
    assert pid is not None
    faults.arm(data_dir, {"node": "gateway", "point": "after_session_written", "change": change,
                          "account": account, "action": "kill"})
    try:
        with pytest.raises(MiniupiError) as failed:
            yield
        assert not isinstance(failed.value, Unauthenticated), failed.value  # no answer, not a refusal
        wait_for_a_new_gateway(cluster, pid)
    finally:
        left = faults.disarm(data_dir)
    assert not left
    assert [f["details"] for f in faults.fired(data_dir) if f["pid"] == pid] == \
        [{"account": account, "change": change}]


def test_a_killed_gateway_keeps_live_keys_and_refuses_logged_out_and_expired_ones(
        cluster: LocalCluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    live, out, idle = (open_account(cluster, "bank_a", 5_00) for _ in range(3))
    idle_session = login(cluster, idle)
    assert balance_with(cluster, idle_session) == 5_00
    used_at = time.time()
    out_session = login(cluster, out)
    with cluster.client(session=out_session) as c:
        c.logout()
    wait_for("the idle session to expire", lambda: time.time() > used_at + IDLE_S + 0.5, timeout_s=IDLE_S + 5)
    cli_login(cluster, live, home)
    assert cli_ok(cluster, "balance", home=home) == f"{live}: 5.00 INR\n"
    key = load_session(home).key  # type: ignore[union-attr]
    stored = b"".join(p.read_bytes() for p in cluster.config.gateway.data_dir.rglob("*") if p.is_file())
    secret = key.partition(".")[2]
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored  # recorded before it was handed out
    assert secret.encode() not in stored  # a hash of it, never the key

    kill_gateway_and_wait_for_its_restart(cluster)

    assert cli_ok(cluster, "balance", home=home) == f"{live}: 5.00 INR\n"  # the same key, no login
    for refused in (out_session, idle_session):
        with pytest.raises(Unauthenticated, match="not recognised"):
            balance_with(cluster, refused)
    # And once more: what the restarted gateway keeps, it keeps through the next kill too.
    kill_gateway_and_wait_for_its_restart(cluster)
    assert cli_ok(cluster, "balance", home=home) == f"{live}: 5.00 INR\n"


def test_a_session_idle_across_a_restart_expires_on_time_not_later(cluster: LocalCluster) -> None:
    """The restarted gateway counts idleness from the last use before the crash, not from its own start."""
    witness, account = open_account(cluster, "bank_a", 1_00), open_account(cluster, "bank_a", 2_00)
    witness_session, session = login(cluster, witness), login(cluster, account)
    used_at = time.time()
    kill_gateway_and_wait_for_its_restart(cluster)
    assert balance_with(cluster, witness_session) == 1_00  # sessions did come back

    wait_for("the session to go idle", lambda: time.time() > used_at + IDLE_S + 0.5, timeout_s=IDLE_S + 5)

    with pytest.raises(Unauthenticated, match="expired|not recognised"):
        balance_with(cluster, session)


def test_a_crash_after_a_login_is_written_hands_out_no_key_and_keeps_the_others(cluster: LocalCluster) -> None:
    earlier, account = open_account(cluster, "bank_a", 2_00), open_account(cluster, "bank_a", 3_00)
    earlier_session = login(cluster, earlier)

    with cluster.client() as c, crash_after_session_written(cluster, account, "login"):
        c.login(account, PASSWORD)
    assert c.session is None  # no key came back

    assert balance_with(cluster, earlier_session) == 2_00
    assert balance_with(cluster, login(cluster, account)) == 3_00  # logging in again just works


def test_a_crash_after_a_logout_is_written_never_brings_the_key_back(cluster: LocalCluster) -> None:
    kept, account = open_account(cluster, "bank_a", 2_00), open_account(cluster, "bank_a", 3_00)
    kept_session, session = login(cluster, kept), login(cluster, account)

    with cluster.client(session=session) as c, crash_after_session_written(cluster, account, "logout"):
        c.logout()  # the gateway dies before it answers

    with pytest.raises(Unauthenticated, match="not recognised"):
        balance_with(cluster, session)
    assert balance_with(cluster, kept_session) == 2_00
