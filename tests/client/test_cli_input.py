"""What a person types, however wrong, gets one line back: at the command line and in the REPL.

The command line runs as a real process (`python -m miniupi`) against a
cluster file whose gateway port nobody listens on: every mistake here is
caught before the network, or meets a closed port. The REPL's line handling
is driven in process, line by line, with hypothesis choosing the lines.
"""
from __future__ import annotations

import asyncio
import io
import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miniupi.backoff import RetryPolicy
from miniupi.ops.certs import init_certs
from miniupi.client.api import AsyncClient, Session
from miniupi.client.home import client_home, save_session
from miniupi.client.outbox import Outbox
from miniupi.client.repl import Repl
from miniupi.errors import FailedPrecondition
from miniupi.ops.testing import LocalCluster

pytestmark = pytest.mark.timeout(300)

ME = "alice@bank_a"


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A cluster file and certificates, and no node running: the gateway's port is closed."""
    cluster = LocalCluster(tmp_path_factory.mktemp("input"))  # the default two banks, never started
    init_certs(cluster.config)
    yield cluster


def logged_in_home(path: Path) -> Path:
    """A client home holding a session that has not expired (the gateway would not know it)."""
    home = client_home(path)
    save_session(home, Session(ME, "made-up-key", time.time() + 3600))
    return home


def miniupi(cluster: LocalCluster, *args: str, home: Path, stdout: int = subprocess.PIPE,
            close_stdin: bool = False) -> subprocess.CompletedProcess[str]:
    """`miniupi ARGS` in a session of its own, so it has no terminal to fall back on."""
    command = [sys.executable, "-m", "miniupi", *args]
    if close_stdin:
        command = ["sh", "-c", 'exec "$@" <&-', "sh", *command]
    env = {**os.environ, "MINIUPI_CONFIG": str(cluster.config_path), "MINIUPI_HOME": str(home)}
    return subprocess.run(command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE, text=True, env=env,
                          timeout=60, cwd=cluster.root, start_new_session=True)


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    """The single 'miniupi: ...' line of a refused command."""
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("miniupi: "), r.stderr
    return lines[0]


# -- the command line ----------------------------------------------------------------


