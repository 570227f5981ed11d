"""The analyst's front door: ``kpisheet.open(...)`` gives a :class:`KPISheet` to query."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pandas as pd

from kpisheet import engine
from kpisheet.allocator import keep_freed_memory
from kpisheet.constants import MONTH_TEXT_FORMAT, Window
from kpisheet.errors import QueryError, StoreError, quoted, with_suggestion
from kpisheet.hierarchy import Hierarchy, load_hierarchy
from kpisheet.months import MonthLike, parse_month
from kpisheet.observations import (
    HandedOver,
    ObservationCodes,
    read_observations,
    validate_observation_codes,
)
from kpisheet.plugins import load_kpis
from kpisheet.registry import Registry

if TYPE_CHECKING:
    from kpisheet.explain import Explanation

#: Months a chart series covers by default: the as-of month and the twelve before it.
SERIES_MONTHS = 13


def _one_or_many(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return list(value)


def _unknown(kind: str, names: Sequence[str], known: Sequence[str]) -> QueryError:
    parts = [with_suggestion(f"'{name}'", name, known) for name in names]
    listing = (
        ", ".join(known)
        if len(known) <= 30
        else f"{len(known)} known, e.g. {', '.join(known[:10])}"
    )
    return QueryError(f"unknown {kind} {', '.join(parts)}; known: {listing}")


def parse_window(value: str | Window) -> Window:
    """A :class:`Window` from its word (case-insensitive); raises QueryError listing the allowed ones."""
    if isinstance(value, Window):
        return value
    text = str(value).strip().upper()
    try:
        return Window(text)
    except ValueError:
        allowed = ", ".join(w.value for w in Window)
        raise QueryError(f"window {quoted(value)} is not one of: {allowed}") from None


class KPISheet:
    """A validated KPI sheet: observations, KPI registry and entity hierarchy, ready to query.

    Build it with :func:`kpisheet.open`. The monthly cube is computed once; every query reuses it.
    """

    def __init__(
        self,
        observations: pd.DataFrame | ObservationCodes | HandedOver,
        registry: Registry,
        hierarchy: Hierarchy,
        *,
        release: Any = None,
        source: str = "",
    ) -> None:
        self.registry = registry
        self.hierarchy = hierarchy
        self.release = release
        self.source = source
        keep_freed_memory()
        # Only the cube is kept: the observations are in it (see :attr:`observations`).
        self._cube = engine.Cube(observations, registry, hierarchy)

    @property
    def observations(self) -> pd.DataFrame:
        """The validated observations (month, kpi, entity, value), ordered by month, KPI and
        product: rebuilt from the cube on each access, so an open sheet does not hold them twice."""
        return self._cube.observations().frame()

    @property
    def observation_count(self) -> int:
        """How many observations the sheet holds (rows of :attr:`observations`, counted cheaply)."""
        return self._cube.observation_count()

    def __repr__(self) -> str:
        span = f"{self.months[0]}..{self.months[-1]}" if len(self.months) else "no months"
        return (
            f"<KPISheet {self.source or 'data'}: {len(self.registry)} KPIs, "
            f"{len(self.hierarchy.leaves)} products, {span}>"
        )

    @property
    def months(self) -> pd.PeriodIndex:
        """Every month from the oldest to the newest month with data."""
        return self._cube.months

    @property
    def newest_month(self) -> pd.Period | None:
        """The newest month with data, the default as-of month."""
        return self._cube.last if len(self.months) else None

    @property
    def levels(self) -> tuple[str, ...]:
        """Level names, fine to coarse: ``product``, the hierarchy's group levels, ``total``."""
        return self.hierarchy.level_names

    @property
    def views(self) -> tuple[str, ...]:
        """Attributes that group the products another way (e.g. ``cardprofile``); usable as levels."""
        return self.hierarchy.views

    @property
    def kpis(self) -> pd.DataFrame:
        """One row per KPI in declared order: id, label, group, unit, aggregation rules, formula, origin."""
        rows = [
            {
                "id": k.id,
                "label": k.label,
                "group": k.group,
                "unit": k.unit.value,
                "time_aggregation": k.time_aggregation.value if k.time_aggregation else None,
                "entity_aggregation": k.entity_aggregation.value,
                "average_per": k.average_per,
                "formula": k.formula,
                "stock": self.registry.is_stock(k.id),
                "description": k.description,
                "origin": str(self.registry.origin(k.id)),
            }
            for k in self.registry
        ]
        return pd.DataFrame(rows)

    @property
    def entities(self) -> pd.DataFrame:
        """One row per entity, coarse to fine: entity, level, parent; views follow the tree."""
        tree = self.hierarchy.to_frame()
        views = [
            {"entity": group, "level": view, "parent": self.hierarchy.total}
            for view in self.hierarchy.views
            for group in self.hierarchy.groups(view)
        ]
        return pd.concat([tree, pd.DataFrame(views, columns=tree.columns)], ignore_index=True)

    def _as_of(self, as_of: MonthLike | None) -> pd.Period:
        if self.newest_month is None:
            raise QueryError("the sheet has no data")
        if as_of is None:
            return self.newest_month
        month = parse_month(as_of, name="as_of", error=QueryError)
        first, last = self.months[0], self.months[-1]
        if not first <= month <= last:
            raise QueryError(
                f"as_of {month.strftime(MONTH_TEXT_FORMAT)} is outside the data; "
                f"months go from {first.strftime(MONTH_TEXT_FORMAT)} to {last.strftime(MONTH_TEXT_FORMAT)}"
            )
        return month

    def _kpi_ids(self, kpis: str | Iterable[str] | None) -> list[str]:
        wanted = _one_or_many(kpis)
        if wanted is None:
            return list(self.registry.ids)
        unknown = [k for k in wanted if k not in self.registry]
        if unknown:
            raise _unknown("KPI", unknown, self.registry.ids)
        return [k for k in self.registry.ids if k in set(wanted)]

    def _entity_names(
        self, entities: str | Iterable[str] | None, levels: str | Iterable[str] | None
    ) -> list[str]:
        cube = self._cube
        wanted_levels = _one_or_many(levels)
        known_levels = (*self.levels, *self.views)
        if wanted_levels is not None:
            unknown = [level for level in wanted_levels if level not in known_levels]
            if unknown:
                raise _unknown("level", unknown, known_levels)
        wanted = _one_or_many(entities)
        if wanted is not None:
            unknown = [e for e in wanted if e not in cube.entity_index]
            if unknown:
                raise _unknown("entity", unknown, list(dict.fromkeys(cube.entities)))
        allowed_levels = set(
            wanted_levels
            if wanted_levels is not None
            else (self.levels if wanted is None else known_levels)
        )
        chosen = set(wanted) if wanted is not None else None
        return [
            name
            for name, level in zip(cube.entities, cube.entity_levels, strict=True)
            if level in allowed_levels and (chosen is None or name in chosen)
        ]

    def query(
        self,
        as_of: MonthLike | None = None,
        window: str | Window = Window.M1,
        kpis: str | Iterable[str] | None = None,
        entities: str | Iterable[str] | None = None,
        levels: str | Iterable[str] | None = None,
        per_account: bool = False,
    ) -> pd.DataFrame:
        """The KPI table for one window, with the previous-year comparison (docs/semantics.md, "Groups first, then time").

        :param as_of: last month of the window (``YYYY-MM``); default the newest month.
        :param window: ``1M``, ``3M``, ``6M``, ``12M`` or ``YTD``.
        :param kpis: KPI ids; default all, in declared order.
        :param entities: entity names (products or groups: a group gives its own row).
        :param levels: level names (``product``, a hierarchy level, ``total``, or a view such as
            ``cardprofile``); default every level of the tree.
        :param per_account: divide each value by the window's mean of its ``average_per`` KPI.
        :returns: columns ``as_of, window, level, entity, kpi, value, previous_value, change,
            change_pct, months, complete, previous_months, previous_complete``; one row per
            (entity, KPI) with a value in the current or previous window, entities coarse to
            fine, KPIs in declared order. ``complete`` and ``previous_complete`` say whether each
            window's value rests on covered months (docs/analysts.md, "Complete and covered");
            a change is trustworthy when both hold.
        :raises QueryError: naming the unknown month, window, KPI, entity or level.
        """
        month = self._as_of(as_of)
        return engine.compute(
            self._cube,
            month,
            parse_window(window),
            self._kpi_ids(kpis),
            self._entity_names(entities, levels),
            per_account=per_account,
        )

    def series(
        self,
        kpis: str | Iterable[str],
        entities: str | Iterable[str],
        as_of: MonthLike | None = None,
        months: int = SERIES_MONTHS,
        per_account: bool = False,
    ) -> pd.DataFrame:
        """Monthly values of KPIs for entities over ``months`` months ending at ``as_of``.

        Groups and derived KPIs are computed month by month; missing months are NaN rows, so a
        chart shows gaps. Columns: ``month`` (Period), ``entity``, ``kpi``, ``value`` and
        ``covered`` (every member expected that month reported; per account, the ``average_per``
        KPI too).
        """
        last = self._as_of(as_of)
        kpi_ids = self._kpi_ids(kpis)
        names = _one_or_many(entities) or []
        unknown = [e for e in names if e not in self._cube.entity_index]
        if unknown:
            raise _unknown("entity", unknown, list(dict.fromkeys(self._cube.entities)))
        return engine.series(self._cube, kpi_ids, names, last - (months - 1), last, per_account)

    def coverage(
        self,
        kpi: str,
        entity: str,
        as_of: MonthLike | None = None,
        window: str | Window = Window.M1,
        per_account: bool = False,
    ) -> pd.DataFrame:
        """Why a query row is (in)complete: month by month, which expected members did not report.

        One row per window (``period``: ``current`` or ``previous``, the window ending twelve
        months earlier), source KPI the row rests on (a derived KPI's components; per account
        also the ``average_per`` KPI's) and month. Columns: ``period``, ``month`` (``YYYY-MM``),
        ``kpi``, ``has_value``, ``covered``, ``decides`` (the month counts for the row's
        ``complete`` flag) and ``missing`` (a tuple of the expected members without a value).

        :raises QueryError: naming an unknown KPI, entity, month or window.
        """
        month = self._as_of(as_of)
        (kpi_id,) = self._kpi_ids([kpi])
        if entity not in self._cube.entity_index:
            raise _unknown("entity", [entity], list(dict.fromkeys(self._cube.entities)))
        return engine.coverage(
            self._cube, kpi_id, entity, month, parse_window(window), per_account=per_account
        )

    def explain(
        self,
        kpi: str,
        entity: str,
        as_of: MonthLike | None = None,
        window: str | Window = Window.M1,
        by: str | None = None,
    ) -> Explanation:
        """Why a group's KPI changed against the previous year: each member's contribution
        (docs/analysts.md, "Explaining a change").

        :param kpi: a KPI summed over products, or a ratio of two such KPIs.
        :param entity: the group to explain (the total, a group of a level or of a view).
        :param by: the members: default the next finer level of the hierarchy (products below
            the finest level or a view's group); ``product`` for every product; or a finer
            level or a view (a view's group that cuts across the entity counts with its part
            inside it, e.g. the card profiles of B2C).
        :returns: an :class:`~kpisheet.explain.Explanation`; its ``members`` frame (one row per
            member, largest contribution first) has a ``contribution`` column that sums to the
            group's ``change`` as :meth:`query` reports it, and for a ratio ``rate_effect`` +
            ``mix_effect`` = ``contribution``. ``fully_explained`` is false (with a ``message``)
            when the group's change is missing or a window of the group is not complete.
        :raises QueryError: naming an unknown KPI, entity, month, window or level, a KPI without
            an exact split, a product as the entity, or a level that is not finer than it.
        """
        from kpisheet.explain import explain

        return explain(self, kpi, entity, as_of=as_of, window=window, by=by)

    def flagged(self, result: pd.DataFrame, per_account: bool = False) -> pd.DataFrame:
        """The rows of a query result whose change passes its KPI's ``highlight`` threshold
        (docs/analysts.md, "Thresholds"); rows whose two windows are not both complete never do.

        :param per_account: the result holds per-account values (then only ``min_pct_change``
            applies: ``min_abs_change`` is stated in the KPI's own unit).
        """
        from kpisheet.thresholds import flags

        return result[flags(result, self.registry, per_account=per_account)]

    def to_excel(
        self,
        result: pd.DataFrame,
        target: str | Path | IO[bytes],
        selection: Mapping[str, object] | None = None,
    ) -> None:
        """Write a query result as a formatted XLSX workbook (see :mod:`kpisheet.export`); a change
        whose windows are not both complete reads "–", with the reason (naming the members that
        did not report) in the column "Hinweis"."""
        from kpisheet import export
        from kpisheet.presentation import incomplete_reasons

        per_account = bool((selection or {}).get("per_account", False))
        reasons = incomplete_reasons(result, self.registry, sheet=self, per_account=per_account)
        export.write_result_xlsx(
            result,
            target,
            registry=self.registry,
            release=self.release,
            selection=selection,
            reasons=reasons,
            hierarchy=self.hierarchy,
        )


