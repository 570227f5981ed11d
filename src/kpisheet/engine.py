"""How numbers are computed (docs/analysts.md): group roll-ups, calendar windows, derived KPIs,
per-account values, and how far each number can be trusted (coverage).

The :class:`Cube` is built once per sheet, from the validated observations as integer codes: dense
arrays over (month, KPI, entity) of every source KPI for every entity of the tree, with group levels
already rolled up month by month. A query then only slices the months of its two windows (current
and previous year) for the KPIs and entities it needs and aggregates them along the month axis —
numpy on whole blocks, no loop per row or series.

The arrays are month-major, so the months of a window are one contiguous slab: the values with
missing ones as zero, and a running count of months with a value, so a window's sum is a sum of
whole rows, its month count a difference of two rows, and whether a month has a value a difference
of two neighbouring rows (the values with NaN for missing are not kept a second time). The cube is
all an open sheet keeps: the observations are rebuilt from it when asked for.

Coverage works the same way. A leaf's *lifetime* for a source KPI runs from its first to its last
month with a value; inside it the leaf is expected every month. A month is *covered* for an entity
when the entity has a value and no member expected that month lacks one; the cube keeps a running
count of covered months beside the running count of months with a value, so whether a window is
complete is again a difference of two rows.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.extensions import ExtensionArray

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
from kpisheet.observations import HandedOver, ObservationCodes, text_column
from kpisheet.registry import Registry

#: Month ordinal 0 (months are counted from it).
_EPOCH = pd.Period("1970-01", "M")


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


#: Selections of entities, and of KPIs, whose positions and plans a cube keeps: a long-running
#: app is asked for ever new selections, so the kept ones are dropped when there are more.
_REMEMBERED_SELECTIONS = 256


#: Selections whose result rows' text columns a cube keeps (a few MB each at the largest sizes).
_REMEMBERED_TEXTS = 4


def _remember(
    memory: dict[Any, Any], key: Any, value: Any, limit: int = _REMEMBERED_SELECTIONS
) -> None:
    """Keep ``value`` under ``key``, forgetting everything kept before once memory is full."""
    if len(memory) >= limit:
        memory.clear()
    memory[key] = value


#: Size of the copy in which a roll-up gathers a group's members (bytes, about).
_GATHER_BYTES = 4 * 1024 * 1024


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
        # a block of months at a time: members gathered into a copy of the block, not of the
        # array; and ``array`` may be a view into the cube, which reduceat would copy whole
        result = np.empty((*array.shape[:2], len(starts)), dtype=array.dtype)
        step = max(1, _GATHER_BYTES // max(1, array[:1].nbytes))
        for lo in range(0, array.shape[0], step):
            block = array[lo : lo + step] if every else array[lo : lo + step][..., members]
            ufunc.reduceat(block, starts, axis=2, out=result[lo : lo + step])
        return result

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


#: Rows placed in the cube at a time.
_ROW_BLOCK = 1 << 18


def _coded(observations: pd.DataFrame | ObservationCodes | HandedOver) -> ObservationCodes:
    """Validated observations as codes; a canonical frame is coded one distinct text at a time."""
    if isinstance(observations, HandedOver):
        return observations.take()
    if isinstance(observations, ObservationCodes):
        return observations
    kpi, kpi_labels = pd.factorize(observations[KPI])
    entity, entity_labels = pd.factorize(observations[ENTITY])
    return ObservationCodes(
        month=observations[MONTH].array.asi8,
        kpi=kpi,
        kpi_labels=np.asarray(kpi_labels, dtype=object),
        entity=entity,
        entity_labels=np.asarray(entity_labels, dtype=object),
        value=observations[VALUE].to_numpy(dtype=float),
    )


def _positions(axis: Sequence[str], labels: np.ndarray) -> np.ndarray:
    """Position on ``axis`` of each label and -1 last (for code -1), in the smallest integer type:
    indexed by the rows' codes, the gathered array is a quarter of an int64 array's size."""
    positions = np.append(pd.Index(axis).get_indexer(labels), -1)
    return positions.astype(np.int16 if len(axis) < np.iinfo(np.int16).max else np.int32)


def _selector(positions: np.ndarray | slice) -> slice | np.ndarray:
    """``positions`` as a slice when they are consecutive (a view instead of a gathered copy)."""
    if isinstance(positions, slice):
        return positions
    if (
        len(positions)
        and positions[-1] - positions[0] == len(positions) - 1
        and np.array_equal(positions, np.arange(positions[0], positions[-1] + 1))
    ):
        return slice(int(positions[0]), int(positions[-1]) + 1)
    return positions


def _slab(array: np.ndarray, kpis: np.ndarray | slice, entities: np.ndarray | slice) -> np.ndarray:
    """``array[..., kpis, entities]`` of a month-major array (a slab of months or one month);
    consecutive positions are sliced, not gathered."""
    k, e = _selector(kpis), _selector(entities)
    if isinstance(k, slice):
        return array[..., k, e]
    if isinstance(e, slice):
        return array[..., k, :][..., e]
    return array[..., k[:, None], e[None, :]]


def _place(
    rows: ObservationCodes,
    cube: np.ndarray,
    kpis: Sequence[str],
    leaves: Sequence[str],
    first_month: int,
) -> np.ndarray:
    """Write the rows' values into ``cube`` (months from ``first_month``, ``kpis``, entities with
    ``leaves`` last), a block of rows at a time: no array of the rows' length is needed.

    Returns the cells, flat in the leaves' part (months, KPIs, leaves), of rows given with a
    missing value.
    """
    kpi_positions = _positions(kpis, rows.kpi_labels)
    offset = cube.shape[2] - len(leaves)  # of the first leaf on the entity axis
    leaf_positions = _positions(leaves, rows.entity_labels).astype(np.int64) + offset
    flat = cube.reshape(-1)
    given_missing = [np.empty(0, dtype=np.int64)]
    for lo in range(0, len(rows), _ROW_BLOCK):
        block = slice(lo, lo + _ROW_BLOCK)
        series = rows.month[block].astype(np.int64)  # (month, KPI) of each row
        series -= first_month
        series *= len(kpis)
        series += kpi_positions[rows.kpi[block]]
        positions = leaf_positions[rows.entity[block]]
        values = rows.value[block]
        flat[series * cube.shape[2] + positions] = values
        missing = np.isnan(values)
        leaf_cells = series[missing] * len(leaves)
        leaf_cells += positions[missing] - offset
        given_missing.append(leaf_cells)
    return np.concatenate(given_missing)


@dataclass(frozen=True)
class _Texts:
    """The text columns of a result's rows, and the rows (cells of the KPI-major arrays)."""

    cells: np.ndarray
    columns: tuple[ExtensionArray, ...]


