"""Security, password guessing: an account locks after `login_attempts` failed logins in a row.

While locked, Login says so (PERMISSION_DENIED, "locked ... try again in N s")
and does not even check the password, so the right one is refused too and a
guesser learns nothing. The lock lasts `login_lockout_s`; the count and the
lock are stored with the account, so restarting the bank resets neither.
Logins that arrive together are counted before any password is checked,
so a burst gets no more checks than one login at a time would; the banks
load tests/plugins/password_checks.py, which counts the checks they make.
A name without an account counts and locks the same way.
Both stores are covered: bank_a is SQLite, bank_b is JSON.
"""
from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from miniupi.client.api import AsyncClient
from miniupi.errors import MiniupiError, PermissionDenied, Unauthenticated
from miniupi.ops.testing import LocalCluster
from conftest import PLUGIN_DIR

pytestmark = pytest.mark.timeout(120)

ATTEMPTS = 5
SHORT_LOCK_S = 3.0
LONG_LOCK_S = 120.0
PASSWORD = "right-password"
BANKS = ["bank_a", "bank_b"]


def spec(lockout_s: float) -> dict:
    return {
        "cluster": {"name": "sec-lockout", "prepare_timeout_s": 2, "call_timeout_s": 2,
                    "login_attempts": ATTEMPTS, "login_lockout_s": lockout_s, "max_opening_deposit": "10.00"},
        "gateway": {"storage": "sqlite"},
        "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
        "plugins": {"load": ["password_checks"]},
    }


def booted(root: Path, lockout_s: float) -> Iterator[LocalCluster]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", str(PLUGIN_DIR))  # the banks load password_checks from there
        with LocalCluster(root, spec(lockout_s)) as c:
            yield c


@pytest.fixture(scope="module")
def short_lock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    yield from booted(tmp_path_factory.mktemp("sec_lock_short"), SHORT_LOCK_S)


@pytest.fixture(scope="module")
def long_lock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Locks that outlast any restart, so a test about restarts cannot pass by the lock running out."""
    yield from booted(tmp_path_factory.mktemp("sec_lock_long"), LONG_LOCK_S)


def new_account(cluster: LocalCluster, bank: str) -> str:
    account = f"guessed_{uuid.uuid4().hex[:10]}@{bank}"
    with cluster.client() as c:
        c.register(account, PASSWORD, 10_00)
    return account


def try_login(cluster: LocalCluster, account: str, password: str) -> MiniupiError | None:
    """None if the login worked, else the refusal."""
    with cluster.client() as c:
        try:
            c.login(account, password)
        except MiniupiError as e:
            return e
    return None


def assert_locked(refusal: MiniupiError | None) -> None:
    assert isinstance(refusal, PermissionDenied), refusal
    assert "locked" in refusal.message and "try again in" in refusal.message


def lock(cluster: LocalCluster, account: str) -> float:
    """Fail `ATTEMPTS` logins; the last one locks. Returns when the lock started."""
    for _ in range(ATTEMPTS - 1):
        refusal = try_login(cluster, account, "wrong")
        assert isinstance(refusal, Unauthenticated) and "wrong account or password" in refusal.message, refusal
    locked_at = time.monotonic()
    assert_locked(try_login(cluster, account, "wrong"))
    return locked_at


def test_failed_logins_lock_the_account_even_against_the_right_password_until_the_lock_expires(
        short_lock: LocalCluster) -> None:
    cluster = short_lock
    accounts = [new_account(cluster, bank) for bank in BANKS]
    locked_at = {account: lock(cluster, account) for account in accounts}

    for account in accounts:
        assert_locked(try_login(cluster, account, PASSWORD))
        # Guessing on while locked neither gets in nor makes the lock longer.
        for _ in range(ATTEMPTS + 1):
            assert_locked(try_login(cluster, account, "wrong again"))

    time.sleep(max(0.0, max(locked_at.values()) + SHORT_LOCK_S + 0.2 - time.monotonic()))

    for account in accounts:
        # The count starts afresh: one wrong password is just that, not another lock.
        assert isinstance(try_login(cluster, account, "wrong"), Unauthenticated)
        assert try_login(cluster, account, PASSWORD) is None


def test_command_line_login_says_the_account_is_locked(short_lock: LocalCluster) -> None:
    cluster = short_lock
    account = new_account(cluster, "bank_b")
    lock(cluster, account)
    done = cluster.cli("login", account, "--password-stdin", input=PASSWORD + "\n",
                       home=cluster.root / f"home_{uuid.uuid4().hex[:6]}")
    assert done.returncode != 0
    assert "locked" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("bank", BANKS)
def test_a_good_login_resets_the_count(long_lock: LocalCluster, bank: str) -> None:
    cluster = long_lock
    account = new_account(cluster, bank)
    for _ in range(2):
        for _ in range(ATTEMPTS - 1):
            assert isinstance(try_login(cluster, account, "wrong"), Unauthenticated)
        assert try_login(cluster, account, PASSWORD) is None


@pytest.mark.parametrize("bank", BANKS)
def test_lock_is_per_account(long_lock: LocalCluster, bank: str) -> None:
    cluster = long_lock
    victim, neighbour = new_account(cluster, bank), new_account(cluster, bank)
    lock(cluster, victim)
    assert try_login(cluster, neighbour, PASSWORD) is None
    assert_locked(try_login(cluster, victim, PASSWORD))


@pytest.mark.parametrize("bank", BANKS)
def test_lock_and_failure_count_survive_a_bank_restart(long_lock: LocalCluster, bank: str) -> None:
    cluster = long_lock
    locked, counting = new_account(cluster, bank), new_account(cluster, bank)
    lock(cluster, locked)
    for _ in range(ATTEMPTS - 1):  # one short of the lock
        assert isinstance(try_login(cluster, counting, "wrong"), Unauthenticated)

    cluster.restart_node(bank)

    assert_locked(try_login(cluster, locked, PASSWORD))
    assert_locked(try_login(cluster, counting, "wrong"))  # the earlier failures still counted
    assert_locked(try_login(cluster, counting, PASSWORD))


def checks_made(cluster: LocalCluster, account: str) -> int:
    """How many times the account's bank has really checked a password for it (password_checks.py)."""
    user, _, bank = account.partition("@")
    path = cluster.config.data_dir / "password_checks.txt"
    return path.read_text().splitlines().count(f"{bank} {user}") if path.exists() else 0


