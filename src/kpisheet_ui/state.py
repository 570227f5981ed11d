"""The app's state: one session's selection and everything it shows, as a ``param.Parameterized``.

The views only render what this class offers (the table, the chart decision, the notes, the
download files); tests drive it in plain pytest, without a browser. Every number comes from the
sheet (``sheet.query``, ``sheet.series``); this module only chooses, orders and formats.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import param

import kpisheet
from kpisheet import charts, export
from kpisheet.constants import KPI, PREVIOUS_VALUE, VALUE, Window
from kpisheet.presentation import incomplete_reasons, words
from kpisheet_ui import choices, table
from kpisheet_ui.choices import ALL
from kpisheet_ui.table import BY_ENTITY, BY_KPI
from kpisheet_ui.usage import log_interaction

__all__ = ["CHART_MONTHS", "DISPLAY_LABELS", "PAGE_ROWS", "WINDOW_LABELS", "SheetState"]

#: Months the chart shows, ending with the as-of month.
CHART_MONTHS = charts.CHART_MONTHS
#: Rows of the table shown at once (formatted, styled and sent to the browser); a larger
#: selection is shown page by page. The old dashboard's largest table (2,106 rows) fits on one.
PAGE_ROWS = 2_500

#: Windows as the app offers them, label → window.
WINDOW_LABELS: dict[str, str] = words.window_labels()
#: How the table is grouped, label → key.
DISPLAY_LABELS: dict[str, str] = words.DISPLAY_WORDS


@dataclass(frozen=True)
class _Shown:
    """A result in display order with its highlights; built once per result and display."""

    source: pd.DataFrame  # the query result it was built from (compared by identity)
    display: str
    result: pd.DataFrame
    marks: pd.Series


@dataclass(frozen=True)
class _Page:
    """One page of the displayed table and its cell styles; built once per page."""

    shown: _Shown
    rows: range
    per_account: bool
    table: pd.DataFrame
    styles: pd.DataFrame


class SheetState(param.Parameterized):
    """One session's selection of a sheet, and the table, chart, notes and downloads it yields."""

    as_of = param.Selector(default=None, objects=[], label=words.CHOICE_WORDS["as_of"])
    window = param.Selector(
        default=Window.M1.value, objects=WINDOW_LABELS, label=words.CHOICE_WORDS["window"]
    )
    grouping = param.Selector(default=ALL, objects=[ALL], label=words.CHOICE_WORDS["grouping"])
    kpi_group = param.Selector(default=ALL, objects=[ALL], label=words.CHOICE_WORDS["kpi_group"])
    display = param.Selector(
        default=BY_ENTITY, objects=DISPLAY_LABELS, label=words.CHOICE_WORDS["display"]
    )
    per_account = param.Boolean(default=False, label=words.CHOICE_WORDS["per_account"])
    entities = param.ListSelector(default=[], objects=[], label=words.CHOICE_WORDS["entities"])
    kpis = param.ListSelector(default=[], objects=[], label=words.CHOICE_WORDS["kpis"])

    sheet = param.ClassSelector(class_=kpisheet.KPISheet, precedence=-1)
    user = param.String(default=None, allow_None=True, precedence=-1)
    result = param.DataFrame(default=None, allow_None=True, precedence=-1)
    notice = param.String(default="", precedence=-1, doc="Shown once after a new release loaded.")
    page = param.Integer(default=1, bounds=(1, None), label=words.CHOICE_WORDS["page"])
    page_rows = param.Integer(default=PAGE_ROWS, bounds=(1, None), precedence=-1)

    _SELECTION = (
        "as_of",
        "window",
        "grouping",
        "kpi_group",
        "display",
        "per_account",
        "entities",
        "kpis",
    )
    #: A change of these changes the rows of the table, and the table starts on its first page.
    _NEW_ROWS = frozenset({"grouping", "kpi_group", "display", "entities", "kpis"})

    def __init__(self, sheet: kpisheet.KPISheet, **params: Any) -> None:
        super().__init__(sheet=sheet, **{k: v for k, v in params.items() if k == "user"})
        self._busy = False
        self._shown_cache: _Shown | None = None
        self._page_cache: _Page | None = None
        self._set_options(keep=False)
        self.param.update(**{k: v for k, v in params.items() if k != "user"})
        self._sync_choices()
        self._compute(log=False)
        self.param.watch(self._selection_changed, list(self._SELECTION))
        self.param.watch(self._page_changed, ["page"])

    # -- options ---------------------------------------------------------------------------

    @property
    def registry(self) -> kpisheet.Registry:
        """The sheet's KPI registry."""
        return self.sheet.registry

    def grouping_options(self) -> dict[str, str]:
        """Entity groupings, label → key: all, the total, each group of each level, each view."""
        return choices.grouping_options(self.sheet)

    def grouping_entities(self, key: str | None = None) -> list[str]:
        """The entities of a grouping (default: the chosen one), coarse to fine
        (:func:`kpisheet_ui.choices.grouping_entities`)."""
        return choices.grouping_entities(self.sheet, self.grouping if key is None else key)

    def entity_options(self) -> dict[str, str]:
        """The chosen grouping's entities, label (name and level) → name."""
        return choices.entity_options(self.sheet, self.grouping_entities())

    def kpi_group_options(self) -> dict[str, str]:
        """KPI groups, label → key."""
        return choices.kpi_group_options(self.registry)

    def kpi_options(self) -> dict[str, str]:
        """The chosen KPI group's KPIs, label → id, in declared order."""
        return choices.kpi_options(self.registry, self.kpi_group)

    def month_options(self) -> dict[str, str]:
        """Months of the sheet, newest first, label → ``YYYY-MM``."""
        return choices.month_options(self.sheet)

    def _set_options(self, *, keep: bool) -> None:
        """Options of every choice from the sheet; with ``keep``, selections that still exist stay."""
        previous_newest = getattr(self, "_newest", None)
        months = self.month_options()
        self.param.as_of.objects = months
        groupings = self.grouping_options()
        self.param.grouping.objects = groupings
        self.param.kpi_group.objects = self.kpi_group_options()
        newest = self._newest = next(iter(months.values()), None)
        updates: dict[str, Any] = {}
        if not keep or self.as_of not in months.values() or self.as_of == previous_newest:
            updates["as_of"] = newest
        if not keep or self.grouping not in groupings.values():
            updates["grouping"] = ALL
        if not keep or self.kpi_group not in self.param.kpi_group.objects:
            updates["kpi_group"] = ALL
        self.param.update(**updates)

    def _sync_choices(self) -> None:
        """Entity and KPI choices follow the grouping and KPI group; dropped selections go."""
        entity_options = self.entity_options()
        kpi_options = self.kpi_options()
        self.param.entities.objects = entity_options
        self.param.kpis.objects = kpi_options
        self.param.update(
            entities=[e for e in self.entities if e in entity_options.values()],
            kpis=[k for k in self.kpis if k in kpi_options.values()],
        )

    # -- what is selected ------------------------------------------------------------------

    @property
    def selected_entities(self) -> list[str]:
        """The entities shown: the chosen ones, or all of the grouping ("alle")."""
        return list(self.entities) or self.grouping_entities()

    @property
    def selected_kpis(self) -> list[str]:
        """The KPIs shown: the chosen ones, or all of the KPI group ("alle"), in declared order."""
        chosen = set(self.kpis) or set(self.kpi_options().values())
        return [kpi for kpi in self.registry.ids if kpi in chosen]

    def clear_all(self) -> None:
        """Clear the entity and KPI selections (back to "alle")."""
        self.param.update(entities=[], kpis=[])

    def query_arguments(self) -> dict[str, Any]:
        """The arguments of the ``sheet.query`` call behind the table."""
        return {
            "as_of": self.as_of,
            "window": self.window,
            "kpis": self.selected_kpis,
            "entities": self.selected_entities,
            "per_account": self.per_account,
        }

    def selection(self) -> dict[str, Any]:
        """The selection as recorded in exports and in the usage log."""
        groupings = {key: label for label, key in self.grouping_options().items()}
        displays = {key: label for label, key in DISPLAY_LABELS.items()}
        return {
            "as_of": self.as_of,
            "window": self.window,
            "kpis": list(self.kpis),
            "entities": list(self.entities),
            "per_account": self.per_account,
            words.GROUPING_RECORD: groupings.get(self.grouping, self.grouping),
            words.KPI_GROUP_RECORD: words.ALL_WORD if self.kpi_group == ALL else self.kpi_group,
            words.DISPLAY_RECORD: displays[self.display],
        }

    # -- reacting --------------------------------------------------------------------------

    def _selection_changed(self, *events: param.parameterized.Event) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            self.notice = ""
            names = {event.name for event in events}
            if names & {"grouping", "kpi_group"}:
                self._sync_choices()
            self._compute(log=True, first_page=bool(names & self._NEW_ROWS))
        finally:
            self._busy = False

    def _compute(self, *, log: bool, first_page: bool = False) -> None:
        """Query the sheet; the page stays (within the new result) unless ``first_page``."""
        start = time.perf_counter()
        result = self.sheet.query(**self.query_arguments())
        page = 1 if first_page else min(self.page, self._page_count(len(result)))
        self.param.update(result=result, page=page)
        if log:
            self._log("auswahl", start)

    def _page_changed(self, *events: param.parameterized.Event) -> None:
        if self._busy:
            return
        start = time.perf_counter()
        if self.page > self.pages:
            self._busy = True
            try:
                self.page = self.pages
            finally:
                self._busy = False
        self._page()  # formatted now, so that the usage log times it
        self._log("seite", start, page=self.page)

    def _log(self, action: str, start: float, **extra: object) -> None:
        ms = (time.perf_counter() - start) * 1000
        log_interaction(action, user=self.user, selection=self.selection(), ms=ms, **extra)

    def use_sheet(self, sheet: kpisheet.KPISheet) -> None:
        """Switch to another sheet (a new release), keeping the selection where it still applies.

        An as-of month on the newest month moves to the new newest month.
        """
        start = time.perf_counter()
        self._busy = True
        try:
            self.sheet = sheet
            self._set_options(keep=True)
            self._sync_choices()
            self._compute(log=False)
        finally:
            self._busy = False
        release = sheet.release
        if release is not None:
            self.notice = words.new_data_text(release.id, release.newest_month)
        self._log("neue_daten", start, release=getattr(release, "id", None))

    # -- what is shown ---------------------------------------------------------------------

    @property
    def data_version(self) -> str:
        """The "Datenstand": newest month and release of the sheet."""
        sheet = self.sheet
        return words.data_version_text(sheet.newest_month, sheet.release, sheet.source)

    def _shown(self) -> _Shown:
        """The result in display order and its highlights, built once per result."""
        cached = self._shown_cache
        if cached is not None and cached.source is self.result and cached.display == self.display:
            return cached
        source = self.result if self.result is not None else pd.DataFrame()
        result = self._order(source)
        marks = table.highlights(result, self.registry, per_account=self.per_account)
        self._shown_cache = _Shown(source, self.display, result, marks)
        return self._shown_cache

    def _page(self) -> _Page:
        """The current page of the table and its styles, built once per page."""
        shown = self._shown()
        rows = self.page_range()
        cached = self._page_cache
        if (
            cached is not None
            and cached.shown is shown
            and cached.rows == rows
            and cached.per_account == self.per_account
        ):
            return cached
        result = shown.result.iloc[rows.start : rows.stop]
        built = table.build_table(
            result,
            self.sheet,
            display=self.display,
            per_account=self.per_account,
            hierarchy=self.sheet.hierarchy,
        )
        styles = table.styles(result, built, shown.marks.iloc[rows.start : rows.stop])
        self._page_cache = _Page(shown, rows, self.per_account, built, styles)
        return self._page_cache

    def _order(self, result: pd.DataFrame) -> pd.DataFrame:
        if self.display != BY_KPI or result.empty:
            return result.reset_index(drop=True)
        order = pd.Categorical(result[KPI], categories=list(self.registry.ids)).codes
        return result.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)

    def _ordered_result(self) -> pd.DataFrame:
        return self._shown().result

    def _page_count(self, rows: int) -> int:
        return max(1, -(-rows // self.page_rows))

    @property
    def pages(self) -> int:
        """Pages of the table: one per :data:`PAGE_ROWS` rows of the result (at least one)."""
        return self._page_count(len(self.result) if self.result is not None else 0)

    def page_range(self) -> range:
        """Positions (in display order) of the result's rows on the current page."""
        rows = len(self.result) if self.result is not None else 0
        first = (min(self.page, self.pages) - 1) * self.page_rows
        return range(first, min(first + self.page_rows, rows))

    def page_text(self) -> str:
        """Which rows the page shows, e.g. ``Zeilen 2'501–5'000 von 58'170 · Seite 2 von 24``."""
        rows = self.page_range()
        total = len(self.result) if self.result is not None else 0
        first = rows.start + 1 if rows else 0
        return words.page_text(first, rows.stop, total, min(self.page, self.pages), self.pages)

    def table(self) -> pd.DataFrame:
        """The current page of the result as displayed: grouped by entity or KPI, numbers
        formatted per unit.

        Rows in the order of the result (entities coarse to fine, KPIs as declared) or, grouped
        by KPI, KPI first; the index is the row's position in that order. The column ``Gruppe``
        is what the table groups by. A result of up to :data:`PAGE_ROWS` rows is one page.
        Built once per page: calling it again is cheap.
        """
        return self._page().table.copy(deep=False)

    def highlighted(self) -> pd.Series:
        """Per row of the result in display order (all pages): ``1`` for a highlighted rise,
        ``-1`` for a highlighted fall, else 0.

        Rows of a KPI that declares ``highlight`` thresholds are highlighted when their change
        passes them (:func:`kpisheet.thresholds.flags`). Among the other rows, the largest
        changes are those with the largest absolute change against the previous year in percent
        (:func:`kpisheet_ui.table.largest`). Only rows whose two windows are both complete
        qualify.
        """
        return self._shown().marks.copy()

    def table_styles(self) -> pd.DataFrame:
        """CSS of the styled cells of :meth:`table` (the current page): incomplete windows and the
        largest changes.

        Only rows with a style are included (with the table's index), and only the columns that
        can have one; a cell without style is ``""``. pandas' ``Styler.apply`` accepts such a
        frame, so a table of many rows costs only as much as its styled cells.
        """
        return self._page().styles.copy()

    def notes(self) -> list[str]:
        """How to read what is shown: stock KPIs over several months, per-account gaps, and why
        changes on this page read "–"."""
        notes = []
        stock = self.stock_note()
        if stock:
            notes.append(stock)
        reasons = self.comparison_note()
        if reasons:
            notes.append(reasons)
        if self.per_account:
            without = [
                self.registry[kpi].label
                for kpi in self.selected_kpis
                if self.registry[kpi].average_per is None
            ]
            if without:
                notes.append(words.without_reference_note(without))
        return notes

    def comparison_note(self) -> str:
        """Why changes on the current page read "–": the distinct reasons, most frequent first."""
        return table.comparison_note(self._page().table)

    def stock_note(self) -> str:
        """The note for stock KPIs in a window over several months (empty when none is shown)."""
        if self.window == Window.M1.value or self.result is None or self.result.empty:
            return ""
        result = self.result
        shown = set(
            result.loc[result[VALUE].notna() | result[PREVIOUS_VALUE].notna(), KPI].unique()
        )
        kpis = [kpi for kpi in self.selected_kpis if kpi in shown]
        note = words.stock_note(kpis, self.registry, window=self.window)
        return f"{words.NOTE_PREFIX}{note}" if note else ""

    # -- the chart -------------------------------------------------------------------------

    def chart_reason(self) -> str | None:
        """``None`` when the selection gets a chart, else why not (a ``charts.NoChart``)."""
        return charts.chart_rule(self.selected_kpis, self.selected_entities, self.registry)

    @property
    def shows_chart(self) -> bool:
        """True when the selection gets the 13-month chart (docs/semantics.md, "Charts")."""
        return self.chart_reason() is None

    def chart_message(self) -> str:
        """Why there is no chart, in German (empty when there is one)."""
        reason = self.chart_reason()
        return "" if reason is None else charts.no_chart_message(reason)

    def series(self) -> pd.DataFrame:
        """The chart's monthly values: 13 months ending with the as-of month."""
        return self.sheet.series(
            self.selected_kpis,
            self.selected_entities,
            as_of=self.as_of,
            months=CHART_MONTHS,
            per_account=self.per_account,
        )

    def chart(self) -> Any:
        """The HoloViews line chart of the selection (raises QueryError when there is none)."""
        return charts.line_chart(self.series(), self.registry, per_account=self.per_account)

    # -- downloads -------------------------------------------------------------------------

    def _file_stem(self) -> str:
        return f"kpisheet_{self.as_of}_{self.window}"

    def table_filename(self) -> str:
        """File name of the table download."""
        return f"{self._file_stem()}.xlsx"

    def series_filename(self) -> str:
        """File name of the chart-series download."""
        return f"{self._file_stem()}_{words.FILE_WORDS['series']}.xlsx"

    def chart_filename(self, suffix: str) -> str:
        """File name of the chart as PNG or HTML (``suffix`` ``png`` or ``html``)."""
        return f"{self._file_stem()}_{words.FILE_WORDS['chart']}.{suffix}"

    def _download(self, kind: str, write: Callable[[io.BytesIO], None]) -> io.BytesIO:
        start = time.perf_counter()
        buffer = io.BytesIO()
        write(buffer)
        buffer.seek(0)
        self._log("download", start, file=kind)
        return buffer

    def table_xlsx(self) -> io.BytesIO:
        """The table as shown, as a formatted XLSX workbook (with the "Auswahl" sheet)."""

        def write(buffer: io.BytesIO) -> None:
            result = self._ordered_result()
            export.write_result_xlsx(
                result,
                buffer,
                registry=self.registry,
                release=self.sheet.release,
                selection=self.selection(),
                reasons=incomplete_reasons(
                    result, self.registry, sheet=self.sheet, per_account=self.per_account
                ),
                hierarchy=self.sheet.hierarchy,
            )

        return self._download("xlsx", write)

    def series_xlsx(self) -> io.BytesIO:
        """The chart's monthly series (with month-on-month change) as an XLSX workbook."""

        def write(buffer: io.BytesIO) -> None:
            export.write_series_xlsx(
                self.series(),
                buffer,
                registry=self.registry,
                release=self.sheet.release,
                selection=self.selection(),
            )

        return self._download("verlauf_xlsx", write)

    def _chart_file(self, suffix: str, save: Callable[..., Path | None]) -> io.BytesIO:
        def write(buffer: io.BytesIO) -> None:
            save(self.series(), self.registry, buffer, per_account=self.per_account)

        return self._download(suffix, write)

    def chart_png(self) -> io.BytesIO:
        """The chart as a PNG image."""
        return self._chart_file("png", charts.save_png)

    def chart_html(self) -> io.BytesIO:
        """The chart as a standalone interactive HTML page."""
        return self._chart_file("html", charts.save_html)
