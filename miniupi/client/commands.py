"""The customer's verbs at the command line: register, login, balance, pay, ..."""
from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from datetime import datetime
from typing import Any

from miniupi.client.api import Client
from miniupi.client.home import clear_session, client_home, load_session, save_session
from miniupi.config import ClusterConfig
from miniupi.errors import InvalidArgument, MiniupiError, Unauthenticated
from miniupi.money import format_amount, parse_amount


def read_password(args: argparse.Namespace, confirm: bool = False) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if confirm and sys.stdin.isatty() and getpass.getpass("again: ") != password:
            raise InvalidArgument("the passwords do not match")
    if not password:
        raise InvalidArgument("empty password")
    return password


def emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data) if args.json else text)


def _client(cluster: ClusterConfig, args: argparse.Namespace, need_session: bool = True) -> Client:
    session = load_session(client_home(args.home))
    if need_session:
        if session is None:
            raise Unauthenticated("not logged in; run: miniupi login USER@BANK")
        if session.expires_at < time.time():
            raise Unauthenticated(f"session for {session.account} expired; run: miniupi login {session.account}")
    return Client(cluster, session=session)


def register(cluster: ClusterConfig, args: argparse.Namespace) -> None:
    initial = parse_amount(args.initial)
    password = read_password(args, confirm=True)
    with _client(cluster, args, need_session=False) as c:
        b = c.register(args.account, password, initial)
    emit(args, {"account": b.account, "balance": format_amount(b.balance), "currency": b.currency},
         f"registered {b.account} with {format_amount(b.balance)} {b.currency}")


def login(cluster: ClusterConfig, args: argparse.Namespace) -> None:
    password = read_password(args)
    with _client(cluster, args, need_session=False) as c:
        session = c.login(args.account, password)
    save_session(client_home(args.home), session)
    until = datetime.fromtimestamp(session.expires_at).strftime("%Y-%m-%d %H:%M")
    emit(args, {"account": session.account, "expires_at": session.expires_at},
         f"logged in as {session.account} (until {until})")


def logout(cluster: ClusterConfig, args: argparse.Namespace) -> None:
    home = client_home(args.home)
    session = load_session(home)
    if session is not None:
        try:
            with Client(cluster, session=session) as c:
                c.logout()
        except Unauthenticated:
            pass  # already expired or revoked at the gateway: nothing left to revoke
    clear_session(home)
    emit(args, {"logged_out": True}, "logged out")


def _reader(cluster: ClusterConfig, args: argparse.Namespace) -> Client:
    """The admin certificate for --admin ACCOUNT, else the customer's own session."""
    if args.admin:
        return Client(cluster, identity="admin")
    return _client(cluster, args)


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


def pay(cluster: ClusterConfig, args: argparse.Namespace) -> None:
    import uuid

    amount = parse_amount(args.amount)
    txn_id = args.id or str(uuid.uuid4())
    with _client(cluster, args) as c:
        try:
            result = c.pay(args.to, amount, txn_id=txn_id)
        except MiniupiError as e:
            if args.json:
                print(json.dumps({"txn_id": txn_id, "state": "FAILED", "code": e.code, "error": e.message}))
            raise
    emit(args, {"txn_id": result.txn_id, "state": result.state, "to": args.to, "amount": format_amount(amount),
                "currency": cluster.currency},
         f"paid {format_amount(amount)} {cluster.currency} to {args.to} (txn {result.txn_id})")
