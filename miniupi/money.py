"""Money as integer minor units: parsing what people type, showing it back.

Floats never hold money here. "125.50" becomes 12550 by integer arithmetic
on the digits and back through divmod, so no amount is ever rounded behind
the user's back.

One grammar for every place an amount is typed (the command line, the REPL,
the library's helpers, the cluster and setup files): ASCII digits, then
optionally a point and one or two more digits. Nothing else is an amount:
no sign, exponent, thousands separator, underscore, inner space, "5." or
".5", and no other script's digits, because every one of those has been
read differently by someone ("1,50" is 150 to Python and 1.50 to half the
world). Spaces and tabs around the amount are ignored.
"""
from __future__ import annotations

import re

from miniupi.inputs import quoted

MINOR_DIGITS = 2
INT64_MAX = 2**63 - 1
_SCALE = 10**MINOR_DIGITS
# [0-9], not \d: \d also matches Arabic-Indic, full-width and other digits.
_AMOUNT = re.compile(r"[ \t]*([0-9]+)(?:\.([0-9]{1,2}))?[ \t]*")
HOW = "use digits with at most two decimals, such as 125.50"


class BadAmount(ValueError):
    """The text is not an amount this system can hold."""


def parse_amount(text: str) -> int:
    """'125.50' -> 12550. Refuses anything outside the grammar above, and overflow."""
    if not isinstance(text, str):
        raise BadAmount(f"not an amount: {text!r} ({HOW})")
    match = _AMOUNT.fullmatch(text)
    if match is None:
        if _AMOUNT.fullmatch(text.strip(" \t").removeprefix("-")):
            raise BadAmount(f"amount must not be negative: {quoted(text)}")
        raise BadAmount(f"not an amount: {quoted(text)} ({HOW})")
    whole, frac = match.group(1).lstrip("0"), match.group(2) or ""
    # Counted before int(): a million digits must not cost a million-digit conversion.
    if len(whole) <= len(str(INT64_MAX // _SCALE)):
        minor = int(whole or "0") * _SCALE + int(frac.ljust(MINOR_DIGITS, "0"))
        if minor <= INT64_MAX:
            return minor
    raise BadAmount(f"amount too large: {quoted(text)} (at most {format_amount(INT64_MAX)})")


def format_amount(minor: int) -> str:
    """12550 -> '125.50'; -5 -> '-0.05'."""
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), _SCALE)
    return f"{sign}{whole}.{frac:0{MINOR_DIGITS}d}"
