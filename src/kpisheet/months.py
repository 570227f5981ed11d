"""Months: the one parser of month texts, the ``YYYYMM`` codec of the store and window bounds.

A month is a ``pandas.Period`` of frequency ``M`` everywhere inside kpisheet. Text becomes a
month here and nowhere else, by one rule (docs/data-engineers.md, "Dates and decimal commas"):

- ``YYYY-MM`` (``2026-10``; ``2026-9`` too) and ``YYYYMM`` (``202610``, as text or integer);
- an ISO date anywhere in the month, ``YYYY-MM-DD`` (``2026-10-31``), optionally with a time
  (``2026-10-31 00:00:00``), as databases and spreadsheets write dates as text;
- a date with dots, ``DD.MM.YYYY`` (``31.10.2026``), always day first;
- a date with slashes or dashes, ``DD/MM/YYYY`` or ``MM/DD/YYYY`` (``31/10/2026``), read in the
  order the column shows (:func:`ambiguous_dates`), or in a ``strptime`` format the caller names;
- a ``Period``, a ``date``/``datetime`` or a datetime column, taken as its month.

Years run from :data:`FIRST_YEAR` to :data:`LAST_YEAR`. Anything else — ``Oct 2026``, a bare
year, ``2026/10/31`` — is no month: a column gets ``NaT`` for it (validation then names the
rows), a single value raises an error naming the value and the expected form. A column is parsed
once per distinct text: a file has millions of rows but only dozens of months.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import date, datetime
from typing import TypeAlias

import numpy as np
import pandas as pd

from kpisheet.constants import MONTH_TEXT_FORMAT, Window
from kpisheet.errors import quoted

MonthLike: TypeAlias = str | int | pd.Period | date | datetime

#: The dtype of a month column.
MONTH_DTYPE = pd.PeriodDtype("M")
#: Years a month text may name; outside them a text is taken for a typo, not a month.
FIRST_YEAR, LAST_YEAR = 1900, 2999
#: How messages describe the month forms a column accepts.
EXPECTED_MONTHS = "YYYY-MM, YYYYMM or a date"
#: How messages describe the month a single value (``as_of``) should be.
EXPECTED_MONTH = "YYYY-MM, e.g. 2021-06"

_COMPACT = r"(\d{4})(\d{2})"
_YEAR_MONTH = r"(\d{4})-(\d{1,2})"
_ISO_DATE = r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?"
_DOTTED = r"(\d{1,2})\.(\d{1,2})\.(\d{4})"
#: :data:`_YEAR_MONTH` for one text, ASCII digits only (as the column rule reads them).
_YEAR_MONTH_TEXT = re.compile(_YEAR_MONTH, re.ASCII)
#: Dates with the day and the month in an order the text does not tell: 01/10/2026, 1-10-2026.
_NUMERIC_DATE = r"(\d{1,2})[/-](\d{1,2})[/-](\d{4})"


def _parts(text: pd.Series, pattern: str) -> pd.DataFrame:
    """The numbers a pattern captures from each text (as floats; NaN where it does not match)."""
    groups = text.astype("string").str.extract(f"^{pattern}$")
    numbers = groups.apply(lambda column: pd.to_numeric(column, errors="coerce"))
    return numbers.astype("Float64").astype("float64")


def _ordinals(year: pd.Series, month: pd.Series, day: pd.Series | None = None) -> np.ndarray:
    """Month ordinals (months since 1970-01) of year/month(/day) numbers; NaT where invalid."""
    valid = year.between(FIRST_YEAR, LAST_YEAR) & month.between(1, 12)
    if day is not None:
        first_days = pd.DataFrame(
            {"year": year.where(valid, 2000), "month": month.where(valid, 1), "day": 1}
        )
        last_day = pd.to_datetime(first_days).dt.days_in_month
        valid &= day.between(1, last_day)
    ordinal = (year.fillna(1970) - 1970) * 12 + month.fillna(1) - 1
    ordinals: np.ndarray = np.where(valid, ordinal, pd.NaT.value).astype("int64")
    return ordinals


def _date_order(text: pd.Series) -> tuple[bool | None, pd.DataFrame]:
    """Whether a column's numeric dates are day first (``None``: it does not say), and the two
    leading numbers and the year of each text (NaN for texts that are no numeric date)."""
    parts = _parts(text, _NUMERIC_DATE)
    first, second = parts[0], parts[1]
    day_first = bool(((first > 12) & (second <= 12)).any())
    month_first = bool(((second > 12) & (first <= 12)).any())
    order = day_first if day_first != month_first else None
    return order, parts


def _ambiguous(order: bool | None, parts: pd.DataFrame) -> pd.Series:
    first, second = parts[0], parts[1]
    if order is not None:
        return pd.Series(False, index=parts.index)
    return ((first <= 12) & (second <= 12) & (first != second)).fillna(False)


def _distinct_texts(raw: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """Codes of a column's values and its distinct values as stripped text (code -1: missing)."""
    codes, uniques = pd.factorize(raw)
    return codes, pd.Series(np.asarray(uniques, dtype=object)).astype("string").str.strip()


