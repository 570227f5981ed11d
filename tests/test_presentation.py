"""Tests of kpisheet.presentation: German words, labels from the hierarchy, why a comparison is not
shown, and that one change here reaches the app, the workbooks and the charts."""

from __future__ import annotations

import pandas as pd
import pytest

import kpisheet
from kpisheet.constants import VALUE
from kpisheet.demo import DEMO_ENTITIES
from kpisheet.hierarchy import load_hierarchy
from kpisheet.presentation import (
    comparable,
    formats,
    incomplete_reasons,
    level_label,
    level_labels,
    listing,
    members_text,
    month_long,
    month_short,
    result_notes,
    stock_note,
    words,
)

#: The demo's Alpine products: Classic, Gold, Platinum, Prepaid, Student Prepaid, Corporate.
ALPINE = list(load_hierarchy(DEMO_ENTITIES).members("Alpine"))


def test_month_names() -> None:
    """Months read in German, long in tables and notes, short on chart axes."""
    assert month_long("2019-05") == "Mai 2019"
    assert month_long(pd.Period("2026-03", "M")) == "März 2026"
    assert month_short("2026-03") == "Mär 2026"
    assert month_short(pd.Period("2021-10", "M")) == "Okt 2021"


def test_listings_name_at_most_three_members() -> None:
    """Lists read "a, b und c"; more than three members are counted."""
    assert listing([]) == ""
    assert listing(["A"]) == "A"
    assert listing(["A", "B", "C"]) == "A, B und C"
    assert members_text(["A", "B", "C"]) == "A, B und C"
    assert members_text(["A", "B", "C", "D", "E"]) == "A, B, C und 2 weitere"


@pytest.fixture(scope="module")
def sheet() -> kpisheet.KPISheet:
    """Alpine's turnover from 2022-01 to 2023-06: Gold misses 2022-05, four products miss
    2023-02; Platinum launches in 2022-09; the accounts of every product end in 2023-04."""
    rows = []
    for month in pd.period_range("2022-01", "2023-06", freq="M"):
        for product in ALPINE:
            text = str(month)
            if product == "Alpine Visa Platinum" and text < "2022-09":
                continue
            gap = (text == "2022-05" and product == "Alpine Visa Gold") or (
                text == "2023-02" and product in ALPINE[2:]
            )
            if not gap:
                rows.append((text, "turnover", product, 100.0))
            if text <= "2023-04":
                rows.append((text, "active_accounts", product, 10.0))
    return kpisheet.open(pd.DataFrame(rows, columns=["month", "kpi", "entity", "value"]))


def _reason(sheet: kpisheet.KPISheet, **query: object) -> list[str]:
    result = sheet.query(**query)
    return list(incomplete_reasons(result, sheet.registry, sheet=sheet))


def test_complete_rows_have_no_reason(sheet: kpisheet.KPISheet) -> None:
    """Both windows complete: no reason, and the change may be shown."""
    result = sheet.query(as_of="2023-06", window="1M", kpis="turnover", entities="Alpine")
    assert list(comparable(result)) == [True]
    assert list(incomplete_reasons(result, sheet.registry, sheet=sheet)) == [""]


def test_a_missing_member_is_named_with_its_month(sheet: kpisheet.KPISheet) -> None:
    """The previous window holds Gold's gap: the reason names Gold and the month."""
    assert _reason(sheet, as_of="2023-06", window="3M", kpis="turnover", entities="Alpine") == [
        "Vorjahr: Mitglied fehlt im Mai 2022: Alpine Visa Gold"
    ]


def test_several_missing_members_are_counted_after_three(sheet: kpisheet.KPISheet) -> None:
    """Four members missing in February 2023: three named, one counted; February 2022 is covered
    (Platinum had not launched), so only the current window has a reason."""
    assert _reason(sheet, as_of="2023-02", window="1M", kpis="turnover", entities="Alpine") == [
        "Fenster: Mitglieder fehlen im Februar 2023: Alpine Visa Platinum, Alpine Visa Prepaid, "
        "Alpine Visa Student Prepaid und 1 weitere"
    ]


