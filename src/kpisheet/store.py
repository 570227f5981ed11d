"""The store: canonical observations kept in a SQL database as numbered, immutable releases.

One code path (SQLAlchemy 2 Core) serves SQLite (the embedded default), PostgreSQL and Microsoft
SQL Server (``mssql+pyodbc``). Seven tables, created on first write:

- ``kpisheet_schema``: one row, the schema version; writers also lock it to take turns.
- ``kpisheet_releases``: one row per release — id (1, 2, ...), created at (UTC), source,
  row count, newest month, checksum (SHA-256 of the observations) and a note.
- ``kpisheet_kpis`` and ``kpisheet_entities``: each release's KPI ids and entity names, numbered
  0, 1, ... in sorted order (``code``).
- ``kpisheet_observations``: release id, month, KPI code, entity code, value; the primary key
  (release id, month, kpi code, entity code) is the index that reading one release uses.
- ``kpisheet_hierarchies``: per release, the entity hierarchy it was validated against (JSON of
  the same structure as ``entities.yaml``), so that an old release is grouped as it was.
- ``kpisheet_warnings``: per release, the plausibility warnings its ingest recorded.

A store of schema version 2 (before releases kept their hierarchy) is refused with the command
that upgrades it, ``kpisheet store upgrade`` (:meth:`Store.upgrade`).

Months are stored as integers ``YYYYMM`` (e.g. ``202406``): the same type on every database,
no time zones, and they sort. KPIs and entities are stored as small integer codes, so that the
rows (millions of them) are narrow and are written and read as numbers. A release is written in
one transaction, its labels and observations first and its row in ``kpisheet_releases`` last,
so a reader, which picks the newest release row it can see, never sees a release that is not
complete. Releases are never changed afterwards.

Large releases are converted and written chunk by chunk in primary-key order, so that memory
stays near the size of the observations themselves: SQLite gets multi-row ``INSERT``
statements, PostgreSQL (psycopg) ``COPY``, other drivers ``executemany`` (SQL Server with
pyodbc's ``fast_executemany``). Reads fetch chunks of rows into preallocated numpy arrays.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import platformdirs
from sqlalchemy import (
    Column,
    DateTime,
    Double,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Unicode,
    UnicodeText,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import URL, Connection, Dialect, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool, StaticPool
from sqlalchemy.sql import Select
from sqlalchemy.sql.dml import Insert
from tqdm import tqdm

from kpisheet.constants import ENTITY, KPI, MONTH, OBSERVATION_COLUMNS, VALUE
from kpisheet.errors import ChecksumError, HierarchyError, StoreError
from kpisheet.hierarchy import Hierarchy, parse_hierarchy
from kpisheet.months import month_numbers, month_periods, month_text

#: Version of the table layout; a store of another version is refused, not misread.
#: Version 1 (before the first release of kpisheet) kept KPI ids and entities as text in every row;
#: version 2 kept no hierarchy and no warnings per release (``kpisheet store upgrade`` adds them).
SCHEMA_VERSION = 3
#: The oldest schema version that :meth:`Store.upgrade` upgrades.
UPGRADABLE_VERSION = 2
#: The first bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"
#: File name endings of a SQLite store given as a path that does not exist yet.
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
SCHEMA_TABLE = "kpisheet_schema"
RELEASES_TABLE = "kpisheet_releases"
KPIS_TABLE = "kpisheet_kpis"
ENTITIES_TABLE = "kpisheet_entities"
OBSERVATIONS_TABLE = "kpisheet_observations"
HIERARCHIES_TABLE = "kpisheet_hierarchies"
WARNINGS_TABLE = "kpisheet_warnings"
#: Columns of the observations table that hold codes of the labels tables.
KPI_CODE = "kpi_code"
ENTITY_CODE = "entity_code"

#: Rows converted to Python objects at a time, when writing and when reading.
CHUNK_ROWS = 200_000
#: Rows per multi-row INSERT statement on SQLite.
SQLITE_ROWS_PER_INSERT = 500
#: Writes of at least this many rows show a progress bar (on a terminal).
PROGRESS_MIN_ROWS = 50_000
#: Seconds a SQLite writer waits for another writer before giving up.
SQLITE_TIMEOUT = 60.0
#: Environment variable naming the cache directory of the demo store.
CACHE_DIR_ENV = "KPISHEET_CACHE_DIR"

SOURCE_LENGTH = 1000
NOTE_LENGTH = 2000
KPI_LENGTH = 100
ENTITY_LENGTH = 200
CHECKSUM_LENGTH = 64
RULE_LENGTH = 40

# Execution option that makes a SQLite transaction take the write lock at BEGIN.
_WRITE_OPTION = "kpisheet_write"

metadata = MetaData()

schema_table = Table(
    SCHEMA_TABLE,
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
)

releases_table = Table(
    RELEASES_TABLE,
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("created_at", DateTime(timezone=False), nullable=False),  # UTC
    Column("source", Unicode(SOURCE_LENGTH), nullable=False),
    Column("row_count", Integer, nullable=False),
    Column("newest_month", Integer, nullable=False),  # YYYYMM
    Column("checksum", String(CHECKSUM_LENGTH), nullable=False),
    Column("note", Unicode(NOTE_LENGTH), nullable=False),
)

kpis_table = Table(
    KPIS_TABLE,
    metadata,
    Column("release_id", Integer, nullable=False),
    Column("code", Integer, nullable=False),
    Column(KPI, Unicode(KPI_LENGTH), nullable=False),
    PrimaryKeyConstraint("release_id", "code", name="pk_kpisheet_kpis"),
    UniqueConstraint("release_id", KPI, name="uq_kpisheet_kpis"),
)

entities_table = Table(
    ENTITIES_TABLE,
    metadata,
    Column("release_id", Integer, nullable=False),
    Column("code", Integer, nullable=False),
    Column(ENTITY, Unicode(ENTITY_LENGTH), nullable=False),
    PrimaryKeyConstraint("release_id", "code", name="pk_kpisheet_entities"),
    UniqueConstraint("release_id", ENTITY, name="uq_kpisheet_entities"),
)

# On SQLite the rows live in the primary key's B-tree itself (WITHOUT ROWID): one B-tree to
# write instead of a table and an index.
observations_table = Table(
    OBSERVATIONS_TABLE,
    metadata,
    Column("release_id", Integer, nullable=False),
    Column(MONTH, Integer, nullable=False),  # YYYYMM
    Column(KPI_CODE, Integer, nullable=False),
    Column(ENTITY_CODE, Integer, nullable=False),
    Column(VALUE, Double, nullable=True),
    PrimaryKeyConstraint(
        "release_id", MONTH, KPI_CODE, ENTITY_CODE, name="pk_kpisheet_observations"
    ),
    sqlite_with_rowid=False,
)

hierarchies_table = Table(
    HIERARCHIES_TABLE,
    metadata,
    Column("release_id", Integer, primary_key=True, autoincrement=False),
    Column("hierarchy", UnicodeText, nullable=False),  # JSON: total, levels, entities
)

warnings_table = Table(
    WARNINGS_TABLE,
    metadata,
    Column("release_id", Integer, nullable=False),
    Column("number", Integer, nullable=False),
    Column("rule", Unicode(RULE_LENGTH), nullable=False),
    Column("message", Unicode(NOTE_LENGTH), nullable=False),
    PrimaryKeyConstraint("release_id", "number", name="pk_kpisheet_warnings"),
)

#: Tables that schema version 3 added to version 2.
_ADDED_IN_3 = (hierarchies_table, warnings_table)

#: The numpy types of the rows of :func:`select_observations`, as they are read.
_ROW_TYPE = np.dtype([(MONTH, "i8"), (KPI_CODE, "i4"), (ENTITY_CODE, "i4"), (VALUE, "f8")])

#: PostgreSQL types of the observations' columns, for binary COPY.
_COPY_TYPES = {
    "release_id": "int4",
    MONTH: "int4",
    KPI_CODE: "int4",
    ENTITY_CODE: "int4",
    VALUE: "float8",
}


@dataclass(frozen=True)
class ReleaseInfo:
    """One release of a store: what was loaded, when, from where."""

    id: int
    created_at: datetime  # UTC, timezone-aware
    source: str
    row_count: int
    newest_month: str  # "YYYY-MM"
    checksum: str
    note: str


@dataclass(frozen=True)
class ReleaseWarning:
    """A plausibility warning recorded with a release: the rule and a message naming the row."""

    rule: str
    message: str


@dataclass(frozen=True)
class ReleaseCheck:
    """The checksum of a release recomputed from its stored rows (:meth:`Store.verify`)."""

    info: ReleaseInfo
    actual: str | None  # None when the rows could not be read as the release records them
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """True when the stored rows still give the checksum written with the release."""
        return self.actual == self.info.checksum

    def __str__(self) -> str:
        head = f"release {self.info.id} ({self.info.row_count:,} rows)"
        if self.ok:
            return f"{head}: OK, checksum {self.info.checksum[:12]}…"
        if self.actual is None:
            return f"{head}: CHANGED — {self.problem}"
        return (
            f"{head}: CHANGED — checksum written {self.info.checksum[:12]}…, now "
            f"{self.actual[:12]}…; its values were changed outside kpisheet"
        )


# Statements, one function each, so tests can compile them for every dialect.


def select_releases() -> Select[Any]:
    """Every release, oldest first."""
    return select(releases_table).order_by(releases_table.c.id)


def select_newest_id() -> Select[Any]:
    """The id of the newest release (``NULL`` for an empty store)."""
    return select(func.max(releases_table.c.id))


def select_observations(release_id: int) -> Select[Any]:
    """The observations of one release (month, KPI code, entity code, value), in primary-key order."""
    table = observations_table
    return (
        select(table.c[MONTH], table.c[KPI_CODE], table.c[ENTITY_CODE], table.c[VALUE])
        .where(table.c.release_id == release_id)
        .order_by(table.c[MONTH], table.c[KPI_CODE], table.c[ENTITY_CODE])
    )


def select_labels(table: Table, release_id: int) -> Select[Any]:
    """The codes and labels of one release from ``kpisheet_kpis`` or ``kpisheet_entities``."""
    return (
        select(table.c.code, table.c[KPI if table is kpis_table else ENTITY])
        .where(table.c.release_id == release_id)
        .order_by(table.c.code)
    )


def select_schema_version() -> Select[Any]:
    """The schema version row."""
    return select(schema_table.c.version)


def lock_writers() -> Select[Any]:
    """Read the schema row with an update lock, so that writers of releases take turns."""
    return (
        select(schema_table.c.version)
        .with_for_update()
        .with_hint(schema_table, "WITH (UPDLOCK, HOLDLOCK)", dialect_name="mssql")
    )


def insert_observations() -> Insert:
    """Insert observation rows (executemany)."""
    return insert(observations_table)


def insert_release() -> Insert:
    """Insert one release row."""
    return insert(releases_table)


def is_store_url(text: str) -> bool:
    """True for a SQLAlchemy database URL such as ``sqlite:///kpis.db`` or ``postgresql+psycopg://...``."""
    if not isinstance(text, str) or "://" not in text:
        return False
    scheme = text.split("://", 1)[0]
    if len(scheme) < 2:  # a Windows drive letter, C://...
        return False
    try:
        make_url(text).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        return False
    return True


