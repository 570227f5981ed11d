"""How numbers are computed (SPEC §6): group roll-ups, calendar windows, derived KPIs, per-account values.

The :class:`Cube` is built once per sheet: a dense array ``values[kpi, entity, month]`` of every source
KPI for every entity of the tree, with group levels already rolled up month by month. A query then
only slices the months of its two windows (current and previous year) for the KPIs and entities it
needs and aggregates them along the month axis — numpy on whole blocks, no loop per row or series.

The array is stored month-major, so the months of a window are one contiguous slab; next to it the
cube keeps the values with missing ones as zero and a running count of months with a value, so a
window's sum is a sum of whole rows and its month count a difference of two rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kpisheet.constants import (
    AS_OF,
    CHANGE,
    CHANGE_PCT,
    COMPLETE,
    ENTITY,
    KPI,
    LEVEL,
    MONTH,
    MONTH_TEXT_FORMAT,
    MONTHS,
    PREVIOUS_VALUE,
    PREVIOUS_YEAR_OFFSET,
    PRODUCT_LEVEL,
    RESULT_COLUMNS,
    TOTAL_LEVEL,
    VALUE,
    WINDOW,
    EntityAggregation,
    TimeAggregation,
    Window,
)
from kpisheet.hierarchy import Hierarchy
from kpisheet.registry import Registry


def window_bounds(as_of: pd.Period, window: Window) -> tuple[pd.Period, pd.Period]:
    """First and last month of a window ending at ``as_of`` (calendar months, inclusive)."""
    length = window.length if window.length is not None else as_of.month
    return as_of - (length - 1), as_of


@dataclass(frozen=True)
class WindowValues:
    """Aggregated values of one window: ``value`` and ``months`` shaped (KPIs, entities)."""

    value: np.ndarray
    months: np.ndarray
    length: int


def _roll_up(filled: np.ndarray, present: np.ndarray, codes: np.ndarray, groups: int) -> np.ndarray:
    """Sum leaves into groups per month and KPI; a group without any value in a month stays NaN.

    ``filled`` (leaf values, missing as 0) and ``present`` (has a value) are (months, KPIs, leaves);
    ``codes`` gives each leaf's group (-1: none). Returns (months, KPIs, groups).
    """
    shape = (*filled.shape[:2], groups)
    keep = np.flatnonzero(codes >= 0)
    members = keep[np.argsort(codes[keep], kind="stable")]
    if len(members) == 0:
        return np.full(shape, np.nan)
    sorted_codes = codes[members]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    every = len(members) == filled.shape[2] and bool(np.all(members[1:] > members[:-1]))
    sums = np.add.reduceat(filled if every else filled[..., members], starts, axis=2)
    any_value = np.logical_or.reduceat(present if every else present[..., members], starts, axis=2)
    out = np.full(shape, np.nan)
    out[..., sorted_codes[starts]] = np.where(any_value, sums, np.nan)
    return out


def _positions(column: pd.Series, names: Sequence[str]) -> np.ndarray:
    """Position of each value of ``column`` in ``names`` (-1: absent); one lookup per distinct value."""
    codes, uniques = pd.factorize(column)
    return np.append(pd.Index(names).get_indexer(uniques), -1)[codes]


def _text(
    labels: Sequence[str] | np.ndarray, codes: np.ndarray
) -> pd.api.extensions.ExtensionArray:
    """The text column ``labels[codes]`` (dtype ``str``), one take instead of an object per row."""
    return pd.Series(np.asarray(labels, dtype=object), dtype=str).array.take(codes)


class Cube:
    """Monthly values of every source KPI for every entity (groups rolled up), as one dense array."""

    def __init__(
        self, observations: pd.DataFrame, registry: Registry, hierarchy: Hierarchy
    ) -> None:
        self.registry = registry
        self.hierarchy = hierarchy
        self.source_ids: tuple[str, ...] = tuple(k.id for k in registry.source_kpis)
        self.kpi_index = {kpi: i for i, kpi in enumerate(self.source_ids)}
        groupings = [*hierarchy.levels, *hierarchy.views]
        names: list[str] = [hierarchy.total]
        levels: list[str] = [TOTAL_LEVEL]
        for grouping in groupings:
            groups = hierarchy.groups(grouping)
            names += groups
            levels += [grouping] * len(groups)
        names += hierarchy.leaves
        levels += [PRODUCT_LEVEL] * len(hierarchy.leaves)
        # Views may reuse a level's group name only if validation allowed it; index the first.
        self.entities: tuple[str, ...] = tuple(names)
        self.entity_levels = np.array(levels, dtype=object)
        self.entity_index = {}
        for i, name in enumerate(names):
            self.entity_index.setdefault(name, i)

        months = observations[MONTH]
        if len(observations):
            self.first = months.min()
            self.last = months.max()
        else:
            self.first = self.last = pd.Period("1970-01", "M")
        self.month_count = (self.last - self.first).n + 1 if len(observations) else 0
        self.months = (
            pd.period_range(self.first, self.last, freq="M")
            if len(observations)
            else pd.PeriodIndex([], freq="M")
        )

        leaves = hierarchy.leaves
        leaf = np.full((self.month_count, len(self.source_ids), len(leaves)), np.nan)
        if len(observations):
            k = _positions(observations[KPI], self.source_ids)
            e = _positions(observations[ENTITY], leaves)
            t = months.array.asi8 - self.first.ordinal
            leaf[t, k, e] = observations[VALUE].to_numpy(dtype=float)

        present = ~np.isnan(leaf)
        filled = np.where(present, leaf, 0.0)
        blocks = [_roll_up(filled, present, np.zeros(len(leaves), dtype=np.int64), 1)]
        for grouping in groupings:
            # -1 for a product outside every group of the grouping (a view it has no value for)
            codes = pd.Index(hierarchy.groups(grouping)).get_indexer(hierarchy.attributes[grouping])
            blocks.append(
                _roll_up(filled, present, codes.astype(np.int64), len(hierarchy.groups(grouping)))
            )
        del filled, present
        blocks.append(leaf)
        by_month = np.concatenate(blocks, axis=2)
        del blocks, leaf
        no_roll_up = [
            self.kpi_index[k.id]
            for k in registry.source_kpis
            if k.entity_aggregation is EntityAggregation.NONE
        ]
        groups = np.flatnonzero(self.entity_levels != PRODUCT_LEVEL)
        by_month[:, np.array(no_roll_up, dtype=np.int64)[:, None], groups[None, :]] = np.nan
        #: values[kpi, entity, month] (a view of the month-major array)
        self.values = by_month.transpose(1, 2, 0)
        self._by_month = by_month
        present = ~np.isnan(by_month)
        self._filled = np.where(present, by_month, 0.0)
        # _counts[t] = months with a value before month t, so a window's count is a difference.
        count_type = np.int16 if self.month_count < np.iinfo(np.int16).max else np.int32
        self._counts = np.zeros((self.month_count + 1, *by_month.shape[1:]), dtype=count_type)
        np.cumsum(present, axis=0, dtype=count_type, out=self._counts[1:])
        #: each entity's level as a code into :attr:`level_names`
        self.level_codes, self.level_names = pd.factorize(self.entity_levels)

    def month_position(self, month: pd.Period) -> int:
        """Column of a month in :attr:`values` (may be outside the array)."""
        return (month.year - self.first.year) * 12 + month.month - self.first.month

    def _block(self, kpis: np.ndarray, entities: np.ndarray, start: int, stop: int) -> np.ndarray:
        """values[kpis, entities, start:stop+1] with NaN for months outside the data."""
        length = stop - start + 1
        out = np.full((len(kpis), len(entities), length), np.nan)
        lo, hi = max(start, 0), min(stop, self.month_count - 1)
        if lo <= hi:
            out[:, :, lo - start : hi - start + 1] = self.values[
                np.ix_(kpis, entities, np.arange(lo, hi + 1))
            ]
        return out

    def _slab(self, array: np.ndarray, kpis: np.ndarray, entities: np.ndarray) -> np.ndarray:
        """``array[..., kpis, entities]`` of a month-major array (a slab of months or one month)."""
        return array[..., kpis[:, None], entities[None, :]]

    def _window_sum(self, kpis: np.ndarray, entities: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Sum over months ``lo..hi`` of the values (missing as 0), shaped (KPIs, entities).

        A large selection sums every row of the slab and picks afterwards: adding whole contiguous
        rows is cheaper than gathering a scattered block first.
        """
        slab = self._filled[lo : hi + 1]
        if len(kpis) * len(entities) * 4 >= slab.shape[1] * slab.shape[2]:
            return self._slab(slab.sum(axis=0), kpis, entities)
        return self._slab(slab, kpis, entities).sum(axis=0)

    def source_window(
        self, kpi_ids: Sequence[str], entities: np.ndarray, as_of: pd.Period, window: Window
    ) -> WindowValues:
        """Window values of source KPIs by their time aggregation."""
        first, last = window_bounds(as_of, window)
        start, stop = self.month_position(first), self.month_position(last)
        kpis = np.array([self.kpi_index[k] for k in kpi_ids], dtype=np.int64)
        lo, hi = max(start, 0), min(stop, self.month_count - 1)  # the window's months with data
        value = np.full((len(kpis), len(entities)), np.nan)
        if lo > hi or len(value) == 0:
            return WindowValues(value, np.zeros(value.shape, dtype=np.int64), stop - start + 1)
        months = (
            self._slab(self._counts[hi + 1], kpis, entities)
            - self._slab(self._counts[lo], kpis, entities)
        ).astype(np.int64)
        rules = np.array([self.registry[k].time_aggregation for k in kpi_ids], dtype=object)
        for rule in TimeAggregation:
            rows = np.flatnonzero(rules == rule)
            if len(rows) == 0:
                continue
            part = kpis[rows]
            if rule is TimeAggregation.SUM:
                result = self._window_sum(part, entities, lo, hi)
            elif rule is TimeAggregation.MEAN:
                result = self._window_sum(part, entities, lo, hi) / np.maximum(months[rows], 1)
            elif rule in (TimeAggregation.MIN, TimeAggregation.MAX):
                reduce = np.fmin if rule is TimeAggregation.MIN else np.fmax
                result = reduce.reduce(self._slab(self._by_month[lo : hi + 1], part, entities))
            else:  # last or first: that month's value, missing when it lies outside the data
                month = stop if rule is TimeAggregation.LAST else start
                if not lo <= month <= hi:
                    continue
                result = self._slab(self._by_month[month], part, entities)
            value[rows] = np.where(months[rows] > 0, result, np.nan)
        return WindowValues(value, months, stop - start + 1)

    def monthly(
        self, kpi_ids: Sequence[str], entities: np.ndarray, first: pd.Period, last: pd.Period
    ) -> np.ndarray:
        """Monthly values (KPIs, entities, months) of source and derived KPIs from ``first`` to ``last``."""
        needed = self._closure(kpi_ids)
        sources = [k for k in needed if not self.registry[k].is_derived]
        start, stop = self.month_position(first), self.month_position(last)
        block = self._block(
            np.array([self.kpi_index[k] for k in sources], dtype=np.int64), entities, start, stop
        )
        values = {k: block[i] for i, k in enumerate(sources)}
        for kpi in self.registry.derived_kpis:
            if kpi.id in needed:
                values[kpi.id] = self._mask_groups(
                    kpi.id, entities, kpi.parsed_formula.evaluate(values)
                )
        return (
            np.stack([values[k] for k in kpi_ids])
            if kpi_ids
            else np.empty((0, len(entities), stop - start + 1))
        )

    def _closure(self, kpi_ids: Sequence[str]) -> list[str]:
        """The KPIs and every KPI their formulas need, in evaluation order."""
        wanted: set[str] = set()
        stack = list(kpi_ids)
        while stack:
            kpi = stack.pop()
            if kpi not in wanted:
                wanted.add(kpi)
                definition = self.registry[kpi]
                if definition.is_derived:
                    stack += definition.parsed_formula.references
        return [k for k in self.registry.evaluation_order if k in wanted]

    def _mask_groups(
        self, kpi_id: str, entities: np.ndarray, values: np.ndarray, missing: float = np.nan
    ) -> np.ndarray:
        """Blank (set to ``missing``) the group rows of a KPI whose entity_aggregation is ``none``."""
        if self.registry[kpi_id].entity_aggregation is EntityAggregation.NONE:
            values = values.copy()
            values[self.entity_levels[entities] != PRODUCT_LEVEL] = missing
        return values

    def window(
        self, kpi_ids: Sequence[str], entities: np.ndarray, as_of: pd.Period, window: Window
    ) -> WindowValues:
        """Window values of any KPIs: source KPIs aggregated over time, derived KPIs by formula afterwards.

        A derived KPI's ``months`` is the smallest ``months`` of the source KPIs it rests on.
        """
        needed = self._closure(kpi_ids)
        sources = [k for k in needed if not self.registry[k].is_derived]
        base = self.source_window(sources, entities, as_of, window)
        values = {k: base.value[i] for i, k in enumerate(sources)}
        months = {k: base.months[i] for i, k in enumerate(sources)}
        for kpi in self.registry.derived_kpis:
            if kpi.id in needed:
                values[kpi.id] = self._mask_groups(
                    kpi.id, entities, kpi.parsed_formula.evaluate(values)
                )
                months[kpi.id] = self._mask_groups(
                    kpi.id,
                    entities,
                    np.min([months[r] for r in self.registry.leaf_components(kpi.id)], axis=0),
                    missing=0,
                )
        return WindowValues(
            np.stack([values[k] for k in kpi_ids]),
            np.stack([months[k] for k in kpi_ids]),
            base.length,
        )

    def per_account(
        self,
        kpi_ids: Sequence[str],
        entities: np.ndarray,
        as_of: pd.Period,
        window: Window,
        value: np.ndarray,
    ) -> np.ndarray:
        """Divide window values by the mean monthly value of each KPI's ``average_per`` KPI.

        KPIs without ``average_per`` get NaN; a zero or missing denominator gives NaN.
        """
        out = np.full(value.shape, np.nan)
        denominators = sorted({self.registry[k].average_per for k in kpi_ids} - {None})
        if not denominators:
            return out
        first, last = window_bounds(as_of, window)
        monthly = self.monthly(denominators, entities, first, last)
        counts = (~np.isnan(monthly)).sum(axis=-1)
        means = np.where(counts > 0, np.nansum(monthly, axis=-1) / np.maximum(counts, 1), np.nan)
        for i, kpi in enumerate(kpi_ids):
            per = self.registry[kpi].average_per
            if per is not None:
                denominator = means[denominators.index(per)]
                with np.errstate(divide="ignore", invalid="ignore"):
                    out[i] = np.where(denominator != 0, value[i] / denominator, np.nan)
        return out