def test_months_are_counted_for_flows_and_a_stock_names_its_month(
    sheet: kpisheet.KPISheet,
) -> None:
    """A flow's window with months before the data counts them; a stock whose final month has no
    value at all (after every product stopped) says which month."""
    assert _reason(sheet, as_of="2022-12", window="YTD", kpis="turnover", entities="Alpine") == [
        "Fenster: Mitglied fehlt im Mai 2022: Alpine Visa Gold; Vorjahr: keine Werte"
    ]
    assert _reason(sheet, as_of="2023-03", window="6M", kpis="turnover", entities="Alpine") == [
        "Fenster: Mitglieder fehlen im Februar 2023: Alpine Visa Platinum, Alpine Visa Prepaid, "
        "Alpine Visa Student Prepaid und 1 weitere; Vorjahr: 3 von 6 Monaten"
    ]
    assert _reason(
        sheet, as_of="2023-06", window="3M", kpis="active_accounts", entities="Alpine"
    ) == ["Fenster: kein Wert im Juni 2023"]


def test_without_the_sheet_or_beyond_the_limit_the_reason_is_general(
    sheet: kpisheet.KPISheet,
) -> None:
    """No sheet, or more rows than the lookup limit: the reason says members did not report."""
    result = sheet.query(as_of="2023-06", window="3M", kpis="turnover", entities="Alpine")
    general = ["Vorjahr: nicht alle erwarteten Produkte haben gemeldet"]
    assert list(incomplete_reasons(result, sheet.registry)) == general
    assert list(incomplete_reasons(result, sheet.registry, sheet=sheet, limit=0)) == general


def test_level_labels_come_from_the_hierarchy() -> None:
    """Levels and views are named by the hierarchy's labels; product and total by their German
    words; a level the hierarchy does not label by its name, capitalised."""
    hierarchy = load_hierarchy(DEMO_ENTITIES)
    assert level_labels(hierarchy) == {
        "product": "Produkt",
        "mandant": "Mandant",
        "sector": "Sektor",
        "total": "Total",
        "cardprofile": "Kartenprofil",
    }
    assert level_label("sector") == "Sector"  # without a hierarchy nothing names the level
    assert level_label("product") == "Produkt"
    hierarchy.labels["product"] = "Karte"
    assert level_label("product", hierarchy) == "Karte"


def test_one_stock_note_for_the_app_and_the_workbook() -> None:
    """The stock note names the window, how each stock is taken and its formula in labels; the
    workbook's notes carry the same text the app shows."""
    registry = kpisheet.open().registry
    note = stock_note(["turnover", "active_accounts", "activity_rate"], registry, window="12M")
    assert note == (
        "Bestandesgrössen werden nicht über die Zeit summiert. Im Fenster 12M zeigen Anzahl "
        "aktive Konten (Wert des letzten Monats) und Aktivitätsquote (berechnet als Anzahl aktive "
        "Konten / Anzahl gültige Konten aus den Fensterwerten). Ein Fenster mit dem Wert des "
        "letzten Monats ist vollständig, wenn dieser Monat abgedeckt ist."
    )
    assert note in result_notes(["active_accounts", "activity_rate"], registry, window="12M")
    assert stock_note(["turnover"], registry, window="12M") == ""


def test_one_change_here_reaches_the_app_the_workbook_and_the_charts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A column word and the currency, changed in kpisheet.presentation alone, reach the app's
    table, the XLSX (header and number format), the HTML chart and the PNG chart's axis."""
    import holoviews as hv
    import openpyxl

    from kpisheet import charts
    from kpisheet_ui.app import AppView
    from kpisheet_ui.state import SheetState

    monkeypatch.setitem(words.COLUMN_WORDS, VALUE, "Betrag")
    monkeypatch.setattr(formats, "CURRENCY", "EUR")
    sheet = kpisheet.open()
    state = SheetState(sheet, kpis=["turnover"], entities=[sheet.hierarchy.total])

    table = state.table()
    assert "Betrag" in table.columns and "Wert" not in table.columns
    assert table["Betrag"].str.match(r"^EUR \d{1,3}('\d{3})*\.\d\d$").all()
    shown = AppView(state).table.value
    assert shown["Betrag"].tolist() == table["Betrag"].tolist()

    workbook = openpyxl.load_workbook(state.table_xlsx())
    rows = workbook["KPIs"]
    headers = [cell.value for cell in rows[1]]
    assert "Betrag" in headers and "Wert" not in headers
    value_cell = rows.cell(row=2, column=headers.index("Betrag") + 1)
    assert value_cell.number_format == '"EUR "#,##0.00;"EUR "-#,##0.00'

    html = state.chart_html().read().decode("utf-8")
    assert '"Betrag"' in html and "Umsatz Total (EUR)" in html and "CHF" not in html

    figure = hv.render(
        charts.line_chart(state.series(), sheet.registry, "matplotlib"), backend="matplotlib"
    )
    assert figure.axes[0].get_ylabel() == "Umsatz Total (EUR)"
    assert state.chart_png().getvalue().startswith(b"\x89PNG")
