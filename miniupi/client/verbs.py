"""The customer's verbs, written once: the command line and the REPL both run them.

Each verb has its own argument parser, built here once. The command line
(cli.py) makes it a sub-command, adding --config, --home and
--password-stdin where they mean something; the REPL (repl.py) parses typed
lines with it as it is. A verb runs on a Front, which is what differs
between the two: where the answer is written, how a side note is shown,
how a password is read.

Every payment goes through the outbox in the client home (outbox.py): it is
queued durably, then sent. Every verb that talks to the gateway as the
customer first sends what the outbox holds for them, reporting those
results as side notes, so that the answer stream holds the verb's own answer.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, Protocol, TextIO

from miniupi import validate
from miniupi.client import describe
from miniupi.client.api import AsyncClient, is_transport_failure
from miniupi.client.home import clear_session, save_session
from miniupi.client.outbox import DONE, FAILED, Outbox, OutboxEntry
from miniupi.config import ClusterConfig
from miniupi.errors import InvalidArgument, MiniupiError, Unauthenticated, Unavailable
from miniupi.inputs import HISTORY_MAX, QUEUE_MAX, count
from miniupi.money import format_amount, parse_amount


class Front(Protocol):
    """Where a verb runs: the command line (commands.py) or the REPL (repl.py)."""

    @property
    def cluster(self) -> ClusterConfig: ...

    @property
    def home(self) -> Path:
        """The client home; the command line refuses one it cannot use when this is first read."""

    @property
    def outbox(self) -> Outbox: ...

    @property
    def client(self) -> AsyncClient:
        """The customer's client: the session of the client home, and its outbox."""

    @property
    def out(self) -> TextIO:
        """The verb's answer."""

    def tell(self, command: str) -> str:
        """How to give `command`: 'run: miniupi login X' at the command line, 'type: login X' in the REPL."""

    def note(self, text: str) -> None:
        """A line beside the answer: stderr at the command line, above the prompt in the REPL."""

    def sent(self, entry: OutboxEntry) -> None:
        """A payment queued earlier got its final answer while a verb sent the queue."""

    def left_queued(self, account: str, waiting: int) -> None:
        """After a login or a logout: `waiting` payments of `account` are still in the outbox."""

    async def password(self, confirm: bool) -> str:
        """The password, never echoed; `confirm` asks twice where a person types it."""


class VerbParser(argparse.ArgumentParser):
    """A verb's own arguments: a parent of its sub-command, and the REPL's parser for a typed line.

    A mistake is an InvalidArgument in one line, never SystemExit: the REPL goes on.
    """

    def __init__(self, name: str, description: str) -> None:
        # Usage never wraps: it is part of a one-line error.
        super().__init__(prog=name, description=description, add_help=False,
                         formatter_class=lambda prog: argparse.HelpFormatter(prog, width=10_000))

    def usage_line(self) -> str:
        return self.format_usage().removeprefix("usage: ").strip()

    def error(self, message: str) -> NoReturn:
        raise InvalidArgument(f"{message} (usage: {self.usage_line()})")


@dataclass(frozen=True)
class Verb:
    parser: VerbParser  # its prog is the verb's name
    run: Callable[[Front, argparse.Namespace], Awaitable[None]]
    uses_home: bool  # reads or writes the client home (the session, the outbox): takes --home
    asks_password: bool = False  # takes --password-stdin at the command line

    @property
    def name(self) -> str:
        return self.parser.prog

    @property
    def help(self) -> str:
        return self.parser.description or ""


# -- shared steps ---------------------------------------------------------------


def payments(n: int) -> str:
    return f"{n} payment" + ("" if n == 1 else "s")


def _stay(n: int) -> str:
    return f"{payments(n)} {'stays' if n == 1 else 'stay'} queued"


def _say(front: Front, text: str) -> None:
    front.out.write(text + "\n")


def _emit(front: Front, args: argparse.Namespace, data: Any, text: str) -> None:
    _say(front, json.dumps(data) if args.json else text)


def need_session(front: Front) -> str:
    """The logged-in account, or Unauthenticated saying how to log in."""
    session = front.client.session
    if session is None:
        raise Unauthenticated(f"not logged in; {front.tell('login USER@BANK')}")
    if session.expires_at < time.time():
        raise Unauthenticated(f"session for {session.account} expired; {front.tell(f'login {session.account}')}")
    return session.account


async def send_queued_first(front: Front) -> None:
    """Send the account's queued payments before the verb's own call.

    If the gateway cannot be reached, say so now rather than wait for a
    second timeout on the verb's own call.
    """
    c = front.client
    if c.session is None or c.session.expires_at < time.time() or not c.queued(c.session.account):
        return
    report = await c.sync(wait_s=0)  # another process already sending: leave it to that one
    for entry in report.finished:
        front.sent(entry)
    if is_transport_failure(report.stopped):
        assert report.stopped is not None
        raise report.stopped


