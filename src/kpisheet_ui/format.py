"""Numbers and months as the app shows them: Swiss style (1'234'567, CHF, %), German month names.

Values and changes are formatted exactly as the chart's hover shows them
(:func:`kpisheet.charts.format_number`), so table and chart read alike. Formatting only: every
number shown comes from the sheet.
"""

from __future__ import annotations

import math

import pandas as pd

from kpisheet import charts
from kpisheet.constants import Unit

#: Shown for a missing value.
MISSING = "–"

MONTH_NAMES = (
    "Januar",
    "Februar",
    "März",
    "April",
    "Mai",
    "Juni",
    "Juli",
    "August",
    "September",
    "Oktober",
    "November",
    "Dezember",
)


def _number(value: object) -> float | None:
    if value is None or value is pd.NA:
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def format_value(value: object, unit: Unit | str, *, per_account: bool = False) -> str:
    """A KPI value by its unit: counts ``1'234``, amounts ``CHF 1'234.50``, shares ``71.3 %``.

    Counts per active account keep two decimals.
    """
    number = _number(value)
    if number is None:
        return MISSING
    decimals = 2 if per_account and Unit(unit) is Unit.COUNT else None
    return charts.format_number(number, unit, decimals=decimals)


def format_change(value: object, unit: Unit | str, *, per_account: bool = False) -> str:
    """A difference of two values, always signed; for percentages in percentage points (``Pp.``)."""
    number = _number(value)
    if number is None:
        return MISSING
    if Unit(unit) is Unit.PERCENT:
        return charts.format_change(number, math.nan, unit)
    sign = "-" if number < 0 else "+"
    return f"{sign}{format_value(abs(number), unit, per_account=per_account)}"


def format_change_pct(value: object) -> str:
    """A relative change (a fraction) as a signed percentage, e.g. ``+8.9 %``."""
    number = _number(value)
    if number is None:
        return MISSING
    sign = "-" if number < 0 else "+"
    return f"{sign}{charts.format_number(abs(number), Unit.PERCENT)}"


def month_label(month: str | pd.Period) -> str:
    """``2026-10`` as ``Oktober 2026``."""
    period = pd.Period(month, freq="M")
    return f"{MONTH_NAMES[period.month - 1]} {period.year}"
