"""Shared helpers for the cluster tests: booting, fresh accounts, bounded waits.

Every test here talks real gRPC over real mTLS to real node processes started
by `miniupi run` under supervisord; nothing is mocked.
"""
from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from miniupi.client.api import Client
from miniupi.testing import Accounts, LocalCluster
from miniupi.tls import channel_credentials
from miniupi.v1 import bank_pb2, bank_pb2_grpc

T = TypeVar("T")
PASSWORD = "pw-for-tests"


@contextlib.contextmanager
def running_cluster(root: Path, spec: Mapping[str, Any] | None = None,
                    accounts: Accounts | None = None) -> Iterator[LocalCluster]:
    """A LocalCluster for a whole module (boot costs ~1.5 s), stopped at the end."""
    with LocalCluster(root, spec, accounts=accounts) as cluster:
        yield cluster


def unique_name(prefix: str = "u") -> str:
    """A fresh account name (lower-case letters, digits, _; at most 32 chars)."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def wait_for(what: str, probe: Callable[[], T], timeout_s: float = 15.0, interval_s: float = 0.1) -> T:
    """Poll until probe() is truthy; fail naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def me(client: Client) -> str:
    """The address (user@bank) the client is logged in as."""
    assert client.session is not None
    return client.session.account


def money(client: Client) -> tuple[int, int]:
    """(balance, available) of the client's own account."""
    b = client.balance()
    return b.balance, b.available


def open_account(cluster: LocalCluster, bank: str, initial: int) -> str:
    """Register a fresh account with PASSWORD and `initial` minor units; returns user@bank."""
    account = f"{unique_name()}@{bank}"
    with cluster.client() as c:
        c.register(account, PASSWORD, initial)
    return account


def admin_bank(cluster: LocalCluster, bank: str) -> grpc.Channel:
    return grpc.secure_channel(cluster.config.node(bank).address,
                               channel_credentials(cluster.config.certs_dir, "admin"))


def bank_account(cluster: LocalCluster, bank: str, account: str) -> tuple[int, int] | None:
    """(balance, held) as the bank itself reports it, or None if there is no such account."""
    with admin_bank(cluster, bank) as channel:
        try:
            reply = bank_pb2_grpc.BankStub(channel).GetAccount(bank_pb2.AccountRequest(account=account),
                                                               timeout=5)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, e
            return None
    return reply.balance.minor, reply.held.minor


def cli_ok(cluster: LocalCluster, *args: str, home: Path, input: str | None = None) -> str:
    """Run the command line; it must succeed without a traceback. Returns stdout."""
    r = cluster.cli(*args, input=input, home=home)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    return r.stdout


def cli_login(cluster: LocalCluster, account: str, home: Path) -> None:
    assert f"logged in as {account}" in cli_ok(cluster, "login", account, "--password-stdin", home=home,
                                               input=PASSWORD + "\n")


@pytest.fixture
def new_user(cluster: LocalCluster) -> Iterator[Callable[..., Client]]:
    """Register a fresh account and hand back a Client logged in as it.

    Needs a `cluster` fixture in the test module. `client.session.account` is
    the new address (user@bank).
    """
    clients: list[Client] = []

    def make(bank: str = "bank_a", initial: int = 0, password: str = PASSWORD) -> Client:
        account = f"{unique_name()}@{bank}"
        client = cluster.client()
        clients.append(client)
        client.register(account, password, initial)
        client.login(account, password)
        return client

    yield make
    for client in clients:
        with contextlib.suppress(Exception):
            client.close()
