"""kpisheet: monthly KPI sheets with KPIs declared in YAML.

The public API is this package's ``__all__`` and, in each module of :data:`PUBLIC_MODULES`, the
names in that module's ``__all__``:

- ``kpisheet.charts``, ``kpisheet.export``, ``kpisheet.waterfall``, ``kpisheet.series``: charts,
  workbooks and the monthly series behind them;
- ``kpisheet.presentation`` with ``kpisheet.presentation.words``,
  ``kpisheet.presentation.formats`` and ``kpisheet.presentation.reasons``: every word and number
  format shown to people;
- ``kpisheet.cli``: the command group and the shared options, for plugins that add commands;
- ``kpisheet.demo``: the demo sheet and its store;
- ``kpisheet.constants``, ``kpisheet.errors``, ``kpisheet.explain``, ``kpisheet.diff``,
  ``kpisheet.hierarchy``, ``kpisheet.registry``, ``kpisheet.store``, ``kpisheet.thresholds``.

Everything else may change between versions; the web app (``kpisheet_ui``) uses only these names
(``tests/test_layering.py`` checks it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from kpisheet.store import ReleaseInfo, Store

__version__ = "0.1.0"

#: Modules whose ``__all__`` is public API, besides this package's own ``__all__``.
PUBLIC_MODULES: tuple[str, ...] = (
    "kpisheet.charts",
    "kpisheet.cli",
    "kpisheet.constants",
    "kpisheet.demo",
    "kpisheet.diff",
    "kpisheet.errors",
    "kpisheet.explain",
    "kpisheet.export",
    "kpisheet.hierarchy",
    "kpisheet.presentation",
    "kpisheet.presentation.formats",
    "kpisheet.presentation.reasons",
    "kpisheet.presentation.words",
    "kpisheet.registry",
    "kpisheet.series",
    "kpisheet.store",
    "kpisheet.thresholds",
    "kpisheet.waterfall",
)

__all__ = [
    "PUBLIC_MODULES",
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


def __getattr__(name: str) -> Any:
    """``Store`` and ``ReleaseInfo``, imported with the store (and SQLAlchemy) on first use."""
    if name in ("ReleaseInfo", "Store"):
        import kpisheet.store

        return getattr(kpisheet.store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