REFUSED = {
    # name: (arguments, words in the one line)
    "comma_amount": (("pay", "bob@bank_b", "1,50"), "not an amount: '1,50'"),
    "underscore_amount": (("pay", "bob@bank_b", "1_000"), "not an amount"),
    "exponent_amount": (("pay", "bob@bank_b", "1e999999"), "not an amount"),
    "plus_amount": (("pay", "bob@bank_b", "+5"), "not an amount"),
    "arabic_indic_amount": (("pay", "bob@bank_b", "\u0661\u0665\u0660"), "not an amount"),
    "full_width_amount": (("pay", "bob@bank_b", "\uff15"), "not an amount"),
    "huge_amount": (("pay", "bob@bank_b", "9" * 100_000), "too large"),
    "negative_history_limit": (("history", "--limit", "-1"), "--limit"),
    "zero_history_limit": (("history", "--limit", "0"), "--limit"),
    "huge_history_limit": (("history", "--limit", str(2**32)), "--limit"),
    "unicode_history_limit": (("history", "--limit", "\u0661\u0662"), "--limit"),
    "negative_queue_limit": (("queue", "--all", "--limit", "-5"), "--limit"),
    "huge_queue_limit": (("queue", "--all", "--limit", str(2**64)), "--limit"),
    "register_exponent": (("register", "carol@bank_a", "--initial", "1e999999", "--password-stdin"),
                          "not an amount"),
    "missing_amount": (("pay", "bob@bank_b"), "required"),
    "unknown_verb": (("frobnicate",), "invalid choice"),
    "unknown_option": (("balance", "--frob"), "unrecognized"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_mistake_at_the_command_line_is_one_line_and_queues_nothing(offline: LocalCluster, tmp_path: Path,
                                                                      case: str) -> None:
    args, words = REFUSED[case]
    home = logged_in_home(tmp_path / "home")

    line = one_line(miniupi(offline, *args, home=home))

    assert words in line, line
    assert len(line) < 400, line
    box = Outbox.in_home(home)
    try:
        assert box.recent(100) == []  # nothing was taken for sending
    finally:
        box.close()


@pytest.mark.parametrize("how", ["password_stdin_closed", "password_stdin_empty", "no_terminal", "no_terminal_closed"])
def test_login_without_a_password_is_refused_in_one_line(offline: LocalCluster, tmp_path: Path, how: str) -> None:
    flag = ("--password-stdin",) if how.startswith("password_stdin") else ()
    r = miniupi(offline, "login", ME, *flag, home=tmp_path / "home", close_stdin=how.endswith("closed"))

    line = one_line(r)
    assert "no password given" in line or "--password-stdin" in line, line
    assert not (tmp_path / "home" / "session.json").exists()


@pytest.mark.parametrize("key, exit_status, words", [
    ("eof", 1, "miniupi: no password given"),
    ("interrupt", 130, "miniupi: interrupted"),
])
def test_ctrl_d_or_ctrl_c_at_the_password_prompt_is_one_line(offline: LocalCluster, tmp_path: Path, key: str,
                                                             exit_status: int, words: str) -> None:
    env = {**os.environ, "MINIUPI_CONFIG": str(offline.config_path), "MINIUPI_HOME": str(tmp_path / "home")}
    child = pexpect.spawn(sys.executable, ["-m", "miniupi", "login", ME], env=env, cwd=str(offline.root),
                          encoding="utf-8", timeout=30)
    try:
        child.expect_exact("password: ")
        child.sendeof() if key == "eof" else child.sendintr()
        child.expect(pexpect.EOF)
        said = child.before
    finally:
        child.close(force=True)
    assert words in said, said
    assert "Traceback" not in said, said
    assert [line for line in said.splitlines() if line.strip()] == [words], said
    assert child.exitstatus == exit_status


@pytest.mark.parametrize("args", [("queue", "--all"), ("queue",), ("queue", "--all", "--json")])
def test_output_to_a_reader_that_left_ends_quietly(offline: LocalCluster, tmp_path: Path, args: tuple[str]) -> None:
    """`miniupi queue --all | head -1`: head has gone when we write; exit 141 as SIGPIPE would, and say nothing."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has left before the first byte
    try:
        r = miniupi(offline, *args, home=tmp_path / "home", stdout=write_end)
    finally:
        os.close(write_end)
    assert (r.returncode, r.stderr) == (141, "")


# -- the client home -----------------------------------------------------------------


def test_a_home_others_may_write_in_is_refused_and_left_alone(offline: LocalCluster, tmp_path: Path) -> None:
    home = tmp_path / "shared"
    home.mkdir()
    for mode in (0o777, 0o770, 0o1777):
        home.chmod(mode)
        line = one_line(miniupi(offline, "login", ME, "--password-stdin", home=home))
        assert f"client home {home} is writable by other users" in line and "chmod 700" in line, line
        assert one_line(miniupi(offline, "queue", home=home)) == line
        assert list(home.iterdir()) == []  # no outbox, no session made there
        assert home.stat().st_mode & 0o7777 == mode


def test_a_home_we_make_is_0700_whatever_the_umask(offline: LocalCluster, tmp_path: Path) -> None:
    home = tmp_path / "new" / "home"
    old = os.umask(0)
    try:
        r = miniupi(offline, "queue", home=home)
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    assert home.stat().st_mode & 0o777 == 0o700


def test_a_home_of_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "theirs"
    home.mkdir(mode=0o700)
    monkeypatch.setattr(os, "geteuid", lambda: home.stat().st_uid + 1)  # we are someone else now
    with pytest.raises(FailedPrecondition, match="belongs to another user"):
        client_home(home)


def test_a_home_that_is_a_file_is_one_line(offline: LocalCluster, tmp_path: Path) -> None:
    home = tmp_path / "file"
    home.write_text("not a directory")
    assert "cannot use" in one_line(miniupi(offline, "queue", home=home))


@pytest.mark.parametrize("verb", ["queue", "client"])
def test_an_outbox_that_is_not_a_database_is_one_line(offline: LocalCluster, tmp_path: Path, verb: str) -> None:
    home = client_home(tmp_path / "home")
    (home / "outbox.sqlite3").write_text("not a database")
    line = one_line(miniupi(offline, verb, home=home))
    assert f"cannot use the outbox {home / 'outbox.sqlite3'}" in line, line


BAD_KEEP_DAYS = ["abc", "0", "-1", "nan", "inf", "1e3", "36501", "1_0", "7 days", "\u0667", "9" * 100_000]


@pytest.mark.parametrize("value", BAD_KEEP_DAYS, ids=[v[:10] for v in BAD_KEEP_DAYS])
def test_a_bad_outbox_retention_in_the_environment_is_one_line_and_makes_no_outbox(
        offline: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MINIUPI_OUTBOX_KEEP_DAYS", value)
    home = logged_in_home(tmp_path / "home")
    line = one_line(miniupi(offline, "queue", home=home))
    assert line.startswith("miniupi: MINIUPI_OUTBOX_KEEP_DAYS must be a number of days above 0 and at most 36500, "
                           "not '"), line
    assert len(line) < 200, line
    assert not (home / "outbox.sqlite3").exists()


@pytest.mark.parametrize("verb", [("pay", "bob@bank_b", "1.00"), ("sync",), ("balance",), ("client",)])
def test_every_verb_with_an_outbox_refuses_a_bad_retention_in_one_line(
        offline: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verb: tuple[str, ...]) -> None:
    monkeypatch.setenv("MINIUPI_OUTBOX_KEEP_DAYS", "-5")
    home = logged_in_home(tmp_path / "home")
    assert one_line(miniupi(offline, *verb, home=home)) == \
        "miniupi: MINIUPI_OUTBOX_KEEP_DAYS must be a number of days above 0 and at most 36500, not '-5'"
    assert not (home / "outbox.sqlite3").exists()


# -- the REPL's line handling ------------------------------------------------------------


VERBS = ["login", "logout", "balance", "pay", "history", "queue", "sync", "register", "deposit", "help", "PAY",
         "Balance", "do_pay", "__init__", "say", "run", "frobnicate", "_need_session", "handle_line", "tell", "note",
         "password", "client"]
AMOUNTISH = st.text(st.sampled_from("0123456789.,_+-eE \u0663\uff15\u00a0"), max_size=8)
WORDS = st.one_of(
    AMOUNTISH, st.sampled_from(["bob@bank_b", "alice@bank_a", "x@bank_zz", "--id", "-1", "1e999999", "1,50",
                                "00000000-0000-4000-8000-000000000000", "", "--limit", "--all", "--admin",
                                "--json", "-h"]),
    st.text(max_size=12))
LINES = st.one_of(
    st.builds(lambda verb, words: " ".join([verb, *map(shlex.quote, words)]), st.sampled_from(VERBS),
              st.lists(WORDS, max_size=4)),
    st.text(max_size=40))


class Typed:
    """The REPL's reader for a password prompt: one answer per line typed, or the end of input."""

    def __init__(self, password: str | None) -> None:
        self.password = password

    async def readline(self) -> str | None:
        return self.password

    def discard(self) -> None:
        pass

    def go_on(self) -> None:
        pass

    def close(self) -> None:
        pass


async def answer(cluster: LocalCluster, home: Path, logged_in: bool, password: str | None,
                 lines: list[str]) -> list[tuple[str, bool, str]]:
    """Each line through Repl.handle_line: (line, keep going?, what it printed)."""
    out = io.StringIO()
    with open(os.devnull) as devnull:
        repl = Repl(cluster.config, home, RetryPolicy(base_s=0.01, cap_s=0.01), stdin_fd=devnull.fileno(), out=out)
        repl.client = AsyncClient(cluster.config, outbox=Outbox.in_home(home), retry=repl.retry,
                                  session=Session(ME, "made-up-key", time.time() + 3600) if logged_in else None)
        repl.reader = Typed(password)
        answers = []
        try:
            for line in lines:
                before = out.tell()
                going = await repl.handle_line(line)
                answers.append((line, going, out.getvalue()[before:]))
        finally:
            await repl.client.close()
    return answers


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINES, min_size=1, max_size=4), logged_in=st.booleans(),
       password=st.sampled_from(["pw", "", None]))
