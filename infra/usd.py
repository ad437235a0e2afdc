"""USD: how Keel names, stores, sums and writes money.

Every amount of money in Keel is US dollars held as ``Decimal`` (never float), and it is
called *usd* everywhere: ``cost_usd``, ``monthly_usd``, ``input_usd_per_mtok`` in the
database and the API, ``usd_*`` for the helpers here.

- Stored: ``USD_TYPE``, NUMERIC(20, 10). Ten decimal places per row, so that the sum of
  many small calls stays exact; pricing rounds each call to ``USD_QUANTUM``.
- Summed in SQL: ``usd_sum`` / ``usd_from_sum``. MySQL/MariaDB sum DECIMAL columns
  exactly; SQLite stores NUMERIC as REAL, so there each row's amount is turned into an
  integer count of 1e-10 USD (exact for any amount below ~$900,000 a row) and the
  integers are summed.
- Written: ``usd_text`` for the API (a decimal string with six places, "0.001250");
  ``usd_label`` for messages to people ("$5.00").
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Numeric, func
from sqlalchemy import cast as sql_cast

USD_PLACES = 10
USD_QUANTUM = Decimal(1).scaleb(-USD_PLACES)  # 1e-10, the smallest amount stored
USD_TYPE = Numeric(20, USD_PLACES)
USD_TEXT_QUANTUM = Decimal("0.000001")  # the API shows six places
_USD_UNITS = 10**USD_PLACES


def usd_sum(dialect: str, column: Any) -> ColumnElement[Any]:
    """SUM of a ``USD_TYPE`` column, exactly (read the result with ``usd_from_sum``)."""
    if dialect == "sqlite":
        return func.sum(sql_cast(func.round(column * _USD_UNITS), BigInteger))
    return func.sum(column)


def usd_from_sum(dialect: str, value: Any) -> Decimal:
    """The amount a ``usd_sum`` returned (no rows: 0)."""
    if value is None:
        return Decimal(0)
    if dialect == "sqlite":
        return Decimal(int(value)).scaleb(-USD_PLACES)
    return Decimal(value)


def usd_text(amount: Decimal) -> str:
    """An amount as the API shows it: six decimals, as text ("0.001250")."""
    return f"{amount.quantize(USD_TEXT_QUANTUM):f}"


def usd_label(amount: Decimal) -> str:
    """``$5.00``, ``$0.0042``: cents at least, up to the micro-dollars reports show."""
    text = f"{amount.quantize(USD_TEXT_QUANTUM):f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"
