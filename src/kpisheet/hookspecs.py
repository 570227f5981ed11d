"""Hook specifications: the plugin interface of kpisheet.

A plugin is a module or object with functions marked ``@kpisheet.hookimpl`` and named like the
hooks below. Installed packages register plugins through the entry-point group ``kpisheet``::

    # pyproject.toml of the plugin package
    [project.entry-points.kpisheet]
    my_kpis = "my_package.kpisheet_plugin"

Both of kpisheet's packages use the hooks too: the built-in plugin ``kpisheet.builtin``
contributes the sheet's KPIs, and the web app ``kpisheet_ui`` adds its commands (``serve``,
``users``) through :func:`kpisheet_cli_commands`, so the core never imports the app.

The docstrings of this module are the plugin documentation; ``docs/plugins.md`` repeats them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

PROJECT_NAME = "kpisheet"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def kpisheet_definition_paths() -> list[Path]:
    """Contribute KPI definitions: YAML files, or directories searched recursively for them.

    Every implementation is called; the KPIs of all of them form one registry, so ids must be
    unique across plugins. ``kpisheet kpis`` shows which plugin and file each KPI came from.
    The sheet's own ``kpi_definitions/`` is contributed the same way by the built-in plugin
    ``kpisheet.builtin``.

    :returns: paths of ``.yaml``/``.yml`` files or of directories holding them.
    """
    raise NotImplementedError


@hookspec
def kpisheet_cli_commands(cli: click.Group) -> None:
    """Add commands to the ``kpisheet`` command line, with ``cli.command()``, ``cli.group()`` or
    ``cli.add_command()``.

    Every implementation is called once, when the command line first looks for a command that
    is not one of kpisheet's own or lists them all (``kpisheet --help``). A name that kpisheet
    or another plugin has taken already is refused, naming both. The options kpisheet's own
    commands share are in ``kpisheet.cli`` (``definitions_option()``, ``sheet_options``,
    ``store_option()``, ...); a command raises ``kpisheet.cli.UserError``, or lets a
    ``kpisheet.KpisheetError`` through, for a one-line message and exit status 1. The web
    app's ``serve`` and ``users`` are added this way, by the plugin ``kpisheet_ui``.

    :param cli: the ``kpisheet`` click group.
    """
    raise NotImplementedError
