"""How numbers are written for people: Swiss style in the app and the charts (``1'234'567``,
``CHF 1'234.50``, ``12.3 %``), and as Excel number formats in the XLSX exports.

The thousands separator (:data:`THOUSANDS`) and the currency (:data:`CURRENCY`) are read when a
number is formatted, so changing them here changes the app's table, the chart's axes and hover,
and the workbooks' number formats alike.

``format_value``, ``format_change`` and ``format_change_pct`` format one number;
``format_values``, ``format_changes`` and ``format_changes_pct`` format a whole column at once,
vectorised, to exactly the same texts (a table of the whole sheet has hundreds of thousands of
cells).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from kpisheet.constants import Unit

__all__ = [
    "CURRENCY",
    "EXCEL_CHANGE_PCT",
    "EXCEL_COUNT",
    "EXCEL_DECIMAL",
    "EXCEL_INTEGER",
    "EXCEL_MONTH",
    "EXCEL_PERCENT",
    "EXCEL_POINTS",
    "MISSING",
    "POINTS",
    "SCALES",
    "THOUSANDS",
    "compact",
    "excel_change_format",
    "excel_change_formats",
    "excel_format",
    "excel_formats",
    "format_change",
    "format_change_pct",
    "format_change_with_pct",
    "format_changes",
    "format_changes_pct",
    "format_number",
    "format_value",
    "format_values",
    "step_decimals",
    "swiss",
    "swiss_count",
]

#: Between groups of three digits: ``1'234'567`` (Swiss style).
THOUSANDS = "'"
#: The currency of amounts: ``CHF 1'234.50``.
CURRENCY = "CHF"
#: Shown for a missing number.
MISSING = "–"
#: A change of a percentage, in percentage points: ``+0.4 Pp.``.
POINTS = "Pp."
#: Large amounts, short (the waterfall's bars): in billions and millions.
SCALES: tuple[tuple[float, str], ...] = ((1e9, "Mrd."), (1e6, "Mio."))


def swiss(value: float, decimals: int) -> str:
    """A number with :data:`THOUSANDS` between groups of three digits: ``1'234.50``."""
    return f"{value:,.{decimals}f}".replace(",", THOUSANDS)


def swiss_count(number: int) -> str:
    """A count with thousands separators: ``58'170``."""
    return f"{number:,}".replace(",", THOUSANDS)


def format_number(value: float, unit: Unit | str, *, decimals: int | None = None) -> str:
    """A value by its unit: ``1'234'567``, ``CHF 1'234.50``, ``12.3 %``; "–" when missing.

    Counts without decimals when whole; ``decimals`` overrides the unit's default.
    """
    if value is None or not math.isfinite(value):
        return MISSING
    unit = Unit(unit)
    if unit is Unit.PERCENT:
        return f"{swiss(value * 100, 1 if decimals is None else decimals)} %"
    if unit is Unit.CURRENCY:
        return f"{CURRENCY} {swiss(value, 2 if decimals is None else decimals)}"
    if decimals is None:
        decimals = 0 if unit is Unit.COUNT and float(value).is_integer() else 2
    return swiss(value, decimals)


def format_change_with_pct(change: float, change_pct: float, unit: Unit | str) -> str:
    """A change with its sign, and the relative change: ``+1'234 (+5.6 %)``; shares in points."""
    if change is None or not math.isfinite(change):
        return MISSING
    unit = Unit(unit)
    if unit is Unit.PERCENT:
        absolute = f"{'+' if change >= 0 else '-'}{swiss(abs(change) * 100, 1)} {POINTS}"
    else:
        absolute = f"{'+' if change >= 0 else '-'}{format_number(abs(change), unit)}"
    if change_pct is None or not math.isfinite(change_pct):
        return absolute
    return f"{absolute} ({'+' if change_pct >= 0 else '-'}{swiss(abs(change_pct) * 100, 1)} %)"


