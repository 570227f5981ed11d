"""Tests of kpisheet.charts: the chart rule, the 13-month line chart, PNG without a browser, HTML offline."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import holoviews as hv
import numpy as np
import pandas as pd
import pytest
from bokeh.models import CustomJSTickFormatter, GridPlot, HoverTool
from click.testing import CliRunner
from PIL import Image

import kpisheet
from kpisheet import charts
from kpisheet.charts import (
    PALETTE,
    Layout,
    NoChart,
    SwissFormatter,
    chart_layout,
    chart_rule,
    line_chart,
    save_html,
    save_png,
)
from kpisheet.cli import main
from kpisheet.errors import QueryError
from kpisheet.presentation import month_short
from kpisheet.presentation.formats import format_change_with_pct, format_number

ENTITIES = ["Alpine Visa Gold", "Alpine", "B2C"]


@pytest.fixture(scope="module")
def sheet() -> kpisheet.KPISheet:
    """The bundled demo sheet."""
    return kpisheet.open()


@pytest.fixture(scope="module")
def registry(sheet: kpisheet.KPISheet) -> kpisheet.Registry:
    """The demo sheet's KPIs."""
    return sheet.registry


@pytest.fixture(scope="module")
def one_kpi(sheet: kpisheet.KPISheet) -> pd.DataFrame:
    """Turnover of one product, its mandant and its sector over 13 months."""
    return sheet.series(["turnover"], ENTITIES)


# -- the chart rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kpis", "entities", "expected"),
    [
        (["turnover"], ["Alpine"], None),
        (["turnover"], [f"E{i}" for i in range(8)], None),
        (["turnover"], [f"E{i}" for i in range(9)], NoChart.TOO_MANY_ENTITIES),
        (["turnover", "transactions"], ["Alpine"], None),
        (["turnover", "transactions", "active_accounts"], ["Alpine"], NoChart.TOO_MANY_KPIS),
        (["turnover", "transactions"], ["Alpine", "B2C"], NoChart.SEVERAL_BOTH),
        ([], ["Alpine"], NoChart.NO_KPI),
        (["turnover"], [], NoChart.NO_ENTITY),
        (["turnover", "turnover"], ["Alpine", "Alpine", "B2C"], None),
    ],
)
def test_chart_rule(
    kpis: list[str], entities: list[str], expected: NoChart | None, registry: kpisheet.Registry
) -> None:
    """A chart for one KPI and ≤ 8 entities or one entity and ≤ 2 KPIs; otherwise the reason."""
    assert chart_rule(kpis, entities, registry) == expected


def test_chart_rule_names_unknown_kpis(registry: kpisheet.Registry) -> None:
    """An unknown KPI id is an error, not a silent "no chart"."""
    with pytest.raises(
        QueryError, match=re.escape("unknown KPI(s) 'umsatz'; known KPIs: turnover,")
    ):
        chart_rule(["umsatz"], ["Alpine"], registry)


def test_every_reason_has_a_german_message() -> None:
    """The app can tell the user why there is no chart, for every reason."""
    assert all(charts.no_chart_message(reason) for reason in NoChart)
    assert charts.no_chart_message(NoChart.TOO_MANY_ENTITIES) == (
        "Ein Diagramm zeigt einen KPI für höchstens 8 Entitäten."
    )


@pytest.mark.parametrize(
    ("kpis", "expected"),
    [
        (["turnover"], Layout.ENTITIES),
        (["transactions", "transactions_abroad"], Layout.SHARED),  # one group, one unit
        (["turnover", "turnover_abroad_share"], Layout.PANELS),  # one group, CHF and %
        (["turnover", "active_accounts"], Layout.PANELS),  # two groups
    ],
)
def test_chart_layout(kpis: list[str], expected: Layout, registry: kpisheet.Registry) -> None:
    """Two KPIs share a y-axis only when they are of one group and one unit."""
    assert chart_layout(kpis, registry) == expected


# -- texts ------------------------------------------------------------------------------------


def test_month_labels_are_german() -> None:
    """Month ticks read like "Jan 2021", with German month names."""
    assert month_short(pd.Period("2021-01", "M")) == "Jan 2021"
    assert month_short(pd.Period("2021-03", "M")) == "Mär 2021"
    assert month_short(pd.Period("2021-10", "M")) == "Okt 2021"


