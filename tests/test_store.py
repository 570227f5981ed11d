"""Tests of the store: releases written atomically and read back exactly, on SQLite and PostgreSQL,
with the SQL compiled for SQL Server, and faults: killed writers, concurrent readers and writers."""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine, func, inspect, select, text, update
from sqlalchemy.dialects import mssql
from sqlalchemy.engine import make_url
from sqlalchemy.schema import CreateTable

import kpisheet
import kpisheet.store.bulk
import kpisheet.store.snapshot
from kpisheet.cli import main
from kpisheet.demo import demo_store_url
from kpisheet.errors import ChecksumError, SnapshotError, StoreError
from kpisheet.hierarchy import load_hierarchy
from kpisheet.store import (
    SCHEMA_VERSION,
    EncodedObservations,
    ReleaseInfo,
    Store,
    display_url,
    driver_statement,
    entities_table,
    hierarchies_table,
    insert_observations,
    insert_release,
    is_store_url,
    kpis_table,
    lock_writers,
    metadata,
    observations_checksum,
    observations_table,
    schema_table,
    select_labels,
    select_newest_id,
    select_observations,
    select_releases,
    snapshots_table,
    sqlite_url,
    warnings_table,
)

# Builds a synthetic release in a separate process and writes it; prints "writing" first.
WRITER = """
import sys
import numpy as np
import pandas as pd
from kpisheet.store import Store, observations_checksum

url, entities, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
months = pd.period_range("2020-01", periods=60, freq="M")
m, k, e = np.meshgrid(np.arange(60), np.arange(10), np.arange(entities), indexing="ij")
frame = pd.DataFrame({
    "month": months[m.ravel()],
    "kpi": np.char.add("kpi_", k.ravel().astype(str)),
    "entity": np.char.add("entity ", e.ravel().astype(str)),
    "value": np.random.default_rng(seed).normal(size=m.size),
})
print("writing", flush=True)
info = Store(url).write_release(frame, source=f"writer {seed}", progress=False)
print(info.id, info.checksum == observations_checksum(frame), flush=True)
"""

# Rows of the big release the fault tests write (60 months x 10 KPIs x entities).
BIG_ENTITIES = 1500
WRITER_APP = "kpisheet-test-writer"


def observations(entities: int = 3, months: int = 4, seed: int = 0) -> pd.DataFrame:
    """A small canonical frame with a missing value, an umlaut and exact doubles."""
    periods = pd.period_range("2023-11", periods=months, freq="M")
    m, k, e = np.meshgrid(np.arange(months), np.arange(2), np.arange(entities), indexing="ij")
    values = np.random.default_rng(seed).normal(scale=1e6, size=m.size)
    values[1] = np.nan
    values[2] = 0.1 + 0.2
    return pd.DataFrame(
        {
            "month": pd.Series(periods[m.ravel()]),
            "kpi": np.where(k.ravel() == 0, "turnover", "valid_accounts"),
            "entity": [f"Zürich Karte {i}" for i in e.ravel()],
            "value": values,
        }
    )


def assert_same_observations(read: pd.DataFrame, written: pd.DataFrame) -> None:
    """Equal as sets of rows: months, KPI ids, entities and values bit for bit (NaN = NaN)."""
    key = ["month", "kpi", "entity"]
    left = read.astype({"kpi": str, "entity": str}).sort_values(key).reset_index(drop=True)
    right = written.astype({"kpi": str, "entity": str}).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(left, right, check_exact=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of a new, empty store on SQLite and on a real PostgreSQL server."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "store.db")
    return request.getfixturevalue("postgres_db")


def test_write_then_read_gives_the_same_observations(store_url: str) -> None:
    """A release reads back exactly as written, with its metadata, and as the newest."""
    written = observations()
    before = datetime.now(UTC).replace(microsecond=0)
    with Store(store_url) as store:
        info = store.write_release(written, source="monthly.csv", note="first load")
        read_info, read = store.read()
    assert info == read_info
    assert (info.id, info.row_count, info.newest_month) == (1, len(written), "2024-02")
    assert (info.source, info.note) == ("monthly.csv", "first load")
    assert before <= info.created_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert info.created_at.tzinfo is not None
    assert list(read.columns) == ["month", "kpi", "entity", "value"]
    assert read["month"].dtype == pd.PeriodDtype("M")
    assert read["value"].dtype == np.float64
    assert_same_observations(read, written)
    assert observations_checksum(read) == info.checksum == observations_checksum(written)


def test_second_release_is_newest_and_first_stays_readable(store_url: str) -> None:
    """Releases count up from 1; the newest is read by default, an older one by its id."""
    first, second = observations(seed=1), observations(entities=5, seed=2)
    with Store(store_url) as store:
        store.write_release(first, source="a")
        info = store.write_release(second, source="b")
        assert info.id == 2
        assert [r.id for r in store.releases()] == [1, 2]
        assert store.latest() == info
        assert_same_observations(store.read()[1], second)
        old_info, old = store.read(1)
    assert old_info.id == 1
    assert_same_observations(old, first)


def test_unknown_release_names_the_existing_ones(tmp_path: Path) -> None:
    """Asking for a release that does not exist names the store and lists the releases."""
    url = sqlite_url(tmp_path / "store.db")
    with Store(url) as store:
        store.write_release(observations(), source="a")
        store.write_release(observations(), source="b")
        with pytest.raises(
            StoreError,
            match=re.escape(f"release 7 does not exist in store {url}; releases: 1, 2"),
        ):
            store.read(7)


def test_empty_store_has_no_releases(postgres_db: str) -> None:
    """A database without kpisheet tables is an empty store: no releases, and read says so."""
    store = Store(postgres_db)
    assert store.releases() == []
    assert store.latest() is None
    with pytest.raises(
        StoreError,
        match=re.escape(
            f"store {display_url(postgres_db)} has no releases yet; `kpisheet ingest` writes the first"
        ),
    ):
        store.read()


def test_reading_a_missing_sqlite_file_does_not_create_it(tmp_path: Path) -> None:
    """A mistyped SQLite path is an error on reading, not a new empty database."""
    path = tmp_path / "typo.db"
    url = sqlite_url(path)
    with pytest.raises(StoreError, match=re.escape(f"no store at {path}: the file does not exist")):
        Store(url).releases()
    assert not path.exists()


def test_tables_and_schema_version_created_on_first_write(tmp_path: Path) -> None:
    """The first write creates the eight tables and records the schema version."""
    url = sqlite_url(tmp_path / "store.db")
    Store(url).write_release(observations(), source="a")
    engine = create_engine(url)
    with engine.connect() as conn:
        tables = set(
            conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'")).scalars()
        )
        version = conn.execute(select(schema_table.c.version)).scalar_one()
    engine.dispose()
    assert tables == {
        "kpisheet_schema",
        "kpisheet_releases",
        "kpisheet_kpis",
        "kpisheet_entities",
        "kpisheet_observations",
        "kpisheet_hierarchies",
        "kpisheet_warnings",
        "kpisheet_snapshots",
    }
    assert version == SCHEMA_VERSION


def test_store_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """A store written by a newer kpisheet is refused rather than misread."""
    url = sqlite_url(tmp_path / "store.db")
    Store(url).write_release(observations(), source="a")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(update(schema_table).values(version=SCHEMA_VERSION + 1))
    engine.dispose()
    with pytest.raises(
        StoreError,
        match=re.escape(
            f"store {url} has schema version {SCHEMA_VERSION + 1}, newer than this kpisheet "
            f"supports ({SCHEMA_VERSION}); upgrade kpisheet"
        ),
    ):
        Store(url).read()


def test_store_of_a_development_schema_is_refused(tmp_path: Path) -> None:
    """A store of schema 1 (before the first release) is refused for reading and writing."""
    url = sqlite_url(tmp_path / "store.db")
    Store(url).write_release(observations(), source="a")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(update(schema_table).values(version=1))
    engine.dispose()
    message = (
        f"store {url} has schema version 1, written by an earlier development "
        f"version of kpisheet, which this kpisheet ({SCHEMA_VERSION}) no longer reads; ingest "
        "the data into a new store"
    )
    with pytest.raises(StoreError, match=re.escape(message)):
        Store(url).read()
    with pytest.raises(StoreError, match=re.escape(message)):
        Store(url).write_release(observations(), source="b")


def test_failed_write_leaves_no_trace(store_url: str) -> None:
    """A write that fails halfway (a duplicate key in a late chunk) leaves the store as it was."""
    with Store(store_url) as store:
        first = store.write_release(observations(), source="a")
        bad = pd.concat([observations(entities=2000), observations(entities=1)], ignore_index=True)
        with pytest.raises(StoreError, match=re.escape(f"cannot write to store {store.url}: ")):
            store.write_release(bad, source="bad")
        assert store.releases() == [first]
    engine = create_engine(store_url)
    with engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(observations_table)).scalar_one()
    engine.dispose()
    assert rows == first.row_count


