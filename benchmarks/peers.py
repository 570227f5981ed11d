"""kpisheet against DuckDB and Polars on the benchmark sheets (see ``generate.py``).

Every contender computes the same table: for each (entity, KPI) of every level of the tree
(products, the groups of each level, the total) the window value and the previous year's value,
for the 12M and YTD windows. Source KPIs follow their ``time_aggregation`` (``sum``: the months of
the window that have a value; ``last``: the as-of month); a group's monthly value is the sum over
its leaves that have one; derived ratios divide the aggregated components (zero → missing).

Measures, each in a fresh worker process (this file with ``--worker``), like ``run.py``:

- ``cold``: read the Parquet file, prepare what the set-up keeps, then 12M and YTD at the newest
  month; the median over several fresh processes, run in rounds of one process per contender;
- ``warm``: 12M and YTD at another as-of month (:data:`WARM_AS_OF`) with the data loaded; the
  median of repeated runs in the process;
- ``peak``: the worker process's peak resident memory.

Set-ups (the peers written the way their documentation suggests):

- ``duckdb``: straightforward — the file read into a DuckDB table once, each query one SQL
  statement with ``GROUPING SETS`` over the window's and the previous window's months;
- ``duckdb-parquet``: the same statement scanning the Parquet file every time (nothing loaded);
- ``polars``: straightforward — ``read_parquet`` once, each query filters the months and groups
  each level;
- ``polars-wide``: pre-rolled and wide — the levels rolled up once into one row per
  (entity, KPI) with one column per month; a query sums a slice of columns.

A separate ``check`` worker runs kpisheet and every set-up in one process and compares their
tables value for value (relative tolerance :data:`TOLERANCE`, missing = missing) at both as-of
months. ``floor`` measures the memory bandwidth (a numpy copy) and the bytes the warm query must
touch at least.

Usage: ``python benchmarks/peers.py [--size S] [--size M] [--cold-runs N] [--warm-runs N]``.
Needs the ``bench`` extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import DEFAULT_CACHE, SIZES, SheetFiles, generate
from run import seconds

RESULTS = Path(__file__).resolve().parent / "results"
KPISHEET = "kpisheet"
SETUPS = (
    "duckdb",
    "duckdb-rolled",
    "duckdb-parquet",
    "polars",
    "polars-wide",
    "polars-scan",
)
CONTENDERS = (KPISHEET, *SETUPS)
WINDOWS = ("12M", "YTD")
#: Modules each contender imports before its cold measure starts.
IMPORTS = {
    KPISHEET: ("kpisheet",),
    "duckdb": ("duckdb", "pyarrow"),
    "duckdb-parquet": ("duckdb", "pyarrow"),
    "duckdb-rolled": ("duckdb", "pyarrow"),
    "polars": ("polars",),
    "polars-scan": ("polars",),
    "polars-wide": ("polars",),
}
#: As-of month of the warm query: half a year before the newest month, so YTD is partial.
WARM_AS_OF = "2025-06"
#: Relative tolerance of the equality check; missing equals missing.
TOLERANCE = 1e-9
#: Fresh processes per cold measure and warm runs per process, per size.
COLD_RUNS = {"S": 3, "M": 3, "L": 1}
WARM_RUNS = {"S": 30, "M": 10, "L": 3}
GIB = 1024**3
#: Bytes of one float64 value.
VALUE_BYTES = 8
#: Size of the array copied to measure memory bandwidth.
BANDWIDTH_BYTES = 256 * 1024**2


# -- the sheet as the peers see it ------------------------------------------------------------


class Sheet:
    """The definitions and hierarchy of a benchmark sheet, read with PyYAML (not kpisheet)."""

    def __init__(self, files: SheetFiles) -> None:
        definitions = yaml.safe_load(files.definitions.read_text(encoding="utf-8"))
        hierarchy = yaml.safe_load(files.entities.read_text(encoding="utf-8"))
        self.path = str(files.observations)
        self.stocks = [d["id"] for d in definitions if d.get("time_aggregation") == "last"]
        self.flows = [d["id"] for d in definitions if d.get("time_aggregation") == "sum"]
        unknown = [
            d["id"] for d in definitions if "formula" not in d and d["id"] not in self.sources
        ]
        if unknown:
            raise ValueError(f"time aggregations other than sum and last: {unknown}")
        #: derived KPI -> (numerator, denominator); the benchmark only declares ratios.
        self.ratios: dict[str, tuple[str, str]] = {}
        for d in definitions:
            if "formula" in d:
                numerator, denominator = (part.strip() for part in d["formula"].split("/"))
                self.ratios[d["id"]] = (numerator, denominator)
        self.total: str = hierarchy["total"]
        self.levels: list[str] = list(hierarchy["levels"])
        self.products = list(hierarchy["entities"])
        self.attributes = {
            level: [hierarchy["entities"][p][level] for p in self.products] for level in self.levels
        }

    @property
    def sources(self) -> list[str]:
        return [*self.stocks, *self.flows]


def ordinal(month: str) -> int:
    """``YYYY-MM`` as months since year 0."""
    year, number = month.split("-")
    return int(year) * 12 + int(number) - 1


def window_months(as_of: int, window: str) -> tuple[int, int]:
    """First and last month ordinal of a window ending at ``as_of``."""
    first = as_of - 11 if window == "12M" else as_of - as_of % 12
    return first, as_of


# -- DuckDB -------------------------------------------------------------------------------------


def duckdb_source(sheet: Sheet) -> str:
    """The observations as DuckDB reads them: month ordinals, NaN rows dropped (= missing).

    ``can_have_nan`` keeps DuckDB from trusting Parquet statistics that say there is no NaN,
    which would drop the ``isnan`` filter.
    """
    return (
        "SELECT (year(month) * 12 + month(month) - 1)::INTEGER AS m, kpi::VARCHAR AS kpi, "
        "entity::VARCHAR AS entity, value "
        f"FROM read_parquet('{sheet.path}', can_have_nan = true) WHERE NOT isnan(value)"
    )


def duckdb_prepare(connection: Any, sheet: Sheet, mode: str) -> str:
    """Register the hierarchy, load the observations (``table``), roll them up every level
    (``rolled``) or leave them in the file (``parquet``); the name of what queries read."""
    import pyarrow as pa

    connection.register("hierarchy_arrow", pa.table({"entity": sheet.products, **sheet.attributes}))
    connection.execute("CREATE TABLE hierarchy AS SELECT * FROM hierarchy_arrow")
    connection.unregister("hierarchy_arrow")
    stocks = pa.table({"kpi": sheet.stocks})
    connection.register("stocks_arrow", stocks)
    connection.execute("CREATE TABLE stocks AS SELECT * FROM stocks_arrow")
    connection.unregister("stocks_arrow")
    if mode == "parquet":
        return f"({duckdb_source(sheet)})"
    if mode == "rolled":
        entity, sets = duckdb_levels(sheet, by_month=True)
        rows = duckdb_rows(f"({duckdb_source(sheet)})", sheet)
        connection.execute(
            f"CREATE TABLE rolled_months AS SELECT {entity} AS entity, kpi, m, stock, "
            f"sum(value) AS value FROM ({rows}) GROUP BY GROUPING SETS ({sets}) ORDER BY m"
        )
        return "rolled_months"
    connection.execute(f"CREATE TABLE obs AS {duckdb_source(sheet)}")
    return "obs"


def duckdb_levels(sheet: Sheet, by_month: bool) -> tuple[str, str]:
    """The entity expression and the ``GROUPING SETS`` rolling products up every level."""
    extra = ", m, stock" if by_month else ""
    sets = ", ".join(
        [
            f"(entity, kpi{extra})",
            *(f"({level}, kpi{extra})" for level in sheet.levels),
            f"(kpi{extra})",
        ]
    )
    entity = "CASE " + " ".join(
        f"WHEN grouping({level}) = 0 THEN {level}" for level in sheet.levels
    )
    entity += f" WHEN grouping(entity) = 0 THEN entity ELSE '{sheet.total}' END"
    return entity, sets


def duckdb_rows(source: str, sheet: Sheet) -> str:
    """The observations with their groups and whether their KPI is a stock."""
    levels = ", ".join(f"h.{level}" for level in sheet.levels)
    return (
        f"SELECT o.entity, o.kpi, o.m, o.value, {levels}, s.kpi IS NOT NULL AS stock "
        f"FROM {source} o JOIN hierarchy h USING (entity) LEFT JOIN stocks s USING (kpi)"
    )


def duckdb_query(connection: Any, sheet: Sheet, source: str, as_of: int, window: str) -> Any:
    """One window at one as-of month as one statement.

    Straightforward (``source`` the observations): the window's and the previous window's rows
    rolled up every level by ``GROUPING SETS``. Pre-rolled (``source`` is ``rolled_months``):
    the months of every (entity, KPI) summed over the window.
    """
    first, last = window_months(as_of, window)
    months = f"m BETWEEN {first - 12} AND {last - 12} OR m BETWEEN {first} AND {last}"
    sums = f"""sum(value) FILTER (WHERE m BETWEEN {first} AND {last}
                                   AND (NOT stock OR m = {last})) AS value,
                sum(value) FILTER (WHERE m BETWEEN {first - 12} AND {last - 12}
                                   AND (NOT stock OR m = {last - 12})) AS previous_value"""
    if source == "rolled_months":
        rolled = f"""SELECT entity, kpi, {sums} FROM rolled_months WHERE {months}
            GROUP BY entity, kpi"""
    else:
        entity, sets = duckdb_levels(sheet, by_month=False)
        rolled = f"""SELECT {entity} AS entity, kpi, {sums}
            FROM ({duckdb_rows(source, sheet)} WHERE {months}) GROUP BY GROUPING SETS ({sets})"""
    ratios = ", ".join(f"('{k}', '{a}', '{b}')" for k, (a, b) in sheet.ratios.items())
    statement = f"""
        WITH rolled AS ({rolled})
        SELECT * FROM rolled
        UNION ALL
        SELECT n.entity, r.kpi, n.value / nullif(d.value, 0),
            n.previous_value / nullif(d.previous_value, 0)
        FROM (VALUES {ratios}) r(kpi, numerator, denominator)
        JOIN rolled n ON n.kpi = r.numerator
        JOIN rolled d ON d.kpi = r.denominator AND d.entity = n.entity
    """
    return connection.sql(statement).to_arrow_table()


class DuckDBSetup:
    def __init__(self, sheet: Sheet, mode: str) -> None:
        import duckdb

        self.sheet = sheet
        self.connection = duckdb.connect()
        self.source = duckdb_prepare(self.connection, sheet, mode)

    def query(self, as_of: int, window: str) -> Any:
        return duckdb_query(self.connection, self.sheet, self.source, as_of, window)

    def table(self, result: Any) -> dict[str, np.ndarray]:
        import polars as pl

        return polars_table(pl.from_arrow(result))


# -- Polars -------------------------------------------------------------------------------------


def polars_read(sheet: Sheet, lazy: bool = False) -> Any:
    """The observations with month ordinals, NaN as null (missing), joined to the hierarchy;
    with ``lazy`` a plan scanning the file, else a frame read once."""
    import polars as pl

    hierarchy = pl.DataFrame({"entity": sheet.products, **sheet.attributes}).with_columns(
        pl.all().cast(pl.Categorical)
    )
    frame = (
        pl.scan_parquet(sheet.path)
        .with_columns(
            m=(pl.col("month").dt.year() * 12 + pl.col("month").dt.month() - 1).cast(pl.Int32),
            kpi=pl.col("kpi").cast(pl.Categorical),
            entity=pl.col("entity").cast(pl.Categorical),
            value=pl.col("value").fill_nan(None),
        )
        .drop("month")
        .drop_nulls("value")
        .join(hierarchy.lazy(), on="entity")
    )
    return frame if lazy else frame.collect()


def polars_ratios(sheet: Sheet, rolled: Any) -> Any:
    """The derived ratios from the aggregated components, appended to the rolled table."""
    import polars as pl

    frames = [rolled]
    for kpi, (numerator, denominator) in sheet.ratios.items():
        top = rolled.filter(pl.col("kpi") == numerator)
        bottom = rolled.filter(pl.col("kpi") == denominator)
        both = top.join(bottom, on="entity", suffix="_d")
        frames.append(
            both.select(
                "entity",
                pl.lit(kpi).cast(rolled.schema["kpi"]).alias("kpi"),
                value=pl.when(pl.col("value_d") != 0).then(pl.col("value") / pl.col("value_d")),
                previous_value=pl.when(pl.col("previous_value_d") != 0).then(
                    pl.col("previous_value") / pl.col("previous_value_d")
                ),
            )
        )
    return pl.concat(frames)


class PolarsSetup:
    """Straightforward: filter the months, group by each level, sum with conditions; with
    ``scan`` the file is scanned by every query instead of read once."""

    def __init__(self, sheet: Sheet, scan: bool = False) -> None:
        import polars as pl

        self.sheet = sheet
        self.frame = polars_read(sheet, lazy=True).with_columns(
            stock=pl.col("kpi").cast(pl.String).is_in(sheet.stocks)
        )
        if not scan:
            self.frame = self.frame.collect()

    def query(self, as_of: int, window: str) -> Any:
        import polars as pl

        first, last = window_months(as_of, window)
        m, stock = pl.col("m"), pl.col("stock")
        now = m.is_between(first, last) & (~stock | (m == last))
        before = m.is_between(first - 12, last - 12) & (~stock | (m == last - 12))
        rows = self.frame.lazy().filter(now | before)  # a no-op on a plan
        aggregations = [
            pl.col("value").filter(now).sum().alias("value"),
            pl.col("value").filter(now).count().alias("n"),
            pl.col("value").filter(before).sum().alias("previous_value"),
            pl.col("value").filter(before).count().alias("n_previous"),
        ]
        keys = ["entity", *self.sheet.levels]
        parts = [
            rows.group_by(key, "kpi")
            .agg(aggregations)
            .rename({key: "entity"})
            .with_columns(pl.col("entity").cast(pl.String))
            for key in keys
        ]
        parts.append(
            rows.group_by("kpi").agg(aggregations).with_columns(entity=pl.lit(self.sheet.total))
        )
        columns = ["entity", "kpi", "value", "previous_value"]
        rolled = (
            pl.concat([part.select([*columns, "n", "n_previous"]) for part in parts])
            .with_columns(
                value=pl.when(pl.col("n") > 0).then("value"),
                previous_value=pl.when(pl.col("n_previous") > 0).then("previous_value"),
            )
            .select(columns)
            .collect()
        )
        return polars_ratios(self.sheet, rolled)

    def table(self, result: Any) -> dict[str, np.ndarray]:
        return polars_table(result)


class PolarsWideSetup:
    """Pre-rolled and wide: one row per (entity, KPI) of every level, one column per month."""

    def __init__(self, sheet: Sheet) -> None:
        import polars as pl

        self.sheet = sheet
        frame = polars_read(sheet)
        parts = [frame.select("entity", "kpi", "m", "value")]
        for level in sheet.levels:
            parts.append(
                frame.group_by(level, "kpi", "m")
                .agg(pl.col("value").sum())
                .rename({level: "entity"})
                .select("entity", "kpi", "m", "value")
            )
        parts.append(
            frame.group_by("kpi", "m")
            .agg(pl.col("value").sum())
            .select(pl.lit(sheet.total).cast(pl.Categorical).alias("entity"), "kpi", "m", "value")
        )
        long = pl.concat(
            [part.with_columns(pl.col("entity").cast(pl.Categorical)) for part in parts]
        )
        del frame, parts
        # Missing months stay null (a group with no leaf value has no row, so no value).
        self.wide = long.pivot(on="m", index=["entity", "kpi"], values="value", sort_columns=True)
        self.stock = self.wide["kpi"].cast(pl.String).is_in(sheet.stocks)
        self.months = {int(name) for name in self.wide.columns[2:]}

    def window_sum(self, first: int, last: int) -> Any:
        """Per row: the sum of the window's months that have a value (null if none), or for a
        stock the last month's value."""
        import polars as pl

        names = [str(m) for m in range(first, last + 1) if m in self.months]
        if not names:
            return pl.lit(None, dtype=pl.Float64)
        total = pl.sum_horizontal(names)
        counted = pl.sum_horizontal([pl.col(name).is_not_null() for name in names])
        flow = pl.when(counted > 0).then(total)
        final = pl.col(str(last)) if last in self.months else pl.lit(None, dtype=pl.Float64)
        return pl.when(pl.lit(self.stock)).then(final).otherwise(flow)

    def query(self, as_of: int, window: str) -> Any:
        import polars as pl

        first, last = window_months(as_of, window)
        rolled = self.wide.select(
            pl.col("entity").cast(pl.String),
            "kpi",
            value=self.window_sum(first, last),
            previous_value=self.window_sum(first - 12, last - 12),
        ).filter(pl.col("value").is_not_null() | pl.col("previous_value").is_not_null())
        return polars_ratios(self.sheet, rolled)

    def table(self, result: Any) -> dict[str, np.ndarray]:
        return polars_table(result)


