"""Security, hostile input: whatever arrives on the wire gets a clear status and moves no money.

DESIGN.md section 3: bad input gets a clear gRPC status and changes nothing,
and a node never answers UNKNOWN or INTERNAL to a client's mistake.

The property tests build their requests from the protobuf descriptors, so a
field added to a .proto is fuzzed without touching this file: every field of
every request message (nested messages and repeated fields included) is
absent or drawn from its type's strategy (strings: empty, huge, unicode,
non-UUID and domain-shaped ones such as real account names and UUIDs;
integers: the type's extremes, zero, negatives), and any message may carry
well-formed fields this version does not know. Every gateway method is
called with a customer's session and as the admin; every bank method is
called with the gateway's certificate on both banks (SQLite and JSON), the
one caller a bank serves for everything, so the fuzz reaches every handler.

Keeping "no money moves" a true invariant:
- The customer, `fuzzer@bank_a`, has a zero balance, so no Pay it sends can
  succeed; at worst the payee's bank prepares a credit and is told to abort.
- A fuzzed bank Prepare (or DecideAndPrepare) that names real accounts
  really places a hold (the gateway may call banks). The harness aborts
  every transaction id in such a request straight after, so every Commit
  the fuzzer sends finds nothing prepared to apply, and DecideAndPrepare
  applies its decisions before its prepares, never a commit of its own.
- Register and OpenAccount(s) legitimately open funded accounts. They are fuzzed
  on a cluster of their own, and the check there is that every account that
  existed before keeps its balance and holds, every new one holds exactly its
  opening deposit, and total money still equals total deposits.
- Deposit legitimately credits an account: at the gateway for the treasury,
  at a bank for the gateway. The treasury's two doors (Deposit, OpenAccounts)
  are fuzzed with its certificate as well. Deposit is fuzzed on a cluster of
  its own, and there every account that existed before must hold its
  balance plus exactly what its new DEPOSITED transactions credited, with
  its holds unchanged.
After each example the watched accounts' balances and holds are compared;
after each method the whole cluster is audited (miniupi.ops.audit) and every
account, plus the number of committed transactions, is compared.
Examples are derandomized, so `make test` is reproducible.
"""
from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miniupi.ops import audit
from miniupi.contract.identity import SESSION_METADATA_KEY
from miniupi.ops.testing import LocalCluster
from miniupi.tls import channel_credentials
from miniupi.v1 import bank_pb2, bank_pb2_grpc, common_pb2, gateway_pb2, gateway_pb2_grpc

pytestmark = pytest.mark.timeout(240)

SPEC = {
    # A huge login_attempts: fuzzed logins must not lock the accounts the harness logs in with.
    "cluster": {"name": "sec-fuzz", "prepare_timeout_s": 2, "call_timeout_s": 2, "login_attempts": 1_000_000},
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
}
SETUP = {"bank_a": {"alice": ("100.00", "alice-pw")}, "bank_b": {"bob": ("10.00", "bob-pw")}}
FUZZER = ["fuzzer@bank_a", "fuzzer@bank_b"]  # zero balance; registered through the gateway by the fixtures
WATCHED = [("bank_a", "alice"), ("bank_a", "fuzzer"), ("bank_b", "bob"), ("bank_b", "fuzzer")]
MAX_EXAMPLES = 15
TIMEOUT = 10.0
MAX_MESSAGE_BYTES = 1 << 20  # the nodes' receive limit (miniupi/nodes/server.py)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
C = grpc.StatusCode
ALLOWED = {C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND, C.FAILED_PRECONDITION, C.ALREADY_EXISTS,
           C.RESOURCE_EXHAUSTED, C.UNAUTHENTICATED, C.PERMISSION_DENIED, C.ABORTED}

GATEWAY = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"]
BANK = bank_pb2.DESCRIPTOR.services_by_name["Bank"]


def opens_accounts(method: MethodDescriptor) -> bool:
    """Register, OpenAccount, OpenAccounts: they may open funded accounts, so each is fuzzed on a
    cluster of its own and held to the invariant for new accounts (see the module docstring)."""
    return method.name == "Register" or method.name.startswith("OpenAccount")


def issues_money(method: MethodDescriptor) -> bool:
    """Deposit: for the treasury at the gateway, and the gateway at a bank, it credits the account it names."""
    return method.name == "Deposit"


# Every example is a real call over mTLS, some with 10,000-character strings.
SLOW_IS_FINE = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                HealthCheck.filter_too_much]


# -- strategies from descriptors -------------------------------------------------------

