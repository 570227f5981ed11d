"""Exceptions of kpisheet; each keeps structured fields so the CLI, the app and tests can use them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Problem:
    """One problem found while validating input: where it is, which KPI and field, and what is wrong."""

    message: str
    file: str | None = None
    line: int | None = None
    kpi: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        parts = []
        if self.file is not None:
            parts.append(f"{self.file}:{self.line}" if self.line is not None else self.file)
        if self.kpi is not None:
            parts.append(f"KPI '{self.kpi}'")
        parts.append(self.message)
        return ": ".join(parts)


class KpisheetError(Exception):
    """Raised when kpisheet is given input it cannot use; the base of all kpisheet errors."""


class ProblemsError(KpisheetError, ValueError):
    """Raised when validation found one or more problems; all of them are in ``problems``."""

    title = "problems"

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__(self.report())

    def report(self) -> str:
        """All problems, one per line, under a heading that counts them."""
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"{count} {noun} in {self.title}:"]
        lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)


class DefinitionError(ProblemsError):
    """Raised when KPI definitions are invalid (YAML, fields, references, cycles)."""

    title = "KPI definitions"


class FormulaError(KpisheetError, ValueError):
    """Raised when a derived KPI's formula cannot be parsed."""

    def __init__(self, formula: str, position: int, expected: str) -> None:
        self.formula = formula
        self.position = position
        self.expected = expected
        found = formula[position] if position < len(formula) else "end of formula"
        found = repr(found) if position < len(formula) else found
        super().__init__(
            f"formula {formula!r}: expected {expected} at position {position + 1}, found {found}"
        )


class HierarchyError(ProblemsError):
    """Raised when the entity hierarchy file is invalid."""

    title = "the entity hierarchy"


class IngestConfigError(ProblemsError):
    """Raised when an ingest configuration file (column names, exclusion rules) is invalid."""

    title = "the ingest configuration"


class DataError(KpisheetError, ValueError):
    """Raised when observations are invalid; ``failure_cases`` holds the offending rows."""

    def __init__(self, source: str, problems: list[Problem], failure_cases: pd.DataFrame) -> None:
        self.source = source
        self.problems = tuple(problems)
        self.failure_cases = failure_cases
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"{count} {noun} in data {source}:"] + [f"  {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class QueryError(KpisheetError, ValueError):
    """Raised when a query asks for something the sheet does not have (month, window, KPI, entity)."""


class StoreError(KpisheetError, RuntimeError):
    """Raised when the store cannot be read or written (unknown release, unreachable database)."""


class AuthError(KpisheetError, ValueError):
    """Raised when a users file, a user name, a password or the cookie secret cannot be used."""