def compact(value: float, unit: Unit | str, *, signed: bool = False) -> str:
    """An amount, short: ``CHF 5.44 Mrd.``, ``+186.9 Mio.``, ``+0.45 Pp.``, ``-12.34``."""
    unit = Unit(unit)
    sign = ("+" if value >= 0 else "-") if signed else ("-" if value < 0 else "")
    magnitude = abs(value)
    if unit is Unit.PERCENT:
        points = f"{format_number(magnitude, unit, decimals=2)}"
        return f"{sign}{points.removesuffix(' %')} {POINTS}" if signed else f"{sign}{points}"
    prefix = f"{CURRENCY} " if unit is Unit.CURRENCY and not signed else ""
    for scale, word in SCALES:
        if magnitude >= scale:
            return f"{sign}{prefix}{format_number(magnitude / scale, Unit.RATIO)} {word}"
    return (
        f"{sign}{prefix}{format_number(magnitude, Unit.RATIO if unit is Unit.CURRENCY else unit)}"
    )


def step_decimals(steps: np.ndarray) -> int:
    """Decimals that show a step between axis ticks exactly (at most 4)."""
    step = float(np.abs(steps[0])) if len(steps) else 1.0
    for decimals in range(5):
        scaled = step * 10**decimals
        if step == 0 or abs(scaled - round(scaled)) < 1e-6 * max(scaled, 1):
            return decimals
    return 4


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
    return format_number(number, unit, decimals=decimals)


def format_change(value: object, unit: Unit | str, *, per_account: bool = False) -> str:
    """A difference of two values, always signed; for percentages in percentage points (``Pp.``)."""
    number = _number(value)
    if number is None:
        return MISSING
    if Unit(unit) is Unit.PERCENT:
        return format_change_with_pct(number, math.nan, unit)
    sign = "-" if number < 0 else "+"
    return f"{sign}{format_value(abs(number), unit, per_account=per_account)}"


def format_change_pct(value: object) -> str:
    """A relative change (a fraction) as a signed percentage, e.g. ``+8.9 %``."""
    number = _number(value)
    if number is None:
        return MISSING
    sign = "-" if number < 0 else "+"
    return f"{sign}{format_number(abs(number), Unit.PERCENT)}"


# -- Excel number formats -----------------------------------------------------------------------
#
# Thousands separators in a workbook follow the reader's regional settings (1'234'567 in
# Switzerland), so a number stays a number in every locale.

EXCEL_COUNT = "#,##0"
EXCEL_DECIMAL = "#,##0.00"
EXCEL_PERCENT = "0.0%"
#: A relative change, always signed.
EXCEL_CHANGE_PCT = "+0.0%;-0.0%;0.0%"
#: A contribution to a percentage's change (percentage points, finer).
EXCEL_POINTS = "+0.00%;-0.00%;0.00%"
EXCEL_MONTH = "mmm yyyy"
EXCEL_INTEGER = "0"


def excel_format(unit: Unit | str, *, per_account: bool = False) -> str:
    """The Excel number format of a KPI value of this unit (counts get decimals per account)."""
    unit = Unit(unit)
    if unit is Unit.CURRENCY:
        return f'"{CURRENCY} "#,##0.00;"{CURRENCY} "-#,##0.00'
    if unit is Unit.PERCENT:
        return EXCEL_PERCENT
    if unit is Unit.COUNT and not per_account:
        return EXCEL_COUNT
    return EXCEL_DECIMAL


def excel_change_format(unit: Unit | str, *, per_account: bool = False) -> str:
    """The Excel number format of a change (value − comparison value): always signed."""
    unit = Unit(unit)
    if unit is Unit.CURRENCY:
        return f'"{CURRENCY} "+#,##0.00;"{CURRENCY} "-#,##0.00;"{CURRENCY} "0.00'
    if unit is Unit.PERCENT:
        return "+0.0%;-0.0%;0.0%"
    if unit is Unit.COUNT and not per_account:
        return "+#,##0;-#,##0;0"
    return "+#,##0.00;-#,##0.00;0.00"


def excel_formats(units: Sequence[Unit | str], *, per_account: bool = False) -> list[str]:
    """:func:`excel_format` of each unit."""
    return [excel_format(unit, per_account=per_account) for unit in units]


def excel_change_formats(units: Sequence[Unit | str], *, per_account: bool = False) -> list[str]:
    """:func:`excel_change_format` of each unit."""
    return [excel_change_format(unit, per_account=per_account) for unit in units]


