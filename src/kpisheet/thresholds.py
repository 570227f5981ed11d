"""Which changes matter: a KPI's ``highlight`` thresholds applied to query rows (docs/analysts.md,
"Thresholds").

A row is *flagged* when its KPI declares ``highlight`` and the row's change passes it:
``|change| >= min_abs_change`` or ``|change_pct| >= min_pct_change``, whichever of the two are
declared (either suffices). A row whose current or previous-year window is not complete is never
flagged, nor is a row without a change. Per account, only ``min_pct_change`` applies, because
``min_abs_change`` is stated in the KPI's own unit. The CLI (``query --flagged``) and the web
app's highlighting share this one rule.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kpisheet.constants import CHANGE, CHANGE_PCT, KPI
from kpisheet.presentation import comparable
from kpisheet.registry import Registry

__all__ = [
    "flags",
    "has_threshold",
    "thresholds",
]


def thresholds(registry: Registry, kpis: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the KPI's ``min_abs_change`` and ``min_pct_change`` (NaN where not declared)."""
    codes, ids = pd.factorize(kpis)
    absolute = np.full(len(ids), np.nan)
    relative = np.full(len(ids), np.nan)
    for i, kpi in enumerate(ids):
        highlight = registry[kpi].highlight if kpi in registry else None
        if highlight is not None:
            if highlight.min_abs_change is not None:
                absolute[i] = highlight.min_abs_change
            if highlight.min_pct_change is not None:
                relative[i] = highlight.min_pct_change
    return absolute[codes], relative[codes]


def has_threshold(registry: Registry, kpis: pd.Series) -> np.ndarray:
    """Per row, whether the row's KPI declares ``highlight``."""
    absolute, relative = thresholds(registry, kpis)
    declared: np.ndarray = ~np.isnan(absolute) | ~np.isnan(relative)
    return declared


def flags(result: pd.DataFrame, registry: Registry, *, per_account: bool = False) -> np.ndarray:
    """Per row of a query result, whether its change passes its KPI's threshold (module doc)."""
    if result.empty:
        return np.zeros(0, dtype=bool)
    absolute, relative = thresholds(registry, result[KPI])
    if per_account:
        absolute = np.full(len(result), np.nan)
    change = np.abs(result[CHANGE].to_numpy(dtype=float))
    change_pct = np.abs(result[CHANGE_PCT].to_numpy(dtype=float))
    with np.errstate(invalid="ignore"):
        over = (~np.isnan(absolute) & (change >= absolute)) | (
            ~np.isnan(relative) & (change_pct >= relative)
        )
    flagged: np.ndarray = over & ~np.isnan(change) & comparable(result)
    return flagged