def test_numbers_are_swiss_formatted() -> None:
    """Values and changes use apostrophes as thousands separators and the KPI's unit."""
    assert format_number(1234567.0, "count") == "1'234'567"
    assert format_number(2.345, "count") == "2.35"
    assert format_number(1234.5, "currency") == "CHF 1'234.50"
    assert format_number(0.1234, "percent") == "12.3 %"
    assert format_number(np.nan, "count") == "–"
    assert format_change_with_pct(-1234.0, -0.05, "count") == "-1'234 (-5.0 %)"
    assert format_change_with_pct(0.012, 0.04, "percent") == "+1.2 Pp. (+4.0 %)"
    assert format_change_with_pct(10.0, np.nan, "currency") == "+CHF 10.00"


def test_matplotlib_ticks_have_thousands_separators() -> None:
    """PNG tick labels read 1'500'000 and 2.5 %, with as many decimals as the tick step needs."""
    counts = SwissFormatter("count")
    counts.set_locs([1_000_000, 1_500_000, 2_000_000])
    assert counts(1_500_000) == "1'500'000"
    shares = SwissFormatter("percent")
    shares.set_locs([0.02, 0.025, 0.03])
    assert shares(0.025) == "2.5 %"


# -- the chart ----------------------------------------------------------------------------------


def test_bokeh_chart_has_a_line_per_entity_in_palette_order(
    one_kpi: pd.DataFrame, registry: kpisheet.Registry
) -> None:
    """One KPI: a line per entity, coloured from the palette, German labels and month ticks."""
    import holoviews as hv

    figure = hv.render(line_chart(one_kpi, registry), backend="bokeh")
    lines = [r for r in figure.renderers if type(r.glyph).__name__ == "Line"]
    assert [line.glyph.line_color for line in lines] == list(PALETTE[:3])
    assert [item.label["value"] for item in figure.legend[0].items] == ENTITIES
    assert figure.title.text == "Umsatz Total · Okt 2025 – Okt 2026"
    assert figure.xaxis[0].axis_label.text == "Monat"
    assert figure.yaxis[0].axis_label.text == "Umsatz Total (CHF)"
    labels = list(figure.xaxis[0].major_label_overrides.values())
    assert labels[0] == "Okt 2025" and labels[-1] == "Okt 2026" and len(labels) == 13
    assert isinstance(figure.yaxis[0].formatter, CustomJSTickFormatter)
    assert "'" in figure.yaxis[0].formatter.code  # the Swiss thousands separator


def test_bokeh_hover_shows_value_and_month_on_month_change(
    one_kpi: pd.DataFrame, registry: kpisheet.Registry
) -> None:
    """Hovering a point shows entity, month, the formatted value and the change to the month before."""
    import holoviews as hv

    figure = hv.render(line_chart(one_kpi, registry), backend="bokeh")
    hover = next(tool for tool in figure.tools if isinstance(tool, HoverTool))
    assert dict(hover.tooltips)["Abw. Vormonat"] in ("@change_text", "@{change_text}")
    source = figure.renderers[0].data_source.data
    first = one_kpi[one_kpi["entity"] == ENTITIES[0]]["value"].to_numpy()
    assert list(source["month_text"][:2]) == ["Okt 2025", "Nov 2025"]
    assert source["value_text"][1] == format_number(first[1], "currency")
    expected_change = format_change_with_pct(
        first[1] - first[0], (first[1] - first[0]) / first[0], "currency"
    )
    assert source["change_text"][1] == expected_change
    assert source["change_text"][0] == "–"


def test_two_kpis_of_different_groups_get_a_panel_each(
    sheet: kpisheet.KPISheet, registry: kpisheet.Registry
) -> None:
    """One entity with KPIs of two groups: two panels, each with its own y-axis range."""
    import holoviews as hv

    series = sheet.series(["turnover", "active_accounts"], ["Alpine"])
    grid = hv.render(line_chart(series, registry), backend="bokeh")
    grid = (
        grid
        if isinstance(grid, GridPlot)
        else next(child for child in grid.children if isinstance(child, GridPlot))
    )
    figures = [child[0] for child in grid.children]
    assert [f.title.text for f in figures] == ["Umsatz Total", "Anzahl aktive Konten"]
    assert figures[0].y_range is not figures[1].y_range
    assert [f.yaxis[0].axis_label.text for f in figures] == [
        "Umsatz Total (CHF)",
        "Anzahl aktive Konten (Anzahl)",
    ]