# -- many numbers at once ----------------------------------------------------------------------
#
# A column of texts is built as a byte matrix with one row per character position and one
# column per number: [sign][prefix][sign][integer digits with '][.][decimals][suffix]. Positions
# a text does not use hold a zero byte (_PAD); the texts are the matrix's columns without those
# bytes, handed to Arrow as one buffer.

_PAD = 0
_MAX_DECIMALS = 2
#: Numbers below this magnitude (about 9 × 10**15) are rounded exactly in 64-bit integers;
#: larger ones are left to :func:`format_value` and friends, one by one.
_EXACT_BELOW = 2.0**53
_POWERS_OF_TEN = 10 ** np.arange(19, dtype=np.int64)
#: "000" to "999" as bytes, one column per number.
_THREE_DIGITS = np.array([list(f"{i:03d}".encode()) for i in range(1000)], dtype=np.uint8).T


def format_values(values: object, units: object, *, per_account: bool = False) -> pd.Series:
    """:func:`format_value` of each value with the unit beside it, vectorised."""
    numbers = _floats(values)
    return _format(
        numbers, _unit_array(units, len(numbers)), per_account=per_account, scalar=format_value
    )


def format_changes(values: object, units: object, *, per_account: bool = False) -> pd.Series:
    """:func:`format_change` of each value with the unit beside it, vectorised."""
    numbers = _floats(values)
    return _format(
        numbers,
        _unit_array(units, len(numbers)),
        per_account=per_account,
        signed=True,
        percent_suffix=f" {POINTS}",
        scalar=format_change,
    )


def format_changes_pct(values: object) -> pd.Series:
    """:func:`format_change_pct` of each value, vectorised."""
    numbers = _floats(values)
    units = np.full(len(numbers), Unit.PERCENT.value)
    return _format(
        numbers, units, signed=True, scalar=lambda value, unit, **_: format_change_pct(value)
    )


def _floats(values: object) -> np.ndarray:
    if isinstance(values, pd.Series | pd.Index | pd.api.extensions.ExtensionArray):
        floats: np.ndarray = values.to_numpy(dtype=float, na_value=np.nan)
        return floats
    return np.asarray(values, dtype=float)


def _unit_array(units: object, length: int) -> np.ndarray:
    array = np.asarray(units)
    if array.dtype.kind != "U":
        array = np.asarray(units, dtype=object).astype(str)
    if array.shape != (length,):
        raise ValueError(f"expected {length} units, one per value, got shape {array.shape}")
    known = np.zeros(length, dtype=bool)
    for unit in Unit:
        known |= array == unit.value
    if not known.all():
        unknown = sorted(set(array[~known].tolist()))
        raise ValueError(f"unknown unit(s): {', '.join(unknown)}")
    return array


def _format(
    numbers: np.ndarray,
    units: np.ndarray,
    *,
    per_account: bool = False,
    signed: bool = False,
    percent_suffix: str = " %",
    scalar: Callable[..., str],
) -> pd.Series:
    """The texts of ``numbers``: unsigned as values, or ``signed`` (``+``/``-``) as changes."""
    finite = np.isfinite(numbers)
    separator = THOUSANDS.encode("utf-8")
    if len(separator) != 1:  # the byte matrix holds one byte per position: one by one instead
        texts = [scalar(n, u, per_account=per_account) for n, u in zip(numbers, units, strict=True)]
        return pd.Series(texts, dtype="str")
    percent = units == Unit.PERCENT.value
    currency = units == Unit.CURRENCY.value
    count = units == Unit.COUNT.value
    shown = np.where(finite, np.abs(numbers) if signed else numbers, 0.0)
    with np.errstate(over="ignore"):  # beyond float range: not exact, formatted one by one below
        shown = np.where(percent, shown * 100, shown)
    decimals = np.where(percent, 1, 2)
    if not per_account:
        decimals[count & (shown == np.floor(shown))] = 0
    exact = np.abs(shown) < _EXACT_BELOW
    outer_sign = np.full((1, len(numbers)), _PAD, dtype=np.uint8)
    if signed:
        outer_sign[0] = np.where(numbers < 0, ord("-"), ord("+"))
    inner_sign = np.where(np.signbit(shown), ord("-"), _PAD).astype(np.uint8)[None, :]
    prefix = f"{CURRENCY} "
    matrix = np.vstack(
        [
            outer_sign,
            _affix(len(prefix.encode("utf-8")), {prefix: currency}),
            inner_sign,
            _digits(np.where(exact, shown, 0.0), decimals, separator[0]),
            _affix(len(percent_suffix.encode("utf-8")), {percent_suffix: percent}),
        ]
    )
    missing = np.frombuffer(MISSING.encode("utf-8"), dtype=np.uint8)
    matrix[:, ~finite] = _PAD
    matrix[: len(missing), ~finite] = missing[:, None]
    texts = _texts(matrix)
    large = np.flatnonzero(finite & ~exact)
    if len(large):
        texts.iloc[large] = [
            scalar(numbers[i], units[i], per_account=per_account) for i in large.tolist()
        ]
    return texts


