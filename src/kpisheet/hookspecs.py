"""Hook specifications: the plugin interface of kpisheet.

A plugin is a module or object with functions marked ``@kpisheet.hookimpl`` and named like the
hooks below. Installed packages register plugins through the entry-point group ``kpisheet``::

    # pyproject.toml of the plugin package
    [project.entry-points.kpisheet]
    my_kpis = "my_package.kpisheet_plugin"

The docstrings of this module are the plugin documentation; ``docs/plugins.md`` repeats them.
"""

from __future__ import annotations

from pathlib import Path

import pluggy

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
