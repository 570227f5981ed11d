"""Tests of kpisheet.errors: messages safe to print, values quoted short."""

from __future__ import annotations

from kpisheet.errors import (
    MESSAGE_LINE_CHARS,
    QUOTED_CHARS,
    Problem,
    ProblemsError,
    QueryError,
    close_matches,
    printable,
    quoted,
)


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
