"""What an LLM call costs: model name patterns -> USD per million tokens.

``Pricing.load(settings.pricing_file)`` gives the built-in table (``DEFAULT_PRICES``)
with the settings file's entries laid over it; ``pricing.cost(usage, model)`` prices
one call. Prices and costs are USD as ``Decimal`` (see ``infra.usd``) from the table to the
ledger: no float ever touches them.

Patterns are fnmatch-style (``*``, ``?``, ``[...]``), matched against the lower-cased
model name. When several match, the most specific wins: a pattern without wildcards
(an exact name) beats any wildcard pattern, then the pattern with more literal
characters wins (``gpt-4o-mini*`` beats ``gpt-4o*``), then the one with fewer ``*``.
Remaining ties go to the pricing file over the built-ins, then to the entry listed
first. A model named with a router prefix (``openai/gpt-4o``) that matches nothing as
written is looked up again without the prefix.

Token accounting follows the OpenAI usage object, which every OpenAI-compatible
endpoint reports: ``cached_tokens`` are the part of ``prompt_tokens`` served from the
provider's prompt cache (charged at the cached-input price, or at the input price when
the entry has none) and ``reasoning_tokens`` are part of ``completion_tokens`` (already
charged as output). So::

    cost = ((prompt - cached) * input + cached * cached_input + completion * output) / 1e6

rounded half-even to 10 decimal places (``infra.usd.USD_QUANTUM``, the ledger's precision).

Models no pattern matches cost 0 and are flagged ``unpriced``, so reports can say
their spend is unknown rather than pretend it is zero. The built-in offline model
(provider ``fake``, models ``fake-*``) is *priced*, at 0: it really costs nothing, and
flagging it would bury real unpriced models in noise. Pricing goes by model name only,
so a ``fake`` agent whose model is named ``gpt-4o-mini`` is priced like gpt-4o-mini:
that is how the budget can be exercised offline. Self-hosted models (Ollama, vLLM)
are unpriced unless the pricing file prices them (``{"input": 0, "output": 0}`` is
the usual entry).

The pricing file (setting ``pricing_file``, JSON or, for a ``.toml`` name, TOML)::

    {
        "replace_defaults": false,
        "models": {
            "gpt-4o-mini": {"input": "0.15", "output": "0.60", "cached_input": "0.075"},
            "llama3*": {"input": 0, "output": 0},
        },
    }

Prices are USD per million tokens, as strings or numbers (numbers are read as
decimals, never through float). An entry replaces the built-in entry with the same
pattern; ``replace_defaults: true`` drops the built-in table altogether.
"""

from __future__ import annotations

import fnmatch
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from infra.usd import USD_QUANTUM

MILLION = Decimal(1_000_000)
MAX_PRICE = Decimal(1_000_000)  # USD per million tokens; anything above is a typo
MAX_PATTERN_LENGTH = 200

# Public list prices, USD per million tokens (standard tier: no batch or priority
# discounts, prompts up to 200k tokens where the price is tiered), taken from the
# vendors' price pages in November 2025. Prices change: check them, and correct or
# extend them with a pricing file rather than trusting this table for invoices.
PRICES_AS_OF = "2025-11"
#                 pattern                 input     output   cached input
_DEFAULTS: tuple[tuple[str, str, str, str | None], ...] = (
    # The built-in offline model: free, and priced as such (not "unpriced").
    ("fake*", "0", "0", None),
    # OpenAI
    ("gpt-5*", "1.25", "10.00", "0.125"),
    ("gpt-5-mini*", "0.25", "2.00", "0.025"),
    ("gpt-5-nano*", "0.05", "0.40", "0.005"),
    ("gpt-5-pro*", "15.00", "120.00", None),
    ("gpt-4.1*", "2.00", "8.00", "0.50"),
    ("gpt-4.1-mini*", "0.40", "1.60", "0.10"),
    ("gpt-4.1-nano*", "0.10", "0.40", "0.025"),
    ("gpt-4o*", "2.50", "10.00", "1.25"),
    ("gpt-4o-2024-05-13", "5.00", "15.00", None),
    ("gpt-4o-mini*", "0.15", "0.60", "0.075"),
    ("gpt-4-turbo*", "10.00", "30.00", None),
    ("gpt-4", "30.00", "60.00", None),
    ("gpt-4-0613", "30.00", "60.00", None),
    ("gpt-3.5-turbo*", "0.50", "1.50", None),
    ("o1*", "15.00", "60.00", "7.50"),
    ("o1-mini*", "1.10", "4.40", "0.55"),
    ("o1-pro*", "150.00", "600.00", None),
    ("o3*", "2.00", "8.00", "0.50"),
    ("o3-mini*", "1.10", "4.40", "0.55"),
    ("o3-pro*", "20.00", "80.00", None),
    ("o4-mini*", "1.10", "4.40", "0.275"),
    # Anthropic (cached input = cache reads)
    ("claude-opus-4*", "15.00", "75.00", "1.50"),
    ("claude-opus-4-5*", "5.00", "25.00", "0.50"),
    ("claude-sonnet-4*", "3.00", "15.00", "0.30"),
    ("claude-haiku-4-5*", "1.00", "5.00", "0.10"),
    ("claude-3-opus*", "15.00", "75.00", "1.50"),
    ("claude-3-7-sonnet*", "3.00", "15.00", "0.30"),
    ("claude-3-5-sonnet*", "3.00", "15.00", "0.30"),
    ("claude-3-5-haiku*", "0.80", "4.00", "0.08"),
    ("claude-3-haiku*", "0.25", "1.25", "0.03"),
    # Google
    ("gemini-2.5-pro*", "1.25", "10.00", None),
    ("gemini-2.5-flash*", "0.30", "2.50", None),
    ("gemini-2.5-flash-lite*", "0.10", "0.40", None),
    ("gemini-2.0-flash*", "0.10", "0.40", None),
    ("gemini-2.0-flash-lite*", "0.075", "0.30", None),
    # Mistral
    ("mistral-large*", "2.00", "6.00", None),
    ("mistral-medium*", "0.40", "2.00", None),
    ("mistral-small*", "0.10", "0.30", None),
    # Llama as hosted by Groq (self-hosted Llama is free: price it 0 in a pricing file)
    ("*llama-3.3-70b*", "0.59", "0.79", None),
    ("*llama-3.1-8b*", "0.05", "0.08", None),
)