def polars_table(frame: Any) -> dict[str, np.ndarray]:
    """A result as numpy columns ``key`` (entity and KPI), ``value`` and ``previous_value``."""
    import polars as pl

    frame = frame.with_columns(
        key=pl.col("entity").cast(pl.String) + "|" + pl.col("kpi").cast(pl.String)
    )
    return {
        "key": frame["key"].to_numpy().astype(str),
        "value": frame["value"].cast(pl.Float64).to_numpy(),
        "previous_value": frame["previous_value"].cast(pl.Float64).to_numpy(),
    }


# -- kpisheet -------------------------------------------------------------------------------------


class KpisheetSetup:
    def __init__(self, files: SheetFiles) -> None:
        import kpisheet

        self.sheet = kpisheet.open(
            files.observations, definitions=files.definitions, entities=files.entities
        )

    def query(self, as_of: int, window: str) -> Any:
        return self.sheet.query(as_of=f"{as_of // 12:04d}-{as_of % 12 + 1:02d}", window=window)

    def table(self, result: Any) -> dict[str, np.ndarray]:
        return {
            "key": (result["entity"] + "|" + result["kpi"]).to_numpy().astype(str),
            "value": result["value"].to_numpy(dtype=float),
            "previous_value": result["previous_value"].to_numpy(dtype=float),
        }


