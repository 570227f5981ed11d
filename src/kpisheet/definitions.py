"""What a KPI is: the pydantic model of a KPI declaration and the loader of KPI YAML files.

A file holds one KPI (a mapping) or a list of KPIs. Loading collects every problem of every file
(YAML syntax, unknown keys, missing fields, wrong words) instead of stopping at the first one;
cross-file checks (duplicates, references, cycles) live in :mod:`kpisheet.registry`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kpisheet.constants import EntityAggregation, TimeAggregation, Unit
from kpisheet.errors import (
    FormulaError,
    Location,
    Problem,
    Problems,
    quoted,
    validation_problems,
)
from kpisheet.files import display_path, key_lines, read_yaml, repeated_keys
from kpisheet.formula import Formula, parse_formula

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

KPI_ID_PATTERN = r"^[a-z][a-z0-9_]*$"
YAML_SUFFIXES = (".yaml", ".yml")


class Source(BaseModel):
    """How ingestion recognises a KPI in upstream data: by name, or by id (plus period id)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kpi_name: str | None = None
    kpi_id: int | str | None = None
    period_id: int | str | None = None

    @model_validator(mode="after")
    def _names_something(self) -> Source:
        if self.kpi_name is None and self.kpi_id is None:
            raise ValueError("needs kpi_name or kpi_id")
        if self.period_id is not None and self.kpi_id is None:
            raise ValueError("period_id needs kpi_id")
        return self


class Highlight(BaseModel):
    """Thresholds above which a change against the previous year is flagged (docs/kpi-definitions.md).

    A row is flagged when ``|change| >= min_abs_change`` or ``|change_pct| >= min_pct_change``,
    for whichever of the two are declared; ``min_pct_change`` is a fraction (0.1 = 10 %).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_abs_change: float | None = Field(default=None, ge=0, allow_inf_nan=False, strict=False)
    min_pct_change: float | None = Field(default=None, ge=0, allow_inf_nan=False, strict=False)

    @field_validator("min_abs_change", "min_pct_change", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool) or not (value is None or isinstance(value, int | float)):
            raise ValueError(f"expected a number >= 0, got {quoted(value)}")
        return value

    @model_validator(mode="after")
    def _declares_one(self) -> Highlight:
        if self.min_abs_change is None and self.min_pct_change is None:
            raise ValueError("needs min_abs_change or min_pct_change (or both)")
        return self


class KPIDefinition(BaseModel):
    """One KPI as declared in YAML (docs/kpi-definitions.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    id: str = Field(pattern=KPI_ID_PATTERN)
    label: str = Field(min_length=1)
    group: str = Field(min_length=1)
    unit: Unit
    time_aggregation: TimeAggregation | None = None
    entity_aggregation: EntityAggregation = EntityAggregation.SUM
    average_per: str | None = None
    description: str = ""
    source: Source | None = None
    formula: str | None = None
    highlight: Highlight | None = None

    @field_validator("formula")
    @classmethod
    def _formula_parses(cls, value: str | None) -> str | None:
        if value is not None and not parse_formula(value).references:
            raise ValueError(
                f"{quoted(value)} references no KPI; a derived KPI is computed from other KPIs"
            )
        return value

    @model_validator(mode="after")
    def _source_or_formula(self) -> KPIDefinition:
        problems = combination_problems(self.model_dump(exclude_defaults=True))
        if problems:
            raise ValueError("; ".join(message for _, message in problems))
        return self

    @property
    def is_derived(self) -> bool:
        """True for KPIs computed by a formula from other KPIs."""
        return self.formula is not None

    @cached_property
    def parsed_formula(self) -> Formula | None:
        """The parsed formula of a derived KPI, else ``None``."""
        return parse_formula(self.formula) if self.formula is not None else None

    @property
    def references(self) -> tuple[str, ...]:
        """KPI ids this KPI depends on: formula components and the ``average_per`` denominator."""
        formula = self.parsed_formula
        refs = list(formula.references) if formula is not None else []
        if self.average_per is not None and self.average_per not in refs:
            refs.append(self.average_per)
        return tuple(refs)


FIELDS: tuple[str, ...] = tuple(KPIDefinition.model_fields)


def combination_problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    """``(field, message)`` for fields that are valid alone but not together."""
    has = {name for name in ("formula", "source", "time_aggregation") if data.get(name) is not None}
    problems = []
    if {"formula", "source"} <= has:
        problems.append(("source", "a KPI with a formula is derived and takes no source"))
    if {"formula", "time_aggregation"} <= has:
        problems.append(
            (
                "time_aggregation",
                "a KPI with a formula is evaluated after aggregation and takes no "
                "time_aggregation; remove it or the formula",
            )
        )
    if "formula" not in has and "time_aggregation" not in has:
        problems.append(
            (
                "time_aggregation",
                "missing required field 'time_aggregation' (every KPI without a formula needs "
                "one of: " + ", ".join(member.value for member in TimeAggregation) + ")",
            )
        )
    return problems


SOURCE_FIELDS: tuple[str, ...] = tuple(Source.model_fields)
HIGHLIGHT_FIELDS: tuple[str, ...] = tuple(Highlight.model_fields)


@dataclass(frozen=True)
class Origin:
    """Where a KPI was declared: the file, the line of its mapping and the plugin that contributed it."""

    file: str
    line: int | None
    plugin: str
    field_lines: Mapping[str, int] = dataclass_field(
        default_factory=dict, compare=False, repr=False
    )

    def line_of(self, field: str) -> int | None:
        """Line of a field of the KPI, or of the KPI itself."""
        return self.field_lines.get(field, self.line)

    def __str__(self) -> str:
        return f"{self.plugin}: {self.file}" if self.plugin else self.file


@dataclass(frozen=True)
class LoadedKPI:
    """A KPI definition together with its origin.

    ``valid`` is false for a KPI that failed validation but was kept (``load_file(...,
    keep_invalid=True)``) so that cross-KPI checks still know its id and check its references;
    its definition then holds only ``id``, ``formula`` and ``average_per``.
    """

    definition: KPIDefinition
    origin: Origin
    valid: bool = True


def iter_definition_files(paths: Iterable[Path | str]) -> Iterator[Path]:
    """YAML files among ``paths``; directories are searched recursively in sorted order."""
    for path in map(Path, paths):
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file()
            )
        else:
            yield path


