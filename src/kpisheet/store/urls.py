"""Naming a store: database URLs, SQLite files given as paths, and URLs as they may be shown."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

# SQLAlchemy is imported where a URL is parsed: telling a file from a store needs none of it.
if TYPE_CHECKING:
    from sqlalchemy.engine import URL

#: The first bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"
#: File name endings of a SQLite store given as a path that does not exist yet.
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def is_store_url(text: object) -> TypeGuard[str]:
    """True for a SQLAlchemy database URL such as ``sqlite:///kpis.db`` or ``postgresql+psycopg://...``."""
    if not isinstance(text, str) or "://" not in text:
        return False
    scheme = text.split("://", 1)[0]
    if len(scheme) < 2:  # a Windows drive letter, C://...
        return False
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(text).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        return False
    return True


def is_memory_url(url: str) -> bool:
    """True for a SQLite URL of an in-memory database (``sqlite://``, ``sqlite:///:memory:``):
    what is written there is gone when the process ends."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

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
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return str(url)


def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of a SQLite file."""
    from sqlalchemy.engine import URL

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
