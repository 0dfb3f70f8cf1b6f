"""Amounts as people type them, held as integer minor units."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from miniupi.money import INT64_MAX, BadAmount, format_amount, parse_amount


@pytest.mark.parametrize("text, minor", [
    ("125.50", 12550), ("0", 0), ("1", 100), ("0.01", 1), ("1,000.5", 100050), (" 7.10 ", 710),
    ("92233720368547758.07", INT64_MAX),
])
def test_decimal_text_becomes_exact_minor_units(text: str, minor: int) -> None:
    assert parse_amount(text) == minor


@pytest.mark.parametrize("text", ["abc", "", "12.345", "-1", "1e400", "nan", "inf", "92233720368547758.08", "0x10"])
def test_bad_amounts_are_refused_with_the_text(text: str) -> None:
    with pytest.raises(BadAmount):
        parse_amount(text)


@given(st.integers(min_value=0, max_value=INT64_MAX))
def test_format_then_parse_is_the_identity(minor: int) -> None:
    assert parse_amount(format_amount(minor)) == minor


def test_negative_amounts_format_with_a_sign() -> None:
    assert format_amount(-5) == "-0.05"
    assert format_amount(-12550) == "-125.50"