@contextlib.asynccontextmanager
async def _reader(front: Front, args: argparse.Namespace) -> AsyncIterator[AsyncClient]:
    """The admin certificate for --admin ACCOUNT, else the customer's own session."""
    if args.admin:
        async with AsyncClient(front.cluster, identity="admin") as admin:
            yield admin
        return
    need_session(front)
    await send_queued_first(front)
    yield front.client


def _failed_json(front: Front, args: argparse.Namespace, txn_id: str, e: MiniupiError) -> None:
    if args.json:
        _say(front, json.dumps({"txn_id": txn_id, "state": "FAILED", "code": e.code, "error": e.message}))


# -- the verbs ---------------------------------------------------------------------


async def register(front: Front, args: argparse.Namespace) -> None:
    initial = parse_amount(args.initial)
    password = await front.password(confirm=True)
    await send_queued_first(front)
    b = await front.client.register(args.account, password, initial)
    _emit(front, args, {"account": b.account, "balance": format_amount(b.balance), "currency": b.currency},
          f"registered {b.account} with {format_amount(b.balance)} {b.currency}")


async def login(front: Front, args: argparse.Namespace) -> None:
    home = front.home  # a home we cannot use is refused before the password is asked for
    password = await front.password(confirm=False)
    session = await front.client.login(args.account, password)
    save_session(home, session)
    until = datetime.fromtimestamp(session.expires_at).strftime("%Y-%m-%d %H:%M")
    _emit(front, args, {"account": session.account, "expires_at": session.expires_at},
          f"logged in as {session.account} (until {until})")
    front.left_queued(session.account, len(front.client.queued(session.account)))


async def logout(front: Front, args: argparse.Namespace) -> None:
    c = front.client
    session = c.session
    if session is not None:
        await send_queued_first(front)
        try:
            await c.logout()
        except Unauthenticated:
            pass  # already expired or revoked at the gateway: nothing left to revoke
        c.session = None
        front.left_queued(session.account, len(c.queued(session.account)))
    clear_session(front.home)
    _emit(front, args, {"logged_out": True}, "logged out")


async def balance(front: Front, args: argparse.Namespace) -> None:
    async with _reader(front, args) as c:
        b = await c.balance(args.admin or "")
    _emit(front, args, {"account": b.account, "balance": format_amount(b.balance),
                        "available": format_amount(b.available), "currency": b.currency},
          f"{b.account}: {format_amount(b.balance)} {b.currency}"
          + (f" ({format_amount(b.available)} available)" if b.available != b.balance else ""))


async def history(front: Front, args: argparse.Namespace) -> None:
    async with _reader(front, args) as c:
        items = await c.history(args.admin or "", limit=args.limit)
    if args.json:
        _say(front, json.dumps([{"txn_id": i.txn_id, "counterparty": i.counterparty, "amount": format_amount(i.delta),
                                 "currency": i.currency, "applied_at": i.applied_at} for i in items]))
        return
    if not items:
        _say(front, "no payments yet")
    for i in items:
        when = datetime.fromtimestamp(i.applied_at).strftime("%Y-%m-%d %H:%M:%S")
        direction = "from" if i.delta > 0 else "to  "
        _say(front, f"{when}  {format_amount(i.delta):>12} {i.currency}  {direction} {i.counterparty}  {i.txn_id}")


async def pay(front: Front, args: argparse.Namespace) -> None:
    """Queue the payment durably, then send the queue; offline it stays queued and that is a success."""
    amount = parse_amount(args.amount)
    txn_id = args.id or str(uuid.uuid4())
    need_session(front)
    c = front.client
    try:
        entry = c.enqueue(args.to, amount, txn_id=txn_id)
    except MiniupiError as e:
        _failed_json(front, args, txn_id, e)
        raise
    report = await c.sync() if entry.pending else None
    for earlier in report.finished if report else ():
        if earlier.txn_id != txn_id:
            front.sent(earlier)
    entry = c.outbox.get(txn_id) or entry
    data = {"txn_id": txn_id, "to": entry.payee, "amount": format_amount(entry.amount), "currency": entry.currency}
    if entry.state == DONE:
        _emit(front, args, {**data, "state": entry.result}, describe.paid(entry))
    elif entry.state == FAILED:
        error = entry.error
        assert error is not None
        _failed_json(front, args, txn_id, error)
        raise error
    else:
        reason = report.stopped if report else None
        _emit(front, args, {**data, "state": "QUEUED", "reason": describe.reason(reason),
                            "next_attempt_at": entry.next_attempt_at}, describe.queued(reason))


async def deposit(front: Front, args: argparse.Namespace) -> None:
    """Issue money with the treasury certificate; the same --id never credits twice."""
    amount = parse_amount(args.amount)
    txn_id = validate.txn_id(args.id) if args.id else str(uuid.uuid4())
    async with AsyncClient(front.cluster, identity="treasury") as c:
        d = await c.deposit(args.account, amount, txn_id=txn_id)
    _emit(front, args, {"txn_id": d.txn_id, "account": d.account, "amount": format_amount(amount),
                        "balance": format_amount(d.balance), "currency": d.currency},
          f"deposited {format_amount(amount)} {d.currency} to {d.account} (txn {d.txn_id}); "
          f"balance {format_amount(d.balance)} {d.currency}")


