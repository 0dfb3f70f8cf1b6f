"""Security, arithmetic: no account passes the cluster's max_balance, and no amount gets UNKNOWN.

DESIGN.md section 3: "no amount, however large, overflows a balance". A
bank checks each credit at prepare against the balance plus the credits
it already holds in flight, so parallel payments cannot together carry an
account past the ceiling; the gateway refuses a Pay above the ceiling
before any bank holds anything; a setup file above it stops the bank.
The ceiling here is a small 1000.00 so the payments can reach it.
"""
from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Iterator

import grpc
import pytest

from miniupi.contract.identity import SESSION_METADATA_KEY
from miniupi.client.api import AsyncClient
from miniupi.errors import MiniupiError
from miniupi.nodes.server import NodeStartError
from miniupi.ops.testing import LocalCluster
from miniupi.tls import channel_credentials
from miniupi.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from conftest import bank_account

pytestmark = pytest.mark.timeout(120)

CEILING = 1000_00
SPEC = {
    "cluster": {"name": "sec-ceiling", "prepare_timeout_s": 5, "call_timeout_s": 5, "max_balance": "1000.00"},
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
}
SETUP = {"bank_a": {"payer": ("1000.00", "payer-pw")}, "bank_b": {"near": ("900.00", "near-pw")}}
PAYMENTS, AMOUNT = 40, 5_00
INT64_MAX = 2**63 - 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("sec_ceiling"), SPEC, accounts=SETUP) as c:
        yield c


def test_parallel_credits_stop_at_the_ceiling_and_every_answer_is_committed_or_failed_precondition(
        cluster: LocalCluster) -> None:
    async def pay_all() -> list[str]:
        async with AsyncClient(cluster.config) as payer:
            await payer.login("payer@bank_a", "payer-pw")

            async def pay() -> str:
                try:
                    return (await payer.pay("near@bank_b", AMOUNT)).state
                except MiniupiError as e:  # UNKNOWN arrives as the base class, with code "UNKNOWN"
                    return f"{e.code}: {e.message}"

            return await asyncio.gather(*(pay() for _ in range(PAYMENTS)))

    answers = asyncio.run(pay_all())

    committed = answers.count("COMMITTED")
    refused = [a for a in answers if a != "COMMITTED"]
    assert all(a.startswith("FAILED_PRECONDITION: account near@bank_b would exceed its ceiling of 1000.00 INR")
               for a in refused), set(refused)
    # Every payment that fitted went through: refusals came only once the room was taken.
    assert committed == (CEILING - 900_00) // AMOUNT
    with cluster.client() as c:
        c.login("near@bank_b", "near-pw")
        assert c.balance().balance == CEILING  # Balance waits for the decisions on their way to bank_b
    assert bank_account(cluster, "bank_b", "near") == (CEILING, 0)
    audit = cluster.cli("audit")
    assert audit.returncode == 0, (audit.stdout, audit.stderr)


# -(2**63) is also what a client's 2**63 becomes on the wire: an int64 varint wraps around.
@pytest.mark.parametrize("minor", [CEILING + 1, INT64_MAX, -1, -(2**63), 0])
def test_pay_outside_one_to_the_ceiling_is_invalid_argument_before_any_bank_holds_anything(
        cluster: LocalCluster, minor: int) -> None:
    with cluster.client() as c:
        key = c.login("payer@bank_a", "payer-pw").key
    before = bank_account(cluster, "bank_a", "payer")
    with grpc.secure_channel(cluster.config.gateway.address,
                             channel_credentials(cluster.config.certs_dir, "client")) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            gateway_pb2_grpc.GatewayStub(channel).Pay(
                gateway_pb2.PayRequest(txn_id=str(uuid.uuid4()), to_account="near@bank_b",
                                       amount=common_pb2.Money(minor=minor, currency="INR")),
                metadata=((SESSION_METADATA_KEY, key),), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value
    assert "1000.00" in refused.value.details() or "positive" in refused.value.details()
    assert bank_account(cluster, "bank_a", "payer") == before


def test_a_setup_file_above_the_ceiling_stops_the_bank_with_one_line_and_opens_nothing(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("sec_ceiling_setup")
    over = LocalCluster(root, SPEC, accounts={"bank_a": {"fine": ("10.00", "pw"), "rich": ("1000.01", "pw")}})

    done = over.cli("bank", "--name", "bank_a", timeout=30)

    assert done.returncode == NodeStartError.exit_code  # could not start: supervisord does not retry it
    assert done.stderr.strip().splitlines() == [
        f"miniupi: {root / 'accounts_bank_a.toml'}: key 'accounts.rich.balance': "
        "expected at most the cluster's max_balance, 1000.00"], done.stderr
    [db] = (over.config.data_dir / "bank_a").glob("*.sqlite3")
    with sqlite3.connect(db) as store:
        tables = [t for (t,) in store.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert all(store.execute(f"SELECT COUNT(*) FROM {t}").fetchone() == (0,) for t in tables), tables
