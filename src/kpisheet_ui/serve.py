"""``kpisheet serve``: the app on a Bokeh/Tornado server, with optional login and a usage log."""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from kpisheet_ui.source import DEFAULT_POLL_SECONDS, SheetConfig, get_source
from kpisheet_ui.usage import configure_usage_log

log = logging.getLogger(__name__)

DEFAULT_PORT = 5006


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
) -> None:
    """Serve the app until interrupted.

    The sheet is opened before the server starts, so bad input fails here, with kpisheet's
    message, and the first visitor does not wait.

    :raises KpisheetError: when the sheet cannot be opened or the users file is unusable.
    """
    from kpisheet.store import display_url
    from kpisheet_ui.users import cookie_secret, load_users

    get_source(config).current()
    secret = None
    if auth is not None:
        load_users(auth)
        secret = cookie_secret(auth)

    import panel as pn

    from kpisheet_ui.app import TITLE, create_app

    configure_usage_log(usage_log)
    options: dict[str, object] = {}
    if auth is not None:
        from kpisheet_ui.auth import PasswordAuthProvider

        options["auth_provider"] = PasswordAuthProvider(auth)
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

    pn.serve(
        {"/": app},
        port=port,
        address=host,
        websocket_origin=list(dict.fromkeys(origins)),
        show=show,
        title=TITLE,
        start=True,
        **options,
    )