def test_big_release_written_in_chunks_reads_back_exactly(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows shuffled, chunks and INSERT statements cut mid-month: read back whole, in key order."""
    monkeypatch.setattr(kpisheet.store.bulk, "CHUNK_ROWS", 7)
    monkeypatch.setattr(kpisheet.store.bulk, "SQLITE_ROWS_PER_INSERT", 3)
    written = observations(entities=11, months=5, seed=4).sample(frac=1, random_state=1)
    written.loc[written.index[::9], "value"] = np.nan
    with Store(store_url) as store:
        info = store.write_release(written, source="shuffled")
        read_info, read = store.read()
    assert info == read_info
    assert info.row_count == len(read) == 5 * 2 * 11
    assert_same_observations(read, written)
    key = read.astype({"kpi": str, "entity": str})[["month", "kpi", "entity"]]
    assert key.equals(key.sort_values(["month", "kpi", "entity"]).reset_index(drop=True))
    assert read["value"].isna().sum() == written["value"].isna().sum()


def test_observation_rows_name_kpis_and_entities_by_codes(store_url: str) -> None:
    """Each release numbers its KPIs and entities in sorted order; the rows join back to them."""
    first, second = observations(entities=2, seed=5), observations(entities=3, seed=6)
    with Store(store_url) as store:
        store.write_release(first, source="a")
        store.write_release(second, source="b")
    engine = create_engine(store_url)
    with engine.connect() as conn:
        labels = {
            table.name: conn.execute(select_labels(table, 2)).all()
            for table in (kpis_table, entities_table)
        }
        table = observations_table
        rows = conn.execute(
            select(table.c.month, kpis_table.c.kpi, entities_table.c.entity, table.c.value)
            .join(
                kpis_table,
                (kpis_table.c.release_id == table.c.release_id)
                & (kpis_table.c.code == table.c.kpi_code),
            )
            .join(
                entities_table,
                (entities_table.c.release_id == table.c.release_id)
                & (entities_table.c.code == table.c.entity_code),
            )
            .where(table.c.release_id == 2)
        ).all()
    engine.dispose()
    assert labels["kpisheet_kpis"] == [(0, "turnover"), (1, "valid_accounts")]
    assert labels["kpisheet_entities"] == [(i, f"Zürich Karte {i}") for i in range(3)]
    joined = pd.DataFrame(rows, columns=["month", "kpi", "entity", "value"])
    joined["month"] = pd.PeriodIndex(
        [f"{m // 100}-{m % 100:02d}" for m in joined["month"]], freq="M"
    )
    joined["value"] = joined["value"].astype(float)
    assert_same_observations(joined, second)


def test_release_missing_rows_is_an_error_not_a_short_read(tmp_path: Path) -> None:
    """Rows deleted behind kpisheet's back make reading a release without a snapshot (read row
    by row) fail, not return less."""
    url = sqlite_url(tmp_path / "store.db")
    info = Store(url).write_release(observations(), source="a")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM kpisheet_snapshots"))
        conn.execute(text("DELETE FROM kpisheet_observations WHERE entity_code = 1"))
    engine.dispose()
    with pytest.raises(
        StoreError,
        match=re.escape(
            f"store {url}: release 1 does not hold the {info.row_count:,} rows its record says; "
            "the store was changed outside kpisheet"
        ),
    ):
        Store(url).read()


def reference_checksum(frame: pd.DataFrame) -> str:
    """The checksum as its docstring defines it, computed the plain way on the whole frame."""
    months = pd.PeriodIndex(frame["month"], freq="M")
    table = pd.DataFrame(
        {
            "month": (months.year * 100 + months.month).to_numpy(dtype="int64"),
            "kpi": [str(k) for k in frame["kpi"]],
            "entity": [str(e) for e in frame["entity"]],
            "value": frame["value"].to_numpy(dtype=float),
        }
    ).sort_values(["month", "kpi", "entity"], kind="stable")
    digest = hashlib.sha256(table["month"].to_numpy(dtype="<i8").tobytes())
    for column in ("kpi", "entity"):
        digest.update("\x00".join(table[column]).encode("utf-8"))
    values = table["value"].to_numpy(dtype="<f8")
    digest.update(np.where(np.isnan(values), np.nan, values).astype("<f8").tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("chunk_rows", [5, 200_000])
def test_checksum_is_the_documented_hash_in_any_row_order_and_column_type(
    chunk_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checksum equals a plain reference, whatever the row order, text type and chunk size."""
    monkeypatch.setattr(kpisheet.store.bulk, "CHUNK_ROWS", chunk_rows)
    frame = observations(entities=4, months=3, seed=8)
    frame.loc[5, "entity"] = "Äpfel Karte"  # sorts after every "Z..." entity by code point
    expected = reference_checksum(frame)
    shuffled = frame.sample(frac=1, random_state=3)
    categorical = frame.astype({"kpi": "category", "entity": "category"})
    assert observations_checksum(frame) == expected
    assert observations_checksum(shuffled) == expected
    assert observations_checksum(categorical) == expected
    changed = frame.copy()
    changed.loc[0, "value"] += 1e-9
    assert observations_checksum(changed) != expected


