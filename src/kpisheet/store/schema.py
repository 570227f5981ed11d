"""The store's tables, the statements that read and write them, and the records read from them.

Eight tables, created on first write:

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
- ``kpisheet_snapshots``: per release, its observations once more as compressed Arrow IPC
  bytes in parts (:mod:`kpisheet.store.snapshot`), each with its row count and SHA-256 digest,
  so that a release is read in one piece instead of row by row. Written in the same
  transaction as the rows; a release without one (written before kpisheet kept snapshots) is
  read from its rows until ``kpisheet store upgrade`` builds it. Being optional, the table
  did not change the schema version: an older kpisheet of schema 3 reads such a store and
  ignores it.

Statements are one function each, so tests can compile them for every dialect.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Double,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Unicode,
    UnicodeText,
    UniqueConstraint,
    func,
    insert,
    select,
)
from sqlalchemy.sql import Select
from sqlalchemy.sql.dml import Insert

from kpisheet.constants import ENTITY, KPI, MONTH, VALUE
from kpisheet.errors import StoreError
from kpisheet.months import month_text

#: Version of the table layout; a store of another version is refused, not misread.
#: Version 1 (before the first release of kpisheet) kept KPI ids and entities as text in every row;
#: version 2 kept no hierarchy and no warnings per release (``kpisheet store upgrade`` adds them).
SCHEMA_VERSION = 3
#: The oldest schema version that :meth:`Store.upgrade` upgrades.
UPGRADABLE_VERSION = 2
SCHEMA_TABLE = "kpisheet_schema"
RELEASES_TABLE = "kpisheet_releases"
KPIS_TABLE = "kpisheet_kpis"
ENTITIES_TABLE = "kpisheet_entities"
OBSERVATIONS_TABLE = "kpisheet_observations"
HIERARCHIES_TABLE = "kpisheet_hierarchies"
WARNINGS_TABLE = "kpisheet_warnings"
SNAPSHOTS_TABLE = "kpisheet_snapshots"
#: Columns of the observations table that hold codes of the labels tables.
KPI_CODE = "kpi_code"
ENTITY_CODE = "entity_code"

SOURCE_LENGTH = 1000
NOTE_LENGTH = 2000
KPI_LENGTH = 100
ENTITY_LENGTH = 200
CHECKSUM_LENGTH = 64
RULE_LENGTH = 40

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


def _labels_table(name: str, column: str, length: int) -> Table:
    """A table of each release's labels of one kind (KPI ids or entities), numbered 0, 1, ..."""
    short = name.removeprefix("kpisheet_")
    return Table(
        name,
        metadata,
        Column("release_id", Integer, nullable=False),
        Column("code", Integer, nullable=False),
        Column(column, Unicode(length), nullable=False),
        PrimaryKeyConstraint("release_id", "code", name=f"pk_kpisheet_{short}"),
        UniqueConstraint("release_id", column, name=f"uq_kpisheet_{short}"),
    )


kpis_table = _labels_table(KPIS_TABLE, KPI, KPI_LENGTH)
entities_table = _labels_table(ENTITIES_TABLE, ENTITY, ENTITY_LENGTH)

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

snapshots_table = Table(
    SNAPSHOTS_TABLE,
    metadata,
    Column("release_id", Integer, nullable=False),
    Column("part", Integer, nullable=False),  # 1, 2, ... in key order
    Column("row_count", Integer, nullable=False),
    Column("digest", String(CHECKSUM_LENGTH), nullable=False),  # SHA-256 of data
    Column("data", LargeBinary, nullable=False),
    PrimaryKeyConstraint("release_id", "part", name="pk_kpisheet_snapshots"),
)

#: Tables that schema version 3 added to version 2.
ADDED_IN_3 = (hierarchies_table, warnings_table)


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
    """The checksum of a release recomputed from its stored rows and from its snapshot
    (:meth:`Store.verify`)."""

    info: ReleaseInfo
    actual: str | None  # from the rows; None when they cannot be read as the release records
    problem: str | None = None  # why the rows could not be read
    snapshot: str | None = None  # from the snapshot; None without one or when it cannot be read
    snapshot_problem: str | None = None  # why the snapshot could not be read

    @property
    def rows_ok(self) -> bool:
        """True when the stored rows still give the checksum written with the release."""
        return self.actual == self.info.checksum

    @property
    def snapshot_ok(self) -> bool:
        """True when the snapshot gives the checksum written with the release, or there is none
        (a release written before kpisheet kept snapshots)."""
        return self.snapshot_problem is None and self.snapshot in (None, self.info.checksum)

    @property
    def ok(self) -> bool:
        """True when the rows and the snapshot still give the checksum written with the release."""
        return self.rows_ok and self.snapshot_ok

    def __str__(self) -> str:
        head = f"release {self.info.id} ({self.info.row_count:,} rows)"
        written = self.info.checksum[:12]
        if self.ok:
            if self.snapshot is None:
                return (
                    f"{head}: OK, checksum {written}… (rows; no snapshot yet, "
                    "`kpisheet store upgrade` builds it)"
                )
            return f"{head}: OK, checksum {written}… (rows and snapshot)"
        problems = []
        if self.actual is None:
            problems.append(str(self.problem))
        elif not self.rows_ok:
            problems.append(
                f"checksum written {written}…, now {self.actual[:12]}…; its values were "
                "changed outside kpisheet"
            )
        if self.snapshot_problem is not None:
            problems.append(self.snapshot_problem)
        elif not self.snapshot_ok:
            problems.append(
                f"its snapshot gives checksum {str(self.snapshot)[:12]}…, not {written}…; "
                "the snapshot was changed outside kpisheet"
            )
        return f"{head}: CHANGED — {'; '.join(problems)}"


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


def select_snapshot_parts(release_id: int) -> Select[Any]:
    """The parts of one release's snapshot (part, row count, digest), in order, without data."""
    table = snapshots_table
    return (
        select(table.c.part, table.c.row_count, table.c.digest)
        .where(table.c.release_id == release_id)
        .order_by(table.c.part)
    )


def select_snapshot_data(release_id: int, part: int) -> Select[Any]:
    """The bytes of one part of a release's snapshot."""
    table = snapshots_table
    return select(table.c.data).where(table.c.release_id == release_id, table.c.part == part)


def insert_snapshot_part() -> Insert:
    """Insert one part of a snapshot."""
    return insert(snapshots_table)


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


def check_version(version: int, url: str) -> None:
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


def release_info(row: Any) -> ReleaseInfo:
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