def compute(
    cube: Cube,
    as_of: pd.Period,
    window: Window,
    kpi_ids: Sequence[str],
    entities: Sequence[str],
    per_account: bool = False,
) -> pd.DataFrame:
    """The SPEC §7 result table for validated arguments (see :meth:`kpisheet.KPISheet.query`)."""
    index = np.array([cube.entity_index[e] for e in entities], dtype=np.int64)
    kpi_ids = list(kpi_ids)
    previous_as_of = as_of - PREVIOUS_YEAR_OFFSET
    if not kpi_ids or not len(index):
        return _empty_result()
    current = cube.window(kpi_ids, index, as_of, window)
    previous = cube.window(kpi_ids, index, previous_as_of, window)
    value, previous_value = current.value, previous.value
    if per_account:
        value = cube.per_account(kpi_ids, index, as_of, window, value)
        previous_value = cube.per_account(kpi_ids, index, previous_as_of, window, previous_value)
    keep = ((current.months > 0) | (previous.months > 0)).T.ravel()  # entity-major rows
    value = value.T.ravel()[keep]
    previous_value = previous_value.T.ravel()[keep]
    months = current.months.T.ravel()[keep]
    change = value - previous_value
    with np.errstate(divide="ignore", invalid="ignore"):
        change_pct = np.where(previous_value != 0, change / np.abs(previous_value), np.nan)
    entity_codes = np.repeat(np.arange(len(index)), len(kpi_ids))[keep]
    kpi_codes = np.tile(np.arange(len(kpi_ids)), len(index))[keep]
    level_codes = cube.level_codes[index][entity_codes]
    constant = np.zeros(len(value), dtype=np.int64)
    return pd.DataFrame(
        {
            AS_OF: _text([as_of.strftime(MONTH_TEXT_FORMAT)], constant),
            WINDOW: _text([window.value], constant),
            LEVEL: _text(cube.level_names, level_codes),
            ENTITY: _text(entities, entity_codes),
            KPI: _text(kpi_ids, kpi_codes),
            VALUE: value,
            PREVIOUS_VALUE: previous_value,
            CHANGE: change,
            CHANGE_PCT: change_pct,
            MONTHS: months.astype(np.int64),
            COMPLETE: months == current.length,
        },
        columns=list(RESULT_COLUMNS),
    )


