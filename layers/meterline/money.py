"""Money as integers.

Prices are stored as integer micro-dollars per million tokens (USD 2.50 / 1M tokens -> 2_500_000),
so every catalog price with up to six decimals is exact. A request's cost is the exact integer
sum of tokens x price over its token classes, in micro-dollars x 1e-6, rounded once, half up,
to whole micro-dollars. No floats anywhere on the money path.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

PER_MILLION = 1_000_000


class MoneyFormatError(ValueError):
    """A price or amount that cannot be represented exactly in micro-dollars."""


def usd_to_micros(value: str | int | Decimal) -> int:
    """Parse a USD amount ('2.50') into integer micro-dollars, refusing anything inexact."""
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise MoneyFormatError(f"not a decimal amount: {value!r}") from exc
    if not amount.is_finite() or amount < 0:
        raise MoneyFormatError(f"amount must be finite and non-negative: {value!r}")
    micros = amount * PER_MILLION
    if micros != micros.to_integral_value():
        raise MoneyFormatError(f"more precision than a micro-dollar: {value!r}")
    return int(micros)


def round_scaled(numerator: int, denominator: int = PER_MILLION) -> int:
    """numerator / denominator, rounded half up (numerator >= 0)."""
    quotient, remainder = divmod(numerator, denominator)
    return quotient + (1 if remainder * 2 >= denominator else 0)


def micros_to_usd(micros: int) -> str:
    """Integer micro-dollars as a fixed six-decimal USD string ('0.001234')."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), PER_MILLION)
    return f"{sign}{whole}.{frac:06d}"


def apply_multiplier(price_micros_per_m: int, multiplier: str) -> int:
    """Scale a price by a decimal multiplier ('0.5', '1.1'), exact or refused."""
    scaled = Decimal(price_micros_per_m) * Decimal(multiplier)
    rounded = scaled.quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return int(rounded)