HUGE_STRINGS = ["x" * 10_000, "é" * 10_000, "💸" * 10_000, "alice@bank_a" * 850, str(uuid.UUID(int=0)) * 300]
DOMAIN_STRINGS = [
    "alice", "bob", "fuzzer", "nobody", "alice@bank_a", "bob@bank_b", "fuzzer@bank_a", "fuzzer@bank_b",
    "nobody@bank_a", "someone@bank_zz", "gateway", "admin", "INR", "USD", "inr", "alice-pw", "fuzzer-pw",
    "ALICE@bank_a", " alice@bank_a", "alice@bank_a ", "alice@@bank_a", "@bank_a", "alice@", "@", "a" * 32,
    "a" * 33 + "@bank_a", "alice\x00@bank_a", "álice@bank_a", "../../etc/passwd", "'; DROP TABLE kv; --",
    "%s%n%x", "{}", "null", "alice\n", "bob\n@bank_b", "alice@bank_a\n", str(uuid.UUID(int=0)),
    "00000000000000000000000000000000",
]
NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True)
STRINGS = st.one_of(
    st.just(""),
    st.sampled_from(DOMAIN_STRINGS),
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    NAMES,
    st.builds(lambda user, bank: f"{user}@{bank}", NAMES, st.sampled_from(["bank_a", "bank_b", "bank_zz"])),
    st.text(max_size=40),
    st.sampled_from(HUGE_STRINGS),
)

# Values that get past validation, by field name, so that examples also reach the ledger and
# two-phase commit rather than stopping at the first check: plausible requests draw these only,
# hostile ones mix them with anything the field's type allows.
ADDRESSES = st.one_of(st.sampled_from(["alice@bank_a", "bob@bank_b", *FUZZER, "alice\n@bank_a"]),
                      st.builds(lambda user, bank: f"{user}@{bank}", NAMES, st.sampled_from(["bank_a", "bank_b"])))
AMOUNTS = st.one_of(st.sampled_from([1, 1_00, 10_00, 100_00, 100_01, INT64_MAX, -1, -1_00]), st.integers(-10**6, 10**6))
HINTS: dict[str, st.SearchStrategy[Any]] = {
    "txn_id": st.uuids(version=4).map(str),
    "account": st.one_of(ADDRESSES, st.sampled_from(["alice", "bob", "fuzzer"]), NAMES),
    "from_account": st.sampled_from(["", *FUZZER, "alice@bank_a"]),
    "to_account": ADDRESSES,
    "counterparty": ADDRESSES,
    "currency": st.sampled_from(["INR", ""]),
    "password": st.sampled_from(["fuzzer-pw", "alice-pw", "a-new-password"]),
    "minor": AMOUNTS,
    "delta_minor": AMOUNTS,
    "limit": st.sampled_from([0, 1, 1000]),
}

F = FieldDescriptor
_INT_RANGES = {
    F.TYPE_INT64: (INT64_MIN, INT64_MAX), F.TYPE_SINT64: (INT64_MIN, INT64_MAX),
    F.TYPE_SFIXED64: (INT64_MIN, INT64_MAX),
    F.TYPE_INT32: (-(2**31), 2**31 - 1), F.TYPE_SINT32: (-(2**31), 2**31 - 1), F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1), F.TYPE_FIXED64: (0, 2**64 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1), F.TYPE_FIXED32: (0, 2**32 - 1),
}