class Cube:
    """Monthly values of every source KPI for every entity (groups rolled up), as dense arrays."""

    def __init__(
        self,
        observations: pd.DataFrame | ObservationCodes | HandedOver,
        registry: Registry,
        hierarchy: Hierarchy,
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
        self.entity_index: dict[str, int] = {}
        #: position of the first leaf on the entity axis (the leaves come last)
        self.leaf_offset = len(names) - len(hierarchy.leaves)
        for i, name in enumerate(names):
            self.entity_index.setdefault(name, i)
        self._plans: dict[tuple[str, ...], _Plan] = {}
        self._texts: dict[tuple[tuple[str, ...], tuple[str, ...]], _Texts] = {}
        self._entity_positions: dict[tuple[str, ...], np.ndarray] = {}

        rows = _coded(observations)
        if len(rows):
            self.first = _EPOCH + int(rows.month.min())
            self.last = _EPOCH + int(rows.month.max())
        else:
            self.first = self.last = _EPOCH
        self.month_count = (self.last - self.first).n + 1 if len(rows) else 0
        self.months = (
            pd.period_range(self.first, self.last, freq="M")
            if len(rows)
            else pd.PeriodIndex([], freq="M")
        )

        leaves = hierarchy.leaves
        shape = (self.month_count, len(self.source_ids), len(leaves))
        # The cube, (months, KPIs, entities) with the leaves last: the rows go straight into the
        # leaves' part (a view), the groups are summed from it into theirs.
        by_month = np.full((*shape[:2], len(names)), np.nan)
        leaf = by_month[:, :, self.leaf_offset :]
        #: the cells of ``leaf`` (flat) of rows given with a missing value (the observations keep them)
        self._given_missing = _place(rows, by_month, self.source_ids, leaves, self.first.ordinal)
        del rows  # handed over (:class:`HandedOver`): the rows' arrays are freed here

        present = ~np.isnan(leaf)
        #: lifetime of each (source KPI, leaf): month positions of its first and last value
        self._life_first, self._life_last = _lifetimes(present)
        month_axis = np.arange(self.month_count)[:, None, None]
        missing = (month_axis >= self._life_first) & (month_axis <= self._life_last) & ~present
        # the leaves' values, missing as 0, in place (values are finite: validation checked them,
        # so nan_to_num's passes for infinities are not needed)
        np.copyto(leaf, 0.0, where=~present)
        filled = leaf
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
        leaf[~present] = np.nan  # missing again, as in the groups' values
        del filled, present, missing, leaf
        start = 0
        for value, _ in parts:  # the total, then each grouping's groups, in the entities' order
            by_month[:, :, start : start + value.shape[2]] = value
            start += value.shape[2]
        # A leaf is covered whenever it has a value; a group when no expected member is missing.
        member_missing = np.concatenate(
            [any_missing for _, any_missing in parts]
            + [np.zeros((*shape[:2], len(leaves)), dtype=bool)],
            axis=2,
        )
        del parts
        no_roll_up = [
            self.kpi_index[k.id]
            for k in registry.source_kpis
            if k.entity_aggregation is EntityAggregation.NONE
        ]
        group_positions = np.flatnonzero(self.entity_levels != PRODUCT_LEVEL)
        by_month[:, np.array(no_roll_up, dtype=np.int64)[:, None], group_positions[None, :]] = (
            np.nan
        )
        present = ~np.isnan(by_month)
        # _counts[t] = months with a value before month t, so a window's count is a difference
        # (and whether month t has a value, _counts[t + 1] > _counts[t]).
        count_type = np.int16 if self.month_count < np.iinfo(np.int16).max else np.int32
        self._counts = np.zeros((self.month_count + 1, *by_month.shape[1:]), dtype=count_type)
        np.cumsum(present, axis=0, dtype=count_type, out=self._counts[1:])
        #: the values with missing ones as 0, month-major: _filled[month, kpi, entity]
        np.copyto(by_month, 0.0, where=~present)
        self._filled = by_month
        del by_month
        # _covered[t] = covered months before month t, likewise.
        present &= ~member_missing
        del member_missing
        self._covered = np.zeros_like(self._counts)
        np.cumsum(present, axis=0, dtype=count_type, out=self._covered[1:])
        del present
        #: each entity's level as a code into :attr:`level_names`
        self.level_codes, self.level_names = pd.factorize(self.entity_levels)

    def row_texts(
        self,
        kpi_ids: Sequence[str],
        entities: Sequence[str],
        cells: np.ndarray,
        build: Callable[[], tuple[ExtensionArray, ...]],
    ) -> tuple[ExtensionArray, ...]:
        """The text columns of a result of a selection whose rows are ``cells``: made by
        ``build``, or those of the selection's last result when it had the same rows.

        Taking each row's text is most of a query's cost once the cube is warm, and a selection
        asked again at another month or window mostly has the same rows. Each result gets its
        own copies (cheap: Arrow's buffers are shared and never written).
        """
        key = (tuple(kpi_ids), tuple(entities))
        known = self._texts.get(key)
        if known is None or not np.array_equal(known.cells, cells):
            known = _Texts(cells, build())
            _remember(self._texts, key, known, _REMEMBERED_TEXTS)
        return tuple(column.copy() for column in known.columns)

    def entity_positions(self, entities: Sequence[str]) -> np.ndarray:
        """Positions of entities on the entity axis; a selection asked again is looked up once."""
        key = tuple(entities)
        positions = self._entity_positions.get(key)
        if positions is None:
            positions = np.array([self.entity_index[e] for e in key], dtype=np.int64)
            _remember(self._entity_positions, key, positions)
        return positions

    def month_position(self, month: pd.Period) -> int:
        """Position of a month on the month axis (may be outside the data)."""
        position: int = (month.year - self.first.year) * 12 + month.month - self.first.month
        return position

    def _values(self, lo: int, hi: int) -> np.ndarray:
        """The values of months ``lo..hi`` (inside the data), NaN where missing: (months, KPIs,
        entities)."""
        has_value = self._counts[lo + 1 : hi + 2] != self._counts[lo : hi + 1]
        return np.where(has_value, self._filled[lo : hi + 1], np.nan)

    def _block(self, kpis: np.ndarray, entities: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Values (KPIs, entities, months ``start..stop``), NaN for months outside the data."""
        out = np.full((len(kpis), len(entities), stop - start + 1), np.nan)
        lo, hi = max(start, 0), min(stop, self.month_count - 1)
        if lo <= hi:
            has_value = _slab(self._counts[lo + 1 : hi + 2], kpis, entities) != _slab(
                self._counts[lo : hi + 1], kpis, entities
            )
            values = np.where(has_value, _slab(self._filled[lo : hi + 1], kpis, entities), np.nan)
            out[:, :, lo - start : hi - start + 1] = values.transpose(1, 2, 0)
        return out

    def observation_count(self) -> int:
        """How many observations the cube was built from, without rebuilding them."""
        leaves = self._counts[..., self.leaf_offset :]
        return int(np.count_nonzero(leaves[1:] != leaves[:-1])) + len(self._given_missing)

    def observations(self) -> ObservationCodes:
        """The observations the cube was built from, ordered by month, KPI and product."""
        leaves = self._counts[..., self.leaf_offset :]
        cells = np.flatnonzero(leaves[1:] != leaves[:-1])
        if len(self._given_missing):
            cells = np.sort(np.concatenate([cells, self._given_missing]))
        month, kpi, entity = np.unravel_index(cells, leaves[1:].shape)
        value = self._filled[month, kpi, entity + self.leaf_offset]
        value[np.isin(cells, self._given_missing)] = np.nan
        return ObservationCodes(
            month=month + self.first.ordinal,
            kpi=kpi,
            kpi_labels=np.asarray(self.source_ids, dtype=object),
            entity=entity,
            entity_labels=np.asarray(self.hierarchy.leaves, dtype=object),
            value=value,
        )

    def _window_sum(
        self, kpis: np.ndarray, entities: np.ndarray | slice, count: int, lo: int, hi: int
    ) -> np.ndarray:
        """Sum over months ``lo..hi`` of the values (missing as 0), shaped (KPIs, entities).

        A large selection sums every row of the slab and picks afterwards: adding whole contiguous
        rows is cheaper than gathering a scattered block first.
        """
        slab = self._filled[lo : hi + 1]
        if len(kpis) * count * 4 >= slab.shape[1] * slab.shape[2]:
            return _slab(slab.sum(axis=0), kpis, entities)
        total: np.ndarray = _slab(slab, kpis, entities).sum(axis=0)
        return total

    def _running(
        self,
        array: np.ndarray,
        kpis: np.ndarray | slice,
        entities: np.ndarray | slice,
        lo: int,
        hi: int,
    ) -> np.ndarray:
        """Months ``lo..hi`` counted by a running count (``_counts``, ``_covered``): (KPIs, entities)."""
        counts: np.ndarray = _slab(array[hi + 1], kpis, entities) - _slab(array[lo], kpis, entities)
        return counts.astype(np.int64)

    def _plan(self, kpi_ids: Sequence[str]) -> _Plan:
        """What a window of these KPIs needs, worked out once per selection of KPIs."""
        key = tuple(kpi_ids)
        plan = self._plans.get(key)
        if plan is None:
            needed = self._closure(kpi_ids)
            # in the cube's order, so that a selection of every KPI is a slice of it
            sources = tuple(
                sorted(
                    (k for k in needed if not self.registry[k].is_derived),
                    key=self.kpi_index.__getitem__,
                )
            )
            source_rows = {k: i for i, k in enumerate(sources)}
            rules = np.array([self.registry[k].time_aggregation for k in sources], dtype=object)
            plan = _Plan(
                needed=frozenset(needed),
                sources=sources,
                positions=np.array([self.kpi_index[k] for k in sources], dtype=np.int64),
                rules={
                    rule: np.flatnonzero(rules == rule)
                    for rule in TimeAggregation
                    if (rules == rule).any()
                },
                picked=np.array(
                    [i for i, k in enumerate(kpi_ids) if k in source_rows], dtype=np.int64
                ),
                picked_rows=np.array(
                    [source_rows[k] for k in kpi_ids if k in source_rows], dtype=np.int64
                ),
                picked_derived=tuple((i, k) for i, k in enumerate(kpi_ids) if k not in source_rows),
                components={
                    k.id: np.array(
                        [sources.index(r) for r in self.registry.leaf_components(k.id)],
                        dtype=np.int64,
                    )
                    for k in self.registry.derived_kpis
                    if k.id in needed
                },
            )
            _remember(self._plans, key, plan)
        return plan

    def source_window(
        self, kpi_ids: Sequence[str], entities: np.ndarray, as_of: pd.Period, window: Window
    ) -> WindowValues:
        """Window values of source KPIs by their time aggregation, with their coverage.

        ``last`` (``first``) is complete when the window's final (first) month is covered, every
        other rule when all months of the window are; months outside the data are never covered.
        """
        plan = self._plan(kpi_ids)
        first, last = window_bounds(as_of, window)
        start, stop = self.month_position(first), self.month_position(last)
        length = stop - start + 1
        kpis = plan.positions
        lo, hi = max(start, 0), min(stop, self.month_count - 1)  # the window's months with data
        shape = (len(kpis), len(entities))
        value = np.full(shape, np.nan)
        if lo > hi or len(value) == 0:
            none = np.zeros(shape, dtype=bool)
            return WindowValues(value, np.zeros(shape, dtype=np.int64), none, none, length)
        columns = _selector(entities)  # worked out once for every slab below
        every = _selector(kpis)
        months = self._running(self._counts, every, columns, lo, hi)
        covered = self._running(self._covered, every, columns, lo, hi) == length
        complete = covered.copy()
        summed = [
            rows
            for rule, rows in plan.rules.items()
            if rule in (TimeAggregation.SUM, TimeAggregation.MEAN)
        ]
        if summed:
            rows = np.concatenate(summed)
            sums = np.empty(shape)
            sums[rows] = self._window_sum(kpis[rows], columns, shape[1], lo, hi)
        for rule, rows in plan.rules.items():
            part = _selector(kpis[rows])
            if rule in (TimeAggregation.LAST, TimeAggregation.FIRST):
                # that month's value and coverage; missing when it lies outside the data
                month = stop if rule is TimeAggregation.LAST else start
                if not lo <= month <= hi:
                    complete[rows] = False
                    continue
                has_value = _slab(self._counts[month + 1], part, columns) != _slab(
                    self._counts[month], part, columns
                )
                result = np.where(has_value, _slab(self._filled[month], part, columns), np.nan)
                complete[rows] = self._running(self._covered, part, columns, month, month) == 1
            elif rule is TimeAggregation.SUM:
                result = sums[rows]
            elif rule is TimeAggregation.MEAN:
                result = sums[rows] / np.maximum(months[rows], 1)
            else:
                reduce = np.fmin if rule is TimeAggregation.MIN else np.fmax
                result = reduce.reduce(_slab(self._values(lo, hi), part, columns))
            value[rows] = np.where(months[rows] > 0, result, np.nan)
        return WindowValues(value, months, complete, covered, length)

    def _derive(
        self, needed: Collection[str], entities: np.ndarray, values: dict[str, np.ndarray]
    ) -> list[str]:
        """Evaluate the derived KPIs among ``needed`` by formula into ``values`` (source KPIs'
        arrays, any shape with entities first), in evaluation order; returns their ids."""
        derived = []
        for kpi in self.registry.derived_kpis:
            if kpi.id in needed and (formula := kpi.parsed_formula) is not None:
                values[kpi.id] = self._mask_groups(kpi.id, entities, formula.evaluate(values))
                derived.append(kpi.id)
        return derived

    def monthly(
        self, kpi_ids: Sequence[str], entities: np.ndarray, first: pd.Period, last: pd.Period
    ) -> np.ndarray:
        """Monthly values (KPIs, entities, months) of source and derived KPIs from ``first`` to ``last``."""
        plan = self._plan(kpi_ids)
        start, stop = self.month_position(first), self.month_position(last)
        block = self._block(plan.positions, entities, start, stop)
        values = {k: block[i] for i, k in enumerate(plan.sources)}
        self._derive(plan.needed, entities, values)
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
            block = np.asarray(
                _slab(steps, np.array(sources, dtype=np.int64), entities).all(axis=1)
            )
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
                formula = self.registry[kpi].parsed_formula
                if formula is not None:
                    stack += formula.references
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
        plan = self._plan(kpi_ids)
        base = self.source_window(kpi_ids, entities, as_of, window)
        values = {k: base.value[i] for i, k in enumerate(plan.sources)}
        months = {k: base.months[i] for i, k in enumerate(plan.sources)}
        complete = {k: base.complete[i] for i, k in enumerate(plan.sources)}
        covered = {k: base.covered[i] for i, k in enumerate(plan.sources)}
        for kpi in self._derive(plan.needed, entities, values):
            rows = plan.components[kpi]
            months[kpi] = self._mask_groups(kpi, entities, base.months[rows].min(axis=0), missing=0)
            complete[kpi] = self._mask_groups(
                kpi, entities, base.complete[rows].all(axis=0), missing=False
            )
            covered[kpi] = self._mask_groups(
                kpi, entities, np.asarray(base.covered[rows].all(axis=0)), missing=False
            )
        parts = (values, months, complete, covered)
        out = [
            np.empty((len(kpi_ids), len(entities)), dtype=column.dtype)
            for column in (base.value, base.months, base.complete, base.covered)
        ]
        for array, whole, part in zip(
            out, (base.value, base.months, base.complete, base.covered), parts, strict=True
        ):
            array[plan.picked] = whole[plan.picked_rows]
            for row, kpi in plan.picked_derived:
                array[row] = part[kpi]
        return WindowValues(out[0], out[1], out[2], out[3], length=base.length)

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
        first, last = window_bounds(as_of, window)

        def denominators(kpis: list[str]) -> tuple[np.ndarray, np.ndarray]:
            monthly = self.monthly(kpis, entities, first, last)
            counts = (~np.isnan(monthly)).sum(axis=-1)
            means = np.where(
                counts > 0, np.nansum(monthly, axis=-1) / np.maximum(counts, 1), np.nan
            )
            return means, self.window(kpis, entities, as_of, window).covered

        value, has_denominator, covered = self.divide_per_account(
            kpi_ids, values.value, denominators
        )
        complete = values.complete & np.where(has_denominator, covered, True)
        return replace(values, value=value, complete=complete)

    def divide_per_account(
        self,
        kpi_ids: Sequence[str],
        values: np.ndarray,
        denominators: Callable[[list[str]], tuple[np.ndarray, np.ndarray]],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``values`` (KPIs first) divided by their KPIs' ``average_per`` KPI, the one home of the
        per-account rule for windows and for months alike.

        ``denominators(ids)`` gives the ``average_per`` KPIs' values and coverage, shaped like a
        row of ``values`` each. Returns the quotients (NaN without ``average_per`` and where the
        denominator is zero or missing), whether each KPI has an ``average_per`` KPI (shaped to
        broadcast against ``values``) and its denominator's coverage.
        """
        per = [self.registry[k].average_per for k in kpi_ids]
        wanted = sorted({p for p in per if p is not None})
        has_denominator = np.array([p is not None for p in per]).reshape(
            -1, *(1,) * (values.ndim - 1)
        )
        if not wanted:
            return (
                np.full(values.shape, np.nan),
                has_denominator,
                np.zeros(values.shape, dtype=bool),
            )
        base, covered = denominators(wanted)
        rows = np.array([wanted.index(p) if p is not None else -1 for p in per], dtype=np.int64)
        value = np.where(has_denominator, _divide(values, base[rows]), np.nan)
        return value, has_denominator, covered[rows]


@dataclass(frozen=True)
class _Plan:
    """What a window of a selection of KPIs needs: the KPIs with every KPI their formulas need,
    the source KPIs among them and their positions in the cube, the source rows of each time
    aggregation, which rows of the selection are source KPIs (and their source rows) or derived
    ones, and each derived KPI's source rows."""

    needed: frozenset[str]
    sources: tuple[str, ...]
    positions: np.ndarray
    rules: dict[TimeAggregation, np.ndarray]
    picked: np.ndarray
    picked_rows: np.ndarray
    picked_derived: tuple[tuple[int, str], ...]
    components: dict[str, np.ndarray]


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
    index = cube.entity_positions(entities)
    kpi_ids = list(kpi_ids)
    previous_as_of = as_of - PREVIOUS_YEAR_OFFSET
    if not kpi_ids or not len(index):
        return _empty_result()
    # A large selection is computed for every entity, on whole rows of the cube (slices, not
    # gathered copies), and its entities are picked with the result's rows.
    axis = np.arange(len(cube.entities)) if 2 * len(index) >= len(cube.entities) else index
    columns = index if axis is not index else np.arange(len(index))
    current = cube.window(kpi_ids, axis, as_of, window)
    previous = cube.window(kpi_ids, axis, previous_as_of, window)
    if per_account:
        current = cube.per_account(kpi_ids, axis, as_of, window, current)
        previous = cube.per_account(kpi_ids, axis, previous_as_of, window, previous)
    # Rows entity-major: the (KPI, entity) cells with a value in either window, as positions
    # into the KPI-major arrays, so that every column is one gather.
    has_value = ((current.months > 0) | (previous.months > 0))[:, columns]
    entity_codes, kpi_codes = np.nonzero(has_value.T)
    cells = kpi_codes * len(axis) + columns[entity_codes]

    def rows(array: np.ndarray) -> np.ndarray:
        return np.take(array.ravel(), cells)  # a take: about twice as fast as ``[cells]``

    value, previous_value = rows(current.value), rows(previous.value)
    change = value - previous_value
    change_pct = _divide(change, np.abs(previous_value))
    level, entity, kpi = cube.row_texts(
        kpi_ids,
        entities,
        cells,
        lambda: (
            text_column(cube.level_names, cube.level_codes[index][entity_codes]),
            text_column(entities, entity_codes),
            text_column(kpi_ids, kpi_codes),
        ),
    )
    constant = np.zeros(len(value), dtype=np.int64)
    return pd.DataFrame(
        {
            AS_OF: text_column([as_of.strftime(MONTH_TEXT_FORMAT)], constant),
            WINDOW: text_column([window.value], constant),
            LEVEL: level,
            ENTITY: entity,
            KPI: kpi,
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
        copy=False,
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

        def denominators(kpis: list[str]) -> tuple[np.ndarray, np.ndarray]:
            return (
                cube.monthly(kpis, index, first, last),
                cube.monthly_covered(kpis, index, first, last),
            )

        values, has_denominator, base_covered = cube.divide_per_account(
            kpi_ids, values, denominators
        )
        covered = covered & has_denominator & base_covered
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
    components = _deciding_sources(registry, kpi_id, per_account)
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


def _deciding_sources(registry: Registry, kpi_id: str, per_account: bool) -> dict[str, bool]:
    """The source KPIs a query row's ``complete`` flag rests on, in the order coverage lists them
    (a derived KPI's components, then per account the ``average_per`` KPI's), each with whether
    every month of the window decides (``last`` and ``first`` decide only their own month; a
    per-account denominator every month)."""
    components: dict[str, bool] = {}
    for source in registry.leaf_components(kpi_id):
        components[source] = registry[source].time_aggregation not in (
            TimeAggregation.LAST,
            TimeAggregation.FIRST,
        )
    per = registry[kpi_id].average_per if per_account else None
    if per is not None:
        for source in registry.leaf_components(per):
            components[source] = True
    return components


@dataclass(frozen=True)
class FirstGaps:
    """For each of many query rows' windows: the first month that decides the row's ``complete``
    flag and is not covered, and the expected members without a value in it.

    ``found`` says whether a row has such a month, ``month`` is its position on the cube's month
    axis (0 where not found). The missing members are pairs (``missing_rows``, ``missing_leaves``:
    positions in the hierarchy's leaves), grouped by row; within a row, source KPI by source KPI
    as :func:`coverage` lists them, each KPI's members in hierarchy order, a member named once.
    """

    found: np.ndarray
    month: np.ndarray
    missing_rows: np.ndarray
    missing_leaves: np.ndarray


def first_gaps(
    cube: Cube,
    kpi_ids: Sequence[str],
    entities: Sequence[str],
    starts: np.ndarray,
    stops: np.ndarray,
    per_account: bool = False,
) -> FirstGaps:
    """What :func:`coverage` tells of each row's window, for many rows at once: the first deciding
    month that is not covered, and who did not report then (see :class:`FirstGaps`).

    Row ``i`` is KPI ``kpi_ids[i]`` of entity ``entities[i]`` over the months at positions
    ``starts[i]..stops[i]`` of the cube's month axis (they may lie outside the data, which is never
    covered). The same rules as :func:`coverage`: ``last`` (``first``) decides only the window's
    final (first) month, every other rule and a per-account denominator every month; a KPI not
    rolled up over entities is never covered at a group. Numpy over all rows at once; Python loops
    only over the distinct KPIs and the distinct (source KPI, month) pairs of the gaps found.
    """
    registry = cube.registry
    count = len(kpi_ids)
    none = np.zeros(0, dtype=np.int64)
    if not count:
        return FirstGaps(np.zeros(0, dtype=bool), none, none, none)
    starts = np.asarray(starts, dtype=np.int64)
    stops = np.asarray(stops, dtype=np.int64)
    kpi_codes, kpi_names = pd.factorize(np.asarray(kpi_ids, dtype=object))
    entity_codes, entity_names = pd.factorize(np.asarray(entities, dtype=object))
    entity_at = np.array([cube.entity_index[e] for e in entity_names], dtype=np.int64)[entity_codes]
    at_group = cube.entity_levels[entity_at] != PRODUCT_LEVEL
    # One pair per (row, source KPI it rests on): the row, the source KPI's position in the cube,
    # its rank among the row's source KPIs, how its months decide (0: every month, 1: only the
    # window's final month, 2: only its first) and whether it is never covered.
    pair_parts: list[tuple[np.ndarray, int, int, int, np.ndarray]] = []
    for code, kpi in enumerate(kpi_names):
        rows = np.flatnonzero(kpi_codes == code)
        masked = at_group[rows] & (registry[kpi].entity_aggregation is EntityAggregation.NONE)
        for rank, (source, every) in enumerate(
            _deciding_sources(registry, kpi, per_account).items()
        ):
            last = registry[source].time_aggregation is TimeAggregation.LAST
            rule = 0 if every else 1 if last else 2
            pair_parts.append((rows, cube.kpi_index[source], rank, rule, masked))
    sizes = [len(rows) for rows, *_ in pair_parts]
    pair_row = np.concatenate([rows for rows, *_ in pair_parts] or [np.zeros(0, np.int64)])
    pair_kpi = np.repeat(np.array([k for _, k, *_ in pair_parts], dtype=np.int64), sizes)
    pair_rank = np.repeat(np.array([r for _, _, r, *_ in pair_parts], dtype=np.int64), sizes)
    pair_masked = np.concatenate([m for *_, m in pair_parts] or [np.zeros(0, bool)])
    rule_of = np.repeat(np.array([r for *_, r, _ in pair_parts], dtype=np.int64), sizes)
    pair_entity = entity_at[pair_row]
    pair_start, lengths = starts[pair_row], (stops - starts + 1)[pair_row]
    # (pairs, months of the longest window): whether each month decides and is covered
    offsets = np.arange(int(lengths.max()) if len(lengths) else 0)
    month = pair_start[:, None] + offsets[None, :]
    decides = np.where(
        rule_of[:, None] == 0,
        offsets[None, :] < lengths[:, None],
        offsets[None, :] == np.where(rule_of == 1, lengths - 1, 0)[:, None],
    )
    inside = (month >= 0) & (month < cube.month_count)
    covered = np.zeros(month.shape, dtype=bool)
    if cube.month_count:
        at = np.clip(month, 0, cube.month_count - 1)
        kpi_at, entity_of = pair_kpi[:, None], pair_entity[:, None]
        covered = cube._covered[at + 1, kpi_at, entity_of] > cube._covered[at, kpi_at, entity_of]
        covered &= inside & ~pair_masked[:, None]
    gap = decides & ~covered
    pair_has = gap.any(axis=1)
    pair_month = pair_start + gap.argmax(axis=1)
    never = np.iinfo(np.int64).max
    first = np.full(count, never, dtype=np.int64)
    np.minimum.at(first, pair_row[pair_has], pair_month[pair_has])
    found = first != never
    # The culprits: the pairs whose first gap is their row's first gap.
    culprit = np.flatnonzero(pair_has & (pair_month == first[pair_row]))
    culprit = culprit[(pair_month[culprit] >= 0) & (pair_month[culprit] < cube.month_count)]
    member = _membership(cube)
    found_rows, found_ranks, found_leaves = [], [], []
    # the distinct (source KPI, month) gaps, each with the leaves expected then but without a value
    gaps = pair_kpi[culprit] * max(cube.month_count, 1) + pair_month[culprit]
    keys, groups = np.unique(gaps, return_inverse=True)
    leaf_counts = cube._counts[..., cube.leaf_offset :]
    for g, key in enumerate(keys):
        k, m = divmod(int(key), max(cube.month_count, 1))
        absent = np.flatnonzero(
            (cube._life_first[k] <= m)
            & (cube._life_last[k] >= m)
            & (leaf_counts[m + 1, k] == leaf_counts[m, k])
        )
        if not len(absent):
            continue
        pairs = culprit[groups == g]
        hit_pair, hit_leaf = np.nonzero(member(pair_entity[pairs][:, None], absent[None, :]))
        found_rows.append(pair_row[pairs][hit_pair])
        found_ranks.append(pair_rank[pairs][hit_pair])
        found_leaves.append(absent[hit_leaf])
    rows_hit = np.concatenate([none, *found_rows])
    leaves_hit = np.concatenate([none, *found_leaves])
    order = np.lexsort((leaves_hit, np.concatenate([none, *found_ranks]), rows_hit))
    rows_hit, leaves_hit = rows_hit[order], leaves_hit[order]
    # a member missing for several source KPIs is named once, where it comes first
    _, firsts = np.unique(rows_hit * len(cube.hierarchy.leaves) + leaves_hit, return_index=True)
    kept = np.sort(firsts)
    return FirstGaps(
        found=found,
        month=np.where(found, first, 0),
        missing_rows=rows_hit[kept],
        missing_leaves=leaves_hit[kept],
    )


def _membership(cube: Cube) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Whether the leaf at each position of ``leaves`` lies under the entity at ``entities``
    (positions on the entity axis; the two arrays broadcast), from the hierarchy's group codes."""
    groupings = list(cube._group_codes)
    grouping_of = np.full(len(cube.entities), -1, dtype=np.int64)  # -1: the total
    group_of = np.zeros(len(cube.entities), dtype=np.int64)
    grouping_of[cube.leaf_offset :] = -2  # a product
    position = 1
    for i, grouping in enumerate(groupings):
        size = len(cube.hierarchy.groups(grouping))
        grouping_of[position : position + size] = i
        group_of[position : position + size] = np.arange(size)
        position += size
    codes = (
        np.stack([cube._group_codes[g] for g in groupings])
        if groupings
        else np.zeros((1, len(cube.hierarchy.leaves)), dtype=np.int64)
    )

    def member(entities: np.ndarray, leaves: np.ndarray) -> np.ndarray:
        kind = grouping_of[entities]
        in_group = codes[np.maximum(kind, 0), leaves] == group_of[entities]
        is_leaf = leaves == entities - cube.leaf_offset
        return np.where(kind == -1, True, np.where(kind == -2, is_leaf, in_group))

    return member
