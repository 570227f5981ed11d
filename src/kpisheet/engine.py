"""How numbers are computed (docs/analysts.md): group roll-ups, calendar windows, derived KPIs,
per-account values, and how far each number can be trusted (coverage).

The :class:`Cube` is built once per sheet: a dense array ``values[kpi, entity, month]`` of every source
KPI for every entity of the tree, with group levels already rolled up month by month. A query then
only slices the months of its two windows (current and previous year) for the KPIs and entities it
needs and aggregates them along the month axis — numpy on whole blocks, no loop per row or series.

The array is stored month-major, so the months of a window are one contiguous slab; next to it the
cube keeps the values with missing ones as zero and a running count of months with a value, so a
window's sum is a sum of whole rows and its month count a difference of two rows.

Coverage works the same way. A leaf's *lifetime* for a source KPI runs from its first to its last
month with a value; inside it the leaf is expected every month. A month is *covered* for an entity
when the entity has a value and no member expected that month lacks one; the cube keeps a running
count of covered months beside the running count of months with a value, so whether a window is
complete is again a difference of two rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from kpisheet.constants import (
    AS_OF,
    CHANGE,
    CHANGE_PCT,
    COMPLETE,
    COVERED,
    ENTITY,
    KPI,
    LEVEL,
    MONTH,
    MONTH_TEXT_FORMAT,
    MONTHS,
    PREVIOUS_COMPLETE,
    PREVIOUS_MONTHS,
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
from kpisheet.months import window_bounds
from kpisheet.registry import Registry


@dataclass(frozen=True)
class WindowValues:
    """Aggregated values of one window, each shaped (KPIs, entities).

    ``months`` counts the months with a value; ``complete`` says whether the value rests on
    covered months by the KPI's rule; ``covered`` whether every month of the window is covered
    (what a per-account denominator needs).
    """

    value: np.ndarray
    months: np.ndarray
    complete: np.ndarray
    covered: np.ndarray
    length: int


def _roll_up(
    filled: np.ndarray, present: np.ndarray, missing: np.ndarray, codes: np.ndarray, groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sum leaves into groups per month and KPI; a group without any value in a month stays NaN.

    ``filled`` (leaf values, missing as 0), ``present`` (has a value) and ``missing`` (expected
    but without a value) are (months, KPIs, leaves); ``codes`` gives each leaf's group (-1: none).
    Returns the group values and whether any member was missing, both (months, KPIs, groups).
    """
    shape = (*filled.shape[:2], groups)
    keep = np.flatnonzero(codes >= 0)
    members = keep[np.argsort(codes[keep], kind="stable")]
    if len(members) == 0:
        return np.full(shape, np.nan), np.zeros(shape, dtype=bool)
    sorted_codes = codes[members]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    every = len(members) == filled.shape[2] and bool(np.all(members[1:] > members[:-1]))

    def reduce(ufunc: np.ufunc, array: np.ndarray) -> np.ndarray:
        return ufunc.reduceat(array if every else array[..., members], starts, axis=2)

    any_value = reduce(np.logical_or, present)
    out = np.full(shape, np.nan)
    out[..., sorted_codes[starts]] = np.where(any_value, reduce(np.add, filled), np.nan)
    any_missing = np.zeros(shape, dtype=bool)
    any_missing[..., sorted_codes[starts]] = reduce(np.logical_or, missing)
    return out, any_missing


