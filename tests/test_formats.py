"""Tests of kpisheet.presentation.formats: whole columns are formatted exactly as one number at a time."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kpisheet.constants import Unit
from kpisheet.presentation.formats import (
    format_change,
    format_change_pct,
    format_changes,
    format_changes_pct,
    format_value,
    format_values,
)

UNITS = [unit.value for unit in Unit]
#: Halfway cases, carries into a new digit, signed zeros, the smallest and the largest numbers.
EDGES = [
    0.0,
    -0.0,
    0.5,
    1.5,
    2.5,
    0.125,
    0.375,
    0.005,
    1.005,
    1.115,
    0.0005,
    0.00049999999,
    999.5,
    999.995,
    9_999_999.995,
    999_999.5,
    2.0**52 + 0.5,
    2.0**53 - 1,
    2.0**53,
    1e20,
    5e-324,
    math.nan,
    math.inf,
    -math.inf,
]
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e12, max_value=1e12),
    st.integers(-(10**13), 10**13).map(lambda i: i / 8),  # many exact halfway cases
    st.integers(-(10**9), 10**9).map(lambda i: i / 1000),
    st.sampled_from(EDGES).flatmap(lambda x: st.sampled_from([x, -x])),
)


@given(st.lists(st.tuples(numbers, st.sampled_from(UNITS)), max_size=40), st.booleans())
def test_values_and_changes_as_one_by_one(
    pairs: list[tuple[float, str]], per_account: bool
) -> None:
    """format_values and format_changes give each number exactly the text of the one-number functions."""
    values = [value for value, _ in pairs]
    units = [unit for _, unit in pairs]
    assert format_values(values, units, per_account=per_account).tolist() == [
        format_value(v, u, per_account=per_account) for v, u in pairs
    ]
    assert format_changes(values, units, per_account=per_account).tolist() == [
        format_change(v, u, per_account=per_account) for v, u in pairs
    ]


@given(st.lists(numbers, max_size=40))
def test_relative_changes_as_one_by_one(values: list[float]) -> None:
    """format_changes_pct gives each number exactly the text of format_change_pct."""
    assert format_changes_pct(values).tolist() == [format_change_pct(v) for v in values]


@pytest.mark.parametrize("unit", UNITS)
def test_dense_grid_and_edges_as_one_by_one(unit: str) -> None:
    """Every thousandth from -10 to 10, every multiple of 1/8 up to 1'000 and the edge cases
    (halfway cases, carries, signed zeros, huge and tiny numbers) come out as Python formats them."""
    values = np.concatenate(
        [
            np.arange(-10_000, 10_001) / 1000,
            np.arange(-8_000, 8_001) / 8,
            EDGES,
            -np.array(EDGES),
        ]
    )
    units = [unit] * len(values)
    for per_account in (False, True):
        assert format_values(values, units, per_account=per_account).tolist() == [
            format_value(v, unit, per_account=per_account) for v in values.tolist()
        ]
        assert format_changes(values, units, per_account=per_account).tolist() == [
            format_change(v, unit, per_account=per_account) for v in values.tolist()
        ]
    assert format_changes_pct(values).tolist() == [format_change_pct(v) for v in values.tolist()]


def test_columns_swiss_style() -> None:
    """A column of numbers of several units reads 1'234'567, CHF 1'234'567.89, 71.3 %, 0.66, –."""
    values = [1234567.0, 1234567.891, 0.7133, 0.6576, math.nan, -2.2154, 0.00491]
    units = ["count", "currency", "percent", "ratio", "count", "currency", "percent"]
    assert format_values(values, units).tolist() == [
        "1'234'567",
        "CHF 1'234'567.89",
        "71.3 %",
        "0.66",
        "–",
        "CHF -2.22",
        "0.5 %",
    ]
    assert format_changes(values, units).tolist() == [
        "+1'234'567",
        "+CHF 1'234'567.89",
        "+71.3 Pp.",
        "+0.66",
        "–",
        "-CHF 2.22",
        "+0.5 Pp.",
    ]
    assert format_changes_pct([0.089, -0.0216, math.inf]).tolist() == ["+8.9 %", "-2.2 %", "–"]


def test_empty_column_and_unknown_unit() -> None:
    """An empty column gives no texts; a unit kpisheet does not know is refused by name."""
    assert format_values([], []).tolist() == []
    assert format_changes_pct([]).tolist() == []
    with pytest.raises(ValueError, match=re.escape("unknown unit(s): euro")):
        format_values([1.0, 2.0], ["count", "euro"])
    with pytest.raises(
        ValueError, match=re.escape("expected 2 units, one per value, got shape (1,)")
    ):
        format_values([1.0, 2.0], ["count"])
