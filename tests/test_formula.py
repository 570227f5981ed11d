"""Tests of kpisheet.formula: the safe parser and evaluator of derived-KPI formulas."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kpisheet
from kpisheet.errors import QUOTED_CHARS, DefinitionError, FormulaError
from kpisheet.formula import (
    MAX_FORMULA_DEPTH,
    MAX_FORMULA_LENGTH,
    MAX_FORMULA_TERMS,
    Binary,
    Number,
    Ref,
    Unary,
    parse_formula,
)
from tests.strategies import Expression, expressions, formulas

IDS = ["turnover", "transactions", "active_accounts", "x1", "_b"]

# Component values: zero (to divide by) or bounded away from zero, so nothing overflows.
component_values = st.one_of(
    st.just(0.0),
    st.floats(1e-3, 1e3),
    st.floats(-1e3, -1e-3),
)


def evaluate(text: str, **values: float) -> float:
    """Evaluate a formula over scalar values."""
    return float(parse_formula(text).evaluate({k: np.asarray(v) for k, v in values.items()}))


# --- properties ------------------------------------------------------------------------------


@given(expression=formulas(IDS))
def test_references_are_the_ids_used_in_order(expression: Expression) -> None:
    """A formula's references are the KPI ids it uses, once each, in order of first use."""
    assert parse_formula(expression.text).references == tuple(dict.fromkeys(expression.references))


@given(expression=expressions(IDS), data=st.data())
def test_evaluation_matches_reference(expression: Expression, data: st.DataObject) -> None:
    """Evaluating over arrays gives, element by element, what the expression tree computes."""
    size = data.draw(st.integers(1, 5), label="size")
    arrays = {
        kpi: np.array(
            data.draw(st.lists(component_values, min_size=size, max_size=size), label=kpi)
        )
        for kpi in IDS
    }
    before = {kpi: array.copy() for kpi, array in arrays.items()}
    result = parse_formula(expression.text).evaluate(arrays)
    expected = [
        expression.evaluate({kpi: float(arrays[kpi][i]) for kpi in IDS}) for i in range(size)
    ]
    expected = [value if math.isfinite(value) else math.nan for value in expected]
    np.testing.assert_array_equal(np.broadcast_to(result, (size,)), np.array(expected))
    assert not np.isinf(result).any()
    for kpi in IDS:
        np.testing.assert_array_equal(arrays[kpi], before[kpi])


# --- parsing ---------------------------------------------------------------------------------


def test_precedence_and_associativity() -> None:
    """``*`` and ``/`` bind tighter than ``+`` and ``-``; all four associate to the left."""
    assert evaluate("1 + 2 * 3") == 7
    assert evaluate("(1 + 2) * 3") == 9
    assert evaluate("8 - 4 - 2") == 2
    assert evaluate("8 / 4 / 2") == 1
    assert evaluate("2 * 3 / 4 * 2") == 3
    assert evaluate("10 - 2 * 3 + 1") == 5
    assert parse_formula("a - b * c").tree == Binary("-", Ref("a"), Binary("*", Ref("b"), Ref("c")))
    assert parse_formula("a / b / c").tree == Binary("/", Binary("/", Ref("a"), Ref("b")), Ref("c"))


def test_unary_minus_and_plus() -> None:
    """A leading ``-`` negates the next factor only; ``+`` is allowed and changes nothing."""
    assert evaluate("-a * 3", a=2) == -6
    assert evaluate("-(a + 1) * 2", a=2) == -6
    assert evaluate("2 * -a", a=2) == -4
    assert evaluate("--a", a=2) == 2
    assert evaluate("a - -a", a=2) == 4
    assert evaluate("+a", a=2) == 2
    assert parse_formula("-a * b").tree == Binary("*", Unary(Ref("a")), Ref("b"))


def test_numbers_and_whitespace() -> None:
    """Integers, decimals and ``.5`` are numbers; spaces, tabs and newlines are ignored."""
    assert parse_formula("100").tree == Number(100.0)
    assert evaluate("1.5 + .5 + 2.") == 4
    assert evaluate(" \ta\n/\tb ", a=1, b=4) == 0.25


def test_references_in_order_of_first_use() -> None:
    """References are listed once, in order of first appearance."""
    assert parse_formula("a + b * a + (c - b)").references == ("a", "b", "c")
    assert parse_formula("2 * 3").references == ()
    assert parse_formula("turnover / active_accounts").references == (
        "turnover",
        "active_accounts",
    )


# --- evaluation ------------------------------------------------------------------------------


