"""Benchmarks of kpisheet on synthetic sheets (see ``generate.py``), printed as a markdown table.

``make bench`` runs sizes S and M, ``make bench-large`` size L. Each size is measured by fresh
worker processes (this file with ``--worker``), so one size's memory does not leak into the next:

- ``kpisheet``: open (read, validate, build the cube), queries, the chart series and the app's
  server-side work per interaction, each repeated in the one process and reported as the median;
- ``memory``: one open and one of each query, then the process's peak resident memory;
- ``ingest``: the monthly refresh into a new SQLite store, reading its release back and opening
  the sheet from that store; with ``--postgres URL`` (a PostgreSQL server's maintenance
  database) the same on PostgreSQL, each store in a new database dropped afterwards;
- ``baseline``: a straightforward pandas version of what the old dashboard did on every click —
  roll the groups up with ``groupby``, a grouped rolling 12-month sum over the whole history and
  ``shift(12)`` for the previous year — on the same data, checked against kpisheet's numbers.

Times are wall-clock medians; the CPU time of the same runs is shown next to them, because the
machine may be shared and wall time then includes waiting for a core. Results are also written
to ``benchmarks/results/latest.{md,json}``.

Usage: ``python benchmarks/run.py [--size S] [--size M] [--size L] [--repeat N] [--skip TASK]
[--postgres URL]`` (``$KPISHEET_BENCH_POSTGRES_URL`` is the default of ``--postgres``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import DEFAULT_CACHE, SIZES, SheetFiles, generate

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = ("kpisheet", "memory", "ingest", "baseline")
#: Runs per measurement and size; the median is reported (0: not run by default).
REPEATS: dict[str, dict[str, int]] = {
    "S": {"open": 10, "query": 50, "small": 200, "app": 10, "ingest": 3, "store": 5, "baseline": 5},
    "M": {"open": 5, "query": 30, "small": 200, "app": 5, "ingest": 1, "store": 3, "baseline": 3},
    "L": {"open": 1, "query": 5, "small": 50, "app": 1, "ingest": 1, "store": 1, "baseline": 0},
}
#: Peak memory of an ingest and an open from the store per observation, as measured at size L
#: (7.1 GiB for 48M rows: validation's temporary columns; the store writes and reads chunk by
#: chunk). A size whose ingest would not fit into the available memory (less a margin for the
#: other processes on the machine) is not run.
INGEST_BYTES_PER_ROW = 170
MEMORY_MARGIN = 3 * 1024**3
#: Entities of the small query and the chart: one KPI for this many entities.
CHART_ENTITIES = 8
WINDOW_12M = "12M"
WINDOW_YTD = "YTD"

#: Query 12M at this size must be at least this many times faster than the pandas baseline.
SPEEDUP_SIZE = "M"
SPEEDUP_TARGET = 100

#: Environment variable with the default of ``--postgres``.
POSTGRES_ENV = "KPISHEET_BENCH_POSTGRES_URL"
#: The databases the store measures run on: key suffix and label.
STORE_BACKENDS = (("", "SQLite"), ("_postgres", "PostgreSQL"))
#: Targets of the store measures, the same on every database.
INGEST_TARGET = {"L": 60.0}
OPEN_STORE_TARGET = {"M": 1.0, "L": 10.0}
#: Rows of the store measures, per database.
STORE_MEASURES: list[tuple[str, str, dict[str, float]]] = [
    row
    for suffix, name in STORE_BACKENDS
    for row in (
        (
            f"ingest{suffix}",
            f"ingest Parquet → new {name} release (read, map, validate, write rows + snapshot)",
            INGEST_TARGET,
        ),
        (f"read_store{suffix}", f"read a release from the {name} store (Store.read)", {}),
        (
            f"open_store{suffix}",
            f"open from the {name} store (definitions, read, validate, cube)",
            OPEN_STORE_TARGET,
        ),
    )
]

# Rows of the table: key, label, target (size -> seconds or bytes).
GIB = 1024**3
MEASURES: list[tuple[str, str, dict[str, float]]] = [
    ("open", "open: Parquet → validated sheet (read, validate, cube)", {"M": 3.0}),
    ("query_12m", "query 12M, all KPIs × all entities", {"M": 0.1, "L": 2.0}),
    ("query_ytd", "query YTD, all KPIs × all entities", {"M": 0.1, "L": 2.0}),
    ("query_small", f"query 12M, 1 KPI × {CHART_ENTITIES} entities", {"M": 0.01}),
    ("series_small", f"series 13 months, 1 KPI × {CHART_ENTITIES} entities (chart data)", {}),
    ("app_all", "app per interaction: window change, everything selected", {}),
    ("app_small", f"app per interaction: 1 KPI × {CHART_ENTITIES} entities, with chart", {}),
    (
        "app_view",
        "app per interaction with the Panel page: window change, everything selected",
        {},
    ),
    ("app_view_bytes", "app per interaction with the Panel page: sent to the browser", {}),
    *STORE_MEASURES,
    ("ingest_peak_memory", "peak memory: ingest + open from the store, fresh process", {}),
    ("baseline", "pandas baseline (old dashboard), one interaction", {}),
    ("peak_memory", "peak memory: open + every query, fresh process", {"M": 1.5 * GIB}),
]


# -- measuring ---------------------------------------------------------------------------------


def measure(run: Callable[[], Any], repeat: int) -> dict[str, Any]:
    """Wall and CPU time of ``repeat`` runs: medians and the fastest run, in seconds."""
    walls, cpus = [], []
    gc.collect()
    for _ in range(max(repeat, 1)):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {
        "median": statistics.median(walls),
        "min": min(walls),
        "cpu_median": statistics.median(cpus),
        "runs": len(walls),
    }


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes, or None where there is no such file."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    return int(fields["MemAvailable"].split()[0]) * 1024 if "MemAvailable" in fields else None


def peak_memory() -> int:
    """Peak resident memory of this process in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def open_sheet(files: SheetFiles) -> Any:
    import kpisheet

    return kpisheet.open(files.observations, definitions=files.definitions, entities=files.entities)


