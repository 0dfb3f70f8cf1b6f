"""A bank's setup file: the accounts it opens on its very first start.

    [accounts.alice]
    balance = "1000.00"
    password = "..."     # hashed on load; only the hash is stored
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from miniupi.config import DEFAULT_MAX_BALANCE, NAME_RE, ConfigError, read_toml
from miniupi.money import BadAmount, format_amount, parse_amount


@dataclass(frozen=True)
class SetupAccount:
    name: str
    balance: int
    password: str


def read_setup_file(path: Path, max_balance: int = DEFAULT_MAX_BALANCE,
                    reserved: frozenset[str] = frozenset()) -> list[SetupAccount]:
    """The file's accounts, or one ConfigError for the first wrong entry; none above `max_balance`,
    and none named `reserved` (identities, bank names)."""
    raw = read_toml(path, "accounts file")
    table = raw.get("accounts")
    if not isinstance(table, dict) or set(raw) - {"accounts"}:
        raise ConfigError(f"{path}: expected only [accounts.NAME] tables")
    out = []
    for name, entry in table.items():
        def error(key: str, expected: str) -> ConfigError:
            return ConfigError(f"{path}: key 'accounts.{name}{key}': expected {expected}")

        if not NAME_RE.match(name):
            raise error("", "an account name of lower-case letters, digits and _")
        if name in reserved:
            raise error("", f"a user name that is not reserved ({', '.join(sorted(reserved))} are)")
        if not isinstance(entry, dict) or set(entry) - {"balance", "password"}:
            raise error("", "a table with balance and password")
        password, balance = entry.get("password"), entry.get("balance", "0")
        if not isinstance(password, str) or not password:
            raise error(".password", "a non-empty string")
        try:
            minor = parse_amount(balance) if isinstance(balance, str) else None
        except BadAmount:
            minor = None
        if minor is None:
            raise error(".balance", 'an amount as a string, such as "1000.00"')
        if minor > max_balance:
            raise error(".balance", f"at most the cluster's max_balance, {format_amount(max_balance)}")
        out.append(SetupAccount(name, minor, password))
    return out
