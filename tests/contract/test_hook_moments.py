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
                                          ("gateway", "miniupi_after_decision", txn, "COMMITTED"))
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
               ("gateway", "miniupi_after_decision", txn, "ABORTED"))
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
