"""The customer's verbs at the shell: the command line's Front, and `miniupi client`.

The verbs themselves are in verbs.py. Here the answer goes to stdout and
side notes (payments sent from the queue, hints) to stderr, so stdout stays
the command's own answer; the session and the outbox are those of the
client home, opened only by a verb that uses them.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import getpass
import signal
import sys
import warnings
from pathlib import Path
from typing import TextIO

from miniupi.backoff import RetryPolicy
from miniupi.client import describe
from miniupi.client.api import AsyncClient
from miniupi.client.home import client_home, load_session
from miniupi.client.outbox import Outbox, OutboxEntry
from miniupi.client.verbs import Verb, payments
from miniupi.config import ClusterConfig
from miniupi.errors import InvalidArgument


def read_password(password_stdin: bool, confirm: bool = False) -> str:
    """One line of standard input with --password-stdin, else asked on the terminal without echo."""
    if password_stdin:
        if sys.stdin is None:
            raise InvalidArgument("no password given: standard input is closed")
        line = sys.stdin.readline()
        if not line:
            raise InvalidArgument("no password given: standard input is empty")
        password = line.rstrip("\r\n")
    else:
        password = _ask("password: ")
        if confirm and sys.stdin is not None and sys.stdin.isatty() and _ask("again: ") != password:
            raise InvalidArgument("the passwords do not match")
    if not password:
        raise InvalidArgument("empty password")
    return password


def _ask(prompt: str) -> str:
    """getpass, refusing in one line where it would warn or fail.

    Without a terminal getpass warns and reads standard input, which may be
    closed or meant for something else: we ask for --password-stdin instead.
    The verb runs in asyncio.run, whose Ctrl-C only cancels the task at its
    next await; a prompt blocks, so Ctrl-C gets Python's own handler here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", getpass.GetPassWarning)
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return getpass.getpass(prompt)
        except getpass.GetPassWarning:
            raise InvalidArgument("no terminal to ask for the password; give it with --password-stdin") from None
        except EOFError:  # Ctrl-D at the prompt
            if sys.stderr.isatty():
                print(file=sys.stderr)  # getpass leaves the cursor after the prompt
            raise InvalidArgument("no password given") from None
        finally:
            signal.signal(signal.SIGINT, previous)


class CommandLine:
    """The Front of one `miniupi VERB` process."""

    def __init__(self, cluster: ClusterConfig, args: argparse.Namespace) -> None:
        self.cluster = cluster
        self.out: TextIO = sys.stdout
        self._home = getattr(args, "home", None)  # only verbs that use the home take --home
        self._password_stdin = getattr(args, "password_stdin", False)

    @functools.cached_property
    def home(self) -> Path:
        return client_home(self._home)

    @functools.cached_property
    def outbox(self) -> Outbox:
        return Outbox.in_home(self.home)

    @functools.cached_property
    def client(self) -> AsyncClient:
        return AsyncClient(self.cluster, session=load_session(self.home), outbox=self.outbox,
                           retry=RetryPolicy.from_env())

    def tell(self, command: str) -> str:
        return f"run: miniupi {command}"

    def note(self, text: str) -> None:
        print(text, file=sys.stderr)

    def sent(self, entry: OutboxEntry) -> None:
        self.note(f"sent from the queue: {describe.finished(entry)}")

    def left_queued(self, account: str, waiting: int) -> None:
        if waiting:
            self.note(f"{payments(waiting)} from {account} queued: they go with your next command, "
                      f"or {self.tell('sync')}")

    async def password(self, confirm: bool) -> str:
        return read_password(self._password_stdin, confirm)

    async def close(self) -> None:
        if "client" in self.__dict__:
            await self.client.close()  # and its outbox
        elif "outbox" in self.__dict__:
            self.outbox.close()


def run_verb(verb: Verb, cluster: ClusterConfig, args: argparse.Namespace) -> None:
    async def run() -> None:
        front = CommandLine(cluster, args)
        try:
            await verb.run(front, args)
        finally:
            await front.close()

    asyncio.run(run())


def run_client(cluster: ClusterConfig, args: argparse.Namespace) -> None:
    """`miniupi client`: the interactive REPL."""
    from miniupi.client.repl import run_repl

    retry = RetryPolicy.from_env(base_s=args.retry_base, cap_s=args.retry_cap)
    code = run_repl(cluster, client_home(args.home), retry)
    if code:
        raise SystemExit(code)
