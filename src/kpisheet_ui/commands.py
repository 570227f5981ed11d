"""The web app's commands, ``kpisheet serve`` and ``kpisheet users``.

The plugin :mod:`kpisheet_ui.plugin` adds them to the ``kpisheet`` command line, so the core
never imports the app. This module imports no web package: the server starts inside ``serve``.
The settings that ``panel serve`` reads from ``KPISHEET_*`` variables are read from the same
variables here, through click's ``envvar``.
"""

from __future__ import annotations

import errno
import socket
import sys
from pathlib import Path

import click

from kpisheet.cli import (
    KpisheetGroup,
    UserError,
    definitions_option,
    entities_option,
    refuse_memory_store,
    shared_option,
    store_option,
)
from kpisheet_ui.serve import DEFAULT_PORT, DEFAULT_THREADS
from kpisheet_ui.sessions import DEFAULT_ABSOLUTE_HOURS, DEFAULT_IDLE_MINUTES
from kpisheet_ui.source import (
    DEFAULT_POLL_SECONDS,
    DEFINITIONS_ENV,
    ENTITIES_ENV,
    POLL_ENV,
    STORE_ENV,
)
from kpisheet_ui.throttle import ThrottleSettings
from kpisheet_ui.usage import USAGE_LOG_ENV
from kpisheet_ui.users import AUTH_ENV

#: Why a server cannot listen, by ``errno``.
PORT_PROBLEMS = {
    errno.EADDRINUSE: "the port is in use (another server?)",
    errno.EADDRNOTAVAIL: "the address is not one of this machine's",
    errno.EACCES: "the port needs administrator rights",
}


def port_error(address: str | None, port: int, number: int) -> UserError:
    """The one-line message for a server that cannot listen on ``address:port``."""
    return UserError(
        f"cannot serve on {address or 'localhost'}:{port}: {PORT_PROBLEMS[number]}; "
        "choose another with --port/--address"
    )


def check_port(address: str | None, port: int) -> None:
    """Refuse a port another program listens on (or one that needs privileges), by trying it.

    The probe binds as the server will (``SO_REUSEADDR``), so a port left in TIME_WAIT by a
    server just stopped is not refused; other failures are left to the server to report.
    """
    try:
        addresses = socket.getaddrinfo(
            address or "localhost", port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError:
        return
    for family, kind, protocol, _, where in addresses:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(where)
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    raise port_error(address, port, exc.errno) from exc


#: ``--auth``: the users file of the login.
auth_option = shared_option(
    "--auth",
    "auth_file",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar=AUTH_ENV,
    show_envvar=True,
)


@click.command()
@click.option(
    "--port", type=int, default=DEFAULT_PORT, show_default=True, help="Port to listen on."
)
@click.option(
    "--address", default=None, help="Address to listen on, e.g. 0.0.0.0. Default: localhost."
)
@store_option(
    envvar=STORE_ENV,
    show_envvar=True,
    help="Store URL to serve; new releases appear without a restart. Default: the demo store.",
)
@definitions_option(envvar=DEFINITIONS_ENV, show_envvar=True)
@entities_option(
    envvar=ENTITIES_ENV,
    show_envvar=True,
    help="Entity hierarchy YAML. Default: each release's own hierarchy (the demo's for --demo).",
)
@auth_option(
    default=None,
    help="Users file (see `kpisheet users add`); with it a login guards every page.",
)
@click.option("--demo", is_flag=True, help="Serve the bundled demo sheet (ignores --store).")
@click.option(
    "--poll-seconds",
    type=click.FloatRange(min=0.2),
    default=DEFAULT_POLL_SECONDS,
    show_default=True,
    envvar=POLL_ENV,
    show_envvar=True,
    help="How often open pages look for a new release in the store.",
)
@click.option(
    "--usage-log",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    envvar=USAGE_LOG_ENV,
    show_envvar=True,
    help="Append the usage log (one JSON line per interaction) here. Default: stderr.",
)
@click.option(
    "--allow-origin",
    "allow_origins",
    multiple=True,
    help="Extra HOST[:PORT] the app may be opened from (behind a proxy); repeatable.",
)
@click.option(
    "--secure-cookies",
    is_flag=True,
    help="Mark the login cookies Secure (behind a TLS proxy); over HTTPS they always are.",
)
@click.option(
    "--session-idle-minutes",
    type=click.FloatRange(min=1),
    default=DEFAULT_IDLE_MINUTES,
    show_default=True,
    help="A login session ends after this long without activity.",
)
@click.option(
    "--session-hours",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_ABSOLUTE_HOURS,
    show_default=True,
    help="A login session ends this long after the login, however active.",
)
@click.option(
    "--login-backoff-seconds",
    type=click.FloatRange(min=0),
    default=ThrottleSettings.base_seconds,
    show_default=True,
    help="Wait after a failed login (per user name and per address); doubles per failure.",
)
@click.option(
    "--login-lock-after",
    type=click.IntRange(min=1),
    default=ThrottleSettings.lock_after,
    show_default=True,
    help="Failed logins in a row (per user name and per address) that lock further attempts.",
)
@click.option(
    "--login-lock-minutes",
    type=click.FloatRange(min=0),
    default=ThrottleSettings.lock_seconds / 60,
    show_default=True,
    help="How long such a lock lasts.",
)
@click.option(
    "--num-procs",
    "processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Server processes sharing the port (not with --auth); see docs/operations.md.",
)
@click.option(
    "--num-threads",
    "threads",
    type=click.IntRange(min=0),
    default=DEFAULT_THREADS,
    show_default=True,
    help="Threads per process for the pages' work (0: on the event loop).",
)
@click.option("--show", is_flag=True, help="Open the app in the web browser.")
def serve(
    port: int,
    address: str | None,
    store_url: str | None,
    definitions: tuple[Path, ...],
    entities: Path | None,
    auth_file: Path | None,
    demo: bool,
    poll_seconds: float,
    usage_log: Path | None,
    allow_origins: tuple[str, ...],
    secure_cookies: bool,
    session_idle_minutes: float,
    session_hours: float,
    login_backoff_seconds: float,
    login_lock_after: int,
    login_lock_minutes: float,
    processes: int,
    threads: int,
    show: bool,
) -> None:
    """Serve the web app (default: the demo sheet at http://localhost:5006)."""
    from kpisheet_ui.serve import restart_with_server_allocators, sheet_config
    from kpisheet_ui.serve import serve as serve_app
    from kpisheet_ui.sessions import SessionSettings

    restart_with_server_allocators()  # first: the process may start over with other allocators

    if not demo:
        refuse_memory_store(store_url, "--store")
    check_port(address, port)  # before the sheet is opened: a taken port fails at once
    config = sheet_config(
        None if demo else store_url, definitions, entities, poll_seconds=poll_seconds
    )
    try:
        serve_app(
            config,
            port=port,
            address=address,
            auth=auth_file,
            allow_origins=allow_origins,
            usage_log=usage_log,
            show=show,
            sessions=SessionSettings(
                idle_seconds=session_idle_minutes * 60,
                absolute_seconds=session_hours * 3600,
                secure_cookies=secure_cookies,
            ),
            throttle=ThrottleSettings(
                base_seconds=login_backoff_seconds,
                lock_after=login_lock_after,
                lock_seconds=login_lock_minutes * 60,
            ),
            processes=processes,
            threads=threads,
        )
    except OSError as exc:
        if exc.errno not in PORT_PROBLEMS:
            raise
        raise port_error(address, port, exc.errno) from exc


@click.group(cls=KpisheetGroup)
def users() -> None:
    """Manage the users of the web app's login (`kpisheet serve --auth FILE`)."""


password_stdin_option = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of stdin instead of prompting.",
)


