"""What people type besides amounts, checked strictly, and shown back in one line.

A count (`history --limit 5`, `history 5` in the REPL) is ASCII digits from
1 to a bound: int() would take '-1', '1_000', ' 7 ' and Arabic-Indic digits,
and the wire field is a uint32. A duration (`request --expires 15m`) and a
point in time (`settlement --since 2026-12-06`) get the same strictness.
"""
from __future__ import annotations

import argparse
import re
from datetime import datetime
from collections.abc import Callable

from miniupi.errors import InvalidArgument

HISTORY_MAX = 1000  # the most a bank returns (MAX_HISTORY in nodes/bank.py)
QUEUE_MAX = 10_000
_COUNT = re.compile(r"[0-9]{1,9}")
_NUMBER = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,6})?")


def quoted(text: str) -> str:
    """What the user typed, for a one-line message: repr escapes newlines, and long text is cut."""
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "..."


def parse_count(text: str, maximum: int) -> int:
    """'20' -> 20; InvalidArgument unless it is a whole number from 1 to `maximum`."""
    if _COUNT.fullmatch(text) and 1 <= int(text) <= maximum:
        return int(text)
    raise InvalidArgument(f"not a count from 1 to {maximum}: {quoted(text)}")


def count(maximum: int) -> Callable[[str], int]:
    """parse_count as an argparse type."""
    def parse(text: str) -> int:
        try:
            return parse_count(text, maximum)
        except InvalidArgument as e:
            raise argparse.ArgumentTypeError(e.message) from None
    return parse


def parse_positive_number(text: str, maximum: float) -> float:
    """'7.5' -> 7.5; InvalidArgument unless a plain decimal above 0 and at most `maximum`.

    float() would take nan, inf, 1e9, '1_0' and ' 7 '.
    """
    if _NUMBER.fullmatch(text) and 0 < float(text) <= maximum:
        return float(text)
    raise InvalidArgument(f"not a number above 0 and at most {maximum:g}: {quoted(text)}")


def positive_number(maximum: float) -> Callable[[str], float]:
    """parse_positive_number as an argparse type."""
    def parse(text: str) -> float:
        try:
            return parse_positive_number(text, maximum)
        except InvalidArgument as e:
            raise argparse.ArgumentTypeError(e.message) from None
    return parse


_DURATION = re.compile(r"([0-9]{1,9})([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
# A date, or a date and a time to the minute or second, with an optional offset: what fromisoformat
# reads, less what it also takes that nobody means here (week dates, 20261206, fractions, a space).
_POINT_IN_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:T[0-9]{2}:[0-9]{2}(?::[0-9]{2})?(?:Z|[+-][0-9]{2}:[0-9]{2})?)?")


def parse_duration(text: str, maximum_s: int) -> int:
    """'90s', '15m', '2h', '7d' -> seconds; InvalidArgument unless from 1 s to `maximum_s`."""
    match = _DURATION.fullmatch(text)
    if match and 1 <= int(match.group(1)) * _UNIT_S[match.group(2)] <= maximum_s:
        return int(match.group(1)) * _UNIT_S[match.group(2)]
    longest = f"{maximum_s // 86_400}d" if maximum_s % 86_400 == 0 else f"{maximum_s}s"
    raise InvalidArgument(f"not a duration from 1s to {longest}: {quoted(text)} (such as 90s, 15m, 2h or 7d)")


def duration(maximum_s: int) -> Callable[[str], int]:
    """parse_duration as an argparse type."""
    def parse(text: str) -> int:
        try:
            return parse_duration(text, maximum_s)
        except InvalidArgument as e:
            raise argparse.ArgumentTypeError(e.message) from None
    return parse


def parse_point_in_time(text: str) -> datetime:
    """'2026-12-06', '2026-12-06T10:30', '2026-12-06T10:30:15' (each with an offset, or Z, allowed
    after the time). Naive unless an offset is given: the caller says in which zone it is meant."""
    if _POINT_IN_TIME.fullmatch(text):
        try:
            return datetime.fromisoformat(text)
        except ValueError:  # 2026-02-30, 25:00, ...
            pass
    raise InvalidArgument(f"not a date or time: {quoted(text)} (such as 2026-12-06 or 2026-12-06T10:30)")


def point_in_time(text: str) -> datetime:
    """parse_point_in_time as an argparse type."""
    try:
        return parse_point_in_time(text)
    except InvalidArgument as e:
        raise argparse.ArgumentTypeError(e.message) from None


_CURSOR = re.compile(r"[!-~]{1,64}")  # printable ASCII: the bank checks the rest


def history_cursor(text: str) -> str:
    """A `history --before` cursor as an argparse type: what a page printed, passed on as it is."""
    if _CURSOR.fullmatch(text):
        return text
    raise argparse.ArgumentTypeError(f"not a history cursor: {quoted(text)} (pass the one a page of history printed)")