def integers(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = sorted(v for v in {lo, lo + 1, -1, 0, 1, 100, 1_001, 10_000, hi - 1, hi} if lo <= v <= hi)
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def unknown_fields(desc: Descriptor) -> st.SearchStrategy[bytes]:
    """Well-formed wire-format fields whose numbers `desc` does not define."""
    known = {f.number for f in desc.fields}
    number = st.one_of(st.sampled_from([max(known, default=0) + 1, 15, 16, 2047, 2**29 - 1]),
                       st.integers(1, 2**29 - 1)).filter(lambda n: n not in known and not 19000 <= n <= 19999)

    def encode(n: int, wire_type: int, payload: bytes, value: int) -> bytes:
        tag = _varint(n << 3 | wire_type)
        if wire_type == 0:
            return tag + _varint(value)
        if wire_type == 1:
            return tag + (value & (2**64 - 1)).to_bytes(8, "little")
        if wire_type == 5:
            return tag + (value & (2**32 - 1)).to_bytes(4, "little")
        return tag + _varint(len(payload)) + payload

    one = st.builds(encode, number, st.sampled_from([0, 1, 2, 5]), st.binary(max_size=32), st.integers(0, 2**64 - 1))
    return st.lists(one, min_size=1, max_size=3).map(b"".join)


def field_values(field: FieldDescriptor, depth: int, plausible: bool) -> st.SearchStrategy[Any]:
    if field.name in HINTS:
        return HINTS[field.name] if plausible else st.one_of(HINTS[field.name], values_of_type(field, depth, plausible))
    return values_of_type(field, depth, plausible)


def values_of_type(field: FieldDescriptor, depth: int, plausible: bool) -> st.SearchStrategy[Any]:
    if field.type == F.TYPE_MESSAGE:
        return messages(field.message_type, depth + 1, plausible)
    if field.type == F.TYPE_STRING:
        return STRINGS
    if field.type == F.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.just(b"\xff" * 10_000))
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    if field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return st.floats(width=64 if field.type == F.TYPE_DOUBLE else 32)
    if field.type == F.TYPE_ENUM:  # proto3 enums are open: unnamed numbers are legal on the wire
        return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]), integers(-(2**31), 2**31 - 1))
    return integers(*_INT_RANGES[field.type])


@st.composite
def messages(draw: Callable[..., Any], desc: Descriptor, depth: int = 0, plausible: bool | None = None) -> Message:
    """A message of type `desc`, built field by field from the descriptor.

    Half the requests are *plausible*: every field set, named fields drawn from HINTS, so
    they get past validation into the ledger and two-phase commit. The others are *hostile*:
    each field absent or drawn from anything its type allows, sometimes with unknown fields.
    """
    if plausible is None:
        plausible = draw(st.booleans())
    message = message_factory.GetMessageClass(desc)()
    for field in desc.fields:
        if depth > 3 or not (plausible or draw(st.booleans())):
            continue
        values = field_values(field, depth, plausible)
        if field.is_repeated:
            sizes = st.lists(values, min_size=1, max_size=2) if plausible else \
                st.one_of(st.lists(values, max_size=3), st.lists(values, min_size=15, max_size=18))
            items = draw(sizes)
            container = getattr(message, field.name)
            for item in items:
                if field.type == F.TYPE_MESSAGE:
                    container.add().CopyFrom(item)
                else:
                    container.append(item)
        elif field.type == F.TYPE_MESSAGE:
            getattr(message, field.name).CopyFrom(draw(values))
        else:
            setattr(message, field.name, draw(values))
    if not plausible and draw(st.integers(0, 3)) == 0:
        message.MergeFromString(draw(unknown_fields(desc)))
    return message


# -- the clusters and the calls ------------------------------------------------------------


@contextlib.contextmanager
def fuzz_cluster(root: Path) -> Iterator[LocalCluster]:
    with LocalCluster(root, SPEC, accounts=SETUP) as cluster:
        with channel(cluster, "gateway", "client") as ch:
            for account in FUZZER:
                gateway_pb2_grpc.GatewayStub(ch).Register(
                    gateway_pb2.RegisterRequest(account=account, password="fuzzer-pw"), timeout=TIMEOUT)
        yield cluster


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with fuzz_cluster(tmp_path_factory.mktemp("sec_fuzz")) as c:
        yield c


