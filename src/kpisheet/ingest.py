"""The monthly refresh: read sources, map them to KPI ids, validate and check them, write one release.

A source is a CSV or Parquet file (or a glob of files), or a database (a SQLAlchemy URL) read with
queries from ``.sql`` files whose ``:name`` parameters are bound, never pasted into the text.
Several sources make one release; rows that more than one source holds are an error, or the later
source's (``overlap: later``). Rows that already
carry KPI ids in a ``kpi`` column ingest as they are; upstream rows carrying the warehouse's KPI
names or ids are mapped through each definition's ``source:``. Column names, exclusion rules and
what to do with upstream KPIs no definition claims come from a small configuration file::

    # ingest.yaml
    columns: {month: period_date, entity: product_name, kpi_name: kpi_name, value: kpi_value}
    exclude:
      - {column: entity, startswith: "TEST "}
    unmapped_kpis: drop            # error (default) | drop
    overlap: later                 # error (default) | later
    date_format: "%d/%m/%Y"        # for dates like 01/10/2026, whose order the text does not tell
    entities:                      # the hierarchy from a product table (--entities-source)
      total: Kartenwelt AG
      leaf: product_name
      levels: [sector, mandant]
      attributes: [cardprofile]
    checks: {months_after_previous: 1, jumps: {turnover: 0.5}}   # see kpisheet.plausibility

Each release records the entity hierarchy it was validated against, and the plausibility
warnings of its ingest. Every problem — of the mapping, the observations and the plausibility
checks — is reported at once, and on any problem nothing is written.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import tomllib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.elements import TextClause

from kpisheet import plausibility
from kpisheet.constants import ENTITY, KPI, MONTH, VALUE
from kpisheet.diff import diff_releases
from kpisheet.errors import (
    DataError,
    HierarchyError,
    IngestConfigError,
    Problem,
    Problems,
    RowProblems,
    StoreError,
    did_you_mean,
    validation_problems,
)
from kpisheet.files import display_path, node_at, node_line, read_text, read_yaml
from kpisheet.hierarchy import Hierarchy, hierarchy_from_table, load_hierarchy
from kpisheet.months import month_text, parse_month
from kpisheet.observations import (
    RawTable,
    missing_value_text,
    read_observations,
    validate_observation_codes,
)
from kpisheet.plausibility import Checks
from kpisheet.plugins import load_kpis
from kpisheet.registry import Registry
from kpisheet.store import (
    ReleaseInfo,
    ReleaseWarning,
    Store,
    display_url,
    is_store_url,
    store_url_of,
)

#: Column roles a source may have, by the name the configuration gives them.
KPI_NAME = "kpi_name"
KPI_ID = "kpi_id"
PERIOD_ID = "period_id"

Echo = Callable[[str], None]

# Joins a KPI id and a period id into one lookup key.
_PAIR = "\x1f"


def _no_echo(message: str) -> None:
    """Default for ``echo``: say nothing."""


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """One source of a release: a file, a store, or a query on a database."""

    source: str | Path
    query: Path | str | None = None


class ColumnNames(BaseModel):
    """Names of the source's columns for each role (matched ignoring case and spaces)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    month: str = MONTH
    entity: str = ENTITY
    value: str = VALUE
    kpi: str = KPI
    kpi_name: str = KPI_NAME
    kpi_id: str = KPI_ID
    period_id: str = PERIOD_ID