def test_division_by_zero_gives_nan_not_inf() -> None:
    """Dividing by zero gives NaN (a missing value), never inf, and leaves other elements alone."""
    formula = parse_formula("a / b")
    result = formula.evaluate({"a": np.array([1.0, 0.0, -1.0, 6.0]), "b": np.array([0.0, 0, 0, 3])})
    np.testing.assert_array_equal(result, [np.nan, np.nan, np.nan, 2.0])
    assert math.isnan(evaluate("1 / 0"))
    assert math.isnan(evaluate("a / (b - b) + 1", a=1, b=5))


def test_missing_components_give_nan() -> None:
    """A missing (NaN) component makes the result missing."""
    result = parse_formula("a + b").evaluate(
        {"a": np.array([1.0, np.nan]), "b": np.array([1.0, 2])}
    )
    np.testing.assert_array_equal(result, [2.0, np.nan])


def test_result_is_a_new_array() -> None:
    """A formula that is a bare reference returns a copy, and non-finite inputs do not change."""
    values = np.array([1.0, np.inf])
    result = parse_formula("a").evaluate({"a": values})
    np.testing.assert_array_equal(result, [1.0, np.nan])
    np.testing.assert_array_equal(values, [1.0, np.inf])


def test_numbers_broadcast_against_arrays() -> None:
    """A number combines with every element of an array."""
    result = parse_formula("a * 100").evaluate({"a": np.array([0.5, 0.25])})
    np.testing.assert_array_equal(result, [50.0, 25.0])


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "formula '': expected an expression at position 1, found end of formula"),
        ("   ", "formula '   ': expected an expression at position 4, found end of formula"),
        (
            "a +",
            "formula 'a +': expected a number, a KPI id or '(' at position 4, found end of formula",
        ),
        ("a +* b", "formula 'a +* b': expected a number, a KPI id or '(' at position 4, found '*'"),
        ("(a + b", "formula '(a + b': expected ')' at position 7, found end of formula"),
        ("a + b)", "formula 'a + b)': expected an operator at position 6, found ')'"),
        ("a b", "formula 'a b': expected an operator at position 3, found 'b'"),
        ("1e5", "formula '1e5': expected an operator at position 2, found 'e'"),
        ("a ** 2", "formula 'a ** 2': expected a number, a KPI id or '(' at position 4, found '*'"),
        ("a // b", "formula 'a // b': expected a number, a KPI id or '(' at position 4, found '/'"),
        (
            "a % b",
            "formula 'a % b': expected a number, a KPI id, an operator or a parenthesis "
            "at position 3, found '%'",
        ),
        (
            "umsatz_ä",
            "formula 'umsatz_ä': expected a number, a KPI id, an operator or a parenthesis "
            "at position 8, found 'ä'",
        ),
    ],
)
def test_syntax_errors_name_the_position(text: str, message: str) -> None:
    """A formula that does not parse says what was expected, at which 1-based position."""
    with pytest.raises(FormulaError, match=re.escape(message)):
        parse_formula(text)


def test_error_keeps_structured_fields() -> None:
    """FormulaError keeps the formula, the 0-based position and what was expected."""
    with pytest.raises(FormulaError) as info:
        parse_formula("a + )")
    assert (info.value.formula, info.value.position, info.value.expected) == (
        "a + )",
        4,
        "a number, a KPI id or '('",
    )
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "__import__('os').system('touch {marker}')",
            'expected a number, a KPI id, an operator or a parenthesis at position 12, found "\'"',
        ),
        (
            "open('{marker}', 'w')",
            'expected a number, a KPI id, an operator or a parenthesis at position 6, found "\'"',
        ),
        (
            "exec(chr(112))",
            "expected an operator at position 5, found '('",
        ),
        (
            "turnover.__class__",
            "expected a number, a KPI id, an operator or a parenthesis at position 9, found '.'",
        ),
        (
            "[c for c in ().__class__.__bases__]",
            "expected a number, a KPI id, an operator or a parenthesis at position 1, found '['",
        ),
        (
            'lambda: exec(\'open("{marker}", "w")\')',
            "expected a number, a KPI id, an operator or a parenthesis at position 7, found ':'",
        ),
    ],
)
def test_code_is_rejected_and_never_run(template: str, message: str, tmp_path: Path) -> None:
    """A formula that tries to run Python is a syntax error, and nothing of it is executed."""
    marker = tmp_path / "pwned"
    text = template.format(marker=marker)
    with pytest.raises(FormulaError, match=re.escape(message)):
        parse_formula(text)
    assert not marker.exists()