def is_memory_url(url: str) -> bool:
    """True for a SQLite URL of an in-memory database (``sqlite://``, ``sqlite:///:memory:``):
    what is written there is gone when the process ends."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return False
    database = parsed.database or ""
    return parsed.get_backend_name() == "sqlite" and (
        database in ("", ":memory:")
        or parsed.query.get("mode") == "memory"
        or "mode=memory" in database
    )


def display_url(url: str | URL) -> str:
    """A database URL as it may be shown and recorded: without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return str(url)


def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of a SQLite file."""
    return URL.create("sqlite", database=str(Path(path).resolve())).render_as_string()


def is_sqlite_file(path: str | Path) -> bool:
    """True for an existing file that begins with SQLite's header (whatever its name)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except (OSError, ValueError, TypeError):
        return False


def store_url_of(data: object, *, new: bool = False) -> str | None:
    """The store URL that ``data`` names: a store URL itself, or a SQLite file given as a path.

    A file is recognised by SQLite's header, not by its name; with ``new``, a path that does not
    exist yet and ends in ``.db``, ``.sqlite`` or ``.sqlite3`` names a new SQLite store.
    ``None`` when ``data`` names no store (e.g. a CSV file).
    """
    if isinstance(data, str) and is_store_url(data):
        return data
    if not isinstance(data, str | Path):
        return None
    path = Path(data)
    if is_sqlite_file(path):
        return sqlite_url(path)
    if new and not path.exists() and path.suffix.lower() in SQLITE_SUFFIXES:
        return sqlite_url(path)
    return None


