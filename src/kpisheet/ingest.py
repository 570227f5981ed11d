"""The monthly refresh: read a source, map it to KPI ids, validate it, write one release.

A source is a CSV or Parquet file, or a database (a SQLAlchemy URL) read with a query from a
``.sql`` file whose ``:name`` parameters are bound, never pasted into the text. Rows that already
carry KPI ids in a ``kpi`` column ingest as they are; upstream rows carrying the warehouse's KPI
names or ids are mapped through each definition's ``source:``. Column names, exclusion rules and
what to do with upstream KPIs no definition claims come from a small configuration file::

    # ingest.yaml
    columns: {month: period_date, entity: product_name, kpi_name: kpi_name, value: kpi_value}
    exclude:
      - {column: entity, startswith: "TEST "}
    unmapped_kpis: drop            # error (default) | drop

Every problem — of the mapping and of the observations — is reported at once, and on any
problem nothing is written.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.elements import TextClause

from kpisheet.constants import ENTITY, KPI, MONTH, VALUE
from kpisheet.errors import DataError, IngestConfigError, Problem, StoreError, close_matches
from kpisheet.files import display_path, read_text, read_yaml
from kpisheet.hierarchy import Hierarchy, load_hierarchy
from kpisheet.observations import WHERE, read_observations, validate_observations
from kpisheet.plugins import load_kpis
from kpisheet.registry import Registry
from kpisheet.store import ReleaseInfo, Store, display_url, is_store_url

#: Column roles a source may have, by the name the configuration gives them.
KPI_NAME = "kpi_name"
KPI_ID = "kpi_id"
PERIOD_ID = "period_id"

Echo = Callable[[str], None]

# Joins a KPI id and a period id into one lookup key.
_PAIR = "\x1f"


def _no_echo(message: str) -> None:
    """Default for ``echo``: say nothing."""


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


class IngestConfig(BaseModel):
    """How upstream rows become observations: column names, exclusions, unmapped KPIs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    columns: ColumnNames = ColumnNames()
    exclude: list[ExcludeRule] = []
    unmapped_kpis: Literal["error", "drop"] = "error"


