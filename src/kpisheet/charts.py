"""The 13-month line chart of a selection (docs/semantics.md, "Charts"), on screen (Bokeh), as PNG and as HTML.

One rule decides whether a selection gets a chart (:func:`chart_rule`), one palette colours
every line, and one builder (:func:`line_chart`) draws for both HoloViews backends, so the
PNG (matplotlib, no browser needed) looks like the interactive chart. Titles, axis words, hover
texts and number formats come from :mod:`kpisheet.presentation`; this module only draws.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import holoviews as hv
import holoviews.plotting.bokeh  # registers the bokeh backend
import holoviews.plotting.mpl  # registers the matplotlib backend
import numpy as np
import pandas as pd
from matplotlib import pyplot as plt
from matplotlib import ticker

from kpisheet.constants import CHANGE, CHANGE_PCT, COVERED, ENTITY, KPI, MONTH, VALUE, Unit
from kpisheet.errors import QueryError
from kpisheet.presentation import formats, words
from kpisheet.registry import Registry
from kpisheet.series import SERIES_COLUMNS, month_on_month

__all__ = [
    "AXIS_COLOUR",
    "BOKEH_HEIGHT",
    "BOKEH_WIDTH",
    "CHART_MONTHS",
    "GRID_COLOUR",
    "LINE_WIDTH",
    "MARK_SIZE",
    "MAX_ENTITIES",
    "MAX_KPIS",
    "PALETTE",
    "PNG_DPI",
    "PNG_HEIGHT",
    "PNG_WIDTH",
    "TEXT_COLOUR",
    "UNCOVERED",
    "X_ROTATION",
    "Layout",
    "NoChart",
    "SwissFormatter",
    "chart_layout",
    "chart_rule",
    "line_chart",
    "no_chart_message",
    "plain_text",
    "save_html",
    "save_png",
]

#: Line colours, in order of the selected entities (or KPIs): one palette for every chart.
PALETTE: tuple[str, ...] = (
    "#1F5F8B",
    "#E8772E",
    "#3A9E6F",
    "#C8414B",
    "#7A5BA6",
    "#8C6D46",
    "#D46FA8",
    "#6B7B8C",
)
#: Most entities one KPI is charted for.
MAX_ENTITIES = 8
#: Most KPIs charted for one entity.
MAX_KPIS = 2
#: Months a chart shows, ending with the as-of month.
CHART_MONTHS = 13

#: Size of the interactive chart in screen pixels.
BOKEH_WIDTH, BOKEH_HEIGHT = 960, 460
#: Size of the PNG in pixels (16:9, for slides) and its resolution.
PNG_WIDTH, PNG_HEIGHT = 1600, 900
PNG_DPI = 150

TEXT_COLOUR = "#333333"
GRID_COLOUR = "#E5E5E5"
AXIS_COLOUR = "#BBBBBB"
LINE_WIDTH = 2.5
#: Month labels are turned so that thirteen of them fit side by side.
X_ROTATION = 45


class NoChart(StrEnum):
    """Why a selection gets no chart."""

    NO_KPI = "no_kpi"
    NO_ENTITY = "no_entity"
    TOO_MANY_ENTITIES = "too_many_entities"
    TOO_MANY_KPIS = "too_many_kpis"
    SEVERAL_BOTH = "several_kpis_and_entities"


def no_chart_message(reason: NoChart | str) -> str:
    """What the app tells the user when a selection gets no chart (in German)."""
    return words.no_chart_text(NoChart(reason), max_entities=MAX_ENTITIES, max_kpis=MAX_KPIS)


class Layout(StrEnum):
    """How a chartable selection is drawn."""

    ENTITIES = "entities"  # one KPI, a line per entity
    SHARED = "shared"  # one entity, KPIs of one group and unit on one y-axis
    PANELS = "panels"  # one entity, a panel per KPI


def chart_rule(kpis: Sequence[str], entities: Sequence[str], registry: Registry) -> str | None:
    """``None`` when the selection gets a chart, else the :class:`NoChart` reason.

    A chart shows one KPI for at most eight entities, or one entity with at most two KPIs.

    :raises QueryError: naming KPIs the registry does not know.
    """
    _check_kpis(kpis, registry)
    kpis, entities = list(dict.fromkeys(kpis)), list(dict.fromkeys(entities))
    if not kpis:
        return NoChart.NO_KPI
    if not entities:
        return NoChart.NO_ENTITY
    if len(kpis) == 1:
        return NoChart.TOO_MANY_ENTITIES if len(entities) > MAX_ENTITIES else None
    if len(entities) == 1:
        return NoChart.TOO_MANY_KPIS if len(kpis) > MAX_KPIS else None
    return NoChart.SEVERAL_BOTH


def chart_layout(kpis: Sequence[str], registry: Registry) -> Layout:
    """How a chartable selection is drawn: a shared y-axis needs one KPI group and one unit."""
    kpis = list(dict.fromkeys(kpis))
    if len(kpis) == 1:
        return Layout.ENTITIES
    definitions = [registry[kpi] for kpi in kpis]
    same_group = len({d.group for d in definitions}) == 1
    same_unit = len({d.unit for d in definitions}) == 1
    return Layout.SHARED if same_group and same_unit else Layout.PANELS


def line_chart(
    series: pd.DataFrame,
    registry: Registry,
    backend: str = "bokeh",
    *,
    per_account: bool = False,
    title: str | None = None,
) -> hv.Overlay | hv.Layout:
    """The line chart of a series (``month, entity, kpi, value``, as ``sheet.series`` returns).

    One KPI: a line per entity. One entity: its (at most two) KPIs on one y-axis when they share
    group and unit, else a panel per KPI. Entities and KPIs keep the order of the series.

    :param backend: ``"bokeh"`` (interactive, hover with month-on-month change) or
        ``"matplotlib"`` (for the PNG).
    :raises QueryError: when the series is empty, lacks a column or is not chartable.
    """
    missing = [column for column in SERIES_COLUMNS if column not in series.columns]
    if missing:
        raise QueryError(f"cannot chart a series without column(s) {', '.join(missing)}")
    if series.empty:
        raise QueryError("nothing to chart: the series has no rows")
    kpis = list(dict.fromkeys(series[KPI]))
    entities = list(dict.fromkeys(series[ENTITY]))
    reason = chart_rule(kpis, entities, registry)
    if reason is not None:
        raise QueryError(
            f"no chart for {len(kpis)} KPI(s) and {len(entities)} entities: "
            f"a chart shows one KPI for up to {MAX_ENTITIES} entities, "
            f"or one entity with up to {MAX_KPIS} KPIs"
        )
    frame = _chart_frame(series, registry)
    months = pd.period_range(frame[MONTH].min(), frame[MONTH].max(), freq="M")
    marked = bool(frame[UNCOVERED].any())

    def titled(subject: str) -> str:
        return title or words.chart_title(
            subject, months[0], months[-1], per_account=per_account, marked=marked
        )

    layout = chart_layout(kpis, registry)
    style = _Style(backend, months)

    if layout is Layout.ENTITIES:
        kpi = registry[kpis[0]]
        lines = [(frame[frame[ENTITY] == entity], entity) for entity in entities]
        curves = [
            style.curve(part, name, PALETTE[i], kpi.unit) for i, (part, name) in enumerate(lines)
        ]
        curves += [m for i, (part, _) in enumerate(lines) for m in style.marks(part, PALETTE[i])]
        return style.overlay(
            curves,
            title=titled(kpi.label),
            ylabel=words.axis_label(kpi.label, kpi.unit, per_account=per_account),
            unit=kpi.unit,
            legend=True,
        )
    definitions = [registry[kpi] for kpi in kpis]
    if layout is Layout.SHARED:
        parts = [frame[frame[KPI] == d.id] for d in definitions]
        curves = [
            style.curve(parts[i], d.label, PALETTE[i], d.unit) for i, d in enumerate(definitions)
        ]
        curves += [m for i, part in enumerate(parts) for m in style.marks(part, PALETTE[i])]
        return style.overlay(
            curves,
            title=titled(entities[0]),
            ylabel=words.axis_label(
                definitions[0].group, definitions[0].unit, per_account=per_account
            ),
            unit=definitions[0].unit,
            legend=True,
        )
    panels = [
        style.overlay(
            [
                style.curve(frame[frame[KPI] == d.id], d.label, PALETTE[i], d.unit),
                *style.marks(frame[frame[KPI] == d.id], PALETTE[i]),
            ],
            title=d.label,
            ylabel=words.axis_label(d.label, d.unit, per_account=per_account),
            unit=d.unit,
            legend=False,
            panel=True,
        )
        for i, d in enumerate(definitions)
    ]
    return style.layout(panels, title=titled(entities[0]))


def save_png(
    series: pd.DataFrame,
    registry: Registry,
    target: str | Path | IO[bytes],
    *,
    per_account: bool = False,
    title: str | None = None,
) -> Path | None:
    """Write the chart as a 1600×900 PNG through matplotlib (no browser), styled like on screen.

    ``target`` is a path (returned as a ``Path``) or a binary buffer (then ``None`` is returned).
    """
    chart = line_chart(series, registry, "matplotlib", per_account=per_account, title=title)
    figure = hv.render(chart, backend="matplotlib")
    try:
        _polish_figure(figure)
        path = _target_path(target)
        figure.savefig(path or target, format="png", dpi=PNG_DPI, facecolor="white")
    finally:
        plt.close(figure)
    return path


def save_html(
    series: pd.DataFrame,
    registry: Registry,
    target: str | Path | IO[bytes],
    *,
    per_account: bool = False,
    title: str | None = None,
) -> Path | None:
    """Write the interactive chart as one HTML file with Bokeh inlined: it opens offline.

    ``target`` is a path (returned as a ``Path``) or a binary buffer (UTF-8; ``None`` returned).
    """
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    chart = line_chart(series, registry, "bokeh", per_account=per_account, title=title)
    model = hv.render(chart, backend="bokeh")
    page_title = title or _chart_title(chart)
    html = file_html(model, resources=INLINE, title=page_title)
    html = _EXTERNAL_RESOURCE.sub("", html).replace('<html lang="en">', '<html lang="de">', 1)
    if not isinstance(target, str | os.PathLike):
        target.write(html.encode("utf-8"))
        return None
    path = Path(target)
    path.write_text(html, encoding="utf-8")
    return path


def _target_path(target: str | Path | IO[bytes]) -> Path | None:
    """The file a chart is written to; ``None`` for a binary buffer."""
    return Path(target) if isinstance(target, str | os.PathLike) else None


#: A line that only loads a script or stylesheet file: Bokeh adds these for extensions that other
#: packages (Panel) register, even when the chart does not use them; the chart works without.
_EXTERNAL_RESOURCE = re.compile(
    r'^[ \t]*(?:<script[^>\n]*\ssrc="[^"]*"[^>\n]*></script>|<link[^>\n]*rel="stylesheet"[^>\n]*>)[ \t]*\n',
    re.MULTILINE,
)


def _chart_title(chart: hv.Overlay | hv.Layout) -> str:
    for backend in ("bokeh", "matplotlib"):
        options = hv.Store.lookup_options(backend, chart, "plot").kwargs
        if options.get("title"):  # as shown: without the escaping of format fields
            return str(options["title"]).replace("{{", "{").replace("}}", "}")
    return "kpisheet"


def _check_kpis(kpis: Sequence[str], registry: Registry) -> None:
    unknown = [kpi for kpi in kpis if kpi not in registry]
    if unknown:
        raise QueryError(
            f"unknown KPI(s) {', '.join(map(repr, unknown))}; known KPIs: {', '.join(registry.ids)}"
        )


def _chart_frame(series: pd.DataFrame, registry: Registry) -> pd.DataFrame:
    """Every month of every line (gaps as NaN), with month-on-month change and hover texts."""
    frame = month_on_month(series)
    if COVERED in series.columns:
        flags = series.loc[:, [MONTH, ENTITY, KPI, COVERED]].astype({MONTH: "period[M]"})
        frame = frame.merge(flags, on=[MONTH, ENTITY, KPI], how="left", validate="one_to_one")
    months = pd.period_range(frame[MONTH].min(), frame[MONTH].max(), freq="M")
    lines = frame[[KPI, ENTITY]].drop_duplicates()
    grid = lines.merge(pd.DataFrame({MONTH: months}), how="cross")
    frame = grid.merge(frame, on=[KPI, ENTITY, MONTH], how="left")
    units = frame[KPI].map(lambda kpi: Unit(registry[kpi].unit))
    frame["x"] = frame[MONTH].map(lambda m: m.ordinal).astype(np.int64)
    frame["month_text"] = frame[MONTH].map(words.month_short)
    frame["kpi_label"] = frame[KPI].map(lambda kpi: registry[kpi].label)
    frame["value_text"] = [
        formats.format_number(v, u) for v, u in zip(frame[VALUE], units, strict=True)
    ]
    frame["change_text"] = [
        formats.format_change_with_pct(c, p, u)
        for c, p, u in zip(frame[CHANGE], frame[CHANGE_PCT], units, strict=True)
    ]
    covered = (
        frame[COVERED].fillna(True).astype(bool)
        if COVERED in frame.columns
        else pd.Series(True, index=frame.index)
    )
    #: a month with a value although not every expected product reported: marked on the line
    frame[UNCOVERED] = ~covered & frame[VALUE].notna()
    frame["coverage_text"] = np.where(frame[UNCOVERED], words.UNCOVERED_TEXT, "")
    return frame


#: Column of the chart frame: the month has a value but not every expected product reported.
UNCOVERED = "uncovered"
_HOVER_COLUMNS = (
    "entity",
    "kpi_label",
    "month_text",
    "value_text",
    "change_text",
    "coverage_text",
)
#: Marker size of an uncovered month (bokeh in screen pixels, matplotlib in points²).
MARK_SIZE = {"bokeh": 13, "matplotlib": 160}


class _Style:
    """Backend-specific options for the same chart, so both backends draw alike."""

    def __init__(self, backend: str, months: pd.PeriodIndex) -> None:
        if backend not in ("bokeh", "matplotlib"):
            raise QueryError(f"unknown chart backend {backend!r}; use 'bokeh' or 'matplotlib'")
        self.backend = backend
        step = 1 if len(months) <= CHART_MONTHS else math.ceil(len(months) / CHART_MONTHS)
        self.xticks = [(m.ordinal, words.month_short(m)) for m in months[::step]]
        self.xlim = (months[0].ordinal - 0.3, months[-1].ordinal + 0.3)

    def plain(self, text: str, *, title: bool = False) -> str:
        """Text from data as the backend shows it literally: labels are never markup.

        HoloViews fills ``{...}`` fields of a title (``Umsatz {CHF}`` would fail), and
        matplotlib reads text between two ``$`` as math; both are escaped. Bokeh's axis labels
        are made plain text in :func:`_bokeh_look`.
        """
        return plain_text(text, self.backend, title=title)

    def curve(self, frame: pd.DataFrame, label: str, colour: str, unit: Unit) -> hv.Curve:
        curve = hv.Curve(
            frame,
            kdims=[hv.Dimension("x", label=words.X_WORD)],
            vdims=[hv.Dimension(VALUE, label=words.column_word(VALUE)), *_HOVER_COLUMNS],
            label=self.plain(label),
        )
        if self.backend == "bokeh":
            return curve.opts(
                color=colour,
                line_width=LINE_WIDTH,
                tools=["hover"],
                hover_tooltips=words.chart_tooltips(),
                yformatter=_bokeh_formatter(unit),
                backend="bokeh",
            )
        return curve.opts(
            color=colour,
            linewidth=LINE_WIDTH,
            yformatter=SwissFormatter(unit),
            backend="matplotlib",
        )

    def marks(self, frame: pd.DataFrame, colour: str) -> list[hv.Scatter]:
        """A cross on every month of the line that is not covered.

        Every line gets its (maybe empty) scatter, so the chart keeps its structure when a mark
        comes or goes and the app can update the plot in place.
        """
        scatter = hv.Scatter(
            frame[frame[UNCOVERED]],
            kdims=[hv.Dimension("x", label=words.X_WORD)],
            vdims=[hv.Dimension(VALUE, label=words.column_word(VALUE)), *_HOVER_COLUMNS],
        )
        size = MARK_SIZE[self.backend]
        if self.backend == "bokeh":
            options = {"size": size, "line_width": 3, "tools": ["hover"], "marker": "x"}
            options["hover_tooltips"] = words.chart_tooltips()
        else:
            options = {"s": size, "linewidth": 0, "marker": "X"}  # filled: matplotlib's "x" warns
        return [scatter.opts(color=colour, backend=self.backend, **options)]

    def overlay(
        self,
        curves: list[hv.Curve | hv.Scatter],
        *,
        title: str,
        ylabel: str,
        unit: Unit,
        legend: bool,
        panel: bool = False,
    ) -> hv.Overlay:
        overlay = hv.Overlay(curves)
        common: dict[str, Any] = {
            "title": self.plain(title, title=True),
            "xlabel": words.X_WORD,
            "ylabel": self.plain(ylabel),
            "xticks": self.xticks,
            "xlim": self.xlim,
            "show_grid": True,
            "show_legend": legend,
            "legend_position": "right",
        }
        if self.backend == "bokeh":
            width = BOKEH_WIDTH // 2 if panel else BOKEH_WIDTH
            return overlay.opts(
                **common,
                width=width,
                height=BOKEH_HEIGHT,
                yformatter=_bokeh_formatter(unit),
                xrotation=X_ROTATION,
                fontsize={"title": "13pt", "labels": "11pt", "ticks": "9pt", "legend": "10pt"},
                toolbar="above",
                hooks=[_bokeh_look],
                backend="bokeh",
            )
        return overlay.opts(
            **common,
            yformatter=SwissFormatter(unit),
            xrotation=X_ROTATION,
            fontsize={"title": 15, "labels": 12, "ticks": 10, "legend": 11},
            aspect="auto",
            fig_inches=(PNG_WIDTH / PNG_DPI, PNG_HEIGHT / PNG_DPI),
            backend="matplotlib",
        )

    def layout(self, panels: list[hv.Overlay], *, title: str) -> hv.Layout:
        layout = hv.Layout(panels).cols(len(panels))
        title = self.plain(title, title=True)
        if self.backend == "bokeh":
            return layout.opts(title=title, shared_axes=False, backend="bokeh")
        return layout.opts(title=title, sublabel_format="", backend="matplotlib")


class SwissFormatter(ticker.Formatter):
    """Matplotlib tick labels in Swiss style (1'234'567), with as many decimals as the ticks need."""

    def __init__(self, unit: Unit | str) -> None:
        self.unit = Unit(unit)
        self.scale = 100 if self.unit is Unit.PERCENT else 1
        self.ticks = np.array([], dtype=float)

    def set_locs(self, locs: Sequence[float]) -> None:
        """Remember the tick positions: their step decides the decimals."""
        self.ticks = np.asarray(locs, dtype=float)

    def __call__(self, x: float, pos: int | None = None) -> str:
        decimals = formats.step_decimals(np.diff(self.ticks) * self.scale)
        text = formats.swiss(x * self.scale, decimals)
        return f"{text} %" if self.unit is Unit.PERCENT else text


def _bokeh_formatter(unit: Unit) -> Any:
    """Bokeh tick labels in the same Swiss style as :class:`SwissFormatter`."""
    from bokeh.models import CustomJSTickFormatter

    scale = 100 if Unit(unit) is Unit.PERCENT else 1
    suffix = " %" if Unit(unit) is Unit.PERCENT else ""
    separator = json.dumps(formats.THOUSANDS)
    code = f"""
        const scale = {scale};
        const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) * scale : 1;
        let decimals = 0;
        while (decimals < 4) {{
            const scaled = step * Math.pow(10, decimals);
            if (step === 0 || Math.abs(scaled - Math.round(scaled)) < 1e-6 * Math.max(scaled, 1)) break;
            decimals += 1;
        }}
        const value = tick * scale;
        const parts = Math.abs(value).toFixed(decimals).split(".");
        parts[0] = parts[0].replace(/\\B(?=(\\d{{3}})+(?!\\d))/g, {separator});
        const sign = value < 0 && Number(parts.join(".")) !== 0 ? "-" : "";
        return sign + parts.join(".") + "{suffix}";
    """
    return CustomJSTickFormatter(code=code)


def plain_text(text: str, backend: str, *, title: bool = False) -> str:
    """Text from data as a HoloViews backend shows it literally (see :meth:`_Style.plain`):
    braces of a title escaped (no format fields), dollars escaped for matplotlib (no math)."""
    if title:
        text = text.replace("{", "{{").replace("}", "}}")
    if backend == "matplotlib":
        text = text.replace("$", r"\$")
    return text


def _bokeh_look(plot: Any, element: Any) -> None:
    """HoloViews hook: the details HoloViews has no option for, matching the PNG's look."""
    from bokeh.models import PlainText

    figure = plot.state
    figure.title.text_color = TEXT_COLOUR
    for axis in (*figure.xaxis, *figure.yaxis):
        if isinstance(axis.axis_label, str):  # never TeX, whatever delimiters a label holds
            axis.axis_label = PlainText(text=axis.axis_label)
        axis.axis_label_text_font_style = "normal"
        axis.axis_label_text_color = TEXT_COLOUR
        axis.major_label_text_color = TEXT_COLOUR
        axis.axis_line_color = AXIS_COLOUR
    for grid in figure.grid:
        grid.grid_line_color = GRID_COLOUR
    for legend in figure.legend:
        legend.location = "top_left"
        legend.border_line_alpha = 0
        legend.label_text_color = TEXT_COLOUR