@dataclass(frozen=True)
class EncodedObservations:
    """Observations as integer columns sorted by (month, KPI, entity), as the store keeps them.

    Codes number the distinct KPI ids and entities in sorted order: code ``i`` of ``kpis`` is
    ``kpis[i]``, so sorting by codes sorts by text.
    """

    months: np.ndarray  # YYYYMM
    kpi_codes: np.ndarray
    entity_codes: np.ndarray
    values: np.ndarray  # float64, NaN for missing
    kpis: np.ndarray  # the KPI ids, sorted (object array of str)
    entities: np.ndarray  # the entities, sorted

    def __len__(self) -> int:
        return len(self.values)

    @classmethod
    def from_frame(cls, observations: pd.DataFrame) -> EncodedObservations:
        """Encode canonical observations (``month``, ``kpi``, ``entity``, ``value``).

        :raises StoreError: for a month that is not a ``Period[M]`` or a missing month, KPI or
            entity.
        """
        missing = [c for c in OBSERVATION_COLUMNS if c not in observations.columns]
        if missing:
            raise StoreError(f"observations lack column(s) {', '.join(missing)}")
        months = _as_months(observations[MONTH])
        if months.isna().any():
            raise StoreError("observations: month has missing values")
        numbers = month_numbers(months)
        kpi_codes, kpis = _text_codes(observations[KPI])
        entity_codes, entities = _text_codes(observations[ENTITY])
        values = observations[VALUE].to_numpy(dtype="float64", na_value=np.nan)
        order = _key_order(numbers, kpi_codes, len(kpis), entity_codes, len(entities))
        if order is not None:
            numbers, kpi_codes = numbers[order], kpi_codes[order]
            entity_codes, values = entity_codes[order], values[order]
        return cls(numbers, kpi_codes, entity_codes, values, kpis, entities)

    def checksum(self) -> str:
        """The SHA-256 of :func:`observations_checksum`, computed chunk by chunk."""
        digest = hashlib.sha256()
        chunks = [slice(start, start + CHUNK_ROWS) for start in range(0, len(self), CHUNK_ROWS)]
        for chunk in chunks:
            digest.update(self.months[chunk].astype("<i8").tobytes())
        for codes, labels in ((self.kpi_codes, self.kpis), (self.entity_codes, self.entities)):
            encoded = np.array([label.encode("utf-8") for label in labels], dtype=object)
            for number, chunk in enumerate(chunks):
                if number:
                    digest.update(b"\x00")
                digest.update(b"\x00".join(encoded[codes[chunk]].tolist()))
        for chunk in chunks:
            values = self.values[chunk]
            digest.update(np.where(np.isnan(values), np.nan, values).astype("<f8").tobytes())
        return digest.hexdigest()


def observations_checksum(observations: pd.DataFrame) -> str:
    """SHA-256 of canonical observations, independent of row order and of the database.

    Hashes the rows sorted by (month, kpi, entity): months as ``YYYYMM`` integers, KPI ids and
    entities as UTF-8 text (each column's texts joined by NUL characters), values as IEEE
    doubles (every missing value the same NaN).
    """
    return EncodedObservations.from_frame(observations).checksum()


def _as_months(months: pd.Series) -> pd.Series:
    if isinstance(months.dtype, pd.PeriodDtype):
        return months.dt.asfreq("M")
    try:
        return pd.Series(pd.PeriodIndex(months, freq="M"), index=months.index)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"observations: month is not a Period[M] column ({exc})") from exc


