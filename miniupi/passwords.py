"""Password hashing: argon2id at OWASP's minimum cost, off the event loop.

Hashing is slow on purpose (tens of milliseconds); callers run these in a
worker thread so a login never stalls other payments.
"""
from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# Longer passwords are refused before hashing: argon2 would take them, at a cost an attacker chooses.
MAX_PASSWORD = 1024

# OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)
