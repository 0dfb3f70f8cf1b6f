"""`miniupi client`: the customer's verbs at a prompt, with the outbox sent in the background.

A typed line goes through the verb's own parser, the one the command line
uses (verbs.py), and the verb writes the lines it writes there.

One asyncio loop runs four things: the prompt (stdin is watched with
add_reader, so reading never blocks the loop), the command the user typed,
the background task that sends queued payments when their retry time
comes (sync.py) and prints a line whenever one completes, and a watcher
that asks the gateway for open collect requests every REQUEST_POLL_S
seconds and prints a line for each new one asked of the logged-in user.

Ctrl-C clears the line at the prompt, or stops the running command (a
payment it was sending stays queued and is resent with the same id);
Ctrl-D or `quit` leaves.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import TextIO

from miniupi.backoff import RetryPolicy
from miniupi.client import describe
from miniupi.client.api import AsyncClient
from miniupi.client.home import load_session
from miniupi.client.outbox import Outbox, OutboxEntry
from miniupi.client.verbs import VERBS, Verb
from miniupi.config import ClusterConfig
from miniupi.errors import FailedPrecondition, InvalidArgument, MiniupiError, Unauthenticated
from miniupi.inputs import parse_positive_number, quoted
from miniupi.money import BadAmount

# How often the REPL asks for collect requests to the user; MINIUPI_REQUEST_POLL_S overrides it (tests).
REQUEST_POLL_S = 5.0
REQUEST_POLL_ENV = "MINIUPI_REQUEST_POLL_S"


def request_poll_s(environ: dict[str, str] | None = None) -> float:
    """$MINIUPI_REQUEST_POLL_S (seconds, a plain decimal such as 0.5), else REQUEST_POLL_S."""
    raw = (os.environ if environ is None else environ).get(REQUEST_POLL_ENV, "").strip()
    if not raw:
        return REQUEST_POLL_S
    try:
        return parse_positive_number(raw, 3600)
    except InvalidArgument:
        raise InvalidArgument(f"{REQUEST_POLL_ENV} must be a number of seconds above 0 and at most 3600, "
                              f"not {quoted(raw)}") from None

FOOTER = """\
Queued payments are sent in the background with backoff, and a line is printed as each one
completes; so is a line for each collect request asked of you. Ctrl-C clears the line, or stops
a command that is waiting for the gateway."""


def help_text() -> str:
    """Every verb's usage and what it does, from the parsers the typed lines go through."""
    rows = [(verb.parser.usage_line(), verb.help) for verb in VERBS.values()]
    rows += [("help", "this text"), ("quit", "leave (or Ctrl-D)")]
    width = max(len(usage) for usage, _ in rows)
    return "\n".join(["commands:", *(f"  {usage:<{width}}  {what}" for usage, what in rows), FOOTER])


class LineReader:
    """Lines from a file descriptor without blocking the event loop."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._loop = asyncio.get_running_loop()
        self._buffer = b""
        self._lines: deque[bytes] = deque()
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self._loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            # A terminal's Ctrl-D, or the end of a pipe.
            self._eof = True
            self._loop.remove_reader(self.fd)
        else:
            self._buffer += data
            *lines, self._buffer = self._buffer.split(b"\n")
            self._lines.extend(lines)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def readline(self) -> str | None:
        """The next line without its newline; None at the end of input."""
        while not self._lines:
            if self._eof:
                if self._buffer:
                    rest, self._buffer = self._buffer, b""
                    return rest.decode(errors="replace")
                return None
            self._waiter = self._loop.create_future()
            await self._waiter
        return self._lines.popleft().decode(errors="replace").rstrip("\r")

    def discard(self) -> None:
        """Forget a partly typed line (the terminal has already dropped it on Ctrl-C)."""
        self._buffer = b""

    def go_on(self) -> None:
        """Read on after an end of input that was a terminal's Ctrl-D, which ends one read, not the terminal."""
        if self._eof and os.isatty(self.fd):
            self._eof = False
            self._loop.add_reader(self.fd, self._readable)

    def close(self) -> None:
        if not self._eof:
            self._loop.remove_reader(self.fd)


