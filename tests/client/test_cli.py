"""The real `miniupi` command line (a subprocess per command) against a running cluster."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from miniupi.client.api import Session
from miniupi.errors import Unauthenticated
from miniupi.ops.supervision import is_serving
from miniupi.ops.testing import LocalCluster
from conftest import PASSWORD, unique_name, wait_for

pytestmark = pytest.mark.timeout(120)

SPEC = {
    "cluster": {"name": "cli", "prepare_timeout_s": 3, "call_timeout_s": 3,
                "max_opening_deposit": "10000.00"},  # Register opens with deposits here
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("cli"), SPEC) as c:
        yield c


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A client home of the test's own, so sessions never leak between tests."""
    return tmp_path / "home"


def ok(cluster: LocalCluster, *args: str, home: Path, input: str | None = None) -> str:
    r = cluster.cli(*args, input=input, home=home)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    return r.stdout


def fails(cluster: LocalCluster, *args: str, home: Path, input: str | None = None) -> str:
    """Run a command that must fail: non-zero exit, exactly one 'miniupi: ...' line on stderr."""
    r = cluster.cli(*args, input=input, home=home)
    assert r.returncode != 0, (args, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("miniupi: "), r.stderr
    return lines[0]


def library_balance(cluster: LocalCluster, account: str) -> tuple[int, int]:
    with cluster.client() as c:
        c.login(account, PASSWORD)
        b = c.balance()
        return b.balance, b.available


def register(cluster: LocalCluster, bank: str, initial: str, home: Path) -> str:
    account = f"{unique_name()}@{bank}"
    out = ok(cluster, "register", account, "--initial", initial, "--password-stdin", home=home, input=PASSWORD + "\n")
    assert account in out
    return account


def login(cluster: LocalCluster, account: str, home: Path) -> None:
    out = ok(cluster, "login", account, "--password-stdin", home=home, input=PASSWORD + "\n")
    assert f"logged in as {account}" in out


def quick_account(cluster: LocalCluster, bank: str, initial_minor: int) -> str:
    """An account opened through the library (no subprocess), for tests about other commands."""
    account = f"{unique_name()}@{bank}"
    with cluster.client() as c:
        c.register(account, PASSWORD, initial_minor)
    return account


# -- customers ---------------------------------------------------------------------


def test_register_login_balance_and_pay_through_the_command_line(cluster: LocalCluster, home: Path,
                                                                 tmp_path: Path) -> None:
    payer = register(cluster, "bank_a", "200.00", home)
    payee = register(cluster, "bank_b", "0.50", tmp_path / "payee-home")
    login(cluster, payer, home)

    assert ok(cluster, "balance", home=home).strip() == f"{payer}: 200.00 INR"
    out = ok(cluster, "pay", payee, "125.50", home=home)

    lines = out.splitlines()
    assert len(lines) == 1 and "125.50" in lines[0] and payee in lines[0], out
    assert library_balance(cluster, payer) == (200_00 - 125_50, 200_00 - 125_50)
    assert library_balance(cluster, payee) == (50 + 125_50, 50 + 125_50)
    assert ok(cluster, "balance", home=home).strip() == f"{payer}: 74.50 INR"
    history = ok(cluster, "history", home=home)
    assert "-125.50" in history and payee in history


def test_pay_balance_and_history_json_are_machine_readable(cluster: LocalCluster, home: Path) -> None:
    payer = quick_account(cluster, "bank_b", 10_00)
    payee = quick_account(cluster, "bank_a", 0)
    login(cluster, payer, home)

    paid = ok(cluster, "pay", payee, "1.25", "--json", home=home)
    assert len(paid.splitlines()) == 1
    result = json.loads(paid)
    assert result["state"] == "COMMITTED"
    assert str(uuid.UUID(result["txn_id"])) == result["txn_id"]
    assert (result["to"], result["amount"], result["currency"]) == (payee, "1.25", "INR")

    balance = json.loads(ok(cluster, "balance", "--json", home=home))
    assert balance == {"account": payer, "balance": "8.75", "available": "8.75", "currency": "INR"}

    history = json.loads(ok(cluster, "history", "--json", home=home))
    assert [(h["txn_id"], h["counterparty"], h["amount"], h["currency"]) for h in history["entries"]] == [
        (result["txn_id"], payee, "-1.25", "INR")]
    assert history["next_cursor"] is None  # no older page
    assert library_balance(cluster, payee) == (1_25, 1_25)


def test_pay_with_reused_id_returns_same_txn_and_moves_money_once(cluster: LocalCluster, home: Path) -> None:
    payer = quick_account(cluster, "bank_a", 10_00)
    payee = quick_account(cluster, "bank_b", 0)
    login(cluster, payer, home)
    txn_id = str(uuid.uuid4())

    first = json.loads(ok(cluster, "pay", payee, "2.00", "--id", txn_id, "--json", home=home))
    second = json.loads(ok(cluster, "pay", payee, "2.00", "--id", txn_id, "--json", home=home))
    text = ok(cluster, "pay", payee, "2.00", "--id", txn_id, home=home)

    assert first["txn_id"] == second["txn_id"] == txn_id
    assert first["state"] == second["state"] == "COMMITTED"
    assert txn_id in text
    assert library_balance(cluster, payer) == (8_00, 8_00)
    assert library_balance(cluster, payee) == (2_00, 2_00)
    line = fails(cluster, "pay", payee, "3.00", "--id", txn_id, home=home)
    assert txn_id in line
    assert library_balance(cluster, payer) == (8_00, 8_00)


FAILING_PAYMENTS = {
    # name: (payee: "real", "unknown" account or a literal address, amount text, extra args, words in the error)
    "insufficient_funds": ("real", "10.01", (), "insufficient funds"),
    "unknown_account": ("unknown", "1.00", (), "unknown account"),
    "unknown_bank": ("someone@bank_zz", "1.00", (), "unknown bank"),
    "three_decimals": ("real", "12.345", (), "decimal"),
    "not_a_number": ("real", "abc", (), "not an amount"),
    "negative": ("real", "-5.00", (), "negative"),
    "zero": ("real", "0", (), "positive"),
    "malformed_id": ("real", "1.00", ("--id", "not-a-uuid"), "not a UUID"),
    # Text that other parsers read as a number: here it is not an amount, and no money moves.
    "comma": ("real", "1,50", (), "not an amount: '1,50'"),
    "exponent": ("real", "1e999999", (), "not an amount"),
    "plus_sign": ("real", "+5", (), "not an amount"),
    "arabic_indic_digits": ("real", "\u0665", (), "not an amount"),
}


@pytest.mark.parametrize("case", list(FAILING_PAYMENTS))
def test_failed_pay_prints_one_line_on_stderr_and_moves_no_money(cluster: LocalCluster, home: Path,
                                                                case: str) -> None:
    to, amount, extra, words = FAILING_PAYMENTS[case]
    payer = quick_account(cluster, "bank_a", 10_00)
    payee = quick_account(cluster, "bank_b", 0)
    to = {"real": payee, "unknown": f"{unique_name('nobody')}@bank_b"}.get(to, to)
    login(cluster, payer, home)

    line = fails(cluster, "pay", to, amount, *extra, home=home)

    assert words.lower() in line.lower(), line
    assert library_balance(cluster, payer) == (10_00, 10_00)
    assert library_balance(cluster, payee) == (0, 0)


def test_failed_pay_with_json_still_prints_one_line_error(cluster: LocalCluster, home: Path) -> None:
    payer = quick_account(cluster, "bank_a", 1_00)
    payee = quick_account(cluster, "bank_b", 0)
    login(cluster, payer, home)
    r = cluster.cli("pay", payee, "5.00", "--json", home=home)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("miniupi: ")
    assert json.loads(r.stdout)["state"] != "COMMITTED"
    assert library_balance(cluster, payer) == (1_00, 1_00)


def test_wrong_password_login_fails_with_one_line(cluster: LocalCluster, home: Path) -> None:
    account = quick_account(cluster, "bank_b", 0)
    line = fails(cluster, "login", account, "--password-stdin", home=home, input="not-the-password\n")
    assert "password" in line
    assert "not logged in" in fails(cluster, "balance", home=home)


def test_registering_existing_account_fails_with_one_line(cluster: LocalCluster, home: Path) -> None:
    account = quick_account(cluster, "bank_a", 3_00)
    line = fails(cluster, "register", account, "--initial", "999.00", "--password-stdin", home=home,
                 input="other\n")
    assert "already exists" in line
    assert library_balance(cluster, account) == (3_00, 3_00)


def test_logout_then_balance_fails_with_not_logged_in(cluster: LocalCluster, home: Path) -> None:
    account = quick_account(cluster, "bank_a", 1_00)
    login(cluster, account, home)
    saved = json.loads((home / "session.json").read_text())
    assert ok(cluster, "balance", home=home).startswith(account)

    assert "logged out" in ok(cluster, "logout", home=home)

    line = fails(cluster, "balance", home=home)
    assert "not logged in" in line
    assert "not logged in" in fails(cluster, "pay", "x@bank_b", "1.00", home=home)
    # The key was revoked at the gateway too, not only forgotten here.
    with cluster.client(session=Session(account, saved["key"], saved["expires_at"])) as c:
        with pytest.raises(Unauthenticated):
            c.balance()


def test_session_file_is_private_to_its_owner(cluster: LocalCluster, home: Path) -> None:
    account = quick_account(cluster, "bank_b", 0)
    login(cluster, account, home)
    assert (home / "session.json").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("planted", ["stale_file_0644", "link_to_a_file", "dangling_link"])
def test_session_file_is_0600_and_follows_no_link_whatever_a_crash_or_someone_left(
        cluster: LocalCluster, home: Path, tmp_path: Path, planted: str) -> None:
    """A file or link at session.json.tmp (the name a crashed login left) neither lends its mode nor takes the key."""
    account = quick_account(cluster, "bank_b", 0)
    home.mkdir(mode=0o700)
    stale, target = home / "session.json.tmp", tmp_path / "elsewhere"
    if planted == "stale_file_0644":
        stale.write_text("left by a crash")
        stale.chmod(0o644)
    elif planted == "link_to_a_file":
        target.write_text("someone else's file")
        stale.symlink_to(target)
    else:
        stale.symlink_to(target)

    login(cluster, account, home)

    session = home / "session.json"
    assert not session.is_symlink() and session.stat().st_mode & 0o777 == 0o600
    assert json.loads(session.read_text())["account"] == account
    if planted == "link_to_a_file":
        assert target.read_text() == "someone else's file"
    if planted == "dangling_link":
        assert not target.exists()  # the key was not written where the link pointed
    assert ok(cluster, "balance", home=home).strip() == f"{account}: 0.00 INR"


@pytest.mark.parametrize("damage", [
    {"key": "abc\ndef"}, {"key": "k\u00e9y"}, {"key": "k\u0000y"}, {"key": 5}, {"key": "k" * 20_000},
    {"account": ["alice", "bank_a"]}, {"account": "not an address"}, {"expires_at": "soon"},
])
def test_a_damaged_session_file_is_no_session_and_never_a_traceback(cluster: LocalCluster, home: Path,
                                                                     damage: dict) -> None:
    """A session.json we did not write went into gRPC metadata or the outbox and failed there, on every command."""
    account = quick_account(cluster, "bank_a", 1_00)
    login(cluster, account, home)
    session = home / "session.json"
    session.write_text(json.dumps({**json.loads(session.read_text()), **damage}))
    for args in (("balance",), ("pay", "x@bank_b", "1.00"), ("queue",)):
        r = cluster.cli(*args, home=home)
        assert "Traceback" not in r.stderr, (args, r.stderr)
        if args[0] != "queue":
            assert r.returncode == 1 and "not logged in" in r.stderr, (args, r.stderr)
    assert ok(cluster, "logout", home=home)
    assert library_balance(cluster, account) == (1_00, 1_00)


@pytest.mark.parametrize("limit", ["-1", "0", "4294967296", "\u0661"])
def test_history_limit_out_of_range_is_one_line_for_a_logged_in_customer(cluster: LocalCluster, home: Path,
                                                                          limit: str) -> None:
    account = quick_account(cluster, "bank_a", 1_00)
    login(cluster, account, home)
    assert "--limit" in fails(cluster, "history", "--limit", limit, home=home)
    assert ok(cluster, "history", "--limit", "1000", home=home).strip() == "no payments yet"


# -- the cluster ---------------------------------------------------------------------


def status_rows(cluster: LocalCluster, home: Path) -> dict[str, dict]:
    out = ok(cluster, "status", "--json", home=home)
    return {row["name"]: row for row in json.loads(out)}


def test_status_json_lists_gateway_and_banks_running_with_pids(cluster: LocalCluster, home: Path) -> None:
    # supervisord calls a node RUNNING once it has stayed up for startsecs (1 s).
    rows = wait_for("every node RUNNING", lambda: (r := status_rows(cluster, home)) and
                    all(row["state"] == "RUNNING" for row in r.values()) and r)

    assert set(rows) == {"gateway", "bank_a", "bank_b"}
    for name, row in rows.items():
        assert isinstance(row["pid"], int) and row["pid"] > 0
        assert row["pid"] == cluster.supervisor.pid(name)
        os.kill(row["pid"], 0)  # a live process
        assert row["address"] == cluster.config.node(name).address
    text = ok(cluster, "status", home=home)
    assert len(text.splitlines()) == 3 and all("RUNNING" in line for line in text.splitlines())


def test_stop_then_start_a_bank_from_the_command_line(cluster: LocalCluster, home: Path) -> None:
    account = quick_account(cluster, "bank_b", 5_00)
    login(cluster, account, home)
    old_pid = cluster.supervisor.pid("bank_b")
    try:
        assert "bank_b" in ok(cluster, "stop", "bank_b", home=home)
        rows = status_rows(cluster, home)
        assert rows["bank_b"]["state"] == "STOPPED" and rows["bank_b"]["pid"] is None
        assert rows["bank_a"]["state"] == "RUNNING" and rows["gateway"]["state"] == "RUNNING"
        bank_b_line = next(line for line in ok(cluster, "status", home=home).splitlines() if line.startswith("bank_b"))
        assert "STOPPED" in bank_b_line
        # A customer of the stopped bank gets a one-line reason, not a traceback.
        assert "bank_b" in fails(cluster, "balance", home=home)

        assert "bank_b" in ok(cluster, "start", "bank_b", home=home)
        rows = status_rows(cluster, home)
        assert rows["bank_b"]["state"] == "RUNNING"
        assert rows["bank_b"]["pid"] not in (None, old_pid)
    finally:
        cluster.start_node("bank_b")
    assert ok(cluster, "balance", home=home).strip() == f"{account}: 5.00 INR"


def test_missing_cluster_file_gives_one_line_error_naming_it(cluster: LocalCluster, home: Path,
                                                            tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "cluster.toml"
    for args in (("balance",), ("status",), ("pay", "x@bank_b", "1.00")):
        line = fails(cluster, *args, "--config", str(missing), home=home)
        assert str(missing) in line, line
    # And through $MINIUPI_CONFIG, as the environment would set it.
    r = subprocess.run([sys.executable, "-m", "miniupi", "status"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "MINIUPI_CONFIG": str(missing), "MINIUPI_HOME": str(home)})
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and str(missing) in r.stderr


def test_unknown_node_name_gives_one_line_error(cluster: LocalCluster, home: Path) -> None:
    for verb in ("stop", "start", "restart"):
        line = fails(cluster, verb, "no_such_node", home=home)
        assert "no_such_node" in line


def test_start_is_done_when_the_node_answers_so_the_next_command_finds_it(cluster: LocalCluster) -> None:
    """README: `miniupi start gateway` then at once `miniupi sync`. supervisord says RUNNING as soon as the
    process exists; the gateway answers only once its store is open."""
    assert cluster.cli("stop", "gateway").returncode == 0
    started = cluster.cli("start", "gateway")
    assert started.returncode == 0 and started.stdout == "gateway: start done\n", started.stderr
    assert is_serving(cluster.config.gateway, 0.5)
