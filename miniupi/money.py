"""Money as integer minor units: parsing what people type, showing it back.

Floats never hold money here. "125.50" becomes 12550 through Decimal and
back through divmod, so no amount is ever rounded behind the user's back.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

MINOR_DIGITS = 2
INT64_MAX = 2**63 - 1
_SCALE = 10**MINOR_DIGITS


class BadAmount(ValueError):
    """The text is not an amount this system can hold."""


def parse_amount(text: str) -> int:
    """'125.50' -> 12550. Refuses more than two decimals, signs, and overflow."""
    cleaned = text.strip().replace(",", "").replace("_", "")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise BadAmount(f"not an amount: {text!r}") from None
    if not value.is_finite():
        raise BadAmount(f"not an amount: {text!r}")
    if value < 0:
        raise BadAmount(f"amount must not be negative: {text!r}")
    minor = value * _SCALE
    if minor != minor.to_integral_value():
        raise BadAmount(f"at most {MINOR_DIGITS} decimal places: {text!r}")
    if minor > INT64_MAX:
        raise BadAmount(f"amount too large: {text!r}")
    return int(minor)


def format_amount(minor: int) -> str:
    """12550 -> '125.50'; -5 -> '-0.05'."""
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), _SCALE)
    return f"{sign}{whole}.{frac:0{MINOR_DIGITS}d}"
