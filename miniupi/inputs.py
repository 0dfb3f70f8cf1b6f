"""What people type besides amounts, checked strictly, and shown back in one line.

A count (`history --limit 5`, `history 5` in the REPL) is ASCII digits from
1 to a bound: int() would take '-1', '1_000', ' 7 ' and Arabic-Indic digits,
and the wire field is a uint32.
"""
from __future__ import annotations

import argparse
import re
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
