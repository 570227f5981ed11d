"""What a release changed against an earlier one: months, products and KPIs added or removed,
products moved in the hierarchy, and values restated (``kpisheet releases diff``).

A *restated* value is one that both releases hold for the same (month, KPI, product) but with a
different value (a value that became missing, or the reverse, counts too). Values a release adds
to, or drops from, a month both releases hold are counted apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from kpisheet.constants import ENTITY, KPI, MONTH, MONTH_TEXT_FORMAT, VALUE
from kpisheet.hierarchy import Hierarchy
from kpisheet.plausibility import number

__all__ = [
    "CHANGE",
    "CHANGE_COLUMNS",
    "LARGEST",
    "NEW",
    "OLD",
    "ReleaseDiff",
    "diff_releases",
]

#: How many of the largest restatements the summary lists.
LARGEST = 10
OLD = "old"
NEW = "new"
CHANGE = "change"
#: Columns of :meth:`ReleaseDiff.to_frame` (the CSV format): one row per change.
CHANGE_COLUMNS = ("change", "month", "kpi", "entity", "level", "old", "new")


@dataclass(frozen=True)
class ReleaseDiff:
    """The changes from release ``old_id`` to release ``new_id`` (``None``: not yet written)."""

    old_id: int | None
    new_id: int | None
    months_added: list[str]
    months_removed: list[str]
    entities_added: list[str]
    entities_removed: list[str]
    kpis_added: list[str]
    kpis_removed: list[str]
    #: Products whose group changed: ``entity``, ``level``, ``old``, ``new``.
    moves: pd.DataFrame
    #: Every restated value, largest change first: ``month``, ``kpi``, ``entity``, ``old``, ``new``.
    restated: pd.DataFrame
    values_added: int = 0
    values_removed: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def restated_counts(self) -> pd.DataFrame:
        """Restated values per month and KPI: ``month``, ``kpi``, ``count``, oldest month first."""
        if self.restated.empty:
            return pd.DataFrame({MONTH: [], KPI: [], "count": []})
        counts = self.restated.groupby([MONTH, KPI], sort=True).size()
        return counts.rename("count").reset_index()

    @property
    def restated_per_month(self) -> dict[str, int]:
        """Restated values per month (``YYYY-MM``), oldest first."""
        if self.restated.empty:
            return {}
        return {str(m): int(n) for m, n in self.restated.groupby(MONTH, sort=True).size().items()}

    def largest(self, count: int = LARGEST) -> pd.DataFrame:
        """The ``count`` restated values with the largest absolute change."""
        return self.restated.head(count)

    @property
    def unchanged(self) -> bool:
        """True when the releases hold the same months, products, KPIs, hierarchy and values."""
        return not (
            self.months_added
            or self.months_removed
            or self.entities_added
            or self.entities_removed
            or self.kpis_added
            or self.kpis_removed
            or len(self.moves)
            or len(self.restated)
            or self.values_added
            or self.values_removed
        )

    def to_frame(self) -> pd.DataFrame:
        """Every change as one row (:data:`CHANGE_COLUMNS`), as the CSV format writes it."""
        rows: list[dict[str, Any]] = []
        for kind, values, column in (
            ("month_added", self.months_added, MONTH),
            ("month_removed", self.months_removed, MONTH),
            ("entity_added", self.entities_added, ENTITY),
            ("entity_removed", self.entities_removed, ENTITY),
            ("kpi_added", self.kpis_added, KPI),
            ("kpi_removed", self.kpis_removed, KPI),
        ):
            rows += [{"change": kind, column: value} for value in values]
        rows += [
            {"change": "moved", ENTITY: m.entity, "level": m.level, OLD: m.old, NEW: m.new}
            for m in self.moves.itertuples()
        ]
        restated = self.restated.assign(change="restated")[["change", MONTH, KPI, ENTITY, OLD, NEW]]
        frame = pd.DataFrame(rows, columns=list(CHANGE_COLUMNS))
        parts = [part for part in (frame, restated) if not part.empty]
        return pd.concat(parts, ignore_index=True)[list(CHANGE_COLUMNS)] if parts else frame

    def to_dict(self) -> dict[str, Any]:
        """The changes as plain data (the JSON format)."""

        def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
            clean = frame.astype(object).where(frame.notna(), None)
            rows: list[dict[str, Any]] = clean.to_dict(orient="records")
            return rows

        return {
            "old_release": self.old_id,
            "new_release": self.new_id,
            "months_added": self.months_added,
            "months_removed": self.months_removed,
            "entities_added": self.entities_added,
            "entities_removed": self.entities_removed,
            "kpis_added": self.kpis_added,
            "kpis_removed": self.kpis_removed,
            "moves": records(self.moves),
            "restated_count": len(self.restated),
            "restated_per_month_and_kpi": records(self.restated_counts),
            "largest_restated": records(self.largest()),
            "values_added": self.values_added,
            "values_removed": self.values_removed,
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=1)

    def summary(self) -> list[str]:
        """The changes as lines of text for a terminal: lists, counts and the largest values."""
        old = f"release {self.old_id}" if self.old_id is not None else "no release"
        new = f"release {self.new_id}" if self.new_id is not None else "the new data"
        lines = [f"changes from {old} to {new}:"]
        if self.unchanged:
            return [*lines, "  none: the same months, products, KPIs, hierarchy and values"]
        for label, values in (
            ("months added", self.months_added),
            ("months removed", self.months_removed),
            ("products added", self.entities_added),
            ("products removed", self.entities_removed),
            ("KPIs added", self.kpis_added),
            ("KPIs removed", self.kpis_removed),
        ):
            if values:
                lines.append(f"  {label}: {_listed(values)}")
        for move in self.moves.itertuples():
            lines.append(
                f"  moved: '{move.entity}' {move.level} {move.old or '(none)'} -> "
                f"{move.new or '(none)'}"
            )
        if self.values_added or self.values_removed:
            lines.append(
                f"  values added to months of both releases: {self.values_added:,}; "
                f"removed: {self.values_removed:,}"
            )
        lines.append(f"  restated values: {len(self.restated):,}")
        if len(self.restated):
            counts = self.restated_counts
            lines += _table(
                ["month", "kpi", "restated"],
                [[str(r.month), str(r.kpi), f"{r.count:,}"] for r in counts.itertuples()],
            )
            lines.append(f"  largest restatements (of {len(self.restated):,}):")
            lines += _table(
                ["month", "kpi", "entity", "old", "new", "change"],
                [
                    [
                        str(r.month),
                        str(r.kpi),
                        str(r.entity),
                        number(r.old),
                        number(r.new),
                        number(r.change),
                    ]
                    for r in self.largest().itertuples()
                ],
            )
        return lines


def _listed(values: list[str], shown: int = 12) -> str:
    text = ", ".join(values[:shown])
    return text + (f" and {len(values) - shown} more" if len(values) > shown else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "    "
        + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, ["-" * w for w in widths], *rows]
    ]


def _month_texts(months: pd.Series) -> set[str]:
    return {m.strftime(MONTH_TEXT_FORMAT) for m in pd.unique(months)}


def _texts(values: pd.Series) -> set[str]:
    return {str(v) for v in pd.unique(values)}


def diff_releases(
    old: pd.DataFrame,
    new: pd.DataFrame,
    *,
    old_hierarchy: Hierarchy | None = None,
    new_hierarchy: Hierarchy | None = None,
    old_id: int | None = None,
    new_id: int | None = None,
) -> ReleaseDiff:
    """The changes from the canonical observations ``old`` to ``new`` (and their hierarchies)."""
    keys = [MONTH, KPI, ENTITY]
    left = _keyed(old)
    right = _keyed(new)
    old_months, new_months = _month_texts(left[MONTH]), _month_texts(right[MONTH])
    old_entities, new_entities = _texts(left[ENTITY]), _texts(right[ENTITY])
    old_kpis, new_kpis = _texts(left[KPI]), _texts(right[KPI])
    both = left.merge(right, on=keys, how="outer", suffixes=("_old", "_new"), indicator=True)
    common_month = both[MONTH].dt.strftime(MONTH_TEXT_FORMAT).isin(old_months & new_months)
    in_both = both["_merge"] == "both"
    old_value, new_value = both[f"{VALUE}_old"], both[f"{VALUE}_new"]
    same = (old_value == new_value) | (old_value.isna() & new_value.isna())
    restated = both[in_both & ~same]
    change = restated[f"{VALUE}_new"] - restated[f"{VALUE}_old"]
    restated = pd.DataFrame(
        {
            MONTH: restated[MONTH].dt.strftime(MONTH_TEXT_FORMAT),
            KPI: restated[KPI],
            ENTITY: restated[ENTITY],
            OLD: restated[f"{VALUE}_old"],
            NEW: restated[f"{VALUE}_new"],
            CHANGE: change,
        }
    )
    magnitude = change.abs().fillna(np.inf)  # a value that appeared or vanished comes first
    restated = restated.assign(_size=magnitude.to_numpy())
    restated = restated.sort_values(
        ["_size", MONTH, KPI, ENTITY], ascending=[False, True, True, True]
    )
    restated = restated.drop(columns="_size").reset_index(drop=True)
    moves = (
        old_hierarchy.moves(new_hierarchy)
        if old_hierarchy is not None and new_hierarchy is not None
        else pd.DataFrame(columns=["entity", "level", "old", "new"])
    )
    return ReleaseDiff(
        old_id=old_id,
        new_id=new_id,
        months_added=sorted(new_months - old_months),
        months_removed=sorted(old_months - new_months),
        entities_added=sorted(new_entities - old_entities),
        entities_removed=sorted(old_entities - new_entities),
        kpis_added=sorted(new_kpis - old_kpis),
        kpis_removed=sorted(old_kpis - new_kpis),
        moves=moves.reset_index(drop=True),
        restated=restated,
        values_added=int((common_month & (both["_merge"] == "right_only")).sum()),
        values_removed=int((common_month & (both["_merge"] == "left_only")).sum()),
    )


def _keyed(observations: pd.DataFrame) -> pd.DataFrame:
    """Observations with text KPI and entity columns (a store gives categoricals)."""
    return pd.DataFrame(
        {
            MONTH: observations[MONTH],
            KPI: observations[KPI].astype(str),
            ENTITY: observations[ENTITY].astype(str),
            VALUE: observations[VALUE].astype(float),
        }
    )
