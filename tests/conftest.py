"""Shared helpers for the cluster tests: fresh accounts, bounded waits, log reading, paths.

The folders mirror the package (contract/, nodes/, plugins/, client/, ops/)
plus security/ for the attacks that cross them. Clusters boot one way, the
shipped one: miniupi.ops.testing.LocalCluster (directly for a module's own
cluster, or through the `miniupi_cluster` fixture), which is `miniupi run`
under supervisord; every test talks real gRPC over real mTLS to real node
processes, and nothing is mocked.
"""
from __future__ import annotations

import contextlib
import os
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from miniupi.client.api import Client
from miniupi.errors import MiniupiError
from miniupi.ops.testing import LocalCluster
from miniupi.tls import dial
from miniupi.v1 import bank_pb2, bank_pb2_grpc

T = TypeVar("T")
PASSWORD = "pw-for-tests"
TESTS_DIR = Path(__file__).resolve().parent
ROOT = TESTS_DIR.parent  # the repository
# The suite's own plugins (fault injection, recorders), loaded by clusters through `[plugins] load`.
PLUGIN_DIR = TESTS_DIR / "plugins"


def unique_name(prefix: str = "u") -> str:
    """A fresh account name (lower-case letters, digits, _; at most 32 chars)."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"



def refusal(call: Callable[[], object]) -> MiniupiError:
    """The refusal `call` raises (it must raise one)."""
    try:
        got = call()
    except MiniupiError as e:
        return e
    pytest.fail(f"expected a refusal, got {got}")

@contextlib.contextmanager
def cluster_with_test_plugins(root: Path, spec: dict, **kwargs: Any) -> Iterator[LocalCluster]:
    """A LocalCluster whose nodes can load the suite's plugins (tests/plugins) through `[plugins] load`;
    `kwargs` go to LocalCluster (postgres=...)."""
    with pytest.MonkeyPatch.context() as env:
        # Before boot: supervisord passes it to every node.
        env.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")])))
        with LocalCluster(root, spec, **kwargs) as c:
            yield c


def two_gateways(name: str, lease_s: float = 5.0) -> dict[str, Any]:
    """A cluster spec of two gateways sharing PostgreSQL (pass postgres= to the cluster), a bank on
    SQLite and one on JSON, and the fault plugin."""
    return {
        "cluster": {"name": name, "prepare_timeout_s": 3, "call_timeout_s": 3, "gateway_lease_s": lease_s,
                    "max_opening_deposit": "10000.00"},
        "gateways": {"gw1": {"storage": "postgres"}, "gw2": {"storage": "postgres"}},
        "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
        "plugins": {"load": ["faults"]},
    }


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


def alive(pid: int) -> bool:
    """Whether a process with this id exists (a zombie counts until it is reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


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
    """A channel as the admin that, like every miniupi client, reaches only `bank` itself."""
    return dial(cluster.config.certs_dir, "admin", bank, cluster.config.node(bank).address, aio=False)


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


def cli_fails(cluster: LocalCluster, *args: str, home: Path, input: str | None = None) -> str:
    """Run the command line; it must fail with exactly one 'miniupi: ...' line on stderr and no traceback.
    Returns that line."""
    r = cluster.cli(*args, input=input, home=home)
    assert r.returncode != 0, (args, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("miniupi: "), (args, r.stderr)
    return lines[0]


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


def log_lines(cluster: LocalCluster, node: str) -> list[str]:
    """Every line the node has logged: its file, and its stdout as supervisord relays it (cluster.log).

    The file sink is buffered (miniupi/nodes/logs.py), so while the node runs its newest lines may be on
    stdout only, which the node flushes every 0.2 s. Together they are the node's whole log.
    """
    path = cluster.config.node(node).data_dir / f"{node}.log"
    in_file = path.read_text(errors="replace").splitlines() if path.exists() else []
    # stdout lines read "DATE TIME LEVEL NODE MESSAGE"; supervisord's own lines name no node.
    on_stdout = [line for line in cluster.log_path.read_text(errors="replace").splitlines()
                 if line.split(maxsplit=4)[3:4] == [node]]
    return in_file + on_stdout


def lines_with(cluster: LocalCluster, node: str, *needles: str) -> list[str]:
    """The node's log lines that contain every needle, each line once."""
    return list(dict.fromkeys(line for line in log_lines(cluster, node) if all(n in line for n in needles)))


def wait_logged(cluster: LocalCluster, node: str, needle: str, timeout_s: float = 10.0) -> None:
    """Wait until `needle` is in the node's log. A node logs its calls in order, so every
    line it logged before that one is there too."""
    deadline = time.monotonic() + timeout_s
    while not lines_with(cluster, node, needle):
        if time.monotonic() > deadline:
            pytest.fail(f"{needle!r} never reached the {node} log")
        time.sleep(0.05)


def presented_certificate(address: str, certs_dir: Path) -> bytes | None:
    """The DER certificate a node presents right now, or None while it does not listen.

    Read with verification off, so it works for the bad certificates too; it is
    only used to know that the restarted node serves the certificate we installed.
    """
    host, port = address.rsplit(":", 1)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.load_cert_chain(certs_dir / "admin.pem", certs_dir / "admin.key")
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, int(port)), timeout=1) as sock, \
                context.wrap_socket(sock, server_hostname=host) as tls:
            return tls.getpeercert(binary_form=True)
    except OSError:
        return None