async def queue(front: Front, args: argparse.Namespace) -> None:
    """What the outbox holds; local only, so it answers in a tunnel too."""
    entries = front.outbox.recent(args.limit) if args.all else front.outbox.pending()
    if args.json:
        _say(front, json.dumps([describe.entry_json(e) for e in entries]))
        return
    if not entries:
        _say(front, "no payments in the outbox" if args.all else "no queued payments")
        return
    if not args.all:
        _say(front, f"{payments(len(entries))} queued, oldest first:")
    now = time.time()
    for e in entries:
        _say(front, describe.queue_line(e, now))


async def sync(front: Front, args: argparse.Namespace) -> None:
    """Send the account's queued payments now, one line per result; an error if any stay queued."""
    c = front.client
    session = c.session
    if session is None:
        raise Unauthenticated(f"not logged in; {front.tell('login USER@BANK')} ({payments(len(c.queued()))} queued)")
    report = await c.sync()
    others = [e for e in c.queued() if e.payer != session.account]
    if args.json:
        _say(front, json.dumps(describe.report_json(report)))
    else:
        for entry in report.finished:
            _say(front, describe.finished(entry))
        if not report.finished and report.stopped is None and not report.busy:
            _say(front, "nothing to send")
    for payer in sorted({e.payer for e in others}):
        front.note(f"{payments(sum(e.payer == payer for e in others))} from {payer} wait for {payer} to log in")
    if report.busy:
        raise Unavailable(f"another miniupi process is sending the outbox; {_stay(report.pending)}")
    if report.stopped is not None:
        message = report.stopped.message
        if isinstance(report.stopped, Unauthenticated) and "miniupi login" not in message:
            message += f" ({front.tell(f'login {session.account}')})"
        raise type(report.stopped)(f"{message}; {_stay(report.pending)}")


# -- the parsers ---------------------------------------------------------------------


def _txn_id(p: VerbParser) -> None:
    p.add_argument("--id", metavar="UUID", help="transaction id (default: a new UUID4); reuse it to retry safely")


def _admin(p: VerbParser) -> None:
    p.add_argument("--admin", metavar="ACCOUNT", help="read ACCOUNT with the admin certificate")


def _build() -> dict[str, Verb]:
    verbs: list[Verb] = []

    p = VerbParser("register", "open an account")
    p.add_argument("account", metavar="USER@BANK", help="the new account, such as alice@bank_a")
    p.add_argument("--initial", default="0", metavar="AMOUNT", help="opening deposit, such as 500.00")
    verbs.append(Verb(p, register, uses_home=True, asks_password=True))

    p = VerbParser("login", "log in and keep the session key in the client home")
    p.add_argument("account", metavar="USER@BANK", help="your account, such as alice@bank_a")
    verbs.append(Verb(p, login, uses_home=True, asks_password=True))

    verbs.append(Verb(VerbParser("logout", "revoke the session; queued payments stay queued"), logout,
                      uses_home=True))

    p = VerbParser("balance", "your balance")
    _admin(p)
    verbs.append(Verb(p, balance, uses_home=True))

    p = VerbParser("history", "your applied payments, newest first")
    _admin(p)
    p.add_argument("--limit", type=count(HISTORY_MAX), default=20, metavar="N",
                   help=f"how many, 1 to {HISTORY_MAX} (default 20)")
    verbs.append(Verb(p, history, uses_home=True))

    p = VerbParser("pay", "pay another account; queued if the gateway is unreachable")
    p.add_argument("to", metavar="TO", help="payee, user@bank")
    p.add_argument("amount", metavar="AMOUNT", help="such as 125.50")
    _txn_id(p)
    verbs.append(Verb(p, pay, uses_home=True))

    p = VerbParser("deposit", "issue money to an account with the treasury certificate")
    p.add_argument("account", metavar="ACCOUNT", help="the account credited, user@bank")
    p.add_argument("amount", metavar="AMOUNT", help="such as 500.00")
    _txn_id(p)
    verbs.append(Verb(p, deposit, uses_home=False))

    p = VerbParser("queue", "payments waiting in the outbox, with attempts and next attempt time")
    p.add_argument("--all", action="store_true", help="also the latest done and failed payments")
    p.add_argument("--limit", type=count(QUEUE_MAX), default=50, metavar="N",
                   help=f"with --all: how many, 1 to {QUEUE_MAX} (default 50)")
    verbs.append(Verb(p, queue, uses_home=True))

    verbs.append(Verb(VerbParser("sync", "send the queued payments now and report each result"), sync,
                      uses_home=True))
    for verb in verbs:
        verb.parser.add_argument("--json", action="store_true", help="machine-readable output")
    return {verb.name: verb for verb in verbs}


# Every customer verb, by the name typed at the command line and in the REPL.
VERBS: dict[str, Verb] = _build()