def _text_codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of a text column, numbered in the sorted order of its distinct texts."""
    codes, uniques = pd.factorize(column)
    if len(codes) and codes.min() < 0:
        raise StoreError(f"observations: {column.name} has missing values")
    texts = np.array([str(label) for label in uniques], dtype=object)
    labels, renumbered = np.unique(texts, return_inverse=True)
    return renumbered.astype("int32")[codes], labels


def _key_order(
    months: np.ndarray, kpi_codes: np.ndarray, kpis: int, entity_codes: np.ndarray, entities: int
) -> np.ndarray | None:
    """The stable order that sorts rows by (month, KPI code, entity code); ``None`` if sorted."""
    if not len(months):
        return None
    first = int(months.min())
    span = int(months.max()) - first + 1
    if span * max(kpis, 1) * max(entities, 1) >= 2**62:  # no room for one integer key
        return np.lexsort((entity_codes, kpi_codes, months))
    key = ((months - first) * kpis + kpi_codes) * entities + entity_codes
    if (key[1:] >= key[:-1]).all():
        return None
    return np.argsort(key, kind="stable")


class Store:
    """A database of observation releases, addressed by a SQLAlchemy URL."""

    def __init__(self, url: str | Path) -> None:
        url = store_url_of(url, new=True) or url
        if not is_store_url(url):
            raise StoreError(
                f"{str(url)!r} is neither a database URL nor a SQLite file; expected e.g. "
                "sqlite:///kpisheet.db, kpisheet.db, postgresql+psycopg://user@host/db or "
                "mssql+pyodbc://user@dsn"
            )
        self._url = make_url(url)
        self.url = display_url(self._url)
        self._engine: Engine | None = None
        self._read_engine: Engine | None = None  # a read-only SQLite file's, once it is needed

    def __repr__(self) -> str:
        return f"<Store {self.url}>"

    # -- connections -----------------------------------------------------------------------

    @property
    def _sqlite_path(self) -> Path | None:
        """The file of a file-backed SQLite store, else ``None``."""
        if self._url.get_backend_name() != "sqlite":
            return None
        database = self._url.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            return None
        return Path(database)

    @property
    def path(self) -> Path | None:
        """The file of a file-backed SQLite store, else ``None``."""
        return self._sqlite_path

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, created on first use."""
        if self._engine is None:
            self._engine = self._create_engine()
        return self._engine

    def _create_engine(self) -> Engine:
        backend = self._url.get_backend_name()
        options: dict[str, Any] = {"poolclass": NullPool}
        if backend == "sqlite":
            options["connect_args"] = {"timeout": SQLITE_TIMEOUT, "check_same_thread": False}
            if self._sqlite_path is None:
                options["poolclass"] = StaticPool
        if self._url.drivername == "mssql+pyodbc":
            options["fast_executemany"] = True
        try:
            engine = create_engine(self._url, **options)
        except (ImportError, NoSuchModuleError) as exc:
            raise StoreError(
                f"cannot open store {self.url}: the database driver is not installed ({exc}); "
                "for PostgreSQL use postgresql+psycopg:// and `pip install kpisheet[postgres]`, "
                "for SQL Server `pip install kpisheet[mssql]`"
            ) from exc
        except (ArgumentError, ValueError) as exc:
            raise StoreError(f"cannot open store {self.url}: {exc}") from exc
        if backend == "sqlite":
            _serialise_sqlite_writers(engine)
        return engine

    def close(self) -> None:
        """Release the engine's connections."""
        for engine in (self._engine, self._read_engine):
            if engine is not None:
                engine.dispose()
        self._engine = self._read_engine = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn database errors into a :class:`StoreError` that names the store.

        Errors of the driver itself come from the bulk writes and reads, which use its cursor.
        """
        try:
            yield
        except SQLAlchemyError as exc:
            reason = getattr(exc, "orig", None) or exc
            raise StoreError(f"cannot {action} store {self.url}: {reason}") from exc
        except Exception as exc:
            dbapi = self._engine.dialect.loaded_dbapi if self._engine is not None else None
            if dbapi is None or not isinstance(exc, dbapi.Error):
                raise
            raise StoreError(f"cannot {action} store {self.url}: {exc}") from exc

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A read transaction; a missing SQLite file is an error, not a new empty store."""
        path = self._sqlite_path
        if path is not None and not path.is_file():
            raise StoreError(
                f"no store at {path}: the file does not exist (`kpisheet ingest --store "
                f"{self.url}` creates it)"
            )
        engine = self._engine_for_reading(path) if path is not None else self.engine
        with self._errors("read"), engine.connect() as conn, conn.begin():
            yield conn

    def _engine_for_reading(self, path: Path) -> Engine:
        """The engine that can read a SQLite file: the usual one, or a read-only one.

        A store in write-ahead-log mode needs its ``-shm`` file, which SQLite cannot create in
        a read-only directory or file system; the store is then opened read-only
        (``mode=ro``), or as immutable when even that fails (nothing can change a file there).
        """
        if self._read_engine is not None:
            return self._read_engine
        if _sqlite_readable(f"file:{_file_uri(path)}?mode=rw"):
            return self.engine
        for parameters in ("mode=ro", "mode=ro&immutable=1"):
            uri = f"file:{_file_uri(path)}?{parameters}"
            if _sqlite_readable(uri):
                engine = create_engine(
                    "sqlite://",
                    creator=lambda uri=uri: sqlite3.connect(
                        uri, uri=True, timeout=SQLITE_TIMEOUT, check_same_thread=False
                    ),
                    poolclass=NullPool,
                )
                _serialise_sqlite_writers(engine)
                self._read_engine = engine
                return engine
        return self.engine  # fails with SQLite's own reason

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A write transaction that holds the writers' lock: one writer at a time."""
        self._ensure_schema()
        engine = self.engine.execution_options(**{_WRITE_OPTION: True})
        with self._errors("write to"), engine.begin() as conn:
            conn.execute(lock_writers())
            yield conn

    def _ensure_schema(self) -> None:
        """Create the tables on first use; refuse a store of another schema version."""
        path = self._sqlite_path
        if path is not None:
            if not path.parent.is_dir():
                raise StoreError(f"cannot create store {self.url}: no directory {path.parent}")
            self._use_wal()
        engine = self.engine.execution_options(**{_WRITE_OPTION: True})
        attempts = 3
        for attempt in range(attempts):
            try:
                with engine.begin() as conn:
                    version = None
                    if inspect(conn).has_table(SCHEMA_TABLE):
                        version = conn.execute(select_schema_version()).scalar()
                    if version is not None:
                        _check_version(version, self.url)
                    metadata.create_all(conn, checkfirst=True)
                    if version is None:
                        conn.execute(insert(schema_table).values(version=SCHEMA_VERSION))
                return
            except SQLAlchemyError as exc:
                # Two first writers racing to create the tables: the loser retries and finds them.
                if attempt == attempts - 1:
                    reason = getattr(exc, "orig", None) or exc
                    raise StoreError(f"cannot create tables in store {self.url}: {reason}") from exc

    def _use_wal(self) -> None:
        """Put a SQLite file in write-ahead-log mode, so readers go on reading during a write."""
        with self._errors("open"):
            raw = self.engine.raw_connection()
            try:
                raw.driver_connection.execute("PRAGMA journal_mode=WAL")
            finally:
                raw.close()

    # -- reading ---------------------------------------------------------------------------

    def _release_infos(self, conn: Connection) -> list[ReleaseInfo]:
        if not inspect(conn).has_table(RELEASES_TABLE):
            return []
        if inspect(conn).has_table(SCHEMA_TABLE):
            version = conn.execute(select_schema_version()).scalar()
            if version is not None:
                _check_version(version, self.url)
        return [_release_info(row) for row in conn.execute(select_releases()).mappings()]

    def releases(self) -> list[ReleaseInfo]:
        """Every release, oldest first; empty for a store nothing was written to yet."""
        with self._reading() as conn:
            return self._release_infos(conn)

    def latest(self) -> ReleaseInfo | None:
        """The newest release, or ``None`` for an empty store."""
        infos = self.releases()
        return infos[-1] if infos else None

    def _info(self, conn: Connection, release: int | None) -> ReleaseInfo:
        """One release's record (default the newest); an error naming the existing ones."""
        infos = self._release_infos(conn)
        if not infos:
            raise StoreError(
                f"store {self.url} has no releases yet; `kpisheet ingest` writes the first"
            )
        if release is None:
            return infos[-1]
        by_id = {info.id: info for info in infos}
        if release not in by_id:
            raise StoreError(
                f"release {release} does not exist in store {self.url}; "
                f"releases: {', '.join(str(i) for i in by_id)}"
            )
        return by_id[release]

    def hierarchy(self, release: int | None = None) -> Hierarchy | None:
        """The entity hierarchy a release was validated against (default the newest release).

        ``None`` for a release written before releases kept their hierarchy (schema 2).
        """
        with self._reading() as conn:
            info = self._info(conn, release)
            text = conn.execute(
                select(hierarchies_table.c.hierarchy).where(
                    hierarchies_table.c.release_id == info.id
                )
            ).scalar()
        if text is None:
            return None
        try:
            return parse_hierarchy(json.loads(text), f"store {self.url} release {info.id}")
        except (ValueError, HierarchyError) as exc:
            raise StoreError(
                f"store {self.url}: the hierarchy of release {info.id} cannot be read ({exc}); "
                "the store was changed outside kpisheet"
            ) from exc

    def warnings(self, release: int | None = None) -> list[ReleaseWarning]:
        """The plausibility warnings recorded with a release (default the newest), in order."""
        with self._reading() as conn:
            info = self._info(conn, release)
            rows = conn.execute(
                select(warnings_table.c.rule, warnings_table.c.message)
                .where(warnings_table.c.release_id == info.id)
                .order_by(warnings_table.c.number)
            ).all()
        return [ReleaseWarning(rule, message) for rule, message in rows]

    def read(
        self, release: int | None = None, *, verify: bool = False
    ) -> tuple[ReleaseInfo, pd.DataFrame]:
        """A release and its observations (``month`` as ``Period[M]``, ``kpi``, ``entity``, ``value``).

        :param release: a release id; default the newest.
        :param verify: recompute the checksum of the observations read and refuse them when it
            is not the one written with the release.
        :raises StoreError: for an empty store or an unknown release.
        :raises ChecksumError: with ``verify``, for a release changed since it was written.
        """
        with self._reading() as conn:
            info = self._info(conn, release)
            frame = _read_observations(conn, info, self.url)
        if verify:
            _verify(info, frame, self.url)
        return info, frame

    # -- upgrading -------------------------------------------------------------------------

    def upgrade(self, hierarchy: Hierarchy | None = None) -> list[str]:
        """Upgrade a store of schema 2 to this kpisheet's schema, in one transaction.

        Adds the tables for each release's hierarchy and warnings; the releases themselves are
        kept as they are. With ``hierarchy``, every release that records none gets it, after
        checking that it has every product of the release (so that the release reads as it was
        loaded). Also for a store already at this schema, to record a missing hierarchy.

        :returns: what was done, one line each.
        :raises StoreError: for a store of another schema, or a hierarchy lacking products.
        """
        path = self._sqlite_path
        if path is not None and not path.is_file():
            raise StoreError(f"no store at {path}: the file does not exist")
        done: list[str] = []
        engine = self.engine.execution_options(**{_WRITE_OPTION: True})
        with self._errors("upgrade"), engine.begin() as conn:
            version = None
            if inspect(conn).has_table(SCHEMA_TABLE):
                version = conn.execute(lock_writers()).scalar()
            if version is None:
                raise StoreError(f"store {self.url} has no kpisheet tables; nothing to upgrade")
            if version not in (UPGRADABLE_VERSION, SCHEMA_VERSION):
                _check_version(version, self.url)
            if version == UPGRADABLE_VERSION:
                metadata.create_all(conn, tables=list(_ADDED_IN_3), checkfirst=True)
                conn.execute(update(schema_table).values(version=SCHEMA_VERSION))
                done.append(
                    f"schema {UPGRADABLE_VERSION} -> {SCHEMA_VERSION}: added tables "
                    f"{', '.join(t.name for t in _ADDED_IN_3)}"
                )
            recorded = set(conn.execute(select(hierarchies_table.c.release_id)).scalars())
            missing = [
                i for i in conn.execute(select(releases_table.c.id)).scalars() if i not in recorded
            ]
            if hierarchy is None:
                if missing:
                    done.append(
                        f"releases without a recorded hierarchy: {_id_list(missing)}; open them "
                        "with --entities FILE, or record one with "
                        f"`kpisheet store upgrade --store {self.url} --entities FILE`"
                    )
                return done
            problems = []
            for release_id in missing:
                _, names = _transpose(
                    conn.execute(select_labels(entities_table, release_id)).all(), 2
                )
                unknown = sorted(set(names) - set(hierarchy.leaves))
                if unknown:
                    shown = ", ".join(f"'{name}'" for name in unknown[:5])
                    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
                    problems.append(
                        f"release {release_id} has {len(unknown)} "
                        f"product{'s' if len(unknown) != 1 else ''} the hierarchy lacks: "
                        f"{shown}{more}"
                    )
            if problems:
                raise StoreError(
                    f"not upgraded, store {self.url} is unchanged: " + "; ".join(problems)
                )
            if missing:
                text = hierarchy_json(hierarchy)
                conn.execute(
                    insert(hierarchies_table),
                    [{"release_id": release_id, "hierarchy": text} for release_id in missing],
                )
                done.append(f"recorded the hierarchy for releases {_id_list(missing)}")
        return done

    def verify(self, release: int | None = None) -> list[ReleaseCheck]:
        """Recompute the checksum of one release (default: every release) from its stored rows.

        Every release asked for is checked, so one run finds all that were changed.

        :returns: one :class:`ReleaseCheck` per release, oldest first.
        :raises StoreError: for an unknown release or an unreadable store.
        """
        infos = self.releases()
        if release is not None:
            infos = [info for info in infos if info.id == release]
            if not infos:
                self.read(release)  # raises, naming the releases there are
        checks = []
        for info in infos:
            try:
                _, frame = self.read(info.id)
            except StoreError as exc:  # rows missing or added: no checksum to compare
                checks.append(ReleaseCheck(info, None, str(exc)))
                continue
            checks.append(ReleaseCheck(info, observations_checksum(frame)))
        return checks

    # -- writing ---------------------------------------------------------------------------

    def write_release(
        self,
        observations: pd.DataFrame,
        source: str,
        note: str = "",
        *,
        hierarchy: Hierarchy | None = None,
        warnings: Sequence[ReleaseWarning] = (),
        progress: bool | None = None,
    ) -> ReleaseInfo:
        """Write canonical, validated observations as the next release, in one transaction.

        :param source: where the observations came from (recorded, shortened to fit).
        :param hierarchy: the entity hierarchy the observations were validated against; readers
            group the release by it.
        :param warnings: plausibility warnings to record with the release.
        :param progress: show a progress bar; default on a terminal for large writes.
        :raises StoreError: when the store cannot be written; then nothing is written.
        """
        encoded = EncodedObservations.from_frame(observations)
        if not len(encoded):
            raise StoreError(f"refusing to write an empty release to store {self.url}")
        checksum = encoded.checksum()
        newest = int(encoded.months.max())
        total = len(encoded)
        show = total >= PROGRESS_MIN_ROWS if progress is None else progress
        created = datetime.now(UTC).replace(microsecond=0)
        with self._writing() as conn:
            release_id = (conn.execute(select_newest_id()).scalar() or 0) + 1
            for table, column, labels in (
                (kpis_table, KPI, encoded.kpis),
                (entities_table, ENTITY, encoded.entities),
            ):
                conn.execute(
                    insert(table),
                    [
                        {"release_id": release_id, "code": code, column: label}
                        for code, label in enumerate(labels)
                    ],
                )
            if hierarchy is not None:
                conn.execute(
                    insert(hierarchies_table).values(
                        release_id=release_id, hierarchy=hierarchy_json(hierarchy)
                    )
                )
            if warnings:
                conn.execute(
                    insert(warnings_table),
                    [
                        {
                            "release_id": release_id,
                            "number": number,
                            "rule": _fit(warning.rule, RULE_LENGTH),
                            "message": _fit(warning.message, NOTE_LENGTH),
                        }
                        for number, warning in enumerate(warnings, start=1)
                    ],
                )
            with tqdm(
                total=total,
                unit="rows",
                unit_scale=True,
                desc=f"release {release_id}",
                disable=None if show else True,
                leave=False,
            ) as bar:
                _insert_observations(conn, release_id, encoded, bar.update)
            info = ReleaseInfo(
                id=release_id,
                created_at=created,
                source=_fit(source, SOURCE_LENGTH),
                row_count=total,
                newest_month=month_text(newest),
                checksum=checksum,
                note=_fit(note, NOTE_LENGTH),
            )
            conn.execute(
                insert_release().values(
                    id=info.id,
                    created_at=created.replace(tzinfo=None),
                    source=info.source,
                    row_count=info.row_count,
                    newest_month=newest,
                    checksum=info.checksum,
                    note=info.note,
                )
            )
        return info


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


