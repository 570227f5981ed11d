"""The waterfall chart of an explanation ("Warum?"): from the group's previous-year value, each
member's contribution as a step up (green) or down (red), to the current value.

Built for both HoloViews backends like :mod:`kpisheet.charts` (whose colours, number formats and
figure polish it reuses): Bokeh on screen, matplotlib for the PNG (no browser needed). Member
names are data: they are drawn as text (axis labels, tooltips), never as markup.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import IO, Any

import holoviews as hv
import numpy as np
import pandas as pd
from matplotlib import pyplot as plt

from kpisheet.charts import (
    BOKEH_HEIGHT,
    BOKEH_WIDTH,
    PNG_DPI,
    PNG_HEIGHT,
    PNG_WIDTH,
    TEXT_COLOUR,
    SwissFormatter,
    _bokeh_formatter,
    _bokeh_look,
    _polish_figure,
    _target_path,
    plain_text,
)
from kpisheet.constants import Unit
from kpisheet.errors import QueryError
from kpisheet.explain import CONTRIBUTION, MEMBER, Explanation
from kpisheet.presentation import formats, words
from kpisheet.registry import Registry

__all__ = [
    "BAR_WIDTH",
    "CUT_AXIS_BELOW",
    "END",
    "FALL",
    "FALL_COLOUR",
    "KIND",
    "LABEL",
    "LABEL_ROTATION",
    "POSITION",
    "RISE",
    "RISE_COLOUR",
    "START",
    "TEXT",
    "TOTAL",
    "TOTAL_COLOUR",
    "WATERFALL_BARS",
    "save_waterfall_png",
    "waterfall_chart",
    "waterfall_frame",
]

#: Members drawn as bars of their own (largest contributions first); the rest are one bar.
WATERFALL_BARS = 8
TOTAL_COLOUR = "#1F5F8B"
RISE_COLOUR = "#3A9E6F"
FALL_COLOUR = "#C8414B"
#: The axis is cut (does not start at 0) when the bars' range is below this share of the values.
CUT_AXIS_BELOW = 0.5
BAR_WIDTH = 0.7
LABEL_ROTATION = 30

# Columns of :func:`waterfall_frame`.
POSITION, LABEL, START, END, KIND, TEXT = "position", "label", "start", "end", "kind", "text"
TOTAL, RISE, FALL = "total", "rise", "fall"
_COLOURS = {TOTAL: TOTAL_COLOUR, RISE: RISE_COLOUR, FALL: FALL_COLOUR}


def waterfall_frame(
    explanation: Explanation, unit: Unit | str, bars: int = WATERFALL_BARS
) -> pd.DataFrame:
    """The bars of the waterfall, left to right: the previous value, the largest contributions
    (at most ``bars``, largest first), the rest summed as "Übrige (n)", the current value.

    Columns: ``position``, ``label``, ``start`` and ``end`` (the bar's span), ``kind``
    (``total``, ``rise`` or ``fall``) and ``text`` (the amount as shown).

    :raises QueryError: when the group's change is missing (nothing to draw).
    """
    if not math.isfinite(explanation.change):
        raise QueryError(
            f"no waterfall for '{explanation.entity}': it has no change against the previous year"
        )
    members = explanation.members
    shown = members.head(bars)
    steps = list(zip(shown[MEMBER].astype(str), shown[CONTRIBUTION].astype(float), strict=True))
    rest = members.iloc[bars:]
    if len(rest):
        steps.append((f"{words.OTHERS_BAR} ({len(rest)})", math.fsum(rest[CONTRIBUTION])))
    levels = explanation.previous_value + np.cumsum([0.0, *[amount for _, amount in steps]])
    rows = [(words.PREVIOUS_BAR, 0.0, explanation.previous_value, TOTAL)]
    for (label, amount), start in zip(steps, levels[:-1], strict=True):
        rows.append((label, start, start + amount, RISE if amount >= 0 else FALL))
    rows.append((words.CURRENT_BAR, 0.0, explanation.value, TOTAL))
    frame = pd.DataFrame(rows, columns=[LABEL, START, END, KIND])
    frame.insert(0, POSITION, np.arange(len(frame), dtype=float))
    frame[TEXT] = [
        formats.compact(end, unit)
        if kind == TOTAL
        else formats.compact(end - start, unit, signed=True)
        for start, end, kind in zip(frame[START], frame[END], frame[KIND], strict=True)
    ]
    return frame


def _axis_range(frame: pd.DataFrame) -> tuple[float, float, bool]:
    """The y-range, and whether the axis is cut: when the steps are small against the values,
    the totals start at the bottom of a cut axis instead of at 0, so the steps stay visible."""
    levels = np.r_[frame[END].to_numpy(), frame.loc[frame[KIND] != TOTAL, START].to_numpy()]
    low, high = float(levels.min()), float(levels.max())
    span = high - low
    pad = span * 0.15 if span > 0 else abs(high) * 0.05 or 1.0
    if low > 0 and span < CUT_AXIS_BELOW * high:
        return low - pad * 2, high + pad, True
    if high < 0 and span < CUT_AXIS_BELOW * -low:
        return low - pad, high + pad * 2, True
    return min(low, 0.0) - pad, max(high, 0.0) + pad, False


def waterfall_chart(
    explanation: Explanation, registry: Registry, backend: str = "bokeh"
) -> hv.Overlay:
    """The waterfall of an explanation, for ``bokeh`` (on screen) or ``matplotlib`` (PNG).

    :raises QueryError: when the group's change is missing.
    """
    definition = registry[explanation.kpi]
    unit = Unit(definition.unit)
    frame = waterfall_frame(explanation, unit)
    low, high, cut = _axis_range(frame)
    totals = frame[KIND] == TOTAL
    frame.loc[totals, START] = low if cut else 0.0
    half = BAR_WIDTH / 2
    rectangles = []
    for kind, colour in _COLOURS.items():
        part = frame[frame[KIND] == kind]
        data = pd.DataFrame(
            {
                "x0": part[POSITION] - half,
                "y0": part[[START, END]].min(axis=1),
                "x1": part[POSITION] + half,
                "y1": part[[START, END]].max(axis=1),
                LABEL: part[LABEL],
                TEXT: part[TEXT],
            }
        )
        element = hv.Rectangles(data, vdims=[LABEL, TEXT])
        if backend == "bokeh":
            element = element.opts(
                color=colour,
                line_color=colour,
                yformatter=_bokeh_formatter(unit),
                tools=["hover"],
                hover_tooltips=[("", f"@{{{LABEL}}}"), ("", f"@{{{TEXT}}}")],
                backend="bokeh",
            )
        else:
            element = element.opts(
                facecolor=colour,
                edgecolor=colour,
                yformatter=SwissFormatter(unit),
                backend="matplotlib",
            )
        rectangles.append(element)
    tops = frame[[START, END]].max(axis=1) + (high - low) * 0.02
    labels = hv.Labels(
        pd.DataFrame({"x": frame[POSITION], "y": tops, TEXT: frame[TEXT]}), ["x", "y"], TEXT
    )
    if backend == "bokeh":
        labels = labels.opts(
            text_color=TEXT_COLOUR, text_font_size="9pt", text_baseline="bottom", backend="bokeh"
        )
    else:
        labels = labels.opts(
            color=TEXT_COLOUR,
            size=8,
            verticalalignment="bottom",
            horizontalalignment="center",
            backend="matplotlib",
        )
    title = words.waterfall_title(
        definition.label,
        explanation,
        formats.format_change_with_pct(explanation.change, _pct(explanation), unit),
        cut=cut,
    )
    xticks = [
        (position, plain_text(label, backend))
        for position, label in zip(frame[POSITION], frame[LABEL], strict=True)
    ]
    common: dict[str, Any] = {
        "title": plain_text(title, backend, title=True),
        "xlabel": "",
        "ylabel": plain_text(definition.label, backend),
        "xticks": xticks,
        "xlim": (-0.6, len(frame) - 0.4),
        "ylim": (low, high),
        "show_grid": True,
        "show_legend": False,
        "xrotation": LABEL_ROTATION,
    }
    overlay = hv.Overlay([*rectangles, labels])
    if backend == "bokeh":
        return overlay.opts(
            **common,
            width=BOKEH_WIDTH,
            height=BOKEH_HEIGHT,
            yformatter=_bokeh_formatter(unit),
            fontsize={"title": "12pt", "labels": "11pt", "ticks": "9pt"},
            toolbar="above",
            hooks=[_bokeh_look, _plain_tick_labels],
            backend="bokeh",
        )
    return overlay.opts(
        **common,
        yformatter=SwissFormatter(unit),
        fontsize={"title": 13, "labels": 12, "ticks": 9},
        aspect="auto",
        fig_inches=(PNG_WIDTH / PNG_DPI, PNG_HEIGHT / PNG_DPI),
        backend="matplotlib",
    )


def _plain_tick_labels(plot: Any, element: Any) -> None:
    """HoloViews hook: member names under the bars are plain text in Bokeh, never TeX."""
    from bokeh.models import PlainText

    for axis in plot.state.xaxis:
        axis.major_label_overrides = {
            position: PlainText(text=label) if isinstance(label, str) else label
            for position, label in axis.major_label_overrides.items()
        }


def _pct(explanation: Explanation) -> float:
    previous = explanation.previous_value
    return explanation.change / abs(previous) if previous else math.nan


def save_waterfall_png(
    explanation: Explanation, registry: Registry, target: str | Path | IO[bytes]
) -> Path | None:
    """Write the waterfall as a 1600×900 PNG through matplotlib (no browser).

    ``target`` is a path (returned as a ``Path``) or a binary buffer (then ``None`` is returned).
    """
    chart = waterfall_chart(explanation, registry, "matplotlib")
    figure = hv.render(chart, backend="matplotlib")
    try:
        _polish_figure(figure)
        for axes in figure.axes:
            axes.xaxis.grid(False)
            for collection in axes.collections:  # the bars above the grid lines
                collection.set_zorder(collection.get_zorder() + 2)
        path = _target_path(target)
        figure.savefig(path or target, format="png", dpi=PNG_DPI, facecolor="white")
    finally:
        plt.close(figure)
    return path
