"""The command line's parser: every argument explained, --home only where a client home is used,
--version, and each customer verb parsed by one parser at the command line and in the REPL.

No cluster: these read the parser, or run `python -m miniupi` for what a user sees.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import miniupi
from miniupi.cli import build_parser
from miniupi.client.verbs import VERBS
from miniupi.errors import InvalidArgument

# The commands that read or write the client home (its session or its outbox).
USES_HOME = {"register", "login", "logout", "balance", "history", "pay", "queue", "sync", "client",
             "txn", "refund", "request", "requests", "approve", "decline"}
# Each command with the arguments it needs to parse.
SOME_ID = "00000000-0000-4000-8000-000000000000"
REQUIRED = {"stop": ["gateway"], "start": ["gateway"], "restart": ["gateway"], "certs": ["init"],
            "bank": ["--name", "bank_a"], "register": ["a@bank_a"], "login": ["a@bank_a"],
            "pay": ["b@bank_b", "1.00"], "deposit": ["a@bank_a", "1.00"], "txn": [SOME_ID], "refund": [SOME_ID],
            "request": ["b@bank_b", "1.00"], "approve": [SOME_ID], "decline": [SOME_ID]}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def every_parser() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield "miniupi", build_parser()
    yield from subcommands().items()
    for name, verb in VERBS.items():
        yield f"the REPL's {name}", verb.parser


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "miniupi", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_every_argument_of_every_command_has_help_text() -> None:
    missing = [f"{where}: {'/'.join(action.option_strings) or action.metavar or action.dest}"
               for where, parser in every_parser() for action in parser._actions
               if not (action.help and action.help.strip()) or action.help == argparse.SUPPRESS]
    assert missing == []


def test_version_prints_the_package_version() -> None:
    r = run("--version")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"miniupi {miniupi.__version__}\n", "")
    assert miniupi.__version__ == importlib.metadata.version("miniupi") == "0.1.0"


def test_home_is_refused_in_one_line_by_a_command_that_has_no_client_home(tmp_path: Path) -> None:
    r = run("status", "--home", str(tmp_path), env={"MINIUPI_CONFIG": str(tmp_path / "none.toml")})
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"miniupi: unrecognized arguments: --home {tmp_path} (see: miniupi --help)\n"


@pytest.mark.parametrize("command", sorted(set(subcommands()) - USES_HOME))
def test_home_is_an_argument_only_of_the_commands_that_use_the_home(command: str,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args([command, *REQUIRED.get(command, []), "--home", "x"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("miniupi: unrecognized arguments: --home") and err.count("\n") == 1, err


@pytest.mark.parametrize("command", sorted(USES_HOME))
def test_the_commands_that_use_the_client_home_take_home(command: str) -> None:
    args = build_parser().parse_args([command, *REQUIRED.get(command, []), "--home", "some/dir"])
    assert args.home == "some/dir"


def test_the_command_line_and_the_repl_parse_each_verb_with_the_same_arguments() -> None:
    commands = subcommands()
    assert set(VERBS) <= set(commands)
    for name, verb in VERBS.items():
        own = {action.dest: action for action in verb.parser._actions}
        cli = {action.dest: action for action in commands[name]._actions}
        for dest, action in own.items():
            assert cli[dest] is action, (name, dest)  # the very same argument, not a copy that could drift
        extra = set(cli) - set(own) - {"help", "config"}
        assert extra <= {"home", "password_stdin"}, (name, extra)


@pytest.mark.parametrize("words", [
    ["history", "--limit", "5", "--json"],
    ["history", "--admin", "bob@bank_b"],
    ["queue", "--all", "--limit", "3"],
    ["pay", "bob@bank_b", "1.50", "--id", "00000000-0000-4000-8000-000000000000"],
    ["deposit", "bob@bank_b", "2.00", "--json"],
    ["txn", "00000000-0000-4000-8000-000000000000", "--admin"],
    ["refund", "00000000-0000-4000-8000-000000000000", "2.50", "--id", "00000000-0000-4000-8000-000000000001"],
    ["request", "bob@bank_b", "12.00", "--note", "lunch", "--expires", "2h"],
    ["settlement", "--since", "2026-12-06", "--until", "2026-12-06T10:30+05:30", "--json"],
])
def test_a_typed_line_means_what_the_same_words_mean_at_the_command_line(words: list[str]) -> None:
    typed = vars(VERBS[words[0]].parser.parse_args(words[1:]))
    given = vars(build_parser().parse_args(words))
    assert typed == {dest: given[dest] for dest in typed}


@pytest.mark.parametrize("words, message", [
    (["pay"], "the following arguments are required: TO, AMOUNT (usage: pay [--id UUID] [--json] TO AMOUNT)"),
    (["history", "--limit", "0"], "argument --limit: not a count from 1 to 1000: '0' "
                                  "(usage: history [--admin ACCOUNT] [--limit N] [--before CURSOR] [--json])"),
    (["queue", "--frob"], "unrecognized arguments: --frob (usage: queue [--all] [--limit N] [--json])"),
    (["balance", "--home", "x"], "unrecognized arguments: --home x (usage: balance [--admin ACCOUNT] [--json])"),
    (["request", "bob@bank_b", "1", "--expires", "15"],
     "argument --expires: not a duration from 1s to 7d: '15' (such as 90s, 15m, 2h or 7d) "
     "(usage: request [--note TEXT] [--expires DURATION] [--id UUID] [--json] FROM_ACCOUNT AMOUNT)"),
    (["settlement", "--since", "2026-12-06 10:30"],
     "argument --since: not a date or time: '2026-12-06 10:30' (such as 2026-12-06 or 2026-12-06T10:30) "
     "(usage: settlement [--since TIME] [--until TIME] [--json])"),
])
def test_a_verbs_parser_refuses_in_one_line_and_never_exits(words: list[str], message: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        VERBS[words[0]].parser.parse_args(words[1:])
    assert refused.value.message == message


@pytest.mark.parametrize("words, message", [
    ([], "this cluster has gateways gw1, gw2; name one with --name"),
    (["--name", "gw3"], "no gateway named 'gw3' (have gw1, gw2)"),
])
def test_a_gateway_of_several_must_be_named_and_known_or_it_is_one_line_and_exit_2(
        tmp_path: Path, words: list[str], message: str) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text('[cluster]\n[gateways.gw1]\nport = 1\n[gateways.gw2]\nport = 3\n[banks.bank_a]\nport = 2\n')
    run = subprocess.run([sys.executable, "-m", "miniupi", "gateway", *words, "--config", str(config)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [f"miniupi: {config.resolve()}: {message}"]
