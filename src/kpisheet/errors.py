"""Exceptions of kpisheet; each keeps structured fields so the CLI, the app and tests can use them."""

from __future__ import annotations

import difflib
import re
import reprlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

#: Characters of a value that a message quotes; a longer value is cut and its length given.
QUOTED_CHARS = 200
#: Characters of one line of a message; a longer line is cut and what was left out counted.
MESSAGE_LINE_CHARS = 2000

# Control characters (C0 but newline, DEL, C1) and the Unicode marks that reorder or hide text:
# from data they could move the cursor, recolour the terminal or disguise the message.
_UNPRINTABLE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
_LONG_LINE = re.compile(f"[^\n]{{{MESSAGE_LINE_CHARS + 1},}}")
_reprs = reprlib.Repr()
_reprs.maxlevel, _reprs.maxstring, _reprs.maxother = 3, QUOTED_CHARS, QUOTED_CHARS


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _cut_line(match: re.Match[str]) -> str:
    line = match.group()
    keep = MESSAGE_LINE_CHARS - 40  # room for the note, so that a cut line is not cut again
    return f"{line[:keep]} … ({len(line) - keep:,} more characters)"


def printable(text: str) -> str:
    """A message made safe to print: control characters escaped (``\\x1b``), over-long lines cut.

    Every kpisheet error renders through it, so text from data can neither drive a terminal
    nor flood it. Newlines are kept: they separate the problems of a report.
    """
    return _LONG_LINE.sub(_cut_line, _UNPRINTABLE.sub(_escape, text))


def quoted(value: object) -> str:
    """``repr`` of a value from input for a message, cut after :data:`QUOTED_CHARS` characters."""
    if isinstance(value, str) and len(value) > QUOTED_CHARS:
        return f"{value[:QUOTED_CHARS]!r}… ({len(value):,} characters)"
    if isinstance(value, str):
        return repr(value)
    return _reprs.repr(value)


def close_matches(value: str, known: Iterable[str]) -> list[str]:
    """The known name closest to a misspelt one, for "did you mean" (empty when none is close).

    Values longer than :data:`QUOTED_CHARS` get no suggestion: comparing them costs memory in
    proportion to their length, and a name that long is no typo.
    """
    if len(value) > QUOTED_CHARS:
        return []
    return difflib.get_close_matches(value, list(known), n=1)


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

    def __str__(self) -> str:
        return printable(super().__str__())


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

    def __init__(
        self, formula: str, position: int, expected: str, *, reason: str | None = None
    ) -> None:
        self.formula = formula
        self.position = position
        self.expected = expected
        found = formula[position] if position < len(formula) else "end of formula"
        found = repr(found) if position < len(formula) else found
        detail = reason or f"expected {expected} at position {position + 1}, found {found}"
        super().__init__(f"formula {quoted(formula)}: {detail}")


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


class ChecksumError(StoreError):
    """Raised when a release's observations no longer match the checksum written with them."""

    def __init__(self, url: str, release: int, stored: str, actual: str) -> None:
        self.url = url
        self.release = release
        self.stored = stored
        self.actual = actual
        super().__init__(
            f"store {url}: release {release} does not match its checksum (written "
            f"{stored[:12]}…, now {actual[:12]}…): its values were changed outside kpisheet; "
            "do not use it — ingest the data again or read another release"
        )