def ambiguous_dates(raw: pd.Series) -> pd.Series:
    """Which month texts are dates like ``01/10/2026`` whose order (day or month first) is unclear.

    The column decides: a date such as ``31/10/2026`` shows that its column writes the day first
    (``10/31/2026``: the month first), and then every date of the column is read that way. Without
    such a date, or with both kinds, a date whose first two numbers differ and are both at most 12
    is ambiguous. (Dates with dots are day first everywhere and never ambiguous.)
    """
    if isinstance(raw.dtype, pd.PeriodDtype) or pd.api.types.is_datetime64_any_dtype(raw):
        return pd.Series(False, index=raw.index)
    codes, texts = _distinct_texts(raw)
    ambiguous = _ambiguous(*_date_order(texts)).to_numpy(dtype=bool)
    return pd.Series(np.append(ambiguous, False)[codes], index=raw.index)


def months_of_dates(dates: np.ndarray, dtype: type[np.signedinteger] = np.int64) -> np.ndarray:
    """Month ordinals (months since 1970-01) of tz-naive ``datetime64`` values, as ``dtype``; NaT
    stays NaT (whose integer is ``pd.NaT.value``) in int64 and is undefined in a smaller type.

    numpy's calendar conversion costs about 17 ns a value; rows sorted by month come in long
    runs of one date, so each run is converted once and repeated, unless the runs are short.
    """
    starts = np.flatnonzero(np.r_[True, dates[1:] != dates[:-1]])
    if len(starts) * 16 > len(dates):  # short runs (or no date at all)
        ordinals: np.ndarray = dates.astype("datetime64[M]").view("int64")
        return ordinals.astype(dtype, copy=False)
    months = dates[starts].astype("datetime64[M]").view("int64").astype(dtype, copy=False)
    return np.repeat(months, np.diff(np.r_[starts, len(dates)]))


