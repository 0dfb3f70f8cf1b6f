"""`miniupi client` driven through a pseudo-terminal, as a person at a keyboard would use it.

pexpect gives the REPL a real terminal: the password prompt turns echo
off, Ctrl-C and Ctrl-D arrive as the terminal's signals and end-of-file.
The retry base is small so that the background sender acts within the test.
"""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from miniupi.ops.testing import LocalCluster
from conftest import PASSWORD, open_account, wait_for

pytestmark = pytest.mark.timeout(120)

SPEC = {
    "cluster": {"name": "repl", "prepare_timeout_s": 3, "call_timeout_s": 3,
                "max_opening_deposit": "10000.00"},  # Register opens with deposits here
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
}
TXN = r"\(txn ([0-9a-f-]{36})\)"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("repl"), SPEC) as c:
        yield c


@pytest.fixture(autouse=True)
def gateway_up_afterwards(cluster: LocalCluster) -> Iterator[None]:
    yield
    cluster.start_node("gateway")


def spawn(cluster: LocalCluster, home: Path, transcript: Path) -> pexpect.spawn:
    env = {**os.environ, "MINIUPI_CONFIG": str(cluster.config_path), "MINIUPI_HOME": str(home),
           "MINIUPI_RETRY_BASE_S": "0.2", "MINIUPI_RETRY_CAP_S": "1"}
    repl = pexpect.spawn(sys.executable, ["-m", "miniupi", "client"], env=env, cwd=str(cluster.root),
                         encoding="utf-8", timeout=20, dimensions=(40, 200))
    repl.logfile_read = transcript.open("w")  # kept in tmp_path for a failing test's reader
    return repl


def log_in(repl: pexpect.spawn, account: str) -> None:
    repl.sendline(f"login {account}")
    repl.expect_exact("password: ")
    repl.sendline(PASSWORD)
    repl.expect_exact(f"logged in as {account}")
    assert PASSWORD not in repl.before + repl.after  # echo was off


def quit_cleanly(repl: pexpect.spawn) -> None:
    repl.sendline("quit")
    repl.expect_exact("bye")
    repl.expect(pexpect.EOF)


def assert_exited_cleanly(repl: pexpect.spawn, transcript: Path) -> None:
    """Exit status 0 and no traceback anywhere in what the REPL printed (checked after close)."""
    assert repl.exitstatus == 0
    assert not re.search("Traceback", transcript.read_text())


def test_repl_pays_queues_while_the_gateway_is_down_and_announces_the_completion(
        cluster: LocalCluster, tmp_path: Path) -> None:
    payer, payee = open_account(cluster, "bank_a", 100_00), open_account(cluster, "bank_b", 0)
    repl = spawn(cluster, tmp_path / "home", tmp_path / "transcript.txt")
    try:
        repl.expect_exact("type help")
        repl.expect_exact("miniupi> ")
        log_in(repl, payer)
        repl.expect_exact(f"{payer}> ")

        repl.sendline("balance")
        repl.expect_exact(f"{payer}: 100.00 INR")
        repl.sendline(f"pay {payee} 10")
        repl.expect(rf"paid 10\.00 INR to {payee} {TXN}")
        repl.sendline("balance")
        repl.expect_exact(f"{payer}: 90.00 INR")
        repl.expect_exact(f"{payer}> ")

        cluster.stop_node("gateway")
        repl.sendline(f"pay {payee} 2.50")
        repl.expect_exact("queued: gateway unreachable, will retry")
        repl.expect_exact(f"{payer} [1 queued]> ")
        repl.sendline("queue")
        repl.expect(rf"queued +2\.50 INR  {payer} -> {payee}  attempts \d+  next .*txn ([0-9a-f-]{{36}})")
        queued_id = repl.match.group(1)

        # Ctrl-C at the prompt drops the half-typed line and keeps the REPL.
        repl.send("pay someone@bank_b 99")
        repl.sendintr()
        repl.expect_exact(f"{payer} [1 queued]> ")
        repl.sendline("help")
        repl.expect_exact("sync ")
        repl.expect_exact(f"{payer} [1 queued]> ")

        cluster.start_node("gateway")
        # The session outlived the restart: the background task sends with it, no login typed.
        repl.expect_exact("sent from the queue: ")
        assert "login" not in repl.before, repl.before
        repl.expect(rf"paid 2\.50 INR to {payee} {TXN}")
        assert repl.match.group(1) == queued_id
        repl.sendline("balance")
        repl.expect_exact(f"{payer}: 87.50 INR")
        repl.expect_exact(f"{payer}> ")  # nothing queued any more
        repl.sendline("history --limit 1")  # the command line's arguments, parsed by the same parser
        repl.expect_exact(f"{payer}> ")
        assert re.search(rf"-2\.50 INR  to   {payee}  {queued_id}", repl.before), repl.before
        assert "-10.00" not in repl.before

        repl.sendeof()
        repl.expect_exact("bye")
        repl.expect(pexpect.EOF)
    finally:
        repl.close(force=True)
    assert repl.exitstatus == 0
    assert "Traceback" not in (tmp_path / "transcript.txt").read_text()
    with cluster.client() as c:
        c.login(payee, PASSWORD)
        assert c.balance().balance == 12_50
        assert [i.delta for i in c.history()] == [2_50, 10_00]


