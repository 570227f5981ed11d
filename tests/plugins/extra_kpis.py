"""A test plugin contributing KPI definitions: one directory, including a KPI over built-in KPIs."""

from __future__ import annotations

from pathlib import Path

import kpisheet

DEFINITIONS = Path(__file__).resolve().parent / "kpi_definitions"


@kpisheet.hookimpl
def kpisheet_definition_paths() -> list[Path]:
    """The test plugin's KPI directory."""
    return [DEFINITIONS]