def _lifetimes(present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last month position with a value per (KPI, leaf) of ``present`` (months, KPIs,
    leaves); a series without any value gets an empty lifetime (first > last)."""
    months = present.shape[0]
    ever = present.any(axis=0)
    if months == 0:
        return np.zeros(ever.shape, dtype=np.int64), np.full(ever.shape, -1, dtype=np.int64)
    first = np.where(ever, present.argmax(axis=0), months)
    last = np.where(ever, months - 1 - present[::-1].argmax(axis=0), -1)
    return first, last


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
        #: position of the first leaf on the entity axis (the leaves come last)
        self.leaf_offset = len(names) - len(hierarchy.leaves)
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
        #: lifetime of each (source KPI, leaf): month positions of its first and last value
        self._life_first, self._life_last = _lifetimes(present)
        month_axis = np.arange(self.month_count)[:, None, None]
        missing = (month_axis >= self._life_first) & (month_axis <= self._life_last) & ~present
        filled = np.where(present, leaf, 0.0)
        #: each grouping's group code per leaf (-1: the leaf belongs to no group of a view)
        self._group_codes: dict[str, np.ndarray] = {
            grouping: pd.Index(hierarchy.groups(grouping))
            .get_indexer(hierarchy.attributes[grouping])
            .astype(np.int64)
            for grouping in groupings
        }
        parts = [_roll_up(filled, present, missing, np.zeros(len(leaves), dtype=np.int64), 1)]
        for grouping in groupings:
            codes = self._group_codes[grouping]
            parts.append(_roll_up(filled, present, missing, codes, len(hierarchy.groups(grouping))))
        del filled, present
        by_month = np.concatenate([value for value, _ in parts] + [leaf], axis=2)
        # A leaf is covered whenever it has a value; a group when no expected member is missing.
        member_missing = np.concatenate(
            [any_missing for _, any_missing in parts] + [np.zeros(leaf.shape, dtype=bool)], axis=2
        )
        del parts, leaf, missing
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
        # _covered[t] = covered months before month t, likewise.
        present &= ~member_missing
        del member_missing
        self._covered = np.zeros_like(self._counts)
        np.cumsum(present, axis=0, dtype=count_type, out=self._covered[1:])
        del present
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

    def _covered_months(
        self, kpis: np.ndarray, entities: np.ndarray, lo: int, hi: int
    ) -> np.ndarray:
        """Covered months among positions ``lo..hi`` (inside the data), shaped (KPIs, entities)."""
        return (
            self._slab(self._covered[hi + 1], kpis, entities)
            - self._slab(self._covered[lo], kpis, entities)
        ).astype(np.int64)

    def source_window(
        self, kpi_ids: Sequence[str], entities: np.ndarray, as_of: pd.Period, window: Window
    ) -> WindowValues:
        """Window values of source KPIs by their time aggregation, with their coverage.

        ``last`` (``first``) is complete when the window's final (first) month is covered, every
        other rule when all months of the window are; months outside the data are never covered.
        """
        first, last = window_bounds(as_of, window)
        start, stop = self.month_position(first), self.month_position(last)
        length = stop - start + 1
        kpis = np.array([self.kpi_index[k] for k in kpi_ids], dtype=np.int64)
        lo, hi = max(start, 0), min(stop, self.month_count - 1)  # the window's months with data
        shape = (len(kpis), len(entities))
        value = np.full(shape, np.nan)
        if lo > hi or len(value) == 0:
            none = np.zeros(shape, dtype=bool)
            return WindowValues(value, np.zeros(shape, dtype=np.int64), none, none, length)
        months = (
            self._slab(self._counts[hi + 1], kpis, entities)
            - self._slab(self._counts[lo], kpis, entities)
        ).astype(np.int64)
        covered = self._covered_months(kpis, entities, lo, hi) == length
        complete = covered.copy()
        rules = np.array([self.registry[k].time_aggregation for k in kpi_ids], dtype=object)
        for rule in TimeAggregation:
            rows = np.flatnonzero(rules == rule)
            if len(rows) == 0:
                continue
            part = kpis[rows]
            if rule in (TimeAggregation.LAST, TimeAggregation.FIRST):
                # that month's value and coverage; missing when it lies outside the data
                month = stop if rule is TimeAggregation.LAST else start
                if not lo <= month <= hi:
                    complete[rows] = False
                    continue
                result = self._slab(self._by_month[month], part, entities)
                complete[rows] = self._covered_months(part, entities, month, month) == 1
            elif rule is TimeAggregation.SUM:
                result = self._window_sum(part, entities, lo, hi)
            elif rule is TimeAggregation.MEAN:
                result = self._window_sum(part, entities, lo, hi) / np.maximum(months[rows], 1)
            else:
                reduce = np.fmin if rule is TimeAggregation.MIN else np.fmax
                result = reduce.reduce(self._slab(self._by_month[lo : hi + 1], part, entities))
            value[rows] = np.where(months[rows] > 0, result, np.nan)
        return WindowValues(value, months, complete, covered, length)

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

    def monthly_covered(
        self, kpi_ids: Sequence[str], entities: np.ndarray, first: pd.Period, last: pd.Period
    ) -> np.ndarray:
        """Whether each month from ``first`` to ``last`` is covered, (KPIs, entities, months).

        A derived KPI's month is covered when its source KPIs' are; months outside the data never are.
        """
        start, stop = self.month_position(first), self.month_position(last)
        out = np.zeros((len(kpi_ids), len(entities), stop - start + 1), dtype=bool)
        lo, hi = max(start, 0), min(stop, self.month_count - 1)
        if lo > hi:
            return out
        steps = np.diff(self._covered[lo : hi + 2], axis=0) > 0  # (months, KPIs, entities)
        for i, kpi in enumerate(kpi_ids):
            sources = [self.kpi_index[k] for k in self.registry.leaf_components(kpi)]
            block = self._slab(steps, np.array(sources, dtype=np.int64), entities).all(axis=1)
            out[i, :, lo - start : hi - start + 1] = self._mask_groups(
                kpi, entities, block.T, missing=False
            )
        return out

    def members(self, entity: int) -> np.ndarray:
        """Positions (in :attr:`hierarchy`'s leaves) of the leaves under the entity at ``entity``."""
        level = self.entity_levels[entity]
        if level == TOTAL_LEVEL:
            return np.arange(len(self.hierarchy.leaves))
        if level == PRODUCT_LEVEL:
            return np.array([entity - self.leaf_offset])
        group = self.hierarchy.groups(level).index(self.entities[entity])
        return np.flatnonzero(self._group_codes[level] == group)

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

        A derived KPI's ``months`` is the smallest ``months`` of the source KPIs it rests on; it is
        complete (covered) when all of them are.
        """
        needed = self._closure(kpi_ids)
        sources = [k for k in needed if not self.registry[k].is_derived]
        base = self.source_window(sources, entities, as_of, window)
        values = {k: base.value[i] for i, k in enumerate(sources)}
        position = {k: i for i, k in enumerate(sources)}
        months = {k: base.months[i] for i, k in enumerate(sources)}
        complete = {k: base.complete[i] for i, k in enumerate(sources)}
        covered = {k: base.covered[i] for i, k in enumerate(sources)}
        for kpi in self.registry.derived_kpis:
            if kpi.id in needed:
                values[kpi.id] = self._mask_groups(
                    kpi.id, entities, kpi.parsed_formula.evaluate(values)
                )
                rows = [position[r] for r in self.registry.leaf_components(kpi.id)]
                months[kpi.id] = self._mask_groups(
                    kpi.id, entities, base.months[rows].min(axis=0), missing=0
                )
                complete[kpi.id] = self._mask_groups(
                    kpi.id, entities, base.complete[rows].all(axis=0), missing=False
                )
                covered[kpi.id] = self._mask_groups(
                    kpi.id, entities, base.covered[rows].all(axis=0), missing=False
                )
        return WindowValues(
            *(np.stack([part[k] for k in kpi_ids]) for part in (values, months, complete, covered)),
            length=base.length,
        )

    def per_account(
        self,
        kpi_ids: Sequence[str],
        entities: np.ndarray,
        as_of: pd.Period,
        window: Window,
        values: WindowValues,
    ) -> WindowValues:
        """Divide window values by the mean monthly value of each KPI's ``average_per`` KPI.

        KPIs without ``average_per`` get NaN; a zero or missing denominator gives NaN. A value
        stays complete only when its denominator is covered every month of the window.
        """
        denominators = sorted({self.registry[k].average_per for k in kpi_ids} - {None})
        if not denominators:
            return replace(values, value=np.full(values.value.shape, np.nan))
        first, last = window_bounds(as_of, window)
        monthly = self.monthly(denominators, entities, first, last)
        counts = (~np.isnan(monthly)).sum(axis=-1)
        means = np.where(counts > 0, np.nansum(monthly, axis=-1) / np.maximum(counts, 1), np.nan)
        covered = self.window(denominators, entities, as_of, window).covered
        per = [self.registry[k].average_per for k in kpi_ids]
        rows = np.array([denominators.index(p) if p is not None else -1 for p in per])
        has_denominator = (rows >= 0)[:, None]
        complete = values.complete & np.where(has_denominator, covered[rows], True)
        return replace(
            values,
            value=np.where(has_denominator, _divide(values.value, means[rows]), np.nan),
            complete=complete,
        )


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` with NaN where the denominator is zero or missing."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator != 0, numerator / denominator, np.nan)


def compute(
    cube: Cube,
    as_of: pd.Period,
    window: Window,
    kpi_ids: Sequence[str],
    entities: Sequence[str],
    per_account: bool = False,
) -> pd.DataFrame:
    """The result table for validated arguments (see :meth:`kpisheet.KPISheet.query`)."""
    index = np.array([cube.entity_index[e] for e in entities], dtype=np.int64)
    kpi_ids = list(kpi_ids)
    previous_as_of = as_of - PREVIOUS_YEAR_OFFSET
    if not kpi_ids or not len(index):
        return _empty_result()
    current = cube.window(kpi_ids, index, as_of, window)
    previous = cube.window(kpi_ids, index, previous_as_of, window)
    if per_account:
        current = cube.per_account(kpi_ids, index, as_of, window, current)
        previous = cube.per_account(kpi_ids, index, previous_as_of, window, previous)
    keep = ((current.months > 0) | (previous.months > 0)).T.ravel()  # entity-major rows

    def rows(array: np.ndarray) -> np.ndarray:
        return array.T.ravel()[keep]

    value, previous_value = rows(current.value), rows(previous.value)
    change = value - previous_value
    change_pct = _divide(change, np.abs(previous_value))
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
            MONTHS: rows(current.months),
            COMPLETE: rows(current.complete),
            PREVIOUS_MONTHS: rows(previous.months),
            PREVIOUS_COMPLETE: rows(previous.complete),
        },
        columns=list(RESULT_COLUMNS),
    )


#: dtypes of the result columns
RESULT_DTYPES: dict[str, Any] = {
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
    PREVIOUS_MONTHS: np.int64,
    PREVIOUS_COMPLETE: bool,
}


def _empty_result() -> pd.DataFrame:
    frame = pd.DataFrame({column: [] for column in RESULT_COLUMNS})
    return frame.astype(RESULT_DTYPES)


def series(
    cube: Cube,
    kpi_ids: Sequence[str],
    entities: Sequence[str],
    first: pd.Period,
    last: pd.Period,
    per_account: bool,
) -> pd.DataFrame:
    """Monthly values (long: month, entity, kpi, value, covered) of KPIs for entities, e.g. for a
    line chart. ``covered`` says whether every expected member reported that month (and, per
    account, the ``average_per`` KPI too)."""
    index = np.array([cube.entity_index[e] for e in entities], dtype=np.int64)
    kpi_ids = list(kpi_ids)
    values = cube.monthly(kpi_ids, index, first, last)
    covered = cube.monthly_covered(kpi_ids, index, first, last)
    if per_account:
        per = [cube.registry[k].average_per for k in kpi_ids]
        denominators = sorted(set(per) - {None})
        out = np.full(values.shape, np.nan)
        out_covered = np.zeros(covered.shape, dtype=bool)
        if denominators:
            base = cube.monthly(denominators, index, first, last)
            base_covered = cube.monthly_covered(denominators, index, first, last)
            for i, kpi_per in enumerate(per):
                if kpi_per is not None:
                    row = denominators.index(kpi_per)
                    out[i] = _divide(values[i], base[row])
                    out_covered[i] = covered[i] & base_covered[row]
        values, covered = out, out_covered
    months = pd.period_range(first, last, freq="M")
    k, e, t = values.shape
    return pd.DataFrame(
        {
            MONTH: np.tile(months.to_numpy(), k * e),
            ENTITY: np.tile(np.repeat(np.asarray(entities, dtype=object), t), k),
            KPI: np.repeat(np.asarray(kpi_ids, dtype=object), e * t),
            VALUE: values.ravel(),
            COVERED: covered.ravel(),
        }
    ).astype({MONTH: pd.PeriodDtype("M"), ENTITY: str, KPI: str})


def coverage(
    cube: Cube,
    kpi_id: str,
    entity: str,
    as_of: pd.Period,
    window: Window,
    per_account: bool = False,
) -> pd.DataFrame:
    """Month by month, for both windows of a query row: which expected members did not report.

    One row per window (``current``, ``previous``), source KPI the row rests on and month, with
    ``has_value``, ``covered``, ``decides`` (whether the month counts for the row's ``complete``
    flag: only the final month for ``last``, the first for ``first``, every month otherwise and
    for a per-account denominator) and ``missing`` (the expected members without a value, as a
    tuple of names in hierarchy order).
    """
    registry = cube.registry
    components: dict[str, bool] = {}  # source KPI -> every month decides
    for source in registry.leaf_components(kpi_id):
        components[source] = registry[source].time_aggregation not in (
            TimeAggregation.LAST,
            TimeAggregation.FIRST,
        )
    per = registry[kpi_id].average_per if per_account else None
    if per is not None:
        for source in registry.leaf_components(per):
            components[source] = True
    entity_at = np.array([cube.entity_index[entity]], dtype=np.int64)
    masked = bool(
        registry[kpi_id].entity_aggregation is EntityAggregation.NONE
        and cube.entity_levels[entity_at[0]] != PRODUCT_LEVEL
    )
    members = cube.members(entity_at[0])
    leaves = np.asarray(cube.hierarchy.leaves, dtype=object)
    frames = []
    for period, end in (("current", as_of), ("previous", as_of - PREVIOUS_YEAR_OFFSET)):
        first, last = window_bounds(end, window)
        months = pd.period_range(first, last, freq="M")
        positions = np.arange(cube.month_position(first), cube.month_position(last) + 1)
        inside = (positions >= 0) & (positions < cube.month_count)
        for source, every in components.items():
            k = cube.kpi_index[source]
            kpis = np.array([k], dtype=np.int64)
            values = cube._block(kpis, entity_at, positions[0], positions[-1])[0, 0]
            covered = cube.monthly_covered([source], entity_at, first, last)[0, 0]
            life_first, life_last = cube._life_first[k, members], cube._life_last[k, members]
            expected = (positions[:, None] >= life_first) & (positions[:, None] <= life_last)
            leaf_values = cube._block(kpis, cube.leaf_offset + members, *positions[[0, -1]])[0]
            absent = expected & np.isnan(leaf_values.T) & inside[:, None]
            if every:
                decides = np.ones(len(positions), dtype=bool)
            else:
                rule = registry[source].time_aggregation
                decides = np.arange(len(positions)) == (
                    len(positions) - 1 if rule is TimeAggregation.LAST else 0
                )
            frames.append(
                pd.DataFrame(
                    {
                        "period": period,
                        MONTH: months.strftime(MONTH_TEXT_FORMAT),
                        KPI: source,
                        "has_value": ~np.isnan(values),
                        COVERED: covered & (not masked),
                        "decides": decides,
                        "missing": [tuple(leaves[members[row]]) for row in absent],
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)
