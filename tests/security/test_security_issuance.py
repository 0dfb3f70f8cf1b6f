"""Security, issuance: money enters only through issuance the audit can see.

DESIGN.md section 3: money comes from setup files, from opening deposits up
to the cluster's max_opening_deposit, and from deposits by the `treasury`
certificate, which may do nothing else. Customers and the admin never create
money, and `miniupi audit` checks that the balances add up to what was
issued. Every call here goes over mTLS to real nodes; each refusal is
followed by a look at the banks (as the admin) to see that nothing changed.
"""
from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from miniupi.contract.identity import SESSION_METADATA_KEY
from miniupi.nodes.passwords import hash_password
from miniupi.ops.testing import LocalCluster
from miniupi.tls import channel_credentials
from miniupi.v1 import bank_pb2, bank_pb2_grpc, common_pb2, gateway_pb2, gateway_pb2_grpc

from conftest import bank_account, unique_name, wait_for

pytestmark = pytest.mark.timeout(180)

CAP = 100_00
CEILING = 1_000_000_00
SPEC = {
    "cluster": {"name": "sec-issuance", "prepare_timeout_s": 2, "call_timeout_s": 5,
                "max_opening_deposit": "100.00", "max_balance": "1000000.00"},
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
}
SETUP = {"bank_a": {"alice": ("100.00", "alice-pw")}, "bank_b": {"bob": ("10.00", "bob-pw")}}
PASSWORDS = {"alice@bank_a": "alice-pw", "bob@bank_b": "bob-pw"}
TIMEOUT = 10.0
C = grpc.StatusCode


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("sec_issuance"), SPEC, accounts=SETUP) as c:
        yield c


def call(cluster: LocalCluster, node: str, method: str, request: Any, identity: str,
         key: str | None = None) -> tuple[grpc.StatusCode, Any, str]:
    """One raw call to `node` (the gateway or a bank) as `identity`: (code, reply, details)."""
    metadata = None if key is None else ((SESSION_METADATA_KEY, key),)
    with grpc.secure_channel(cluster.config.node(node).address,
                             channel_credentials(cluster.config.certs_dir, identity)) as channel:
        stub = (gateway_pb2_grpc.GatewayStub if node == "gateway" else bank_pb2_grpc.BankStub)(channel)
        try:
            reply = getattr(stub, method)(request, timeout=TIMEOUT, metadata=metadata)
            if method in ("ListTransactions", "Audit"):
                reply = list(reply)
            return C.OK, reply, ""
        except grpc.RpcError as e:
            return e.code(), None, e.details() or ""


def login(cluster: LocalCluster, account: str, password: str | None = None) -> str:
    code, reply, details = call(cluster, "gateway", "Login", gateway_pb2.LoginRequest(
        account=account, password=password or PASSWORDS[account]), "client")
    assert code == C.OK, details
    return reply.session_key


def inr(minor: int) -> common_pb2.Money:
    return common_pb2.Money(minor=minor, currency="INR")


def deposit(account: str, minor: int, txn_id: str | None = None) -> gateway_pb2.DepositRequest:
    return gateway_pb2.DepositRequest(txn_id=txn_id or str(uuid.uuid4()), account=account, amount=inr(minor))


