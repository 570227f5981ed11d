"""Exceptions of kpisheet; each keeps structured fields so the CLI, the app and tests can use them."""

from __future__ import annotations

import difflib
import enum
import re
import reprlib
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from pydantic import BaseModel, ValidationError
    from pydantic_core import ErrorDetails

__all__ = [
    "FAILURE_COLUMNS",
    "MESSAGE_LINE_CHARS",
    "QUOTED_CHARS",
    "QUOTED_ROWS",
    "WHERE",
    "ChecksumError",
    "DataError",
    "DefinitionError",
    "FormulaError",
    "HierarchyError",
    "IngestConfigError",
    "KpisheetError",
    "Location",
    "Problem",
    "Problems",
    "ProblemsError",
    "QueryError",
    "RowProblems",
    "StoreError",
    "close_matches",
    "did_you_mean",
    "printable",
    "quoted",
    "quoted_rows",
    "validation_problems",
    "with_suggestion",
]

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


def did_you_mean(value: str, known: Iterable[str]) -> str:
    """``did you mean 'turnover'?`` for the known name closest to a misspelt one; empty when none
    is close. The one wording of a suggestion, whichever message carries it."""
    close = close_matches(value, known)
    return f"did you mean '{close[0]}'?" if close else ""


def with_suggestion(text: str, value: str, known: Iterable[str]) -> str:
    """``text`` followed by `` (did you mean '...'?)`` when a known name is close to ``value``."""
    hint = did_you_mean(value, known)
    return f"{text} ({hint})" if hint else text


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


class Problems:
    """Problems found while checking one input, collected so that they are raised together once.

    A data engineer fixes every problem in one round: checks add to the collector and carry on,
    and the caller raises once at the end (:meth:`raise_if_any`). ``file`` is the default file
    of the problems added.
    """

    def __init__(self, file: str | None = None) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def add(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        kpi: str | None = None,
        field: str | None = None,
    ) -> None:
        """Add one problem (in the collector's file unless ``file`` is given)."""
        self.problems.append(Problem(message, file or self.file, line, kpi, field))

    def extend(self, problems: Iterable[Problem]) -> None:
        """Add problems found elsewhere, e.g. by a helper or a nested check."""
        self.problems.extend(problems)

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.problems)

    def __len__(self) -> int:
        return len(self.problems)

    def raise_if_any(self, error: Callable[[list[Problem]], Exception]) -> None:
        """Raise ``error`` (e.g. :class:`HierarchyError`) with every problem, if there are any."""
        if self.problems:
            raise error(self.problems)


#: Columns of :attr:`DataError.failure_cases`: where the row is, the column, its value, the problem.
WHERE = "where"
FAILURE_COLUMNS = [WHERE, "column", "value", "problem"]
#: How many offending rows a message quotes before it says "and N more".
QUOTED_ROWS = 5


def quoted_rows(values: Iterable[object], where: Iterable[str]) -> str:
    """``line 7 ('2023-13'), line 9 ('x')`` for the first :data:`QUOTED_ROWS` offending rows."""
    pairs = [f"{w} ({quoted(v)})" for v, w in zip(values, where, strict=True)]
    shown = ", ".join(pairs[:QUOTED_ROWS])
    more = len(pairs) - QUOTED_ROWS
    return shown + (f" and {more} more" if more > 0 else "")


class RowProblems(Problems):
    """Problems of a table's rows, each kept with its offending rows for :class:`DataError`.

    :param where: how messages name rows by their index (``line 7`` of a file, ``row 5`` of a
        frame), e.g. :meth:`kpisheet.observations.RawTable.where`.
    """

    def __init__(self, source: str, where: Callable[[Any], list[str]]) -> None:
        super().__init__(source)
        self.source = source
        self.where = where
        self.failures: list[pd.DataFrame] = []

    def add_rows(
        self, message: str, rows: pd.Series, column: str, *, quote: bool = True, detail: str = ""
    ) -> None:
        """A problem of ``rows`` (the offending values, indexed by row) of ``column``.

        The report quotes the first rows (``quote``) and adds ``detail``; the failure cases
        carry every row with ``message`` alone.
        """
        import pandas as pd

        where = self.where(rows.index)
        shown = f": {quoted_rows(rows, where)}" if quote else ""
        self.add(f"{message}{shown}{detail}", field=column)
        values = rows.astype(str).to_numpy()
        frame = {WHERE: where, "column": column, "value": values, "problem": message}
        self.failures.append(pd.DataFrame(frame, columns=FAILURE_COLUMNS))

    def absorb(self, error: DataError) -> None:
        """Take over the problems and failure cases of another check's DataError."""
        self.extend(error.problems)
        self.failures.append(error.failure_cases)

    def failure_cases(self) -> pd.DataFrame:
        """Every offending row, one row per row and problem (columns :data:`FAILURE_COLUMNS`)."""
        import pandas as pd

        failures = [f for f in self.failures if not f.empty]
        return pd.concat(failures, ignore_index=True) if failures else pd.DataFrame()

    def raise_if_any(self, error: Callable[[list[Problem]], Exception] | None = None) -> None:
        """Raise one DataError with every problem and offending row (or ``error``), if any."""
        if self.problems and error is not None:
            raise error(self.problems)
        if self.problems:
            raise self.error()

    def error(self) -> DataError:
        """One DataError with every problem and offending row collected so far."""
        return DataError(self.source, self.problems, self.failure_cases())


