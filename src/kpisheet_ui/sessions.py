"""Login sessions of the app: kept on the server, named by a random id in an HttpOnly cookie.

A successful login creates a :class:`LoginSession`; the browser holds only its id (in the
``kpisheet_session`` cookie: HttpOnly, SameSite=Strict, Secure over HTTPS). Every request and every
open page is checked against the store, so a session ends for good when

- the user logs out (``/logout``),
- it was idle longer than :attr:`SessionSettings.idle_seconds`,
- it is older than :attr:`SessionSettings.absolute_seconds`,
- the user's password or scopes changed or the user was removed from the users file
  (``kpisheet users passwd/remove``; the file is re-read when it changes).

When a session ends, the pages opened with it (their Bokeh sessions) are told to reload, which
leads to the login page, and their websockets are closed, so an open page stops working too.
Sessions live in the server process: a restart logs everybody out.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kpisheet_ui.usage import log_event
from kpisheet_ui.users import AuthError, User, load_user_records

log = logging.getLogger(__name__)

#: Name of the cookie holding the session id.
SESSION_COOKIE = "kpisheet_session"
#: Default minutes without a request or page activity after which a session ends.
DEFAULT_IDLE_MINUTES = 30.0
#: Default hours after login after which a session ends, however active.
DEFAULT_ABSOLUTE_HOURS = 12.0
#: Seconds between two sweeps for ended sessions (closing their open pages).
SWEEP_SECONDS = 2.0
#: Bytes of randomness of a session id.
SESSION_ID_BYTES = 32


class EndReason:
    """Why a session ended (the words of the server log and the usage log)."""

    LOGOUT = "logout"
    IDLE = "idle"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class SessionSettings:
    """How long sessions last and how their cookie is sent."""

    idle_seconds: float = DEFAULT_IDLE_MINUTES * 60
    absolute_seconds: float = DEFAULT_ABSOLUTE_HOURS * 3600
    #: Always mark the cookie ``Secure`` (else only when the request came over HTTPS).
    secure_cookies: bool = False


@dataclass
class LoginSession:
    """One login: who, since when, from where, and the pages opened with it."""

    id: str
    user: User
    address: str
    created: float
    last_seen: float
    #: Closers of the pages (Bokeh sessions) opened with this login, by Bokeh session id.
    pages: dict[str, Callable[[], None]] = field(default_factory=dict)
    store: SessionStore | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.user.name

    def alive(self) -> bool:
        """True while the session lasts; counts as activity (the idle time starts again)."""
        return self.store is not None and self.store.get(self.id) is not None

    def attach_page(self, page_id: str, close: Callable[[], None]) -> None:
        """Remember a page opened with this login; ``close`` ends it when the session ends."""
        self.pages[page_id] = close

    def detach_page(self, page_id: str) -> None:
        """Forget a page that the browser closed."""
        self.pages.pop(page_id, None)


class UsersFile:
    """The users file, re-read when it changes on disk (identity, size or modification time)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._users: dict[str, User] = {}

    def users(self) -> dict[str, User]:
        """The users now; an unreadable file has no users (so every session is refused)."""
        try:
            info = os.stat(self.path)
        except OSError:
            return {}
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._users = load_user_records(self.path)
                except AuthError as exc:
                    log.error("users file unusable, every login refused: %s", exc)
                    self._users = {}
                self._stamp = stamp
            return self._users


class SessionStore:
    """The server's login sessions. Thread-safe; ``clock`` is replaceable for tests."""

    def __init__(
        self,
        users: UsersFile,
        settings: SessionSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.users = users
        self.settings = settings or SessionSettings()
        self.clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, LoginSession] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, user: User, address: str) -> LoginSession:
        """A new session for ``user`` (who just proved their password)."""
        now = self.clock()
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        session = LoginSession(session_id, user, address, now, now, store=self)
        with self._lock:
            self._sessions[session.id] = session
        log.info("login: user %r from %s", user.name, address)
        log_event("anmeldung", user=user.name, address=address)
        return session

    def _end_reason(self, session: LoginSession, now: float) -> str | None:
        if now - session.created > self.settings.absolute_seconds:
            return EndReason.EXPIRED
        if now - session.last_seen > self.settings.idle_seconds:
            return EndReason.IDLE
        if self.users.users().get(session.name) != session.user:
            return EndReason.REVOKED
        return None

    def get(self, session_id: str | None, *, touch: bool = True) -> LoginSession | None:
        """The live session of an id (``None`` when unknown or ended; an ended one is closed)."""
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self.clock()
        reason = self._end_reason(session, now)
        if reason is not None:
            self.end(session_id, reason)
            return None
        if touch:
            session.last_seen = now
        return session

    def end(self, session_id: str, reason: str) -> LoginSession | None:
        """End a session: forget it, log it and close the pages opened with it."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            return None
        log.info("session of user %r ended: %s", session.name, reason)
        log_event("abmeldung", user=session.name, reason=reason, address=session.address)
        for close in list(session.pages.values()):
            try:
                close()
            except Exception:  # a page already gone must not keep the others open
                log.exception("could not close a page of user %r", session.name)
        session.pages.clear()
        return session

    def sweep(self) -> int:
        """End every session that expired or was revoked; how many ended."""
        with self._lock:
            ids = list(self._sessions)
        return sum(self.get(session_id, touch=False) is None for session_id in ids)


def session_of(request: Any) -> LoginSession | None:
    """The login session that :mod:`kpisheet_ui.auth` attached to a request (or its proxy)."""
    return getattr(request, "kpisheet_login", None)
