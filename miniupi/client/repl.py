"""`miniupi client`: the customer's verbs at a prompt, with the outbox sent in the background.

One asyncio loop runs three things: the prompt (stdin is watched with
add_reader, so reading never blocks the loop), the command the user typed,
and the background task that sends queued payments when their retry time
comes (sync.py) and prints a line whenever one completes.

Ctrl-C clears the line at the prompt, or stops the running command (a
payment it was sending stays queued and is resent with the same id);
Ctrl-D or `quit` leaves.
"""
from __future__ import annotations

import asyncio
import os
import shlex
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TextIO

from miniupi.client import describe
from miniupi.client.api import AsyncClient, is_transport_failure
from miniupi.backoff import RetryPolicy
from miniupi.client.home import clear_session, load_session, save_session
from miniupi.client.outbox import DONE, FAILED, Outbox, OutboxEntry
from miniupi.config import ClusterConfig
from miniupi.errors import InvalidArgument, MiniupiError, Unauthenticated
from miniupi.inputs import HISTORY_MAX, parse_count, quoted
from miniupi.money import BadAmount, format_amount, parse_amount

HELP = """\
commands:
  login USER@BANK            log in (the password is not echoed)
  balance                    your balance
  pay TO AMOUNT [--id UUID]  pay, such as: pay bob@bank_b 125.50 (queued if the gateway is unreachable)
  history [N]                your last N applied payments (default 10)
  queue                      payments waiting in the outbox, with attempts and next attempt time
  sync                       send the queued payments now
  logout                     end the session; queued payments stay queued
  help                       this text
  quit                       leave (or Ctrl-D)
Queued payments are sent in the background with backoff, and a line is printed as each one
completes. Ctrl-C clears the line, or stops a command that is waiting for the gateway."""


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

    def close(self) -> None:
        self._file.close()


def line_reader(fd: int) -> LineReader | FileLineReader:
    try:
        return LineReader(fd)
    except PermissionError:
        return FileLineReader(fd)


