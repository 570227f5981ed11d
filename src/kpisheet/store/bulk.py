"""Writing and reading a release's observation rows in bulk, in the fastest form each driver takes.

Large releases are converted and written chunk by chunk in primary-key order, so that memory
stays near the size of the observations themselves: SQLite gets multi-row ``INSERT``
statements, PostgreSQL (psycopg) binary ``COPY``, other drivers ``executemany`` (SQL Server with
pyodbc's ``fast_executemany``). Reads fetch chunks of rows into preallocated numpy arrays.
SQLAlchemy's per-row processing would cost more than the database's work, so rows go to and come
from the driver's cursor as they are.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import Select
from sqlalchemy.sql.dml import Insert

from kpisheet.constants import MONTH, VALUE
from kpisheet.errors import StoreError
from kpisheet.store.encoding import EncodedObservations
from kpisheet.store.schema import (
    ENTITY_CODE,
    KPI_CODE,
    ReleaseInfo,
    entities_table,
    insert_observations,
    kpis_table,
    observations_table,
    select_labels,
    select_observations,
)

#: Rows converted to Python objects at a time, when writing and when reading.
CHUNK_ROWS = 200_000
#: Rows per multi-row INSERT statement on SQLite.
SQLITE_ROWS_PER_INSERT = 500

_ROW_TYPE = np.dtype([(MONTH, "i8"), (KPI_CODE, "i4"), (ENTITY_CODE, "i4"), (VALUE, "f8")])

#: PostgreSQL types of the observations' columns, for binary COPY.
_COPY_TYPES = {
    "release_id": "int4",
    MONTH: "int4",
    KPI_CODE: "int4",
    ENTITY_CODE: "int4",
    VALUE: "float8",
}


def driver_statement(
    statement: Insert | Select[Any], dialect: Dialect
) -> tuple[str, tuple[str, ...] | None]:
    """SQL text in the driver's parameter style, and the order of its parameters.

    The order is ``None`` for drivers that take named parameters (rows then go as dicts).
    """
    compiled = statement.compile(dialect=dialect)
    if compiled.positional:
        return compiled.string, tuple(compiled.positiontup or ())
    return compiled.string, None


def insert_rows(
    conn: Connection, release_id: int, encoded: EncodedObservations, advance: Callable[[int], Any]
) -> None:
    """Insert a release's observation rows in primary-key order, converting one chunk at a time.

    Rows go to the driver as they are, in the fastest form it takes: SQLAlchemy's per-row
    processing would cost more than the database's work.
    """
    dialect = conn.dialect
    sql, order = driver_statement(insert_observations(), dialect)
    names = order or tuple(observations_table.c.keys())
    sqlite = dialect.name == "sqlite"
    if sqlite:
        sql, names = _sqlite_statement(sql, names, release_id)
    cursor = conn.connection.cursor()
    try:
        for chunk in _row_chunks(release_id, encoded, names, sqlite):
            if sqlite:
                _insert_sqlite(cursor, sql, chunk, len(names))
            elif dialect.name == "postgresql" and dialect.driver == "psycopg":
                _copy_postgres(cursor, dialect, names, chunk)
            else:  # through SQLAlchemy, which sets up e.g. pyodbc's fast_executemany
                rows = zip(*chunk, strict=True)
                if order is None:  # named parameters: one dict per row
                    conn.exec_driver_sql(sql, [dict(zip(names, row, strict=True)) for row in rows])
                else:
                    conn.exec_driver_sql(sql, list(rows))
            advance(len(chunk) // len(names) if sqlite else len(chunk[0]))
    finally:
        cursor.close()


def _row_chunks(
    release_id: int, encoded: EncodedObservations, names: tuple[str, ...], interleaved: bool
) -> Iterator[list[Any]]:
    """The rows of the observations table, ``CHUNK_ROWS`` at a time: one list per column, or
    with ``interleaved`` one list of the rows' values one row after the other (as SQLite's
    multi-row statements bind them)."""
    for start in range(0, len(encoded), CHUNK_ROWS):
        chunk = slice(start, start + CHUNK_ROWS)
        values = encoded.values[chunk]
        value_list = values.tolist()
        for missing in np.flatnonzero(np.isnan(values)).tolist():
            value_list[missing] = None
        columns = {
            MONTH: encoded.months[chunk].tolist(),
            KPI_CODE: encoded.kpi_codes[chunk].tolist(),
            ENTITY_CODE: encoded.entity_codes[chunk].tolist(),
            VALUE: value_list,
        }
        if "release_id" in names:
            columns["release_id"] = [release_id] * len(values)
        listed = [columns[name] for name in names]
        if not interleaved:
            yield listed
            continue
        flat: list[Any] = [None] * (len(names) * len(values))
        for position, column in enumerate(listed):
            flat[position :: len(names)] = column
        yield flat


def _sqlite_statement(
    sql: str, names: tuple[str, ...], release_id: int
) -> tuple[str, tuple[str, ...]]:
    """The insert with the release id written into it, and the columns still bound per row.

    The id is the same in every row: bound, it would be a fifth of the values SQLite binds
    (inserting 3M such rows into a bare SQLite table took 1.77 s with it bound, 1.48 s without).
    """
    head, row = sql.split(" VALUES ", 1)
    if row != f"({', '.join('?' * len(names))})":  # pragma: no cover - SQLite's positional style
        raise StoreError(f"unexpected SQLite insert statement: {sql}")
    values = ", ".join(str(int(release_id)) if name == "release_id" else "?" for name in names)
    return f"{head} VALUES ({values})", tuple(name for name in names if name != "release_id")


def _insert_sqlite(cursor: Any, sql: str, flat: list[Any], width: int) -> None:
    """Insert rows (``width`` values each, one row after the other in ``flat``) with multi-row
    ``INSERT ... VALUES (...), (...)`` statements.

    SQLite's per-statement work, not the data, is most of the cost of inserting one row at a time.
    """
    rows = len(flat) // width
    head, row = sql.split(" VALUES ", 1)
    step = SQLITE_ROWS_PER_INSERT
    statement = f"{head} VALUES {', '.join([row] * step)}"
    for start in range(0, rows, step):
        stop = min(start + step, rows)
        if stop - start < step:
            statement = f"{head} VALUES {', '.join([row] * (stop - start))}"
        cursor.execute(statement, flat[start * width : stop * width])


def _copy_postgres(
    cursor: Any, dialect: Dialect, names: tuple[str, ...], columns: list[list[Any]]
) -> None:
    """Insert rows with PostgreSQL's binary ``COPY ... FROM STDIN`` (psycopg)."""
    quote = dialect.identifier_preparer
    table = quote.format_table(observations_table)
    listed = ", ".join(quote.quote(name) for name in names)
    with cursor.copy(f"COPY {table} ({listed}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types([_COPY_TYPES[name] for name in names])
        for row in zip(*columns, strict=True):
            copy.write_row(row)


def read_labels(conn: Connection, info: ReleaseInfo, url: str) -> tuple[np.ndarray, np.ndarray]:
    """The KPI ids and the entities of one release, in code order (code ``i`` is label ``i``)."""
    labels = []
    for table in (kpis_table, entities_table):
        codes, texts = columns_of(conn.execute(select_labels(table, info.id)).all(), 2)
        if list(codes) != list(range(len(codes))):
            raise StoreError(f"store {url}: release {info.id} has gaps in {table.name}")
        labels.append(np.array(list(texts), dtype=object))
    return labels[0], labels[1]


def read_rows(
    conn: Connection, info: ReleaseInfo, labels: tuple[np.ndarray, np.ndarray], url: str
) -> EncodedObservations:
    """The observation rows of one release, in key order, with its labels."""
    rows = fetch_rows(conn, select_observations(info.id), _ROW_TYPE, info.row_count)
    if rows is None:
        raise StoreError(
            f"store {url}: release {info.id} does not hold the {info.row_count:,} rows its "
            "record says; the store was changed outside kpisheet"
        )
    return EncodedObservations(
        months=np.ascontiguousarray(rows[MONTH]),
        kpi_codes=np.ascontiguousarray(rows[KPI_CODE]),
        entity_codes=np.ascontiguousarray(rows[ENTITY_CODE]),
        values=np.ascontiguousarray(rows[VALUE]),
        kpis=labels[0],
        entities=labels[1],
    )


def columns_of(rows: Sequence[Any], width: int) -> list[tuple[Any, ...]]:
    return list(zip(*rows, strict=True)) if rows else [()] * width


def fetch_rows(
    conn: Connection, statement: Select[Any], dtype: np.dtype, count: int
) -> np.ndarray | None:
    """A query's ``count`` rows as a structured array, fetched and converted chunk by chunk.

    Straight from the driver's cursor (on PostgreSQL a server-side one, so the rows are not all
    held at once); ``NULL`` in a float field becomes NaN. ``None`` when the query has not
    exactly ``count`` rows.
    """
    sql, order = driver_statement(statement, conn.dialect)
    values = statement.compile(dialect=conn.dialect).params
    params = tuple(values[name] for name in order) if order is not None else values
    out = np.empty(count, dtype=dtype)
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        driver = conn.connection.driver_connection
        assert driver is not None  # an open connection always has its driver's connection
        cursor = driver.cursor(name="kpisheet_read")
    else:
        cursor = conn.connection.cursor()
    # Hundreds of thousands of new tuples would trigger the cycle collector again and again.
    paused = gc.isenabled()
    gc.disable()
    try:
        cursor.execute(sql, params)
        filled = 0
        while rows := cursor.fetchmany(CHUNK_ROWS):
            if filled + len(rows) > count:
                return None
            if type(rows[0]) is not tuple:  # e.g. pyodbc's Row
                rows = [tuple(row) for row in rows]
            out[filled : filled + len(rows)] = np.fromiter(rows, dtype=dtype, count=len(rows))
            filled += len(rows)
    finally:
        if paused:
            gc.enable()
        cursor.close()
    return out if filled == count else None
