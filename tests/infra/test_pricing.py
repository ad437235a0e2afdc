"""Pricing: the most specific pattern wins, money stays Decimal, the file is checked."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import async_sessionmaker

from activities.nodes import NodeActivities
from infra.pricing import (
    DEFAULT_PRICES,
    PRICES_AS_OF,
    Price,
    Pricing,
    PricingError,
    Tokens,
)
from infra.settings import Settings


def p(i: str, o: str, c: str | None = None) -> Price:
    return Price(Decimal(i), Decimal(o), None if c is None else Decimal(c))


def matched(pricing: Pricing, model: str) -> str | None:
    price = pricing.price(model)
    return None if price is None else price.pattern


def test_the_most_specific_pattern_wins() -> None:
    pricing = Pricing(
        {
            "*": p("9", "9"),
            "gpt-*": p("5", "5"),
            "gpt-4o*": p("2.50", "10"),
            "gpt-4o-mini*": p("0.15", "0.60"),
            "gpt-4o-mini": p("0.10", "0.50"),
            "gpt-4o-mini-2024-??-??": p("0.12", "0.55"),
            "gpt-4o-mini-2024-*": p("0.13", "0.56"),
        }
    )
    assert matched(pricing, "gpt-4o-mini") == "gpt-4o-mini"  # exact beats everything
    # "?" matches one character but is no literal: 18 literal characters beat 17.
    assert matched(pricing, "gpt-4o-mini-2024-07-18") == "gpt-4o-mini-2024-??-??"
    assert matched(pricing, "gpt-4o-mini-2024-7-8") == "gpt-4o-mini-2024-*"
    assert matched(pricing, "gpt-4o-mini-2025-01-01") == "gpt-4o-mini*"
    assert matched(pricing, "gpt-4o-2024-08-06") == "gpt-4o*"
    assert matched(pricing, "gpt-3.5-turbo") == "gpt-*"
    assert matched(pricing, "claude-x") == "*"
    # Matching ignores case; a router prefix is dropped when the full name matches nothing.
    assert matched(pricing, "GPT-4o-Mini") == "gpt-4o-mini"
    narrow = Pricing({"gpt-4o*": p("2.50", "10")})
    assert matched(narrow, "openai/gpt-4o") == "gpt-4o*"
    assert matched(narrow, "openai/o3") is None


def test_ties_go_to_the_file_then_to_the_entry_listed_first() -> None:
    base = {"a?c*": p("1", "1"), "ab?*": p("2", "2")}
    assert matched(Pricing(base), "abcd") == "a?c*"
    assert matched(Pricing(base, {"?bc*": p("3", "3")}), "abcd") == "?bc*"
    # An override with the same pattern replaces the built-in entry (case-insensitively).
    pricing = Pricing(None, {"GPT-4O*": p("1", "2")})
    assert pricing.price("gpt-4o") == Price(Decimal(1), Decimal(2), None, "gpt-4o*")
    assert matched(pricing, "gpt-4o-mini") == "gpt-4o-mini*"  # more specific built-in


def test_character_classes_are_not_literal_characters() -> None:
    pricing = Pricing({"o[134]-mini*": p("1", "1"), "o3*": p("2", "2")})
    assert matched(pricing, "o3-mini") == "o[134]-mini*"  # 6 literals beat 2
    assert matched(pricing, "o2-mini") is None


def test_cost_is_exact_decimal_arithmetic() -> None:
    pricing = Pricing({"m": p("0.15", "0.60", "0.075"), "big": p("15", "75", "1.5")})
    # One cached token at 0.075 per million is 7.5e-8 dollars exactly.
    assert pricing.cost(Tokens(1, 0, 1), "m").cost_usd == Decimal("0.0000000750")
    # 0.1 + 0.2 style sums: no float anywhere.
    one = pricing.cost(Tokens(1_000_000 // 3, 0, 0), "m").cost_usd
    assert one == Decimal("0.04999995")
    cost, price, unpriced = pricing.cost(Tokens(1000, 500, 200), "m")
    # 800 * 0.15 + 200 * 0.075 + 500 * 0.60 = 435 per million
    assert (cost, price.pattern, unpriced) == (Decimal("0.000435"), "m", False)
    assert isinstance(cost, Decimal)
    # A huge call stays exact to the ledger's 10 places.
    assert pricing.cost(Tokens(123_456_789_012, 987_654_321, 0), "big").cost_usd == Decimal(
        "1925925.909255"
    )


def test_costs_round_half_even_at_ten_places() -> None:
    pricing = Pricing({"odd": p("0.00005", "0")})
    assert pricing.cost(Tokens(1, 0, 0), "odd").cost_usd == Decimal("0E-10")  # 0.5e-10
    assert pricing.cost(Tokens(3, 0, 0), "odd").cost_usd == Decimal("2E-10")  # 1.5e-10


def test_cached_tokens_are_part_of_the_prompt() -> None:
    pricing = Pricing({"with": p("2", "8", "0.5"), "without": p("2", "8")})
    assert pricing.cost(Tokens(1000, 0, 1000), "with").cost_usd == Decimal("0.0005")
    # No cached price: cached tokens cost the input price.
    assert pricing.cost(Tokens(1000, 0, 1000), "without").cost_usd == Decimal("0.002")
    # A provider reporting more cached than prompt tokens is clamped, not negative.
    assert pricing.cost(Tokens(10, 0, 50), "with").cost_usd == Decimal("0.000005")
    with pytest.raises(ValueError, match="prompt_tokens"):
        pricing.cost(Tokens(-1, 0, 0), "with")


def test_unknown_models_cost_zero_and_are_flagged_but_fake_ones_are_priced() -> None:
    pricing = Pricing()
    cost, price, unpriced = pricing.cost(Tokens(10**6, 10**6, 0), "my-local-model")
    assert (cost, price.pattern, unpriced) == (Decimal(0), None, True)
    cost, price, unpriced = pricing.cost(Tokens(10**6, 10**6, 0), "fake-echo")
    assert (cost, price.pattern, unpriced) == (Decimal(0), "fake*", False)


def test_the_built_in_table() -> None:
    assert PRICES_AS_OF == "2025-11"
    pricing = Pricing()
    # Every built-in pattern, written out as a model name, is priced by itself: no entry
    # is shadowed by a broader one.
    for pattern in DEFAULT_PRICES:
        name = pattern.replace("*", "")
        assert matched(pricing, name) == pattern, name
    for model, pattern in {
        "gpt-4o-mini-2024-07-18": "gpt-4o-mini*",
        "gpt-4o-2024-05-13": "gpt-4o-2024-05-13",
        "gpt-4.1-nano-2025-04-14": "gpt-4.1-nano*",
        "o3-mini-2025-01-31": "o3-mini*",
        "o4-mini": "o4-mini*",
        "claude-3-5-sonnet-20241022": "claude-3-5-sonnet*",
        "claude-opus-4-5-20251101": "claude-opus-4-5*",
        "claude-opus-4-1": "claude-opus-4*",
        "claude-sonnet-4-5": "claude-sonnet-4*",
        "meta-llama/Meta-Llama-3.1-8B-Instruct": "*llama-3.1-8b*",
        "llama-3.3-70b-versatile": "*llama-3.3-70b*",
    }.items():
        assert matched(pricing, model) == pattern, model
    assert pricing.price("gpt-4o-mini") == Price(
        Decimal("0.15"), Decimal("0.60"), Decimal("0.075"), "gpt-4o-mini*"
    )
    assert matched(pricing, "llama3.1:8b") is None  # self-hosted: unpriced


def test_a_json_pricing_file_reads_numbers_as_decimals(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        '{"models": {"acme-*": {"input": 0.1, "output": "0.3", '
        '"cached_input": 0.05}, "gpt-4o": {"input": 1, "output": 2}}}'
    )
    pricing = Pricing.load(path)
    assert pricing.price("acme-1") == Price(
        Decimal("0.1"), Decimal("0.3"), Decimal("0.05"), "acme-*"
    )
    assert pricing.price("gpt-4o") == Price(Decimal(1), Decimal(2), None, "gpt-4o")
    assert matched(pricing, "gpt-4o-mini") == "gpt-4o-mini*"  # the defaults are still there
    assert pricing.cost(Tokens(3, 0, 0), "acme-1").cost_usd == Decimal("3E-7")

    path.write_text(
        json.dumps({"replace_defaults": True, "models": {"acme-*": {"input": "1", "output": "1"}}})
    )
    replaced = Pricing.load(path)
    assert replaced.patterns == ["acme-*"] and replaced.price("gpt-4o") is None


def test_a_toml_pricing_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        'replace_defaults = true\n[models."llama3*"]\ninput = 0\noutput = 0\n'
        '[models.big]\ninput = 0.1\noutput = "3"\n'
    )
    pricing = Pricing.load(path)
    assert pricing.cost(Tokens(5, 5, 0), "llama3.1:8b") == (
        Decimal(0),
        Price(Decimal(0), Decimal(0), None, "llama3*"),
        False,
    )
    assert pricing.price("big") == Price(Decimal("0.1"), Decimal(3), None, "big")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "is not valid JSON"),
        ("[]", 'expected an object with "models"'),
        ('{"model": {}}', "unknown key 'model'"),
        ('{"models": []}', '"models" must be an object'),
        ('{"models": {}, "replace_defaults": "yes"}', "replace_defaults must be true or false"),
        ('{"models": {"m": {"input": 1}}}', "models.m: output (USD per million tokens) is missing"),
        ('{"models": {"m": {"input": -1, "output": 1}}}', "models.m.input must be between 0"),
        ('{"models": {"m": {"input": "abc", "output": 1}}}', "models.m.input is not a number"),
        ('{"models": {"m": {"input": "NaN", "output": 1}}}', "models.m.input must be between"),
        ('{"models": {"m": {"input": true, "output": 1}}}', "models.m.input must be a number"),
        ('{"models": {"m": {"input": 1, "output": 1, "cache": 1}}}', "unknown key 'cache'"),
        ('{"models": {"m": 5}}', "models.m must be an object"),
        (
            '{"models": {"M": {"input": 1, "output": 1}, "m": {"input": 1, "output": 1}}}',
            "listed twice",
        ),
        ('{"models": {" ": {"input": 1, "output": 1}}}', "a pattern is 1 to 200 characters"),
    ],
)
def test_a_bad_pricing_file_says_what_and_where(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(PricingError) as caught:
        Pricing.load(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_a_pricing_file_that_does_not_load_stops_the_worker(tmp_path: Path) -> None:
    def make(value: object) -> Settings:
        return Settings(_env_file=None, pricing_file=value)  # type: ignore[call-arg]

    # Settings see only that the file is there (they import no domain module) ...
    with pytest.raises(
        ValidationError,
        match=r"KEEL_PRICING_FILE: cannot read the pricing "
        r"file .*missing\.json",
    ):
        make(tmp_path / "missing.json")
    # ... the worker reads it as it starts, and a bad one stops it.
    bad = tmp_path / "bad.toml"
    bad.write_text("models = 3\n")
    with pytest.raises(PricingError, match='"models" must be an object'):
        NodeActivities(make(bad), async_sessionmaker())
    good = tmp_path / "good.json"
    good.write_text('{"models": {}}')
    assert make(str(good)).pricing_file == good
    assert make("").pricing_file is None