def test_two_kpis_of_one_group_share_the_axis(
    sheet: kpisheet.KPISheet, registry: kpisheet.Registry
) -> None:
    """One entity with two KPIs of one group and unit: one panel, a line per KPI, group as axis label."""
    import holoviews as hv

    series = sheet.series(["transactions", "transactions_abroad"], ["Alpine"])
    figure = hv.render(line_chart(series, registry), backend="bokeh")
    assert [item.label["value"] for item in figure.legend[0].items] == [
        "Anzahl Trx Total",
        "Anzahl Trx Ausland",
    ]
    assert figure.yaxis[0].axis_label.text == "Anzahl Trx (Anzahl)"
    assert figure.title.text.startswith("Alpine · ")


def test_per_account_chart_says_so(sheet: kpisheet.KPISheet, registry: kpisheet.Registry) -> None:
    """Per active account, title and y-axis say "Ø pro aktives Konto"."""
    import holoviews as hv

    series = sheet.series(["transactions"], ["Alpine"], per_account=True)
    figure = hv.render(line_chart(series, registry, per_account=True), backend="bokeh")
    assert figure.title.text.startswith("Anzahl Trx Total · Ø pro aktives Konto · ")
    assert figure.yaxis[0].axis_label.text == "Anzahl Trx Total (Anzahl, Ø pro aktives Konto)"


def test_a_missing_month_is_a_gap(one_kpi: pd.DataFrame, registry: kpisheet.Registry) -> None:
    """A month without a value is drawn as a gap in the line, and the next month has no change."""
    import holoviews as hv

    gappy = one_kpi[one_kpi["month"] != pd.Period("2026-03", "M")]
    figure = hv.render(line_chart(gappy, registry), backend="bokeh")
    source = figure.renderers[0].data_source.data
    assert len(source["value"]) == 13
    assert np.isnan(source["value"][5])
    assert source["change_text"][6] == "–"


def test_line_chart_refuses_selections_without_a_chart(
    sheet: kpisheet.KPISheet, registry: kpisheet.Registry
) -> None:
    """Two KPIs for two entities cannot be charted; the message states the rule."""
    series = sheet.series(["turnover", "transactions"], ["Alpine", "B2C"])
    with pytest.raises(
        QueryError,
        match=re.escape(
            "no chart for 2 KPI(s) and 2 entities: a chart shows one KPI for up to 8 entities, "
            "or one entity with up to 2 KPIs"
        ),
    ):
        line_chart(series, registry)
    with pytest.raises(QueryError, match=re.escape("nothing to chart: the series has no rows")):
        line_chart(series.iloc[:0], registry)


# -- files ----------------------------------------------------------------------------------------


def test_png_is_slide_sized_and_drawn_in_the_palette(
    one_kpi: pd.DataFrame, registry: kpisheet.Registry, tmp_path: Path
) -> None:
    """The PNG is 1600×900, not blank, and its lines carry the palette's colours."""
    path = save_png(one_kpi, registry, tmp_path / "chart.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (charts.PNG_WIDTH, charts.PNG_HEIGHT)
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colours = {tuple(int(c) for c in pixel) for pixel in np.unique(pixels, axis=0)}
    assert len(colours) > 100
    assert (pixels != 255).any(axis=1).mean() > 0.02  # more than a few stray pixels
    for hex_colour in PALETTE[:3]:
        rgb = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        assert rgb in colours, hex_colour


def test_png_panels(sheet: kpisheet.KPISheet, registry: kpisheet.Registry, tmp_path: Path) -> None:
    """Two panels render at the same fixed size, with both panels' colours."""
    series = sheet.series(["turnover", "active_accounts"], ["Alpine"])
    path = save_png(series, registry, tmp_path / "panels.png")
    with Image.open(path) as image:
        assert image.size == (charts.PNG_WIDTH, charts.PNG_HEIGHT)
        colours = {
            tuple(p) for p in np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)
        }
    for hex_colour in PALETTE[:2]:
        assert tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)) in colours


