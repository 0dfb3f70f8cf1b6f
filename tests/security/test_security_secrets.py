"""Security, secrets at rest: what a copy of a node's disk would give away.

DESIGN.md section 3: passwords are stored only as a slow salted hash, the
call log never records passwords or session keys, and (miniupi/nodes/logs.py)
everything a node writes is its owner's alone. One cluster is put through
registrations, logins (right, wrong and overlong passwords), payments,
logouts and restarts, through the library and the command line; then every
byte under its data_dir (logs, SQLite database and WAL, JSON journal,
supervisord's files) and the nodes' captured stdout is searched for the
passwords and for every session key handed out.
"""
from __future__ import annotations

import json
import re
import sqlite3
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from argon2 import PasswordHasher

from miniupi.errors import AlreadyExists, Unauthenticated
from miniupi.nodes.passwords import hash_password, verify_password
from miniupi.ops.testing import LocalCluster
from miniupi.tls import channel_credentials
from miniupi.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from conftest import bank_account, unique_name

pytestmark = pytest.mark.timeout(120)

SPEC = {
    "cluster": {"name": "sec-secrets", "prepare_timeout_s": 2, "call_timeout_s": 2,
                "max_opening_deposit": "10000.00"},  # Register opens with deposits here
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
}
SETUP = {"bank_a": {"alice": ("100.00", "alice-setup-pw")}}
# Distinctive, so a hit cannot be a coincidence; non-ASCII, so a JSON-escaped copy is looked for too.
PASSWORD = "Sëcret-Pässwörd-7Q2xZk"
WRONG_PASSWORD = "Nëar-Miss-Guess-9K4vWq"
OVERLONG_PASSWORD = "Overlöng-Secret-3J8" * 60  # past the 1024-character limit
CLI_PASSWORD = "Cli-Typed-Secret-5T6yHm"
KEY_RE = re.compile(rb"[0-9a-f]{32}\.[A-Za-z0-9_-]{43}")
# OWASP's minimum for argon2id, which miniupi/nodes/passwords.py promises.
MIN_MEMORY_KIB, MIN_TIME_COST = 19 * 1024, 2


@dataclass
class Exercised:
    cluster: LocalCluster
    accounts: list[str]
    keys: list[str] = field(default_factory=list)
    running: dict[Path, bytes] = field(default_factory=dict)  # files read while the nodes ran
    stopped: dict[Path, bytes] = field(default_factory=dict)  # ... and after a clean stop
    running_modes: dict[Path, int] = field(default_factory=dict)


def node_files(cluster: LocalCluster) -> dict[Path, bytes]:
    """Every regular file the cluster wrote: data_dir and the nodes' stdout. Not the client home,
    whose job is to keep a key, nor the test's own setup files."""
    files = {p: p.read_bytes() for p in Path(cluster.config.data_dir).rglob("*") if p.is_file()}
    files[cluster.log_path] = cluster.log_path.read_bytes()
    return files


def modes(root: Path) -> dict[Path, int]:
    return {p: stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")]
            if p.is_dir() or p.is_file()}


@pytest.fixture(scope="module")
def exercised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exercised]:
    cluster = LocalCluster(tmp_path_factory.mktemp("sec_secrets"), SPEC, accounts=SETUP)
    tag = uuid.uuid4().hex[:8]
    run = Exercised(cluster, [f"sec_{tag}_a@bank_a", f"sec_{tag}_b@bank_b", f"sec_{tag}_c@bank_a"])
    with cluster:
        with cluster.client() as c:
            for account in run.accounts:
                c.register(account, PASSWORD, 20_00)
            with pytest.raises(AlreadyExists):
                c.register(run.accounts[0], PASSWORD, 1)
            for account in run.accounts:
                with pytest.raises(Unauthenticated):
                    c.login(account, WRONG_PASSWORD)
                with pytest.raises(Unauthenticated):
                    c.login(account, OVERLONG_PASSWORD)
                run.keys.append(c.login(account, PASSWORD).key)
                c.balance()
                c.history()
                c.pay("alice@bank_a", 1_00)
            c.logout()
            run.keys.append(c.login(run.accounts[0], PASSWORD).key)
        home = cluster.root / "home"
        cli_account = f"cli_{tag}@bank_b"
        for args, secret in ((("register", cli_account, "--initial", "5.00", "--password-stdin"), CLI_PASSWORD),
                             (("login", cli_account, "--password-stdin"), CLI_PASSWORD)):
            done = cluster.cli(*args, input=secret + "\n", home=home)
            assert done.returncode == 0, done.stderr
        run.keys += [m.decode() for p in home.rglob("*") if p.is_file() for m in KEY_RE.findall(p.read_bytes())]
        for args in (("pay", "alice@bank_a", "1.00"), ("audit",)):
            done = cluster.cli(*args, home=home)
            assert done.returncode == 0, done.stderr
        run.accounts.append(cli_account)
        # Restarts make the nodes reload their stores and write to them and their logs again.
        for node in ("bank_b", "gateway"):
            cluster.restart_node(node)
        with cluster.client() as c:
            run.keys.append(c.login(run.accounts[1], PASSWORD).key)
            c.balance()
        run.running = node_files(cluster)
        run.running_modes = modes(Path(cluster.config.data_dir))
    run.stopped = node_files(cluster)
    yield run


