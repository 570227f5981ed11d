"""Tests of kpisheet.waterfall: the bars of an explanation's waterfall and its PNG."""

from __future__ import annotations

import io
import math
import re

import holoviews as hv
import pytest
from PIL import Image

import kpisheet
from kpisheet.explain import Explanation
from kpisheet.presentation.formats import compact
from kpisheet.presentation.words import CURRENT_BAR, PREVIOUS_BAR
from kpisheet.waterfall import (
    save_waterfall_png,
    waterfall_chart,
    waterfall_frame,
)


@pytest.fixture(scope="module")
def sheet() -> kpisheet.KPISheet:
    return kpisheet.open()


@pytest.fixture(scope="module")
def explanation(sheet: kpisheet.KPISheet) -> Explanation:
    return sheet.explain("turnover", "B2C", window="12M", by="product")


def test_bars_walk_from_the_previous_value_to_the_current_one(explanation: Explanation) -> None:
    """Previous value, the eight largest contributions, the rest as one bar, the current value;
    each step starts where the one before ended, and the last step ends at the current value."""
    frame = waterfall_frame(explanation, "currency", bars=8)
    assert list(frame["label"][:1]) == [PREVIOUS_BAR] and frame["label"].iloc[-1] == CURRENT_BAR
    assert list(frame["label"][1:9]) == list(explanation.members["member"][:8])
    rest = len(explanation.members) - 8
    assert frame["label"].iloc[9] == f"Übrige ({rest})"
    steps = frame.iloc[1:-1]
    assert steps["start"].iloc[0] == explanation.previous_value
    assert (steps["start"].to_numpy()[1:] == steps["end"].to_numpy()[:-1]).all()
    assert math.isclose(steps["end"].iloc[-1], explanation.value, rel_tol=1e-12)
    assert set(steps["kind"]) <= {"rise", "fall"}
    assert list(frame["kind"][[0, len(frame) - 1]]) == ["total", "total"]


def test_compact_amounts() -> None:
    """Bar labels are short: millions and billions, percentage points for percentages."""
    assert compact(5_442_895_143.93, "currency") == "CHF 5.44 Mrd."
    assert compact(186_900_854.04, "currency", signed=True) == "+186.90 Mio."
    assert compact(-45_540.5, "count", signed=True) == "-45'540.50"
    assert compact(0.0034, "percent", signed=True) == "+0.34 Pp."
    assert compact(0.7084, "percent") == "70.84 %"


def test_png_and_bokeh(explanation: Explanation, sheet: kpisheet.KPISheet) -> None:
    """The PNG is a 1600×900 image; the Bokeh chart renders and titles the change."""
    buffer = io.BytesIO()
    assert save_waterfall_png(explanation, sheet.registry, buffer) is None
    assert buffer.getvalue().startswith(b"\x89PNG\r\n\x1a\n")
    assert Image.open(io.BytesIO(buffer.getvalue())).size == (1600, 900)
    chart = waterfall_chart(explanation, sheet.registry, "bokeh")
    figure = hv.render(chart, backend="bokeh")
    assert figure.title.text.startswith(
        "Warum? Umsatz Total · B2C · 12M bis Oktober 2026\nAbw. VJ +CHF"
    )


def test_no_change_no_waterfall(sheet: kpisheet.KPISheet) -> None:
    """A group without a previous value has nothing to draw: a clear message."""
    explanation = sheet.explain("turnover", "B2C", as_of=str(sheet.months[0]))
    with pytest.raises(
        kpisheet.QueryError,
        match=re.escape("no waterfall for 'B2C': it has no change against the previous year"),
    ):
        waterfall_frame(explanation, "currency")


def test_names_from_data_are_plain_text(tmp_path) -> None:
    """Member names with dollars, braces or markup show literally: no TeX, no format fields,
    no HTML, in the Bokeh chart and in the PNG."""
    import pandas as pd
    import yaml
    from bokeh.models import PlainText

    names = ["$x^2$ Gold", "{Q} Card", "<b>R</b>"]
    kpis = [
        {"id": "turnover", "label": "Umsatz {CHF}", "group": "U", "unit": "currency",
         "time_aggregation": "sum"},
    ]  # fmt: skip
    entities = {"total": "T", "levels": [], "entities": {name: {} for name in names}}
    (tmp_path / "kpis.yaml").write_text(yaml.safe_dump(kpis), encoding="utf-8")
    (tmp_path / "entities.yaml").write_text(yaml.safe_dump(entities), encoding="utf-8")
    rows = [(month, "turnover", name, value) for name, value in zip(names, [1.0, 2.0, 3.0], strict=True)
            for month, value in (("2020-01", value), ("2021-01", value * 10))]  # fmt: skip
    sheet = kpisheet.open(
        pd.DataFrame(rows, columns=["month", "kpi", "entity", "value"]),
        definitions=tmp_path / "kpis.yaml",
        entities=tmp_path / "entities.yaml",
    )
    explanation = sheet.explain("turnover", "T", as_of="2021-01")
    figure = hv.render(waterfall_chart(explanation, sheet.registry, "bokeh"), backend="bokeh")
    overrides = figure.xaxis[0].major_label_overrides
    assert all(isinstance(label, PlainText) for label in overrides.values())
    assert set(names) <= {label.text for label in overrides.values()}
    assert figure.yaxis[0].axis_label.text == "Umsatz {CHF}"
    rendered = hv.render(
        waterfall_chart(explanation, sheet.registry, "matplotlib"), backend="matplotlib"
    )
    ticks = [label.get_text() for label in rendered.axes[0].get_xticklabels()]
    assert r"\$x^2\$ Gold" in ticks and "{Q} Card" in ticks and "<b>R</b>" in ticks
    assert rendered.axes[0].get_title().startswith("Warum? Umsatz {CHF} · T · 1M")
    assert save_waterfall_png(explanation, sheet.registry, io.BytesIO()) is None