def _empty_result() -> pd.DataFrame:
    frame = pd.DataFrame({column: [] for column in RESULT_COLUMNS})
    return frame.astype(
        {
            AS_OF: str,
            WINDOW: str,
            LEVEL: str,
            ENTITY: str,
            KPI: str,
            VALUE: float,
            PREVIOUS_VALUE: float,
            CHANGE: float,
            CHANGE_PCT: float,
            MONTHS: np.int64,
            COMPLETE: bool,
        }
    )


def series(
    cube: Cube,
    kpi_ids: Sequence[str],
    entities: Sequence[str],
    first: pd.Period,
    last: pd.Period,
    per_account: bool,
) -> pd.DataFrame:
    """Monthly values (long: month, entity, kpi, value) of KPIs for entities, e.g. for a line chart."""
    index = np.array([cube.entity_index[e] for e in entities], dtype=np.int64)
    kpi_ids = list(kpi_ids)
    values = cube.monthly(kpi_ids, index, first, last)
    if per_account:
        denominators = sorted({cube.registry[k].average_per for k in kpi_ids} - {None})
        base = cube.monthly(denominators, index, first, last) if denominators else None
        out = np.full(values.shape, np.nan)
        for i, kpi in enumerate(kpi_ids):
            per = cube.registry[kpi].average_per
            if per is not None and base is not None:
                denominator = base[denominators.index(per)]
                with np.errstate(divide="ignore", invalid="ignore"):
                    out[i] = np.where(denominator != 0, values[i] / denominator, np.nan)
        values = out
    months = pd.period_range(first, last, freq="M")
    k, e, t = values.shape
    return pd.DataFrame(
        {
            MONTH: np.tile(months.to_numpy(), k * e),
            ENTITY: np.tile(np.repeat(np.asarray(entities, dtype=object), t), k),
            KPI: np.repeat(np.asarray(kpi_ids, dtype=object), e * t),
            VALUE: values.ravel(),
        }
    ).astype({MONTH: pd.PeriodDtype("M"), ENTITY: str, KPI: str})