def test_code_in_a_definition_is_reported_and_never_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading a KPI whose formula holds code reports the formula and runs nothing."""
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / "evil.yaml").write_text(
        "id: evil\nlabel: Evil\ngroup: G\nunit: ratio\n"
        f"formula: \"__import__('os').system('touch {marker}')\"\n",
        encoding="utf-8",
    )
    with pytest.raises(
        DefinitionError,
        match=re.escape(
            f"evil.yaml:5: KPI 'evil': formula \"__import__('os').system('touch {marker}')\": "
            "expected a number, a KPI id, an operator or a parenthesis at position 12"
        ),
    ):
        kpisheet.load_kpis(tmp_path)
    assert not marker.exists()


def test_dunder_name_is_only_a_reference() -> None:
    """A Python-looking name is nothing but a reference to a KPI id, looked up in the values."""
    formula = parse_formula("__import__")
    assert formula.references == ("__import__",)
    with pytest.raises(KeyError):
        formula.evaluate({})


def test_formula_nested_beyond_the_limit_is_refused() -> None:
    """600 nested parentheses are a FormulaError naming the limit, not a RecursionError."""
    text = "(" * 600 + "a" + ")" * 600
    with pytest.raises(
        FormulaError,
        match=re.escape(
            f"formula {text[:QUOTED_CHARS]!r}… (1,201 characters): nested more than "
            f"{MAX_FORMULA_DEPTH} levels deep (parentheses and signs) at position 51"
        ),
    ):
        parse_formula(text)


def test_signs_count_towards_the_nesting_limit() -> None:
    """A chain of 600 minus signs is refused like parentheses."""
    with pytest.raises(FormulaError, match=re.escape("nested more than 50 levels deep")):
        parse_formula("-" * 600 + "a")


def test_formula_with_too_many_terms_is_refused() -> None:
    """More numbers and KPI ids than the limit are refused, pointing at the first one too many."""
    text = "+".join(["a"] * (MAX_FORMULA_TERMS + 1))
    with pytest.raises(
        FormulaError,
        match=re.escape(
            f"{MAX_FORMULA_TERMS + 1} numbers and KPI ids; a formula may combine at most "
            f"{MAX_FORMULA_TERMS} (split it into derived KPIs)"
        ),
    ):
        parse_formula(text)


def test_formula_of_1500_terms_is_refused_by_its_length() -> None:
    """The 1,500-term formula that ended in a RecursionError is refused by its length."""
    text = "+".join(["a"] * 1500)
    with pytest.raises(
        FormulaError,
        match=re.escape(
            f"(2,999 characters): 2,999 characters long; a formula may have at most "
            f"{MAX_FORMULA_LENGTH:,}"
        ),
    ):
        parse_formula(text)


def test_formula_at_the_limits_parses_and_evaluates() -> None:
    """The deepest and widest formulas allowed still parse, and evaluate to the right number."""
    deep = "(" * (MAX_FORMULA_DEPTH - 1) + "a" + ")" * (MAX_FORMULA_DEPTH - 1)
    wide = "+".join(["a"] * MAX_FORMULA_TERMS)
    values = {"a": np.array([2.0])}
    assert parse_formula(deep).evaluate(values).tolist() == [2.0]
    assert parse_formula(wide).evaluate(values).tolist() == [2.0 * MAX_FORMULA_TERMS]


def test_formula_limits_are_reported_for_every_kpi_at_once(tmp_path: Path) -> None:
    """Each over-long, too deep and too wide formula is a problem naming file, line and KPI."""
    source = "- id: a\n  label: A\n  group: G\n  unit: count\n  time_aggregation: sum\n"
    formulas = {
        "deep": "(" * 600 + "a" + ")" * 600,
        "wide": "+".join(["a"] * 300),
        "long": "a" + " " * 2500 + "+ a",
    }
    for kpi, formula in formulas.items():
        source += f"- id: {kpi}\n  label: X\n  group: G\n  unit: count\n  formula: '{formula}'\n"
    path = tmp_path / "limits.yaml"
    path.write_text(source, encoding="utf-8")
    with pytest.raises(DefinitionError) as info:
        kpisheet.load_kpis(path)
    assert [(p.line, p.kpi, p.field) for p in info.value.problems] == [
        (10, "deep", "formula"),
        (15, "wide", "formula"),
        (20, "long", "formula"),
    ]
    assert "RecursionError" not in str(info.value)
