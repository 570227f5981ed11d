"""The web app as a kpisheet plugin: it adds ``kpisheet serve`` and ``kpisheet users``.

kpisheet's distribution registers this module in the entry-point group ``kpisheet``
(``pyproject.toml``). Every plugin manager loads it, the library's too, so it stays small: the
commands (:mod:`kpisheet_ui.commands`) are imported only when the command line asks for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import kpisheet

if TYPE_CHECKING:
    import click


@kpisheet.hookimpl
def kpisheet_cli_commands(cli: click.Group) -> None:
    """Add ``serve`` and ``users`` to the ``kpisheet`` command line."""
    from kpisheet_ui.commands import serve, users

    cli.add_command(serve)
    cli.add_command(users)