def _default_entities() -> Path:
    from kpisheet.demo import DEMO_ENTITIES

    return DEMO_ENTITIES


def open(
    data: str | Path | pd.DataFrame | None = None,
    definitions: str | Path | Sequence[str | Path] | None = None,
    entities: str | Path | None = None,
    *,
    release: int | None = None,
    verify: bool = False,
) -> KPISheet:
    """Open a KPI sheet.

    :param data: a CSV or Parquet file of observations, a SQLAlchemy URL of a store (or a SQLite
        store's file, recognised by its header), or a DataFrame; default the bundled demo sheet
        (a SQLite store built once in the user's cache directory, ``$KPISHEET_CACHE_DIR`` if set).
    :param definitions: KPI YAML files or directories; default the built-in sheet plus plugins.
    :param entities: the entity hierarchy YAML. Default: for a store, the hierarchy the release
        was loaded with (so an old release is grouped as it was); else the demo hierarchy.
    :param release: a store release id; default the newest.
    :param verify: with a store, refuse a release whose observations no longer match the
        checksum written with them (:class:`~kpisheet.errors.ChecksumError`).
    :raises DefinitionError, HierarchyError, DataError, StoreError: with every problem found.
    """
    keep_freed_memory()  # before reading: the read and the build free large blocks too
    registry = load_kpis(definitions)
    given = load_hierarchy(entities) if entities is not None else None
    from kpisheet.store import store_url_of  # the store itself (and SQLAlchemy) only for a store

    if data is None:
        from kpisheet.demo import demo_store_url  # builds the demo store: imported only for it

        url: str | None = demo_store_url()
    else:
        url = store_url_of(data)
    if url is not None:
        from kpisheet.store import Store, display_url

        with Store(url) as store:
            info, raw = store.read(release, verify=verify)
            hierarchy = given or store.hierarchy(info.id)
        if hierarchy is None:
            raise StoreError(
                f"release {info.id} of store {display_url(url)} does not record its entity "
                "hierarchy (it was loaded before releases kept one); give entities=FILE "
                f"(--entities FILE), or record it: kpisheet store upgrade --store {display_url(url)} "
                "--entities FILE"
            )
        shown = display_url(url)
        # handed over: the rows are freed once the cube has placed them (the raw ones here)
        observations = HandedOver(
            validate_observation_codes(
                raw, registry, hierarchy, source=f"{shown} release {info.id}"
            )
        )
        del raw
        return KPISheet(observations, registry, hierarchy, release=info, source=shown)
    hierarchy = given or load_hierarchy(_default_entities())
    name = data if isinstance(data, str) else str(data) if isinstance(data, Path) else "DataFrame"
    codes = HandedOver(validate_observation_codes(read_observations(data), registry, hierarchy))
    return KPISheet(codes, registry, hierarchy, source=str(name))