def chart_selection(sheet: Any) -> tuple[str, list[str]]:
    """One flow KPI and entities of several levels: the total, a sector, a brand and products."""
    hierarchy = sheet.hierarchy
    kpi = next(k.id for k in sheet.registry.source_kpis if not sheet.registry.is_stock(k.id))
    groups = [hierarchy.total, hierarchy.groups("sector")[0], hierarchy.groups("mandant")[0]]
    step = max(len(hierarchy.leaves) // CHART_ENTITIES, 1)
    products = list(hierarchy.leaves[::step][: CHART_ENTITIES - len(groups)])
    return kpi, [*groups, *products]


def task_kpisheet(files: SheetFiles, repeats: dict[str, int], skip: set[str]) -> dict[str, Any]:
    """Open, queries, chart series and the app's work per interaction."""
    out: dict[str, Any] = {}
    holder: dict[str, Any] = {}

    def do_open() -> None:
        holder.pop("sheet", None)
        holder["sheet"] = open_sheet(files)

    out["open"] = measure(do_open, repeats["open"])
    sheet = holder["sheet"]
    out["observations"] = files.size.observations  # (sheet.observations would rebuild them)
    out["entities"] = len(sheet._cube.entities)
    out["kpis"] = len(sheet.registry)
    for key, window in (("query_12m", WINDOW_12M), ("query_ytd", WINDOW_YTD)):
        out[key] = measure(lambda w=window: sheet.query(window=w), repeats["query"])
        out[f"{key}_rows"] = len(sheet.query(window=window))
    kpi, entities = chart_selection(sheet)
    out["query_small"] = measure(
        lambda: sheet.query(window=WINDOW_12M, kpis=[kpi], entities=entities), repeats["small"]
    )
    out["series_small"] = measure(lambda: sheet.series([kpi], entities), repeats["small"])
    if "app" not in skip:
        out.update(task_app(sheet, kpi, entities, repeats["app"]))
    return out


def task_app(sheet: Any, kpi: str, entities: list[str], repeat: int) -> dict[str, Any]:
    """The server-side work of one click in the app: the query and building what is shown."""
    try:
        from kpisheet_ui.state import SheetState
    except ImportError as exc:
        return {"app_note": f"not measured: kpisheet_ui.state cannot be imported ({exc})"}
    state = SheetState(sheet)
    windows = iter([WINDOW_12M, WINDOW_YTD] * (repeat + 1))

    def interaction(chart: bool) -> None:
        state.window = next(windows)  # triggers the query
        state.table()
        state.table_styles()
        state.notes()
        if chart and state.shows_chart:
            state.chart()

    out: dict[str, Any] = {"app_all": measure(lambda: interaction(False), repeat)}
    out["app_all_rows"] = len(state.result)
    state.param.update(kpis=[kpi], entities=entities)
    out["app_small"] = measure(lambda: interaction(True), repeat)
    out["app_small_chart"] = bool(state.shows_chart)
    out.update(task_app_view(sheet, repeat))
    return out


def task_app_view(sheet: Any, repeat: int) -> dict[str, Any]:
    """One click on an open page as the server handles it, up to the serialised patch it sends.

    The state reacts, the Panel views update their Bokeh models, and the document's changes are
    serialised into the PATCH-DOC message the Bokeh server would send over the websocket.
    """
    try:
        import panel as pn
        from bokeh.document import Document
        from bokeh.protocol import Protocol

        from kpisheet_ui.app import AppView
        from kpisheet_ui.state import SheetState
    except ImportError as exc:
        return {"app_view_note": f"not measured: the app cannot be imported ({exc})"}
    state = SheetState(sheet)
    view = AppView(state)
    document = Document()
    document.add_root(pn.Column(*view.sidebar(), *view.main()).get_root(document))
    events: list[Any] = []
    document.on_change(events.append)
    protocol = Protocol()
    windows = iter([WINDOW_12M, WINDOW_YTD] * (repeat + 1))
    sent: list[int] = []

    def interaction() -> None:
        events.clear()
        state.window = next(windows)
        message = protocol.create("PATCH-DOC", events)
        sent.append(
            len(message.content_json) + sum(len(buffer.to_bytes()) for buffer in message.buffers)
        )

    out: dict[str, Any] = {"app_view": measure(interaction, repeat)}
    out["app_view_bytes"] = statistics.median(sent)
    return out


def task_memory(files: SheetFiles) -> dict[str, Any]:
    """Peak memory of a process that opens the sheet and runs every query once."""
    import kpisheet  # noqa: F401  (imports count as the process's base)

    base = peak_memory()
    sheet = open_sheet(files)
    after_open = peak_memory()
    kpi, entities = chart_selection(sheet)
    sheet.query(window=WINDOW_12M)
    sheet.query(window=WINDOW_YTD)
    sheet.query(window=WINDOW_12M, kpis=[kpi], entities=entities)
    sheet.series([kpi], entities)
    return {"peak_memory": peak_memory(), "memory_after_imports": base, "memory_open": after_open}


def task_ingest(
    files: SheetFiles, repeat: int, store_repeat: int, postgres: str | None
) -> dict[str, Any]:
    """The monthly refresh into a fresh store, then reading the release and opening the sheet
    from it: on SQLite, and on PostgreSQL when a server is given."""
    try:
        from kpisheet.store import sqlite_url
    except ImportError as exc:
        return {"ingest_note": f"not measured: {exc}"}
    needed = INGEST_BYTES_PER_ROW * files.size.observations
    available = available_memory()
    if available is not None and needed > available - MEMORY_MARGIN:
        note = (
            f"not run: would need about {needed / GIB:.0f} GiB ({INGEST_BYTES_PER_ROW} B per row as "
            f"measured at size L), {available / GIB:.0f} GiB available, "
            f"{MEMORY_MARGIN / GIB:.0f} GiB of them kept for other processes"
        )
        return {"ingest_note": note}
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kpisheet-bench-") as directory:
        numbers = iter(range(repeat + 1))
        out.update(
            store_measures(
                files,
                repeat,
                store_repeat,
                "",
                lambda: sqlite_url(Path(directory) / f"store-{next(numbers)}.db"),
            )
        )
        out["store_bytes"] = (Path(directory) / "store-0.db").stat().st_size
    if postgres:
        with postgres_databases(postgres) as new_database:
            out.update(store_measures(files, repeat, store_repeat, "_postgres", new_database))
    out["ingest_peak_memory"] = peak_memory()
    return out


def store_measures(
    files: SheetFiles, repeat: int, store_repeat: int, suffix: str, new_store: Callable[[], str]
) -> dict[str, Any]:
    """Ingest into new stores, then read the newest store's release and open the sheet from it."""
    import kpisheet
    from kpisheet import ingest
    from kpisheet.store import Store

    url = ""

    def do_ingest() -> None:
        nonlocal url
        url = new_store()
        ingest.ingest(
            files.observations,
            url,
            definitions=files.definitions,
            entities=files.entities,
            progress=True if sys.stderr.isatty() or files.size.name == "L" else None,
        )

    def do_read() -> None:
        with Store(url) as store:
            store.read()

    out = {f"ingest{suffix}": measure(do_ingest, repeat)}
    out[f"read_store{suffix}"] = measure(do_read, store_repeat)
    # Grouped by the hierarchy recorded with the release, as the app opens a store.
    out[f"open_store{suffix}"] = measure(
        lambda: kpisheet.open(url, definitions=files.definitions), store_repeat
    )
    return out


@contextlib.contextmanager
def postgres_databases(server: str) -> Iterator[Callable[[], str]]:
    """A maker of new databases on a PostgreSQL server, each dropped at the end."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def new_database() -> str:
        name = f"kpisheet_bench_{os.getpid()}_{len(made)}"
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        made.append(name)
        return make_url(server).set(database=name).render_as_string(hide_password=False)

    try:
        yield new_database
    finally:
        with admin.connect() as conn:
            for name in made:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# -- the pandas baseline -----------------------------------------------------------------------


def baseline_interaction(
    observations: pd.DataFrame,
    attributes: pd.DataFrame,
    levels: list[str],
    total: str,
    stocks: list[str],
    as_of: pd.Period,
) -> pd.DataFrame:
    """What the old dashboard computed on every click, done the straightforward pandas way.

    Groups are rolled up with ``groupby``; then every (entity, KPI) series gets a rolling 12-month
    sum over its whole history (stocks keep the month's value) and ``shift(12)`` for the previous
    year; finally the as-of month is picked out.
    """
    with_groups = observations.merge(attributes[levels], left_on="entity", right_index=True)
    frames = [observations.assign(level="product")]
    for level in levels:
        rolled = (
            with_groups.groupby([level, "kpi", "month"], observed=True)["value"]
            .sum(min_count=1)
            .reset_index()
            .rename(columns={level: "entity"})
        )
        frames.append(rolled.assign(level=level))
    grand = with_groups.groupby(["kpi", "month"], observed=True)["value"].sum(min_count=1)
    frames.append(grand.reset_index().assign(entity=total, level="total"))
    full = pd.concat(frames, ignore_index=True).sort_values(["entity", "kpi", "month"])
    series = full.groupby(["entity", "kpi"], sort=False)["value"]
    window = series.rolling(12, min_periods=1).sum().droplevel([0, 1])
    full["rolling"] = window.where(~full["kpi"].isin(stocks), full["value"])
    full["rolling_previous"] = full.groupby(["entity", "kpi"], sort=False)["rolling"].shift(12)
    result = full[full["month"] == as_of].copy()
    result["rolling_change"] = result["rolling"] - result["rolling_previous"]
    result["rolling_change_pct"] = result["rolling_change"] / result["rolling_previous"].abs()
    return result


def task_baseline(files: SheetFiles, repeat: int) -> dict[str, Any]:
    """Time the baseline, then check its numbers against kpisheet's."""
    import yaml

    from kpisheet.hierarchy import load_hierarchy

    hierarchy = load_hierarchy(files.entities)
    definitions = yaml.safe_load(files.definitions.read_text(encoding="utf-8"))
    stocks = [d["id"] for d in definitions if d.get("time_aggregation") == "last"]
    raw = pd.read_parquet(files.observations)
    observations = pd.DataFrame(
        {
            "month": raw["month"].dt.to_period("M"),
            "kpi": raw["kpi"].astype(str),
            "entity": raw["entity"].astype(str),
            "value": raw["value"],
        }
    )
    del raw
    as_of = observations["month"].max()
    levels = list(hierarchy.levels)
    holder: dict[str, pd.DataFrame] = {}

    def interaction() -> None:
        holder["result"] = baseline_interaction(
            observations, hierarchy.attributes, levels, hierarchy.total, stocks, as_of
        )

    out: dict[str, Any] = {"baseline": measure(interaction, repeat)}
    out["baseline_peak_memory"] = peak_memory()
    out["baseline_rows"] = len(holder["result"])
    sheet = open_sheet(files)
    kpisheet_result = sheet.query(
        window=WINDOW_12M, kpis=[k.id for k in sheet.registry.source_kpis]
    )
    both = holder["result"].merge(kpisheet_result, on=["entity", "kpi"], suffixes=("_b", ""))
    scale = np.maximum(np.abs(both["value"].to_numpy()), 1e-9)
    difference = np.abs(both["rolling"].to_numpy() - both["value"].to_numpy()) / scale
    out["baseline_compared"] = len(both)
    out["baseline_max_relative_difference"] = float(np.nanmax(difference)) if len(both) else None
    return out


# -- the parent: workers, table, report --------------------------------------------------------


def run_worker(
    task: str, size: str, cache: Path, repeat: int | None, skip: set[str], postgres: str | None
) -> dict:
    """Run one task for one size in a fresh process and return its results."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        target = Path(handle.name)
    command = [sys.executable, __file__, "--worker", task, "--size", size, "--cache", str(cache)]
    command += ["--out", str(target)]
    if repeat is not None:
        command += ["--repeat", str(repeat)]
    for name in skip:
        command += ["--skip", name]
    if postgres:
        command += ["--postgres", postgres]
    started = time.perf_counter()
    completed = subprocess.run(command, check=False)
    try:
        if completed.returncode != 0:
            return {f"{task}_note": f"worker failed with exit code {completed.returncode}"}
        return json.loads(target.read_text())
    finally:
        target.unlink(missing_ok=True)
        print(f"  {size} {task}: {time.perf_counter() - started:.0f} s", file=sys.stderr)


def worker(
    task: str, size: str, cache: Path, repeat: int | None, skip: set[str], postgres: str | None
) -> dict:
    files = generate(size, cache)
    repeats = dict(REPEATS[size])
    if repeat is not None:
        repeats = dict.fromkeys(repeats, repeat)
    if task == "kpisheet":
        return task_kpisheet(files, repeats, skip)
    if task == "memory":
        return task_memory(files)
    if task == "ingest":
        return task_ingest(files, repeats["ingest"], repeats["store"], postgres)
    return task_baseline(files, repeats["baseline"])


def machine() -> dict[str, Any]:
    import pandera

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(memory / GIB, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "pandera": pandera.__version__,
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def seconds(value: float) -> str:
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 0.001:
        return f"{value * 1000:.1f} ms"
    return f"{value * 1e6:.0f} µs"


#: The worker task whose note explains a missing measure.
TASK_OF = {
    "app_all": "app",
    "app_small": "app",
    "app_view": "app_view",
    "app_view_bytes": "app_view",
    **{
        f"{kind}{suffix}": "ingest"
        for kind in ("ingest", "read_store", "open_store")
        for suffix, _ in STORE_BACKENDS
    },
    "ingest_peak_memory": "ingest",
    "baseline": "baseline",
    "peak_memory": "memory",
}


def cell(results: dict[str, Any], key: str) -> str:
    value = results.get(key)
    if value is None:
        return results.get(f"{TASK_OF.get(key, 'kpisheet')}_note", "not run")
    if key.endswith("memory"):
        return f"{value / GIB:.2f} GiB"
    if key.endswith("bytes"):
        return f"{value / 1e6:.2f} MB"
    return f"{seconds(value['median'])} (CPU {seconds(value['cpu_median'])}, n={value['runs']})"


def verdicts(results: dict[str, dict[str, Any]]) -> list[str]:
    """One line per target: met, or missed by how much."""
    lines = []
    for key, label, targets in MEASURES:
        for size, target in targets.items():
            result = results.get(size, {}).get(key)
            if size not in results:
                continue
            if result is None:
                lines.append(f"- {label}, size {size}: not measured")
                continue
            value = result if key.endswith("memory") else result["median"]
            shown = (lambda v: f"{v / GIB:.2f} GiB") if key.endswith("memory") else seconds
            if value <= target:
                lines.append(f"- {label}, size {size}: {shown(value)} ≤ {shown(target)}: met")
            else:
                lines.append(
                    f"- {label}, size {size}: {shown(value)} > {shown(target)}: "
                    f"MISSED by {shown(value - target)} ({value / target:.1f}× the target)"
                )
    result = results.get(SPEEDUP_SIZE, {})
    if "baseline" in result and "query_12m" in result:
        ratio = result["baseline"]["median"] / result["query_12m"]["median"]
        verdict = "met" if ratio >= SPEEDUP_TARGET else "MISSED"
        lines.append(
            f"- speed-up of query 12M over the pandas baseline, size {SPEEDUP_SIZE}: "
            f"{ratio:,.0f}× (target ≥ {SPEEDUP_TARGET}×): {verdict}"
        )
    return lines


def report(results: dict[str, dict[str, Any]], info: dict[str, Any]) -> str:
    sizes = list(results)
    header = "| measure | " + " | ".join(
        f"{s} ({SIZES[s].products:,} × {SIZES[s].kpis} × {SIZES[s].months})" for s in sizes
    )
    lines = [header + " | target |", "|---" * (len(sizes) + 2) + "|"]
    for key, label, targets in MEASURES:
        target = ", ".join(
            f"{s} ≤ {seconds(t) if not key.endswith('memory') else f'{t / GIB:.1f} GiB'}"
            for s, t in targets.items()
        )
        cells = " | ".join(cell(results[s], key) for s in sizes)
        lines.append(f"| {label} | {cells} | {target} |")
    speedups = []
    for s in sizes:
        r = results[s]
        if "baseline" in r and "query_12m" in r:
            speedups.append(f"{r['baseline']['median'] / r['query_12m']['median']:,.0f}×")
        else:
            speedups.append("not run")
    lines.append(
        f"| speed-up: baseline ÷ query 12M | {' | '.join(speedups)} "
        f"| {SPEEDUP_SIZE} ≥ {SPEEDUP_TARGET}× |"
    )
    counts = []
    for s in sizes:
        r = results[s]
        counts.append(
            f"{r.get('observations', 0):,} observations, {r.get('entities', 0):,} entities, "
            f"{r.get('kpis', 0)} KPIs; {r.get('query_12m_rows', 0):,} result rows"
        )
    lines.append(f"| data | {' | '.join(counts)} | |")
    checks = []
    for s in sizes:
        r = results[s]
        if r.get("baseline_max_relative_difference") is not None:
            checks.append(
                f"{r['baseline_compared']:,} values compared, max relative difference "
                f"{r['baseline_max_relative_difference']:.1e}"
            )
        else:
            checks.append("not compared")
    lines.append(f"| baseline agrees with kpisheet | {' | '.join(checks)} | |")
    lines += ["", "Targets:", *verdicts(results), ""]
    lines.append(
        f"Machine: {info['cpus']} CPUs, {info['memory_gib']} GiB, Python {info['python']}, "
        f"numpy {info['numpy']}, pandas {info['pandas']}, pandera {info['pandera']} "
        f"({info['platform']}); load average at start {info['load_average_start']}, "
        f"at end {info['load_average']}; run at {info['started']}."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), action="append")
    parser.add_argument("--repeat", type=int, help="runs per measurement (default per size)")
    parser.add_argument("--skip", action="append", default=[], choices=[*TASKS, "app"])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument(
        "--postgres",
        default=os.environ.get(POSTGRES_ENV) or None,
        help="a PostgreSQL server's maintenance database URL: also measure the store there",
    )
    parser.add_argument("--worker", choices=TASKS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--large-baseline",
        action="store_true",
        help="also run the pandas baseline at size L (slow, needs many GiB)",
    )
    args = parser.parse_args()
    skip = set(args.skip)
    if args.worker:
        result = worker(args.worker, args.size[0], args.cache, args.repeat, skip, args.postgres)
        args.out.write_text(json.dumps(result, default=str))
        return
    sizes = args.size or ["S", "M"]
    started = datetime.now(UTC).astimezone().isoformat(timespec="seconds")
    load_start = [round(x, 2) for x in os.getloadavg()]
    results: dict[str, dict[str, Any]] = {}
    for size in sizes:
        generate(size, args.cache)
        results[size] = {}
        for task in TASKS:
            if task in skip:
                continue
            if task == "baseline" and REPEATS[size]["baseline"] == 0 and not args.large_baseline:
                results[size]["baseline_note"] = "not run (pass --large-baseline)"
                continue
            results[size].update(
                run_worker(task, size, args.cache, args.repeat, skip, args.postgres)
            )
    info = {**machine(), "started": started, "load_average_start": load_start}
    table = report(results, info)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "latest" if sizes != ["L"] else "latest-large"
    (RESULTS / f"{name}.md").write_text(table + "\n", encoding="utf-8")
    (RESULTS / f"{name}.json").write_text(
        json.dumps({"machine": info, "results": results}, indent=2, default=str), encoding="utf-8"
    )


if __name__ == "__main__":
    main()
