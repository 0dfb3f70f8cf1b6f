"""The meaning of a conditional write's Expect and of a claim, shared by every storage kind.

Each store checks its expectations where its own atomicity lives (SQLite
inside BEGIN IMMEDIATE, the JSON store in its one writer, PostgreSQL under
row locks); what "holds" means is decided here once, so the three agree.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from miniupi.contract.store import Conflict, Expect, Put


def json_equal(a: Any, b: Any) -> bool:
    """Equal as JSON values: Python's == except that true is not 1 and false is not 0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return bool(a == b)


def holds(expect: Expect, current: Any | None) -> bool:
    """Whether table[key], as stored now (None: absent), meets `expect`.

    A field must be present to match: value None asks for a JSON null there,
    not for the field's absence.
    """
    if expect.field is None:
        return current is None
    return isinstance(current, dict) and expect.field in current and json_equal(current[expect.field], expect.value)


def require(expect: Expect, current: Any | None) -> None:
    """Raise Conflict unless `current` (table[key] now, None: absent) meets `expect`."""
    if not holds(expect, current):
        wanted = "no row" if expect.field is None else f"{expect.field} == {expect.value!r}"
        raise Conflict(f"{expect.table}/{expect.key}: expected {wanted}")


def last_puts(batch: Sequence[Put]) -> dict[tuple[str, str], Any]:
    """The last value a batch writes to each (table, key), None for a delete: within a batch the last
    write to a key wins. Raises TypeError for a table or key that is not a str."""
    last: dict[tuple[str, str], Any] = {}
    for table, key, value in batch:
        if not isinstance(table, str) or not isinstance(key, str):
            raise TypeError(f"table and key must be str, got {table!r}, {key!r}")
        last[table, key] = value
    return last


def inserted_keys(batch: Sequence[Put], expect: Sequence[Expect]) -> set[tuple[str, str]]:
    """The (table, key) of every absent-row expectation, each of which the batch must put (not delete).

    Raises ValueError for one it does not: "must be absent" alone would be a
    read, and these are write conditions.
    """
    last = last_puts(batch)
    inserted = set()
    for e in expect:
        if not isinstance(e.table, str) or not isinstance(e.key, str):
            raise TypeError(f"table and key must be str, got {e.table!r}, {e.key!r}")
        if e.field is None:
            if last.get((e.table, e.key)) is None:
                raise ValueError(f"an expectation that {e.table}/{e.key} is absent needs a put of that key")
            inserted.add((e.table, e.key))
        elif not isinstance(e.field, str):
            raise TypeError(f"an expectation's field must be str or None, got {e.field!r}")
    return inserted


def claimable(value: Any, field: str, owners: Collection[str]) -> bool:
    """Whether a row may be claimed: a JSON object whose value[field] is one of `owners`."""
    return isinstance(value, dict) and isinstance(value.get(field), str) and value[field] in owners


def claimed(value: dict[str, Any], field: str, owner: str) -> dict[str, Any]:
    """The row as a claim writes it."""
    return {**value, field: owner}


def check_claim(table: str, field: str, owner: str, limit: int) -> None:
    if not isinstance(table, str) or not isinstance(field, str) or not isinstance(owner, str):
        raise TypeError("table, field and owner must be str")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise ValueError(f"limit must be a whole number of at least 0, not {limit!r}")