def _message_of(error: ErrorDetails, field: str) -> str | None:
    """The wording of the errors a KPI declaration words better than in general (id, source,
    highlight); ``None`` for the rest."""
    kind, top, value = error["type"], field.split(".")[0], error.get("input")
    if kind == "string_pattern_mismatch" and top == "id":
        return f"id {quoted(value)} is not snake_case (lower-case letters, digits and '_', starting with a letter)"
    if kind == "model_type" and top == "source":
        return (
            f"source {quoted(value)} is not a mapping; expected keys from: {', '.join(SOURCE_FIELDS)}, "
            'e.g. source: {kpi_name: "Umsatz Total"}'
        )
    if kind == "model_type" and top == "highlight":
        return (
            f"highlight {quoted(value)} is not a mapping; expected keys from: "
            f"{', '.join(HIGHLIGHT_FIELDS)}, e.g. highlight: {{min_abs_change: 100000}}"
        )
    if kind == "greater_than_equal" and top == "highlight":
        return f"{field} {quoted(value)} is negative; expected a number >= 0"
    if kind == "finite_number" and top == "highlight":
        return f"{field} {quoted(value)} is not a finite number; expected a number >= 0"
    return None


def _read_yaml(path: Path, file: str) -> tuple[list[tuple[Any, yaml.Node]], list[Problem]]:
    """The YAML items of a file (one mapping or a list), each with its node for line numbers."""
    data, node, problem = read_yaml(path, file)
    if problem is not None:
        return [], [problem]
    if node is None:
        return [], [Problem("file is empty; expected a KPI mapping or a list of KPIs", file=file)]
    if isinstance(node, yaml.MappingNode):
        return [(data, node)], []
    if isinstance(node, yaml.SequenceNode):
        return list(zip(data, node.value, strict=True)), []
    return [], [
        Problem(
            f"expected a KPI mapping or a list of KPIs, found {type(data).__name__}",
            file=file,
            line=node.start_mark.line + 1,
        )
    ]


def _partial_definition(data: dict[str, Any]) -> KPIDefinition | None:
    """What cross-KPI checks need of a KPI that failed validation: its id and its references."""
    kpi_id, formula, average_per = (data.get(key) for key in ("id", "formula", "average_per"))
    if not isinstance(kpi_id, str):
        return None
    if isinstance(formula, str):
        try:
            parse_formula(formula)
        except FormulaError:
            formula = None
    return KPIDefinition.model_construct(
        id=kpi_id,
        formula=formula if isinstance(formula, str) else None,
        average_per=average_per if isinstance(average_per, str) else None,
    )


def load_file(
    path: Path | str, plugin: str = "", *, keep_invalid: bool = False
) -> tuple[list[LoadedKPI], list[Problem]]:
    """Load and validate every KPI of one YAML file; returns the KPIs that are valid and all problems.

    With ``keep_invalid``, KPIs that failed validation are returned too, marked ``valid=False``.
    """
    path = Path(path)
    file = display_path(path)
    items, read_problems = _read_yaml(path, file)
    loaded: list[LoadedKPI] = []
    problems = Problems(file)
    problems.extend(read_problems)
    for index, (data, node) in enumerate(items, start=1):
        line = node.start_mark.line + 1
        if not isinstance(data, dict):
            problems.add(
                f"item {index} is {type(data).__name__}; expected a KPI mapping (id, label, ...)",
                line=line,
            )
            continue
        lines = key_lines(node)
        raw_id = data.get("id")
        kpi = str(raw_id) if raw_id is not None else None
        for key, _, repeated in repeated_keys(node):
            problems.add(f"key '{key}' appears twice", line=repeated, kpi=kpi, field=key)
        combined = combination_problems(data)
        for field, message in combined:
            problems.add(message, line=lines.get(field, line), kpi=kpi, field=field)
        try:
            definition = KPIDefinition.model_validate(data)
        except ValidationError as exc:

            def line_of(loc: Location, lines: dict[str, int] = lines, line: int = line) -> int:
                return lines.get(str(loc[0]), line) if loc else line

            problems.extend(
                problem
                for problem in validation_problems(
                    exc, KPIDefinition, file=file, line_of=line_of, kpi=kpi, message_of=_message_of
                )
                if problem.field or not combined  # model-level errors are the combined ones
            )
            partial = _partial_definition(data) if keep_invalid else None
            if partial is not None:
                origin = Origin(file=file, line=line, plugin=plugin, field_lines=lines)
                loaded.append(LoadedKPI(partial, origin, valid=False))
            continue
        origin = Origin(file=file, line=line, plugin=plugin, field_lines=lines)
        loaded.append(LoadedKPI(definition, origin))
    return loaded, problems.problems