def burst(cluster: LocalCluster, account: str, logins: int) -> list[MiniupiError | None]:
    """`logins` wrong logins to `account` sent all at once; what each got."""
    async def send() -> list[MiniupiError | None]:
        async with AsyncClient(cluster.config) as client:
            async def one() -> MiniupiError | None:
                try:
                    await client.login(account, "wrong")
                except MiniupiError as e:
                    return e
                return None

            return await asyncio.gather(*(one() for _ in range(logins)))

    return asyncio.run(send())


@pytest.mark.parametrize("bank", BANKS)
@pytest.mark.parametrize("exists", [True, False], ids=["account", "no_account"])
def test_fifty_concurrent_wrong_logins_get_at_most_login_attempts_checks_then_the_right_password_is_refused(
        long_lock: LocalCluster, bank: str, exists: bool) -> None:
    cluster = long_lock
    account = new_account(cluster, bank) if exists else f"nobody_{uuid.uuid4().hex[:10]}@{bank}"

    answers = burst(cluster, account, 50)

    assert checks_made(cluster, account) == ATTEMPTS
    wrong = [a for a in answers if isinstance(a, Unauthenticated) and a.message == "wrong account or password"]
    locked = [a for a in answers if isinstance(a, PermissionDenied)]
    assert len(wrong) + len(locked) == len(answers) and len(locked) >= len(answers) - ATTEMPTS + 1, answers
    for refusal in locked:
        assert_locked(refusal)
    assert_locked(try_login(cluster, account, PASSWORD))
    assert checks_made(cluster, account) == ATTEMPTS  # refused without a check


def test_a_name_without_an_account_answers_like_an_account_and_locks_alike(long_lock: LocalCluster) -> None:
    cluster = long_lock
    known = new_account(cluster, "bank_a")
    unknown = f"nobody_{uuid.uuid4().hex[:10]}@bank_a"

    def answers(account: str) -> list[tuple[str, str]]:
        """What ATTEMPTS + 1 wrong logins in a row get, with the address and the seconds left blanked out."""
        out = []
        for _ in range(ATTEMPTS + 1):
            refusal = try_login(cluster, account, "wrong")
            assert refusal is not None
            out.append((refusal.code, re.sub(r"\d+ s$", "N s", refusal.message.replace(account, "ADDRESS"))))
        return out

    seen = answers(known)
    assert seen == answers(unknown)
    assert [code for code, _ in seen] == ["UNAUTHENTICATED"] * (ATTEMPTS - 1) + ["PERMISSION_DENIED"] * 2
