"""Tests of the month parser, the ``YYYYMM`` codec and window bounds (docs/data-engineers.md)."""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kpisheet.constants import Window
from kpisheet.months import (
    FIRST_YEAR,
    LAST_YEAR,
    _month_of_text,
    _parse_texts,
    ambiguous_dates,
    month_codes,
    month_numbers,
    month_periods,
    month_text,
    months_of_dates,
    parse_month,
    parse_months,
    window_bounds,
)

SRC = Path(__file__).resolve().parents[1] / "src"


def months_of(texts: list[object], date_format: str | None = None) -> list[str]:
    """The parsed months of ``texts`` as ``YYYY-MM`` text (``NaT`` for no month)."""
    return [str(month) for month in parse_months(pd.Series(texts, dtype=object), date_format)]


@pytest.mark.parametrize(
    ("text", "month"),
    [
        ("2026-10", "2026-10"),
        ("2026-9", "2026-09"),
        ("202610", "2026-10"),
        (202610, "2026-10"),
        ("2026-10-31", "2026-10"),
        ("2026-10-01 00:00:00", "2026-10"),
        ("2026-10-15T13:45", "2026-10"),
        ("31.10.2026", "2026-10"),
        ("01.10.2026", "2026-10"),
        ("  2026-10 ", "2026-10"),
    ],
)
def test_the_accepted_forms_name_their_month(text: object, month: str) -> None:
    """Every documented form of a month text becomes that calendar month."""
    assert months_of([text]) == [month]


@pytest.mark.parametrize(
    "text",
    [
        "Oct 2026",
        "2026",
        "2026/10/31",
        "2026-13",
        "202613",
        "2026-02-30",
        "32.10.2026",
        "1850-01",
        "3026-01",
        "2026-10x",
        "",
        None,
    ],
)
def test_other_texts_are_no_month(text: object) -> None:
    """Texts outside the documented forms, impossible dates and implausible years are NaT."""
    assert months_of([text]) == ["NaT"]


def test_numeric_dates_follow_the_order_their_column_shows() -> None:
    """31/10/2026 shows a day-first column, so 01/09/2026 is September; 10/31/2026 shows a
    month-first one; without either, 01/09/2026 is ambiguous and no month."""
    assert months_of(["31/10/2026", "01/09/2026"]) == ["2026-10", "2026-09"]
    assert months_of(["10/31/2026", "01/09/2026"]) == ["2026-10", "2026-01"]
    assert months_of(["01/09/2026", "05/05/2026", "1-10-2026"]) == ["NaT", "2026-05", "NaT"]
    assert list(ambiguous_dates(pd.Series(["01/09/2026", "05/05/2026", "31.01.2026"]))) == [
        True,
        False,
        False,
    ]


def test_a_named_format_reads_the_dates_the_fixed_forms_do_not() -> None:
    """With date_format '%m/%d/%Y', 01/09/2026 is January; YYYY-MM still reads as itself."""
    assert months_of(["01/09/2026", "2026-03", "31/01/2026"], "%m/%d/%Y") == [
        "2026-01",
        "2026-03",
        "NaT",
    ]


def test_each_distinct_text_is_parsed_once() -> None:
    """A million rows of two months parse like the two texts (and keep the column's index)."""
    column = pd.Series(np.tile(np.array(["2026-09", "202610"], dtype=object), 500_000))
    column.index += 7
    months = parse_months(column)
    assert months.dtype == pd.PeriodDtype("M")
    assert months.index.equals(column.index)
    assert months.iloc[:2].astype(str).tolist() == ["2026-09", "2026-10"]
    assert months.value_counts().to_dict() == {
        pd.Period("2026-09", "M"): 500_000,
        pd.Period("2026-10", "M"): 500_000,
    }


def test_dates_and_periods_are_taken_as_their_month() -> None:
    """Datetime columns (with or without time zone) and Period columns keep their month."""
    dates = pd.Series(pd.to_datetime(["2026-10-31", None, "2026-01-01"]))
    assert [str(m) for m in parse_months(dates)] == ["2026-10", "NaT", "2026-01"]
    zoned = dates.dt.tz_localize("Europe/Zurich")
    assert [str(m) for m in parse_months(zoned)] == ["2026-10", "NaT", "2026-01"]
    periods = pd.Series(pd.period_range("2026-10-01", periods=2, freq="D"))
    assert [str(m) for m in parse_months(periods)] == ["2026-10", "2026-10"]