def _insert_observations(
    conn: Connection, release_id: int, encoded: EncodedObservations, advance: Callable[[int], Any]
) -> None:
    """Insert a release's observation rows in primary-key order, converting one chunk at a time.

    Rows go to the driver as they are, in the fastest form it takes: SQLAlchemy's per-row
    processing would cost more than the database's work.
    """
    dialect = conn.dialect
    sql, order = driver_statement(insert_observations(), dialect)
    names = order or tuple(observations_table.c.keys())
    cursor = conn.connection.cursor()
    try:
        for chunk in _row_chunks(release_id, encoded, names):
            if dialect.name == "sqlite":
                _insert_sqlite(cursor, sql, chunk)
            elif dialect.name == "postgresql" and dialect.driver == "psycopg":
                _copy_postgres(cursor, dialect, names, chunk)
            else:  # through SQLAlchemy, which sets up e.g. pyodbc's fast_executemany
                rows = zip(*chunk, strict=True)
                if order is None:  # named parameters: one dict per row
                    conn.exec_driver_sql(sql, [dict(zip(names, row, strict=True)) for row in rows])
                else:
                    conn.exec_driver_sql(sql, list(rows))
            advance(len(chunk[0]))
    finally:
        cursor.close()


def _row_chunks(
    release_id: int, encoded: EncodedObservations, names: tuple[str, ...]
) -> Iterator[list[list[Any]]]:
    """The rows of the observations table, ``CHUNK_ROWS`` at a time, as one list per column."""
    for start in range(0, len(encoded), CHUNK_ROWS):
        chunk = slice(start, start + CHUNK_ROWS)
        values = encoded.values[chunk]
        value_list = values.tolist()
        for missing in np.flatnonzero(np.isnan(values)).tolist():
            value_list[missing] = None
        columns = {
            "release_id": [release_id] * len(values),
            MONTH: encoded.months[chunk].tolist(),
            KPI_CODE: encoded.kpi_codes[chunk].tolist(),
            ENTITY_CODE: encoded.entity_codes[chunk].tolist(),
            VALUE: value_list,
        }
        yield [columns[name] for name in names]


