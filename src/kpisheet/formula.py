"""A small safe parser for derived-KPI formulas: numbers, KPI ids, ``+ - * /`` and parentheses.

Formulas are parsed into a tiny expression tree and evaluated over numpy arrays; user text is
never handed to ``eval`` or ``pandas.eval``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from kpisheet.errors import FormulaError

#: Characters a formula may have.
MAX_FORMULA_LENGTH = 2000
#: Numbers and KPI ids a formula may combine.
MAX_FORMULA_TERMS = 200
#: Levels of parentheses and signs a formula may nest.
MAX_FORMULA_DEPTH = 50

_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d*)?|\.\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>[-+*/()]))"
)


@dataclass(frozen=True)
class Number:
    """A numeric literal."""

    value: float


@dataclass(frozen=True)
class Ref:
    """A reference to another KPI by id."""

    kpi: str


@dataclass(frozen=True)
class Unary:
    """A negated expression."""

    operand: Node


@dataclass(frozen=True)
class Binary:
    """An arithmetic operation on two expressions."""

    op: str
    left: Node
    right: Node


Node = Number | Ref | Unary | Binary


def _divide(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Divide, giving NaN (never inf) where the denominator is zero."""
    left, right = np.broadcast_arrays(np.asarray(left, float), np.asarray(right, float))
    out = np.full(left.shape, np.nan)
    np.divide(left, right, out=out, where=right != 0)
    return out


_OPERATIONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": _divide,
}


@dataclass(frozen=True)
class Formula:
    """A parsed formula: its text, its expression tree and the KPI ids it references."""

    text: str
    tree: Node

    @property
    def references(self) -> tuple[str, ...]:
        """KPI ids the formula uses, in order of first appearance."""
        seen: dict[str, None] = {}

        def walk(node: Node) -> None:
            if isinstance(node, Ref):
                seen.setdefault(node.kpi)
            elif isinstance(node, Unary):
                walk(node.operand)
            elif isinstance(node, Binary):
                walk(node.left)
                walk(node.right)

        walk(self.tree)
        return tuple(seen)

    def evaluate(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """Evaluate over aligned arrays of component values; division by zero gives NaN."""

        def run(node: Node) -> np.ndarray:
            if isinstance(node, Number):
                return np.asarray(node.value, float)
            if isinstance(node, Ref):
                return np.asarray(values[node.kpi], float)
            if isinstance(node, Unary):
                return -run(node.operand)
            return _OPERATIONS[node.op](run(node.left), run(node.right))

        with np.errstate(invalid="ignore", over="ignore"):
            # A copy: a formula that is a bare reference must not hand back (and then modify)
            # the caller's array.
            result = np.array(run(self.tree), dtype=float, copy=True)
        result[~np.isfinite(result)] = np.nan
        return result


class _Parser:
    """Recursive-descent parser over the grammar
    ``expr := term (('+'|'-') term)*; term := factor (('*'|'/') factor)*;
    factor := '-' factor | '+' factor | number | name | '(' expr ')'``.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        if len(text) > MAX_FORMULA_LENGTH:
            raise FormulaError(
                text,
                MAX_FORMULA_LENGTH,
                "",
                reason=f"{len(text):,} characters long; a formula may have at most "
                f"{MAX_FORMULA_LENGTH:,}",
            )
        self.depth = 0
        self.tokens: list[tuple[str, str, int]] = []
        position = 0
        while position < len(text):
            if text[position:].strip() == "":
                break
            match = _TOKEN.match(text, position)
            if match is None:
                start = position + len(text[position:]) - len(text[position:].lstrip())
                raise FormulaError(text, start, "a number, a KPI id, an operator or a parenthesis")
            kind = match.lastgroup or ""
            start = match.start(kind)
            self.tokens.append((kind, match.group(kind), start))
            position = match.end()
        terms = [token for token in self.tokens if token[0] != "op"]
        if len(terms) > MAX_FORMULA_TERMS:
            raise FormulaError(
                text,
                terms[MAX_FORMULA_TERMS][2],
                "",
                reason=f"{len(terms):,} numbers and KPI ids; a formula may combine at most "
                f"{MAX_FORMULA_TERMS} (split it into derived KPIs)",
            )
        self.index = 0

    def _peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _fail(self, expected: str) -> FormulaError:
        token = self._peek()
        return FormulaError(self.text, token[2] if token else len(self.text), expected)

    def parse(self) -> Node:
        if not self.tokens:
            raise FormulaError(self.text, len(self.text), "an expression")
        node = self._expr()
        if self._peek() is not None:
            raise self._fail("an operator")
        return node

    def _expr(self) -> Node:
        node = self._term()
        while (token := self._peek()) and token[1] in "+-" and token[0] == "op":
            self.index += 1
            node = Binary(token[1], node, self._term())
        return node

    def _term(self) -> Node:
        node = self._factor()
        while (token := self._peek()) and token[0] == "op" and token[1] in "*/":
            self.index += 1
            node = Binary(token[1], node, self._factor())
        return node

    def _factor(self) -> Node:
        token = self._peek()
        if token is None:
            raise self._fail("a number, a KPI id or '('")
        kind, text, position = token
        self.index += 1
        if kind == "op":
            self.depth += 1
            try:
                if self.depth > MAX_FORMULA_DEPTH:
                    raise FormulaError(
                        self.text,
                        position,
                        "",
                        reason=f"nested more than {MAX_FORMULA_DEPTH} levels deep (parentheses "
                        f"and signs) at position {position + 1}",
                    )
                return self._operator_factor(text)
            finally:
                self.depth -= 1
        if kind == "number":
            return Number(float(text))
        return Ref(text)

    def _operator_factor(self, text: str) -> Node:
        """A factor that starts with an operator: a sign or an opening parenthesis."""
        if text == "-":
            return Unary(self._factor())
        if text == "+":
            return self._factor()
        if text == "(":
            node = self._expr()
            closing = self._peek()
            if closing is None or closing[1] != ")":
                raise self._fail("')'")
            self.index += 1
            return node
        self.index -= 1
        raise self._fail("a number, a KPI id or '('")


def parse_formula(text: str) -> Formula:
    """Parse a formula; raises :class:`~kpisheet.errors.FormulaError` naming the position."""
    return Formula(text, _Parser(text).parse())
