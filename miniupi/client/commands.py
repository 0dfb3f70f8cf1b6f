"""The customer's verbs at the command line: register, login, balance, pay, queue, sync, ...
and the operators': balance and history --admin, deposit (the treasury).

Every payment goes through the outbox in the client home (outbox.py): it is
queued durably, then sent. Every command that talks to the gateway as the
customer first sends what the outbox holds for them, reporting those
results on stderr so that stdout stays the command's own answer.
"""
from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
import uuid
import warnings
from datetime import datetime
from typing import Any

from miniupi.client import describe
from miniupi.client.api import Client, is_transport_failure
from miniupi.backoff import RetryPolicy
from miniupi.client.home import clear_session, client_home, load_session, save_session
from miniupi.client.outbox import DONE, FAILED, Outbox
from miniupi.config import ClusterConfig
from miniupi.errors import InvalidArgument, MiniupiError, Unauthenticated, Unavailable
from miniupi.money import format_amount, parse_amount
from miniupi import validate


def read_password(args: argparse.Namespace, confirm: bool = False) -> str:
    """One line of standard input with --password-stdin, else asked on the terminal without echo."""
    if args.password_stdin:
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
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", getpass.GetPassWarning)
        try:
            return getpass.getpass(prompt)
        except getpass.GetPassWarning:
            raise InvalidArgument("no terminal to ask for the password; give it with --password-stdin") from None
        except EOFError:  # Ctrl-D at the prompt
            if sys.stderr.isatty():
                print(file=sys.stderr)  # getpass leaves the cursor after the prompt
            raise InvalidArgument("no password given") from None


def emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data) if args.json else text)


def _client(cluster: ClusterConfig, args: argparse.Namespace, need_session: bool = True) -> Client:
    home = client_home(args.home)
    session = load_session(home)
    if need_session:
        if session is None:
            raise Unauthenticated("not logged in; run: miniupi login USER@BANK")
        if session.expires_at < time.time():
            raise Unauthenticated(f"session for {session.account} expired; run: miniupi login {session.account}")
    return Client(cluster, session=session, outbox=Outbox.in_home(home), retry=RetryPolicy.from_env())


def _send_queued_first(c: Client) -> None:
    """Send the account's queued payments before the command's own call.

    If the gateway cannot be reached, say so now rather than wait for a
    second timeout on the command's own call.
    """
    if c.session is None or c.session.expires_at < time.time() or not c.queued(c.session.account):
        return
    report = c.sync(wait_s=0)  # another process already sending: leave it to that one
    for entry in report.finished:
        print(f"sent from the queue: {describe.finished(entry)}", file=sys.stderr)
    if is_transport_failure(report.stopped):
        assert report.stopped is not None
        raise report.stopped


def _queued_hint(c: Client, account: str) -> None:
    waiting = len(c.queued(account))
    if waiting:
        print(f"{_payments(waiting)} from {account} queued: they go with your next command, or run: miniupi sync",
              file=sys.stderr)


def _payments(n: int) -> str:
    return f"{n} payment" + ("" if n == 1 else "s")


def _stay(n: int) -> str:
    return f"{_payments(n)} {'stays' if n == 1 else 'stay'} queued"


def register(cluster: ClusterConfig, args: argparse.Namespace) -> None:
    initial = parse_amount(args.initial)
    password = read_password(args, confirm=True)
    with _client(cluster, args, need_session=False) as c:
        _send_queued_first(c)
        b = c.register(args.account, password, initial)
    emit(args, {"account": b.account, "balance": format_amount(b.balance), "currency": b.currency},
         f"registered {b.account} with {format_amount(b.balance)} {b.currency}")


def login(cluster: ClusterConfig, args: argparse.Namespace) -> None:
    home = client_home(args.home)  # a home we cannot use is refused before the password is asked for
    password = read_password(args)
    with _client(cluster, args, need_session=False) as c:
        session = c.login(args.account, password)
        save_session(home, session)
        until = datetime.fromtimestamp(session.expires_at).strftime("%Y-%m-%d %H:%M")
        emit(args, {"account": session.account, "expires_at": session.expires_at},
             f"logged in as {session.account} (until {until})")
        _queued_hint(c, session.account)


def logout(cluster: ClusterConfig, args: argparse.Namespace) -> None:
    home = client_home(args.home)
    session = load_session(home)
    if session is not None:
        with _client(cluster, args, need_session=False) as c:
            _send_queued_first(c)
            try:
                c.logout()
            except Unauthenticated:
                pass  # already expired or revoked at the gateway: nothing left to revoke
            _queued_hint(c, session.account)
    clear_session(home)
    emit(args, {"logged_out": True}, "logged out")


def _reader(cluster: ClusterConfig, args: argparse.Namespace) -> Client:
    """The admin certificate for --admin ACCOUNT, else the customer's own session."""
    if args.admin:
        return Client(cluster, identity="admin")
    c = _client(cluster, args)
    try:
        _send_queued_first(c)
    except BaseException:
        c.close()
        raise
    return c


def balance(cluster: ClusterConfig, args: argparse.Namespace) -> None:
    with _reader(cluster, args) as c:
        b = c.balance(args.admin or "")
    emit(args, {"account": b.account, "balance": format_amount(b.balance), "available": format_amount(b.available),
                "currency": b.currency},
         f"{b.account}: {format_amount(b.balance)} {b.currency}"
         + (f" ({format_amount(b.available)} available)" if b.available != b.balance else ""))