def _insert_sqlite(cursor: Any, sql: str, columns: list[list[Any]]) -> None:
    """Insert rows with multi-row ``INSERT ... VALUES (...), (...)`` statements.

    SQLite's per-statement work, not the data, is most of the cost of inserting one row at a time.
    """
    width, rows = len(columns), len(columns[0])
    head, row = sql.split(" VALUES ", 1)
    flat: list[Any] = [None] * (width * rows)
    for position, column in enumerate(columns):
        flat[position::width] = column
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


def _read_observations(conn: Connection, info: ReleaseInfo, url: str) -> pd.DataFrame:
    """The observations of one release, as :meth:`Store.read` returns them."""
    labels = []
    for table in (kpis_table, entities_table):
        codes, texts = _transpose(conn.execute(select_labels(table, info.id)).all(), 2)
        if list(codes) != list(range(len(codes))):
            raise StoreError(f"store {url}: release {info.id} has gaps in {table.name}")
        labels.append(pd.Index(list(texts)))
    rows = _fetch_rows(conn, select_observations(info.id), _ROW_TYPE, info.row_count)
    if rows is None:
        raise StoreError(
            f"store {url}: release {info.id} does not hold the {info.row_count:,} rows its "
            "record says; the store was changed outside kpisheet"
        )
    return pd.DataFrame(
        {
            MONTH: month_periods(rows[MONTH]),
            KPI: pd.Categorical.from_codes(rows[KPI_CODE], categories=labels[0]),
            ENTITY: pd.Categorical.from_codes(rows[ENTITY_CODE], categories=labels[1]),
            VALUE: np.ascontiguousarray(rows[VALUE]),
        }
    )


