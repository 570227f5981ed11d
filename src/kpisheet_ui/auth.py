"""The app's login: users file, server-side sessions, throttling, CSRF token, local redirects.

:class:`PasswordAuthProvider` is Panel's :class:`~panel.auth.BasicAuthProvider` with its own
login and logout pages (German) and its own idea of who is logged in: the id in the
``kpisheet_session`` cookie must name a live :class:`~kpisheet_ui.sessions.LoginSession`. The
provider guards every page, the websocket and therefore every download (downloads travel over
the websocket). The cookie is HttpOnly and never copied into the Bokeh session token that each
page embeds (``kpisheet serve`` sets ``include_cookies=[]`` and drops credential headers), so
no page script can read a credential.

The login form carries Tornado's XSRF token; ``next=`` is followed only to a path on this site;
error messages are fixed texts chosen by a code (nothing from the URL is shown). Password hashes
are checked on a small thread pool, never on the server's event loop, and only when
:class:`~kpisheet_ui.throttle.LoginThrottle` allows an attempt.
"""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import tornado.web
from panel.auth import BasicAuthProvider
from panel.io.resources import CDN_DIST
from panel.io.state import state

from kpisheet_ui.sessions import SESSION_COOKIE, EndReason, SessionStore, UsersFile
from kpisheet_ui.throttle import LoginThrottle
from kpisheet_ui.usage import log_event
from kpisheet_ui.users import User, check_credentials

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).with_name("templates")
LOGIN_TEMPLATE = TEMPLATES / "login.html"
LOGOUT_TEMPLATE = TEMPLATES / "logout.html"
LOGIN_FAILED = "Benutzername oder Passwort falsch."
#: The login page's messages, by the code in ``?error=``; any other code shows nothing.
LOGIN_ERRORS: dict[str, str] = {
    "falsch": LOGIN_FAILED,
    "gebremst": "Zu viele Fehlversuche. Bitte warten Sie einen Moment und versuchen Sie es erneut.",
    "gesperrt": (
        "Zu viele Fehlversuche. Bitte warten Sie einige Minuten und versuchen Sie es dann erneut."
    ),
    "formular": "Das Anmeldeformular war abgelaufen. Bitte melden Sie sich erneut an.",
}
#: Threads that check password hashes (scrypt costs tens of milliseconds and 16 MiB each).
HASH_THREADS = 2
#: A local path: starts with one slash (not ``//`` or ``/\``), then URL characters only.
_LOCAL_PATH = re.compile(r"/(?![/\\])[A-Za-z0-9\-._~!$&'()*+,;=:@%/?#]*")

_hash_pool = ThreadPoolExecutor(max_workers=HASH_THREADS, thread_name_prefix="kpisheet-login")


def local_path(url: str | None, default: str) -> str:
    """``url`` when it is a path on this site, else ``default`` (no open redirects).

    Refused: absolute URLs, scheme-relative ``//host``, ``///host`` and ``/\\host`` (browsers
    read all of them as another site), and any space, control or backslash character.
    """
    if not url or not _LOCAL_PATH.fullmatch(url):
        return default
    parts = urllib.parse.urlsplit(url)
    if parts.scheme or parts.netloc:
        return default
    return url


def _verify(users: UsersFile, name: str, password: str) -> User | None:
    """The user when ``password`` is theirs (runs on the hash pool)."""
    records = users.users()
    hashes = {user_name: user.hash for user_name, user in records.items()}
    return records[name] if check_credentials(hashes, name, password) else None