def test_html_is_standalone(
    one_kpi: pd.DataFrame, registry: kpisheet.Registry, tmp_path: Path
) -> None:
    """The HTML chart loads no script or stylesheet from anywhere: Bokeh is inlined."""
    path = save_html(one_kpi, registry, tmp_path / "chart.html")
    html = path.read_text(encoding="utf-8")
    tags = re.findall(r"<(?:script|link)\b[^>]*>", html)
    assert not [tag for tag in tags if re.search(r"\b(?:src|href)\s*=\s*[\"']?https?:", tag)]
    assert not [tag for tag in tags if tag.startswith("<script") and " src=" in tag]
    assert not [tag for tag in tags if "stylesheet" in tag]
    assert "<title>Umsatz Total · Okt 2025 – Okt 2026</title>" in html
    assert "Bokeh" in html and len(html) > 500_000  # the library itself is in the file


def test_png_and_html_to_buffers(one_kpi: pd.DataFrame, registry: kpisheet.Registry) -> None:
    """Both files can be written to in-memory buffers (the app's downloads)."""
    png, html = io.BytesIO(), io.BytesIO()
    assert save_png(one_kpi, registry, png) is None
    assert save_html(one_kpi, registry, html) is None
    assert png.getvalue().startswith(b"\x89PNG")
    with Image.open(io.BytesIO(png.getvalue())) as image:
        assert image.size == (charts.PNG_WIDTH, charts.PNG_HEIGHT)
    assert html.getvalue().decode("utf-8").startswith("<!DOCTYPE html>")


