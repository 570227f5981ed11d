"""The store: canonical observations kept in a SQL database as numbered, immutable releases.

One code path (SQLAlchemy 2 Core) serves SQLite (the embedded default), PostgreSQL and Microsoft
SQL Server (``mssql+pyodbc``). The package is split by job:

- :mod:`~kpisheet.store.schema`: the tables, their statements and the records read from them;
- :mod:`~kpisheet.store.urls`: naming a store (URLs, SQLite files given as paths);
- :mod:`~kpisheet.store.encoding`: observations as integer columns in key order, and their
  checksum;
- :mod:`~kpisheet.store.bulk`: writing and reading the rows in the fastest form each driver takes
  (SQLite, PostgreSQL, others such as SQL Server);
- :mod:`~kpisheet.store.snapshot`: each release's observations once more as compressed Arrow
  IPC bytes, read in one piece instead of row by row;
- :mod:`~kpisheet.store.sqlite`: SQLite connections (writers taking turns, read-only files);
- :mod:`~kpisheet.store.store`: the :class:`Store` itself — reading, writing, verifying and
  upgrading releases.

A store of schema version 2 (before releases kept their hierarchy) is refused with the command
that upgrades it, ``kpisheet store upgrade`` (:meth:`Store.upgrade`). The demo sheet's store is
built by :mod:`kpisheet.demo`, not here: the store knows nothing of validation or KPIs.
"""

from __future__ import annotations

from kpisheet.store.bulk import driver_statement
from kpisheet.store.encoding import EncodedObservations, observations_checksum
from kpisheet.store.schema import (
    SCHEMA_VERSION,
    ReleaseCheck,
    ReleaseInfo,
    ReleaseWarning,
    entities_table,
    hierarchies_table,
    insert_observations,
    insert_release,
    kpis_table,
    lock_writers,
    metadata,
    observations_table,
    releases_table,
    schema_table,
    select_labels,
    select_newest_id,
    select_observations,
    select_releases,
    snapshots_table,
    warnings_table,
)
from kpisheet.store.store import Store, hierarchy_json
from kpisheet.store.urls import (
    display_url,
    is_memory_url,
    is_sqlite_file,
    is_store_url,
    sqlite_url,
    store_url_of,
)

__all__ = [
    "SCHEMA_VERSION",
    "EncodedObservations",
    "ReleaseCheck",
    "ReleaseInfo",
    "ReleaseWarning",
    "Store",
    "display_url",
    "driver_statement",
    "entities_table",
    "hierarchies_table",
    "hierarchy_json",
    "insert_observations",
    "insert_release",
    "is_memory_url",
    "is_sqlite_file",
    "is_store_url",
    "kpis_table",
    "lock_writers",
    "metadata",
    "observations_checksum",
    "observations_table",
    "releases_table",
    "schema_table",
    "select_labels",
    "select_newest_id",
    "select_observations",
    "select_releases",
    "snapshots_table",
    "sqlite_url",
    "store_url_of",
    "warnings_table",
]