class PasswordLoginHandler(tornado.web.RequestHandler):
    """The login page (GET) and the login (POST)."""

    sessions: ClassVar[SessionStore]
    throttle: ClassVar[LoginThrottle]
    _login_endpoint: ClassVar[str]
    _login_template: ClassVar[Any]

    def _redirect_with_error(self, code: str, next_url: str) -> None:
        query = urllib.parse.urlencode({"error": code, "next": next_url})
        self.redirect(f"{self.request.path}?{query}")

    def get(self) -> None:
        code = self.get_argument("error", "")
        next_url = local_path(self.get_argument("next", ""), state.base_url or "/")
        html = self._login_template.render(
            login_endpoint=self._login_endpoint,
            errormessage=LOGIN_ERRORS.get(code, ""),
            xsrf_token=self.xsrf_token.decode("ascii"),
            next_url=next_url,
            PANEL_CDN=CDN_DIST,
        )
        self.set_header("Cache-Control", "no-store")
        self.write(html)

    async def post(self) -> None:
        username = self.get_argument("username", "")
        password = self.get_argument("password", "")
        next_url = local_path(self.get_argument("next", ""), state.base_url or "/")
        address = self.request.remote_ip or "-"
        try:
            self.check_xsrf_cookie()
        except tornado.web.HTTPError:
            log.warning(
                "login refused: missing or wrong form token (user %r from %s)", username, address
            )
            log_event("anmeldung_abgelehnt", user=username, address=address, reason="csrf")
            self._redirect_with_error("formular", next_url)
            return
        if not self.throttle.begin(username, address):
            code = "gesperrt" if self.throttle.locked(username, address) else "gebremst"
            log.warning("login refused (%s): user %r from %s", code, username, address)
            log_event("anmeldung_abgelehnt", user=username, address=address, reason=code)
            self._redirect_with_error(code, next_url)
            return
        loop = asyncio.get_running_loop()
        try:
            user = await loop.run_in_executor(
                _hash_pool, _verify, self.sessions.users, username, password
            )
        except BaseException:
            self.throttle.failure(username, address)  # never leave the name and address busy
            raise
        if user is None:
            locked = self.throttle.failure(username, address)
            log.warning("failed login: user %r from %s", username, address)
            log_event("anmeldung_fehlgeschlagen", user=username, address=address)
            if locked:
                minutes = self.throttle.settings.lock_seconds / 60
                log.warning(
                    "login locked for %g minutes: user %r / address %s", minutes, username, address
                )
                log_event("gesperrt", user=username, address=address, minutes=minutes)
            self._redirect_with_error("gesperrt" if locked else "falsch", next_url)
            return
        self.throttle.success(username, address)
        old = self.get_cookie(SESSION_COOKIE)
        if old:
            self.sessions.end(old, EndReason.LOGOUT)
        session = self.sessions.create(user, address)
        set_session_cookie(self, session.id, self.sessions.settings.secure_cookies)
        self.redirect(next_url)


def set_session_cookie(handler: tornado.web.RequestHandler, value: str, secure: bool) -> None:
    """The session cookie: HttpOnly, SameSite=Strict, Secure over HTTPS or when configured."""
    handler.set_cookie(
        SESSION_COOKIE,
        value,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=secure or handler.request.protocol == "https",
    )


class PasswordLogoutHandler(tornado.web.RequestHandler):
    """Logout: the server forgets the session (its open pages close) and the cookie is cleared."""

    sessions: ClassVar[SessionStore]
    _login_endpoint: ClassVar[str]
    _logout_template: ClassVar[Any]

    def get(self) -> None:
        session_id = self.get_cookie(SESSION_COOKIE)
        if session_id:
            self.sessions.end(session_id, EndReason.LOGOUT)
        self.clear_cookie(SESSION_COOKIE, path="/")
        self.set_header("Cache-Control", "no-store")
        self.write(
            self._logout_template.render(PANEL_CDN=CDN_DIST, LOGIN_ENDPOINT=self._login_endpoint)
        )


class PasswordAuthProvider(BasicAuthProvider):
    """Login with the users file, into sessions kept by a :class:`SessionStore`."""

    def __init__(
        self,
        users_file: str | Path,
        sessions: SessionStore | None = None,
        throttle: LoginThrottle | None = None,
        **kwargs: Any,
    ) -> None:
        from kpisheet_ui.users import load_users

        self.users_file = Path(users_file)
        load_users(self.users_file)  # fail at start-up, not at the first login
        self.sessions = sessions or SessionStore(UsersFile(self.users_file))
        self.throttle = throttle or LoginThrottle()
        kwargs.setdefault("login_template", str(LOGIN_TEMPLATE))
        kwargs.setdefault("logout_template", str(LOGOUT_TEMPLATE))
        super().__init__(**kwargs)

    @property
    def get_user(self) -> Any:
        def get_user(request_handler: tornado.web.RequestHandler) -> str | None:
            session = self.sessions.get(request_handler.get_cookie(SESSION_COOKIE))
            if session is None:
                return None
            # Read back by the page through Bokeh's request proxy (kpisheet_ui.sessions.session_of).
            request_handler.request.kpisheet_login = session  # type: ignore[attr-defined]
            return session.name

        return get_user

    @property
    def login_handler(self) -> type[PasswordLoginHandler]:
        return type(
            "BoundPasswordLoginHandler",
            (PasswordLoginHandler,),
            {
                "sessions": self.sessions,
                "throttle": self.throttle,
                "_login_endpoint": self._login_endpoint,
                "_login_template": self._login_template,
            },
        )

    @property
    def logout_handler(self) -> type[PasswordLogoutHandler]:
        return type(
            "BoundPasswordLogoutHandler",
            (PasswordLogoutHandler,),
            {
                "sessions": self.sessions,
                "_login_endpoint": self._login_endpoint,
                "_logout_template": self._logout_template,
            },
        )
