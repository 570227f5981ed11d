"""Tests of kpisheet.errors: messages safe to print, values quoted short, the problem toolkit."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Literal

import pandas as pd
import pytest
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from kpisheet.errors import (
    FAILURE_COLUMNS,
    MESSAGE_LINE_CHARS,
    QUOTED_CHARS,
    DataError,
    FormulaError,
    HierarchyError,
    Problem,
    Problems,
    ProblemsError,
    QueryError,
    RowProblems,
    close_matches,
    did_you_mean,
    printable,
    quoted,
    validation_problems,
    with_suggestion,
)

SRC = Path(__file__).resolve().parents[1] / "src"


def test_control_characters_are_escaped_and_newlines_kept() -> None:
    """Escape sequences, C1 controls and bidi overrides are shown as escapes; lines stay lines."""
    text = "a\x1b[2J\x9b31m\u202egnp.exe\x00\nb\tc\x7f"
    assert printable(text) == "a\\x1b[2J\\x9b31m\\u202egnp.exe\\x00\nb\\x09c\\x7f"


def test_long_lines_are_cut_saying_how_much_is_left_out() -> None:
    """A line longer than the limit is cut to the limit, counting what is left out; once is enough."""
    line = "x" * 10_000
    shown = printable(f"head\n{line}\ntail")
    keep = MESSAGE_LINE_CHARS - 40
    assert shown == f"head\n{'x' * keep} … ({10_000 - keep:,} more characters)\ntail"
    assert printable(shown) == shown


def test_quoted_cuts_long_values_and_bounds_nested_ones() -> None:
    """A long text is quoted up to the limit with its length; a nested value to three levels."""
    assert quoted("x" * 1000) == f"{'x' * QUOTED_CHARS!r}… (1,000 characters)"
    assert quoted("ok") == "'ok'"
    assert quoted([[[[[1]]]]]) == "[[[[...]]]]"


def test_every_kpisheet_error_renders_printable() -> None:
    """str() of a kpisheet error escapes what came from data, for the CLI and the app alike."""
    assert str(QueryError("unknown KPI '\x1b]0;owned\x07'")) == "unknown KPI '\\x1b]0;owned\\x07'"
    problems = ProblemsError([Problem("entity '\x1b[31mred'", file="e.yaml", line=3)])
    assert str(problems) == "1 problem in problems:\n  e.yaml:3: entity '\\x1b[31mred'"


def test_no_suggestion_for_an_overlong_name() -> None:
    """A name longer than the quoting limit gets no "did you mean" (which would cost its length)."""
    assert close_matches("turnoverr", ["turnover"]) == ["turnover"]
    assert close_matches("turnover" + "r" * QUOTED_CHARS, ["turnover"]) == []


def test_did_you_mean_is_worded_once() -> None:
    """A close name is suggested in one wording, bare or after a text; none when nothing is close."""
    assert did_you_mean("turnoverr", ["accounts", "turnover"]) == "did you mean 'turnover'?"
    assert did_you_mean("xyz", ["turnover"]) == ""
    assert with_suggestion("unknown KPI 'flw'", "flw", ["flow"]) == (
        "unknown KPI 'flw' (did you mean 'flow'?)"
    )
    assert with_suggestion("unknown KPI 'xyz'", "xyz", ["flow"]) == "unknown KPI 'xyz'"


def test_suggestions_and_fuzzy_matching_live_only_in_errors() -> None:
    """No other module writes "did you mean" or matches names with difflib itself."""
    pattern = re.compile(r"did you mean|difflib|get_close_matches", re.IGNORECASE)
    offenders = [
        str(path.relative_to(SRC))
        for path in sorted(SRC.rglob("*.py"))
        if path.name != "errors.py" and pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_problems_are_collected_and_raised_once() -> None:
    """The collector fills in its file, keeps the order, and raises nothing while empty."""
    problems = Problems("e.yaml")
    problems.raise_if_any(HierarchyError)
    problems.add("first", line=3, field="total")
    problems.extend([Problem("second", file="other.yaml")])
    assert list(problems) == [
        Problem("first", file="e.yaml", line=3, field="total"),
        Problem("second", file="other.yaml"),
    ]
    with pytest.raises(HierarchyError) as caught:
        problems.raise_if_any(HierarchyError)
    assert str(caught.value) == (
        "2 problems in the entity hierarchy:\n  e.yaml:3: first\n  other.yaml: second"
    )


def test_row_problems_quote_rows_and_keep_every_row_as_a_failure_case() -> None:
    """A row problem quotes the first rows in the report, and every row goes to failure_cases;
    another check's DataError is taken over whole."""
    report = RowProblems("obs.csv", lambda index: [f"line {i + 2}" for i in index])
    rows = pd.Series([f"x{i}" for i in range(7)], index=range(7))
    report.add_rows("value is not a number", rows, "value")
    report.add_rows("unknown KPI 'k'", rows[:1], "kpi", quote=False, detail=" in 1 row (line 2)")
    other = DataError("obs.csv", [Problem("late", file="obs.csv")], pd.DataFrame())
    report.absorb(other)
    with pytest.raises(DataError) as caught:
        report.raise_if_any()
    assert [str(p) for p in caught.value.problems] == [
        "obs.csv: value is not a number: line 2 ('x0'), line 3 ('x1'), line 4 ('x2'), "
        "line 5 ('x3'), line 6 ('x4') and 2 more",
        "obs.csv: unknown KPI 'k' in 1 row (line 2)",
        "obs.csv: late",
    ]
    cases = caught.value.failure_cases
    assert list(cases.columns) == FAILURE_COLUMNS
    assert len(cases) == 8
    assert cases.iloc[-1].tolist() == ["line 2", "kpi", "x0", "unknown KPI 'k'"]


