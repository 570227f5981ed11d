"""``kpisheet serve``: the app on a Bokeh/Tornado server, with optional login and a usage log.

Every response carries the security headers of :mod:`kpisheet_ui.headers`; the Bokeh session
token embedded in each page carries no cookie and no credential header
(:data:`TOKEN_EXCLUDED_HEADERS`); with a login, sessions, throttling and the login page are those
of :mod:`kpisheet_ui.auth`. docs/operations.md describes running it for others.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kpisheet.errors import KpisheetError
from kpisheet_ui.sessions import SWEEP_SECONDS, SessionSettings
from kpisheet_ui.source import DEFAULT_POLL_SECONDS, SheetConfig, SheetSource, get_source
from kpisheet_ui.sync import only_sent_models_synced
from kpisheet_ui.throttle import ThrottleSettings
from kpisheet_ui.usage import configure_usage_log

log = logging.getLogger(__name__)

DEFAULT_PORT = 5006
#: Threads per server process that run the sessions' callbacks (queries, tables, charts), so a
#: session's work does not hold up the event loop and the other sessions' messages; the engine
#: and pandas release the interpreter lock in their array work, the rest takes turns.
DEFAULT_THREADS = 4
#: Milliseconds a session whose page closed is kept (for a reload or a lost connection that
#: comes back) before it is destroyed and its memory freed; Bokeh's default.
UNUSED_SESSION_MILLISECONDS = 15_000
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
    from kpisheet.demo import demo_store_url
    from kpisheet.store import store_url_of

    store = demo_store_url() if store is None else store_url_of(store) or store
    return SheetConfig(
        store=store,
        definitions=tuple(str(p) for p in definitions),
        entities=str(entities) if entities is not None else None,
        poll_seconds=poll_seconds,
    )


#: The allocators the server runs with, where not set otherwise, so that the memory of closed
#: pages goes back to the system (docs/performance.md, "Memory after closing"):
#:
#: - ``PYTHONMALLOC=malloc``: Python's objects from the C library's heap, whose free pages
#:   ``malloc_trim`` returns. Python's own allocator keeps each 1 MiB arena while one object in
#:   it lives, and the few long-lived objects made during clicks kept about a hundred of them.
#: - ``MALLOC_ARENA_MAX=1``: one heap for all threads. ``malloc_trim`` trims the free top of the
#:   main heap only; each page thread's heap kept up to 64 MiB of it (the threshold
#:   :mod:`kpisheet.allocator` sets for the queries' sake).
#: - ``ARROW_DEFAULT_MEMORY_POOL=system``: Arrow's buffers (the table's text kernels) from the
#:   same heap; Arrow's default pool (mimalloc) kept its freed pages.
SERVER_ENV = {
    "PYTHONMALLOC": "malloc",
    "MALLOC_ARENA_MAX": "1",
    "ARROW_DEFAULT_MEMORY_POOL": "system",
}


def server_environment(environ: Mapping[str, str]) -> dict[str, str] | None:
    """``environ`` with the settings of :data:`SERVER_ENV` it lacks; ``None`` when it lacks none
    (a setting given, whatever its value, is the operator's choice and kept)."""
    missing = {name: value for name, value in SERVER_ENV.items() if name not in environ}
    return {**environ, **missing} if missing else None


def restart_with_server_allocators() -> None:
    """Run this process again with :data:`SERVER_ENV` (``exec``: the same process id, the same
    command line), when it is the ``kpisheet`` command started from a shell or a service.

    The allocators are chosen when the interpreter starts, so they cannot be switched later.
    Nothing happens when every setting is given already (as after the restart), on a system
    without ``exec``, or when the command runs inside another program (a test calling it).
    """
    if os.name != "posix" or not sys.executable or not _started_as_command():
        return
    environ = server_environment(os.environ)
    if environ is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, environ)


def _started_as_command() -> bool:
    """Whether this process is ``kpisheet`` (the installed script) or ``python -m kpisheet.cli``."""
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if program is None:
        return False
    return program.name == "kpisheet" or program.parts[-2:] == ("kpisheet", "cli.py")


def serve(config: SheetConfig, **options: Any) -> None:
    """Serve the app until interrupted; the options are those of :func:`make_server`.

    :raises KpisheetError: when the sheet cannot be opened or the users file is unusable.
    :raises ServeError: for several processes with a login.
    """
    server = make_server(config, **options)
    server.start()
    server.io_loop.asyncio_loop.set_exception_handler(quiet_closed_pages)
    server.io_loop.start()