def make_setup(name: str, files: SheetFiles) -> Any:
    if name == KPISHEET:
        return KpisheetSetup(files)
    sheet = Sheet(files)
    if name.startswith("duckdb"):
        return DuckDBSetup(sheet, mode=name.removeprefix("duckdb").removeprefix("-") or "table")
    if name in ("polars", "polars-scan"):
        return PolarsSetup(sheet, scan=name == "polars-scan")
    return PolarsWideSetup(sheet)


# -- measuring ----------------------------------------------------------------------------------


def peak_memory() -> int:
    """Peak resident memory of this process in bytes.

    ``VmHWM`` of /proc/self/status where there is one: Linux hands the starting process's peak
    on to the ``ru_maxrss`` of the processes it starts, but not its ``VmHWM``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def newest_month(files: SheetFiles) -> int:
    """The newest month of a benchmark sheet (``generate.LAST_MONTH``)."""
    from generate import LAST_MONTH

    year, month = LAST_MONTH
    return year * 12 + month - 1


def task_time(name: str, files: SheetFiles, warm_runs: int) -> dict[str, Any]:
    """Cold (open + both windows at the newest month) once, warm repeated; then the peak."""
    newest, warm = newest_month(files), ordinal(WARM_AS_OF)
    # The libraries' imports are not part of cold (the first call's lazy start-up is).
    for module in IMPORTS[name]:
        importlib.import_module(module)
    imports = peak_memory()
    started, cpu = time.perf_counter(), time.process_time()
    setup = make_setup(name, files)
    for window in WINDOWS:
        setup.query(newest, window)
    cold, cold_cpu = time.perf_counter() - started, time.process_time() - cpu
    walls, cpus = [], []
    for _ in range(warm_runs):
        started, cpu = time.perf_counter(), time.process_time()
        for window in WINDOWS:
            setup.query(warm, window)
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    return {
        "cold": cold,
        "warm": statistics.median(walls),
        "peak": peak_memory(),
        "imports": imports,
        "cold_cpu": cold_cpu,
        "warm_cpu": statistics.median(cpus),
    }


def compare(
    expected: dict[str, np.ndarray], got: dict[str, np.ndarray]
) -> tuple[int, float, list[str]]:
    """Compare two tables of (key, value, previous_value) where either value is present.

    Returns the number of values compared, the largest relative difference and the problems.
    """
    problems = []

    def present(table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keep = ~(np.isnan(table["value"]) & np.isnan(table["previous_value"]))
        order = np.argsort(table["key"][keep], kind="stable")
        return {column: values[keep][order] for column, values in table.items()}

    expected, got = present(expected), present(got)
    if len(expected["key"]) != len(got["key"]) or not np.array_equal(expected["key"], got["key"]):
        missing = sorted(set(expected["key"]) - set(got["key"]))[:5]
        extra = sorted(set(got["key"]) - set(expected["key"]))[:5]
        problems.append(
            f"rows differ: {len(expected['key'])} expected, {len(got['key'])} got; "
            f"missing e.g. {missing}, extra e.g. {extra}"
        )
        return 0, float("nan"), problems
    largest = 0.0
    for column in ("value", "previous_value"):
        a, b = expected[column], got[column]
        both_missing = np.isnan(a) & np.isnan(b)
        one_missing = np.isnan(a) ^ np.isnan(b)
        if one_missing.any():
            problems.append(f"{column}: {int(one_missing.sum())} values missing on one side")
        scale = np.maximum(np.abs(a), np.abs(b))
        difference = np.where(
            both_missing | one_missing, 0.0, np.abs(a - b) / np.where(scale == 0, 1.0, scale)
        )
        largest = max(largest, float(difference.max(initial=0.0)))
    if largest > TOLERANCE:
        problems.append(f"largest relative difference {largest:.1e} > {TOLERANCE:.0e}")
    return 2 * len(expected["key"]), largest, problems


def task_check(files: SheetFiles) -> dict[str, Any]:
    """Every set-up's tables against kpisheet's, for both windows at both as-of months."""
    reference = make_setup(KPISHEET, files)
    expected = {
        (as_of, window): reference.table(reference.query(as_of, window))
        for as_of in (newest_month(files), ordinal(WARM_AS_OF))
        for window in WINDOWS
    }
    del reference
    out: dict[str, Any] = {}
    for name in SETUPS:
        setup = make_setup(name, files)
        compared, largest, problems = 0, 0.0, []
        for (as_of, window), table in expected.items():
            n, diff, found = compare(table, setup.table(setup.query(as_of, window)))
            compared += n
            largest = max(largest, diff) if not np.isnan(diff) else float("nan")
            problems += [f"{window} at {as_of // 12}-{as_of % 12 + 1:02d}: {p}" for p in found]
        out[name] = {"compared": compared, "max_difference": largest, "problems": problems}
        del setup
    return out


def task_floor(files: SheetFiles) -> dict[str, Any]:
    """The bandwidth floor of the warm query: bytes it must read ÷ measured copy bandwidth.

    The warm query reads, for every (entity, KPI) of the tree, the window's and the previous
    window's months of 12M and YTD at :data:`WARM_AS_OF` (one float64 each), and writes one
    value and one previous value per row and window.
    """
    sheet = Sheet(files)
    entities = 1 + len(sheet.products) + sum(len(set(v)) for v in sheet.attributes.values())
    warm = ordinal(WARM_AS_OF)
    months = sum(
        2 * (last - first + 1) for first, last in (window_months(warm, w) for w in WINDOWS)
    )
    rows = entities * len(sheet.sources)
    touched = rows * months * VALUE_BYTES + rows * 2 * len(WINDOWS) * VALUE_BYTES
    source = np.ones(BANDWIDTH_BYTES // VALUE_BYTES)
    target = np.empty_like(source)
    walls = []
    for _ in range(7):
        started = time.perf_counter()
        np.copyto(target, source)
        walls.append(time.perf_counter() - started)
    bandwidth = 2 * BANDWIDTH_BYTES / statistics.median(walls)  # read + write
    return {"touched": touched, "bandwidth": bandwidth, "floor": touched / bandwidth}


# -- the parent: workers, table -----------------------------------------------------------------


def run_worker(task: str, size: str, cache: Path, warm_runs: int) -> dict[str, Any]:
    """Run one task in a fresh process and return its results."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        target = Path(handle.name)
    command = [sys.executable, __file__, "--worker", task, "--size", size]
    command += ["--cache", str(cache), "--out", str(target), "--warm-runs", str(warm_runs)]
    try:
        completed = subprocess.run(command, check=False)
        if completed.returncode != 0:
            return {"error": f"worker failed with exit code {completed.returncode}"}
        return json.loads(target.read_text())
    finally:
        target.unlink(missing_ok=True)


