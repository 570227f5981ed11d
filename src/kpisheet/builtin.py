"""The built-in plugin: contributes the demo sheet's own KPI definitions."""

from __future__ import annotations

from pathlib import Path

from kpisheet.hookspecs import hookimpl

_PACKAGE = Path(__file__).resolve().parent


def builtin_definitions_dir() -> Path:
    """The sheet's ``kpi_definitions/``: inside the installed wheel, or at the top of a checkout."""
    installed = _PACKAGE / "_builtin" / "kpi_definitions"
    if installed.is_dir():
        return installed
    return _PACKAGE.parents[1] / "kpi_definitions"


@hookimpl
def kpisheet_definition_paths() -> list[Path]:
    """The demo sheet's KPI definitions."""
    return [builtin_definitions_dir()]