@pytest.mark.parametrize(
    "value",
    ["2026-10", "202610", 202610, "2026-10-31", pd.Period("2026-10", "M"), date(2026, 10, 5)],
)
def test_a_single_month_parses_by_the_same_rule(value: object) -> None:
    """parse_month accepts what a column accepts, plus dates and Periods."""
    assert parse_month(value) == pd.Period("2026-10", "M")  # type: ignore[arg-type]
    assert parse_month(datetime(2026, 10, 5, 12)) == pd.Period("2026-10", "M")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("Oktober", "as_of 'Oktober' is not a month; expected YYYY-MM, e.g. 2021-06"),
        (
            "01/10/2026",
            "as_of '01/10/2026' is a date that may be day first or month first; "
            "expected YYYY-MM, e.g. 2021-06",
        ),
    ],
)
def test_a_bad_single_month_names_the_value_and_the_form(value: str, message: str) -> None:
    """The error names what was given and the form expected, as the error class asked for."""
    with pytest.raises(KeyError, match=re.escape(message)):
        parse_month(value, name="as_of", error=KeyError)


@given(st.integers((FIRST_YEAR - 1970) * 12, (LAST_YEAR - 1970) * 12 + 11))
def test_the_yyyymm_codec_round_trips(ordinal: int) -> None:
    """A month becomes year * 100 + month and back, and its text is YYYY-MM."""
    period = pd.Period(ordinal=ordinal, freq="M")
    number = period.year * 100 + period.month
    assert month_numbers(pd.Series([period], dtype="period[M]")).tolist() == [number]
    assert list(month_periods(np.array([number]))) == [period]
    assert month_text(number) == month_text(period) == f"{period.year:04d}-{period.month:02d}"
    assert months_of([str(number)]) == [month_text(number)]


@pytest.mark.parametrize(
    ("window", "first"),
    [
        (Window.M1, "2026-10"),
        (Window.M3, "2026-08"),
        (Window.M6, "2026-05"),
        (Window.M12, "2025-11"),
        (Window.YTD, "2026-01"),
    ],
)
def test_window_bounds_count_calendar_months_back(window: Window, first: str) -> None:
    """A window ending in October 2026 starts its length back; YTD starts in January."""
    as_of = pd.Period("2026-10", "M")
    assert window_bounds(as_of, window) == (pd.Period(first, "M"), as_of)


def test_months_are_parsed_only_in_the_months_module() -> None:
    """No other module of kpisheet reads dates or month texts itself."""
    pattern = re.compile(r"to_datetime|strptime|pd\.Timestamp\(|\\d\{4\}")
    offenders = [
        str(path.relative_to(SRC))
        for path in sorted(SRC.rglob("*.py"))
        if path.name != "months.py" and pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


@given(
    year=st.one_of(st.integers(FIRST_YEAR - 2, LAST_YEAR + 2), st.integers(0, 9999)),
    month=st.one_of(st.integers(0, 13), st.integers(0, 99)),
    pad=st.booleans(),
    suffix=st.sampled_from(["", "-01", "x", "\n"]),
)
def test_one_month_text_is_read_as_the_column_reads_it(
    year: int, month: int, pad: bool, suffix: str
) -> None:
    """An as-of month given as text (read without the column machinery when it is ``YYYY-MM``)
    gets the same month, or the same refusal, as the same text in a column."""
    text = f"{year:04d}-{month:02d}{suffix}" if pad or month > 9 else f"{year:04d}-{month}{suffix}"
    assert _month_of_text(text) == int(_parse_texts(pd.Series([text], dtype="string"), None)[0])


@given(
    runs=st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(-50_000, 50_000)),  # a day (None: NaT)
            st.integers(1, 40),  # how many rows in a row have it
        ),
        max_size=30,
    ),
    unit=st.sampled_from(["s", "ms", "us", "ns"]),
)
def test_months_of_dates_match_numpys_calendar(
    runs: list[tuple[int | None, int]], unit: str
) -> None:
    """Dates in runs (converted once a run) and dates in short runs (converted one by one) get
    the months numpy's calendar gives them; NaT stays NaT."""
    days = [day for day, count in runs for _ in range(count)]
    dates = np.array(
        [
            np.datetime64("NaT") if d is None else np.datetime64(d, "D") + np.timedelta64(7, "h")
            for d in days
        ],
        dtype=f"datetime64[{unit}]",
    )
    expected = dates.astype("datetime64[M]").view("int64")
    assert months_of_dates(dates).tolist() == expected.tolist()
    # as the cube keeps them: int32 ordinals where there is a date, and which rows have one
    codes, valid = month_codes(pd.Series(dates))
    periods = parse_months(pd.Series(dates))
    assert codes.dtype == np.int32
    assert valid.tolist() == periods.notna().tolist()
    assert codes[valid].tolist() == periods.array.asi8[valid].tolist()


def test_month_codes_of_texts_are_those_of_parse_months() -> None:
    """Texts go through :func:`parse_months`: the same months as int32, no month where it gives
    NaT (a text that is no month, a missing one, an ambiguous date)."""
    raw = pd.Series(["2023-01", "no month", None, "202302", "31.12.1969", "01/02/2024"])
    codes, valid = month_codes(raw)
    assert valid.tolist() == [True, False, False, True, True, False]
    expected = [pd.Period(m, "M").ordinal for m in ("2023-01", "2023-02", "1969-12")]
    assert codes[valid].tolist() == expected