@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 3),
            st.sampled_from(["b", "a", "Ä", "c d"]),
            st.sampled_from(["Z", "y", "x1", "Äpfel"]),
        ),
        min_size=1,
        max_size=30,
        unique=True,
    ),
    unused=st.lists(st.sampled_from(["q", "0", "zz"]), unique=True, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_categorical_columns_are_encoded_as_their_texts(
    rows: list[tuple[int, str, str]], unused: list[str], seed: int
) -> None:
    """KPI and entity columns as categoricals (as ingest hands them to the store, with their
    categories in any order, and some no row uses) are encoded exactly as the same texts."""
    months, kpis, entities = zip(*rows, strict=True)
    text = pd.DataFrame(
        {
            "month": pd.PeriodIndex([f"2024-{m + 1:02d}" for m in months], freq="M"),
            "kpi": list(kpis),
            "entity": list(entities),
            "value": np.random.default_rng(seed).normal(size=len(rows)),
        }
    )
    rng = np.random.default_rng(seed)
    categorical = text.copy()
    for column in ("kpi", "entity"):
        categories = list(rng.permutation(sorted(set(text[column]) | set(unused))))
        categorical[column] = pd.Categorical(text[column], categories=categories)
    expected = EncodedObservations.from_frame(text)
    encoded = EncodedObservations.from_frame(categorical)
    for field in ("months", "kpi_codes", "entity_codes", "values", "kpis", "entities"):
        np.testing.assert_array_equal(getattr(encoded, field), getattr(expected, field), field)
    assert encoded.checksum() == expected.checksum() == reference_checksum(text)


def test_empty_release_is_refused(tmp_path: Path) -> None:
    """Writing no observations is refused: a release always holds data."""
    url = sqlite_url(tmp_path / "store.db")
    with pytest.raises(
        StoreError, match=re.escape(f"refusing to write an empty release to store {url}")
    ):
        Store(url).write_release(observations().iloc[:0], source="a")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sqlite:///kpisheet.db", True),
        ("sqlite:////abs/path/kpisheet.db", True),
        ("postgresql+psycopg://etl:secret@warehouse:5432/dwh", True),
        ("mssql+pyodbc://etl@KPI_DSN", True),
        ("kpisheet.db", False),
        ("data/observations.csv", False),
        ("C://data/observations.csv", False),
        ("https://example.org/data.csv", False),
        ("", False),
    ],
)
def test_is_store_url(text: str, expected: bool) -> None:
    """SQLAlchemy URLs are recognised; paths, drive letters and web addresses are not."""
    assert is_store_url(text) is expected


def test_passwords_are_never_shown_or_recorded() -> None:
    """The store's URL as shown (messages, releases) hides the password."""
    store = Store("postgresql+psycopg://etl:s3cret@warehouse/dwh")
    assert store.url == "postgresql+psycopg://etl:***@warehouse/dwh"
    assert "s3cret" not in repr(store)


def test_not_a_url_is_refused(tmp_path: Path) -> None:
    """A path that is no SQLite file (by its header) and no new .db file says what a store is."""
    path = tmp_path / "kpis.csv"
    path.write_text("month,kpi,entity,value\n", encoding="utf-8")
    with pytest.raises(
        StoreError,
        match=re.escape(
            f"'{path}' is neither a database URL nor a SQLite file; expected e.g. "
            "sqlite:///kpisheet.db, kpisheet.db, postgresql"
        ),
    ):
        Store(str(path))


@pytest.mark.skipif(importlib.util.find_spec("pyodbc") is not None, reason="pyodbc is installed")
def test_missing_driver_says_what_to_install() -> None:
    """A SQL Server store without pyodbc installed names the extra to install."""
    with pytest.raises(
        StoreError,
        match=re.escape(
            "cannot open store mssql+pyodbc://etl:***@KPI_DSN: the database driver is not installed "
            "(No module named 'pyodbc'); for PostgreSQL use postgresql+psycopg:// and "
            "`pip install kpisheet[postgres]`, for SQL Server `pip install kpisheet[mssql]`"
        ),
    ):
        Store("mssql+pyodbc://etl:pw@KPI_DSN").releases()