class ExcludeRule(BaseModel):
    """Drop rows whose ``column`` (a role such as ``entity``, or a source column) matches."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    column: str
    equals: str | None = None
    in_: list[str] | None = Field(default=None, alias="in")
    startswith: str | None = None
    endswith: str | None = None
    contains: str | None = None

    @model_validator(mode="after")
    def _one_test(self) -> ExcludeRule:
        if len(self._tests()) != 1:
            raise ValueError("needs exactly one of: equals, in, startswith, endswith, contains")
        return self

    def _tests(self) -> dict[str, Any]:
        tests = {
            "equals": self.equals,
            "in": self.in_,
            "startswith": self.startswith,
            "endswith": self.endswith,
            "contains": self.contains,
        }
        return {name: value for name, value in tests.items() if value is not None}

    def matches(self, values: pd.Series) -> pd.Series:
        """Which rows the rule drops."""
        (test, operand), *_ = self._tests().items()
        text_values = values.astype("string")
        if test == "equals":
            hit = text_values == operand
        elif test == "in":
            hit = text_values.isin(operand)
        elif test == "startswith":
            hit = text_values.str.startswith(operand)
        elif test == "endswith":
            hit = text_values.str.endswith(operand)
        else:
            hit = text_values.str.contains(operand, regex=False)
        return hit.fillna(False).astype(bool)

    def __str__(self) -> str:
        (test, operand), *_ = self._tests().items()
        return f"{self.column} {test} {operand!r}"


def _column_pairs(items: Sequence[str | dict[str, str]]) -> list[tuple[str, str]]:
    """``[sector, {cardprofile: kartenprofil}]`` as (name, column) pairs."""
    return [(item, item) if isinstance(item, str) else next(iter(item.items())) for item in items]


class EntityColumns(BaseModel):
    """The ``entities:`` section: how a product table (``--entities-source``) gives the hierarchy.

    ``levels`` and ``attributes`` list columns; ``{name: column}`` names a level or attribute
    after another column (``{cardprofile: kartenprofil}``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    total: str = Field(min_length=1)
    leaf: str = ENTITY
    levels: list[str | dict[str, str]] = []
    attributes: list[str | dict[str, str]] = []
    exclude: list[ExcludeRule] = []
    #: How people read the levels and attributes (``{sector: Sektor}``), as in ``entities.yaml``.
    labels: dict[str, str] = {}

    @field_validator("levels", "attributes")
    @classmethod
    def _one_name_each(cls, items: list[str | dict[str, str]]) -> list[str | dict[str, str]]:
        for item in items:
            if isinstance(item, dict) and len(item) != 1:
                raise ValueError(f"{item!r}: expected a column name or {{name: column}}")
        return items

    @property
    def level_columns(self) -> list[tuple[str, str]]:
        """(level, column) pairs, coarse to fine."""
        return _column_pairs(self.levels)

    @property
    def attribute_columns(self) -> list[tuple[str, str]]:
        """(attribute, column) pairs."""
        return _column_pairs(self.attributes)


class SourceSettings(BaseModel):
    """An entry of ``sources:``: column names and exclusions for the sources it ``match``-es.

    ``match`` is a shell pattern (``*history*``, ``data/history/*.csv``) compared with the source
    as given, its full path and its file name (for a query, the query file's).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: str = Field(min_length=1)
    columns: ColumnNames = ColumnNames()
    exclude: list[ExcludeRule] = []

    def matches(self, spec: SourceSpec) -> bool:
        """Whether this entry is for the source."""
        given = spec.query if spec.query is not None else spec.source
        names = {str(given), Path(str(given)).name}
        if spec.query is None and not is_store_url(str(given)):
            names.add(str(Path(given).resolve()))
        return any(fnmatch.fnmatchcase(name, self.match) for name in names)


class IngestConfig(BaseModel):
    """How upstream rows become observations: column names, exclusions, unmapped KPIs, overlap
    of sources, the date format, the hierarchy from a product table and plausibility checks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    columns: ColumnNames = ColumnNames()
    exclude: list[ExcludeRule] = []
    #: Column names and exclusions of some sources, e.g. history files laid out differently.
    sources: list[SourceSettings] = []
    unmapped_kpis: Literal["error", "drop"] = "error"
    overlap: Literal["error", "later"] = "error"
    date_format: str | None = None
    entities: EntityColumns | None = None
    checks: Checks = Checks()

    def for_source(self, spec: SourceSpec) -> IngestConfig:
        """The settings of one source: the first ``sources:`` entry that matches it adds its
        exclusions and overrides the column names it gives."""
        entry = next((entry for entry in self.sources if entry.matches(spec)), None)
        if entry is None:
            return self
        given = entry.columns.model_dump(include=entry.columns.model_fields_set)
        return self.model_copy(
            update={
                "columns": self.columns.model_copy(update=given),
                "exclude": [*self.exclude, *entry.exclude],
            }
        )


def load_ingest_config(path: Path | str | None) -> IngestConfig:
    """The ingest configuration from a YAML or TOML file; the defaults when ``path`` is ``None``.

    :raises IngestConfigError: with every problem of the file.
    """
    if path is None:
        return IngestConfig()
    path = Path(path)
    name = display_path(path)
    node = None  # TOML gives no line numbers
    if path.suffix.lower() == ".toml":
        raw, problem = read_text(path, name)
        try:
            data = tomllib.loads(raw) if raw is not None else None
        except (tomllib.TOMLDecodeError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
            problem = Problem(f"cannot read: {reason}", file=name)
    else:
        data, node, problem = read_yaml(path, name)
    if problem is not None:
        raise IngestConfigError([problem])
    try:
        return IngestConfig.model_validate(data or {})
    except ValidationError as exc:
        problems = validation_problems(
            exc, IngestConfig, file=name, line_of=lambda loc: node_line(node_at(node, loc))
        )
        raise IngestConfigError(problems) from exc


# -- reading sources ---------------------------------------------------------------------------


def bind_query(sql: str, params: Mapping[str, Any] | None, file: str = "query") -> TextClause:
    """The query with its ``:name`` parameters bound to values (never pasted into the text).

    :raises DataError: when a parameter has no value or a value names no parameter.
    """
    params = dict(params or {})
    statement = text(sql.strip().rstrip(";"))
    names = set(statement.compile().params)
    problems = [
        Problem(f"parameter :{name} has no value; pass --param {name}=VALUE", file=file)
        for name in sorted(names - params.keys())
    ]
    problems += [
        Problem(
            f"--param {name} is not a parameter of the query; its parameters: "
            f"{', '.join(sorted(names)) or 'none'}",
            file=file,
        )
        for name in sorted(params.keys() - names)
    ]
    if problems:
        raise DataError(file, problems, pd.DataFrame())
    return statement.bindparams(**params) if params else statement


def read_database(
    url: str, query: Path | str, params: Mapping[str, Any] | None, *, only_named: bool = False
) -> RawTable:
    """Rows of a query, run with bound parameters on the database at ``url``.

    :param only_named: bind only the parameters the query names (a product table's query runs
        with the observations' ``--param`` values, which it need not all use).
    :raises DataError: when the query cannot be read, bound or run.
    """
    query = Path(query)
    file = display_path(query)
    source = display_url(url)
    try:
        sql = query.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problem = Problem(f"cannot read query: {exc}", file=file)
        raise DataError(file, [problem], pd.DataFrame()) from exc
    if only_named and params:
        named = set(text(sql.strip().rstrip(";")).compile().params)
        params = {key: value for key, value in params.items() if key in named}
    statement = bind_query(sql, params, file)
    try:
        engine = create_engine(url, poolclass=NullPool)
    except (ImportError, NoSuchModuleError, ArgumentError, ValueError) as exc:
        raise DataError(
            source, [Problem(f"cannot open the database: {exc}", file=source)], pd.DataFrame()
        ) from exc
    try:
        with engine.connect() as conn:
            result = conn.execute(statement)
            columns = list(result.keys())
            frame = pd.DataFrame.from_records(result.fetchall(), columns=columns, coerce_float=True)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip()
        raise DataError(
            source, [Problem(f"query {file} failed: {reason}", file=source)], pd.DataFrame()
        ) from exc
    finally:
        engine.dispose()
    frame.columns = [str(column).strip().lower() for column in frame.columns]
    return RawTable(frame, source)


def read_file(path: Path | str) -> RawTable:
    """Rows of a CSV or Parquet file, refusing a file that changed or vanished while being read.

    The file is read into memory in one go and its identity (inode, size, modification time)
    compared before and after: a source overwritten meanwhile is refused, and the parser never
    reads from under a writer. Nothing is copied to disk, so an ingest that is killed leaves
    nothing behind.

    :raises DataError: when the file cannot be read completely.
    """
    path = Path(path)
    name = display_path(path)

    def fail(message: str) -> DataError:
        return DataError(name, [Problem(message, file=name)], pd.DataFrame())

    try:
        before = path.stat()
    except OSError as exc:
        raise fail("no such file" if not path.exists() else f"cannot read file: {exc}") from exc
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read file: {exc}") from exc
    try:
        after = path.stat()
    except OSError:
        raise fail("the file disappeared while it was being read; nothing was written") from None
    fingerprint = ("st_ino", "st_size", "st_mtime_ns")
    if len(content) != after.st_size or any(
        getattr(before, f) != getattr(after, f) for f in fingerprint
    ):
        raise fail(
            f"the file changed while it was being read ({before.st_size} bytes before, "
            f"{after.st_size} after); nothing was written — run again once it is complete"
        )
    return dataclasses.replace(read_observations(path, content=content), source=name)


def read_source(
    source: str | Path,
    query: Path | str | None = None,
    params: Mapping[str, Any] | None = None,
    release: int | None = None,
) -> tuple[RawTable, str]:
    """Raw rows of a file, a database query or a release of another store, and the source's name.

    A database URL without a query must be a kpisheet store: its newest release, or ``release``,
    is read (to roll back, or to promote a release from a staging store).
    """
    name = display_url(source) if isinstance(source, str) else str(source)

    def fail(message: str) -> DataError:
        return DataError(name, [Problem(message, file=name)], pd.DataFrame())

    if release is not None and query is not None:
        raise fail("--release reads a release of a store; it does not go with --query")
    url = store_url_of(source) if query is None else source
    if isinstance(url, str) and is_store_url(url):
        source = url
        if query is not None:
            frame = read_database(source, query, params)
            shown = ", ".join(f"{key}={value}" for key, value in (params or {}).items())
            label = f"{name} query {Path(query).name}" + (f" ({shown})" if shown else "")
            return frame, label
        with Store(source) as store:
            if not store.releases():
                raise fail(
                    "a database source needs --query FILE.sql (it is no kpisheet store with releases)"
                )
            info, frame = store.read(release)
        return RawTable(frame, f"{name} release {info.id}"), f"{name} release {info.id}"
    if query is not None:
        raise fail("--query needs a database URL as the source, e.g. postgresql+psycopg://host/db")
    if release is not None:
        raise fail("--release needs a store URL as the source, e.g. sqlite:///kpisheet.db")
    return read_file(source), str(Path(source).resolve())


# -- mapping upstream rows to observations -----------------------------------------------------


def _trim(values: pd.Series) -> pd.Series:
    """Strip spaces around text, leaving other values alone.

    A categorical column (as Parquet files deliver text) stays categorical: its categories are
    stripped, not its millions of rows.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        categories = pd.Series(values.cat.categories)
        stripped = _trim(categories)
        if stripped.equals(categories):
            return values
        renumbered, distinct = pd.factorize(stripped)
        codes = values.cat.codes.to_numpy()
        codes = np.where(codes >= 0, renumbered[codes], -1)
        return pd.Series(
            pd.Categorical.from_codes(codes, categories=distinct),
            index=values.index,
            name=values.name,
        )
    if pd.api.types.is_string_dtype(values) and values.dtype != object:
        return values.str.strip()
    if values.dtype == object:
        return values.map(lambda v: v.strip() if isinstance(v, str) else v)
    return values


def _key_text(values: pd.Series) -> pd.Series:
    """Upstream ids as comparable text: ``17``, ``17.0`` and ``" 17"`` all become ``"17"``."""
    numbers = pd.to_numeric(values, errors="coerce")
    whole = numbers.notna() & (numbers % 1 == 0)
    keys = values.astype("string").str.strip()
    keys[whole] = numbers[whole].astype("int64").astype("string")
    return keys


def _key_of(value: object) -> str:
    key: str = _key_text(pd.Series([value], dtype=object)).iloc[0]
    return key


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _counted(values: pd.Series, known: Sequence[str] = ()) -> str:
    """Distinct values with their row counts (and the closest known name), most frequent first."""
    counts = values.astype("string").value_counts(dropna=False)
    shown = []
    for name, count in counts.head(10).items():
        hint = did_you_mean(str(name), known) if known else ""
        shown.append(f"'{name}' ({_rows(int(count))}{', ' + hint if hint else ''})")
    more = len(counts) - 10
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def to_observations(
    raw: RawTable | pd.DataFrame,
    registry: Registry,
    config: IngestConfig | None = None,
    *,
    echo: Echo = _no_echo,
) -> tuple[RawTable, RowProblems]:
    """Raw rows as observation columns (``month``, ``kpi``, ``entity``, ``value``), unvalidated.

    Strings are trimmed, exclusion rules applied, and upstream KPI names or ids mapped to KPI
    ids. Problems of the mapping are collected in the returned report, not raised, so that
    they can be reported together with validation's. The result keeps what the reader learnt
    about the source (e.g. its decimal commas).
    """
    config = config or IngestConfig()
    table = raw if isinstance(raw, RawTable) else RawTable(raw)
    frame = table.frame
    report = RowProblems(table.source, table.where)
    by_lower = {str(column).strip().lower(): column for column in frame.columns}
    roles = config.columns.model_dump()
    found = {role: by_lower.get(name.strip().lower()) for role, name in roles.items()}
    frame = frame.copy(deep=False)  # the caller's frame keeps its columns
    for column in frame.columns:
        frame[column] = _trim(frame[column])

    for rule in config.exclude:
        column = found.get(rule.column) or by_lower.get(rule.column.strip().lower())
        if column is None:
            report.add(
                f"exclusion rule '{rule}' names column '{rule.column}', which the source does not "
                f"have; columns: {', '.join(map(str, frame.columns))}"
            )
            continue
        dropped = rule.matches(frame[column])
        if dropped.any():
            echo(f"excluded {_rows(int(dropped.sum()))} by rule: {rule}")
            frame = frame[~dropped]

    upstream = found[KPI] is None
    missing = [
        f"{role} ('{roles[role]}')" for role in (MONTH, ENTITY, VALUE) if found[role] is None
    ]
    if upstream and found[KPI_NAME] is None and found[KPI_ID] is None:
        missing.append(
            f"{KPI} ('{roles[KPI]}', or '{roles[KPI_NAME]}' / '{roles[KPI_ID]}' for upstream KPIs)"
        )
    if missing:
        report.add(
            f"missing column(s) {', '.join(missing)}; found "
            f"{', '.join(map(str, frame.columns)) or 'none'} — name the source's columns under "
            "'columns:' in the ingest configuration"
        )
        return table.with_frame(pd.DataFrame(columns=[MONTH, KPI, ENTITY, VALUE])), report

    kpi = frame[found[KPI]] if not upstream else _map_upstream(frame, found, registry, report)
    if upstream and config.unmapped_kpis == "drop":
        unmapped = kpi.isna()
        if unmapped.any():
            echo(f"dropped {_rows(int(unmapped.sum()))} of upstream KPIs no definition claims")
            frame, kpi = frame[~unmapped], kpi[~unmapped]
    observations = pd.DataFrame(
        {
            MONTH: frame[found[MONTH]],
            KPI: kpi,
            ENTITY: frame[found[ENTITY]],
            VALUE: frame[found[VALUE]],
        },
        index=frame.index,
        copy=False,  # the columns as they are; validation makes its own
    )
    if upstream:
        unmapped = kpi.isna()
        if unmapped.any():
            shown = frame.loc[unmapped, [found[k] for k in _SOURCE_KEYS if found[k] is not None]]
            described = shown.astype("string").fillna("").agg(" / ".join, axis=1)
            report.add_rows(
                f"{_rows(int(unmapped.sum()))} with upstream KPIs that no definition's source: "
                f"claims: {_counted(described, _upstream_names(registry))} — add them to a "
                "definition's source:, exclude "
                "them, or set unmapped_kpis: drop",
                described,
                KPI,
                quote=False,
            )
            observations = observations[~unmapped]
    if config.checks.empty_values == "error":
        empty = plausibility.empty_value_column(
            observations[VALUE], missing_value_text(observations[VALUE]), str(found[VALUE])
        )
        if empty is not None:
            report.add(empty.message, field=VALUE)
    return table.with_frame(observations), report


def _upstream_names(registry: Registry) -> list[str]:
    """Every upstream KPI name the definitions claim."""
    return [k.source.kpi_name for k in registry.source_kpis if k.source and k.source.kpi_name]


#: The keys a definition's ``source:`` may combine, in the order they are matched.
_SOURCE_KEYS = (KPI_NAME, KPI_ID, PERIOD_ID)


def _map_upstream(
    frame: pd.DataFrame, found: dict[str, Any], registry: Registry, report: RowProblems
) -> pd.Series:
    """KPI ids for upstream rows, through each definition's ``source:``; missing when unmatched.

    A definition matches the rows that agree with every key of its ``source:`` that the source
    has a column for: ``{kpi_name: Umsatz Total, kpi_id: 17, period_id: 1}`` takes only the rows
    with that name, id and period from a warehouse extract that has all three columns, and the
    rows named ``Umsatz Total`` from a file that has only KPI names. A ``period_id`` is never
    skipped that way: matching by ``kpi_id`` needs the source's period column too.
    """
    texts: dict[str, pd.Series] = {}
    for key in _SOURCE_KEYS:
        if found[key] is not None:
            column = frame[found[key]]
            texts[key] = column.astype("string") if key == KPI_NAME else _key_text(column)
    claims: dict[tuple[tuple[str, ...], str], list[str]] = {}
    by_keys: dict[tuple[str, ...], dict[str, list[str]]] = {}
    for kpi in registry.source_kpis:
        spec = kpi.source
        if spec is None:
            continue
        named = {
            key: str(spec.kpi_name).strip() if key == KPI_NAME else _key_of(getattr(spec, key))
            for key in _SOURCE_KEYS
            if getattr(spec, key) is not None
        }
        claims.setdefault((tuple(named), _PAIR.join(named.values())), []).append(kpi.id)
        keys = tuple(key for key in named if key in texts)
        if KPI_ID in keys and PERIOD_ID in named and PERIOD_ID not in texts:
            report.add(
                f"definitions name a period_id in source:, but the source has no "
                f"'{PERIOD_ID}' column"
            )
            continue
        if not set(keys) & {KPI_NAME, KPI_ID}:
            continue
        wanted = _PAIR.join(named[key] for key in keys)
        by_keys.setdefault(keys, {}).setdefault(wanted, []).append(kpi.id)
    for (keys, wanted), ids in claims.items():
        if len(ids) > 1:
            what = " ".join(
                f"{key} {part}" for key, part in zip(keys, wanted.split(_PAIR), strict=True)
            )
            report.add(f"KPIs {', '.join(ids)} all claim upstream {what}; each must be unique")
    candidates: list[pd.Series] = []
    for keys, mapping in by_keys.items():
        for wanted, ids in mapping.items():
            if len(ids) > 1 and ids != claims.get((keys, wanted)):
                shown = " ".join(
                    f"{key} {part}" for key, part in zip(keys, wanted.split(_PAIR), strict=True)
                )
                report.add(
                    f"KPIs {', '.join(ids)} all match upstream {shown} in this source, which has "
                    f"no column for the rest of their source: keys; add the column to the source"
                )
        joined = texts[keys[0]]
        for key in keys[1:]:
            joined = joined + _PAIR + texts[key]
        candidates.append(joined.map({wanted: ids[0] for wanted, ids in mapping.items()}))
    kpi = pd.Series(pd.NA, index=frame.index, dtype="string")
    for candidate in candidates:
        candidate = candidate.astype("string")
        clash = kpi.notna() & candidate.notna() & (kpi != candidate)
        if clash.any():
            described = kpi[clash] + " / " + candidate[clash]
            report.add_rows(
                f"{_rows(int(clash.sum()))} match two KPIs by name and by id: "
                f"{_counted(described)}",
                described,
                KPI,
                quote=False,
            )
        kpi = kpi.fillna(candidate)
    return kpi


# -- sources, hierarchy, overlap ---------------------------------------------------------------


def _many(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | Path):
        return [value]
    return list(value)


def expand_sources(
    sources: str | Path | Sequence[str | Path], queries: Path | str | Sequence[Path | str] | None
) -> list[SourceSpec]:
    """The sources of a release, in the order their rows count (later wins with ``overlap: later``).

    Files and globs first, as given (a glob's files in name order, so ``kpis_2026-*.csv`` lists
    older months first); then one source per query, run on the one database URL among the
    sources.

    :raises DataError: for a glob matching no file, or queries without exactly one database.
    """
    problems = Problems()
    specs: list[SourceSpec] = []
    databases: list[str] = []
    query_list = _many(queries)
    for source in _many(sources):
        if isinstance(source, str) and is_store_url(source):
            if query_list:
                databases.append(source)
            else:
                specs.append(SourceSpec(source))
            continue
        text = str(source)
        if isinstance(source, str) and glob.has_magic(text) and not Path(text).exists():
            matches = sorted(glob.glob(text))
            if not matches:
                problems.add("no file matches this pattern", file=text)
            specs += [SourceSpec(Path(match)) for match in matches]
        else:
            specs.append(SourceSpec(source))
    if query_list and not databases:
        problems.add(
            "--query needs a database URL as the source, e.g. postgresql+psycopg://host/db",
            file=", ".join(map(str, query_list)),
        )
    elif query_list and len(databases) > 1:
        problems.add(
            f"--query runs on one database; found {len(databases)} database URLs among the sources",
            file=", ".join(map(str, query_list)),
        )
    elif query_list:
        specs += [SourceSpec(databases[0], query) for query in query_list]
    if not specs and not problems:
        problems.add("no source given")
    problems.raise_if_any(lambda found: DataError("the sources", found, pd.DataFrame()))
    return specs


def read_entities(
    source: str | Path,
    columns: EntityColumns | None,
    *,
    query: Path | str | None = None,
    params: Mapping[str, Any] | None = None,
    echo: Echo = _no_echo,
) -> Hierarchy:
    """The entity hierarchy from a product table: a CSV or Parquet file, or a query on a database.

    :raises IngestConfigError: when the configuration has no ``entities:`` section.
    :raises HierarchyError, DataError: with every problem of the table.
    """
    if columns is None:
        raise IngestConfigError(
            [
                Problem(
                    "--entities-source needs an 'entities:' section in the ingest configuration "
                    "(--config): total, leaf, levels, attributes"
                )
            ]
        )
    if isinstance(source, str) and is_store_url(source):
        if query is None:
            raise DataError(
                display_url(source),
                [Problem("a database as --entities-source needs --entities-query FILE.sql")],
                pd.DataFrame(),
            )
        table = read_database(source, query, params, only_named=True)
    else:
        if query is not None:
            raise DataError(
                str(source),
                [Problem("--entities-query needs a database URL as --entities-source")],
                pd.DataFrame(),
            )
        table = read_file(source)
    frame = table.frame
    by_lower = {str(column).strip().lower(): column for column in frame.columns}
    leaf = by_lower.get(columns.leaf.lower())
    problems = Problems(table.source)
    for rule in columns.exclude:
        name = (
            leaf if rule.column.lower() in (ENTITY, "leaf") else by_lower.get(rule.column.lower())
        )
        if name is None:
            problems.add(
                f"exclusion rule '{rule}' names column '{rule.column}', which the product "
                f"table does not have; columns: {', '.join(map(str, frame.columns))}"
            )
            continue
        dropped = rule.matches(_trim(frame[name]))
        if dropped.any():
            echo(f"excluded {_rows(int(dropped.sum()))} of the product table by rule: {rule}")
            frame = frame[~dropped]
    problems.raise_if_any(HierarchyError)
    return hierarchy_from_table(
        frame,
        leaf=columns.leaf,
        levels=columns.level_columns,
        attributes=columns.attribute_columns,
        total=columns.total,
        file=table.source,
        where=table.where,
        labels=columns.labels,
    )


def combine(
    parts: Sequence[tuple[str, pd.DataFrame]], overlap: str, *, echo: Echo = _no_echo
) -> pd.DataFrame:
    """Canonical observations of several sources as one, by the ``overlap`` rule.

    ``error``: a (month, KPI, entity) in more than one source is an error naming both sources.
    ``later``: the value of the source listed later is kept; how many values that changed
    (*restated*) is reported through ``echo``.

    :raises DataError: for overlapping rows with ``overlap: error``.
    """
    if len(parts) == 1:
        return parts[0][1]
    keys = [MONTH, KPI, ENTITY]
    frames = [
        frame.assign(_part=number)
        for number, frame in enumerate(_with_shared_categories([frame for _, frame in parts]))
    ]
    combined = pd.concat(frames, ignore_index=True)
    repeated = combined.duplicated(keys, keep=False)
    if not repeated.any():
        return combined.drop(columns="_part")
    overlapping = combined[repeated]
    count = int(overlapping[keys].drop_duplicates().shape[0])
    labels = [label for label, _ in parts]
    if overlap == "error":
        firsts = overlapping.sort_values([*keys, "_part"]).groupby(keys, sort=True)["_part"]
        pairs = pd.DataFrame({"first": firsts.first(), "second": firsts.nth(1).to_numpy()})
        shown = [
            f"{month_text(month)} / {kpi} / {entity} in {labels[row.first]} and "
            f"{labels[row.second]}"
            for (month, kpi, entity), row in pairs.head(5).iterrows()
        ]
        more = f" and {count - 5:,} more" if count > 5 else ""
        problem = Problem(
            f"{count:,} (month, kpi, entity) rows are in more than one source: "
            f"{'; '.join(shown)}{more} — set overlap: later in the ingest configuration to take "
            "the value of the source listed later"
        )
        raise DataError(f"{len(parts)} sources", [problem], pd.DataFrame())
    stats = overlapping.groupby(keys, sort=True, observed=True)[VALUE].agg(
        ["min", "max", "count", "size"]
    )
    restated = (stats["min"] != stats["max"]) & stats["count"].eq(stats["size"])
    restated |= (stats["count"] > 0) & (stats["count"] < stats["size"])
    per_month = restated[restated].groupby(level=MONTH).size()
    detail = ", ".join(f"{month_text(m)}: {n:,}" for m, n in per_month.items())
    echo(
        f"overlap: {count:,} (month, kpi, entity) values are in more than one source; the later "
        f"source's value is taken; {int(restated.sum()):,} of them restated"
        + (f" ({detail})" if detail else "")
    )
    kept = combined.drop_duplicates(keys, keep="last").drop(columns="_part")
    return kept.reset_index(drop=True)


def _with_shared_categories(frames: Sequence[pd.DataFrame]) -> list[pd.DataFrame]:
    """The frames with their categorical ``kpi`` and ``entity`` columns over the same categories
    (the union of theirs), so that they stay categorical when concatenated."""
    shared = {}
    for column in (KPI, ENTITY):
        if all(isinstance(frame[column].dtype, pd.CategoricalDtype) for frame in frames):
            categories = frames[0][column].cat.categories
            for frame in frames[1:]:
                categories = categories.union(frame[column].cat.categories)
            shared[column] = categories
    return [
        frame.assign(
            **{column: frame[column].cat.set_categories(c) for column, c in shared.items()}
        )
        for frame in frames
    ]


# -- the whole refresh -------------------------------------------------------------------------


def ingest(
    source: str | Path | Sequence[str | Path],
    store_url: str | Path,
    *,
    query: Path | str | Sequence[Path | str] | None = None,
    params: Mapping[str, Any] | None = None,
    definitions: Sequence[Path | str] | Path | str | None = None,
    entities: Path | str | None = None,
    entities_source: str | Path | None = None,
    entities_query: Path | str | None = None,
    config: Path | str | IngestConfig | None = None,
    release: int | None = None,
    note: str = "",
    strict: bool = False,
    today: date | None = None,
    progress: bool | None = None,
    echo: Echo = _no_echo,
) -> ReleaseInfo:
    """Read, map, validate, check and write one new release; on any problem write nothing.

    :param source: CSV or Parquet files or globs, a database URL with ``query``, or a store URL
        (several: combined by the configuration's ``overlap`` rule, later sources last).
    :param store_url: the SQLAlchemy URL (or SQLite file) of the store.
    :param query: ``.sql`` files with ``:name`` parameters, each run on the database source.
    :param params: values of the queries' parameters, bound by the database driver.
    :param definitions: KPI definitions; default the built-in sheet plus plugins.
    :param entities: the entity hierarchy YAML. Default: ``entities_source``, else the hierarchy
        of the store release being copied, else the previous release's, else the demo hierarchy.
    :param entities_source: a product table (file or database URL with ``entities_query``),
        read by the configuration's ``entities:`` section.
    :param config: an ingest configuration file (or object).
    :param release: with a store as the source, the release to copy (default its newest).
    :param strict: make plausibility warnings errors.
    :param today: the current date for the future-month check (default today, UTC).
    :param echo: receives one line per notable step (exclusions, overlap, warnings, changes).
    :raises DataError, StoreError, DefinitionError, HierarchyError, IngestConfigError: with
        every problem found.
    """
    store = Store(store_url)
    registry = load_kpis(definitions)
    settings = config if isinstance(config, IngestConfig) else load_ingest_config(config)
    _check_settings(settings, registry, config)
    specs = expand_sources(source, query)
    if entities is not None and entities_source is not None:
        raise IngestConfigError(
            [Problem("give the hierarchy once: --entities FILE.yaml or --entities-source")]
        )
    with store:
        previous = _latest_or_none(store)
        if entities is not None:
            hierarchy = load_hierarchy(entities)
        elif entities_source is not None:
            hierarchy = read_entities(
                entities_source, settings.entities, query=entities_query, params=params, echo=echo
            )
            shown = (
                display_url(entities_source)
                if isinstance(entities_source, str) and is_store_url(entities_source)
                else display_path(Path(entities_source))
            )
            echo(f"hierarchy from {shown}: {len(hierarchy.leaves)} products")
        else:
            hierarchy = _recorded_hierarchy(specs, release, store, previous)
    parts: list[tuple[str, pd.DataFrame]] = []
    errors: list[DataError] = []
    for spec in specs:
        try:
            raw, label = read_source(spec.source, spec.query, params, release)
            own = settings.for_source(spec)
            said = echo if len(specs) == 1 else _prefixed(echo, label)
            parts.append((label, prepare(raw, registry, hierarchy, own, source=label, echo=said)))
        except DataError as error:
            errors.append(error)
    if errors:
        raise errors[0] if len(errors) == 1 else _joined(errors)
    label = " + ".join(label for label, _ in parts)
    observations = combine(parts, settings.overlap, echo=echo)
    del parts
    previous_newest = parse_month(previous.newest_month) if previous else None
    refused = plausibility.month_errors(
        observations,
        settings.checks,
        today=today or datetime.now(UTC).date(),
        previous_newest=previous_newest,
        previous_id=previous.id if previous else None,
    )
    warned = plausibility.warnings(observations, settings.checks, previous_newest=previous_newest)
    if refused or (strict and warned):
        problems = [Problem(f.message) for f in refused]
        problems += [
            Problem(f"{f.message} (a warning, an error with --strict)") for f in warned if strict
        ]
        raise DataError(
            label if len(specs) == 1 else f"{len(specs)} sources", problems, pd.DataFrame()
        )
    with store:
        info = store.write_release(
            observations,
            source=label,
            note=note,
            hierarchy=hierarchy,
            warnings=[ReleaseWarning(f.rule, f.message) for f in warned],
            progress=progress,
        )
        for line in plausibility.shown(warned):
            echo(f"warning: {line}")
        if previous is not None:
            # The checksum that write_release computed tells whether anything changed.
            if previous.checksum == info.checksum and not len(
                _moves(store, previous.id, hierarchy)
            ):
                echo(f"the data is identical to release {previous.id}")
            else:
                _, before = store.read(previous.id)
                changes = diff_releases(
                    before,
                    observations,
                    old_hierarchy=store.hierarchy(previous.id),
                    new_hierarchy=hierarchy,
                    old_id=previous.id,
                    new_id=info.id,
                )
                for line in changes.summary():
                    echo(line)
    return info


def _prefixed(echo: Echo, label: str) -> Echo:
    """``echo`` for one of several sources: each line names the source."""
    name = Path(label).name if not is_store_url(label.split(" ", 1)[0]) else label
    return lambda message: echo(f"{name}: {message}")


def _moves(store: Store, release: int, hierarchy: Hierarchy) -> pd.DataFrame:
    old = store.hierarchy(release)
    return old.moves(hierarchy) if old is not None else pd.DataFrame()


def _joined(errors: Sequence[DataError]) -> DataError:
    """One error with the problems of every source."""
    problems = [p for error in errors for p in error.problems]
    cases = [error.failure_cases for error in errors if not error.failure_cases.empty]
    return DataError(
        f"{len(errors)} sources",
        problems,
        pd.concat(cases, ignore_index=True) if cases else pd.DataFrame(),
    )


def _check_settings(
    settings: IngestConfig, registry: Registry, config: Path | str | IngestConfig | None
) -> None:
    """KPIs named in ``checks.jumps`` exist."""
    unknown = [
        kpi
        for kpi in settings.checks.jumps
        if kpi != plausibility.DEFAULT_KEY and kpi not in registry
    ]
    if unknown:
        file = (
            None
            if config is None or isinstance(config, IngestConfig)
            else display_path(Path(config))
        )
        raise IngestConfigError(
            [
                Problem(
                    f"checks.jumps: unknown KPI '{kpi}'; known: {', '.join(registry.ids)} "
                    f"(or '{plausibility.DEFAULT_KEY}')",
                    file=file,
                )
                for kpi in unknown
            ]
        )


def _recorded_hierarchy(
    specs: Sequence[SourceSpec],
    release: int | None,
    store: Store,
    previous: ReleaseInfo | None,
) -> Hierarchy:
    """The hierarchy of the store release being copied, else of the previous release, else the
    demo hierarchy."""
    copied = store_url_of(specs[0].source) if len(specs) == 1 and specs[0].query is None else None
    if copied is not None:
        with Store(copied) as source_store:
            found = source_store.hierarchy(release) if source_store.releases() else None
        if found is not None:
            return found
    if previous is not None:
        found = store.hierarchy(previous.id)
        if found is not None:
            return found
    return load_hierarchy(_default_entities())


def prepare(
    raw: RawTable | pd.DataFrame,
    registry: Registry,
    hierarchy: Hierarchy,
    config: IngestConfig | None = None,
    *,
    source: str | None = None,
    echo: Echo = _no_echo,
) -> pd.DataFrame:
    """Raw rows as validated, canonical observations (``kpi`` and ``entity`` categorical);
    every problem raised in one DataError."""
    table = raw if isinstance(raw, RawTable) else RawTable(raw, source or "DataFrame")
    config = config or IngestConfig()
    shown = table.source
    if table.frame.empty:
        raise DataError(shown, [Problem("the source has no rows", file=shown)], pd.DataFrame())
    observations, report = to_observations(table, registry, config, echo=echo)
    if observations.frame.empty and not report.problems:
        report.add("no rows left after the exclusion rules")
    if report.problems and observations.frame.empty:
        report.raise_if_any()
    try:
        codes = validate_observation_codes(
            observations, registry, hierarchy, source=shown, date_format=config.date_format
        )
    except DataError as error:
        report.absorb(error)
        raise report.error() from error
    report.raise_if_any()
    # KPIs and entities as categoricals over the validated codes, as a store release is read:
    # the store keeps codes, so no text per row is made here only to be hashed back into codes.
    return codes.frame(categorical=True)


def _latest_or_none(store: Store) -> ReleaseInfo | None:
    try:
        return store.latest()
    except StoreError:  # a store not created yet, or unreadable: writing says which
        return None


def _default_entities() -> Path:
    from kpisheet.demo import DEMO_ENTITIES

    return DEMO_ENTITIES
