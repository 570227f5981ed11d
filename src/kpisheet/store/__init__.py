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

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

#: Where each name of ``__all__`` lives. The package imports a module (and SQLAlchemy) when one
#: of its names is first used, so opening a sheet from a file never pays for the store (about
#: 14 MB and 0.3 s of imports).
_MODULES = {
    "bulk": ("driver_statement",),
    "encoding": ("EncodedObservations", "observations_checksum"),
    "schema": (
        "SCHEMA_VERSION",
        "ReleaseCheck",
        "ReleaseInfo",
        "ReleaseWarning",
        "entities_table",
        "hierarchies_table",
        "insert_observations",
        "insert_release",
        "kpis_table",
        "lock_writers",
        "metadata",
        "observations_table",
        "releases_table",
        "schema_table",
        "select_labels",
        "select_newest_id",
        "select_observations",
        "select_releases",
        "snapshots_table",
        "warnings_table",
    ),
    "store": ("Store", "hierarchy_json"),
    "urls": (
        "display_url",
        "is_memory_url",
        "is_sqlite_file",
        "is_store_url",
        "sqlite_url",
        "store_url_of",
    ),
}
_HOMES = {name: module for module, names in _MODULES.items() for name in names}

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


def __getattr__(name: str) -> Any:
    """A name of ``__all__``, imported from its module on first use (PEP 562)."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