def test_repl_sends_payments_queued_across_a_killed_gateway_in_the_background_with_no_login(
        cluster: LocalCluster, tmp_path: Path) -> None:
    payer, payee = open_account(cluster, "bank_a", 20_00), open_account(cluster, "bank_b", 0)
    repl = spawn(cluster, tmp_path / "home", tmp_path / "transcript.txt")
    try:
        repl.expect_exact("miniupi> ")
        log_in(repl, payer)
        repl.expect_exact(f"{payer}> ")
        cluster.stop_node("gateway")
        repl.sendline(f"pay {payee} 1.00")
        repl.expect_exact(f"{payer} [1 queued]> ")
        repl.sendline(f"pay {payee} 2.00")
        repl.expect_exact(f"{payer} [2 queued]> ")
        # Back, then killed at once and brought back by supervisord: a crash, not a clean stop.
        cluster.start_node("gateway")
        old = cluster.kill_node("gateway")
        wait_for("supervisord to restart the gateway",
                 lambda: cluster.supervisor.pid("gateway") not in (None, old), timeout_s=30)

        # Each is paid, or, if the kill caught the gateway deciding it, answered as the restart decided:
        # aborted (the outbox sends nothing twice, and a definite answer ends it).
        paid = []
        for amount in ("1.00", "2.00"):
            repl.expect(rf"sent from the queue: (paid {amount} INR to {payee}|payment of {amount} INR to "
                        rf"{payee} failed: payment aborted: the gateway restarted before deciding)")
            if repl.match.group(1).startswith("paid"):
                paid.append(int(amount.replace(".", "")))
        assert paid, "the restarted gateway aborted both: the kill is meant to catch one at most"
        repl.sendline("balance")
        repl.expect_exact(f"{payer}: {(20_00 - sum(paid)) // 100}.{(20_00 - sum(paid)) % 100:02d} INR")
        repl.expect_exact(f"{payer}> ")  # nothing queued any more
        quit_cleanly(repl)
    finally:
        repl.close(force=True)
    transcript = (tmp_path / "transcript.txt").read_text()
    assert "log in again" not in transcript and "password:" not in transcript.split("logged in as")[1]
    assert_exited_cleanly(repl, tmp_path / "transcript.txt")
    with cluster.client() as c:
        c.login(payee, PASSWORD)
        assert c.balance().balance == sum(paid)
        assert sorted(i.delta for i in c.history()) == sorted(paid)  # each once


def test_repl_explains_mistakes_and_quits_on_quit(cluster: LocalCluster, tmp_path: Path) -> None:
    repl = spawn(cluster, tmp_path / "home", tmp_path / "transcript.txt")
    try:
        repl.expect_exact("miniupi> ")
        repl.sendline("balance")
        repl.expect_exact("error: not logged in; type: login USER@BANK")
        repl.sendline("frobnicate")
        repl.expect_exact("unknown command 'frobnicate'; type help for the list")
        repl.sendline("pay")
        repl.expect_exact("error: the following arguments are required: TO, AMOUNT "
                          "(usage: pay [--id UUID] [--json] TO AMOUNT)")
        repl.sendline("queue")
        repl.expect_exact("no queued payments")
        quit_cleanly(repl)
    finally:
        repl.close(force=True)
    assert_exited_cleanly(repl, tmp_path / "transcript.txt")


def test_repl_answers_the_attack_runs_lines_in_one_line_each_and_stays_alive(cluster: LocalCluster,
                                                                            tmp_path: Path) -> None:
    payer, payee = open_account(cluster, "bank_a", 5_00), open_account(cluster, "bank_b", 0)
    repl = spawn(cluster, tmp_path / "home", tmp_path / "transcript.txt")
    try:
        repl.expect_exact("miniupi> ")
        log_in(repl, payer)
        repl.expect_exact(f"{payer}> ")
        for line, answer in [
            (f"pay {payee} 1e999999", "error: not an amount: '1e999999'"),
            ("history --limit -1", "error: argument --limit: not a count from 1 to 1000: '-1'"),
            ("history -1", "error: unrecognized arguments: -1 (usage: history [--admin ACCOUNT] [--limit N] [--before CURSOR] [--json])"),
            (f"pay {payee} 1,50", "error: not an amount: '1,50'"),
            (f"pay {payee} \u0661", "error: not an amount: '\u0661'"),
            ("__class__", "unknown command '__class__'"),
        ]:
            repl.sendline(line)
            repl.expect_exact(answer)
            repl.expect_exact(f"{payer}> ")
        repl.sendline("balance")
        repl.expect_exact(f"{payer}: 5.00 INR")  # still alive, and nothing was paid
        quit_cleanly(repl)
    finally:
        repl.close(force=True)
    assert_exited_cleanly(repl, tmp_path / "transcript.txt")


def test_ctrl_d_at_the_password_prompt_cancels_the_login_and_the_repl_goes_on(
        cluster: LocalCluster, tmp_path: Path) -> None:
    """A terminal's Ctrl-D ends one read; it used to end the whole session after 'no password given'."""
    account = open_account(cluster, "bank_a", 1_00)
    transcript = tmp_path / "transcript.txt"
    repl = spawn(cluster, tmp_path / "home", transcript)
    repl.expect_exact("miniupi> ")
    repl.sendline(f"login {account}")
    repl.expect_exact("password: ")
    repl.sendeof()
    repl.expect_exact("error: no password given")
    repl.expect_exact("miniupi> ")
    log_in(repl, account)
    quit_cleanly(repl)
    repl.close()
    assert_exited_cleanly(repl, transcript)