def test_store_sql_compiles_for_sql_server() -> None:
    """The tables and every statement the store runs compile for SQL Server (mssql+pyodbc)."""
    dialect = mssql.dialect(paramstyle="qmark")
    ddl = {
        table.name: str(CreateTable(table).compile(dialect=dialect))
        for table in metadata.sorted_tables
    }
    assert "entity_code INTEGER NOT NULL" in ddl["kpisheet_observations"]
    assert "value DOUBLE PRECISION NULL" in ddl["kpisheet_observations"]
    assert (
        "CONSTRAINT pk_kpisheet_observations PRIMARY KEY (release_id, month, kpi_code, entity_code)"
        in ddl["kpisheet_observations"]
    )
    assert "WITHOUT ROWID" not in ddl["kpisheet_observations"]
    assert "entity NVARCHAR(200) NOT NULL" in ddl["kpisheet_entities"]
    assert "CONSTRAINT uq_kpisheet_kpis UNIQUE (release_id, kpi)" in ddl["kpisheet_kpis"]
    assert "created_at DATETIME NOT NULL" in ddl["kpisheet_releases"]
    lock = str(lock_writers().compile(dialect=dialect))
    assert "FROM kpisheet_schema WITH (UPDLOCK, HOLDLOCK)" in lock
    for statement in (select_releases(), select_newest_id(), insert_release()):
        assert str(statement.compile(dialect=dialect))
    sql, order = driver_statement(insert_observations(), dialect)
    assert sql == (
        "INSERT INTO kpisheet_observations (release_id, month, kpi_code, entity_code, value) "
        "VALUES (?, ?, ?, ?, ?)"
    )
    assert order == ("release_id", "month", "kpi_code", "entity_code", "value")
    sql, order = driver_statement(select_observations(3), dialect)
    assert sql.endswith(
        "WHERE kpisheet_observations.release_id = ? ORDER BY kpisheet_observations.month, "
        "kpisheet_observations.kpi_code, kpisheet_observations.entity_code"
    )
    assert order == ("release_id_1",)
    sql, order = driver_statement(select_labels(entities_table, 3), dialect)
    assert " ".join(sql.split()) == (
        "SELECT kpisheet_entities.code, kpisheet_entities.entity FROM kpisheet_entities "
        "WHERE kpisheet_entities.release_id = ? ORDER BY kpisheet_entities.code"
    )
    # PostgreSQL (psycopg) takes named parameters; its rows go by COPY.
    sql, order = driver_statement(
        insert_observations(), make_url("postgresql+psycopg://").get_dialect()()
    )
    assert "VALUES (%(release_id)s::INTEGER, %(month)s::INTEGER, %(kpi_code)s::INTEGER" in sql
    assert order is None


def test_sqlite_observations_live_in_the_primary_key() -> None:
    """On SQLite the observations table is WITHOUT ROWID: one B-tree to write, not two."""
    ddl = str(
        CreateTable(observations_table).compile(dialect=make_url("sqlite://").get_dialect()())
    )
    assert ddl.rstrip().endswith("WITHOUT ROWID")


# -- faults ------------------------------------------------------------------------------------


def start_writer(url: str, entities: int = BIG_ENTITIES, seed: int = 7) -> subprocess.Popen[str]:
    """A process that writes a big release to the store; its first line is "writing"."""
    if url.startswith("postgresql"):
        url = (
            make_url(url)
            .update_query_dict({"application_name": WRITER_APP})
            .render_as_string(hide_password=False)
        )
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, url, str(entities), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "writing", process.stderr.read()
    return process


def writer_probe(url: str) -> Callable[[], bool]:
    """A function telling whether some writer is inside its write transaction right now."""
    if url.startswith("sqlite"):
        path = make_url(url).database

        def sqlite_writing() -> bool:
            conn = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
                return False
            except sqlite3.OperationalError as exc:
                assert "locked" in str(exc)
                return True
            finally:
                conn.close()

        return sqlite_writing
    engine = create_engine(url)
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = :app "
        "AND xact_start IS NOT NULL AND (query LIKE 'INSERT INTO kpisheet_observations%' "
        "OR query LIKE 'COPY kpisheet_observations%')"
    )

    def postgres_writing() -> bool:
        with engine.connect() as conn:
            return conn.execute(query, {"app": WRITER_APP}).scalar_one() > 0

    return postgres_writing


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.slow
def test_writer_killed_mid_write_leaves_previous_release_newest(store_url: str) -> None:
    """SIGKILL during a write leaves the store readable, the previous release newest, ids intact."""
    store = Store(store_url)
    first = store.write_release(observations(), source="first")
    writing = writer_probe(store_url)
    writer = start_writer(store_url)
    wait_for(writing)
    time.sleep(0.3)
    assert writing(), "the writer finished before it could be killed; make its release bigger"
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    wait_for(lambda: not writing())
    assert store.releases() == [first]
    info, read = store.read()
    assert info == first
    assert observations_checksum(read) == first.checksum
    assert store.write_release(observations(seed=3), source="after").id == 2


@pytest.mark.slow
def test_concurrent_reader_never_sees_a_partial_release(store_url: str) -> None:
    """While a big release is written, readers get the previous release whole, then the new one."""
    store = Store(store_url)
    first = store.write_release(observations(), source="first")
    writing = writer_probe(store_url)
    writer = start_writer(store_url)
    reads_inside_write = 0
    while writer.poll() is None:
        inside = writing()
        info, read = store.read()
        reads_inside_write += inside and writing()
        assert info == first or info.id == 2
        assert len(read) == info.row_count
        assert observations_checksum(read) == info.checksum
    out, err = writer.communicate()
    assert writer.returncode == 0, err
    assert out.split() == ["2", "True"]
    assert reads_inside_write > 0, "no read happened during the write"
    info, read = store.read()
    assert (info.id, len(read)) == (2, 60 * 10 * BIG_ENTITIES)
    assert observations_checksum(read) == info.checksum


@pytest.mark.slow
def test_concurrent_writers_take_turns(store_url: str) -> None:
    """Two writers at once, on a store not created yet, both commit: releases 1 and 2, each whole."""
    writers = [start_writer(store_url, entities=60, seed=seed) for seed in (1, 2)]
    outputs = [writer.communicate(timeout=120) for writer in writers]
    assert [w.returncode for w in writers] == [0, 0], [err for _, err in outputs]
    assert sorted(out.split()[0] for out, _ in outputs) == ["1", "2"]
    assert all(out.split()[1] == "True" for out, _ in outputs)
    with Store(store_url) as store:
        infos = store.releases()
        assert sorted(info.source for info in infos) == ["writer 1", "writer 2"]
        for info in infos:
            assert observations_checksum(store.read(info.id)[1]) == info.checksum


