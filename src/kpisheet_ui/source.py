"""Where the app's sheets come from: opened once per data release and shared by every session.

A :class:`SheetSource` opens the sheet of a store's newest release and keeps it in a cache keyed
by release id; sessions ask it for the current sheet and so pick up a new release on their next
poll, without a restart and without anyone clearing a cache. Without a store the source serves
one sheet (the bundled demo sheet, or files given by path).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import kpisheet
from kpisheet.diff import ReleaseDiff, diff_releases
from kpisheet.errors import ChecksumError
from kpisheet.presentation import month_long
from kpisheet.presentation.formats import swiss_count
from kpisheet.store import Store

log = logging.getLogger(__name__)

#: Seconds between two looks at the store for a new release.
DEFAULT_POLL_SECONDS = 30.0
#: Releases whose sheets stay in memory (the newest ones).
CACHED_RELEASES = 2
#: Months whose restated values the new-release note lists by name.
RESTATED_MONTHS_SHOWN = 3

# Environment variables that configure the app when it is started by ``panel serve``.
STORE_ENV = "KPISHEET_STORE"
DEFINITIONS_ENV = "KPISHEET_DEFINITIONS"
ENTITIES_ENV = "KPISHEET_ENTITIES"
POLL_ENV = "KPISHEET_POLL_SECONDS"


@dataclass(frozen=True)
class SheetConfig:
    """What the app serves: a store URL (or ``None`` for the demo sheet), definitions, entities."""

    store: str | None = None
    definitions: tuple[str, ...] = ()
    entities: str | None = None
    poll_seconds: float = DEFAULT_POLL_SECONDS

    @classmethod
    def from_env(cls) -> SheetConfig:
        """The configuration from ``KPISHEET_STORE``, ``KPISHEET_DEFINITIONS`` (``os.pathsep``-separated),
        ``KPISHEET_ENTITIES`` and ``KPISHEET_POLL_SECONDS``."""
        definitions = os.environ.get(DEFINITIONS_ENV, "")
        return cls(
            store=os.environ.get(STORE_ENV) or None,
            definitions=tuple(p for p in definitions.split(os.pathsep) if p),
            entities=os.environ.get(ENTITIES_ENV) or None,
            poll_seconds=float(os.environ.get(POLL_ENV) or DEFAULT_POLL_SECONDS),
        )


def refusal_notice(error: ChecksumError) -> str:
    """The app's notice (German) for a release it refuses because its checksum does not match."""
    return (
        f"Release {error.release} wird nicht angezeigt: Seine gespeicherten Werte stimmen nicht "
        "mehr mit der Prüfsumme überein, mit der sie geladen wurden; sie wurden nachträglich "
        "verändert. Bitte die Datenverantwortlichen informieren."
    )