def forms(secret: str) -> set[bytes]:
    """The secret as it would appear raw, or escaped inside a JSON string (a store or a JSON log)."""
    return {secret.encode(), json.dumps(secret)[1:-1].encode()}


def test_the_scan_covers_the_stores_and_logs_that_saw_the_activity(exercised: Exercised) -> None:
    """The control for the searches below: the files searched are the ones that hold the activity."""
    names = {p.name for p in exercised.running}
    assert {"store.sqlite3", "journal.jsonl", "gateway.log", "bank_a.log", "bank_b.log"} <= names
    everything = b"".join(exercised.running.values())
    for account in exercised.accounts:
        assert account.encode() in everything
    assert exercised.keys and len(set(exercised.keys)) == len(exercised.keys)
    assert len(exercised.keys) == len(exercised.accounts) + 2  # one per login, the CLI's read from its home


@pytest.mark.parametrize("when", ["running", "stopped"])
def test_no_password_is_written_anywhere(exercised: Exercised, when: str) -> None:
    files: dict[Path, bytes] = getattr(exercised, when)
    leaks = [(str(path), secret) for path, data in files.items()
             for secret in (PASSWORD, WRONG_PASSWORD, OVERLONG_PASSWORD[:40], CLI_PASSWORD)
             for form in forms(secret) if form in data]
    assert leaks == []


@pytest.mark.parametrize("when", ["running", "stopped"])
def test_no_session_key_or_its_secret_part_is_written_anywhere(exercised: Exercised, when: str) -> None:
    files: dict[Path, bytes] = getattr(exercised, when)
    secrets = exercised.keys + [key.partition(".")[2] for key in exercised.keys]
    leaks = [(str(path), secret) for path, data in files.items() for secret in secrets
             if secret.encode() in data]
    assert leaks == []
    assert [str(p) for p, data in files.items() if KEY_RE.search(data)] == []


def stored_hashes(exercised: Exercised) -> dict[str, str]:
    """account -> password_hash as bank_a's SQLite store holds it (read after the clean stop)."""
    store = Path(exercised.cluster.config.banks["bank_a"].data_dir) / "store.sqlite3"
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT key, value FROM kv WHERE tbl = 'accounts'").fetchall()
    return {key: json.loads(value)["password_hash"] for key, value in rows}


def test_passwords_are_stored_as_salted_argon2id_at_owasp_cost(exercised: Exercised) -> None:
    hashes = stored_hashes(exercised)
    mine = [hashes[a.split("@")[0]] for a in exercised.accounts if a.endswith("@bank_a")]
    assert len(mine) == 2
    assert mine[0] != mine[1]  # the same password, salted differently
    for h in mine:
        assert verify_password(h, PASSWORD)
    # Every hash on every store, whatever its format, has the promised parameters.
    hash_re = re.compile(rb"\$argon2(id|i|d)\$v=\d+\$m=(\d+),t=(\d+),p=\d+\$")
    found = [m for data in exercised.stopped.values() for m in hash_re.finditer(data)]
    assert len({m.string[m.start():m.start() + 120] for m in found}) >= len(exercised.accounts)
    for m in found:
        assert (m.group(1), int(m.group(2)) >= MIN_MEMORY_KIB, int(m.group(3)) >= MIN_TIME_COST) == \
            (b"id", True, True), m.group(0)


def test_key_files_are_private(exercised: Exercised) -> None:
    certs = Path(exercised.cluster.config.certs_dir)
    assert stat.S_IMODE(certs.stat().st_mode) == 0o700
    keys = sorted(certs.glob("*.key"))
    assert {p.name for p in keys} >= {"ca.key", "gateway.key", "bank_a.key", "bank_b.key", "client.key", "admin.key"}
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in keys} == {p.name: "0o600" for p in keys}


