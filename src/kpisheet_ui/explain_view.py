"""The "Warum?" view: why a group's KPI changed against the previous year — each member's
contribution as a sorted table and a waterfall chart, downloadable as XLSX and PNG.

:class:`ExplainState` holds what is explained (a group row of the table and a KPI) and offers the
table, the chart and the downloads; :class:`ExplainPanel` shows it. Every number comes from
``sheet.explain``; this module only chooses, orders and formats. Names from data are shown as
text: the status line is escaped (:mod:`kpisheet_ui.escape`), table cells go through the
table widget's plain-text formatter, and the chart draws labels as plain text.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import pandas as pd
import panel as pn
import param

from kpisheet import export
from kpisheet.constants import (
    CHANGE,
    COMPLETE,
    ENTITY,
    KPI,
    LEVEL,
    PREVIOUS_COMPLETE,
    PREVIOUS_VALUE,
    PRODUCT_LEVEL,
    VALUE,
    Unit,
)
from kpisheet.errors import KpisheetError, QueryError
from kpisheet.explain import CONTRIBUTION, MEMBER, MIX_EFFECT, RATE_EFFECT, Explanation, split_of
from kpisheet.presentation import SHARE, words
from kpisheet.presentation.formats import (
    MISSING,
    compact,
    format_changes,
    format_changes_pct,
    format_values,
)
from kpisheet.waterfall import save_waterfall_png, waterfall_chart
from kpisheet_ui import widgets
from kpisheet_ui.escape import html_text
from kpisheet_ui.state import SheetState

#: "Mitglieder" choices: the next finer level (""), every product, or a view of the sheet.
NEXT_LEVEL = ""
NEXT_LEVEL_LABEL = words.EXPLAIN_VIEW_WORDS["next_level"]
PRODUCTS_LABEL = words.EXPLAIN_VIEW_WORDS["products"]

# Columns of the explanation table (German, as in the XLSX).
_HEADERS = words.explain_headers()
MEMBER_COLUMN = _HEADERS[MEMBER]
LEVEL_COLUMN = _HEADERS[LEVEL]
VALUE_COLUMN = _HEADERS[VALUE]
PREVIOUS_COLUMN = _HEADERS[PREVIOUS_VALUE]
CHANGE_COLUMN = _HEADERS[CHANGE]
CONTRIBUTION_COLUMN = _HEADERS[CONTRIBUTION]
SHARE_COLUMN = _HEADERS[SHARE]
RATE_COLUMN = _HEADERS[RATE_EFFECT]
MIX_COLUMN = _HEADERS[MIX_EFFECT]
COMPLETE_COLUMN = f"{_HEADERS[COMPLETE]} ({words.CURRENT_WINDOW_WORD} / VJ)"
NUMBER_COLUMNS = (
    VALUE_COLUMN,
    PREVIOUS_COLUMN,
    CHANGE_COLUMN,
    CONTRIBUTION_COLUMN,
    SHARE_COLUMN,
    RATE_COLUMN,
    MIX_COLUMN,
)


#: Said when the table shows values per active account: the explanation explains the values.
PER_ACCOUNT_NOTE = words.EXPLAIN_PER_ACCOUNT_NOTE
#: Look of the status and message lines (HTML panes fed escaped text only).
TEXT_STYLE = {"font-size": "14px", "margin": "4px 0"}
#: Most pixels the members' table takes; a shorter table takes only the height of its rows
#: (Tabulator's ``maxHeight``, set once, as for the KPI table).
TABLE_HEIGHT = 320


class ExplainState(param.Parameterized):
    """What the "Warum?" view explains and everything it shows, for one session's table."""

    entity = param.Selector(default=None, objects=[], label=words.EXPLAIN_VIEW_WORDS["group"])
    kpi = param.Selector(default=None, objects=[], label="KPI")
    by = param.Selector(
        default=NEXT_LEVEL, objects=[NEXT_LEVEL], label=words.EXPLAIN_VIEW_WORDS["members"]
    )
    explanation = param.ClassSelector(class_=Explanation, default=None, allow_None=True)
    message = param.String(default="", doc="Why there is no explanation (empty when there is).")

    def __init__(self, state: SheetState, **params: Any) -> None:
        super().__init__(**params)
        self.state = state
        self._explainable: tuple[object, frozenset[str]] | None = None
        self._sync()
        state.param.watch(self._result_changed, ["result"])

    # -- choices -----------------------------------------------------------------------------

    def entity_options(self) -> dict[str, str]:
        """The group rows of the table (not products), label (name and level) → name."""
        result = self.state.result
        if result is None or result.empty:
            return {}
        groups = result.loc[result[LEVEL] != PRODUCT_LEVEL, [ENTITY, LEVEL]].drop_duplicates()
        hierarchy = self.state.sheet.hierarchy
        return {
            f"{name} ({words.level_label(level, hierarchy)})": name
            for name, level in zip(groups[ENTITY], groups[LEVEL], strict=True)
        }

    def kpi_options(self) -> dict[str, str]:
        """The KPIs of the table that can be explained (summed over products, or a ratio of
        such KPIs), label → id."""
        result = self.state.result
        shown = set(result[KPI].unique()) if result is not None else set()
        explainable = self._explainable_kpis()
        return {
            self.state.registry[kpi].label: kpi
            for kpi in self.state.selected_kpis
            if kpi in shown and kpi in explainable
        }

    def _explainable_kpis(self) -> frozenset[str]:
        """The registry's KPIs with an exact split, worked out once per registry (not per click)."""
        registry = self.state.registry
        if self._explainable is None or self._explainable[0] is not registry:
            ids = []
            for kpi in registry.ids:
                try:
                    split_of(kpi, registry)
                except QueryError:
                    continue
                ids.append(kpi)
            self._explainable = (registry, frozenset(ids))
        return self._explainable[1]

    def by_options(self) -> dict[str, str]:
        """How members are chosen: the next finer level, every product, or a view."""
        options = {NEXT_LEVEL_LABEL: NEXT_LEVEL, PRODUCTS_LABEL: PRODUCT_LEVEL}
        for view in self.state.sheet.views:
            options[words.level_label(view, self.state.sheet.hierarchy)] = view
        return options

    def _sync(self) -> None:
        """Choices from the table; a choice that is still there stays."""
        entities, kpis, bys = self.entity_options(), self.kpi_options(), self.by_options()
        self.param.entity.objects = entities
        self.param.kpi.objects = kpis
        self.param.by.objects = bys
        self.param.update(
            entity=self.entity
            if self.entity in entities.values()
            else next(iter(entities.values()), None),
            kpi=self.kpi if self.kpi in kpis.values() else next(iter(kpis.values()), None),
            by=self.by if self.by in bys.values() else NEXT_LEVEL,
        )

    def _result_changed(self, *events: param.parameterized.Event) -> None:
        """A new table: new choices; an explanation on screen follows the new month or window."""
        shown = (self.entity, self.kpi) if self.explanation is not None else None
        self._sync()
        if shown is None:
            return
        if shown == (self.entity, self.kpi):
            self.explain()
        else:  # the explained row left the table
            self.param.update(explanation=None, message="")

    # -- the explanation ---------------------------------------------------------------------

    def choose(self, entity: str, level: str, kpi: str) -> None:
        """Explain a row of the table (its group and KPI); a product row, or a KPI without an
        exact split, gets a message instead."""
        label = self.state.registry[kpi].label if kpi in self.state.registry else kpi
        if level == PRODUCT_LEVEL:
            message = words.explain_product_text(entity, self.state.sheet.hierarchy)
        elif kpi not in self.param.kpi.objects.values():
            message = words.explain_unsplittable_text(label)
        else:
            self.param.update(entity=entity, kpi=kpi)
            self.explain()
            return
        self.param.update(explanation=None, message=message)

    def explain(self) -> None:
        """Explain the chosen group and KPI for the table's month and window."""
        start = time.perf_counter()
        state = self.state
        if self.entity is None or self.kpi is None:
            self.param.update(
                explanation=None,
                message=words.EXPLAIN_VIEW_WORDS["nothing"],
            )
            return
        visible = getattr(state, "visible", None)  # a scoped user's entities
        if visible is not None and self.entity not in visible:
            self.param.update(
                explanation=None, message=f"{words.EXPLAIN_VIEW_WORDS['impossible']}."
            )
            return
        try:
            explanation = state.sheet.explain(
                self.kpi,
                self.entity,
                as_of=state.as_of,
                window=state.window,
                by=self.by or None,
            )
        except KpisheetError as exc:
            impossible = words.EXPLAIN_VIEW_WORDS["impossible"]
            self.param.update(explanation=None, message=f"{impossible}: {exc}")
            return
        self.param.update(explanation=explanation, message="")
        state._log("warum", start, entity=self.entity, kpi=self.kpi, by=self.by or None)

    def status(self) -> str:
        """One German sentence on the change and whether it is fully explained."""
        explanation = self.explanation
        if explanation is None:
            return self.message
        label = self.state.registry[explanation.kpi].label
        status = words.explanation_status(explanation, label)
        if self.state.per_account:
            status += f" {PER_ACCOUNT_NOTE}"
        return status

    def table(self) -> pd.DataFrame:
        """The members, largest contribution first, formatted in German (rate and mix for a
        ratio only)."""
        explanation = self.explanation
        if explanation is None:
            return pd.DataFrame(columns=[MEMBER_COLUMN])
        members = explanation.members
        unit = str(self.state.registry[explanation.kpi].unit)
        units = np.full(len(members), unit)
        hierarchy = self.state.sheet.hierarchy
        columns: dict[str, Any] = {
            MEMBER_COLUMN: members[MEMBER].astype(str),
            LEVEL_COLUMN: members[LEVEL].map(lambda level: words.level_label(level, hierarchy)),
            VALUE_COLUMN: format_values(members[VALUE], units),
            PREVIOUS_COLUMN: format_values(members[PREVIOUS_VALUE], units),
            CHANGE_COLUMN: format_changes(members[CHANGE], units),
            CONTRIBUTION_COLUMN: _effects(members[CONTRIBUTION], unit),
            SHARE_COLUMN: format_changes_pct(explanation.shares()),
        }
        if explanation.is_ratio:
            columns[RATE_COLUMN] = _effects(members[RATE_EFFECT], unit)
            columns[MIX_COLUMN] = _effects(members[MIX_EFFECT], unit)
        yes_no = {True: words.YES, False: words.NO}
        columns[COMPLETE_COLUMN] = (
            members[COMPLETE].map(yes_no) + " / " + members[PREVIOUS_COMPLETE].map(yes_no)
        )
        return pd.DataFrame(
            {name: pd.Series(column).to_numpy() for name, column in columns.items()}
        )

    def chart(self) -> Any:
        """The waterfall (Bokeh) from the previous value to the current one."""
        if self.explanation is None:
            raise QueryError("nothing explained yet")
        return waterfall_chart(self.explanation, self.state.registry, "bokeh")

    # -- downloads ---------------------------------------------------------------------------

    def filename(self, suffix: str) -> str:
        """File name of a download (``xlsx`` or ``png``)."""
        explanation = self.explanation
        word = words.FILE_WORDS["explain"]
        name = f"{explanation.kpi}" if explanation is not None else word
        return f"{self.state._file_stem()}_{word}_{name}.{suffix}"

    def xlsx(self) -> io.BytesIO:
        """The explanation as a formatted XLSX workbook (with the "Auswahl" sheet)."""
        explanation = self._required()

        def write(buffer: io.BytesIO) -> None:
            export.write_explanation_xlsx(
                explanation,
                buffer,
                registry=self.state.registry,
                release=self.state.sheet.release,
                selection={words.EXPLAIN_VIEW_WORDS["explained_by"]: self.state.user or MISSING},
                hierarchy=self.state.sheet.hierarchy,
            )

        return self.state._download("warum_xlsx", write)

    def png(self) -> io.BytesIO:
        """The waterfall as a PNG image."""
        explanation = self._required()
        return self.state._download(
            "warum_png", lambda buffer: save_waterfall_png(explanation, self.state.registry, buffer)
        )

    def _required(self) -> Explanation:
        if self.explanation is None:
            raise QueryError("nothing explained yet: choose a group and a KPI and press Warum?")
        return self.explanation