# -- pydantic's errors as problems --------------------------------------------------------------

#: Where in a pydantic model an error is: field names, list positions, mapping keys.
Location = tuple[str | int, ...]


def _unwrap(annotation: Any) -> Any:
    """The type inside ``X | None``, ``Optional[X]`` and ``Annotated[X, ...]``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _field_type(model: type[BaseModel], loc: Location) -> Any:
    """The declared type at ``loc`` of a model (through nested models), or ``None``."""
    from pydantic import BaseModel

    annotation: Any = model
    for part in loc:
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        field = annotation.model_fields.get(str(part))
        if field is None:
            return None
        annotation = _unwrap(field.annotation)
    return annotation


def _words(annotation: Any) -> list[str]:
    """The words a field allows: an Enum's values or a Literal's (empty for other types)."""
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(member.value) for member in annotation]
    if typing.get_origin(annotation) is typing.Literal:
        return [str(word) for word in typing.get_args(annotation)]
    return []


def _keys(model: type[BaseModel]) -> list[str]:
    """The keys a model's mapping may have, as the file writes them (aliases where given)."""
    return [field.alias or name for name, field in model.model_fields.items()]


def validation_problems(
    error: ValidationError,
    model: type[BaseModel],
    *,
    file: str | None,
    line_of: Callable[[Location], int | None],
    kpi: str | None = None,
    message_of: Callable[[ErrorDetails, str], str | None] | None = None,
) -> list[Problem]:
    """Each error of a pydantic model as a :class:`Problem`: file, line, field, value, expected.

    The wording is kpisheet's, not pydantic's: a missing field, an unknown key with "did you
    mean" and the allowed keys, a word that is not one of the allowed words, a validator's own
    message. ``message_of(error, field)`` words the errors a model knows better (``None`` for
    the rest); ``line_of(loc)`` gives the line of a location (``None`` when unknown). Problems
    that say the same at the same line are given once.
    """
    problems: dict[tuple[str, int | None], Problem] = {}
    for details in error.errors():
        loc: Location = tuple(details["loc"])
        field = ".".join(map(str, loc)) or None
        message = (message_of(details, field or "") if message_of else None) or _message(
            details, model, loc, field or ""
        )
        line = line_of(loc)
        problems.setdefault((message, line), Problem(message, file, line, kpi, field))
    return list(problems.values())


def _message(details: ErrorDetails, model: type[BaseModel], loc: Location, field: str) -> str:
    """The general wording of a pydantic error."""
    kind, value = details["type"], details.get("input")
    reason = (details.get("ctx") or {}).get("error")
    if kind == "missing":
        return f"missing required field '{field}'"
    if kind == "extra_forbidden":
        parent = _field_type(model, loc[:-1])
        allowed = _keys(parent) if parent is not None else []
        unknown = with_suggestion(f"unknown key '{field}'", str(loc[-1]), allowed)
        return f"{unknown}; allowed keys: {', '.join(allowed)}"
    words = _words(_field_type(model, loc))
    if kind in ("enum", "literal_error") and words:
        return f"{field} {quoted(value)} is not one of: {', '.join(words)}"
    if kind == "value_error" and isinstance(reason, KpisheetError):
        return str(reason)  # a message of kpisheet's own, e.g. a formula's
    if kind == "value_error":
        return f"{field}: {reason if reason is not None else details['msg']}"
    return f"{field}: {details['msg'].lower()}, got {quoted(value)}"


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
        #: the checksum the release's rows give now; ``None`` for a changed snapshot
        self.actual: str | None = actual
        super().__init__(
            f"store {url}: release {release} does not match its checksum (written "
            f"{stored[:12]}…, now {actual[:12]}…): its values were changed outside kpisheet; "
            "do not use it — ingest the data again or read another release"
        )


class SnapshotError(ChecksumError):
    """Raised when a release's snapshot no longer matches the digest written with it."""

    def __init__(self, url: str, release: int, stored: str, reason: str) -> None:
        self.url = url
        self.release = release
        self.stored = stored
        self.actual = None  # the checksum cannot be recomputed from bytes that were changed
        self.reason = reason
        StoreError.__init__(
            self,
            f"store {url}: release {release} does not match its checksum: its snapshot was "
            f"changed outside kpisheet ({reason}); do not use it — `kpisheet store upgrade "
            f"--store {url}` builds it again from the release's rows if they still match its "
            "checksum, `kpisheet releases verify` checks both",
        )
