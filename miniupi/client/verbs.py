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
import math
import shlex
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, NoReturn, Protocol, TextIO

from miniupi import validate
from miniupi.client import describe
from miniupi.client.api import AsyncClient, Transaction, is_transport_failure
from miniupi.client.home import clear_session, save_session
from miniupi.client.outbox import DONE, FAILED, Outbox, OutboxEntry
from miniupi.config import ClusterConfig
from miniupi.errors import (
    Internal,
    InvalidAmount,
    InvalidArgument,
    MiniupiError,
    NoAnswer,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from miniupi.inputs import HISTORY_MAX, QUEUE_MAX, count, duration, history_cursor, point_in_time
from miniupi.money import format_amount, parse_amount

# The longest a collect request may wait for its payer: the gateway's bound (MAX_EXPIRY_S in nodes/collect.py).
REQUEST_MAX_EXPIRY_S = 7 * 24 * 3600


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
    """A page of history, newest first; its last line says how to ask for the older ones."""
    async with _reader(front, args) as c:
        page = await c.history_page(args.admin or "", limit=args.limit, before=args.before or "")
    items = page.items
    if args.json:
        _say(front, json.dumps({"entries": [
            {"txn_id": i.txn_id, "counterparty": i.counterparty, "amount": format_amount(i.delta),
             "currency": i.currency, "applied_at": i.applied_at, "refund_of": i.refund_of or None,
             "refunds": list(i.refunds), "request_id": i.request_id or None} for i in items],
            "next_cursor": page.next_cursor or None}))
        return
    if not items:
        _say(front, "no older payments" if args.before else "no payments yet")
    for i in items:
        when = datetime.fromtimestamp(i.applied_at).strftime("%Y-%m-%d %H:%M:%S")
        direction = "from" if i.delta > 0 else "to  "
        links = [f"refund of {i.refund_of}"] if i.refund_of else []
        links += [f"refunded by {', '.join(i.refunds)}"] if i.refunds else []
        links += ["a collect request"] if i.request_id else []
        _say(front, f"{when}  {format_amount(i.delta):>12} {i.currency}  {direction} {i.counterparty}  {i.txn_id}"
             + (f"  ({'; '.join(links)})" if links else ""))
    if page.next_cursor:
        admin = f" --admin {args.admin}" if args.admin else ""
        _say(front, f"older payments: {front.tell(f'history{admin} --limit {args.limit} --before {page.next_cursor}')}")


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


async def txn(front: Front, args: argparse.Namespace) -> None:
    """A transaction's state; one this client's outbox still holds is QUEUED, told without the gateway."""
    txn_id = validate.txn_id(args.txn_id)
    entry = None if args.admin else front.outbox.get(txn_id)
    if entry is not None and entry.pending:
        _emit(front, args, describe.outbox_transaction_json(entry), "\n".join(describe.queued_transaction(entry)))
        return
    try:
        async with _reader(front, args) as c:
            t = await c.transaction(txn_id)
    except NotFound:
        if entry is not None and entry.state == FAILED:  # refused before the gateway recorded it
            _emit(front, args, describe.outbox_transaction_json(entry), "\n".join(describe.refused_transaction(entry)))
            return
        raise
    _emit(front, args, describe.transaction_json(t), "\n".join(describe.transaction(t)))


def _retry_hint(front: Front, e: NoAnswer, what: str, command: str) -> NoAnswer:
    """No answer: whether it arrived is unknown, and the same id is the safe way to try again."""
    return NoAnswer(f"{e.message}; try again with the same id, which cannot {what} twice ({front.tell(command)})")


async def refund(front: Front, args: argparse.Namespace) -> None:
    """Give back all or part of a payment made to me; the same --id never refunds twice."""
    txn_id = validate.txn_id(args.txn_id)
    refund_id = validate.txn_id(args.id) if args.id else str(uuid.uuid4())
    amount = 0  # all that is left
    if args.amount is not None:
        amount = parse_amount(args.amount)
        if amount == 0:  # 0 on the wire means all that is left: never what someone typing 0 meant
            raise InvalidAmount("amount must be positive (leave it out to refund all that is left)")
    need_session(front)
    await send_queued_first(front)
    c = front.client
    try:
        result = await c.refund(txn_id, amount, refund_id=refund_id)
    except NoAnswer as e:
        raise _retry_hint(front, e, "refund", f"refund {txn_id}{f' {args.amount}' if args.amount else ''} "
                                              f"--id {refund_id}") from None
    original: Transaction | None = None
    with contextlib.suppress(MiniupiError):  # the refund is made; the original only names who got it back
        original = await c.transaction(txn_id)
    item = next((r for r in original.refunds if r.txn_id == result.txn_id), None) if original else None
    currency = original.currency if original else front.cluster.currency
    refunded = item.amount if item else amount
    data = {"refund_id": result.txn_id, "txn_id": txn_id, "state": result.state,
            "amount": format_amount(refunded) if refunded else None, "currency": currency,
            "to": original.payer if original else None,
            "refunded": format_amount(original.refunded) if original else None,
            "payment_amount": format_amount(original.amount) if original else None}
    text = f"refunded {f'{format_amount(refunded)} {currency} of ' if refunded else ''}{txn_id}"
    if original:
        text += f" to {original.payer} (refund {result.txn_id}); " \
                f"{format_amount(original.refunded)} of {format_amount(original.amount)} {currency} refunded in all"
    else:
        text += f" (refund {result.txn_id})"
    _emit(front, args, data, text)


async def request(front: Front, args: argparse.Namespace) -> None:
    """Ask another account for money; the same --id asks once."""
    amount = parse_amount(args.amount)
    request_id = validate.txn_id(args.id) if args.id else str(uuid.uuid4())
    need_session(front)
    await send_queued_first(front)
    try:
        r = await front.client.request_money(args.account, amount, note=args.note, expires_in_s=args.expires or 0,
                                             request_id=request_id)
    except NoAnswer as e:
        note = f" --note {shlex.quote(args.note)}" if args.note else ""  # part of what the same id must repeat
        raise _retry_hint(front, e, "ask", f"request {args.account} {args.amount}{note} --id {request_id}") from None
    _emit(front, args, describe.request_json(r), describe.requested(r))


async def requests(front: Front, args: argparse.Namespace) -> None:
    """Open collect requests to me and from me, oldest first."""
    me = need_session(front)
    await send_queued_first(front)
    open_requests = await front.client.requests()
    if args.json:
        _say(front, json.dumps([describe.request_json(r, me) for r in open_requests]))
        return
    if not open_requests:
        _say(front, "no open requests")
    now = time.time()
    for r in open_requests:
        _say(front, describe.open_request(r, me, now))


def _request_id(text: str) -> str:
    try:
        return validate.txn_id(text)
    except InvalidArgument:
        raise InvalidArgument(f"request id is not a UUID as `miniupi requests` shows it: {text[:64]!r}") from None


async def approve(front: Front, args: argparse.Namespace) -> None:
    """Pay a request asked of me; approving again pays nothing more and answers the same."""
    request_id = _request_id(args.request_id)
    need_session(front)
    await send_queued_first(front)
    c = front.client
    try:
        result = await c.approve(request_id)
    except NoAnswer as e:
        raise _retry_hint(front, e, "pay", f"approve {request_id}") from None
    paid: Transaction | None = None
    with contextlib.suppress(MiniupiError):  # paid; the payment's record only names the payee and the amount
        paid = await c.transaction(result.txn_id)
    data: dict[str, Any] = {"txn_id": result.txn_id, "request_id": request_id, "state": result.state}
    if paid is None:
        _emit(front, args, data, f"paid request {request_id} (txn {result.txn_id})")
        return
    _emit(front, args, {**data, "to": paid.payee, "amount": format_amount(paid.amount), "currency": paid.currency},
          f"paid {format_amount(paid.amount)} {paid.currency} to {paid.payee} (txn {result.txn_id})")


async def decline(front: Front, args: argparse.Namespace) -> None:
    request_id = _request_id(args.request_id)
    need_session(front)
    await send_queued_first(front)
    r = await front.client.decline(request_id)
    _emit(front, args, describe.request_json(r), describe.declined(r))


def _window_end(option: str, moment: datetime | None, zone: tzinfo) -> float | None:
    """--since or --until as Unix seconds, in the cluster's zone unless it carries an offset.

    Refused unless the report can show it: after the epoch (0 on the wire leaves that end open, so
    --until at the epoch would report everything) and within the years a date has in the cluster's zone.
    """
    if moment is None:
        return None
    ts = (moment if moment.tzinfo else moment.replace(tzinfo=zone)).timestamp()
    try:
        datetime.fromtimestamp(ts, zone)
    except (OverflowError, ValueError, OSError):
        ts = math.inf
    if not 0 < ts < math.inf:
        raise InvalidArgument(f"{option} must be after 1970-01-01T00:00Z and before the year 10000 in {zone}, "
                              f"not {moment.isoformat()}")
    return ts


async def settlement(front: Front, args: argparse.Namespace) -> None:
    """What the banks owe each other, with the admin certificate; times are the cluster's time zone's."""
    zone = front.cluster.zone
    since, until = _window_end("--since", args.since, zone), _window_end("--until", args.until, zone)
    if since is not None and until is not None and until <= since:
        raise InvalidArgument("--until must be after --since")
    async with AsyncClient(front.cluster, identity="admin") as c:
        report = await c.settlement(since or 0.0, until or 0.0)
    _emit(front, args, describe.settlement_json(report, zone), "\n".join(describe.settlement(report, zone)))
    total = sum(report.net.values())
    if total:  # the gateway broke its own invariant: say so in the exit code too
        raise Internal(f"the net positions sum to {format_amount(total)} {report.currency}, not zero")


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

    p = VerbParser("history", "your applied payments, newest first, a page at a time")
    _admin(p)
    p.add_argument("--limit", type=count(HISTORY_MAX), default=20, metavar="N",
                   help=f"how many, 1 to {HISTORY_MAX} (default 20)")
    p.add_argument("--before", type=history_cursor, metavar="CURSOR",
                   help="the older payments: the cursor the last line of a page gives")
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

    p = VerbParser("txn", "a transaction's state, amount, parties, times and refunds; QUEUED while in the outbox")
    p.add_argument("txn_id", metavar="TXN_ID", help="the transaction id, as pay, history or queue show it")
    p.add_argument("--admin", action="store_true", help="read any transaction with the admin certificate")
    verbs.append(Verb(p, txn, uses_home=True))

    p = VerbParser("refund", "give back all or part of a payment made to you")
    p.add_argument("txn_id", metavar="TXN_ID", help="the payment to give back")
    p.add_argument("amount", metavar="AMOUNT", nargs="?", help="such as 10.00 (default: all that is left)")
    p.add_argument("--id", metavar="UUID", help="the refund's id (default: a new UUID4); reuse it to retry safely")
    verbs.append(Verb(p, refund, uses_home=True))

    p = VerbParser("request", "ask an account for money (a collect request)")
    p.add_argument("account", metavar="FROM_ACCOUNT", help="who is asked to pay, user@bank")
    p.add_argument("amount", metavar="AMOUNT", help="such as 12.00")
    p.add_argument("--note", default="", metavar="TEXT", help="shown to the payer, at most 140 characters")
    p.add_argument("--expires", type=duration(REQUEST_MAX_EXPIRY_S), metavar="DURATION",
                   help="how long it may be approved, such as 90s, 15m, 2h or 7d (default 15m, at most 7d)")
    p.add_argument("--id", metavar="UUID", help="the request's id (default: a new UUID4); reuse it to retry safely")
    verbs.append(Verb(p, request, uses_home=True))

    verbs.append(Verb(VerbParser("requests", "open collect requests to you and from you"), requests,
                      uses_home=True))

    p = VerbParser("approve", "pay a collect request asked of you; approving again pays nothing more")
    p.add_argument("request_id", metavar="REQUEST_ID", help="as requests shows it")
    verbs.append(Verb(p, approve, uses_home=True))

    p = VerbParser("decline", "refuse a collect request asked of you")
    p.add_argument("request_id", metavar="REQUEST_ID", help="as requests shows it")
    verbs.append(Verb(p, decline, uses_home=True))

    p = VerbParser("settlement", "what the banks owe each other for the payments committed in a window (admin)")
    p.add_argument("--since", type=point_in_time, metavar="TIME",
                   help="from this date or time, such as 2026-12-06 or 2026-12-06T10:30, in the cluster's "
                        "time_zone unless it carries an offset (default: the start)")
    p.add_argument("--until", type=point_in_time, metavar="TIME", help="up to, not including, this one (default: now)")
    verbs.append(Verb(p, settlement, uses_home=False))
    for verb in verbs:
        verb.parser.add_argument("--json", action="store_true", help="machine-readable output")
    return {verb.name: verb for verb in verbs}


# Every customer verb, by the name typed at the command line and in the REPL.
VERBS: dict[str, Verb] = _build()