def _effects(values: pd.Series, unit: str) -> pd.Series:
    """Contributions as changes of the KPI; of a percentage in points with two decimals, since
    a member's part of a change of a few points is often below a tenth of a point."""
    if unit == Unit.PERCENT:
        return values.map(lambda v: compact(v, unit, signed=True) if np.isfinite(v) else MISSING)
    return format_changes(values, np.full(len(values), unit))


class ExplainPanel:
    """The "Warum?" section of the page: the choices, the button, the table, chart and downloads."""

    def __init__(self, state: ExplainState, guard: Any) -> None:
        self.state = state
        p = state.param
        self.entity = widgets.Select.from_param(
            p.entity, name=words.EXPLAIN_VIEW_WORDS["group"], css_classes=["warum-gruppe"]
        )
        self.kpi = widgets.Select.from_param(
            p.kpi, name=words.EXPLAIN_VIEW_WORDS["kpi"], css_classes=["warum-kpi"]
        )
        self.by = widgets.Select.from_param(
            p.by, name=words.EXPLAIN_VIEW_WORDS["members"], css_classes=["warum-mitglieder"]
        )
        self.button = pn.widgets.Button(
            name=words.EXPLAIN_VIEW_WORDS["button"],
            button_type="primary",
            css_classes=["warum-button"],
            align="end",
        )
        self.button.on_click(lambda event: state.explain())
        self.status = pn.pane.HTML("", css_classes=["warum-status"], styles=TEXT_STYLE)
        self.table = pn.widgets.Tabulator(
            state.table(),
            show_index=False,
            disabled=True,
            selectable=False,
            sortable=False,
            layout="fit_data_table",
            text_align={column: "right" for column in NUMBER_COLUMNS},
            sizing_mode="stretch_width",
            configuration={"maxHeight": f"{TABLE_HEIGHT}px"},
            css_classes=["warum-tabelle"],
            name="Warum-Tabelle",
        )
        self.chart = pn.pane.HoloViews(None, backend="bokeh", css_classes=["warum-diagramm"])
        self.xlsx = pn.widgets.FileDownload(
            callback=guard(state.xlsx),
            filename=state.filename("xlsx"),
            label=words.EXPLAIN_VIEW_WORDS["xlsx"],
            button_type="primary",
            css_classes=["download-warum-xlsx"],
        )
        self.png = pn.widgets.FileDownload(
            callback=guard(state.png),
            filename=state.filename("png"),
            label=words.EXPLAIN_VIEW_WORDS["png"],
            css_classes=["download-warum-png"],
        )
        self.body = pn.Column(
            self.status,
            self.table,
            self.chart,
            pn.Row(self.xlsx, self.png),
            visible=False,
            sizing_mode="stretch_width",
        )
        self.message = pn.pane.HTML(
            "", css_classes=["warum-hinweis"], visible=False, styles=TEXT_STYLE
        )
        state.param.watch(self._refresh, ["explanation", "message"])

    def _refresh(self, *events: Any) -> None:
        state = self.state
        shown = state.explanation is not None
        with pn.io.hold():
            self.message.object = html_text(state.message)
            self.message.visible = bool(state.message)
            self.body.visible = shown
            if not shown:
                return
            self.status.object = html_text(state.status())
            self.table.value = state.table()
            try:
                self.chart.object = state.chart()
            except KpisheetError:
                self.chart.object = None
            self.xlsx.filename = state.filename("xlsx")
            self.png.filename = state.filename("png")

    def view(self) -> pn.Column:
        """The section: a heading, the choices and the button, then the explanation."""
        return pn.Column(
            pn.pane.Markdown(f"### {words.EXPLAIN_VIEW_WORDS['heading']}"),
            pn.Row(self.entity, self.kpi, self.by, self.button),
            self.message,
            self.body,
            sizing_mode="stretch_width",
            css_classes=["warum"],
        )
