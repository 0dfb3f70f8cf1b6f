"""Amounts as people type them, held as integer minor units."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from miniupi.money import INT64_MAX, BadAmount, format_amount, parse_amount


@pytest.mark.parametrize("text, minor", [
    ("125.50", 12550), ("0", 0), ("1", 100), ("0.01", 1), ("1000.5", 100050), (" 7.10 ", 710),
    ("007.5", 750), ("\t12\t", 1200),
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


# -- the grammar: ASCII digits, optionally a point and one or two more, nothing else ----------

DIGITS = "0123456789"


def by_hand(text: str) -> int | None:
    """The grammar again, read character by character without a regex: minor units, or None."""
    body = text.strip(" \t")
    whole, point, frac = body.partition(".")
    if not whole or any(c not in DIGITS for c in whole + frac) or (point and not 1 <= len(frac) <= 2):
        return None
    return int(whole) * 100 + int(frac.ljust(2, "0"))


@st.composite
def amounts_in_the_grammar(draw: st.DrawFn) -> tuple[str, int]:
    """Text in the grammar with its value, worked out from the pieces it was built from."""
    whole = draw(st.text(DIGITS, min_size=1, max_size=22))
    frac = draw(st.sampled_from(["", "x", "xx"]))
    frac = "".join(draw(st.sampled_from(DIGITS)) for _ in frac)
    pad = st.text(" \t", max_size=2)
    text = draw(pad) + whole + ("." + frac if frac else "") + draw(pad)
    return text, int(whole) * 100 + (int(frac) * 10 ** (2 - len(frac)) if frac else 0)


@given(amounts_in_the_grammar())
def test_every_amount_in_the_grammar_parses_to_its_exact_value_or_is_too_large(case: tuple[str, int]) -> None:
    text, minor = case
    if minor <= INT64_MAX:
        assert parse_amount(text) == minor
        assert parse_amount(format_amount(minor)) == minor
    else:
        with pytest.raises(BadAmount, match="too large"):
            parse_amount(text)


def with_examples(*texts: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Hypothesis examples that are always tried: the attack run's own inputs among them."""
    def add(test: Callable[..., None]) -> Callable[..., None]:
        for text in texts:
            test = example(text)(test)
        return test
    return add


# Characters that people, locales and Python's own number parsers take for parts of a number.
NEAR_MISSES = "0123456789.,_+-eE \t\n\u00a0\u2009\u0663\u06f5\uff15\u0966\U0001d7d9"


@given(st.text(st.sampled_from(NEAR_MISSES), max_size=12) | st.text(max_size=30))
@with_examples("1,50", "1_000", "1e999999", "+5", "5.", ".5", ".", "\u0661\u0662", "\uff11\uff12", "1 000",
               "\u00a012", "12\n", "0x10", "-0", "1.5e1", "Infinity", "NaN", "1.")
def test_text_outside_the_grammar_is_refused_with_bad_amount_and_nothing_else(text: str) -> None:
    expected = by_hand(text)
    if expected is None:
        with pytest.raises(BadAmount, match="amount"):
            parse_amount(text)
    elif expected <= INT64_MAX:
        assert parse_amount(text) == expected
        assert format_amount(parse_amount(text)) == f"{expected // 100}.{expected % 100:02d}"


@pytest.mark.parametrize("text", ["1,50", "1e999999", "5.", ".5", "\u0661", "1_0"])
def test_refusal_says_what_an_amount_looks_like(text: str) -> None:
    with pytest.raises(BadAmount) as refused:
        parse_amount(text)
    assert str(refused.value) == f"not an amount: {text!r} (use digits with at most two decimals, such as 125.50)"


def test_a_huge_amount_is_refused_quickly_in_one_short_line() -> None:
    for text in ("9" * 1_000_000, "1" + "0" * 5000 + ".00"):
        with pytest.raises(BadAmount, match="too large") as refused:
            parse_amount(text)
        assert len(str(refused.value)) < 200 and "\n" not in str(refused.value)
    assert parse_amount("0" * 100_000 + "1.25") == 125


def test_the_cluster_file_refuses_amounts_outside_the_grammar(tmp_path: Path) -> None:
    from miniupi.config import ConfigError, load_config

    path = tmp_path / "cluster.toml"
    path.write_text('[cluster]\nmax_opening_deposit = "1,000.00"\n[gateway]\n[banks.bank_a]\n')
    with pytest.raises(ConfigError, match="max_opening_deposit"):
        load_config(path)