@pytest.mark.parametrize("when", ["running", "stopped"])
def test_every_file_under_data_dir_is_private(exercised: Exercised, when: str) -> None:
    """0600 files and 0700 directories, including SQLite's WAL while it exists, and supervisord's files."""
    data_dir = Path(exercised.cluster.config.data_dir)
    found = exercised.running_modes if when == "running" else modes(data_dir)
    assert any(p.name.endswith("-wal") for p in found) or when == "stopped"
    wrong = {str(p.relative_to(data_dir.parent)): oct(mode) for p, mode in found.items()
             if mode != (0o700 if p.is_dir() else 0o600)}
    assert wrong == {}


# -- rehash ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rehash_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("sec_rehash"), SPEC, accounts=SETUP) as c:
        yield c


def test_outdated_password_hash_is_replaced_at_the_next_successful_login(rehash_cluster: LocalCluster) -> None:
    """A hash made with weaker parameters (as an older release would have) still lets its owner in,
    and the login stores a hash at today's cost; a failed login does not rehash."""
    cluster = rehash_cluster
    store = Path(cluster.config.banks["bank_a"].data_dir) / "store.sqlite3"
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash("alice-setup-pw")

    def stored() -> str:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
            (value,) = db.execute("SELECT value FROM kv WHERE tbl = 'accounts' AND key = 'alice'").fetchone()
        return json.loads(value)["password_hash"]

    cluster.stop_node("bank_a")
    with sqlite3.connect(store) as db:
        (value,) = db.execute("SELECT value FROM kv WHERE tbl = 'accounts' AND key = 'alice'").fetchone()
        record = json.loads(value)
        record["password_hash"] = weak
        db.execute("UPDATE kv SET value = ? WHERE tbl = 'accounts' AND key = 'alice'", (json.dumps(record),))
    cluster.start_node("bank_a")

    with cluster.client() as c:
        with pytest.raises(Unauthenticated):
            c.login("alice@bank_a", "not-her-password")
        assert stored() == weak
        c.login("alice@bank_a", "alice-setup-pw")
    upgraded = stored()
    assert upgraded != weak and upgraded.startswith("$argon2id$")
    m, t = re.search(r"m=(\d+),t=(\d+)", upgraded).groups()  # type: ignore[union-attr]
    assert int(m) >= MIN_MEMORY_KIB and int(t) >= MIN_TIME_COST
    assert verify_password(upgraded, "alice-setup-pw")
    cluster.restart_node("bank_a")  # the new hash is the durable one
    with cluster.client() as c:
        c.login("alice@bank_a", "alice-setup-pw")
    assert stored() == upgraded


def test_bulk_opening_refuses_a_hash_that_could_never_verify_or_is_cheaper_than_today(
        rehash_cluster: LocalCluster) -> None:
    """OpenAccounts takes a hash, not a password. A malformed one locked its accounts out for
    good (every login just fails), a cheap one stored new accounts below the cost the test
    above holds every hash to, and a dear one made each login to them a denial of service. All are
    refused and open nothing; a hash at today's cost opens."""
    cluster = rehash_cluster
    hashes = {
        "malformed": "$argon2id$v=19$m=19456,t=2,p=1$not-a-salt",
        "cheap": PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD),
        "today": hash_password(PASSWORD),
    }
    # Far dearer than any bank should run at each login: written, not computed, since computing it is the attack.
    hashes["dear"] = hashes["today"].replace("m=19456,t=2,p=1", "m=4194304,t=4294967295,p=255")
    names = {kind: unique_name() for kind in hashes}
    answers: dict[str, object] = {}
    # The treasury's bulk door at the gateway, which hands the bank's refusal on word for word.
    with grpc.secure_channel(cluster.config.gateway.address,
                             channel_credentials(cluster.config.certs_dir, "treasury")) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        for kind, password_hash in hashes.items():
            try:
                answers[kind] = stub.OpenAccounts(gateway_pb2.BulkOpenRequest(
                    bank="bank_a", accounts=[names[kind]], password_hash=password_hash,
                    initial=common_pb2.Money(minor=5_00)), timeout=10).opened
            except grpc.RpcError as e:
                answers[kind] = (e.code(), e.details())
    assert answers["today"] == 1
    assert answers["malformed"] == (grpc.StatusCode.INVALID_ARGUMENT, "password_hash is not a well-formed argon2 hash")
    assert answers["cheap"] == (grpc.StatusCode.INVALID_ARGUMENT,
                                "password_hash is cheaper than m=19456,t=2 (got m=8192,t=1)")
    assert answers["dear"] == (grpc.StatusCode.INVALID_ARGUMENT, "password_hash is dearer than m=65536,t=4,p=4 "
                                                                 "(got m=4194304,t=4294967295,p=255)")
    assert [bank_account(cluster, "bank_a", names[k]) for k in hashes] == [None, None, (5_00, 0), None]
    with cluster.client() as c:
        c.login(f"{names['today']}@bank_a", PASSWORD)
