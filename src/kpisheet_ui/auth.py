"""The app's login: Panel's basic-auth mechanism, checking passwords against the users file.

:class:`PasswordAuthProvider` is Panel's :class:`~panel.auth.BasicAuthProvider` with a login
handler that verifies salted hashes (:mod:`kpisheet_ui.users`) instead of plain passwords, and
German login and logout pages. The provider guards every page, the websocket and therefore every
download (downloads travel over the websocket).
"""

from __future__ import annotations

import logging
import urllib.parse
from pathlib import Path
from typing import Any, ClassVar

import tornado.escape
from panel.auth import BasicAuthProvider, BasicLoginHandler
from panel.io.state import state

from kpisheet.errors import AuthError
from kpisheet_ui.users import check_credentials, load_users

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).with_name("templates")
LOGIN_TEMPLATE = TEMPLATES / "login.html"
LOGOUT_TEMPLATE = TEMPLATES / "logout.html"
LOGIN_FAILED = "Benutzername oder Passwort falsch."


class PasswordLoginHandler(BasicLoginHandler):
    """Panel's login page, checking the users file (re-read on every attempt)."""

    users_file: ClassVar[Path]

    def _validate(self, username: str, password: str) -> bool:
        try:
            users = load_users(self.users_file)
        except AuthError as exc:
            log.error("login refused: %s", exc)
            return False
        return check_credentials(users, username, password)

    def post(self) -> None:
        username = self.get_argument("username", "")
        password = self.get_argument("password", "")
        if self._validate(username, password):
            self.set_current_user(username)
            self.redirect(_same_site_path(self.get_cookie("next_url"), state.base_url or "/"))
        else:
            log.info("failed login for user %r", username)
            uri = self.request.uri.split("?", 1)[0]
            self.redirect(f"{uri}?error={tornado.escape.url_escape(LOGIN_FAILED)}")


def _same_site_path(url: str | None, default: str) -> str:
    """``url`` when it is a path on this site, else ``default`` (no open redirects)."""
    if not url:
        return default
    parts = urllib.parse.urlsplit(url)
    if parts.scheme or parts.netloc or "\\" in url or not url.startswith("/"):
        return default
    return url


class PasswordAuthProvider(BasicAuthProvider):
    """Login with the users file: a user name and a password whose salted hash matches."""

    def __init__(self, users_file: str | Path, **kwargs: Any) -> None:
        self.users_file = Path(users_file)
        load_users(self.users_file)  # fail at start-up, not at the first login
        kwargs.setdefault("login_template", str(LOGIN_TEMPLATE))
        kwargs.setdefault("logout_template", str(LOGOUT_TEMPLATE))
        super().__init__(**kwargs)

    @property
    def login_handler(self) -> type[PasswordLoginHandler]:
        return type(
            "BoundPasswordLoginHandler",
            (PasswordLoginHandler,),
            {
                "users_file": self.users_file,
                "_login_endpoint": self._login_endpoint,
                "_login_template": self._login_template,
            },
        )