class Colour(StrEnum):
    """Words of a test model."""

    RED = "red"
    BLUE = "blue"


class Inner(BaseModel):
    """A nested test model."""

    model_config = ConfigDict(extra="forbid")
    width: int = 0


class Outer(BaseModel):
    """A test model with a word, a literal, a nested model and a validator."""

    model_config = ConfigDict(extra="forbid")
    name: str
    colour: Colour = Colour.RED
    size: Literal["S", "M"] = "S"
    inner: Inner = Inner()
    formula: str = ""

    @field_validator("formula")
    @classmethod
    def _parses(cls, value: str) -> str:
        if value == "bad":
            raise FormulaError(value, 0, "a KPI id")
        if value == "worse":
            raise ValueError("is worse than bad")
        return value


def test_pydantic_errors_become_problems_with_line_field_value_and_expected() -> None:
    """Each pydantic error is worded by kpisheet: missing field, unknown key with suggestion and
    allowed keys, words not allowed, a validator's message; located by line_of."""
    data = {"colour": "green", "size": "XL", "inner": {"widht": 2}, "formula": "bad", "nam": 1}
    with pytest.raises(ValidationError) as caught:
        Outer.model_validate(data)
    lines = {"colour": 2, "size": 3, "inner": 4, "formula": 5, "nam": 6}
    problems = validation_problems(
        caught.value, Outer, file="o.yaml", line_of=lambda loc: lines.get(str(loc[0])) if loc else 1
    )
    assert [str(p) for p in problems] == [
        "o.yaml: missing required field 'name'",
        "o.yaml:2: colour 'green' is not one of: red, blue",
        "o.yaml:3: size 'XL' is not one of: S, M",
        "o.yaml:4: unknown key 'inner.widht' (did you mean 'width'?); allowed keys: width",
        "o.yaml:5: formula 'bad': expected a KPI id at position 1, found 'b'",
        "o.yaml:6: unknown key 'nam' (did you mean 'name'?); allowed keys: name, colour, size, "
        "inner, formula",
    ]
    assert [p.field for p in problems] == [
        "name",
        "colour",
        "size",
        "inner.widht",
        "formula",
        "nam",
    ]


def test_a_model_words_its_own_errors_and_repeats_are_given_once() -> None:
    """message_of overrides the general wording; the same message on the same line is one problem."""
    with pytest.raises(ValidationError) as caught:
        Outer.model_validate({"name": "n", "formula": "worse", "inner": {"a": 1, "b": 2}})
    problems = validation_problems(
        caught.value,
        Outer,
        file=None,
        line_of=lambda loc: None,
        kpi="k",
        message_of=lambda error, field: "inner is wrong" if field.startswith("inner") else None,
    )
    assert [str(p) for p in problems] == [
        "KPI 'k': inner is wrong",
        "KPI 'k': formula: is worse than bad",
    ]