def audit_json(cluster: LocalCluster, tmp_path: Path) -> dict[str, Any]:
    r = cluster.cli("audit", "--json", "--wait", "10", home=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, (r.stdout, r.stderr)
    report = json.loads(r.stdout)
    assert report["ok"] and report["violations"] == [], report
    return report


def everyones_money(cluster: LocalCluster) -> dict[str, tuple[int, int]]:
    """(balance, available) of the setup accounts, read as the admin through the gateway, which first
    lets the decisions on their way to a bank arrive."""
    out = {}
    for account in PASSWORDS:
        code, reply, details = call(cluster, "gateway", "Balance", gateway_pb2.BalanceRequest(account=account),
                                    "admin")
        assert code == C.OK, details
        out[account] = (reply.balance.minor, reply.available.minor)
    return out


def issued(cluster: LocalCluster, tmp_path: Path) -> tuple[int, int]:
    report = audit_json(cluster, tmp_path)
    assert report["total_minor"] == report["issued_minor"]
    return report["issued_minor"], report["issued_by_treasury_minor"]


# -- customers ------------------------------------------------------------------


@pytest.mark.parametrize("initial", [CAP + 1, 10**15])
def test_register_above_the_cap_is_refused_naming_the_cap_and_opens_nothing(
        cluster: LocalCluster, tmp_path: Path, initial: int) -> None:
    """10**15 paise were accepted from anyone with the client certificate, then spent."""
    before = issued(cluster, tmp_path)
    user = unique_name("rich")
    code, _, details = call(cluster, "gateway", "Register", gateway_pb2.RegisterRequest(
        account=f"{user}@bank_a", password="pw", initial=inr(initial)), "client")
    assert code == C.FAILED_PRECONDITION, details
    assert "capped at 100.00 INR" in details and "treasury" in details
    # The bank checks the cap as well, should anything but this gateway ask.
    code, _, details = call(cluster, "bank_a", "OpenAccount", bank_pb2.OpenAccountRequest(
        account=user, password="pw", initial=inr(initial)), "gateway")
    assert code == C.FAILED_PRECONDITION and "capped at 100.00 INR" in details, details
    assert bank_account(cluster, "bank_a", user) is None
    assert issued(cluster, tmp_path) == before


def test_register_at_the_cap_is_allowed(cluster: LocalCluster, tmp_path: Path) -> None:
    before, _ = issued(cluster, tmp_path)
    user = unique_name("capped")
    code, reply, details = call(cluster, "gateway", "Register", gateway_pb2.RegisterRequest(
        account=f"{user}@bank_b", password="pw", initial=inr(CAP)), "client")
    assert code == C.OK, details
    assert reply.balance.minor == CAP
    assert issued(cluster, tmp_path)[0] == before + CAP


def test_without_a_cap_accounts_open_at_zero(tmp_path_factory: pytest.TempPathFactory) -> None:
    spec = {**SPEC, "cluster": {"name": "no-cap", "prepare_timeout_s": 2, "call_timeout_s": 5}}
    with LocalCluster(tmp_path_factory.mktemp("sec_issuance_no_cap"), spec) as c:
        code, _, details = call(c, "gateway", "Register", gateway_pb2.RegisterRequest(
            account="eve@bank_a", password="pw", initial=inr(1)), "client")
        assert code == C.FAILED_PRECONDITION and "open at zero" in details, details
        assert bank_account(c, "bank_a", "eve") is None
        code, reply, details = call(c, "gateway", "Register", gateway_pb2.RegisterRequest(
            account="eve@bank_a", password="pw"), "client")
        assert code == C.OK and reply.balance.minor == 0, details


BANK_DOORS = {
    "OpenAccount": bank_pb2.OpenAccountRequest(account="minted", password="pw", initial=inr(1_000_000_00)),
    "OpenAccounts": bank_pb2.OpenAccountsRequest(accounts=["minted"], password_hash=hash_password("pw"),
                                                 initial=inr(1_000_000_00)),
    "Deposit": bank_pb2.BankDepositRequest(txn_id=str(uuid.uuid4()), account="alice", amount=inr(1_000_000_00)),
}


@pytest.mark.parametrize("identity", ["client", "admin", "treasury"])
def test_no_certificate_but_the_gateways_creates_money_at_a_bank(cluster: LocalCluster, identity: str) -> None:
    """The admin could bulk-open an account with a hash it chose and a balance, log in as it and pay."""
    before = everyones_money(cluster)
    answers = {method: call(cluster, "bank_a", method, request, identity)[0] for method, request in BANK_DOORS.items()}
    assert answers == {method: C.PERMISSION_DENIED for method in BANK_DOORS}
    assert bank_account(cluster, "bank_a", "minted") is None
    assert everyones_money(cluster) == before


def test_customers_and_the_admin_may_not_use_the_treasurys_doors(cluster: LocalCluster) -> None:
    before = everyones_money(cluster)
    key = login(cluster, "alice@bank_a")
    bulk = gateway_pb2.BulkOpenRequest(bank="bank_a", accounts=["minted"], password_hash=hash_password("pw"),
                                       initial=inr(1_000_000_00))
    answers = {
        (who, method): call(cluster, "gateway", method, request, identity, session)[0]
        for who, identity, session in (("customer", "client", key), ("admin", "admin", None))
        for method, request in (("Deposit", deposit("alice@bank_a", 1_000_000_00)), ("OpenAccounts", bulk))
    }
    assert answers == {k: C.PERMISSION_DENIED for k in answers}
    assert bank_account(cluster, "bank_a", "minted") is None
    assert everyones_money(cluster) == before


# -- the treasury -----------------------------------------------------------------


TREASURY_MAY_NOT = {
    "Register": gateway_pb2.RegisterRequest(account="x1@bank_a", password="pw"),
    "Login": gateway_pb2.LoginRequest(account="alice@bank_a", password="alice-pw"),
    "Balance": gateway_pb2.BalanceRequest(account="alice@bank_a"),
    "History": gateway_pb2.HistoryRequest(account="alice@bank_a"),
    "Pay": gateway_pb2.PayRequest(txn_id=str(uuid.uuid4()), from_account="alice@bank_a", to_account="bob@bank_b",
                                  amount=inr(1_00)),
    "GetDecision": gateway_pb2.GetDecisionRequest(txn_id=str(uuid.uuid4())),
    "ListTransactions": gateway_pb2.ListTransactionsRequest(),
    "Logout": gateway_pb2.LogoutRequest(),
}


@pytest.mark.parametrize("method", list(TREASURY_MAY_NOT))
def test_the_treasury_may_issue_money_and_do_nothing_else(cluster: LocalCluster, method: str) -> None:
    """A stolen treasury key mints money the audit shows; it reads no account and pays nothing."""
    before = everyones_money(cluster)
    code, _, details = call(cluster, "gateway", method, TREASURY_MAY_NOT[method], "treasury")
    assert code == C.PERMISSION_DENIED, details
    assert everyones_money(cluster) == before


def test_a_treasury_deposit_is_in_the_history_audited_and_conserved(cluster: LocalCluster, tmp_path: Path) -> None:
    issued_before, by_treasury_before = issued(cluster, tmp_path)
    carol = unique_name("carol")
    with cluster.client() as c:
        c.register(f"{carol}@bank_b", "carol-pw")
    txn_id = str(uuid.uuid4())
    with cluster.client("treasury") as t:
        done = t.deposit(f"{carol}@bank_b", 500_00, txn_id=txn_id)
    assert (done.txn_id, done.account, done.balance) == (txn_id, f"{carol}@bank_b", 500_00)

    with cluster.client() as c:
        c.login(f"{carol}@bank_b", "carol-pw")
        assert [(h.txn_id, h.counterparty, h.delta) for h in c.history()] == [(txn_id, "treasury", 500_00)]
        c.pay("alice@bank_a", 200_00)
        assert c.balance().balance == 300_00

    report = audit_json(cluster, tmp_path)
    assert report["total_minor"] == report["issued_minor"] == issued_before + 500_00
    assert report["issued_by_treasury_minor"] == by_treasury_before + 500_00
    assert report["deposits"] >= 1
    # Both nodes log the deposit with who asked, its id and its amount (read from their stdout,
    # which reaches cluster.log within 0.2 s; the log files are buffered).
    for node, caller in (("gateway", "treasury"), ("bank_b", "gateway")):
        wait_for(f"the deposit in {node}'s call log", lambda: any(
            f" {node} method=Deposit caller={caller} " in line and f"txn_id={txn_id}" in line
            and "amount=50000" in line and "code=OK" in line
            for line in cluster.log_path.read_text().splitlines()))


def test_a_deposit_is_once_per_id_and_the_same_id_for_anything_else_is_already_exists(
        cluster: LocalCluster, tmp_path: Path) -> None:
    txn_id = str(uuid.uuid4())
    first = call(cluster, "gateway", "Deposit", deposit("bob@bank_b", 7_00, txn_id), "treasury")
    assert first[0] == C.OK, first
    key = login(cluster, "bob@bank_b")
    paid = call(cluster, "gateway", "Pay", gateway_pb2.PayRequest(
        txn_id=str(uuid.uuid4()), from_account="bob@bank_b", to_account="alice@bank_a", amount=inr(1_00)),
        "client", key)
    assert paid[0] == C.OK, paid
    after_pay = everyones_money(cluster)

    again = call(cluster, "gateway", "Deposit", deposit("bob@bank_b", 7_00, txn_id), "treasury")
    assert again[0] == C.OK and again[1] == first[1]  # the stored answer, balance and all
    assert everyones_money(cluster) == after_pay  # credited once
    for other in (deposit("bob@bank_b", 7_01, txn_id), deposit("alice@bank_a", 7_00, txn_id)):
        code, _, details = call(cluster, "gateway", "Deposit", other, "treasury")
        assert code == C.ALREADY_EXISTS, details
    # An id a payment used at that bank is not a deposit's to take.
    code, _, details = call(cluster, "gateway", "Deposit", deposit("bob@bank_b", 7_00, paid[1].txn_id), "treasury")
    assert code == C.ALREADY_EXISTS, details
    assert everyones_money(cluster) == after_pay

    # A customer who saw the deposit's id in a history cannot pay with it either.
    reuse = call(cluster, "gateway", "Pay", gateway_pb2.PayRequest(
        txn_id=txn_id, from_account="bob@bank_b", to_account="alice@bank_a", amount=inr(1_00)), "client", key)
    assert reuse[0] != C.OK, reuse
    assert everyones_money(cluster) == after_pay
    audit_json(cluster, tmp_path)


def test_a_deposit_id_stays_bound_across_a_gateway_restart(cluster: LocalCluster) -> None:
    """The id is bound at the gateway, durably: after a restart it still cannot credit an account
    at another bank, while the same deposit sent again gets its stored answer."""
    txn_id = str(uuid.uuid4())
    first = call(cluster, "gateway", "Deposit", deposit("bob@bank_b", 3_00, txn_id), "treasury")
    assert first[0] == C.OK, first
    cluster.restart_node("gateway")
    before = everyones_money(cluster)
    code, _, details = call(cluster, "gateway", "Deposit", deposit("alice@bank_a", 3_00, txn_id), "treasury")
    assert code == C.ALREADY_EXISTS, details
    assert call(cluster, "gateway", "Deposit", deposit("bob@bank_b", 3_00, txn_id), "treasury") == first
    assert everyones_money(cluster) == before


def test_a_deposit_past_max_balance_counting_credits_in_flight_is_refused(cluster: LocalCluster,
                                                                          tmp_path: Path) -> None:
    user = unique_name("full")
    with cluster.client() as c:
        c.register(f"{user}@bank_a", "pw")
    code, _, details = call(cluster, "gateway", "Deposit", deposit(f"{user}@bank_a", CEILING + 1), "treasury")
    assert code == C.FAILED_PRECONDITION and "at most 1000000.00 INR" in details, details
    assert bank_account(cluster, "bank_a", user) == (0, 0)

    # A payment prepared to credit the account holds part of the room until it is decided.
    held = str(uuid.uuid4())
    code, vote, details = call(cluster, "bank_a", "Prepare", bank_pb2.PrepareRequest(
        txn_id=held, currency="INR", legs=[bank_pb2.Leg(account=user, delta_minor=CEILING // 2,
                                                        counterparty="bob@bank_b")]), "gateway")
    assert code == C.OK and vote.yes, details
    try:
        code, _, details = call(cluster, "gateway", "Deposit", deposit(f"{user}@bank_a", CEILING // 2 + 1),
                                "treasury")
        assert code == C.FAILED_PRECONDITION, details
        assert bank_account(cluster, "bank_a", user) == (0, 0)
        code, reply, details = call(cluster, "gateway", "Deposit", deposit(f"{user}@bank_a", CEILING // 2),
                                    "treasury")
        assert code == C.OK and reply.balance.minor == CEILING // 2, details
    finally:
        call(cluster, "bank_a", "Abort", bank_pb2.DecisionRequest(txn_id=held), "gateway")
    audit_json(cluster, tmp_path)


def test_the_treasurys_bulk_door_opens_funded_accounts_the_audit_counts(cluster: LocalCluster,
                                                                        tmp_path: Path) -> None:
    before, _ = issued(cluster, tmp_path)
    names = [unique_name("bulk") for _ in range(3)]
    with cluster.client("treasury") as t:
        assert t.open_accounts("bank_b", names, hash_password("bulk-pw"), 40_00) == 3
        assert t.open_accounts("bank_b", names, hash_password("bulk-pw"), 40_00) == 0  # existing names: left alone
    assert issued(cluster, tmp_path)[0] == before + 3 * 40_00
    login(cluster, f"{names[0]}@bank_b", "bulk-pw")


# -- reserved names ---------------------------------------------------------------------


@pytest.mark.parametrize("user", ["admin", "gateway", "treasury", "client", "ca", "bank_a", "bank_b"])
def test_identity_and_bank_names_are_reserved_as_user_names(cluster: LocalCluster, user: str) -> None:
    """`treasury@bank_b` would read like the treasury in a history, `bank_a@bank_b` like a bank."""
    code, _, details = call(cluster, "gateway", "Register", gateway_pb2.RegisterRequest(
        account=f"{user}@bank_b", password="pw"), "client")
    assert code == C.INVALID_ARGUMENT and "reserved" in details, details
    # The bank refuses it too, should anything but this gateway ask.
    code, _, details = call(cluster, "bank_b", "OpenAccount", bank_pb2.OpenAccountRequest(
        account=user, password="pw"), "gateway")
    assert code == C.INVALID_ARGUMENT and "reserved" in details, details
    assert bank_account(cluster, "bank_b", user) is None


def test_a_setup_file_naming_a_reserved_user_stops_the_bank_with_one_line(tmp_path: Path) -> None:
    local = LocalCluster(tmp_path / "cluster", SPEC, accounts={"bank_a": {"treasury": ("5.00", "pw")}})
    r = local.cli("bank", "--name", "bank_a", timeout=30)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "accounts.treasury" in line and "reserved" in line, r.stderr


# -- the command line -------------------------------------------------------------------


def test_miniupi_deposit_prints_one_line_and_never_credits_twice(cluster: LocalCluster, tmp_path: Path) -> None:
    user = unique_name("cli")
    with cluster.client() as c:
        c.register(f"{user}@bank_a", "pw")
    txn_id = str(uuid.uuid4())
    for _ in range(2):
        r = cluster.cli("deposit", f"{user}@bank_a", "25.50", "--id", txn_id, home=tmp_path)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == [f"deposited 25.50 INR to {user}@bank_a (txn {txn_id}); balance 25.50 INR"]
    r = cluster.cli("deposit", f"{user}@bank_a", "1.00", "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) | {"txn_id": ""} == {"txn_id": "", "account": f"{user}@bank_a", "amount": "1.00",
                                                       "balance": "26.50", "currency": "INR"}
    assert bank_account(cluster, "bank_a", user) == (26_50, 0)

    for args, words in ((("nobody_here@bank_a", "1.00"), "unknown account"),
                        ((f"{user}@bank_a", "1.00", "--id", txn_id), "other details"),
                        ((f"{user}@bank_a", "0"), "positive"),
                        ((f"{user}@bank_a", "lots"), ""),
                        ((f"{user}@bank_a", "1.00", "--id", "not-a-uuid"), "UUID")):
        r = cluster.cli("deposit", *args, home=tmp_path)
        assert r.returncode != 0 and r.stdout == "", (args, r.stdout)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert words in r.stderr, (args, r.stderr)
    assert bank_account(cluster, "bank_a", user) == (26_50, 0)

    r = cluster.cli("audit", "--wait", "10", home=tmp_path)
    assert r.returncode == 0, (r.stdout, r.stderr)
    summary, settlement, verdict = r.stdout.splitlines()
    assert re.search(r"total (\d+\.\d\d) INR; issued \1 \(\d+\.\d\d at opening, \d+\.\d\d in [1-9]\d* treasury "
                     r"deposits\)", summary), summary
    assert settlement.startswith("settlement: "), settlement
    assert verdict == "audit ok: every invariant holds"
