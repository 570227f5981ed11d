"""The :class:`Store`: numbered, immutable releases of observations in one SQL database.

A release is written in one transaction, its labels and observations first and its row in
``kpisheet_releases`` last, so a reader, which picks the newest release row it can see, never
sees a release that is not complete. Releases are never changed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import create_engine, delete, insert, inspect, select, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool, StaticPool
from tqdm import tqdm

from kpisheet.constants import ENTITY, KPI
from kpisheet.errors import ChecksumError, HierarchyError, StoreError
from kpisheet.hierarchy import Hierarchy, parse_hierarchy
from kpisheet.months import month_text
from kpisheet.store.bulk import columns_of, insert_rows, read_labels, read_rows
from kpisheet.store.encoding import EncodedObservations
from kpisheet.store.schema import (
    ADDED_IN_3,
    NOTE_LENGTH,
    RELEASES_TABLE,
    RULE_LENGTH,
    SCHEMA_TABLE,
    SCHEMA_VERSION,
    SOURCE_LENGTH,
    UPGRADABLE_VERSION,
    ReleaseCheck,
    ReleaseInfo,
    ReleaseWarning,
    check_version,
    entities_table,
    hierarchies_table,
    insert_release,
    kpis_table,
    lock_writers,
    metadata,
    release_info,
    releases_table,
    schema_table,
    select_labels,
    select_newest_id,
    select_releases,
    select_schema_version,
    snapshots_table,
    warnings_table,
)
from kpisheet.store.snapshot import SnapshotPart, read_snapshot, snapshot_parts, write_snapshot
from kpisheet.store.sqlite import (
    SQLITE_TIMEOUT,
    WRITE_OPTION,
    file_uri,
    read_only_engine,
    serialise_writers,
    sqlite_readable,
)
from kpisheet.store.urls import display_url, is_store_url, store_url_of

log = logging.getLogger(__name__)

#: Writes of at least this many rows show a progress bar (on a terminal).
PROGRESS_MIN_ROWS = 50_000


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
            serialise_writers(engine)
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
        """The engine that can read a SQLite file: the usual one, or a read-only one
        (:func:`~kpisheet.store.sqlite.read_only_engine`) where the file cannot be written."""
        if self._read_engine is not None:
            return self._read_engine
        if sqlite_readable(f"file:{file_uri(path)}?mode=rw"):
            return self.engine
        self._read_engine = read_only_engine(path)
        if self._read_engine is not None:
            return self._read_engine
        return self.engine  # fails with SQLite's own reason

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A write transaction that holds the writers' lock: one writer at a time."""
        self._ensure_schema()
        engine = self.engine.execution_options(**{WRITE_OPTION: True})
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
        engine = self.engine.execution_options(**{WRITE_OPTION: True})
        attempts = 3
        for attempt in range(attempts):
            try:
                with engine.begin() as conn:
                    version = None
                    if inspect(conn).has_table(SCHEMA_TABLE):
                        version = conn.execute(select_schema_version()).scalar()
                    if version is not None:
                        check_version(version, self.url)
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
                driver = raw.driver_connection
                assert driver is not None  # an open connection always has its driver's connection
                driver.execute("PRAGMA journal_mode=WAL")
            finally:
                raw.close()

    # -- reading ---------------------------------------------------------------------------

    def _release_infos(self, conn: Connection) -> list[ReleaseInfo]:
        if not inspect(conn).has_table(RELEASES_TABLE):
            return []
        if inspect(conn).has_table(SCHEMA_TABLE):
            version = conn.execute(select_schema_version()).scalar()
            if version is not None:
                check_version(version, self.url)
        return [release_info(row) for row in conn.execute(select_releases()).mappings()]

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

        Read from the release's snapshot, whose digests are checked on every read; a release
        without one (written before kpisheet kept snapshots) is read from its rows, which is
        slow for millions of rows, and a warning names the command that builds it. A read never
        writes: the snapshot is built by ``kpisheet store upgrade``.

        :param release: a release id; default the newest.
        :param verify: recompute the checksum of the observations read and refuse them when it
            is not the one written with the release.
        :raises StoreError: for an empty store, an unknown release or a changed snapshot.
        :raises ChecksumError: with ``verify``, for a release changed since it was written.
        """
        with self._reading() as conn:
            info = self._info(conn, release)
            labels = read_labels(conn, info, self.url)
            encoded = read_snapshot(conn, info, labels, self.url)
            if encoded is None:
                log.warning(
                    "store %s: release %d has no snapshot and is read row by row (slow for "
                    "large releases); `kpisheet store upgrade --store %s` builds it",
                    self.url,
                    info.id,
                    self.url,
                )
                encoded = read_rows(conn, info, labels, self.url)
        if verify:
            actual = encoded.checksum()
            if actual != info.checksum:
                raise ChecksumError(self.url, info.id, info.checksum, actual)
        return info, encoded.to_frame()

    # -- upgrading -------------------------------------------------------------------------

    def upgrade(self, hierarchy: Hierarchy | None = None) -> list[str]:
        """Upgrade a store of schema 2 to this kpisheet's schema, in one transaction.

        Adds the tables for each release's hierarchy and warnings; the releases themselves are
        kept as they are. With ``hierarchy``, every release that records none gets it, after
        checking that it has every product of the release (so that the release reads as it was
        loaded). Also for a store already at this schema, to record a missing hierarchy, and to
        build the snapshot of each release that has none (written before kpisheet kept
        snapshots) or whose snapshot was changed outside kpisheet, from its rows if they still
        give the release's checksum.

        :returns: what was done, one line each.
        :raises StoreError: for a store of another schema, or a hierarchy lacking products.
        """
        path = self._sqlite_path
        if path is not None and not path.is_file():
            raise StoreError(f"no store at {path}: the file does not exist")
        done: list[str] = []
        engine = self.engine.execution_options(**{WRITE_OPTION: True})
        with self._errors("upgrade"), engine.begin() as conn:
            version = None
            if inspect(conn).has_table(SCHEMA_TABLE):
                version = conn.execute(lock_writers()).scalar()
            if version is None:
                raise StoreError(f"store {self.url} has no kpisheet tables; nothing to upgrade")
            if version not in (UPGRADABLE_VERSION, SCHEMA_VERSION):
                check_version(version, self.url)
            if version == UPGRADABLE_VERSION:
                metadata.create_all(conn, tables=list(ADDED_IN_3), checkfirst=True)
                conn.execute(update(schema_table).values(version=SCHEMA_VERSION))
                done.append(
                    f"schema {UPGRADABLE_VERSION} -> {SCHEMA_VERSION}: added tables "
                    f"{', '.join(t.name for t in ADDED_IN_3)}"
                )
            self._record_hierarchies(conn, hierarchy, done)
            metadata.create_all(conn, tables=[snapshots_table], checkfirst=True)
            self._build_snapshots(conn, done)
        return done

    def _record_hierarchies(
        self, conn: Connection, hierarchy: Hierarchy | None, done: list[str]
    ) -> None:
        """Record ``hierarchy`` for every release that records none (part of :meth:`upgrade`)."""
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
            return
        problems = []
        for release_id in missing:
            _, names = columns_of(conn.execute(select_labels(entities_table, release_id)).all(), 2)
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
            raise StoreError(f"not upgraded, store {self.url} is unchanged: " + "; ".join(problems))
        if missing:
            text = hierarchy_json(hierarchy)
            conn.execute(
                insert(hierarchies_table),
                [{"release_id": release_id, "hierarchy": text} for release_id in missing],
            )
            done.append(f"recorded the hierarchy for releases {_id_list(missing)}")

    def _build_snapshots(self, conn: Connection, done: list[str]) -> None:
        """Build the snapshot of every release that has none, or one changed outside kpisheet,
        from its rows, if they still give the release's checksum (part of :meth:`upgrade`)."""
        built: list[int] = []
        rebuilt: list[int] = []
        refused: list[int] = []
        for info in self._release_infos(conn):
            labels = read_labels(conn, info, self.url)
            try:
                if read_snapshot(conn, info, labels, self.url) is not None:
                    continue
                again = False
            except StoreError:
                again = True
            try:
                encoded = read_rows(conn, info, labels, self.url)
            except StoreError:
                refused.append(info.id)
                continue
            if encoded.checksum() != info.checksum:
                refused.append(info.id)
                continue
            conn.execute(delete(snapshots_table).where(snapshots_table.c.release_id == info.id))
            write_snapshot(conn, info.id, snapshot_parts(encoded))
            (rebuilt if again else built).append(info.id)
        if built:
            done.append(f"built the snapshots of releases {_id_list(built)}")
        if rebuilt:
            done.append(
                f"built again the snapshots of releases {_id_list(rebuilt)}, changed outside "
                "kpisheet"
            )
        if refused:
            done.append(
                f"no snapshot built for releases {_id_list(refused)}: their rows no longer match "
                f"their checksum (`kpisheet releases verify --store {self.url}` names the "
                "changes); they are left as they are"
            )

    def verify(self, release: int | None = None) -> list[ReleaseCheck]:
        """Recompute the checksum of one release (default: every release) from its stored rows
        and from its snapshot.

        Every release asked for is checked, so one run finds all that were changed.

        :returns: one :class:`ReleaseCheck` per release, oldest first.
        :raises StoreError: for an unknown release or an unreadable store.
        """
        infos = self.releases()
        if release is not None:
            infos = [info for info in infos if info.id == release]
            if not infos:
                self.read(release)  # raises, naming the releases there are
        return [self._check(info) for info in infos]

    def _check(self, info: ReleaseInfo) -> ReleaseCheck:
        """One release's rows and snapshot, each checked against the release's checksum."""
        with self._reading() as conn:
            labels = read_labels(conn, info, self.url)
            try:
                actual, problem = read_rows(conn, info, labels, self.url).checksum(), None
            except StoreError as exc:  # rows missing or added: no checksum to compare
                actual, problem = None, str(exc)
            try:
                encoded = read_snapshot(conn, info, labels, self.url)
            except StoreError as exc:
                return ReleaseCheck(info, actual, problem, None, str(exc))
        snapshot = encoded.checksum() if encoded is not None else None
        return ReleaseCheck(info, actual, problem, snapshot)

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
        newest = int(encoded.months.max())
        total = len(encoded)
        show = total >= PROGRESS_MIN_ROWS if progress is None else progress
        created = datetime.now(UTC).replace(microsecond=0)
        # The checksum and the snapshot are made in a second thread while the rows are inserted:
        # hashing, zstd and SQLite's or the server's work on the rows each run without the GIL.
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="kpisheet-snapshot") as pool,
            self._writing() as conn,
        ):
            prepared = pool.submit(_checksum_and_snapshot, encoded)
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
                insert_rows(conn, release_id, encoded, bar.update)
            checksum, parts = prepared.result()
            write_snapshot(conn, release_id, parts)
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


def _checksum_and_snapshot(encoded: EncodedObservations) -> tuple[str, list[SnapshotPart]]:
    """The checksum of a release's observations and the parts of its snapshot."""
    return encoded.checksum(), list(snapshot_parts(encoded))


def _id_list(ids: Sequence[int]) -> str:
    return ", ".join(str(i) for i in ids)


def _fit(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def hierarchy_json(hierarchy: Hierarchy) -> str:
    """A hierarchy as the JSON text the store keeps: the structure of ``entities.yaml``."""
    return json.dumps(hierarchy.to_data(), ensure_ascii=False, sort_keys=False)