def _verify(info: ReleaseInfo, observations: pd.DataFrame, url: str) -> None:
    """Refuse observations whose checksum is not the one written with their release."""
    actual = observations_checksum(observations)
    if actual != info.checksum:
        raise ChecksumError(url, info.id, info.checksum, actual)


def _transpose(rows: list[Any], width: int) -> list[tuple[Any, ...]]:
    return list(zip(*rows, strict=True)) if rows else [()] * width


def _fetch_rows(
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
        cursor = conn.connection.driver_connection.cursor(name="kpisheet_read")
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


def _id_list(ids: Sequence[int]) -> str:
    return ", ".join(str(i) for i in ids)


def _file_uri(path: Path) -> str:
    """The path part of a SQLite ``file:`` URI (characters with a meaning in URIs escaped)."""
    from urllib.parse import quote

    return quote(str(path.resolve()))


def _sqlite_readable(uri: str) -> bool:
    """True when SQLite can open the database at ``uri`` and read its schema."""
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=SQLITE_TIMEOUT)) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error:
        return False
    return True


def _fit(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def _check_version(version: int, url: str) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"store {url} has schema version {version}, newer than this kpisheet supports "
            f"({SCHEMA_VERSION}); upgrade kpisheet"
        )
    if UPGRADABLE_VERSION <= version < SCHEMA_VERSION:
        raise StoreError(
            f"store {url} has schema version {version}, from before releases kept their entity "
            f"hierarchy; this kpisheet reads schema {SCHEMA_VERSION} only. Upgrade the store "
            f"first (its releases are kept): kpisheet store upgrade --store {url} "
            "[--entities FILE, the hierarchy its releases were loaded with]"
        )
    if version < SCHEMA_VERSION:
        raise StoreError(
            f"store {url} has schema version {version}, written by an earlier development "
            f"version of kpisheet, which this kpisheet ({SCHEMA_VERSION}) no longer reads; "
            "ingest the data into a new store"
        )