def month_codes(raw: pd.Series, date_format: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`parse_months` as the cube keeps months: int32 ordinals, and which rows have a
    month (the others' ordinals are undefined). Dates go straight to 4 bytes a row, without a
    column of 8-byte periods in between."""
    if pd.api.types.is_datetime64_dtype(raw):  # tz-naive
        dates = raw.to_numpy()
        return months_of_dates(dates, np.int32), ~np.isnat(dates)
    ordinals = parse_months(raw, date_format).array.asi8
    return ordinals.astype(np.int32), ordinals != pd.NaT.value


def parse_months(raw: pd.Series, date_format: str | None = None) -> pd.Series:
    """A column of months as ``Period[M]``; values that are no month become NaT.

    :param date_format: a ``strptime`` format (e.g. ``%d/%m/%Y``) for the texts that are none of
        ``YYYY-MM``, ``YYYYMM``, an ISO date or a dotted date; without it, such texts must be
        numeric dates, and those whose order of day and month is unclear
        (:func:`ambiguous_dates`) become NaT rather than a guess.
    """
    if isinstance(raw.dtype, pd.PeriodDtype):
        return raw.dt.asfreq("M")
    if pd.api.types.is_datetime64_dtype(raw):  # tz-naive
        period = pd.arrays.PeriodArray(months_of_dates(raw.to_numpy()), dtype=MONTH_DTYPE)
        return pd.Series(period, index=raw.index, copy=False)
    if pd.api.types.is_datetime64_any_dtype(raw):
        return raw.dt.tz_localize(None).dt.to_period("M")  # the month of the local wall time
    codes, texts = _distinct_texts(raw)
    parsed = _parse_texts(texts, date_format)
    ordinals = np.append(parsed, pd.NaT.value)[codes]  # code -1 (missing) takes NaT
    return pd.Series(
        pd.arrays.PeriodArray(ordinals, dtype=MONTH_DTYPE), index=raw.index, copy=False
    )


def _parse_texts(text: pd.Series, date_format: str | None) -> np.ndarray:
    """Month ordinals of distinct month texts; NaT where a text is no month or an ambiguous date."""
    result = np.full(len(text), pd.NaT.value, dtype="int64")
    todo = text.notna().to_numpy() & (text != "").fillna(False).to_numpy()
    fixed: list[tuple[str, Callable[[pd.DataFrame], np.ndarray]]] = [
        (_COMPACT, lambda p: _ordinals(p[0], p[1])),
        (_YEAR_MONTH, lambda p: _ordinals(p[0], p[1])),
        (_ISO_DATE, lambda p: _ordinals(p[0], p[1], p[2])),
        (_DOTTED, lambda p: _ordinals(p[2], p[1], p[0])),
    ]
    for pattern, ordinals in fixed:
        parts = _parts(text, pattern)
        matched = parts[0].notna().to_numpy() & todo
        result[matched] = ordinals(parts[matched])
        todo &= ~matched
    if not todo.any():
        return result
    if date_format is not None:
        dates = pd.to_datetime(text[todo], errors="coerce", format=date_format)
        result[todo] = _ordinals(dates.dt.year, dates.dt.month)
        return result
    order, parts = _date_order(text)
    first, second, year = parts[0], parts[1], parts[2]
    day_first = (first > 12) if order is None else pd.Series(order, index=text.index)
    ambiguous = _ambiguous(order, parts).to_numpy()
    day, month = first.where(day_first, second), second.where(day_first, first)
    numeric = todo & first.notna().to_numpy() & ~ambiguous
    result[numeric] = _ordinals(year, month, day)[numeric]
    return result


def parse_month(
    value: MonthLike, *, name: str = "month", error: type[Exception] = ValueError
) -> pd.Period:
    """One month by the same rule as a column, for a value such as an ``as_of``.

    :param name: what the value is, for the message (``as_of``).
    :raises error: naming the value and the form expected when it is no month.
    """
    if isinstance(value, pd.Period):
        return value.asfreq("M")
    if isinstance(value, date | datetime):  # pd.Timestamp is a datetime
        return pd.Period(value, freq="M")
    text = str(value).strip()
    ordinal = _month_of_text(text)
    if ordinal == pd.NaT.value:
        ambiguous = bool(ambiguous_dates(pd.Series([text], dtype="string")).iloc[0])
        reason = "a date that may be day first or month first" if ambiguous else "not a month"
        raise error(f"{name} {quoted(value)} is {reason}; expected {EXPECTED_MONTH}")
    return pd.Period(ordinal=ordinal, freq="M")


@functools.lru_cache(maxsize=1024)
def _month_of_text(text: str) -> int:
    """The month ordinal of one text by the column rule (NaT's value when it is no month);
    remembered, because every query names its as-of month as text and the column machinery
    costs milliseconds for one value (the common ``YYYY-MM`` is read without it)."""
    match = _YEAR_MONTH_TEXT.fullmatch(text)
    if match is not None:
        year, month = int(match[1]), int(match[2])
        valid = FIRST_YEAR <= year <= LAST_YEAR and 1 <= month <= 12
        return (year - 1970) * 12 + month - 1 if valid else int(pd.NaT.value)
    return int(_parse_texts(pd.Series([text], dtype="string"), None)[0])


def month_numbers(months: pd.Series) -> np.ndarray:
    """``Period[M]`` months as ``YYYYMM`` integers (``202406``), as the store keeps them."""
    ordinals = months.array.asi8  # months since 1970-01
    numbers: np.ndarray = (ordinals // 12 + 1970) * 100 + ordinals % 12 + 1
    return numbers


def month_periods(numbers: pd.Series | np.ndarray) -> pd.arrays.PeriodArray:
    """``YYYYMM`` integers as ``Period[M]`` months."""
    numbers = np.asarray(numbers, dtype="int64")
    ordinals = (numbers // 100 - 1970) * 12 + numbers % 100 - 1
    return pd.arrays.PeriodArray(ordinals, dtype=MONTH_DTYPE)


def month_text(month: int | pd.Period) -> str:
    """A month as ``YYYY-MM`` text: ``202406`` or ``Period('2024-06')`` as ``2024-06``."""
    if isinstance(month, pd.Period):
        text: str = month.strftime(MONTH_TEXT_FORMAT)
        return text
    return f"{month // 100:04d}-{month % 100:02d}"


def window_bounds(as_of: pd.Period, window: Window) -> tuple[pd.Period, pd.Period]:
    """First and last month of a window ending at ``as_of`` (calendar months, inclusive).

    ``YTD`` starts in January of the as-of year; the others count back their length
    (docs/semantics.md, "Windows").
    """
    length = window.length if window.length is not None else as_of.month
    return as_of - (length - 1), as_of