class Repl:
    def __init__(self, cluster: ClusterConfig, home: Path, retry: RetryPolicy,
                 stdin_fd: int | None = None, out: TextIO | None = None) -> None:
        self.cluster, self.home, self.retry = cluster, home, retry
        self.stdin_fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
        self.out = out or sys.stdout
        self.tty = os.isatty(self.stdin_fd) and self.out.isatty()
        self._at_prompt = False
        self._command: asyncio.Task[None] | None = None
        self._announced: set[str] = set()  # payments whose completion line is printed already
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

    def announce(self, entry: OutboxEntry, prefix: str = "") -> None:
        if entry.txn_id not in self._announced:
            self._announced.add(entry.txn_id)
            self.notify(prefix + describe.finished(entry))

    # -- the loop ---------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        session = load_session(self.home)
        self.client = AsyncClient(self.cluster, session=session, outbox=Outbox.in_home(self.home), retry=self.retry)
        self.reader = line_reader(self.stdin_fd)
        loop.add_signal_handler(signal.SIGINT, self._interrupt)
        background = asyncio.create_task(self.client.deliver_forever(
            on_finished=lambda e: self.announce(e, "sent from the queue: "), on_stuck=self._stuck))
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
            await asyncio.gather(background, return_exceptions=True)
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
        verb = words[0].lower()
        if verb in ("quit", "exit"):
            return False
        await self._run_command(verb, words[1:])
        return True

    async def _run_command(self, verb: str, args: list[str]) -> None:
        handler = VERBS.get(verb)
        if handler is None:
            self.say(f"unknown command {quoted(verb)}; type help for the list")
            return
        self._command = asyncio.create_task(handler(self, args))
        try:
            await asyncio.wait([self._command])
        finally:
            task, self._command = self._command, None
        error = None if task.cancelled() else task.exception()
        if task.cancelled():
            self.say("interrupted")
        elif isinstance(error, (MiniupiError, BadAmount)):
            self.say(f"error: {getattr(error, 'message', None) or error}")
        elif error is not None:
            # A bug, not the user's mistake; the session goes on, and a queued payment stays queued.
            detail = " ".join(str(error).split())[:200]
            self.say(f"error: {verb} failed inside miniupi ({type(error).__name__}: {detail}); this is a bug")

    def _stuck(self, error: MiniupiError, pending: int) -> None:
        if pending:
            account = self.client.session.account if self.client.session else "USER@BANK"
            hint = f" (type: login {account})" if isinstance(error, Unauthenticated) else ""
            self.notify(f"{pending} queued payment{'s' if pending != 1 else ''} waiting: {error.message}{hint}")

    # -- helpers for the verbs --------------------------------------------

    def _need_session(self) -> str:
        session = self.client.session
        if session is None:
            raise Unauthenticated("not logged in; type: login USER@BANK")
        if session.expires_at < time.time():
            raise Unauthenticated(f"session for {session.account} expired; type: login {session.account}")
        return session.account

    async def _send_queued_first(self) -> None:
        """As at the command line: queued payments go before the command's own call."""
        account = self._need_session()
        if not self.client.queued(account):
            return
        report = await self.client.sync(wait_s=0)
        for entry in report.finished:
            self.announce(entry, "sent from the queue: ")
        if is_transport_failure(report.stopped):
            assert report.stopped is not None
            raise report.stopped

    async def _read_password(self) -> str:
        self.out.write("password: ")
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
            raise InvalidArgument("no password given")
        if not line:
            raise InvalidArgument("empty password")
        return line

    # -- the verbs ----------------------------------------------------------

    async def do_help(self, args: list[str]) -> None:
        self.say(HELP)

    async def do_login(self, args: list[str]) -> None:
        if len(args) != 1:
            raise InvalidArgument("usage: login USER@BANK")
        password = await self._read_password()
        session = await self.client.login(args[0], password)
        save_session(self.home, session)
        until = datetime.fromtimestamp(session.expires_at).strftime("%Y-%m-%d %H:%M")
        self.say(f"logged in as {session.account} (until {until})")
        waiting = len(self.client.queued(session.account))
        if waiting:
            self.say(f"sending {waiting} queued payment{'s' if waiting != 1 else ''} in the background")
        self.client.wake_outbox()

    async def do_logout(self, args: list[str]) -> None:
        if self.client.session is not None:
            if self.client.session.expires_at >= time.time():
                await self._send_queued_first()
            try:
                await self.client.logout()
            except Unauthenticated:
                pass  # already ended at the gateway
        self.client.session = None
        clear_session(self.home)
        self.say("logged out")

    async def do_balance(self, args: list[str]) -> None:
        await self._send_queued_first()
        b = await self.client.balance()
        extra = f" ({format_amount(b.available)} available)" if b.available != b.balance else ""
        self.say(f"{b.account}: {format_amount(b.balance)} {b.currency}{extra}")

    async def do_history(self, args: list[str]) -> None:
        if len(args) > 1:
            raise InvalidArgument("usage: history [N]")
        limit = parse_count(args[0], HISTORY_MAX) if args else 10
        await self._send_queued_first()
        items = await self.client.history(limit=limit)
        if not items:
            self.say("no payments yet")
        for i in items:
            when = datetime.fromtimestamp(i.applied_at).strftime("%Y-%m-%d %H:%M:%S")
            direction = "from" if i.delta > 0 else "to  "
            self.say(f"{when}  {format_amount(i.delta):>12} {i.currency}  {direction} {i.counterparty}  {i.txn_id}")

    async def do_pay(self, args: list[str]) -> None:
        txn_id = None
        if len(args) == 4 and args[2] == "--id":
            txn_id = args[3]
        elif len(args) != 2:
            raise InvalidArgument("usage: pay TO AMOUNT [--id UUID]")
        self._need_session()
        entry = self.client.enqueue(args[0], parse_amount(args[1]), txn_id=txn_id)
        report = await self.client.sync() if entry.pending else None
        for earlier in report.finished if report else ():
            if earlier.txn_id != entry.txn_id:
                self.announce(earlier, "sent from the queue: ")
        entry = self.client.outbox.get(entry.txn_id) or entry
        if entry.state in (DONE, FAILED):
            self._announced.add(entry.txn_id)
            self.say(describe.finished(entry))
        else:
            self.say(describe.queued(report.stopped if report else None))

    async def do_queue(self, args: list[str]) -> None:
        entries = self.client.queued()
        if not entries:
            self.say("no queued payments")
            return
        now = time.time()
        for entry in entries:
            self.say(describe.queue_line(entry, now))

    async def do_sync(self, args: list[str]) -> None:
        self._need_session()
        report = await self.client.sync()
        for entry in report.finished:
            self._announced.add(entry.txn_id)
            self.say(describe.finished(entry))
        if report.stopped is not None or report.busy:
            self.say(f"{report.pending} still queued: {describe.reason(report.stopped)}")
        elif not report.finished:
            self.say("nothing to send")


# The verbs a typed line may name, and nothing else: `help` -> Repl.do_help.
VERBS: dict[str, Callable[[Repl, list[str]], Awaitable[None]]] = {
    name.removeprefix("do_"): method for name, method in vars(Repl).items() if name.startswith("do_")}


def run_repl(cluster: ClusterConfig, home: Path, retry: RetryPolicy) -> int:
    return asyncio.run(Repl(cluster, home, retry).run())
