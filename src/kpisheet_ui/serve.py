"""``kpisheet serve``: the app on a Bokeh/Tornado server, with optional login and a usage log.

Every response carries the security headers of :mod:`kpisheet_ui.headers`; the Bokeh session
token embedded in each page carries no cookie and no credential header
(:data:`TOKEN_EXCLUDED_HEADERS`); with a login, sessions, throttling and the login page are those
of :mod:`kpisheet_ui.auth`. docs/operations.md describes running it for others.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kpisheet_ui.sessions import SWEEP_SECONDS, SessionSettings
from kpisheet_ui.source import DEFAULT_POLL_SECONDS, SheetConfig, get_source
from kpisheet_ui.throttle import ThrottleSettings
from kpisheet_ui.usage import configure_usage_log

log = logging.getLogger(__name__)

DEFAULT_PORT = 5006
#: Request headers never copied into the Bokeh session token (which page scripts can read).
TOKEN_EXCLUDED_HEADERS = ["Cookie", "Authorization", "Proxy-Authorization", "X-Xsrftoken"]


def sheet_config(
    store: str | None,
    definitions: Sequence[str | Path] = (),
    entities: str | Path | None = None,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
) -> SheetConfig:
    """What to serve; without a store, the demo sheet's store (built once in the user cache).

    A SQLite store given by its file name becomes its URL, so the app finds it from anywhere.
    """
    from kpisheet.store import demo_store_url, store_url_of

    store = demo_store_url() if store is None else store_url_of(store) or store
    return SheetConfig(
        store=store,
        definitions=tuple(str(p) for p in definitions),
        entities=str(entities) if entities is not None else None,
        poll_seconds=poll_seconds,
    )


def serve(
    config: SheetConfig,
    *,
    port: int = DEFAULT_PORT,
    address: str | None = None,
    auth: str | Path | None = None,
    allow_origins: Sequence[str] = (),
    usage_log: str | Path | None = None,
    show: bool = False,
    sessions: SessionSettings | None = None,
    throttle: ThrottleSettings | None = None,
) -> None:
    """Serve the app until interrupted.

    The sheet is opened before the server starts, so bad input fails here, with kpisheet's
    message, and the first visitor does not wait.

    :raises KpisheetError: when the sheet cannot be opened or the users file is unusable.
    """
    from kpisheet.store import display_url
    from kpisheet_ui.users import cookie_secret

    sheet = get_source(config).current()
    secret = None
    if auth is not None:
        from kpisheet_ui.scopes import unknown_scopes
        from kpisheet_ui.users import load_user_records

        for user in load_user_records(auth).values():
            unknown = unknown_scopes(sheet.hierarchy, user.scopes)
            if unknown:
                log.warning(
                    "user %r: scopes %s name no entity of %s",
                    user.name,
                    ", ".join(unknown),
                    display_url(config.store or ""),
                )
        secret = cookie_secret(auth)

    import panel as pn

    from kpisheet_ui.app import TITLE, create_app
    from kpisheet_ui.headers import SecurityHeaders

    configure_usage_log(usage_log)
    sessions = sessions or SessionSettings()
    options: dict[str, Any] = {
        "transforms": [SecurityHeaders],
        "include_cookies": [],
        "exclude_headers": TOKEN_EXCLUDED_HEADERS,
        "xsrf_cookie_kwargs": {
            "httponly": True,
            "samesite": "Strict",
            "secure": sessions.secure_cookies,
        },
    }
    provider = None
    if auth is not None:
        from kpisheet_ui.auth import PasswordAuthProvider
        from kpisheet_ui.sessions import SessionStore, UsersFile
        from kpisheet_ui.throttle import LoginThrottle

        provider = PasswordAuthProvider(
            auth, SessionStore(UsersFile(auth), sessions), LoginThrottle(throttle)
        )
        options["auth_provider"] = provider
        options["cookie_secret"] = secret
    host = address or "localhost"
    names = ["localhost", "127.0.0.1", host]
    if host not in ("localhost", "127.0.0.1", "::1"):
        names += [socket.gethostname(), socket.getfqdn()]
    origins = [*allow_origins, *(f"{name}:{port}" for name in names)]
    print(
        f"kpisheet: serving {display_url(config.store or '')} at http://{host}:{port} (Ctrl+C stops)",
        file=sys.stderr,
        flush=True,
    )

    def app() -> object:
        return create_app(config)

    server = pn.serve(
        {"/": app},
        port=port,
        address=host,
        websocket_origin=list(dict.fromkeys(origins)),
        show=show,
        title=TITLE,
        start=False,
        **options,
    )
    guard_autoload(server)
    if provider is not None:
        from tornado.ioloop import PeriodicCallback

        # Expired and revoked sessions end (closing their pages) even when nobody asks for them.
        PeriodicCallback(provider.sessions.sweep, SWEEP_SECONDS * 1000).start()
    server.start()
    server.io_loop.start()


def guard_autoload(server: Any) -> None:
    """Answer an unauthenticated ``autoload.js`` with 403 instead of a server traceback.

    Bokeh's handler asks for a session, which is refused without login, and then fails on the
    missing session; the guard checks the login first.
    """
    from panel.io.server import AutoloadJsHandler

    class GuardedAutoloadJsHandler(AutoloadJsHandler):
        async def get(self, *args: Any, **kwargs: Any) -> None:
            if self.application.auth_provider is not None and not self.current_user:
                self.send_error(403)
                return
            await super().get(*args, **kwargs)

    for rule in server._tornado.wildcard_router.rules:  # Bokeh offers no public route table
        if rule.target is AutoloadJsHandler:
            rule.target = GuardedAutoloadJsHandler