def test_no_typed_line_stops_the_repl_or_goes_unanswered(offline: LocalCluster, tmp_path: Path, lines: list[str],
                                                         logged_in: bool, password: str | None) -> None:
    home = client_home(tmp_path / "repl-home")
    for line, going, said in asyncio.run(answer(offline, home, logged_in, password, lines)):
        words = line.split()
        if words and words[0].lower() in ("quit", "exit"):
            assert not going
            continue
        assert going, line
        if line.strip(" \t\n\r\x0b\x0c"):
            assert said.strip(), f"nothing printed for {line!r}"
        assert "this is a bug" not in said, (line, said)


@pytest.mark.parametrize("line, words", [
    ("pay bob@bank_b 1e999999", "error: not an amount: '1e999999'"),
    ("pay bob@bank_b 1,50", "error: not an amount: '1,50'"),
    ("history --limit -1", "error: argument --limit: not a count from 1 to 1000: '-1' (usage: history "),
    ("history -1", "error: unrecognized arguments: -1 (usage: history [--admin ACCOUNT] [--limit N] [--before CURSOR] [--json])"),
    ("history --limit 99999999999", "error: argument --limit: not a count from 1 to 1000"),
    ("pay", "error: the following arguments are required: TO, AMOUNT (usage: pay [--id UUID] [--json] TO AMOUNT)"),
    ("__init__", "unknown command '__init__'"),
])
def test_the_findings_lines_get_one_error_line_in_the_repl(offline: LocalCluster, tmp_path: Path, line: str,
                                                           words: str) -> None:
    (_, going, said), = asyncio.run(answer(offline, client_home(tmp_path / "home"), True, "pw", [line]))
    assert going and said.startswith(words) and said.count("\n") == 1, said