def worker(task: str, size: str, cache: Path, warm_runs: int) -> dict[str, Any]:
    files = generate(size, cache)
    if task == "check":
        return task_check(files)
    if task == "floor":
        return task_floor(files)
    return task_time(task, files, warm_runs)


def measure_size(size: str, cache: Path, cold_runs: int, warm_runs: int) -> dict[str, Any]:
    """Medians over fresh processes per contender, the equality check and the floor."""
    out: dict[str, Any] = {}
    # Round by round, every contender once per round: a change of the machine's load during
    # the run then falls on all of them alike instead of on whoever ran at that time.
    rounds = [
        {name: run_worker(name, size, cache, warm_runs) for name in CONTENDERS}
        for _ in range(cold_runs)
    ]
    for name in CONTENDERS:
        runs = [found[name] for found in rounds]
        good = [run for run in runs if "error" not in run]
        if not good:
            out[name] = {"error": runs[0]["error"]}
            continue
        out[name] = {
            key: statistics.median(run[key] for run in good)
            for key in ("cold", "warm", "peak", "imports", "cold_cpu", "warm_cpu")
        }
        print(f"  {size} {name}: {out[name]}", file=sys.stderr)
    out["check"] = run_worker("check", size, cache, warm_runs)
    out["floor"] = run_worker("floor", size, cache, warm_runs)
    return out


