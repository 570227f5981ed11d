"""kpisheet: monthly KPI sheets with KPIs declared in YAML."""

from __future__ import annotations

from kpisheet.errors import (
    ChecksumError,
    DataError,
    DefinitionError,
    FormulaError,
    HierarchyError,
    IngestConfigError,
    KpisheetError,
    Problem,
    QueryError,
    SnapshotError,
    StoreError,
)
from kpisheet.explain import Explanation
from kpisheet.hookspecs import hookimpl
from kpisheet.plugins import get_plugin_manager, load_kpis
from kpisheet.registry import Registry
from kpisheet.sheet import KPISheet, open
from kpisheet.store import ReleaseInfo, Store

__version__ = "0.1.0"

__all__ = [
    "ChecksumError",
    "DataError",
    "DefinitionError",
    "Explanation",
    "FormulaError",
    "HierarchyError",
    "IngestConfigError",
    "KPISheet",
    "KpisheetError",
    "Problem",
    "QueryError",
    "Registry",
    "ReleaseInfo",
    "SnapshotError",
    "Store",
    "StoreError",
    "__version__",
    "get_plugin_manager",
    "hookimpl",
    "load_kpis",
    "open",
]