@pytest.mark.parametrize("words", [["queue"], ["queue", "--all"], ["queue", "--json"], ["queue", "--all", "--json"]])
def test_the_repl_prints_the_lines_the_command_line_prints(offline: LocalCluster, tmp_path: Path,
                                                          words: list[str]) -> None:
    home = logged_in_home(tmp_path / "home")
    box = Outbox.in_home(home)
    try:
        refused = str(uuid.uuid4())
        box.add(refused, ME, "bob@bank_b", 1_50, "INR", now=time.time() - 60)
        box.finish_failed(refused, box.claim(refused), "FAILED_PRECONDITION", "insufficient funds")
        box.add(str(uuid.uuid4()), ME, "bob@bank_b", 2_00, "INR", now=time.time() - 30)  # due: "next now"
    finally:
        box.close()

    r = miniupi(offline, *words, home=home)
    (_, going, said), = asyncio.run(answer(offline, home, True, None, [" ".join(words)]))

    assert (r.returncode, r.stderr) == (0, "")
    assert going and said == r.stdout and "bob@bank_b" in said


def test_the_repl_with_standard_input_closed_is_one_line(tmp_path: Path) -> None:
    """`miniupi client <&-`: Python has no sys.stdin at all, and the REPL failed on its fileno."""
    config = tmp_path / "c.toml"
    config.write_text('[cluster]\n[gateway]\nport = 1\n[banks.bank_a]\nport = 2\n')
    r = subprocess.run(["bash", "-c", f'"{sys.executable}" -m miniupi client <&-'], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "MINIUPI_CONFIG": str(config),
                                                   "MINIUPI_HOME": str(tmp_path / "home")})
    assert r.returncode == 1
    assert r.stderr == "miniupi: miniupi client reads commands from standard input, which is closed\n"
