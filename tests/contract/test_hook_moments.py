"""Every hook of miniupi/contract/hookspecs.py fires at the moment docs/PLUGINS.md says, in a real cluster.

tests/plugins/hook_recorder.py implements every hook and appends a line per
call to one file; a node writes its line before it sends what the next node
reacts to, so the file's order is cause and effect across the processes.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from miniupi.errors import InsufficientFunds, Unauthenticated
from miniupi.ops.testing import LocalCluster
from conftest import PLUGIN_DIR, wait_for

SPEC = {"cluster": {"name": "hooks"}, "gateway": {}, "banks": {"bank_a": {}, "bank_b": {"storage": "json"}},
        "plugins": {"load": ["hook_recorder"]}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")])))
        with LocalCluster(tmp_path_factory.mktemp("hooks"), SPEC,
                          accounts={"bank_a": {"alice": ("10.00", "pw")}, "bank_b": {"bob": ("0", "pw")}}) as c:
            yield c


def calls(cluster: LocalCluster) -> list[tuple[str, ...]]:
    path = cluster.config.data_dir / "hooks.txt"
    return [tuple(line.split()) for line in path.read_text().splitlines()] if path.exists() else []


def positions(cluster: LocalCluster, *line: str) -> list[int]:
    return [i for i, call in enumerate(calls(cluster)) if call == line]


def wait_calls(cluster: LocalCluster, *lines: tuple[str, ...]) -> list[int]:
    """Where each line first appears, once all of them are there (phase 2 ends after the client's answer)."""
    wait_for(f"hook calls {lines}", lambda: all(positions(cluster, *line) for line in lines))
    return [positions(cluster, *line)[0] for line in lines]


def test_hook_miniupi_node_started_fires_once_per_node_with_its_address(cluster: LocalCluster) -> None:
    started = sorted(c for c in calls(cluster) if c[1] == "miniupi_node_started")
    assert started == sorted((n.name, "miniupi_node_started", n.address) for n in cluster.config.nodes)


def test_hook_miniupi_server_interceptors_sees_every_call_on_every_node(cluster: LocalCluster) -> None:
    with cluster.client() as c:
        c.login("alice@bank_a", "pw")
        c.balance()
    wait_calls(cluster, ("gateway", "miniupi_server_interceptors", "/miniupi.v1.Gateway/Login"),
               ("gateway", "miniupi_server_interceptors", "/miniupi.v1.Gateway/Balance"),
               ("bank_a", "miniupi_server_interceptors", "/miniupi.v1.Bank/VerifyPassword"))


def test_hooks_of_a_committed_payment_fire_in_the_order_of_two_phase_commit(cluster: LocalCluster) -> None:
    """miniupi_before_prepare, then each bank's miniupi_before_vote and miniupi_after_vote, then
    miniupi_before_decision and miniupi_after_decision, then each bank's miniupi_before_apply and
    miniupi_after_apply, each followed by the gateway's miniupi_after_decision_sent for that bank."""
    with cluster.client() as c:
        c.login("alice@bank_a", "pw")
        txn = c.pay("bob@bank_b", 100).txn_id
    prepare, decide, decided = wait_calls(cluster, ("gateway", "miniupi_before_prepare", txn),
                                          ("gateway", "miniupi_before_decision", txn, "COMMITTED"),
                                          ("gateway", "miniupi_after_decision", txn, "COMMITTED", "payment"))
    assert prepare < decide < decided
    for bank in ("bank_a", "bank_b"):
        vote, voted, apply, applied, sent = wait_calls(
            cluster, (bank, "miniupi_before_vote", txn, "True"), (bank, "miniupi_after_vote", txn, "True"),
            (bank, "miniupi_before_apply", txn, "COMMITTED"), (bank, "miniupi_after_apply", txn, "COMMITTED"),
            ("gateway", "miniupi_after_decision_sent", txn, bank, "COMMITTED"))
        assert prepare < vote < voted < decide and decided < apply < applied < sent


def test_hooks_of_a_refused_vote_say_no_and_the_decision_is_aborted(cluster: LocalCluster) -> None:
    """A NO vote fires miniupi_before_vote with yes=False and never miniupi_after_vote (nothing is held)."""
    with cluster.client() as c:
        c.login("bob@bank_b", "pw")
        with pytest.raises(InsufficientFunds):
            c.pay("alice@bank_a", 1_000_000)
    [txn] = [call[2] for call in calls(cluster) if call[:2] == ("bank_b", "miniupi_before_vote") and call[3] == "False"]
    wait_calls(cluster, ("gateway", "miniupi_before_decision", txn, "ABORTED"),
               ("gateway", "miniupi_after_decision", txn, "ABORTED", "INSUFFICIENT_FUNDS", "payment"))
    assert not [call for call in calls(cluster) if call[:3] == ("bank_b", "miniupi_after_vote", txn)]


def test_hook_miniupi_before_password_check_fires_once_per_check_known_names_or_not(cluster: LocalCluster) -> None:
    before = calls(cluster)
    with cluster.client() as c:
        for account in ("alice@bank_a", "nobody@bank_a"):
            with pytest.raises(Unauthenticated):
                c.login(account, "wrong")
    checks = [call for call in calls(cluster)[len(before):] if call[1] == "miniupi_before_password_check"]
    assert checks == [("bank_a", "miniupi_before_password_check", "alice"),
                      ("bank_a", "miniupi_before_password_check", "nobody")]


def test_hook_miniupi_after_session_written_fires_for_a_login_and_its_logout_not_an_unknown_key(
        cluster: LocalCluster) -> None:
    before = len(calls(cluster))
    with cluster.client() as c:
        session = c.login("alice@bank_a", "pw")
        c.logout()
        c.session = session
        with pytest.raises(Unauthenticated):
            c.logout()  # the key is gone already: refused, nothing is written, nothing fires
    written = [call for call in calls(cluster)[before:] if call[1] == "miniupi_after_session_written"]
    assert written == [("gateway", "miniupi_after_session_written", "alice@bank_a", "login"),
                       ("gateway", "miniupi_after_session_written", "alice@bank_a", "logout")]


def timed(cluster: LocalCluster, hook: str, *args: str) -> list[tuple[int, float]]:
    """Where each call of `hook` with these leading arguments is, and the seconds it gives right after them."""
    return [(i, float(call[2 + len(args)])) for i, call in enumerate(calls(cluster))
            if call[1] == hook and call[2:2 + len(args)] == args]


def test_hook_miniupi_after_prepare_and_miniupi_after_phase_time_each_step_of_a_payment(
        cluster: LocalCluster) -> None:
    """Each bank's answer and all votes in before the decision; the decision's write and the whole
    payment between it and miniupi_after_decision; phase 2 after every bank's acknowledgement."""
    with cluster.client() as c:
        c.login("alice@bank_a", "pw")
        txn = c.pay("bob@bank_b", 100).txn_id
    decide, decided, *sent = wait_calls(cluster, ("gateway", "miniupi_before_decision", txn, "COMMITTED"),
                                        ("gateway", "miniupi_after_decision", txn, "COMMITTED", "payment"),
                                        *(("gateway", "miniupi_after_decision_sent", txn, bank, "COMMITTED")
                                          for bank in ("bank_a", "bank_b")))
    wait_for("phase 2's time", lambda: timed(cluster, "miniupi_after_phase", txn, "phase2"))
    for bank in ("bank_a", "bank_b"):
        [(at, seconds)] = timed(cluster, "miniupi_after_prepare", txn, bank)
        assert at < decide and 0 < seconds < 10
        assert calls(cluster)[at][-1] == "yes"  # its answer, for people
    [(votes_in, prepare_s)] = timed(cluster, "miniupi_after_phase", txn, "prepare")
    [(written, write_s)] = timed(cluster, "miniupi_after_phase", txn, "decision_write")
    [(answered, payment_s)] = timed(cluster, "miniupi_after_phase", txn, "payment")
    [(acked, phase2_s)] = timed(cluster, "miniupi_after_phase", txn, "phase2")
    assert votes_in < decide < written < answered < decided and acked > max(sent)
    assert 0 < write_s < payment_s and prepare_s < payment_s < 10 and 0 < phase2_s < 10


def test_hook_miniupi_repeated_id_fires_for_a_resent_id_only(cluster: LocalCluster) -> None:
    with cluster.client() as c:
        c.login("alice@bank_a", "pw")
        txn = c.pay("bob@bank_b", 1).txn_id
        c.pay("bob@bank_b", 1, txn_id=txn)
    wait_calls(cluster, ("gateway", "miniupi_repeated_id", txn))
    assert len(positions(cluster, "gateway", "miniupi_repeated_id", txn)) == 1


def test_hook_miniupi_after_store_write_fires_on_every_node_with_its_time_and_writers(
        cluster: LocalCluster) -> None:
    with cluster.client() as c:
        c.login("alice@bank_a", "pw")
        c.pay("bob@bank_b", 1)
    for node in cluster.config.nodes:
        writes = [call for call in calls(cluster) if call[:2] == (node.name, "miniupi_after_store_write")]
        assert writes and all(float(s) > 0 and int(items) >= 1 for _, _, s, items in writes)


def test_hook_miniupi_node_loaded_fires_before_serving_with_the_gateways_live_counts(cluster: LocalCluster) -> None:
    for node in cluster.config.nodes:
        loaded = [i for i, call in enumerate(calls(cluster)) if call[:2] == (node.name, "miniupi_node_loaded")]
        assert loaded and loaded[0] < positions(cluster, node.name, "miniupi_node_started", node.address)[0]
    [gateway] = [call for call in calls(cluster) if call[:2] == ("gateway", "miniupi_node_loaded")]
    for reading in ("payments_in_flight", "decisions_unacknowledged", "sessions_live"):
        assert f"'{reading}':" in " ".join(gateway)


def test_hook_miniupi_node_stopped_fires_when_a_node_is_stopped(cluster: LocalCluster) -> None:
    assert not positions(cluster, "bank_b", "miniupi_node_stopped")
    cluster.restart_node("bank_b")
    assert len(positions(cluster, "bank_b", "miniupi_node_stopped")) == 1
    assert positions(cluster, "bank_b", "miniupi_node_stopped")[0] < positions(
        cluster, "bank_b", "miniupi_node_started", cluster.config.banks["bank_b"].address)[-1]