def read_password(password_stdin: bool) -> str:
    """The new password: the first line of stdin, or typed twice at a hidden prompt."""
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@users.command("add")
@click.argument("name")
@auth_option(required=True, help="Users file to write (created owner-only if missing).")
@password_stdin_option
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    metavar="LEVEL=NAME",
    help="Show this user only the entities inside LEVEL=NAME (e.g. mandant=Alpine); "
    "repeatable, several scopes add up. Without --scope an existing user keeps theirs.",
)
def users_add(name: str, auth_file: Path, password_stdin: bool, scopes: tuple[str, ...]) -> None:
    """Add user NAME to the users file, or give NAME a new password.

    Only a salted scrypt hash of the password is stored.
    """
    from kpisheet_ui.scopes import parse_scope
    from kpisheet_ui.users import add_user

    for scope in scopes:
        parse_scope(scope)  # a malformed scope fails before the password prompt
    password = read_password(password_stdin)
    new = add_user(auth_file, name, password, scopes=list(scopes) if scopes else None)
    scoped = f" (scopes: {', '.join(scopes)})" if scopes else ""
    click.echo(f"{'added user' if new else 'new password for'} {name} in {auth_file}{scoped}")


@users.command("passwd")
@click.argument("name")
@auth_option(required=True, help="Users file to change.")
@password_stdin_option
def users_passwd(name: str, auth_file: Path, password_stdin: bool) -> None:
    """Give user NAME a new password; their open sessions end."""
    from kpisheet_ui.users import require_user, set_password

    require_user(auth_file, name)  # an unknown user fails before the password prompt
    set_password(auth_file, name, read_password(password_stdin))
    click.echo(f"new password for {name} in {auth_file}; their open sessions end")


@users.command("remove")
@click.argument("name")
@auth_option(required=True, help="Users file to change.")
def users_remove(name: str, auth_file: Path) -> None:
    """Remove user NAME; their open sessions end."""
    from kpisheet_ui.users import remove_user

    remove_user(auth_file, name)
    click.echo(f"removed user {name} from {auth_file}; their open sessions end")