#: Targets of kpisheet against the peers per size: the largest kpisheet ÷ best peer for cold,
#: warm and peak memory, the largest peak memory (bytes) and the largest multiple of the warm
#: query's floor.
TARGETS: dict[str, dict[str, float]] = {
    "S": {"warm": 1.0},
    "M": {"cold": 1.0, "warm": 1.0, "peak": 1.0, "peak_bytes": 0.40 * GIB, "floor": 3.0},
    "L": {"cold": 2.0, "warm": 1.0, "peak_bytes": 2.5 * GIB},
}


def best_peer(result: dict[str, Any], key: str) -> tuple[float, str] | None:
    """The best (smallest) measure among the peers' set-ups, with its name."""
    peers = [(result[n][key], n) for n in SETUPS if key in result.get(n, {})]
    return min(peers) if peers else None


def target_lines(size: str, result: dict[str, Any]) -> list[str]:
    """Each target of this size: the figure measured, the target and whether it is met."""
    ours = result.get(KPISHEET, {})
    lines = []

    def line(what: str, figure: float, target: float, unit: str) -> None:
        verdict = "met" if figure <= target else f"MISSED by {figure / target:.2f}×"
        lines.append(
            f"- {size} {what}: {figure:.2f}{unit} (target ≤ {target:.2f}{unit}): {verdict}"
        )

    for key in ("cold", "warm", "peak"):
        best = best_peer(result, key)
        if key in TARGETS[size] and best and key in ours:
            line(f"{key} ÷ best peer ({best[1]})", ours[key] / best[0], TARGETS[size][key], "×")
    if "peak_bytes" in TARGETS[size] and "peak" in ours:
        line("peak memory", ours["peak"] / GIB, TARGETS[size]["peak_bytes"] / GIB, " GiB")
    floor = result.get("floor", {})
    if "floor" in TARGETS[size] and "floor" in floor and "warm" in ours:
        line(
            "warm ÷ its bandwidth floor", ours["warm"] / floor["floor"], TARGETS[size]["floor"], "×"
        )
    return lines