def _polish_figure(figure: Any) -> None:
    """Give the matplotlib figure the on-screen chart's look and the fixed slide size."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    figure.set_size_inches(PNG_WIDTH / PNG_DPI, PNG_HEIGHT / PNG_DPI)
    figure.set_facecolor("white")
    panels = len(figure.axes) > 1
    for axes in figure.axes:
        title = axes.get_title()
        axes.set_title("")
        axes.set_title(
            title, loc="left", fontsize=11 if panels else 13, fontweight="bold", color=TEXT_COLOUR
        )
        for side in ("top", "right"):
            axes.spines[side].set_visible(False)
        for side in ("left", "bottom"):
            axes.spines[side].set_color(AXIS_COLOUR)
        axes.grid(True, color=GRID_COLOUR, linewidth=0.8)
        axes.set_axisbelow(True)
        for line in axes.get_lines():  # HoloViews numbers layers from 0: lift them above the grid
            line.set_zorder(line.get_zorder() + 2)
        axes.tick_params(colors=TEXT_COLOUR, labelsize=9)
        axes.xaxis.label.set_color(TEXT_COLOUR)
        axes.yaxis.label.set_color(TEXT_COLOUR)
        legend = axes.get_legend()
        if legend is not None:
            legend.set_frame_on(False)
            legend.set_loc("upper left")
            legend.set_bbox_to_anchor((1.01, 1.0))
    suptitle = figure._suptitle
    if suptitle is not None:
        suptitle.set(x=_MARGIN, y=1 - _MARGIN, ha="left", va="top", fontsize=13)
        suptitle.set(fontweight="bold", color=TEXT_COLOUR)
    _arrange(figure, top=1 - (_SUPTITLE_SPACE if suptitle is not None else 0))


_MARGIN = 0.025
_SUPTITLE_SPACE = 0.07
_GUTTER = 0.04


def _arrange(figure: Any, *, top: float) -> None:
    """Place the axes side by side so that each one's labels, title and legend fit its cell."""
    renderer = figure.canvas.get_renderer()
    axes_list = figure.axes
    cell = (1 - 2 * _MARGIN) / len(axes_list)
    to_figure = figure.transFigure.inverted()
    for index, axes in enumerate(axes_list):
        x0 = _MARGIN + index * cell + (_GUTTER / 2 if index else 0)
        x1 = _MARGIN + (index + 1) * cell - (_GUTTER / 2 if index < len(axes_list) - 1 else 0)
        y0, y1 = _MARGIN, top - _MARGIN
        axes.set_position([x0, y0, x1 - x0, y1 - y0])
        for _ in range(2):  # the second round corrects for tick labels that moved
            position = axes.get_position()
            tight = axes.get_tightbbox(renderer).transformed(to_figure)
            left = x0 + (position.x0 - tight.x0)
            right = x1 - (tight.x1 - position.x1)
            bottom = y0 + (position.y0 - tight.y0)
            upper = y1 - (tight.y1 - position.y1)
            axes.set_position([left, bottom, right - left, upper - bottom])
