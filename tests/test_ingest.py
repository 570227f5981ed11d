"""Tests of the monthly refresh: files and warehouse queries into releases, mapping of upstream
KPI names and ids, exclusion rules, every problem reported with nothing written, and faults."""

from __future__ import annotations

import io
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.dialects import mssql

import kpisheet
from kpisheet.cli import main
from kpisheet.demo import generate_observations, write_demo_csv
from kpisheet.errors import DataError, HierarchyError, IngestConfigError
from kpisheet.ingest import bind_query, ingest, load_ingest_config, read_file, to_observations
from kpisheet.plugins import load_kpis
from kpisheet.store import Store, display_url, observations_checksum, sqlite_url
from tests.small_sheet import (
    CONFIG,
    ENTITIES_YAML,
    PRODUCTS,
    PRODUCTS_MOVED,
    history_csv,
    small_sheet,
    value,
)

KPISHEET = str(Path(sys.executable).parent / "kpisheet")

# A small sheet whose KPIs are known upstream by id (and period id).
ID_KPIS = """\
- id: turnover
  label: Umsatz
  group: Umsatz
  unit: currency
  time_aggregation: sum
  source: {kpi_id: 17, period_id: 1}
- id: accounts
  label: Konten
  group: Konten
  unit: count
  time_aggregation: last
  source: {kpi_id: "A-3"}
"""

ID_ENTITIES = """\
total: Test AG
levels: [mandant]
entities:
  Alpha Gold: {mandant: Alpha}
  Beta Classic: {mandant: Beta}
"""

# The warehouse query of the PostgreSQL tests, with bound parameters.
WAREHOUSE_SQL = """\
-- KPI values per product and month, from the warehouse's long table.
SELECT period_date AS month,
       product_name AS entity,
       kpi_name,
       kpi_value AS value
FROM dwh_kpi_values
WHERE period_date BETWEEN CAST(:from_date AS DATE) AND CAST(:to_date AS DATE);
"""

EXCLUDE_TEST_PRODUCTS = """\
exclude:
  - {column: entity, startswith: "TEST "}
"""

# For data that runs centuries ahead on purpose: no checks of months.
NO_MONTH_CHECKS = "checks: {future_months: 'off', months_after_previous: null}\n"


@pytest.fixture(scope="module")
def demo() -> pd.DataFrame:
    """The demo sheet's observations."""
    return generate_observations()


@pytest.fixture(scope="module")
def upstream_names() -> dict[str, str]:
    """KPI id -> upstream KPI name of the built-in definitions."""
    return {kpi.id: kpi.source.kpi_name for kpi in load_kpis().source_kpis}