def history(cluster: ClusterConfig, args: argparse.Namespace) -> None:
    with _reader(cluster, args) as c:
        items = c.history(args.admin or "", limit=args.limit)
    if args.json:
        print(json.dumps([{"txn_id": i.txn_id, "counterparty": i.counterparty, "amount": format_amount(i.delta),
                           "currency": i.currency, "applied_at": i.applied_at} for i in items]))
        return
    if not items:
        print("no payments yet")
    for i in items:
        when = datetime.fromtimestamp(i.applied_at).strftime("%Y-%m-%d %H:%M:%S")
        direction = "from" if i.delta > 0 else "to  "
        print(f"{when}  {format_amount(i.delta):>12} {i.currency}  {direction} {i.counterparty}  {i.txn_id}")


def deposit(cluster: ClusterConfig, args: argparse.Namespace) -> None:
    """Issue money with the treasury certificate; the same --id never credits twice."""
    amount = parse_amount(args.amount)
    txn_id = validate.txn_id(args.id) if args.id else str(uuid.uuid4())
    with Client(cluster, identity="treasury") as c:
        d = c.deposit(args.account, amount, txn_id=txn_id)
    emit(args, {"txn_id": d.txn_id, "account": d.account, "amount": format_amount(amount),
                "balance": format_amount(d.balance), "currency": d.currency},
         f"deposited {format_amount(amount)} {d.currency} to {d.account} (txn {d.txn_id}); "
         f"balance {format_amount(d.balance)} {d.currency}")


def _failed_json(args: argparse.Namespace, txn_id: str, e: MiniupiError) -> None:
    if args.json:
        print(json.dumps({"txn_id": txn_id, "state": "FAILED", "code": e.code, "error": e.message}))


def pay(cluster: ClusterConfig, args: argparse.Namespace) -> None:
    """Queue the payment durably, then send the queue; offline it stays queued and that is a success."""
    amount = parse_amount(args.amount)
    txn_id = args.id or str(uuid.uuid4())
    with _client(cluster, args) as c:
        try:
            entry = c.enqueue(args.to, amount, txn_id=txn_id)
        except MiniupiError as e:
            _failed_json(args, txn_id, e)
            raise
        report = c.sync() if entry.pending else None
        for earlier in report.finished if report else ():
            if earlier.txn_id != txn_id:
                print(f"sent from the queue: {describe.finished(earlier)}", file=sys.stderr)
        entry = c.outbox.get(txn_id) or entry
    data = {"txn_id": txn_id, "to": entry.payee, "amount": format_amount(entry.amount), "currency": entry.currency}
    if entry.state == DONE:
        emit(args, {**data, "state": entry.result}, describe.paid(entry))
    elif entry.state == FAILED:
        error = entry.error
        assert error is not None
        _failed_json(args, txn_id, error)
        raise error
    else:
        reason = report.stopped if report else None
        emit(args, {**data, "state": "QUEUED", "reason": describe.reason(reason),
                    "next_attempt_at": entry.next_attempt_at}, describe.queued(reason))


def queue(cluster: ClusterConfig, args: argparse.Namespace) -> None:
    """What the outbox holds; local only, so it answers in a tunnel too."""
    box = Outbox.in_home(client_home(args.home))
    try:
        entries = box.recent(args.limit) if args.all else box.pending()
    finally:
        box.close()
    if args.json:
        print(json.dumps([describe.entry_json(e) for e in entries]))
        return
    if not entries:
        print("no payments in the outbox" if args.all else "no queued payments")
        return
    if not args.all:
        print(f"{_payments(len(entries))} queued, oldest first:")
    now = time.time()
    for e in entries:
        print(describe.queue_line(e, now))


def sync(cluster: ClusterConfig, args: argparse.Namespace) -> None:
    """Send the account's queued payments now, one line per result; non-zero if any stay queued."""
    home = client_home(args.home)
    session = load_session(home)
    with Client(cluster, session=session, outbox=Outbox.in_home(home), retry=RetryPolicy.from_env()) as c:
        if session is None:
            raise Unauthenticated(f"not logged in; run: miniupi login USER@BANK ({_payments(len(c.queued()))} queued)")
        report = c.sync()
        others = [e for e in c.queued() if e.payer != session.account]
    if args.json:
        print(json.dumps(describe.report_json(report)))
    else:
        for entry in report.finished:
            print(describe.finished(entry))
        if not report.finished and report.stopped is None and not report.busy:
            print("nothing to send")
    for payer in sorted({e.payer for e in others}):
        count = sum(e.payer == payer for e in others)
        print(f"{_payments(count)} from {payer} wait for {payer} to log in", file=sys.stderr)
    if report.busy:
        raise Unavailable(f"another miniupi process is sending the outbox; {_stay(report.pending)}")
    if report.stopped is not None:
        message = report.stopped.message
        if isinstance(report.stopped, Unauthenticated) and "miniupi login" not in message:
            message += f" (miniupi login {session.account})"
        raise type(report.stopped)(f"{message}; {_stay(report.pending)}")


def client(cluster: ClusterConfig, args: argparse.Namespace) -> None:
    """The interactive REPL."""
    from miniupi.client.repl import run_repl

    retry = RetryPolicy.from_env(base_s=args.retry_base, cap_s=args.retry_cap)
    code = run_repl(cluster, client_home(args.home), retry)
    if code:
        raise SystemExit(code)
