"""Password hashing: argon2id at OWASP's minimum cost, off the event loop.

Hashing is slow on purpose (tens of milliseconds); callers run these in a
worker thread so a login never stalls other payments.
"""
from __future__ import annotations

from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

# Longer passwords are refused before hashing: argon2 would take them, at a cost an attacker chooses.
MAX_PASSWORD = 1024

# OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# The dearest hash a bank takes from elsewhere: every login to such an account runs it on one of the
# bank's few hashing threads, so an unbounded one (m=4 GiB, t=2^32-1) would let any customer certificate
# stall logins for good. About 8 times today's cost at most.
MAX_MEMORY_KIB, MAX_TIME_COST, MAX_PARALLELISM = 64 * 1024, 4, 4


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)


def hash_problem(stored_hash: str) -> str | None:
    """Why a hash made elsewhere may not be stored, or None if it may.

    Bulk opening (`OpenAccounts`) takes a hash instead of a password. A
    malformed one would lock its accounts out for good (every login just
    fails), a cheaper one would break the promise above for new accounts,
    and a far dearer one would make every login to them a denial of
    service: refuse all three.
    """
    try:
        params = extract_parameters(stored_hash)
    except InvalidHashError:
        return "not a well-formed argon2 hash"
    if params.type is not Type.ID:
        return "not an argon2id hash"
    if params.memory_cost < _hasher.memory_cost or params.time_cost < _hasher.time_cost:
        return (f"cheaper than m={_hasher.memory_cost},t={_hasher.time_cost} "
                f"(got m={params.memory_cost},t={params.time_cost})")
    if (params.memory_cost > MAX_MEMORY_KIB or params.time_cost > MAX_TIME_COST
            or params.parallelism > MAX_PARALLELISM):
        return (f"dearer than m={MAX_MEMORY_KIB},t={MAX_TIME_COST},p={MAX_PARALLELISM} "
                f"(got m={params.memory_cost},t={params.time_cost},p={params.parallelism})")
    return None