# -- snapshots ---------------------------------------------------------------------------------


def stored_snapshot(url: str, release: int) -> tuple[list[tuple[int, int, str, bytes]], pa.Table]:
    """A release's snapshot parts as stored (part, rows, digest, bytes), and their columns
    decoded with pyarrow alone."""
    engine = create_engine(url)
    with engine.connect() as conn:
        parts = [
            (row.part, row.row_count, row.digest, bytes(row.data))
            for row in conn.execute(
                select(snapshots_table)
                .where(snapshots_table.c.release_id == release)
                .order_by(snapshots_table.c.part)
            )
        ]
    engine.dispose()
    tables = [pa.ipc.open_stream(pa.py_buffer(data)).read_all() for *_, data in parts]
    return parts, pa.concat_tables(tables)


def stored_rows(url: str, release: int) -> pd.DataFrame:
    """A release's observation rows as stored, in key order, read with plain SQL."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(observations_table)
            .where(observations_table.c.release_id == release)
            .order_by(*observations_table.primary_key.columns)
        ).all()
    engine.dispose()
    return pd.DataFrame(rows, columns=list(observations_table.c.keys())).drop(columns="release_id")


def test_snapshot_and_rows_agree_part_by_part(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot holds the release's rows once more, value for value and in key order, in
    parts of at most SNAPSHOT_PART_ROWS rows, each with the SHA-256 of its bytes."""
    monkeypatch.setattr(kpisheet.store.snapshot, "SNAPSHOT_PART_ROWS", 7)
    written = observations(entities=5, months=3, seed=3).sample(frac=1, random_state=2)
    written.loc[written.index[::4], "value"] = np.nan
    with Store(store_url) as store:
        info = store.write_release(written, source="a")
        _, read = store.read(verify=True)
    parts, snapshot = stored_snapshot(store_url, info.id)
    assert [(part, rows) for part, rows, _, _ in parts] == [(i, 7) for i in range(1, 5)] + [(5, 2)]
    assert [digest for _, _, digest, _ in parts] == [
        hashlib.sha256(data).hexdigest() for *_, data in parts
    ]
    rows = stored_rows(store_url, info.id)
    assert (
        snapshot.column_names == list(rows.columns) == ["month", "kpi_code", "entity_code", "value"]
    )
    for name in rows.columns:
        np.testing.assert_array_equal(snapshot.column(name).to_numpy(), rows[name].to_numpy())
    assert rows["value"].isna().sum() == written["value"].isna().sum() > 0
    assert_same_observations(read, written)


def test_corrupted_snapshot_is_refused_by_read_open_and_verify(tmp_path: Path) -> None:
    """A snapshot whose bytes were changed is refused with a message by every read, named by
    verify, and built again from the release's rows by `store upgrade`."""
    path = tmp_path / "store.db"
    url = sqlite_url(path)
    written = observations(seed=2)
    entities = tmp_path / "entities.yaml"
    entities.write_text(ZURICH_ENTITIES, encoding="utf-8")
    hierarchy = load_hierarchy(entities)
    with Store(url) as store:
        first = store.write_release(observations(seed=1), source="a", hierarchy=hierarchy)
        second = store.write_release(written, source="b", hierarchy=hierarchy)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        (data,) = conn.execute(
            "SELECT data FROM kpisheet_snapshots WHERE release_id = 2"
        ).fetchone()
        flipped = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
        conn.execute("UPDATE kpisheet_snapshots SET data = ? WHERE release_id = 2", (flipped,))
    message = (
        f"store {url}: release 2 does not match its checksum: its snapshot was changed outside "
        "kpisheet (part 1 of 1 does not match the digest written with it); do not use it — "
        f"`kpisheet store upgrade --store {url}` builds it again from the release's rows if they "
        "still match its checksum, `kpisheet releases verify` checks both"
    )
    with Store(url) as store:
        with pytest.raises(SnapshotError, match=re.escape(message)) as raised:
            store.read()
        assert isinstance(raised.value, ChecksumError)  # refused as a changed release
        assert (raised.value.release, raised.value.stored) == (2, second.checksum)
        assert store.read(1)[0] == first
        checks = store.verify()
    with pytest.raises(SnapshotError, match=re.escape(message)):
        kpisheet.open(url)
    assert [(c.ok, c.rows_ok, c.snapshot_ok) for c in checks] == [
        (True, True, True),
        (False, True, False),
    ]
    assert str(checks[1]) == f"release 2 (24 rows): CHANGED — {message}"
    verified = CliRunner().invoke(main, ["releases", "verify", "--store", url])
    assert verified.exit_code == 1
    assert verified.stderr == (
        f"1 release of {url} changed since written:\n  release 2 (24 rows): CHANGED — {message}\n"
    )
    upgraded = CliRunner().invoke(main, ["store", "upgrade", "--store", url])
    assert (upgraded.exit_code, upgraded.stdout) == (
        0,
        "built again the snapshots of releases 2, changed outside kpisheet\n",
    )
    with Store(url) as store:
        info, read = store.read(verify=True)
        assert [check.ok for check in store.verify()] == [True, True]
    assert info == second
    assert_same_observations(read, written)


def test_snapshot_naming_an_unknown_entity_is_refused(tmp_path: Path) -> None:
    """A snapshot rewritten with a matching digest but a code no entity of the release has is
    refused with a message, not read as a wrong or missing product."""
    url = sqlite_url(tmp_path / "store.db")
    with Store(url) as store:
        info = store.write_release(observations(), source="a")

    def unknown_entity(codes: np.ndarray) -> None:
        codes[0] = 3  # the release has entities 0, 1 and 2

    rewrite_snapshot(url, info.id, "entity_code", unknown_entity)
    with pytest.raises(
        SnapshotError,
        match=re.escape(
            f"store {url}: release 1 does not match its checksum: its snapshot was changed "
            "outside kpisheet (its codes name entities that release 1 does not have)"
        ),
    ):
        Store(url).read()


