"""The plugin manager and what it collects from plugins."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import cast

import pluggy

from kpisheet import builtin, hookspecs
from kpisheet.registry import Registry, load_registry

#: Name under which the built-in plugin is registered.
BUILTIN_PLUGIN = "kpisheet.builtin"
#: Plugin name recorded for definitions given explicitly (``--definitions``, ``definitions=``).
EXPLICIT_ORIGIN = "definitions"


def get_plugin_manager(*, entry_points: bool = True) -> pluggy.PluginManager:
    """A fresh plugin manager with the built-in plugin and, by default, installed plugins.

    kpisheet's own plugins whose package is missing (the web app ``kpisheet_ui``, when it is not
    installed) are left out, so the core works without its app; any other plugin that cannot
    be imported fails here, with Python's error.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    manager.register(builtin, name=BUILTIN_PLUGIN)
    if entry_points:
        for name in missing_own_plugins():
            manager.set_blocked(name)
        manager.load_setuptools_entrypoints(hookspecs.PROJECT_NAME)
    return manager


def missing_own_plugins() -> Iterator[str]:
    """Names of the entry points of kpisheet's own distribution whose package is not importable."""
    for entry_point in importlib.metadata.entry_points(group=hookspecs.PROJECT_NAME):
        own = entry_point.dist is not None and entry_point.dist.name == hookspecs.PROJECT_NAME
        package = entry_point.module.partition(".")[0]
        if own and importlib.util.find_spec(package) is None:
            yield entry_point.name


def definition_sources(manager: pluggy.PluginManager) -> list[tuple[Path, str]]:
    """``(path, plugin name)`` for every path that every plugin contributes, built-in first."""
    sources: list[tuple[Path, str]] = []
    impls = manager.hook.kpisheet_definition_paths.get_hookimpls()
    ordered = sorted(impls, key=lambda impl: impl.plugin_name != BUILTIN_PLUGIN)
    for impl in ordered:
        # pluggy types an implementation as returning object; the hookspec says what it returns
        paths = cast("Iterable[Path | str] | None", impl.function())
        for path in paths or []:
            sources.append((Path(path), impl.plugin_name))
    return sources


def load_kpis(
    definitions: Sequence[Path | str] | Path | str | None = None,
    manager: pluggy.PluginManager | None = None,
) -> Registry:
    """The KPI registry: the given files/directories, or else the built-in sheet plus plugins.

    :raises DefinitionError: with every problem found.
    """
    if definitions is not None:
        paths: Iterable[Path | str] = (
            [definitions] if isinstance(definitions, str | Path) else definitions
        )
        return load_registry((path, EXPLICIT_ORIGIN) for path in paths)
    return load_registry(definition_sources(manager or get_plugin_manager()))
