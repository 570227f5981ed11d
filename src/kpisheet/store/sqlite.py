"""SQLite connections: writers that take turns, and reading a file in a read-only place."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

#: Seconds a SQLite writer waits for another writer before giving up.
SQLITE_TIMEOUT = 60.0

# Execution option that makes a SQLite transaction take the write lock at BEGIN.
WRITE_OPTION = "kpisheet_write"


def file_uri(path: Path) -> str:
    """The path part of a SQLite ``file:`` URI (characters with a meaning in URIs escaped)."""
    return quote(str(path.resolve()))


def sqlite_readable(uri: str) -> bool:
    """True when SQLite can open the database at ``uri`` and read its schema."""
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=SQLITE_TIMEOUT)) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error:
        return False
    return True


def serialise_writers(engine: Engine) -> None:
    """Let SQLAlchemy issue BEGIN itself, and make write transactions take SQLite's lock at once.

    With ``BEGIN IMMEDIATE`` a second writer waits for the first instead of failing halfway
    ("database is locked"), and readers are never blocked in write-ahead-log mode.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: sqlite3.Connection, record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def read_only_engine(path: Path) -> Engine | None:
    """An engine that reads the SQLite file at ``path`` where it cannot be opened for writing.

    A store in write-ahead-log mode needs its ``-shm`` file, which SQLite cannot create in a
    read-only directory or file system; the file is then opened read-only (``mode=ro``), or as
    immutable when even that fails (nothing can change a file there). ``None`` when neither
    opens it.
    """
    for parameters in ("mode=ro", "mode=ro&immutable=1"):
        uri = f"file:{file_uri(path)}?{parameters}"
        if sqlite_readable(uri):
            engine = create_engine(
                "sqlite://",
                creator=lambda uri=uri: sqlite3.connect(
                    uri, uri=True, timeout=SQLITE_TIMEOUT, check_same_thread=False
                ),
                poolclass=NullPool,
            )
            serialise_writers(engine)
            return engine
    return None