def quiet_closed_pages(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's handler of errors nobody waited for: a page that closed while the server
    was still writing to it (tornado's ``WebSocketClosedError`` or ``StreamClosedError``) is the
    visitor going away, noted at debug level; anything else goes to asyncio's default handler,
    which logs it with its traceback."""
    from tornado.iostream import StreamClosedError
    from tornado.websocket import WebSocketClosedError

    if isinstance(context.get("exception"), WebSocketClosedError | StreamClosedError):
        log.debug("a page closed while the server was writing to it")
        return
    loop.default_exception_handler(context)


def make_server(
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
    processes: int = 1,
    threads: int | None = DEFAULT_THREADS,
    unused_session_milliseconds: int = UNUSED_SESSION_MILLISECONDS,
) -> Any:
    """The app's Bokeh server, not started yet (``server.start()``, then its ``io_loop``).

    The sheet is opened before the server is made, so bad input fails here, with kpisheet's
    message, and the first visitor does not wait. ``processes``, ``threads`` and
    ``unused_session_milliseconds``: see :func:`concurrency_options`.

    :raises KpisheetError: when the sheet cannot be opened or the users file is unusable.
    :raises ServeError: for several processes with a login.
    """
    from kpisheet.store import display_url
    from kpisheet_ui.users import cookie_secret

    if processes > 1 and auth is not None:
        raise ServeError(MANY_PROCESSES_WITH_LOGIN)
    source = get_source(config)
    sheet = source.current()
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

    options.update(concurrency_options(source, processes, threads, unused_session_milliseconds))
    only_sent_models_synced()
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
    return server


class ServeError(KpisheetError, ValueError):
    """Raised when options of the web server do not go together (several processes, a login)."""


#: Why ``--num-procs`` is refused with ``--auth``.
MANY_PROCESSES_WITH_LOGIN = (
    "--num-procs with --auth: login sessions live in the process that made them, and the "
    "processes of one server share no memory; run one process per server and several servers "
    "behind a proxy that sends each visitor to the same server (see docs/operations.md)"
)


class SessionOrderedExecutor(ThreadPoolExecutor):
    """Panel's thread pool, with one rule added: the tasks of one page run one at a time, in the
    order they came in; different pages' tasks run side by side.

    Panel hands each message of a page to the pool as it arrives. With a plain pool, two quick
    changes of one widget (three entities picked, then a fourth) could run at once and finish in
    the wrong order, so the page kept the older table. Tasks are matched to their page by the
    Bokeh document Panel passes along; a task without one runs on its own.
    """

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix="kpisheet-page")
        self._queues: dict[int, deque[tuple[Callable[[], Any], Future[Any]]]] = {}
        self._queues_lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        document = _document_of(fn, args)
        if document is None:
            return super().submit(fn, *args, **kwargs)
        future: Future[Any] = Future()
        key = id(document)
        with self._queues_lock:
            queue = self._queues.setdefault(key, deque())
            queue.append((functools.partial(fn, *args, **kwargs), future))
            if len(queue) > 1:  # the page's runner is at work and will come to it
                return future
        super().submit(self._run_page, key)
        return future

    def _run_page(self, key: int) -> None:
        """Run a page's tasks until its queue is empty."""
        while True:
            with self._queues_lock:
                task, future = self._queues[key][0]
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(task())
                except BaseException as exc:  # handed to whoever waits for the future
                    future.set_exception(exc)
            with self._queues_lock:
                queue = self._queues[key]
                queue.popleft()
                if not queue:
                    del self._queues[key]
                    return


def _document_of(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """The Bokeh document a task of Panel's belongs to (an argument, a bound argument of a
    ``partial``, or the ``_doc`` of the object whose method it is), else ``None``."""
    from bokeh.document import Document

    candidates = [*args]
    if isinstance(fn, functools.partial):
        candidates += fn.args
    candidates.append(getattr(getattr(fn, "__self__", None), "_doc", None))
    return next((c for c in candidates if isinstance(c, Document)), None)


def no_replayed_echoes() -> None:
    """Bokeh sends no page its own change back when the change is replayed after a hold.

    While a page's work runs on a thread, Panel holds the page's document, and changes coming in
    from the browser meanwhile are kept and replayed when the hold ends. Bokeh leaves out the
    browser a change came from only while it applies that browser's message; a replayed change
    went back to the browser as if it were new. If the visitor had picked again meanwhile (a
    fourth entity after a third), the browser was sent its older value and showed it, while the
    table followed the newer one. A change the browser made (its setter is the session, which
    applies the browser's messages) is never news to it, so it is not sent when replayed; Bokeh
    serves one browser page per session. Changes made by the app are sent as before.
    """
    from bokeh.server.session import ServerSession

    sent = ServerSession._document_patched
    if getattr(sent, "_kpisheet_no_replay", False):
        return

    @functools.wraps(sent)
    def document_patched(session: ServerSession, event: Any) -> None:
        if event.setter is session and session._current_patch_connection is None:
            return  # the browser's own change, replayed after a hold
        sent(session, event)

    document_patched._kpisheet_no_replay = True  # type: ignore[attr-defined]
    ServerSession._document_patched = document_patched  # type: ignore[method-assign]


def concurrency_options(
    source: SheetSource,
    processes: int,
    threads: int | None,
    unused_session_milliseconds: int = UNUSED_SESSION_MILLISECONDS,
) -> dict[str, Any]:
    """Options of the Bokeh server for serving many sessions at once.

    - ``threads``: the sessions' callbacks run on a pool of this many threads per process instead
      of the event loop (Panel's ``nthreads``), so one session's query does not stop the others'
      pages from being answered; ``None`` or 0 runs them on the event loop.
    - ``processes``: this many server processes share the port (Bokeh's ``num_procs``); each
      session lives in one of them. They are forked after the sheet was opened, so they share its
      memory until they open a new release. The store's connections are closed before the fork,
      so that no two processes use one connection.

    A session whose page closed is destroyed (and its memory freed, see
    :func:`kpisheet_ui.app.create_app`) after ``unused_session_milliseconds``, looked for three
    times as often.
    """
    import panel as pn
    from panel.io.state import state

    pn.config.nthreads = threads or None
    if threads:  # Panel made a plain pool; its tasks go to one that keeps each page's order
        state._thread_pool.shutdown(wait=False)
        state._thread_pool = SessionOrderedExecutor(threads)
        no_replayed_echoes()
    if processes > 1:
        source.close_connections()
    return {
        "num_procs": processes,
        "unused_session_lifetime_milliseconds": unused_session_milliseconds,
        "check_unused_sessions_milliseconds": max(unused_session_milliseconds // 3, 50),
    }


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