def hierarchy_json(hierarchy: Hierarchy) -> str:
    """A hierarchy as the JSON text the store keeps: the structure of ``entities.yaml``."""
    return json.dumps(hierarchy.to_data(), ensure_ascii=False, sort_keys=False)


def _release_info(row: Any) -> ReleaseInfo:
    created = row["created_at"]
    return ReleaseInfo(
        id=int(row["id"]),
        created_at=created.replace(tzinfo=UTC) if created.tzinfo is None else created,
        source=row["source"],
        row_count=int(row["row_count"]),
        newest_month=month_text(int(row["newest_month"])),
        checksum=row["checksum"],
        note=row["note"],
    )


def _serialise_sqlite_writers(engine: Engine) -> None:
    """Let SQLAlchemy issue BEGIN itself, and make write transactions take SQLite's lock at once.

    With ``BEGIN IMMEDIATE`` a second writer waits for the first instead of failing halfway
    ("database is locked"), and readers are never blocked in write-ahead-log mode.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: sqlite3.Connection, record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


# -- the demo store --------------------------------------------------------------------------

#: Source recorded for the demo release.
DEMO_SOURCE = "kpisheet demo generator"


def write_demo_store(url: str) -> ReleaseInfo:
    """Write the demo sheet's observations, validated, as a release of the store at ``url``."""
    from kpisheet.builtin import builtin_definitions_dir
    from kpisheet.demo import DEMO_ENTITIES, generate_observations
    from kpisheet.hierarchy import load_hierarchy
    from kpisheet.observations import validate_observations
    from kpisheet.plugins import load_kpis

    hierarchy = load_hierarchy(DEMO_ENTITIES)
    observations = validate_observations(
        generate_observations(),
        load_kpis(builtin_definitions_dir()),
        hierarchy,
        source=DEMO_SOURCE,
    )
    with Store(url) as store:
        return store.write_release(
            observations, source=DEMO_SOURCE, note="demo data", hierarchy=hierarchy
        )


def cache_dir() -> Path:
    """kpisheet's cache directory (``$KPISHEET_CACHE_DIR``, else the user cache directory)."""
    return Path(os.environ.get(CACHE_DIR_ENV) or platformdirs.user_cache_dir("kpisheet"))


def demo_store_key() -> str:
    """A short hash of everything the demo store is made from; a change makes a new store."""
    from kpisheet.demo import DEMO_ENTITIES

    digest = hashlib.sha256(f"schema {SCHEMA_VERSION}\n".encode())
    for path in (Path(__file__).with_name("demo.py"), DEMO_ENTITIES):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def demo_store_url() -> str:
    """The URL of the demo sheet's SQLite store, built once in the cache directory.

    Built in a temporary file and moved into place, so processes racing to build it never
    see a half-built store; the key in the file name changes with the generator.
    """
    directory = cache_dir()
    path = directory / f"demo-{demo_store_key()}.db"
    if path.is_file():
        return sqlite_url(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f"{path.stem}.", suffix=".building", dir=directory)
    except OSError as exc:
        raise StoreError(f"cannot create the demo store in {directory}: {exc}") from exc
    os.close(handle)
    building = Path(name)
    try:
        write_demo_store(sqlite_url(building))
        # Back to a rollback journal: a single file that can be moved and read anywhere.
        with contextlib.closing(sqlite3.connect(building)) as conn:
            conn.execute("PRAGMA journal_mode=DELETE")
        try:
            os.replace(building, path)
        except OSError:
            if not path.is_file():  # another process's copy in place and open (Windows) is fine
                raise
    except OSError as exc:
        raise StoreError(f"cannot create the demo store {path}: {exc}") from exc
    finally:
        for leftover in (building, *(Path(f"{building}{s}") for s in ("-wal", "-shm"))):
            leftover.unlink(missing_ok=True)
    return sqlite_url(path)
