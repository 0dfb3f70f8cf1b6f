"""The gateway commits a payment and dies before replying: the client's resend gets the stored result.

The gateway loads tests/plugins/crash_after_decision.py, which ends the
process right after the decision is durable when a marker file exists.
The client hears nothing but a broken connection, keeps the payment
queued, and `miniupi sync` later sends the same id again.
"""
from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from miniupi.ops.testing import LocalCluster
from conftest import open_account, PASSWORD, PLUGIN_DIR, wait_for
from conftest import cli_login as login, cli_ok as ok

pytestmark = pytest.mark.timeout(120)

SPEC = {
    "cluster": {"name": "crash", "prepare_timeout_s": 3, "call_timeout_s": 3,
                "max_opening_deposit": "10000.00"},  # Register opens with deposits here
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
    "plugins": {"load": ["crash_after_decision"]},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", str(PLUGIN_DIR))
        with LocalCluster(tmp_path_factory.mktemp("crash"), SPEC) as c:
            yield c


def view(cluster: LocalCluster, account: str) -> tuple[int, int, list[str]]:
    """Balance, available and every applied txn id, as the owner sees them."""
    with cluster.client() as c:
        c.login(account, PASSWORD)
        b = c.balance()
        return b.balance, b.available, [i.txn_id for i in c.history(limit=1000)]


def outbox_row(home: Path) -> dict[str, object]:
    with contextlib.closing(sqlite3.connect(home / "outbox.sqlite3")) as db:
        db.row_factory = sqlite3.Row
        [row] = db.execute("SELECT * FROM payments").fetchall()
        return dict(row)


def test_commit_whose_reply_was_lost_is_answered_from_the_stored_result_and_moves_money_once(
        cluster: LocalCluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    payer, payee = open_account(cluster, "bank_a", 20_00), open_account(cluster, "bank_b", 0)
    login(cluster, payer, home)
    data_dir = cluster.config.data_dir
    gateway_pid = cluster.supervisor.pid("gateway")
    (data_dir / "crash-after-decision").touch()

    out = ok(cluster, "pay", payee, "5.00", home=home)

    assert out == "queued: gateway unreachable, will retry\n"
    row = outbox_row(home)
    txn_id = row["txn_id"]
    assert (row["state"], row["attempts"]) == ("queued", 1)
    # The gateway really decided this payment, and really died before answering.
    assert (data_dir / "crash-after-decision.fired").read_text() == f"{txn_id} COMMITTED\n"
    assert not (data_dir / "crash-after-decision").exists()
    wait_for("supervisord to restart the gateway",
             lambda: cluster.supervisor.pid("gateway") not in (None, gateway_pid), timeout_s=20)
    cluster.wait_ready("gateway")
    login(cluster, payer, home)  # the restart ended the session

    out = ok(cluster, "sync", home=home)

    assert out == f"paid 5.00 INR to {payee} (txn {txn_id})\n"
    row = outbox_row(home)
    assert (row["txn_id"], row["state"], row["result"], row["attempts"]) == (txn_id, "done", "COMMITTED", 2)
    # Phase 2 is resent by the restarted gateway in the background: wait for it, then count.
    wait_for("the payee's bank to apply the commit", lambda: view(cluster, payee)[0] == 5_00)
    assert view(cluster, payer) == (15_00, 15_00, [txn_id])
    assert view(cluster, payee) == (5_00, 5_00, [txn_id])
    assert ok(cluster, "sync", home=home) == "nothing to send\n"