def _rounded(magnitudes: np.ndarray, decimals: np.ndarray) -> np.ndarray:
    """``magnitudes × 10**decimals`` rounded to integers as Python's ``format`` rounds them.

    That is half to even on the exact binary value: each magnitude (below 2**53) is an integer
    significand times a power of two, so the product is exact in 64 bits and the rounding a shift.
    """
    mantissa, exponent = np.frexp(magnitudes)
    significand = np.ldexp(mantissa, 53).astype(np.int64)
    product = significand * _POWERS_OF_TEN[decimals]  # below 2**60
    shift = np.minimum(53 - exponent, 62).astype(np.int64)  # from 62 on, everything rounds to 0
    quotient = product >> shift
    remainder = product - (quotient << shift)
    half = np.left_shift(np.int64(1), np.maximum(shift - 1, 0))
    up = (remainder > half) | ((remainder == half) & (shift > 0) & (quotient % 2 == 1))
    rounded: np.ndarray = quotient + up
    return rounded


def _digits(numbers: np.ndarray, decimals: np.ndarray, separator: int) -> np.ndarray:
    """The digits of ``numbers`` (below 2**53) such as ``1'234.5``, right-aligned, by position."""
    rounded = _rounded(np.abs(numbers), decimals)
    whole, fraction = np.divmod(rounded, _POWERS_OF_TEN[decimals])
    length = 1 + np.searchsorted(_POWERS_OF_TEN[1:], whole, side="right")
    groups = -(-int(length.max(initial=1)) // 3)
    width = 4 * groups - 1  # digits and the separator between groups of three
    matrix = np.empty((width + 1 + _MAX_DECIMALS, len(numbers)), dtype=np.uint8)
    rest = whole
    for group in range(groups):
        rest, three = np.divmod(rest, 1000)
        bottom = width - 4 * group
        matrix[bottom - 3 : bottom] = _THREE_DIGITS[:, three]
        if group:
            matrix[bottom] = separator
    # Position i of the integer part shows when the number has more digits than lie right of it.
    needs = np.array([(width - 1 - i) - (width - 1 - i) // 4 for i in range(width)])
    matrix[:width] = np.where(needs[:, None] < length, matrix[:width], _PAD)
    matrix[width] = np.where(decimals > 0, ord("."), _PAD)
    tenths, hundredths = np.divmod(fraction, 10)
    matrix[width + 1] = np.where(decimals == 2, tenths, fraction) + ord("0")
    matrix[width + 2] = hundredths + ord("0")
    matrix[width + 1, decimals == 0] = _PAD
    matrix[width + 2, decimals < 2] = _PAD
    return matrix


def _affix(width: int, texts: dict[str, np.ndarray]) -> np.ndarray:
    """Positions holding each text for the numbers its mask selects."""
    rows = len(next(iter(texts.values())))
    matrix = np.full((width, rows), _PAD, dtype=np.uint8)
    for text, mask in texts.items():
        encoded = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        matrix[: len(encoded), mask] = encoded[:, None]
    return matrix


def _texts(matrix: np.ndarray) -> pd.Series:
    """The columns of a byte matrix (position × text) as UTF-8 texts, _PAD bytes left out."""
    lengths = np.count_nonzero(matrix != _PAD, axis=0)
    offsets = np.zeros(matrix.shape[1] + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    by_text = np.ascontiguousarray(matrix.T).ravel()
    data = np.compress(by_text != _PAD, by_text)
    array = pa.StringArray.from_buffers(len(lengths), pa.py_buffer(offsets), pa.py_buffer(data))
    return array.to_pandas()