class PricingError(ValueError):
    """The pricing file is missing, unreadable or wrong; the message says where."""


class TokenUsage(Protocol):
    """What pricing needs of a call's usage (``workflows.contracts.Usage`` fits)."""

    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def cached_tokens(self) -> int: ...


@dataclass(frozen=True)
class Tokens:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True)
class Price:
    """USD per million tokens. ``pattern`` is the entry that matched (None: unpriced)."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    pattern: str | None = None

    @property
    def cached_input_or_input(self) -> Decimal:
        return self.input if self.cached_input is None else self.cached_input


UNPRICED = Price(Decimal(0), Decimal(0), None, None)


class Cost(NamedTuple):
    """``cost_usd, price, unpriced = pricing.cost(usage, model)``."""

    cost_usd: Decimal
    price: Price
    unpriced: bool


@dataclass(frozen=True)
class _Entry:
    pattern: str
    price: Price
    rank: tuple[int, int, int, int, int]  # larger is more specific; see module docs

    def matches(self, model: str) -> bool:
        return fnmatch.fnmatchcase(model, self.pattern)


def _literal_chars(pattern: str) -> int:
    count, i = 0, 0
    while i < len(pattern):
        char = pattern[i]
        if char in "*?":
            i += 1
            continue
        if char == "[":
            end = pattern.find("]", i + 2)
            if end != -1:  # a character class matches one character: not a literal
                i = end + 1
                continue
        count += 1
        i += 1
    return count


def _entry(pattern: str, price: Price, from_file: bool, position: int) -> _Entry:
    pattern = pattern.lower()
    exact = not any(c in pattern for c in "*?[")
    rank = (int(exact), _literal_chars(pattern), -pattern.count("*"), int(from_file), -position)
    return _Entry(pattern, Price(price.input, price.output, price.cached_input, pattern), rank)


class Pricing:
    """A price table. Immutable; build it once per process (``Pricing.load``)."""

    def __init__(
        self,
        prices: Mapping[str, Price] | None = None,
        overrides: Mapping[str, Price] | None = None,
    ) -> None:
        """``prices``: the base table (default the built-ins); ``overrides`` win over it."""
        base = dict(DEFAULT_PRICES if prices is None else prices)
        override = {p.lower(): v for p, v in (overrides or {}).items()}
        base = {p.lower(): v for p, v in base.items() if p.lower() not in override}
        entries = [_entry(p, v, False, i) for i, (p, v) in enumerate(base.items())]
        entries += [_entry(p, v, True, i) for i, (p, v) in enumerate(override.items())]
        self._entries = sorted(entries, key=lambda e: e.rank, reverse=True)
        self._cache: dict[str, Price | None] = {}

    @classmethod
    def load(cls, path: Path | str | None) -> Pricing:
        """The built-in table, with the pricing file at ``path`` (if any) laid over it."""
        if path is None:
            return cls()
        replace, overrides = read_pricing_file(Path(path))
        return cls({} if replace else None, overrides)

    @property
    def patterns(self) -> list[str]:
        """Every pattern, most specific first (the order they are tried in)."""
        return [e.pattern for e in self._entries]

    def price(self, model: str) -> Price | None:
        """The price in force for ``model``, or None when no pattern matches it."""
        key = model.strip().lower()
        if key not in self._cache:
            found = self._match(key)
            if found is None and "/" in key:
                found = self._match(key.rsplit("/", 1)[1])
            self._cache[key] = found
        return self._cache[key]

    def _match(self, model: str) -> Price | None:
        return next((e.price for e in self._entries if e.matches(model)), None)

    def cost(self, usage: TokenUsage, model: str) -> Cost:
        """What one call cost, the prices used, and whether the model was unpriced."""
        price = self.price(model)
        if price is None:
            return Cost(Decimal(0), UNPRICED, True)
        prompt = _tokens(usage.prompt_tokens, "prompt_tokens")
        completion = _tokens(usage.completion_tokens, "completion_tokens")
        # Cached tokens are part of the prompt; a provider reporting more is clamped.
        cached = min(_tokens(usage.cached_tokens, "cached_tokens"), prompt)
        total = (
            (prompt - cached) * price.input
            + cached * price.cached_input_or_input
            + completion * price.output
        ) / MILLION
        return Cost(total.quantize(USD_QUANTUM, rounding=ROUND_HALF_EVEN), price, False)


def _tokens(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    return value


DEFAULT_PRICES: dict[str, Price] = {
    pattern: Price(Decimal(i), Decimal(o), None if c is None else Decimal(c))
    for pattern, i, o, c in _DEFAULTS
}


# -- the pricing file ------------------------------------------------------------------------


def _usd_per_mtok(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        raise PricingError(f'{where} must be a number or a string such as "0.15", got {value!r}')
    try:
        amount = Decimal(value) if not isinstance(value, str) else Decimal(value.strip())
    except InvalidOperation:
        raise PricingError(f"{where} is not a number: {value!r}") from None
    if not amount.is_finite() or amount < 0 or amount > MAX_PRICE:
        raise PricingError(
            f"{where} must be between 0 and {MAX_PRICE} (USD per million tokens), got {value!r}"
        )
    return amount


def parse_pricing(document: Any, source: str = "pricing file") -> tuple[bool, dict[str, Price]]:
    """``(replace_defaults, {pattern: Price})`` from a parsed pricing document."""
    if not isinstance(document, dict):
        raise PricingError(
            f'{source}: expected an object with "models", got {type(document).__name__}'
        )
    unknown = set(document) - {"replace_defaults", "models"}
    if unknown:
        raise PricingError(
            f"{source}: unknown key {sorted(unknown)[0]!r}; expected "
            '"models" and optionally "replace_defaults"'
        )
    replace = document.get("replace_defaults", False)
    if not isinstance(replace, bool):
        raise PricingError(f"{source}: replace_defaults must be true or false")
    models = document.get("models")
    if not isinstance(models, dict):
        raise PricingError(
            f'{source}: "models" must be an object of pattern -> {{"input": ..., "output": ...}}'
        )
    prices: dict[str, Price] = {}
    for pattern, entry in models.items():
        where = f"{source}: models.{pattern}"
        if not pattern.strip() or len(pattern) > MAX_PATTERN_LENGTH:
            raise PricingError(f"{where}: a pattern is 1 to {MAX_PATTERN_LENGTH} characters")
        if pattern.lower() in {p.lower() for p in prices}:
            raise PricingError(f"{where}: the pattern is listed twice (patterns ignore case)")
        if not isinstance(entry, dict):
            raise PricingError(f'{where} must be an object with "input" and "output"')
        extra = set(entry) - {"input", "output", "cached_input"}
        if extra:
            raise PricingError(
                f"{where}: unknown key {sorted(extra)[0]!r}; expected input, "
                "output and optionally cached_input"
            )
        missing = [k for k in ("input", "output") if k not in entry]
        if missing:
            raise PricingError(f"{where}: {missing[0]} (USD per million tokens) is missing")
        cached = entry.get("cached_input")
        prices[pattern.strip()] = Price(
            _usd_per_mtok(entry["input"], f"{where}.input"),
            _usd_per_mtok(entry["output"], f"{where}.output"),
            None if cached is None else _usd_per_mtok(cached, f"{where}.cached_input"),
        )
    return replace, prices


def read_pricing_file(path: Path) -> tuple[bool, dict[str, Price]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PricingError(f"cannot read the pricing file {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() == ".toml":
            document: Any = tomllib.loads(text, parse_float=Decimal)
        else:
            document = json.loads(text, parse_float=Decimal)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        raise PricingError(f"the pricing file {path} is not valid {kind}: {exc}") from None
    return parse_pricing(document, str(path))