def upstream(demo: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    """The demo as the warehouse delivers it: month-end dates, upstream names, padded text."""
    return pd.DataFrame(
        {
            "PERIOD_DATE": demo["month"].dt.to_timestamp(how="end").dt.normalize(),
            "PRODUCT_NAME": "  " + demo["entity"].astype(str) + " ",
            "KPI_NAME": demo["kpi"].map(names) + " ",
            "KPI_VALUE": demo["value"],
        }
    )


def write(path: Path, content: str) -> Path:
    path.write_text(content, encoding="utf-8")
    return path


def release_ids(url: str) -> list[int]:
    return [info.id for info in Store(url).releases()]


# -- files -------------------------------------------------------------------------------------


def test_ingested_csv_queries_exactly_like_the_csv(tmp_path: Path) -> None:
    """A CSV ingested into a fresh SQLite store gives the same tables as the CSV itself."""
    csv = write_demo_csv(tmp_path / "held_out.csv")
    url = sqlite_url(tmp_path / "kpisheet.db")
    info = ingest(csv, url)
    assert (info.id, info.source) == (1, str(csv.resolve()))
    from_csv, from_store = kpisheet.open(str(csv)), kpisheet.open(url)
    assert from_store.release == info
    for window in ("1M", "12M", "YTD"):
        for per_account in (False, True):
            pd.testing.assert_frame_equal(
                from_store.query(window=window, per_account=per_account),
                from_csv.query(window=window, per_account=per_account),
                check_exact=True,
            )
    pd.testing.assert_frame_equal(
        from_store.query(as_of="2024-03", window="6M"), from_csv.query(as_of="2024-03", window="6M")
    )


def test_second_ingest_is_release_two_and_release_one_stays_queryable(
    tmp_path: Path, demo: pd.DataFrame
) -> None:
    """A second ingest makes release 2 (newest); release 1 is still read with release=1."""
    url = sqlite_url(tmp_path / "kpisheet.db")
    older = demo[demo["month"] <= pd.Period("2026-09", "M")]
    older.assign(month=older["month"].astype(str)).to_csv(tmp_path / "2026-09.csv", index=False)
    write_demo_csv(tmp_path / "2026-10.csv")
    ingest(tmp_path / "2026-09.csv", url, note="September close")
    second = ingest(tmp_path / "2026-10.csv", url)
    assert release_ids(url) == [1, 2]
    assert Store(url).releases()[0].note == "September close"
    assert kpisheet.open(url).months[-1] == pd.Period("2026-10", "M")
    first = kpisheet.open(url, release=1)
    assert first.release.id == 1 and first.months[-1] == pd.Period("2026-09", "M")
    assert kpisheet.open(url).release == second


def test_rollback_copies_an_older_release_as_the_newest(tmp_path: Path) -> None:
    """Ingesting release 1 of the store into itself makes it the newest again, as release 3."""
    url = sqlite_url(tmp_path / "kpisheet.db")
    demo_csv = write_demo_csv(tmp_path / "demo.csv")
    first = ingest(demo_csv, url)
    write(tmp_path / "wrong.csv", "month,kpi,entity,value\n2026-11,turnover,Alpine Visa Gold,1\n")
    ingest(tmp_path / "wrong.csv", url)
    result = CliRunner().invoke(
        main,
        ["ingest", "--source", url, "--store", url, "--release", "1", "--note", "back to 1"],
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"release 3 written to {url}: 21,380 rows, newest month 2026-10\n"
    third = Store(url).latest()
    assert (third.id, third.checksum, third.source) == (3, first.checksum, f"{url} release 1")
    assert third.note == "back to 1"


def test_upstream_names_are_trimmed_mapped_and_excluded(
    tmp_path: Path, demo: pd.DataFrame, upstream_names: dict[str, str]
) -> None:
    """Warehouse rows (own column names, padded text, KPI names, test products) become the demo."""
    rows = upstream(demo, upstream_names)
    test_product = rows.head(3).assign(PRODUCT_NAME="TEST Karte ")
    pd.concat([rows, test_product]).to_parquet(tmp_path / "upstream.parquet")
    config = write(
        tmp_path / "ingest.yaml",
        "columns: {month: period_date, entity: product_name, kpi_name: kpi_name, value: kpi_value}\n"
        + EXCLUDE_TEST_PRODUCTS,
    )
    said: list[str] = []
    url = sqlite_url(tmp_path / "kpisheet.db")
    info = ingest(tmp_path / "upstream.parquet", url, config=config, echo=said.append)
    assert said == ["excluded 3 rows by rule: entity startswith 'TEST '"]
    assert info.checksum == observations_checksum(demo)


def test_dictionary_encoded_text_is_trimmed_and_spellings_merged(
    tmp_path: Path, demo: pd.DataFrame, upstream_names: dict[str, str]
) -> None:
    """Categorical text (Parquet dictionaries) is trimmed too; names padded two ways become one."""
    rows = upstream(demo, upstream_names)
    rows.loc[rows.index[::2], "PRODUCT_NAME"] = rows["PRODUCT_NAME"].str.strip()
    test_product = rows.head(3).assign(PRODUCT_NAME="TEST Karte ")
    rows = pd.concat([rows, test_product]).astype({"PRODUCT_NAME": "category"})
    rows = rows.astype({"KPI_NAME": "category"})
    rows.to_parquet(tmp_path / "upstream.parquet")
    config = write(
        tmp_path / "ingest.yaml",
        "columns: {month: period_date, entity: product_name, kpi_name: kpi_name, value: kpi_value}\n"
        + EXCLUDE_TEST_PRODUCTS,
    )
    said: list[str] = []
    url = sqlite_url(tmp_path / "kpisheet.db")
    info = ingest(tmp_path / "upstream.parquet", url, config=config, echo=said.append)
    assert said == ["excluded 3 rows by rule: entity startswith 'TEST '"]
    assert info.row_count == len(demo)
    assert info.checksum == observations_checksum(demo)


def test_toml_config_and_upstream_ids_with_period_ids(tmp_path: Path) -> None:
    """KPIs known upstream by id and period id map; other periods are dropped when configured."""
    definitions = write(tmp_path / "kpis.yaml", ID_KPIS)
    entities = write(tmp_path / "entities.yaml", ID_ENTITIES)
    config = write(
        tmp_path / "ingest.toml",
        'unmapped_kpis = "drop"\n[columns]\nvalue = "amount"\n[checks]\nlate_data = "off"\n',
    )
    rows = pd.DataFrame(
        {
            "month": [202401, 202401, 202401, 202401, 202402],
            "entity": ["Alpha Gold", "Alpha Gold", "Alpha Gold", " Beta Classic", "Beta Classic"],
            "kpi_id": ["17", "17", "A-3", "A-3 ", "17.0"],
            "period_id": [1.0, 2.0, np.nan, 1.0, 1.0],
            "amount": [100.5, 1200.0, 3.0, 4.0, 7.25],
        }
    )
    rows.to_csv(tmp_path / "ids.csv", index=False)
    said: list[str] = []
    url = sqlite_url(tmp_path / "kpisheet.db")
    ingest(
        tmp_path / "ids.csv",
        url,
        definitions=[definitions],
        entities=entities,
        config=config,
        echo=said.append,
    )
    assert said == ["dropped 1 row of upstream KPIs no definition claims"]
    read = Store(url).read()[1].astype({"kpi": str, "entity": str, "month": str})
    assert sorted(read.itertuples(index=False, name=None)) == [
        ("2024-01", "accounts", "Alpha Gold", 3.0),
        ("2024-01", "accounts", "Beta Classic", 4.0),
        ("2024-01", "turnover", "Alpha Gold", 100.5),
        ("2024-02", "turnover", "Beta Classic", 7.25),
    ]


def test_bad_data_reports_every_problem_and_writes_nothing(
    tmp_path: Path,
    demo: pd.DataFrame,
    upstream_names: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unmapped names, unknown products and non-numbers are reported together; no release."""
    monkeypatch.chdir(tmp_path)
    url = sqlite_url(tmp_path / "kpisheet.db")
    first = ingest(write_demo_csv(tmp_path / "demo.csv"), url)
    rows = upstream(demo.head(4), upstream_names).rename(columns=str.lower)
    rows = rows.rename(columns={"period_date": "month", "product_name": "entity"})
    rows = rows.rename(columns={"kpi_value": "value"}).astype({"value": object})
    rows.loc[0, "kpi_name"] = "Umsatz Totl"
    rows.loc[1, "entity"] = "Alpine Visa Goldd"
    rows.loc[2, "value"] = "n/a"
    rows.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError) as caught:
        ingest(tmp_path / "bad.csv", url)
    assert [str(problem) for problem in caught.value.problems] == [
        "bad.csv: 1 row with upstream KPIs that no definition's source: claims: 'Umsatz Totl' "
        "(1 row, did you mean 'Umsatz Total'?) — add them to a definition's source:, exclude "
        "them, or set unmapped_kpis: drop",
        "bad.csv: value is not a number: line 4 ('n/a')",
        "bad.csv: unknown entity 'Alpine Visa Goldd' (did you mean 'Alpine Visa Gold'?) in "
        "1 row (line 3)",
    ]
    assert set(caught.value.failure_cases["where"]) == {"line 2", "line 3", "line 4"}
    assert Store(url).releases() == [first]


def test_missing_columns_name_the_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source without the expected columns says which, and where to name them."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "odd.csv", "datum,produkt,wert\n2024-01,Alpine Visa Gold,1\n")
    with pytest.raises(
        DataError,
        match=re.escape(
            "odd.csv: missing column(s) month ('month'), entity ('entity'), value ('value'), kpi "
            "('kpi', or 'kpi_name' / 'kpi_id' for upstream KPIs); found datum, produkt, wert — "
            "name the source's columns under 'columns:' in the ingest configuration"
        ),
    ):
        ingest(tmp_path / "odd.csv", sqlite_url(tmp_path / "kpisheet.db"))
    assert not (tmp_path / "kpisheet.db").exists()


def test_invalid_config_lists_every_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unknown keys (with a suggestion and the allowed keys), unknown words and rules with two
    tests are all reported, naming the file and the line."""
    monkeypatch.chdir(tmp_path)
    config = write(
        tmp_path / "ingest.yaml",
        "columns: {monat: datum}\n"
        "exclude:\n  - {column: entity, startswith: X, endswith: Y}\n"
        "unmapped_kpis: ignore\n",
    )
    with pytest.raises(IngestConfigError) as caught:
        load_ingest_config(config)
    assert [str(p) for p in caught.value.problems] == [
        "ingest.yaml:1: unknown key 'columns.monat' (did you mean 'month'?); allowed keys: "
        "month, entity, value, kpi, kpi_name, kpi_id, period_id",
        "ingest.yaml:3: exclude.0: needs exactly one of: equals, in, startswith, endswith, "
        "contains",
        "ingest.yaml:4: unmapped_kpis 'ignore' is not one of: error, drop",
    ]


def test_exclusion_rule_on_a_missing_column_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exclusion rule naming a column the source lacks is a problem, not silently ignored."""
    monkeypatch.chdir(tmp_path)
    csv = write_demo_csv(tmp_path / "demo.csv")
    config = write(tmp_path / "ingest.yaml", "exclude:\n  - {column: produkt, in: [A, B]}\n")
    with pytest.raises(
        DataError,
        match=re.escape(
            "demo.csv: exclusion rule 'produkt in ['A', 'B']' names column 'produkt', which the "
            "source does not have; columns: month, kpi, entity, value"
        ),
    ):
        ingest(csv, sqlite_url(tmp_path / "kpisheet.db"), config=config)


def test_source_file_that_is_gone_fails_cleanly(tmp_path: Path) -> None:
    """A missing source file is a one-line report and exit 1 on the command line."""
    url = sqlite_url(tmp_path / "kpisheet.db")
    result = CliRunner().invoke(
        main, ["ingest", "--source", str(tmp_path / "gone.csv"), "--store", url]
    )
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"1 problem in data {tmp_path / 'gone.csv'}:\n  {tmp_path / 'gone.csv'}: no such file\n"
    )
    assert not (tmp_path / "kpisheet.db").exists()


# -- faults with real processes ----------------------------------------------------------------


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid canonical CSV of 960,000 rows (200 years of the demo products), about 50 MB.

    Big enough that writing it takes the store about a second, long enough to kill the writer.
    """
    months = pd.period_range("1960-01", periods=2400, freq="M").astype(str)
    products = list(kpisheet.open().hierarchy.leaves)
    kpis = [kpi.id for kpi in load_kpis().source_kpis]
    m, k, e = np.meshgrid(np.arange(2400), np.arange(len(kpis)), np.arange(len(products)))
    frame = pd.DataFrame(
        {
            "month": np.asarray(months)[m.ravel()],
            "kpi": np.asarray(kpis)[k.ravel()],
            "entity": np.asarray(products)[e.ravel()],
            "value": np.arange(m.size, dtype=float),
        }
    )
    path = tmp_path_factory.mktemp("big") / "big.csv"
    frame.to_csv(path, index=False)
    return path


def cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [KPISHEET, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_until(
    condition: Callable[[], bool], timeout: float = 60.0, interval: float = 0.001
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(interval)


def has_open(pid: int, path: Path) -> bool:
    """True while process ``pid`` has ``path`` open."""
    try:
        return any(
            os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{pid}/fd")
        )
    except OSError:
        return False


def sqlite_writer_active(path: Path) -> bool:
    """True while some connection holds the SQLite store's write lock."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_source_file_overwritten_during_ingest_gives_whole_data_or_a_clean_error(
    tmp_path: Path, big_csv: Path
) -> None:
    """A source truncated while the ingest reads it never makes a partial release or a crash.

    Depending on when the truncation lands, the ingest has the whole file (and writes it) or
    notices the change (exit 1, a message, nothing written).
    """
    source = tmp_path / "delivery.csv"
    content = big_csv.read_bytes()
    source.write_bytes(content)
    url = sqlite_url(tmp_path / "kpisheet.db")
    config = write(tmp_path / "ingest.yaml", NO_MONTH_CHECKS)
    process = cli("ingest", "--source", str(source), "--store", url, "--config", str(config))
    wait_until(lambda: has_open(process.pid, source) or process.poll() is not None)
    half = content[: content.index(b"\n", len(content) // 2) + 1]
    with source.open("r+b") as handle:  # as a copy over the file would: truncate, rewrite
        handle.truncate(0)
        handle.write(half)
    out, err = process.communicate(timeout=120)
    assert "Traceback" not in err
    if process.returncode == 0:
        (info,) = Store(url).releases()
        assert info.row_count == content.count(b"\n") - 1
    else:
        assert process.returncode == 1, out + err
        assert "the file changed while it was being read" in err
        assert not (tmp_path / "kpisheet.db").exists()


@pytest.mark.slow
def test_ingest_killed_mid_write_leaves_previous_release_newest(
    tmp_path: Path, big_csv: Path
) -> None:
    """`kpisheet ingest` killed by SIGKILL while writing leaves release 1 newest and readable."""
    path = tmp_path / "kpisheet.db"
    url = sqlite_url(path)
    first = ingest(write_demo_csv(tmp_path / "demo.csv"), url)
    config = write(tmp_path / "ingest.yaml", NO_MONTH_CHECKS)
    process = cli("ingest", "--source", str(big_csv), "--store", url, "--config", str(config))
    # The write lock held for a while: the release's transaction, not a brief one before it.
    wait_until(
        lambda: sqlite_writer_active(path) and not time.sleep(0.2) and sqlite_writer_active(path)
    )
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    store = Store(url)
    assert store.releases() == [first]
    info, read = store.read()
    assert info == first and observations_checksum(read) == first.checksum
    assert ingest(tmp_path / "demo.csv", url).id == 2


# -- the command line --------------------------------------------------------------------------


def test_cli_bad_data_exits_1_and_leaves_releases_unchanged(tmp_path: Path) -> None:
    """`kpisheet ingest` of bad data prints the report without a traceback and exits 1."""
    url = sqlite_url(tmp_path / "kpisheet.db")
    csv = write_demo_csv(tmp_path / "demo.csv")
    runner = CliRunner()
    assert runner.invoke(main, ["ingest", "--source", str(csv), "--store", url]).exit_code == 0
    before = runner.invoke(main, ["releases", "--store", url]).stdout
    write(tmp_path / "bad.csv", "month,kpi,entity,value\n2024-13,umsatz,Alpine Visa Gold,1\n")
    result = runner.invoke(main, ["ingest", "--source", str(tmp_path / "bad.csv"), "--store", url])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"2 problems in data {tmp_path / 'bad.csv'}:\n")
    assert "Traceback" not in result.output + result.stderr
    assert runner.invoke(main, ["releases", "--store", url]).stdout == before


def test_cli_ingest_and_releases(tmp_path: Path) -> None:
    """`kpisheet ingest` reports the release written; `kpisheet releases` lists them all."""
    url = sqlite_url(tmp_path / "kpisheet.db")
    csv = write_demo_csv(tmp_path / "demo.csv")
    runner = CliRunner()
    args = ["ingest", "--source", str(csv), "--store", url]
    first = runner.invoke(main, [*args, "--note", "Oktober"])
    assert first.stdout == f"release 1 written to {url}: 21,380 rows, newest month 2026-10\n"
    second = runner.invoke(main, args)
    assert second.stderr == "the data is identical to release 1\n"
    listing = runner.invoke(main, ["releases", "--store", url])
    assert listing.exit_code == 0
    lines = listing.stdout.splitlines()
    assert lines[0].split() == [
        "id",
        "created",
        "(UTC)",
        "newest",
        "month",
        "rows",
        "source",
        "note",
    ]
    assert lines[2].split()[0] == "1" and lines[2].split()[-1] == "Oktober"
    assert lines[3].split()[0] == "2" and lines[3].split()[3:5] == ["2026-10", "21,380"]
    assert lines[-1] == "newest: release 2 (read by default; --release ID reads another)"


def test_cli_param_must_be_name_equals_value(tmp_path: Path) -> None:
    """A --param without '=' is a usage error naming the option."""
    result = CliRunner().invoke(
        main,
        ["ingest", "--source", "sqlite://", "--store", "sqlite://", "--param", "from_date"],
    )
    assert result.exit_code == 2
    assert "Invalid value for '--param': 'from_date' is not NAME=VALUE" in result.stderr


def test_query_needs_a_database_and_a_database_needs_a_query(tmp_path: Path) -> None:
    """--query with a file, a database without --query, --release with a file: each explained."""
    csv = write_demo_csv(tmp_path / "demo.csv")
    url = sqlite_url(tmp_path / "kpisheet.db")
    with pytest.raises(DataError, match=re.escape("--query needs a database URL as the source")):
        ingest(csv, url, query=write(tmp_path / "q.sql", "SELECT 1"))
    warehouse = tmp_path / "warehouse.db"
    sqlite3.connect(warehouse).execute("CREATE TABLE kpi_values (x INTEGER)").connection.close()
    with pytest.raises(
        DataError,
        match=re.escape(
            "a database source needs --query FILE.sql (it is no kpisheet store with releases)"
        ),
    ):
        ingest(sqlite_url(warehouse), url)
    with pytest.raises(DataError, match=re.escape("--release needs a store URL as the source")):
        ingest(csv, url, release=1)


def test_cli_demo_writes_a_ready_project(tmp_path: Path) -> None:
    """`kpisheet demo` writes a store, definitions and entities that the printed commands use."""
    output = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--output", str(output)])
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in output.iterdir()) == [
        "entities.yaml",
        "kpi_definitions",
        "kpisheet.db",
    ]
    assert "kpisheet.db       store, release 1: 21,380 observations, newest month 2026-10" in (
        result.stdout
    )
    command = next(line for line in result.stdout.splitlines() if "kpisheet query" in line)
    args = command.split()[1:]
    cwd = Path.cwd()
    try:
        os.chdir(output)
        query = CliRunner().invoke(main, args)
    finally:
        os.chdir(cwd)
    assert query.exit_code == 0, query.stderr
    expected = kpisheet.open().query(window="12M").to_csv(index=False)
    assert query.stdout == expected
    again = CliRunner().invoke(main, ["demo", "--output", str(output)])
    assert again.exit_code == 1
    assert "already exist; choose a new directory for the demo project" in again.stderr


# -- warehouse queries on a real PostgreSQL ------------------------------------------------------


@pytest.fixture
def warehouse(postgres_db: str, demo: pd.DataFrame, upstream_names: dict[str, str]) -> str:
    """A PostgreSQL database with the demo in a warehouse-like long table, plus a test product."""
    rows = upstream(demo, upstream_names).rename(columns=str.lower)
    rows = pd.concat([rows, rows.head(5).assign(product_name="TEST Karte")])
    engine = create_engine(postgres_db)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE dwh_kpi_values (period_date DATE NOT NULL, "
                "product_name VARCHAR(200) NOT NULL, kpi_name VARCHAR(200) NOT NULL, "
                "kpi_value NUMERIC(18, 2))"
            )
        )
        rows.assign(period_date=rows["period_date"].dt.date).to_sql(
            "dwh_kpi_values", conn, if_exists="append", index=False, chunksize=5000
        )
    engine.dispose()
    return postgres_db


@pytest.mark.postgres
def test_warehouse_query_with_bound_parameters_into_sqlite(
    tmp_path: Path, warehouse: str, demo: pd.DataFrame
) -> None:
    """A .sql file with :parameters runs on PostgreSQL; the chosen months become a release."""
    query = write(tmp_path / "monthly.sql", WAREHOUSE_SQL)
    config = write(tmp_path / "ingest.yaml", EXCLUDE_TEST_PRODUCTS)
    url = sqlite_url(tmp_path / "kpisheet.db")
    params = {"from_date": "2025-01-01", "to_date": "2025-12-31"}
    info = ingest(warehouse, url, query=query, params=params, config=config)
    assert (
        info.source
        == f"{display_url(warehouse)} query monthly.sql (from_date=2025-01-01, to_date=2025-12-31)"
    )
    year = demo[demo["month"].dt.year == 2025]
    assert info.checksum == observations_checksum(year)
    assert info.newest_month == "2025-12"


@pytest.mark.postgres
def test_cli_warehouse_into_a_postgresql_store(tmp_path: Path, warehouse: str) -> None:
    """`kpisheet ingest --query --param` from the warehouse into a store on PostgreSQL itself."""
    query = write(tmp_path / "monthly.sql", WAREHOUSE_SQL)
    config = write(tmp_path / "ingest.yaml", EXCLUDE_TEST_PRODUCTS)
    base = ["ingest", "--source", warehouse, "--store", warehouse, "--query", str(query)]
    runner = CliRunner()
    for to_date in ("2026-09-30", "2026-10-31"):
        result = runner.invoke(
            main,
            [
                *base,
                "--config",
                str(config),
                "--param",
                "from_date=2021-01-01",
                "--param",
                f"to_date={to_date}",
            ],
        )
        assert result.exit_code == 0, result.stderr
        assert "excluded 5 rows by rule: entity startswith 'TEST '" in result.stderr
    assert [(r.id, r.newest_month) for r in Store(warehouse).releases()] == [
        (1, "2026-09"),
        (2, "2026-10"),
    ]
    assert kpisheet.open(warehouse, release=1).months[-1] == pd.Period("2026-09", "M")
    assert kpisheet.open(warehouse).months[-1] == pd.Period("2026-10", "M")


@pytest.mark.postgres
def test_parameters_are_bound_never_pasted(tmp_path: Path, warehouse: str) -> None:
    """A parameter value holding SQL stays a value: the query fails on it, the table survives."""
    query = write(tmp_path / "monthly.sql", WAREHOUSE_SQL)
    url = sqlite_url(tmp_path / "kpisheet.db")
    hostile = "2025-01-01'); DROP TABLE dwh_kpi_values; --"
    with pytest.raises(
        DataError,
        match=re.escape(f'query {query} failed: invalid input syntax for type date: "{hostile}"'),
    ):
        ingest(warehouse, url, query=query, params={"from_date": hostile, "to_date": "2025-12-31"})
    engine = create_engine(warehouse)
    assert inspect(engine).has_table("dwh_kpi_values")
    engine.dispose()
    assert not (tmp_path / "kpisheet.db").exists()


@pytest.mark.postgres
def test_database_connection_lost_mid_query_fails_cleanly(tmp_path: Path, warehouse: str) -> None:
    """The warehouse dropping the connection in the middle of the query is a clean DataError."""
    query = write(
        tmp_path / "terminate.sql",
        "SELECT period_date AS month, product_name AS entity, kpi_name, kpi_value AS value "
        "FROM dwh_kpi_values WHERE pg_terminate_backend(pg_backend_pid())",
    )
    url = sqlite_url(tmp_path / "kpisheet.db")
    with pytest.raises(
        DataError,
        match=re.escape(
            f"query {query} failed: terminating connection due to administrator command"
        ),
    ):
        ingest(warehouse, url, query=query)
    assert not (tmp_path / "kpisheet.db").exists()


def test_parameters_missing_or_unknown_are_reported_together(tmp_path: Path) -> None:
    """Every parameter without a value, and every value without a parameter, is reported."""
    with pytest.raises(DataError) as caught:
        bind_query(WAREHOUSE_SQL, {"from_date": "2025-01-01", "form_date": "x"}, "monthly.sql")
    assert [str(p) for p in caught.value.problems] == [
        "monthly.sql: parameter :to_date has no value; pass --param to_date=VALUE",
        "monthly.sql: --param form_date is not a parameter of the query; its parameters: "
        "from_date, to_date",
    ]


def test_warehouse_query_compiles_for_sql_server() -> None:
    """The bound warehouse query renders with pyodbc's placeholders and ordered values."""
    statement = bind_query(WAREHOUSE_SQL, {"from_date": "2025-01-01", "to_date": "2025-12-31"})
    compiled = statement.compile(dialect=mssql.dialect(paramstyle="qmark"))
    assert "WHERE period_date BETWEEN CAST(? AS DATE) AND CAST(? AS DATE)" in compiled.string
    assert not compiled.string.rstrip().endswith(";")
    assert [compiled.params[name] for name in compiled.positiontup] == ["2025-01-01", "2025-12-31"]


def test_demo_entities_are_the_default_hierarchy(tmp_path: Path) -> None:
    """Without --entities, ingest checks products against the demo hierarchy."""
    write(tmp_path / "x.csv", "month,kpi,entity,value\n2024-01,turnover,Nirgendwo Karte,1\n")
    with pytest.raises(DataError, match=re.escape("unknown entity 'Nirgendwo Karte'")):
        ingest(tmp_path / "x.csv", sqlite_url(tmp_path / "kpisheet.db"))


# -- docs/data-engineers.md ---------------------------------------------------------------------

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "data-engineers.md"


def guide_block(language: str, starts: str) -> str:
    """The fenced block of the guide in ``language`` whose text starts with ``starts``."""
    blocks = re.findall(rf"```{language}\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.DOTALL)
    (block,) = [b for b in blocks if b.startswith(starts)]
    return block


def test_guide_configurations_load(tmp_path: Path) -> None:
    """The guide's YAML and TOML ingest configurations are valid and say what the guide says."""
    yaml_config = load_ingest_config(
        write(tmp_path / "ingest.yaml", guide_block("yaml", "# ingest.yaml"))
    )
    assert [str(rule) for rule in yaml_config.exclude] == [
        "entity startswith 'TEST '",
        "entity in ['Dummy Karte', 'Musterkarte']",
    ]
    toml_config = load_ingest_config(
        write(tmp_path / "ingest.toml", guide_block("toml", "# ingest.toml"))
    )
    assert (toml_config.columns.month, toml_config.columns.entity) == (
        "period_date",
        "product_name",
    )
    assert [str(rule) for rule in toml_config.exclude] == ["entity startswith 'TEST '"]


@pytest.mark.postgres
def test_guide_warehouse_query_runs_on_postgresql(
    tmp_path: Path, postgres_db: str, demo: pd.DataFrame, upstream_names: dict[str, str]
) -> None:
    """The guide's .sql template and ingest.yaml load a star-schema warehouse into a release."""
    kpi_ids = {name: number for number, name in enumerate(upstream_names.values(), start=100)}
    products = {name: number for number, name in enumerate(pd.unique(demo["entity"]), start=1)}
    products |= {"TEST Karte": 900, "Dummy Karte": 901}
    rows = upstream(demo, upstream_names)
    fact = pd.DataFrame(
        {
            "period_date": rows["PERIOD_DATE"].dt.date,
            "product_id": demo["entity"].map(products),
            "kpi_id": rows["KPI_NAME"].str.strip().map(kpi_ids),
            "period_id": 1,
            "kpi_value": rows["KPI_VALUE"],
        }
    )
    noise = pd.concat(
        [
            fact.head(20).assign(period_id=2, kpi_value=-1.0),  # year-to-date values
            fact.head(3).assign(product_id=900),
            fact.head(3).assign(product_id=901),
        ]
    )
    engine = create_engine(postgres_db)
    with engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA dwh"))
        pd.DataFrame({"product_id": products.values(), "product_name": products.keys()}).to_sql(
            "dim_product", conn, schema="dwh", index=False
        )
        pd.DataFrame({"kpi_id": kpi_ids.values(), "kpi_name": kpi_ids.keys()}).to_sql(
            "dim_kpi", conn, schema="dwh", index=False
        )
        pd.concat([fact, noise]).to_sql(
            "fact_kpi_monthly", conn, schema="dwh", index=False, chunksize=5000
        )
    engine.dispose()
    query = write(tmp_path / "monthly.sql", guide_block("sql", "-- sql/monthly.sql"))
    config = write(tmp_path / "ingest.yaml", guide_block("yaml", "# ingest.yaml"))
    said: list[str] = []
    info = ingest(
        postgres_db,
        sqlite_url(tmp_path / "kpisheet.db"),
        query=query,
        params={"from_date": "2021-01-01", "to_date": "2026-06-30"},
        config=config,
        echo=said.append,
    )
    assert said == [
        "excluded 3 rows by rule: entity startswith 'TEST '",
        "excluded 3 rows by rule: entity in ['Dummy Karte', 'Musterkarte']",
    ]
    assert info.newest_month == "2026-06"
    assert info.checksum == observations_checksum(demo[demo["month"] <= pd.Period("2026-06", "M")])


# -- the hierarchy with each release, many sources ---------------------------------------------


def mandant_turnover(sheet: kpisheet.KPISheet, month: str) -> dict[str, float]:
    """Turnover per mandant in one month."""
    table = sheet.query(as_of=month, kpis="turnover", levels="mandant")
    return dict(zip(table["entity"], table["value"], strict=True))


def test_hierarchy_from_a_product_csv_is_stored_with_the_release(tmp_path: Path) -> None:
    """--entities-source with the config's entities: section makes the hierarchy, which the
    release keeps and kpisheet.open uses without --entities."""
    sheet = small_sheet(tmp_path)
    history = sheet.write("history.csv", history_csv([202609]))
    url = sqlite_url(tmp_path / "kpisheet.db")
    said: list[str] = []
    ingest(
        history,
        url,
        definitions=[sheet.definitions],
        entities_source=sheet.products,
        config=sheet.config,
        echo=said.append,
    )
    assert said == [f"hierarchy from {sheet.products}: 3 products"]
    stored = Store(url).hierarchy(1)
    assert stored is not None and stored.to_data() == {
        "total": "Test AG",
        "levels": ["sector", "mandant"],
        "entities": {
            "Alpha Gold": {"sector": "B2C", "mandant": "Alpha", "cardprofile": "CC"},
            "Alpha Prepaid": {"sector": "B2C", "mandant": "Alpha", "cardprofile": "PP"},
            "Beta Classic": {"sector": "B2B2C", "mandant": "Beta", "cardprofile": "CC"},
        },
    }
    opened = kpisheet.open(url, definitions=[sheet.definitions])
    assert opened.hierarchy.views == ("cardprofile",)
    assert mandant_turnover(opened, "2026-09") == {"Alpha": 1109.0 + 9.0, "Beta": 509.0}


def test_labels_of_the_entities_section_are_stored_with_the_release(tmp_path: Path) -> None:
    """``labels:`` in the config's entities: section names the levels for people; the release
    keeps them, so the app and the exports of that store say "Sektor", not "Sector"."""
    sheet = small_sheet(tmp_path)
    config = sheet.config.read_text(encoding="utf-8").replace(
        "  attributes: [{cardprofile: kartenprofil}]\n",
        "  attributes: [{cardprofile: kartenprofil}]\n  labels: {sector: Sektor, cardprofile: Profil}\n",
    )
    assert "labels:" in config
    sheet.config.write_text(config, encoding="utf-8")
    url = sqlite_url(tmp_path / "kpisheet.db")
    ingest(
        sheet.write("history.csv", history_csv([202609])),
        url,
        definitions=[sheet.definitions],
        entities_source=sheet.products,
        config=sheet.config,
    )
    stored = Store(url).hierarchy(1)
    assert stored is not None and stored.labels == {"sector": "Sektor", "cardprofile": "Profil"}


@pytest.fixture(params=["sqlite", "postgresql"])
def product_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database (SQLite file, or the suite's PostgreSQL) with the warehouse's product view."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path / "warehouse.db")
    else:
        url = request.getfixturevalue("postgres_db")
    products = pd.read_csv(io.StringIO(PRODUCTS))
    engine = create_engine(url)
    with engine.begin() as conn:
        products.to_sql("v_produkt", conn, index=False)
    engine.dispose()
    return url


def test_hierarchy_from_a_product_query(tmp_path: Path, product_database: str) -> None:
    """--entities-source URL --entities-query products.sql gives the same stored hierarchy."""
    sheet = small_sheet(tmp_path)
    history = sheet.write("history.csv", history_csv([202609]))
    query = sheet.write(
        "products.sql",
        "SELECT product_name, mandant, sector, kartenprofil FROM v_produkt "
        "WHERE product_name <> :excluded",
    )
    url = sqlite_url(tmp_path / "kpisheet.db")
    result = CliRunner().invoke(
        main,
        [
            "ingest",
            "--source",
            str(history),
            "--store",
            url,
            "--definitions",
            str(sheet.definitions),
            "--entities-source",
            product_database,
            "--entities-query",
            str(query),
            "--param",
            "excluded=none",
            "--config",
            str(sheet.config),
        ],
    )
    assert result.exit_code == 0, result.stderr
    stored = Store(url).hierarchy()
    assert stored is not None
    assert stored.to_data() == small_sheet_hierarchy().to_data()


def small_sheet_hierarchy() -> Any:
    """The small sheet's hierarchy as its YAML declares it."""
    from kpisheet.hierarchy import parse_hierarchy

    return parse_hierarchy(yaml.safe_load(ENTITIES_YAML), "entities.yaml")


def test_product_moved_between_releases_groups_each_release_its_own_way(tmp_path: Path) -> None:
    """A product that moves to another mandant in release 2 leaves release 1's group figures as
    they were; release 2 groups it under its new mandant, and the diff names the move."""
    sheet = small_sheet(tmp_path)
    url = sqlite_url(tmp_path / "kpisheet.db")
    common = {"definitions": [sheet.definitions], "config": sheet.config}
    first = sheet.write("2026-09.csv", history_csv([202608, 202609]))
    ingest(first, url, entities_source=sheet.products, **common)
    before = kpisheet.open(url, definitions=[sheet.definitions], release=1).query(levels="mandant")
    moved = sheet.write("products-moved.csv", PRODUCTS_MOVED)
    second = sheet.write("2026-10.csv", history_csv([202608, 202609, 202610]))
    said: list[str] = []
    ingest(second, url, entities_source=moved, echo=said.append, **common)
    release_1 = kpisheet.open(url, definitions=[sheet.definitions], release=1)
    release_2 = kpisheet.open(url, definitions=[sheet.definitions])
    pd.testing.assert_frame_equal(release_1.query(levels="mandant"), before)
    assert mandant_turnover(release_1, "2026-09") == {"Alpha": 1009.0 + 109.0, "Beta": 509.0}
    assert mandant_turnover(release_2, "2026-09") == {"Alpha": 1009.0, "Beta": 509.0 + 109.0}
    assert "  moved: 'Alpha Prepaid' mandant Alpha -> Beta" in said
    assert "  moved: 'Alpha Prepaid' sector B2C -> B2B2C" in said
    overridden = kpisheet.open(url, definitions=[sheet.definitions], entities=sheet.entities)
    assert mandant_turnover(overridden, "2026-09") == {"Alpha": 1009.0 + 109.0, "Beta": 509.0}


def test_next_ingest_keeps_the_previous_release_hierarchy(tmp_path: Path) -> None:
    """Without --entities or --entities-source an ingest validates against, and records, the
    previous release's hierarchy (not the demo's)."""
    sheet = small_sheet(tmp_path)
    url = sqlite_url(tmp_path / "kpisheet.db")
    first = sheet.write("a.csv", history_csv([202609]))
    second = sheet.write("b.csv", history_csv([202609, 202610]))
    ingest(
        first,
        url,
        definitions=[sheet.definitions],
        entities_source=sheet.products,
        config=sheet.config,
    )
    ingest(second, url, definitions=[sheet.definitions], config=sheet.config)
    assert Store(url).hierarchy(2).to_data() == Store(url).hierarchy(1).to_data()


def test_product_table_problems_are_all_reported(tmp_path: Path) -> None:
    """A product listed twice with different groups and a product without mandant are reported
    together, naming the lines; nothing is written."""
    sheet = small_sheet(tmp_path)
    products = sheet.write(
        "bad-products.csv", PRODUCTS + "Alpha Gold,Beta,B2B2C,CC\nGamma Card,,B2C,CC\n"
    )
    history = sheet.write("history.csv", history_csv([202609]))
    url = sqlite_url(tmp_path / "kpisheet.db")
    with pytest.raises(
        HierarchyError,
        match=re.escape(
            "bad-products.csv: product 'Alpha Gold' is listed 2 times with different groups "
            "(line 2, line 5)"
        ),
    ):
        ingest(
            history,
            url,
            definitions=[sheet.definitions],
            entities_source=products,
            config=sheet.config,
        )
    fixed = sheet.write("bad-products.csv", PRODUCTS + "Gamma Card,,B2C,CC\n")
    with pytest.raises(
        HierarchyError, match=re.escape("entity 'Gamma Card': missing level attribute 'mandant'")
    ):
        ingest(
            history,
            url,
            definitions=[sheet.definitions],
            entities_source=fixed,
            config=sheet.config,
        )
    assert not (tmp_path / "kpisheet.db").exists() or Store(url).releases() == []


def test_entities_source_needs_the_config_section(tmp_path: Path) -> None:
    """--entities-source without an entities: section in the configuration says what to add."""
    sheet = small_sheet(tmp_path, config="columns: {month: period_value, entity: product_name}\n")
    history = sheet.write("history.csv", history_csv([202609]))
    with pytest.raises(
        IngestConfigError,
        match=re.escape(
            "--entities-source needs an 'entities:' section in the ingest configuration"
        ),
    ):
        ingest(
            history,
            sqlite_url(tmp_path / "kpisheet.db"),
            definitions=[sheet.definitions],
            entities_source=sheet.products,
            config=sheet.config,
        )


def test_overlapping_sources_are_an_error_by_default(tmp_path: Path) -> None:
    """Two history files holding the same month are refused, naming a row and both files."""
    sheet = small_sheet(tmp_path)
    older = sheet.write("history/2026-09.csv", history_csv([202608, 202609]))
    newer = sheet.write("history/2026-10.csv", history_csv([202609, 202610]))
    url = sqlite_url(tmp_path / "kpisheet.db")
    result = CliRunner().invoke(
        main,
        [
            "ingest",
            "--source",
            str(older),
            "--source",
            str(newer),
            "--store",
            url,
            "--definitions",
            str(sheet.definitions),
            "--entities",
            str(sheet.entities),
            "--config",
            str(sheet.config),
        ],
    )
    assert result.exit_code == 1
    assert result.stderr == (
        "1 problem in data 2 sources:\n"
        "  6 (month, kpi, entity) rows are in more than one source: 2026-09 / accounts / "
        f"Alpha Gold in {older} and {newer}; 2026-09 / accounts / Alpha Prepaid in {older} and "
        f"{newer}; 2026-09 / accounts / Beta Classic in {older} and {newer}; 2026-09 / turnover "
        f"/ Alpha Gold in {older} and {newer}; 2026-09 / turnover / Alpha Prepaid in {older} and "
        f"{newer} and 1 more — set overlap: later in the ingest configuration to take the value "
        "of the source listed later\n"
    )
    assert not (tmp_path / "kpisheet.db").exists()


def test_overlap_later_takes_the_later_file_of_a_glob_and_counts_restated(tmp_path: Path) -> None:
    """With overlap: later, a glob's files load in name order into one release; the later file's
    values win and the report counts the values it restated, per month."""
    sheet = small_sheet(tmp_path, config=CONFIG + "overlap: later\n")
    sheet.write("history/2026-08.csv", history_csv([202607, 202608]))
    sheet.write(
        "history/2026-09.csv",
        history_csv([202608, 202609], changed={(202608, "turnover", "Beta Classic"): 999.0}),
    )
    sheet.write(
        "history/2026-10.csv",
        history_csv(
            [202609, 202610],
            changed={
                (202609, "turnover", "Alpha Gold"): 5.0,
                (202609, "accounts", "Alpha Gold"): 7.0,
            },
        ),
    )
    url = sqlite_url(tmp_path / "kpisheet.db")
    said: list[str] = []
    info = ingest(
        str(tmp_path / "history" / "*.csv"),
        url,
        definitions=[sheet.definitions],
        entities=sheet.entities,
        config=sheet.config,
        echo=said.append,
    )
    assert said == [
        "overlap: 12 (month, kpi, entity) values are in more than one source; the later "
        "source's value is taken; 3 of them restated (2026-08: 1, 2026-09: 2)"
    ]
    assert (info.row_count, info.newest_month) == (24, "2026-10")
    assert info.source.count(" + ") == 2 and info.source.endswith("2026-10.csv")
    _, read = Store(url).read()
    values = read.set_index(["month", "kpi", "entity"])["value"]
    assert values[(pd.Period("2026-08", "M"), "turnover", "Beta Classic")] == 999.0
    assert values[(pd.Period("2026-09", "M"), "turnover", "Alpha Gold")] == 5.0
    assert values[(pd.Period("2026-07", "M"), "turnover", "Alpha Gold")] == value(
        202607, "turnover", "Alpha Gold"
    )


def test_glob_matching_nothing_is_an_error(tmp_path: Path) -> None:
    """A --source pattern that matches no file is reported, not taken as an empty source."""
    with pytest.raises(DataError, match=re.escape("no file matches this pattern")):
        ingest(str(tmp_path / "history" / "*.csv"), sqlite_url(tmp_path / "kpisheet.db"))


def test_decimal_commas_read_alike_by_open_validate_and_ingest(tmp_path: Path) -> None:
    """A semicolon CSV with decimal commas, as German-language Excel writes it, reads 1234,5 as
    1234.5 through kpisheet.open, kpisheet validate --data and kpisheet ingest."""
    sheet = small_sheet(tmp_path)
    canonical = sheet.write(
        "excel-canonical.csv",
        "month;kpi;entity;value\n2026-09;turnover;Alpha Gold;1234,5\n"
        "2026-09;turnover;Beta Classic;-0,25\n",
    )
    upstream_file = sheet.write(
        "excel-upstream.csv",
        "period_value;kpi_name;product_name;value\n202609;Umsatz Total;Alpha Gold;1234,5\n"
        "202609;Umsatz Total;Beta Classic;-0,25\n",
    )
    options = ["--definitions", str(sheet.definitions), "--entities", str(sheet.entities)]
    opened = kpisheet.open(canonical, definitions=[sheet.definitions], entities=sheet.entities)
    assert sorted(opened.observations["value"]) == [-0.25, 1234.5]
    checked = CliRunner().invoke(main, ["validate", *options, "--data", str(canonical)])
    assert checked.exit_code == 0, checked.stderr
    assert "OK: 2 observations, months 2026-09 to 2026-09." in checked.stdout
    for source, config in ((canonical, []), (upstream_file, ["--config", str(sheet.config)])):
        url = sqlite_url(tmp_path / f"{source.stem}.db")
        result = CliRunner().invoke(
            main, ["ingest", "--source", str(source), "--store", url, *options, *config]
        )
        assert result.exit_code == 0, result.stderr
        assert sorted(Store(url).read()[1]["value"]) == [-0.25, 1234.5]


def test_the_decimal_comma_flag_travels_in_the_raw_table_through_the_mapping(
    tmp_path: Path,
) -> None:
    """Reading a semicolon CSV records its decimal commas on the RawTable (not in
    DataFrame.attrs), and mapping upstream names keeps the flag for validation."""
    sheet = small_sheet(tmp_path)
    source = sheet.write(
        "excel.csv",
        "period_value;kpi_name;product_name;value\n202609;Umsatz Total;Alpha Gold;1234,5\n",
    )
    table = read_file(source)
    assert table.decimal_comma is True
    assert table.frame.attrs == {}
    registry = load_kpis(definitions=[sheet.definitions])
    mapped, report = to_observations(table, registry, load_ingest_config(sheet.config))
    assert list(report) == []
    assert mapped.decimal_comma is True
    assert mapped.frame.attrs == {}
    assert list(mapped.frame["value"]) == ["1234,5"]


def test_store_given_as_a_sqlite_file_path(tmp_path: Path) -> None:
    """A store named by its file path (kpisheet.db) is recognised by its SQLite header in
    kpisheet.open, --data, --store and releases, whatever the file is called."""
    sheet = small_sheet(tmp_path)
    history = sheet.write("history.csv", history_csv([202609]))
    store_file = tmp_path / "kpisheet.db"
    options = ["--definitions", str(sheet.definitions)]
    runner = CliRunner()
    written = runner.invoke(
        main,
        [
            "ingest",
            "--source",
            str(history),
            "--store",
            str(store_file),
            "--entities",
            str(sheet.entities),
            *options,
            "--config",
            str(sheet.config),
        ],
    )
    assert written.exit_code == 0, written.stderr
    assert written.stdout == f"release 1 written to {store_file}: 6 rows, newest month 2026-09\n"
    renamed = tmp_path / "kpis.data"
    store_file.rename(renamed)
    opened = kpisheet.open(str(renamed), definitions=[sheet.definitions])
    assert opened.release.id == 1 and opened.hierarchy.total == "Test AG"
    queried = runner.invoke(main, ["query", "--data", str(renamed), *options, "--level", "total"])
    assert queried.exit_code == 0, queried.stderr
    assert queried.stdout.splitlines()[1].startswith("2026-09,1M,total,Test AG,turnover,1627.0,")
    listed = runner.invoke(main, ["releases", "--store", str(renamed)])
    assert listed.exit_code == 0 and listed.stdout.splitlines()[2].startswith("1 ")


def test_combined_source_matches_every_key_the_source_has(tmp_path: Path) -> None:
    """A source: naming kpi_name, kpi_id and period_id takes from an extract only the rows with
    all three (other periods stay unmapped), and from a file with names only the named rows."""
    definitions = write(
        tmp_path / "kpis.yaml",
        ID_KPIS.replace(
            "source: {kpi_id: 17, period_id: 1}",
            'source: {kpi_name: "Umsatz", kpi_id: 17, period_id: 1}',
        ),
    )
    entities = write(tmp_path / "entities.yaml", ID_ENTITIES)
    extract = write(
        tmp_path / "extract.csv",
        "month,entity,kpi_name,kpi_id,period_id,value\n"
        "2024-01,Alpha Gold,Umsatz,17,1,10\n"
        "2024-01,Alpha Gold,Umsatz,17,3,99\n"
        "2024-01,Beta Classic,Umsatz,18,1,77\n",
    )
    with pytest.raises(
        DataError,
        match=re.escape(
            "2 rows with upstream KPIs that no definition's source: claims: 'Umsatz / 17 / 3' "
            "(1 row), 'Umsatz / 18 / 1' (1 row)"
        ),
    ):
        ingest(extract, sqlite_url(tmp_path / "a.db"), definitions=[definitions], entities=entities)
    names_only = write(
        tmp_path / "names.csv",
        "month,entity,kpi_name,value\n2024-01,Alpha Gold,Umsatz,10\n",
    )
    url = sqlite_url(tmp_path / "b.db")
    ingest(names_only, url, definitions=[definitions], entities=entities)
    read = Store(url).read()[1]
    assert list(read["kpi"].astype(str)) == ["turnover"] and list(read["value"]) == [10.0]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_ingest_killed_while_reading_leaves_nothing_in_the_temp_directory(
    tmp_path: Path, big_csv: Path
) -> None:
    """An ingest killed while it reads its source leaves no copy of the data behind: it makes none."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    url = sqlite_url(tmp_path / "kpisheet.db")
    process = subprocess.Popen(
        [KPISHEET, "ingest", "--source", str(big_csv), "--store", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    wait_until(lambda: has_open(process.pid, big_csv) or process.poll() is not None)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert list(scratch.iterdir()) == []
    assert not (tmp_path / "kpisheet.db").exists()