@pytest.fixture
def opening(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A fresh cluster per method that opens accounts, so what one finds cannot fail another."""
    with fuzz_cluster(tmp_path_factory.mktemp("sec_fuzz_opening")) as c:
        yield c


@dataclass(frozen=True)
class Target:
    method: MethodDescriptor
    node: str  # gateway, bank_a or bank_b
    role: str  # customer (client certificate and session); admin, treasury or gateway (that certificate alone)

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    def __str__(self) -> str:
        return f"{self.node}-{self.method.name}-{self.role}"


TARGETS = ([Target(m, "gateway", role) for m in GATEWAY.methods for role in ("customer", "admin")]
           + [Target(GATEWAY.methods_by_name[m], "gateway", "treasury") for m in ("Deposit", "OpenAccounts")]
           + [Target(m, bank, "gateway") for m in BANK.methods for bank in ("bank_a", "bank_b")])


def channel(cluster: LocalCluster, node: str, identity: str) -> grpc.Channel:
    return grpc.secure_channel(cluster.config.node(node).address,
                               channel_credentials(cluster.config.certs_dir, identity))


def invoke(ch: grpc.Channel, target: Target, payload: bytes, key: str | None = None) -> grpc.StatusCode:
    """Send raw bytes (no serializer: exactly what the strategy built) and return the status."""
    metadata = None if key is None else ((SESSION_METADATA_KEY, key),)
    try:
        if target.method.client_streaming:  # the payload as the stream's one message
            for _ in ch.stream_stream(target.path)(iter([payload]), timeout=TIMEOUT, metadata=metadata):
                pass
        elif target.method.server_streaming:
            for _ in ch.unary_stream(target.path)(payload, timeout=TIMEOUT, metadata=metadata):
                pass
        else:
            ch.unary_unary(target.path)(payload, timeout=TIMEOUT, metadata=metadata)
    except grpc.RpcError as e:
        return e.code()
    return C.OK


def login(cluster: LocalCluster, account: str, password: str) -> str:
    with channel(cluster, "gateway", "client") as ch:
        return gateway_pb2_grpc.GatewayStub(ch).Login(
            gateway_pb2.LoginRequest(account=account, password=password), timeout=TIMEOUT).session_key


def is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def txn_ids(message: Message) -> set[str]:
    """Every well-formed transaction id anywhere in the message (DecideAndPrepare nests its prepares)."""
    found = set()
    for field, value in message.ListFields():
        if field.type == F.TYPE_MESSAGE:
            for child in (value if field.is_repeated else [value]):
                found |= txn_ids(child)
        elif field.name == "txn_id" and is_uuid(value):
            found.add(value)
    return found


@dataclass(frozen=True)
class Reading:
    accounts: dict[tuple[str, str], tuple[int, int, int]]  # (bank, name) -> (balance, held, opening)
    deposited: dict[tuple[str, str], int]  # (bank, name) -> what DEPOSITED transactions credited it
    bank_commits: int
    gateway_commits: int
    total: int


def read_cluster(cluster: LocalCluster) -> Reading:
    report = asyncio.run(audit.audit(cluster.config, settle_s=10))
    assert report.violations == [], report.violations
    gateway, banks = asyncio.run(audit.collect(cluster.config))
    return Reading(
        accounts={(b.name, name): state for b in banks for name, state in b.accounts.items()},
        deposited=_deposited(banks),
        bank_commits=sum(1 for b in banks for state, _ in b.txns.values() if state == "COMMITTED"),
        gateway_commits=sum(1 for t in gateway.values() if t.state == "COMMITTED"),
        total=report.total,
    )


def _deposited(banks: list[audit.BankView]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for b in banks:
        for state, legs in b.txns.values():
            for name, delta, _ in legs if state == "DEPOSITED" else ():
                out[(b.name, name)] = out.get((b.name, name), 0) + delta
    return out


# -- the properties ----------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS, ids=str)
def test_hostile_requests_get_a_clear_status_and_move_no_money(request: pytest.FixtureRequest,
                                                               target: Target) -> None:
    own_cluster = opens_accounts(target.method) or issues_money(target.method)
    cluster: LocalCluster = request.getfixturevalue("opening" if own_cluster else "fuzz")
    before = read_cluster(cluster)
    identity = "client" if target.role == "customer" else target.role
    key = login(cluster, "fuzzer@bank_a", "fuzzer-pw") if target.role == "customer" else None
    seen: dict[grpc.StatusCode, int] = {}

    with channel(cluster, target.node, identity) as ch, \
            channel(cluster, "bank_a", "gateway") as bank_a, channel(cluster, "bank_b", "gateway") as bank_b:
        banks = {"bank_a": bank_pb2_grpc.BankStub(bank_a), "bank_b": bank_pb2_grpc.BankStub(bank_b)}

        def watched() -> dict[tuple[str, str], tuple[int, int]]:
            out = {}
            for bank, name in WATCHED:
                reply = banks[bank].GetAccount(bank_pb2.AccountRequest(account=name), timeout=TIMEOUT)
                out[(bank, name)] = (reply.balance.minor, reply.held.minor)
            return out

        baseline = watched()

        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=SLOW_IS_FINE)
        @given(message=messages(target.method.input_type))
        def one_request(message: Message) -> None:
            # Logout ends the session it is sent with: give each example one of its own.
            session = login(cluster, "fuzzer@bank_a", "fuzzer-pw") if key and target.method.name == "Logout" else key
            code = invoke(ch, target, message.SerializeToString(), session)
            seen[code] = seen.get(code, 0) + 1
            if target.node != "gateway" and "Prepare" in target.method.name:
                # The admin may hold money at a bank; release whatever this example held.
                for txn_id in txn_ids(message):
                    banks[target.node].Abort(bank_pb2.DecisionRequest(txn_id=txn_id), timeout=TIMEOUT)
            assert code in ALLOWED, f"{target}: {code.name} for {str(message)[:500]!r}"
            now = watched()
            if issues_money(target.method):  # credits only, never a hold: checked exactly after the run
                assert all(now[k][0] >= baseline[k][0] and now[k][1] == baseline[k][1] for k in baseline), \
                    f"{target} took money or left a hold: {str(message)[:500]!r}"
            else:
                assert now == baseline, f"{target} moved money or left a hold: {str(message)[:500]!r}"

        one_request()

    after = read_cluster(cluster)
    opened = {k: v for k, v in after.accounts.items() if k not in before.accounts}
    credited = {k: after.deposited.get(k, 0) - before.deposited.get(k, 0) for k in before.accounts}
    assert {k: after.accounts.get(k) for k in before.accounts} == \
        {k: (bal + credited[k], held, opening_) for k, (bal, held, opening_) in before.accounts.items()}, seen
    assert {k: (bal, held) for k, (bal, held, _) in opened.items()} == \
        {k: (opening_, 0) for k, (_, _, opening_) in opened.items()}
    assert (after.bank_commits, after.gateway_commits) == (before.bank_commits, before.gateway_commits)
    assert after.total == before.total + sum(o for _, _, o in opened.values()) + sum(credited.values())
    if not opens_accounts(target.method):
        assert opened == {}
    if not issues_money(target.method):
        assert sum(credited.values()) == 0
    # Whatever was opened is named by the documented rule: lower-case letters, digits and _.
    assert [name for _, name in opened if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name)] == []


# -- requests no strategy above builds -----------------------------------------------------


def _oversized(target: Target) -> bytes:
    """A request of the method's type just past the limit: in its first string field if it has one."""
    message = message_factory.GetMessageClass(target.method.input_type)()
    filler = "x" * (MAX_MESSAGE_BYTES + 1)
    strings = [f for f in target.method.input_type.fields if f.type == F.TYPE_STRING and not f.is_repeated]
    if strings:
        setattr(message, strings[0].name, filler)
        return message.SerializeToString()
    return message.SerializeToString() + _varint(1000 << 3 | 2) + _varint(len(filler)) + filler.encode()


def still_serving(cluster: LocalCluster, node: str) -> None:
    with channel(cluster, node, "admin") as ch:
        assert health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status == \
            health_pb2.HealthCheckResponse.SERVING
        if node == "gateway":
            reply = gateway_pb2_grpc.GatewayStub(ch).Balance(gateway_pb2.BalanceRequest(account="alice@bank_a"),
                                                             timeout=TIMEOUT)
        else:
            reply = bank_pb2_grpc.BankStub(ch).GetAccount(bank_pb2.AccountRequest(account="alice"), timeout=TIMEOUT)
    assert reply.balance.minor == 100_00


SIZE_TARGETS = [t for t in TARGETS if t.role in ("admin", "gateway") and t.node in ("gateway", "bank_a")]


@pytest.mark.parametrize("target", SIZE_TARGETS, ids=str)
def test_request_past_the_1_MiB_limit_is_resource_exhausted_and_the_node_keeps_serving(
        fuzz: LocalCluster, target: Target) -> None:
    before = read_cluster(fuzz)
    with channel(fuzz, target.node, target.role) as ch:
        assert invoke(ch, target, _oversized(target)) == C.RESOURCE_EXHAUSTED
    still_serving(fuzz, target.node)
    after = read_cluster(fuzz)
    assert (after.accounts, after.bank_commits) == (before.accounts, before.bank_commits)


MALFORMED = {
    "garbage": b"\xff\xff\xff\xff",
    "truncated_varint": b"\x08\xff",
    "length_past_the_end": b"\x0a\x10abc",
    "invalid_utf8_in_field_1": b"\x0a\x02\xff\xfe",
}


@pytest.mark.parametrize("node", ["gateway", "bank_a"])
def test_bytes_that_are_not_a_protobuf_message_are_invalid_argument_not_unknown(fuzz: LocalCluster,
                                                                                node: str) -> None:
    """A client that sends broken bytes made a mistake: INVALID_ARGUMENT, as for any other bad input
    (DESIGN.md section 3: never UNKNOWN or INTERNAL), and the node serves on."""
    service = GATEWAY if node == "gateway" else BANK
    role = "admin" if node == "gateway" else "gateway"
    codes = {}
    with channel(fuzz, node, role) as ch:
        for method in service.methods:
            target = Target(method, node, role)
            for name, payload in MALFORMED.items():
                codes[f"{method.name}/{name}"] = invoke(ch, target, payload).name
    assert codes == {k: "INVALID_ARGUMENT" for k in codes}
    still_serving(fuzz, node)


# -- findings pinned down as plain examples ---------------------------------------------------


@pytest.mark.parametrize("via", ["gateway_register", "bank_open_account"])
def test_account_name_with_a_trailing_newline_is_refused(opening: LocalCluster, via: str) -> None:
    """`alice\\n@bank_a` prints like alice@bank_a in a history or a log, and splits a log line in two.
    Names are lower-case letters, digits and _ (config.NAME_RE), so it must be INVALID_ARGUMENT."""
    lookalike = "alice\n"
    if via == "gateway_register":
        with channel(opening, "gateway", "client") as ch:
            code = invoke(ch, Target(GATEWAY.methods_by_name["Register"], "gateway", "customer"),
                          gateway_pb2.RegisterRequest(account=f"{lookalike}@bank_a", password="pw",
                                                      initial=common_pb2.Money(minor=1)).SerializeToString())
    else:
        with channel(opening, "bank_a", "gateway") as ch:
            code = invoke(ch, Target(BANK.methods_by_name["OpenAccount"], "bank_a", "gateway"),
                          bank_pb2.OpenAccountRequest(account=lookalike, password="pw").SerializeToString())
    assert code == C.INVALID_ARGUMENT
    with channel(opening, "bank_a", "admin") as ch:
        assert invoke(ch, Target(BANK.methods_by_name["GetAccount"], "bank_a", "admin"),
                      bank_pb2.AccountRequest(account=lookalike).SerializeToString()) == C.INVALID_ARGUMENT


@pytest.fixture
def small_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    # Long timeouts: forty password hashes at once take a while on a small machine.
    spec = {"cluster": {**SPEC["cluster"], "call_timeout_s": 30, "prepare_timeout_s": 30,
                        "max_opening_deposit": "10000.00"},
            "gateway": SPEC["gateway"], "banks": {"bank_a": {"storage": "sqlite"}}}
    with LocalCluster(tmp_path_factory.mktemp("sec_overflow"), spec) as c:
        yield c


def test_deposits_past_int64_are_refused_and_the_audit_keeps_working(small_cluster: LocalCluster) -> None:
    """Register is open to anyone with the client certificate, and one opening deposit may be up to
    INT64_MAX. On a bank that already holds any deposit, that pushes the bank's total deposits past
    int64, where the Audit stream can no longer encode it: `miniupi audit` would fail from then on."""
    codes = []
    with channel(small_cluster, "gateway", "client") as ch:
        stub = gateway_pb2_grpc.GatewayStub(ch)
        for name, deposit in (("modest", 1_00), ("rich", INT64_MAX)):
            try:
                stub.Register(gateway_pb2.RegisterRequest(account=f"{name}@bank_a", password="pw",
                                                          initial=common_pb2.Money(minor=deposit)), timeout=TIMEOUT)
                codes.append(C.OK)
            except grpc.RpcError as e:
                codes.append(e.code())
    assert codes[0] == C.OK and codes[1] in ALLOWED
    report = asyncio.run(audit.audit(small_cluster.config, settle_s=5))
    assert report.violations == []


def test_concurrent_registrations_keep_the_deposit_total_exact(small_cluster: LocalCluster) -> None:
    """Each bank keeps the total of opening deposits, which the audit checks total money against.
    Registrations arriving together must each add theirs; a lost one makes every later audit
    report money from nowhere, and would hide real money made from nothing."""
    count, deposit = 40, 1_00

    async def register_all() -> list[object]:
        async with grpc.aio.secure_channel(small_cluster.config.gateway.address,
                                           channel_credentials(small_cluster.config.certs_dir, "client")) as ch:
            stub = gateway_pb2_grpc.GatewayStub(ch)
            return await asyncio.gather(*(stub.Register(gateway_pb2.RegisterRequest(
                account=f"together_{i}@bank_a", password="pw", initial=common_pb2.Money(minor=deposit)),
                timeout=TIMEOUT) for i in range(count)), return_exceptions=True)

    results = asyncio.run(register_all())
    assert [r for r in results if isinstance(r, BaseException)] == []
    report = asyncio.run(audit.audit(small_cluster.config, settle_s=5))
    assert (report.total, report.issued) == (count * deposit, count * deposit)
    assert report.violations == []