class FileLineReader:
    """For stdin redirected from a regular file, which epoll cannot watch (and which never blocks)."""

    def __init__(self, fd: int) -> None:
        self._file = os.fdopen(os.dup(fd), "rb")

    async def readline(self) -> str | None:
        data = self._file.readline()
        return data.decode(errors="replace").rstrip("\r\n") if data else None

    def discard(self) -> None:
        pass

    def go_on(self) -> None:
        pass  # a file's end is final

    def close(self) -> None:
        self._file.close()


def line_reader(fd: int) -> LineReader | FileLineReader:
    try:
        return LineReader(fd)
    except PermissionError:
        return FileLineReader(fd)


class Repl:
    """The prompt, the background sender, and the Front the verbs of verbs.py run on."""

    def __init__(self, cluster: ClusterConfig, home: Path, retry: RetryPolicy,
                 stdin_fd: int | None = None, out: TextIO | None = None) -> None:
        self.cluster, self.home, self.retry = cluster, home, retry
        if stdin_fd is None and sys.stdin is None:  # started with standard input closed (`<&-`)
            raise FailedPrecondition("miniupi client reads commands from standard input, which is closed")
        self.stdin_fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
        self.out = out or sys.stdout
        self.tty = os.isatty(self.stdin_fd) and self.out.isatty()
        self._at_prompt = False
        self._command: asyncio.Task[None] | None = None
        self._announced: set[str] = set()  # payments whose completion line is printed already
        self._requests_told: set[str] = set()  # collect requests whose arrival line is printed already
        self.poll_s = request_poll_s()
        self.client: AsyncClient
        self.reader: LineReader | FileLineReader

    # -- output -----------------------------------------------------------

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def prompt(self) -> str:
        session = self.client.session
        if session is None:
            return "miniupi> "
        waiting = len(self.client.queued(session.account))
        return f"{session.account}{f' [{waiting} queued]' if waiting else ''}> "

    def show_prompt(self) -> None:
        self.out.write(self.prompt())
        self.out.flush()
        self._at_prompt = True

    def notify(self, text: str) -> None:
        """A line from the background: printed above a fresh prompt if the user is at one."""
        if not self._at_prompt:
            self.say(text)
            return
        self.out.write(("\r\x1b[K" if self.tty else "\n") + text + "\n")
        self.show_prompt()

    # -- the loop ---------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        session = load_session(self.home)
        self.client = AsyncClient(self.cluster, session=session, outbox=Outbox.in_home(self.home), retry=self.retry)
        self.reader = line_reader(self.stdin_fd)
        loop.add_signal_handler(signal.SIGINT, self._interrupt)
        background = asyncio.create_task(self.client.deliver_forever(
            on_finished=self.sent, on_stuck=self._stuck))
        watcher = asyncio.create_task(self._watch_requests())
        try:
            self.say("miniupi client: type help for the commands, quit or Ctrl-D to leave")
            if session is not None and session.expires_at < time.time():
                self.say(f"the session for {session.account} has expired; type: login {session.account}")
            elif session is not None:
                self.say(f"logged in as {session.account}")
            while True:
                self.show_prompt()
                line = await self.reader.readline()
                self._at_prompt = False
                if line is None:
                    self.say("")
                    break
                if not await self.handle_line(line):
                    break
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            self.reader.close()
            background.cancel()
            watcher.cancel()
            await asyncio.gather(background, watcher, return_exceptions=True)
            waiting = len(self.client.queued())
            if waiting:
                self.say(f"{waiting} payment{'s' if waiting != 1 else ''} stay queued in the outbox; "
                         "they go with your next miniupi command (or: miniupi sync)")
            await self.client.close()
        self.say("bye")
        return 0

    def _interrupt(self) -> None:
        if self._command is not None and not self._command.done():
            self._command.cancel()
            return
        self.reader.discard()
        self.out.write("\n")
        self.show_prompt()

    async def handle_line(self, line: str) -> bool:
        """Answer one typed line; False when it asks to leave. No line makes this raise."""
        try:
            words = shlex.split(line)
        except ValueError as e:
            self.say(f"error: {e}")
            return True
        if not words:
            return True
        name = words[0].lower()
        if name in ("quit", "exit"):
            return False
        if name == "help":
            self.say(help_text())
            return True
        verb = VERBS.get(name)
        if verb is None:
            self.say(f"unknown command {quoted(name)}; type help for the list")
            return True
        try:
            args = verb.parser.parse_args(words[1:])
        except InvalidArgument as e:
            self.say(f"error: {e.message}")
            return True
        await self._run_command(verb, args)
        return True

    async def _run_command(self, verb: Verb, args: argparse.Namespace) -> None:
        self._command = asyncio.create_task(verb.run(self, args))
        try:
            await asyncio.wait([self._command])
        finally:
            task, self._command = self._command, None
        self.out.flush()
        error = None if task.cancelled() else task.exception()
        if task.cancelled():
            self.say("interrupted")
        elif isinstance(error, (MiniupiError, BadAmount)):
            self.say(f"error: {getattr(error, 'message', None) or error}")
        elif error is not None:
            # A bug, not the user's mistake; the session goes on, and a queued payment stays queued.
            detail = " ".join(str(error).split())[:200]
            self.say(f"error: {verb.name} failed inside miniupi ({type(error).__name__}: {detail}); this is a bug")

    async def _watch_requests(self) -> None:
        """Print one line for each collect request asked of the logged-in user, once, as it arrives.

        The gateway may be down or the session over: then nothing is said
        (the outbox's lines already tell of those) and the next round asks again.
        """
        while True:
            session = self.client.session
            if session is not None and session.expires_at > time.time():
                try:
                    found = await self.client.requests()
                except MiniupiError:
                    found = []
                now = time.time()
                for r in found:
                    # The session is read again: a login to another account may have happened meanwhile.
                    current = self.client.session
                    if (current is not None and r.payer == current.account and r.state == "PENDING"
                            and r.request_id not in self._requests_told):
                        self._requests_told.add(r.request_id)
                        self.notify(describe.arrival(r, self.tell, now))
            await asyncio.sleep(self.poll_s)

    def _stuck(self, error: MiniupiError, pending: int) -> None:
        if pending:
            account = self.client.session.account if self.client.session else "USER@BANK"
            hint = f" ({self.tell(f'login {account}')})" if isinstance(error, Unauthenticated) else ""
            self.notify(f"{pending} queued payment{'s' if pending != 1 else ''} waiting: {error.message}{hint}")

    # -- the Front the verbs run on (verbs.py) -------------------------------

    @property
    def outbox(self) -> Outbox:
        return self.client.outbox

    def tell(self, command: str) -> str:
        return f"type: {command}"

    def note(self, text: str) -> None:
        self.notify(text)

    def sent(self, entry: OutboxEntry) -> None:
        if entry.txn_id not in self._announced:
            self._announced.add(entry.txn_id)
            self.notify(f"sent from the queue: {describe.finished(entry)}")

    def left_queued(self, account: str, waiting: int) -> None:
        if self.client.session is None:
            return  # logged out: they wait for the next login, which says so
        if waiting:
            self.say(f"sending {waiting} queued payment{'s' if waiting != 1 else ''} in the background")
        self.client.wake_outbox()

    async def password(self, confirm: bool) -> str:
        password = await self._read_password("password: ")
        if confirm and self.tty and await self._read_password("again: ") != password:
            raise InvalidArgument("the passwords do not match")
        return password

    async def _read_password(self, prompt: str) -> str:
        self.out.write(prompt)
        self.out.flush()
        if not os.isatty(self.stdin_fd):
            line = await self.reader.readline()
        else:
            import termios

            saved = termios.tcgetattr(self.stdin_fd)
            quiet = list(saved)
            quiet[3] &= ~termios.ECHO
            termios.tcsetattr(self.stdin_fd, termios.TCSADRAIN, quiet)
            try:
                line = await self.reader.readline()
            finally:
                termios.tcsetattr(self.stdin_fd, termios.TCSADRAIN, saved)
                self.say("")
        if line is None:
            self.reader.go_on()  # Ctrl-D at the password prompt cancels the login, not the session
            raise InvalidArgument("no password given")
        if not line:
            raise InvalidArgument("empty password")
        return line


def run_repl(cluster: ClusterConfig, home: Path, retry: RetryPolicy) -> int:
    return asyncio.run(Repl(cluster, home, retry).run())