def report(results: dict[str, dict[str, Any]], info: dict[str, Any]) -> str:
    def triple(result: dict[str, Any]) -> str:
        if "error" in result:
            return result["error"]
        return (
            f"{seconds(result['cold'])} / {seconds(result['warm'])} / "
            f"{result['peak'] / GIB:.2f} GiB"
        )

    header = ["size", "kpisheet", *SETUPS, "kpisheet ÷ best peer (cold / warm / peak)"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    notes = []
    for size, result in results.items():
        cells = [size, triple(result[KPISHEET]), *(triple(result[name]) for name in SETUPS)]
        ratios = []
        for key in ("cold", "warm", "peak"):
            found = best_peer(result, key)
            if found is None or key not in result[KPISHEET]:
                ratios.append("–")
                continue
            best, name = found
            ratios.append(f"{result[KPISHEET][key] / best:.2f}× ({name})")
        cells.append(" / ".join(ratios))
        lines.append("| " + " | ".join(cells) + " |")
        check = result["check"]
        for name in SETUPS:
            c = check.get(name, {})
            if "error" in check:
                notes.append(f"- {size} {name}: check not run ({check['error']})")
            elif c["problems"]:
                notes.append(f"- {size} {name}: DIFFERS from kpisheet: {'; '.join(c['problems'])}")
            else:
                notes.append(
                    f"- {size} {name}: equal to kpisheet, {c['compared']:,} values compared, "
                    f"max relative difference {c['max_difference']:.1e}"
                )
        imports = ", ".join(
            f"{name} {result[name]['imports'] / GIB:.2f} GiB"
            for name in CONTENDERS
            if "imports" in result[name]
        )
        notes.append(f"- {size} memory after the imports alone (part of peak): {imports}")
        cpu = ", ".join(
            f"{name} {seconds(result[name]['cold_cpu'])} / {seconds(result[name]['warm_cpu'])}"
            for name in CONTENDERS
            if "cold_cpu" in result[name]
        )
        notes.append(f"- {size} CPU time of cold / warm (all threads of the process): {cpu}")
        floor = result["floor"]
        if "error" not in floor:
            notes.append(
                f"- {size} bandwidth floor of the warm query: {floor['touched'] / 1e6:.1f} MB "
                f"touched at {floor['bandwidth'] / 1e9:.1f} GB/s = {seconds(floor['floor'])}; "
                f"kpisheet's warm is {result[KPISHEET].get('warm', float('nan')) / floor['floor']:.1f}× "
                "the floor"
            )
    targets = [line for size, result in results.items() for line in target_lines(size, result)]
    lines += ["", "Cells: cold / warm / peak memory (medians of fresh processes).", "", *notes]
    lines += ["", "Targets (kpisheet against the peers, measured in this run):", "", *targets]
    lines += [
        "",
        f"Run at {info['started']}; load average at start {info['load_start']}, at end "
        f"{info['load_end']}; {os.cpu_count()} CPUs; duckdb {info['duckdb']}, "
        f"polars {info['polars']}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), action="append")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--cold-runs", type=int, help="fresh processes per cold measure")
    parser.add_argument("--warm-runs", type=int, help="warm runs per process")
    parser.add_argument("--worker", choices=[*CONTENDERS, "check", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = worker(args.worker, args.size[0], args.cache, args.warm_runs or 1)
        args.out.write_text(json.dumps(result))
        return
    missing = [name for name in ("duckdb", "polars") if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"peers not measured: {' and '.join(missing)} not installed "
            "(pip install -e '.[bench]'; make bench does)"
        )
        return
    # The parent never holds data (the sheets are generated by a child process).
    sizes = args.size or ["S", "M"]
    info: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_start": [round(x, 2) for x in os.getloadavg()],
        "duckdb": version("duckdb"),
        "polars": version("polars"),
    }
    results = {}
    for size in sizes:
        generator = Path(__file__).resolve().parent / "generate.py"
        subprocess.run(
            [sys.executable, str(generator), "--size", size, "--cache", str(args.cache)],
            check=True,
        )
        results[size] = measure_size(
            size, args.cache, args.cold_runs or COLD_RUNS[size], args.warm_runs or WARM_RUNS[size]
        )
    info["load_end"] = [round(x, 2) for x in os.getloadavg()]
    table = report(results, info)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "peers" if sizes != ["L"] else "peers-large"
    (RESULTS / f"{name}.md").write_text(table + "\n", encoding="utf-8")
    (RESULTS / f"{name}.json").write_text(
        json.dumps({"info": info, "results": results}, indent=2), encoding="utf-8"
    )


if __name__ == "__main__":
    main()