def load_ingest_config(path: Path | str | None) -> IngestConfig:
    """The ingest configuration from a YAML or TOML file; the defaults when ``path`` is ``None``.

    :raises IngestConfigError: with every problem of the file.
    """
    if path is None:
        return IngestConfig()
    path = Path(path)
    name = display_path(path)
    if path.suffix.lower() == ".toml":
        raw, problem = read_text(path, name)
        try:
            data = tomllib.loads(raw) if raw is not None else None
        except (tomllib.TOMLDecodeError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
            problem = Problem(f"cannot read: {reason}", file=name)
    else:
        data, _, problem = read_yaml(path, name)
    if problem is not None:
        raise IngestConfigError([problem])
    try:
        return IngestConfig.model_validate(data or {})
    except ValidationError as exc:
        problems = [
            Problem(
                f"{'.'.join(str(part) for part in error['loc']) or 'file'}: {error['msg']}",
                file=name,
            )
            for error in exc.errors()
        ]
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


def read_database(url: str, query: Path | str, params: Mapping[str, Any] | None) -> pd.DataFrame:
    """Rows of a query, run with bound parameters on the database at ``url``.

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
    frame.attrs["source"] = source
    frame.attrs["line_offset"] = None
    return frame


def read_file(path: Path | str) -> pd.DataFrame:
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
    frame = read_observations(path, content=content)
    frame.attrs["source"] = name
    return frame


def read_source(
    source: str | Path,
    query: Path | str | None = None,
    params: Mapping[str, Any] | None = None,
    release: int | None = None,
) -> tuple[pd.DataFrame, str]:
    """Raw rows of a file, a database query or a release of another store, and the source's name.

    A database URL without a query must be a kpisheet store: its newest release, or ``release``,
    is read (to roll back, or to promote a release from a staging store).
    """
    name = display_url(source) if isinstance(source, str) else str(source)

    def fail(message: str) -> DataError:
        return DataError(name, [Problem(message, file=name)], pd.DataFrame())

    if release is not None and query is not None:
        raise fail("--release reads a release of a store; it does not go with --query")
    if isinstance(source, str) and is_store_url(source):
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
        frame.attrs.update(source=f"{name} release {info.id}", line_offset=None)
        return frame, f"{name} release {info.id}"
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
    return _key_text(pd.Series([value], dtype=object)).iloc[0]


class _Report:
    """Problems and offending rows collected while mapping, raised with validation's own."""

    def __init__(self, source: str, offset: int | None) -> None:
        self.source = source
        self.offset = offset
        self.problems: list[Problem] = []
        self.failures: list[pd.DataFrame] = []

    def add(self, message: str, rows: pd.Series | None = None, column: str | None = None) -> None:
        self.problems.append(Problem(message, file=self.source, field=column))
        if rows is not None and len(rows):
            where = [
                f"row {i}" if self.offset is None else f"line {i + self.offset}" for i in rows.index
            ]
            self.failures.append(
                pd.DataFrame(
                    {
                        WHERE: where,
                        "column": column,
                        "value": rows.astype(str).to_numpy(),
                        "problem": message,
                    }
                )
            )

    def raise_with(self, error: DataError | None = None) -> None:
        """Raise one DataError with the mapping's problems and those of ``error``."""
        problems = self.problems + list(error.problems if error else [])
        failures = self.failures + ([error.failure_cases] if error is not None else [])
        failures = [f for f in failures if not f.empty]
        cases = pd.concat(failures, ignore_index=True) if failures else pd.DataFrame()
        raise DataError(self.source, problems, cases)


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _counted(values: pd.Series, known: Sequence[str] = ()) -> str:
    """Distinct values with their row counts (and the closest known name), most frequent first."""
    counts = values.astype("string").value_counts(dropna=False)
    shown = []
    for name, count in counts.head(10).items():
        close = close_matches(str(name), list(known)) if known else []
        hint = f", did you mean '{close[0]}'?" if close else ""
        shown.append(f"'{name}' ({_rows(int(count))}{hint})")
    more = len(counts) - 10
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def to_observations(
    frame: pd.DataFrame,
    registry: Registry,
    config: IngestConfig | None = None,
    *,
    echo: Echo = _no_echo,
) -> tuple[pd.DataFrame, _Report]:
    """Raw rows as observation columns (``month``, ``kpi``, ``entity``, ``value``), unvalidated.

    Strings are trimmed, exclusion rules applied, and upstream KPI names or ids mapped to KPI
    ids. Problems of the mapping are collected in the returned report, not raised, so that
    they can be reported together with validation's.
    """
    config = config or IngestConfig()
    source = frame.attrs.get("source", "DataFrame")
    offset = frame.attrs.get("line_offset")
    report = _Report(source, offset)
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
        return pd.DataFrame(columns=[MONTH, KPI, ENTITY, VALUE]), report

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
            shown = frame.loc[unmapped, [c for c in (found[KPI_NAME], found[KPI_ID]) if c]]
            described = shown.astype("string").fillna("").agg(" / ".join, axis=1)
            report.add(
                f"{_rows(int(unmapped.sum()))} with upstream KPIs that no definition's source: "
                f"claims: {_counted(described, _upstream_names(registry))} — add them to a "
                "definition's source:, exclude "
                "them, or set unmapped_kpis: drop",
                described,
                KPI,
            )
            observations = observations[~unmapped]
    observations.attrs.update(source=source, line_offset=offset)
    return observations, report


def _upstream_names(registry: Registry) -> list[str]:
    """Every upstream KPI name the definitions claim."""
    return [k.source.kpi_name for k in registry.source_kpis if k.source and k.source.kpi_name]


def _map_upstream(
    frame: pd.DataFrame, found: dict[str, Any], registry: Registry, report: _Report
) -> pd.Series:
    """KPI ids for upstream rows, through each definition's ``source:``; missing when unmatched."""
    by_name: dict[str, str] = {}
    by_id: dict[str, str] = {}
    by_id_period: dict[str, str] = {}
    claims: dict[tuple[str, ...], list[str]] = {}
    for kpi in registry.source_kpis:
        spec = kpi.source
        if spec is None:
            continue
        if spec.kpi_name is not None:
            key = spec.kpi_name.strip()
            claims.setdefault(("kpi_name", key), []).append(kpi.id)
            by_name[key] = kpi.id
        if spec.kpi_id is not None:
            if spec.period_id is None:
                claims.setdefault(("kpi_id", _key_of(spec.kpi_id)), []).append(kpi.id)
                by_id[_key_of(spec.kpi_id)] = kpi.id
            else:
                pair = (_key_of(spec.kpi_id), _key_of(spec.period_id))
                claims.setdefault(("kpi_id", pair[0], "period_id", pair[1]), []).append(kpi.id)
                by_id_period[_PAIR.join(pair)] = kpi.id
    for key, ids in claims.items():
        if len(ids) > 1:
            what = " ".join(key)
            report.add(f"KPIs {', '.join(ids)} all claim upstream {what}; each must be unique")

    candidates: list[pd.Series] = []
    if found[KPI_NAME] is not None:
        candidates.append(frame[found[KPI_NAME]].astype("string").map(by_name))
    if found[KPI_ID] is not None:
        ids = _key_text(frame[found[KPI_ID]])
        candidates.append(ids.map(by_id))
        if by_id_period:
            if found[PERIOD_ID] is None:
                report.add(
                    f"definitions name a period_id in source:, but the source has no "
                    f"'{PERIOD_ID}' column"
                )
            else:
                periods = _key_text(frame[found[PERIOD_ID]])
                candidates.append((ids + _PAIR + periods).map(by_id_period))
    kpi = pd.Series(pd.NA, index=frame.index, dtype="string")
    for candidate in candidates:
        candidate = candidate.astype("string")
        clash = kpi.notna() & candidate.notna() & (kpi != candidate)
        if clash.any():
            described = kpi[clash] + " / " + candidate[clash]
            report.add(
                f"{_rows(int(clash.sum()))} match two KPIs by name and by id: "
                f"{_counted(described)}",
                described,
                KPI,
            )
        kpi = kpi.fillna(candidate)
    return kpi


# -- the whole refresh -------------------------------------------------------------------------


def ingest(
    source: str | Path,
    store_url: str,
    *,
    query: Path | str | None = None,
    params: Mapping[str, Any] | None = None,
    definitions: Sequence[Path | str] | Path | str | None = None,
    entities: Path | str | None = None,
    config: Path | str | IngestConfig | None = None,
    release: int | None = None,
    note: str = "",
    progress: bool | None = None,
    echo: Echo = _no_echo,
) -> ReleaseInfo:
    """Read, map, validate and write one new release; on any problem write nothing.

    :param source: a CSV or Parquet file, a database URL with ``query``, or a store URL.
    :param store_url: the SQLAlchemy URL of the store.
    :param query: a ``.sql`` file with ``:name`` parameters, run on a database source.
    :param params: values of the query's parameters, bound by the database driver.
    :param definitions: KPI definitions; default the built-in sheet plus plugins.
    :param entities: the entity hierarchy; default the demo hierarchy.
    :param config: an ingest configuration file (or object): column names, exclusions.
    :param release: with a store as the source, the release to copy (default its newest).
    :param echo: receives one line per notable step (exclusions, identical data).
    :raises DataError, StoreError, DefinitionError, HierarchyError, IngestConfigError: with
        every problem found.
    """
    store = Store(store_url)
    registry = load_kpis(definitions)
    hierarchy = load_hierarchy(entities if entities is not None else _default_entities())
    settings = config if isinstance(config, IngestConfig) else load_ingest_config(config)
    frame, label = read_source(source, query, params, release)
    observations = prepare(frame, registry, hierarchy, settings, source=label, echo=echo)
    del frame  # the raw rows are not needed while the release is written
    with store:
        previous = _latest_or_none(store)
        info = store.write_release(observations, source=label, note=note, progress=progress)
    # The checksum that write_release computed tells whether anything changed.
    if previous is not None and previous.checksum == info.checksum:
        echo(f"the data is identical to release {previous.id}")
    return info


def prepare(
    frame: pd.DataFrame,
    registry: Registry,
    hierarchy: Hierarchy,
    config: IngestConfig | None = None,
    *,
    source: str | None = None,
    echo: Echo = _no_echo,
) -> pd.DataFrame:
    """Raw rows as validated, canonical observations; every problem raised in one DataError."""
    shown = frame.attrs.get("source", source or "DataFrame")
    if frame.empty:
        raise DataError(shown, [Problem("the source has no rows", file=shown)], pd.DataFrame())
    observations, report = to_observations(frame, registry, config, echo=echo)
    if observations.empty and not report.problems:
        report.add("no rows left after the exclusion rules")
    if report.problems and observations.empty:
        report.raise_with()
    try:
        valid = validate_observations(observations, registry, hierarchy, source=shown)
    except DataError as error:
        report.raise_with(error)
    if report.problems:
        report.raise_with()
    return valid


def _latest_or_none(store: Store) -> ReleaseInfo | None:
    try:
        return store.latest()
    except StoreError:  # a store not created yet, or unreadable: writing says which
        return None


def _default_entities() -> Path:
    from kpisheet.demo import DEMO_ENTITIES

    return DEMO_ENTITIES