def test_store_without_snapshots_is_read_from_rows_until_upgraded(
    store_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store written before kpisheet kept snapshots is read row by row with a warning and never
    changed by reading; `store upgrade` builds the snapshots, which readers then use."""
    first, second = observations(seed=1), observations(seed=2)
    entities = tmp_path / "entities.yaml"
    entities.write_text(ZURICH_ENTITIES, encoding="utf-8")
    hierarchy = load_hierarchy(entities)
    with Store(store_url) as store:
        store.write_release(first, source="a", hierarchy=hierarchy)
        info = store.write_release(second, source="b", hierarchy=hierarchy)
    engine = create_engine(store_url)
    with engine.begin() as conn:
        snapshots_table.drop(conn)
    shown = display_url(store_url)
    with Store(store_url) as store:
        _, read = store.read(verify=True)
        checks = store.verify()
    assert_same_observations(read, second)
    assert caplog.messages[0] == (
        f"store {shown}: release 2 has no snapshot and is read row by row (slow for large "
        f"releases); `kpisheet store upgrade --store {shown}` builds it"
    )
    assert str(checks[1]) == (
        f"release 2 (24 rows): OK, checksum {info.checksum[:12]}… (rows; no snapshot yet, "
        "`kpisheet store upgrade` builds it)"
    )
    with engine.connect() as conn:
        assert not inspect(conn).has_table("kpisheet_snapshots")
    upgraded = CliRunner().invoke(main, ["store", "upgrade", "--store", store_url])
    assert (upgraded.exit_code, upgraded.stdout) == (0, "built the snapshots of releases 1, 2\n")
    with engine.begin() as conn:  # the rows gone: what is read now comes from the snapshots
        conn.execute(observations_table.delete())
    engine.dispose()
    caplog.clear()
    with Store(store_url) as store:
        assert_same_observations(store.read(1, verify=True)[1], first)
        assert_same_observations(store.read(verify=True)[1], second)
        assert [(c.rows_ok, c.snapshot_ok) for c in store.verify()] == [(False, True)] * 2
    assert caplog.messages == []


def test_write_failing_in_the_snapshot_leaves_no_trace(tmp_path: Path) -> None:
    """A write whose snapshot the database refuses leaves no release, rows, labels or snapshot."""
    path = tmp_path / "store.db"
    url = sqlite_url(path)
    with Store(url) as store:
        first = store.write_release(observations(), source="a")
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON kpisheet_snapshots "
            "BEGIN SELECT RAISE(ABORT, 'snapshot refused'); END"
        )
    with Store(url) as store:
        with pytest.raises(
            StoreError, match=re.escape(f"cannot write to store {url}: snapshot refused")
        ):
            store.write_release(observations(entities=5), source="b")
        assert store.releases() == [first]
    with contextlib.closing(sqlite3.connect(path)) as conn:
        counts = [
            conn.execute(f"SELECT count(*), max(release_id) FROM {table}").fetchone()
            for table in ("kpisheet_observations", "kpisheet_entities", "kpisheet_snapshots")
        ]
    assert counts == [(first.row_count, 1), (3, 1), (1, 1)]


# -- the package's boundaries ------------------------------------------------------------------

#: The only kpisheet modules outside the store package that the store may import.
STORE_MAY_IMPORT = {
    "kpisheet.codes",
    "kpisheet.constants",
    "kpisheet.errors",
    "kpisheet.hierarchy",
    "kpisheet.months",
}


def test_store_package_imports_no_validation_plugins_or_demo() -> None:
    """The store package imports only kpisheet's constants, errors, hierarchy and months besides
    itself, so validation, plugins and the demo data are never loaded to read or write a store."""
    package = Path(kpisheet.store.__file__).parent
    imported: dict[str, set[str]] = {}
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.startswith("kpisheet") and not name.startswith("kpisheet.store"):
                    imported.setdefault(name, set()).add(path.name)
    assert len(list(package.glob("*.py"))) >= 6
    assert set(imported) <= STORE_MAY_IMPORT, imported


def test_store_public_names_are_importable_from_the_package() -> None:
    """Every name in ``kpisheet.store.__all__`` is importable from ``kpisheet.store`` itself."""
    missing = [name for name in kpisheet.store.__all__ if not hasattr(kpisheet.store, name)]
    assert missing == []
    assert {"Store", "ReleaseInfo", "observations_checksum", "sqlite_url"} <= set(
        kpisheet.store.__all__
    )


# -- the demo store ----------------------------------------------------------------------------


def test_demo_store_is_built_once_in_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo store is built in $KPISHEET_CACHE_DIR on first use and reused afterwards."""
    monkeypatch.setenv("KPISHEET_CACHE_DIR", str(tmp_path / "cache"))
    url = demo_store_url()
    path = Path(make_url(url).database)
    assert path.parent == tmp_path / "cache"
    assert re.fullmatch(r"demo-[0-9a-f]{12}\.db", path.name)
    built = path.stat().st_mtime_ns
    assert demo_store_url() == url
    assert path.stat().st_mtime_ns == built
    info, read = Store(url).read()
    assert (info.id, info.source, info.row_count) == (1, "kpisheet demo generator", len(read))
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


@pytest.mark.slow
def test_demo_store_survives_processes_racing_to_build_it(tmp_path: Path) -> None:
    """Three processes building the demo store at once all get the same, complete store."""
    env = {**os.environ, "KPISHEET_CACHE_DIR": str(tmp_path / "cache")}
    code = "from kpisheet.demo import demo_store_url; print(demo_store_url())"
    processes = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    urls = {process.communicate(timeout=120)[0].strip() for process in processes}
    assert [p.returncode for p in processes] == [0, 0, 0]
    assert len(urls) == 1
    (url,) = urls
    info, read = Store(url).read()
    assert info.id == 1 and len(read) == info.row_count
    assert observations_checksum(read) == info.checksum
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_release_info_is_immutable() -> None:
    """ReleaseInfo is a frozen value: it can be compared and hashed, not changed."""
    info = ReleaseInfo(1, datetime.now(UTC), "s", 1, "2024-01", "c", "")
    with pytest.raises(AttributeError):
        info.id = 2  # type: ignore[misc]
    assert hash(info) == hash(ReleaseInfo(**info.__dict__))


# -- upgrading a store of schema 2 -------------------------------------------------------------

ZURICH_ENTITIES = """\
total: Zürich AG
levels: [mandant]
entities:
  Zürich Karte 0: {mandant: Zürich}
  Zürich Karte 1: {mandant: Zürich}
  Zürich Karte 2: {mandant: Basel}
"""


def schema_2_store(url: str) -> list[ReleaseInfo]:
    """A store as kpisheet wrote it before releases kept their hierarchy: two releases, the
    tables of schema 2, schema version 2."""
    with Store(url) as store:
        store.write_release(observations(), source="a")
        store.write_release(observations(seed=1), source="b")
        infos = store.releases()
    engine = create_engine(url)
    with engine.begin() as conn:
        hierarchies_table.drop(conn)
        warnings_table.drop(conn)
        snapshots_table.drop(conn)
        conn.execute(update(schema_table).values(version=2))
    engine.dispose()
    return infos


def test_store_of_schema_2_is_refused_with_the_command_that_upgrades_it(store_url: str) -> None:
    """Reading, writing and opening a schema 2 store fail with the upgrade command to run."""
    schema_2_store(store_url)
    shown = display_url(store_url)
    message = (
        f"store {shown} has schema version 2, from before releases kept their entity hierarchy; "
        f"this kpisheet reads schema {SCHEMA_VERSION} only. Upgrade the store first (its "
        f"releases are kept): kpisheet store upgrade --store {shown} [--entities FILE, the "
        "hierarchy its releases were loaded with]"
    )
    with pytest.raises(StoreError, match=re.escape(message)):
        Store(store_url).read()
    with pytest.raises(StoreError, match=re.escape(message)):
        Store(store_url).write_release(observations(), source="c")
    result = CliRunner().invoke(main, ["query", "--data", store_url])
    assert (result.exit_code, result.stderr) == (1, message + "\n")


def test_upgrade_keeps_the_releases_and_records_their_hierarchy(
    store_url: str, tmp_path: Path
) -> None:
    """`kpisheet store upgrade --entities` adds the new tables and records the hierarchy for
    every release; the releases read exactly as before and open without --entities."""
    infos = schema_2_store(store_url)
    entities = tmp_path / "entities.yaml"
    entities.write_text(ZURICH_ENTITIES, encoding="utf-8")
    result = CliRunner().invoke(
        main, ["store", "upgrade", "--store", store_url, "--entities", str(entities)]
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        f"schema 2 -> {SCHEMA_VERSION}: added tables kpisheet_hierarchies, kpisheet_warnings\n"
        "recorded the hierarchy for releases 1, 2\n"
        "built the snapshots of releases 1, 2\n"
    )
    store = Store(store_url)
    assert store.releases() == infos
    for info in infos:
        _, read = store.read(info.id)
        assert observations_checksum(read) == info.checksum
        assert store.hierarchy(info.id).to_data() == load_hierarchy(entities).to_data()
    sheet = kpisheet.open(store_url, release=1)
    assert sheet.hierarchy.total == "Zürich AG"
    again = CliRunner().invoke(main, ["store", "upgrade", "--store", store_url])
    assert again.stdout == f"store {display_url(store_url)} is up to date; nothing to do\n"


def test_upgrade_without_a_hierarchy_asks_for_it_when_a_release_is_opened(
    tmp_path: Path,
) -> None:
    """Upgraded without --entities, an old release opens with --entities, and without it the
    error says how to record its hierarchy; a new release records its own."""
    url = sqlite_url(tmp_path / "store.db")
    schema_2_store(url)
    entities = tmp_path / "entities.yaml"
    entities.write_text(ZURICH_ENTITIES, encoding="utf-8")
    assert Store(url).upgrade() == [
        f"schema 2 -> {SCHEMA_VERSION}: added tables kpisheet_hierarchies, kpisheet_warnings",
        f"releases without a recorded hierarchy: 1, 2; open them with --entities FILE, or "
        f"record one with `kpisheet store upgrade --store {url} --entities FILE`",
        "built the snapshots of releases 1, 2",
    ]
    with pytest.raises(
        StoreError,
        match=re.escape(
            f"release 2 of store {url} does not record its entity hierarchy (it was loaded "
            "before releases kept one); give entities=FILE (--entities FILE), or record it: "
            f"kpisheet store upgrade --store {url} --entities FILE"
        ),
    ):
        kpisheet.open(url)
    assert kpisheet.open(url, entities=entities).release.id == 2


def test_upgrade_with_a_hierarchy_lacking_products_changes_nothing(tmp_path: Path) -> None:
    """A hierarchy without every product of a release is refused; the store stays schema 2."""
    url = sqlite_url(tmp_path / "store.db")
    schema_2_store(url)
    entities = tmp_path / "entities.yaml"
    entities.write_text(ZURICH_ENTITIES.replace("  Zürich Karte 2: {mandant: Basel}\n", ""))
    with pytest.raises(
        StoreError,
        match=re.escape(
            f"not upgraded, store {url} is unchanged: release 1 has 1 product the hierarchy "
            "lacks: 'Zürich Karte 2'; release 2 has 1 product the hierarchy lacks: 'Zürich Karte 2'"
        ),
    ):
        Store(url).upgrade(load_hierarchy(entities))
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(select(schema_table.c.version)).scalar_one() == 2
    engine.dispose()


# -- integrity: verified reads, read-only stores ---------------------------------------------


def change_one_value(url: str, release: int) -> None:
    """Change one stored value of a release with SQL, as someone bypassing kpisheet would."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            first = conn.execute(
                select(observations_table.c.month, observations_table.c.kpi_code)
                .where(observations_table.c.release_id == release)
                .limit(1)
            ).one()
            conn.execute(
                update(observations_table)
                .where(
                    (observations_table.c.release_id == release)
                    & (observations_table.c.month == first.month)
                    & (observations_table.c.kpi_code == first.kpi_code)
                )
                .values(value=observations_table.c.value + 1)
            )
    finally:
        engine.dispose()


def test_verify_finds_a_release_changed_with_sql(store_url: str) -> None:
    """Store.verify names the release whose values were changed and passes the others."""
    with Store(store_url) as store:
        first = store.write_release(observations(seed=1), source="a")
        second = store.write_release(observations(seed=2), source="b")
        assert [check.ok for check in store.verify()] == [True, True]
        change_one_value(store_url, second.id)
        checks = store.verify()
        assert [(check.info.id, check.ok) for check in checks] == [(1, True), (2, False)]
        assert str(checks[0]) == (
            f"release 1 (24 rows): OK, checksum {first.checksum[:12]}… (rows and snapshot)"
        )
        assert str(checks[1]) == (
            f"release 2 (24 rows): CHANGED — checksum written {second.checksum[:12]}…, now "
            f"{checks[1].actual[:12]}…; its values were changed outside kpisheet"
        )
        assert [check.info.id for check in store.verify(1)] == [1]


def rewrite_snapshot(
    url: str, release: int, column: str, change: Callable[[np.ndarray], None]
) -> None:
    """Change one column of part 1 of a release's snapshot and write its digest to match, as a
    tool that rewrites the snapshot correctly but bypasses kpisheet would."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            where = (snapshots_table.c.release_id == release) & (snapshots_table.c.part == 1)
            data = conn.execute(select(snapshots_table.c.data).where(where)).scalar_one()
            table = pa.ipc.open_stream(pa.py_buffer(bytes(data))).read_all()
            values = table.column(column).to_numpy().copy()
            change(values)
            position = table.schema.get_field_index(column)
            table = table.set_column(position, table.schema.field(position), pa.array(values))
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            changed = sink.getvalue().to_pybytes()
            digest = hashlib.sha256(changed).hexdigest()
            conn.execute(update(snapshots_table).where(where).values(data=changed, digest=digest))
    finally:
        engine.dispose()


def change_one_snapshot_value(url: str, release: int) -> None:
    """Add 1 to the first value of a release's snapshot, digest rewritten: only the checksum can
    tell."""

    def add_one(values: np.ndarray) -> None:
        values[0] += 1

    rewrite_snapshot(url, release, "value", add_one)


def test_verified_read_refuses_a_changed_release(store_url: str) -> None:
    """read(verify=True) and kpisheet.open(verify=True) raise ChecksumError for a release whose
    observations as read (its snapshot) no longer give its checksum."""
    with Store(store_url) as store:
        info = store.write_release(observations(), source="a")
        store.read(verify=True)
        change_one_snapshot_value(store_url, info.id)
        store.read()  # unverified reads go on as before
        with pytest.raises(ChecksumError) as raised:
            store.read(verify=True)
    shown = display_url(store_url)
    message = (
        f"store {shown}: release 1 does not match its checksum (written {info.checksum[:12]}…, "
        f"now {raised.value.actual[:12]}…): its values were changed outside kpisheet; do not "
        "use it — ingest the data again or read another release"
    )
    assert str(raised.value) == message
    assert (raised.value.release, raised.value.stored) == (1, info.checksum)
    with pytest.raises(ChecksumError, match=re.escape(message)):
        kpisheet.open(store_url, verify=True)


def test_rows_changed_with_sql_are_found_by_verify_not_served(store_url: str) -> None:
    """Rows changed with SQL do not reach a reader (it reads the snapshot written with the
    release), and verify names them."""
    written = observations()
    with Store(store_url) as store:
        info = store.write_release(written, source="a")
        change_one_value(store_url, info.id)
        _, read = store.read(verify=True)
        (check,) = store.verify()
    assert_same_observations(read, written)
    assert (check.rows_ok, check.snapshot_ok, check.snapshot) == (False, True, info.checksum)
    assert str(check) == (
        f"release 1 (24 rows): CHANGED — checksum written {info.checksum[:12]}…, now "
        f"{check.actual[:12]}…; its values were changed outside kpisheet"
    )


def test_verify_reports_rows_deleted_with_sql(tmp_path: Path) -> None:
    """A release missing rows has no checksum to compare; verify says what is wrong."""
    url = sqlite_url(tmp_path / "store.db")
    with Store(url) as store:
        store.write_release(observations(), source="a")
        with sqlite3.connect(tmp_path / "store.db") as conn:
            conn.execute("DELETE FROM kpisheet_observations WHERE month = 202311")
        (check,) = store.verify()
    assert not check.ok
    assert str(check) == (
        f"release 1 (24 rows): CHANGED — store {url}: release 1 does not hold the 24 rows its "
        "record says; the store was changed outside kpisheet"
    )


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[Path]:
    """``directory`` as a read-only place, as a read-only mount or share would give it.

    As root (whom file modes do not stop) a read-only bind mount of the directory; as another
    user the directory and its files without write permission.
    """
    if os.geteuid() == 0:
        mounted = directory.with_name(directory.name + "-ro")
        mounted.mkdir()
        done = subprocess.run(
            ["mount", "--bind", "-o", "ro", str(directory), str(mounted)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"a read-only bind mount is not possible here: {done.stderr.strip()}")
        try:
            yield mounted
        finally:
            subprocess.run(["umount", str(mounted)], check=True)
        return
    files = list(directory.iterdir())
    for path in files:
        path.chmod(0o444)
    directory.chmod(0o555)
    try:
        yield directory
    finally:
        directory.chmod(0o755)
        for path in files:
            path.chmod(0o644)


def test_store_on_a_read_only_file_system_is_readable(tmp_path: Path) -> None:
    """A store in write-ahead-log mode on a read-only mount is read, listed and verified.

    The test first shows that SQLite's ordinary open fails there (it cannot create the
    ``-shm`` file), so the read really goes through kpisheet's read-only fallback.
    """
    directory = tmp_path / "share"
    directory.mkdir()
    written = observations()
    with Store(sqlite_url(directory / "store.db")) as store:
        info = store.write_release(written, source="a")
    assert sorted(p.name for p in directory.iterdir()) == ["store.db"]  # no -wal, no -shm
    with read_only(directory) as place:
        path = place / "store.db"
        with (
            pytest.raises(sqlite3.OperationalError, match="unable to open database file"),
            contextlib.closing(sqlite3.connect(path)) as conn,
        ):
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        with Store(sqlite_url(path)) as store:
            assert store.releases() == [info]
            read_info, frame = store.read(verify=True)
            assert [check.ok for check in store.verify()] == [True]
        assert read_info == info
        assert_same_observations(frame, written)
        assert sorted(p.name for p in place.iterdir()) == ["store.db"]