def test_import_kpisheet_does_not_import_web_libraries() -> None:
    """`import kpisheet` (and its XLSX export) stay free of HoloViews, Bokeh, Panel and matplotlib."""
    code = (
        "import sys, kpisheet, kpisheet.export; "
        "print(sorted({m.split('.')[0] for m in sys.modules} "
        "& {'holoviews', 'bokeh', 'panel', 'matplotlib'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- command line ---------------------------------------------------------------------------------


def test_cli_chart_writes_png_and_html(tmp_path: Path) -> None:
    """`kpisheet chart` writes a PNG or an HTML chart for one KPI over three products."""
    runner = CliRunner()
    base = ["chart", "--kpi", "turnover", "--as-of", "2026-06"]
    for product in ("Alpine Visa Gold", "Alpine Visa Classic", "Alpine Visa Platinum"):
        base += ["--entity", product]
    for name in ("chart.png", "chart.html"):
        run = runner.invoke(main, [*base, "--output", str(tmp_path / name)])
        assert run.exit_code == 0, run.output
        assert (tmp_path / name).stat().st_size > 10_000
    with Image.open(tmp_path / "chart.png") as image:
        assert image.size == (charts.PNG_WIDTH, charts.PNG_HEIGHT)
    assert "Jun 2026" in (tmp_path / "chart.html").read_text(encoding="utf-8")


def test_cli_chart_errors(tmp_path: Path) -> None:
    """A selection without a chart exits 1 with the rule; an unknown file type is a usage error."""
    runner = CliRunner()
    args = ["chart", "--kpi", "turnover", "--kpi", "transactions", "--entity", "Alpine"]
    run = runner.invoke(main, [*args, "--entity", "B2C", "--output", str(tmp_path / "c.png")])
    assert run.exit_code == 1
    assert run.stderr.strip() == (
        "no chart for 2 KPI(s) and 2 entities: a chart shows one KPI for up to 8 entities, "
        "or one entity with up to 2 KPIs"
    )
    run = runner.invoke(
        main, ["chart", "--kpi", "turnover", "--entity", "Alpine", "--output", "c.svg"]
    )
    assert run.exit_code == 2
    assert "'c.svg' must end in .png or .html" in run.stderr
    assert not (tmp_path / "c.png").exists()


def _gap_series() -> tuple[pd.DataFrame, kpisheet.Registry]:
    """Alpine's turnover in February 2023 lacks Alpine Visa Gold (inside its lifetime)."""
    months = [str(m) for m in pd.period_range("2022-01", "2023-06", freq="M")]
    rows = [
        (m, "turnover", product, 100.0 + i)
        for i, m in enumerate(months)
        for product in ("Alpine Visa Gold", "Alpine Visa Classic")
        if (m, product) != ("2023-02", "Alpine Visa Gold")
    ]
    sheet = kpisheet.open(pd.DataFrame(rows, columns=["month", "kpi", "entity", "value"]))
    series = sheet.series("turnover", ["Alpine", "Alpine Visa Classic"], as_of="2023-06")
    return series, sheet.registry


def test_months_not_covered_are_marked_on_the_line() -> None:
    """A month with a value but a missing member gets a cross (a Scatter point) on its line, the
    hover says so and the title explains the cross; fully covered lines get no marks."""
    series, registry = _gap_series()
    chart = line_chart(series, registry)
    marks = [element for element in chart if isinstance(element, hv.Scatter)]
    assert [len(mark) for mark in marks] == [1, 0]  # one scatter per line, empty when covered
    assert list(marks[0].data["month_text"]) == ["Feb 2023"]
    assert list(marks[0].data["entity"]) == ["Alpine"]
    assert "× = nicht alle Produkte gemeldet" in chart.opts.get().kwargs["title"]
    covered = series[series["entity"] == "Alpine Visa Classic"]
    plain = line_chart(covered, registry)
    assert not any(len(e) for e in plain if isinstance(e, hv.Scatter))
    assert "×" not in plain.opts.get().kwargs["title"]


def test_marked_charts_export_to_png_and_html() -> None:
    """PNG and HTML of a chart with a marked month render; the HTML's hover carries the text."""
    series, registry = _gap_series()
    png, page = io.BytesIO(), io.BytesIO()
    save_png(series, registry, png)
    save_html(series, registry, page)
    assert png.getvalue().startswith(b"\x89PNG")
    assert "nicht alle erwarteten Produkte haben gemeldet" in page.getvalue().decode()


MARKUP_LABEL = "Umsatz {CHF} $x^2$ {0} %s $"


@pytest.fixture(scope="module")
def markup_sheet(tmp_path_factory: pytest.TempPathFactory) -> kpisheet.KPISheet:
    """The demo sheet with the turnover label and group written like format fields and TeX."""
    from kpisheet.builtin import builtin_definitions_dir

    directory = tmp_path_factory.mktemp("definitions")
    for path in builtin_definitions_dir().glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        text = text.replace("label: Umsatz Total\n", f"label: {MARKUP_LABEL!r}\n", 1)
        (directory / path.name).write_text(text, encoding="utf-8")
    sheet = kpisheet.open(definitions=[directory])
    assert sheet.registry["turnover"].label == MARKUP_LABEL
    return sheet


@pytest.mark.parametrize(
    "kpis, entities",
    [(["turnover"], ["Alpine", "Bergkristall"]), (["turnover", "transactions"], ["Kartenwelt AG"])],
)
def test_labels_with_braces_and_dollars_are_plain_text(
    markup_sheet: kpisheet.KPISheet, kpis: list[str], entities: list[str], tmp_path: Path
) -> None:
    """A label with braces and dollars renders PNG and HTML, shown literally: no format field,
    no matplotlib math, no Bokeh TeX."""
    import holoviews as hv
    from bokeh.models import PlainText
    from matplotlib import cbook

    series = markup_sheet.series(kpis, entities)
    registry = markup_sheet.registry
    assert save_png(series, registry, tmp_path / "chart.png").stat().st_size > 10_000
    html = save_html(series, registry, tmp_path / "chart.html").read_text(encoding="utf-8")
    assert MARKUP_LABEL in html

    figure = hv.render(line_chart(series, registry, "matplotlib"), backend="matplotlib")
    texts = [t for ax in figure.axes for t in (ax.title, ax.yaxis.label)]
    texts += [t for ax in figure.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    texts += [figure._suptitle] if figure._suptitle is not None else []
    shown = [t.get_text() for t in texts if "Umsatz" in t.get_text()]
    assert shown and all(MARKUP_LABEL.replace("$", r"\$") in text for text in shown)
    assert not any(cbook.is_math_text(text) for text in shown)

    model = hv.render(line_chart(series, registry, "bokeh"), backend="bokeh")
    if len(kpis) > 1:  # a panel per KPI, in a grid under the title
        grid = next(child for child in model.children if isinstance(child, GridPlot))
        figures = [child[0] for child in grid.children]
    else:
        figures = [model]
    titles = [f.title.text for f in figures if f.title is not None]
    labels = [axis.axis_label for f in figures for axis in (*f.xaxis, *f.yaxis)]
    assert all(isinstance(label, PlainText) for label in labels)
    assert any(MARKUP_LABEL in text for text in [*titles, *(label.text for label in labels)])