class SheetSource:
    """Opens and caches the sheet of each release; notices new releases in the store.

    Each release is verified against its checksum when it is opened, and a release whose
    values were changed since it was written is refused (:class:`~kpisheet.ChecksumError`).
    A store replaced under the running server (another file, or other releases under the same
    ids) empties the cache, so its sheets are opened anew instead of served from memory.

    Thread-safe: sessions on the server's event loop and background threads may call it at once.
    """

    def __init__(self, config: SheetConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._sheets: dict[int | None, kpisheet.KPISheet] = {}
        self._latest_id: int | None = None
        self._checked_at = float("-inf")
        self._store = Store(config.store) if config.store else None
        # The store as last seen: its file (SQLite) and each release's checksum and creation time.
        self._identity: tuple[object, dict[int, tuple[object, ...]]] | None = None
        self._refused: dict[int | None, ChecksumError] = {}

    def __repr__(self) -> str:
        return (
            f"<SheetSource {self.config.store or 'demo'}: releases {sorted(self._sheets, key=str)}>"
        )

    def _definitions(self) -> Sequence[str] | None:
        return list(self.config.definitions) or None

    def latest_release_id(self, *, max_age: float | None = None) -> int | None:
        """The newest release id in the store (``None`` without a store).

        Looks at the store at most once per ``max_age`` seconds (default: the poll interval),
        however many sessions ask.
        """
        if self._store is None:
            return None
        max_age = self.config.poll_seconds if max_age is None else max_age
        with self._lock:
            if time.monotonic() - self._checked_at < max_age and self._latest_id is not None:
                return self._latest_id
        infos = self._store.releases()
        identity = (self._file_identity(), {i.id: (i.checksum, i.created_at) for i in infos})
        with self._lock:
            self._checked_at = time.monotonic()
            if self._identity is not None and _replaced(self._identity, identity):
                log.warning("store %s was replaced; its sheets are opened anew", self._store.url)
                self._sheets.clear()
                self._refused.clear()
                self._latest_id = None
            self._identity = identity
            if infos:
                self._latest_id = infos[-1].id
            return self._latest_id

    def _file_identity(self) -> tuple[int, int] | None:
        """Device and inode of a SQLite store's file: another file when it was replaced."""
        path = self._store.path if self._store is not None else None
        try:
            stat = path.stat() if path is not None else None
        except OSError:
            return None
        return (stat.st_dev, stat.st_ino) if stat is not None else None

    def sheet(self, release: int | None = None) -> kpisheet.KPISheet:
        """The sheet of a release (without a store: the one sheet), opened on first use."""
        with self._lock:
            cached = self._sheets.get(release)
            if cached is not None:
                return cached
            refused = self._refused.get(release)
            if refused is not None:  # verified once is enough, until the store is replaced
                raise refused
            try:
                opened = kpisheet.open(
                    self.config.store,
                    definitions=self._definitions(),
                    entities=self.config.entities,
                    release=release,
                    verify=self._store is not None,
                )
            except ChecksumError as exc:
                self._refused[release] = exc
                raise
            self._sheets[release] = opened
            for old in sorted((k for k in self._sheets if k is not None), reverse=True)[
                CACHED_RELEASES:
            ]:
                del self._sheets[old]
            return opened

    def changes_note(self, release: int) -> str:
        """What a release changed against the one before it, in a short German sentence
        ("12 Werte aus September 2026 restated."); empty without a store or an earlier release."""
        if self._store is None:
            return ""
        ids = [info.id for info in self._store.releases() if info.id <= release]
        if len(ids) < 2 or ids[-1] != release:
            return ""
        old, new = ids[-2], ids[-1]
        changes = diff_releases(
            self._store.read(old)[1],
            self._store.read(new)[1],
            old_hierarchy=self._store.hierarchy(old),
            new_hierarchy=self._store.hierarchy(new),
        )
        return changes_text(changes)

    def close_connections(self) -> None:
        """Close the store's connections (they are opened again on the next look at the store):
        before the server forks, so that no two processes share a database connection."""
        if self._store is not None:
            self._store.close()

    def current(self, *, max_age: float | None = None) -> kpisheet.KPISheet:
        """The sheet of the newest release (polling the store at most every ``max_age`` seconds)."""
        if self._store is None:
            return self.sheet(None)
        return self.sheet(self.latest_release_id(max_age=max_age))


def changes_text(changes: ReleaseDiff) -> str:
    """A release's changes as the app's short German note: restated values per month (newest
    first), products added, removed or moved; empty when there is nothing to say."""
    parts: list[str] = []
    per_month = sorted(changes.restated_per_month.items(), reverse=True)
    if per_month:
        shown = [
            f"{swiss_count(n)} {'Wert' if n == 1 else 'Werte'} aus {month_long(month)}"
            for month, n in per_month[:RESTATED_MONTHS_SHOWN]
        ]
        rest = len(per_month) - RESTATED_MONTHS_SHOWN
        more = f" und aus {rest} weiteren Monaten" if rest > 0 else ""
        parts.append(f"{', '.join(shown)}{more} restated")
    for count, word in (
        (len(changes.entities_added), "neu"),
        (len(changes.entities_removed), "entfallen"),
        (len(set(changes.moves["entity"])), "umgruppiert"),
    ):
        if count:
            parts.append(f"{swiss_count(count)} Produkt{'e' if count != 1 else ''} {word}")
    return "; ".join(parts) + "." if parts else ""


def _replaced(
    before: tuple[object, dict[int, tuple[object, ...]]],
    now: tuple[object, dict[int, tuple[object, ...]]],
) -> bool:
    """True when the store is not the one seen before: another file, or releases seen before
    missing or different (new releases alone are the store going on, not a replacement)."""
    (file_before, releases_before), (file_now, releases_now) = before, now
    if file_before is not None and file_now is not None and file_before != file_now:
        return True
    return any(releases_now.get(key) != value for key, value in releases_before.items())


_SOURCES: dict[SheetConfig, SheetSource] = {}
_SOURCES_LOCK = threading.Lock()


def get_source(config: SheetConfig) -> SheetSource:
    """The one :class:`SheetSource` of a configuration, shared by every session of the process."""
    with _SOURCES_LOCK:
        source = _SOURCES.get(config)
        if source is None:
            source = _SOURCES[config] = SheetSource(config)
        return source
