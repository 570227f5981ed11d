"""Tests of kpisheet_ui.state: the app's selection driven in plain pytest, without a browser."""

from __future__ import annotations

import io
import json
import logging
import re

import numpy as np
import openpyxl
import pandas as pd
import pytest

import kpisheet
from kpisheet.charts import NoChart, no_chart_message
from kpisheet.demo import DEMO_ENTITIES, generate_observations
from kpisheet.hierarchy import load_hierarchy
from kpisheet.presentation import month_long
from kpisheet.presentation.formats import format_change, format_change_pct, format_value
from kpisheet.store import Store, sqlite_url
from kpisheet_ui.choices import ALL
from kpisheet_ui.source import SheetConfig, SheetSource
from kpisheet_ui.state import PAGE_ROWS, SheetState
from kpisheet_ui.table import (
    BY_KPI,
    CHANGE_COLUMN,
    CHANGE_PCT_COLUMN,
    ENTITY_COLUMN,
    FALL_STYLE,
    GROUP_COLUMN,
    INCOMPLETE_MARK,
    INCOMPLETE_STYLE,
    KPI_COLUMN,
    MONTHS_COLUMN,
    NOTE_COLUMN,
    PREVIOUS_COLUMN,
    RISE_STYLE,
    VALUE_COLUMN,
)
from kpisheet_ui.usage import USAGE_LOGGER, configure_usage_log

ALPINE_PRODUCTS = [
    "Alpine Visa Classic",
    "Alpine Visa Gold",
    "Alpine Visa Platinum",
    "Alpine Visa Prepaid",
    "Alpine Visa Student Prepaid",
    "Alpine Mastercard Corporate",
]


@pytest.fixture(scope="module")
def sheet() -> kpisheet.KPISheet:
    return kpisheet.open()


@pytest.fixture
def state(sheet: kpisheet.KPISheet) -> SheetState:
    return SheetState(sheet, user="anna")


def test_first_table_is_the_default_query(state: SheetState, sheet: kpisheet.KPISheet) -> None:
    """Opening the app shows sheet.query() for the newest month: every entity, every KPI, 1M."""
    pd.testing.assert_frame_equal(state.result, sheet.query())
    assert state.as_of == str(sheet.newest_month)
    assert len(state.table()) == len(state.result)


def test_selection_gives_the_table_of_sheet_query(
    state: SheetState, sheet: kpisheet.KPISheet
) -> None:
    """As-of month, window, entity group, KPI group and per-account reach sheet.query unchanged."""
    state.param.update(
        as_of="2025-06",
        window="12M",
        grouping="mandant:Alpine",
        kpi_group="Umsatz",
        per_account=True,
    )
    umsatz = [k.id for k in sheet.registry.in_group("Umsatz")]
    expected = sheet.query(
        as_of="2025-06",
        window="12M",
        kpis=umsatz,
        entities=["Alpine", *ALPINE_PRODUCTS],
        per_account=True,
    )
    pd.testing.assert_frame_equal(state.result, expected)
    assert set(expected["entity"]) == {"Alpine", *ALPINE_PRODUCTS}


def test_sector_grouping_holds_its_mandants_and_products(state: SheetState) -> None:
    """A sector's grouping lists the sector, then its mandants, then its products."""
    state.grouping = "sector:B2C"
    entities = state.selected_entities
    hierarchy = state.sheet.hierarchy
    b2c_mandants = [
        m
        for m in hierarchy.groups("mandant")
        if set(hierarchy.members(m)) <= set(hierarchy.members("B2C"))
    ]
    assert entities == ["B2C", *b2c_mandants, *hierarchy.members("B2C")]


def test_total_grouping_is_the_total_alone(state: SheetState, sheet: kpisheet.KPISheet) -> None:
    """The grouping "Total" shows the company total only, not everything under it."""
    state.grouping = f"total:{sheet.hierarchy.total}"
    assert state.selected_entities == [sheet.hierarchy.total]
    pd.testing.assert_frame_equal(state.result, sheet.query(entities=[sheet.hierarchy.total]))


def test_card_profile_view_shows_the_total_and_the_profiles(
    state: SheetState, sheet: kpisheet.KPISheet
) -> None:
    """The card-profile view groups the products by card profile (CC, PP, CH) beside the total."""
    state.grouping = "view:cardprofile"
    assert state.selected_entities == [sheet.hierarchy.total, "CC", "PP", "CH"]
    assert set(state.result["entity"]) == {sheet.hierarchy.total, "CC", "PP", "CH"}
    assert set(state.result["level"]) == {"total", "cardprofile"}


def test_chosen_entities_and_kpis_narrow_the_table(
    state: SheetState, sheet: kpisheet.KPISheet
) -> None:
    """Entities and KPIs picked in the multi-selects are exactly the table's rows."""
    state.param.update(entities=["Alpine Visa Gold", "B2C"], kpis=["transactions", "turnover"])
    expected = sheet.query(
        as_of=state.as_of, kpis=["turnover", "transactions"], entities=["B2C", "Alpine Visa Gold"]
    )
    pd.testing.assert_frame_equal(state.result, expected)


def test_clear_all_returns_to_every_entity_and_kpi(
    state: SheetState, sheet: kpisheet.KPISheet
) -> None:
    """'Auswahl löschen' empties both multi-selects, so the table shows all again."""
    state.param.update(entities=["Alpine"], kpis=["turnover"])
    state.clear_all()
    assert (state.entities, state.kpis) == ([], [])
    pd.testing.assert_frame_equal(state.result, sheet.query())


def test_grouping_change_drops_entities_outside_it(state: SheetState) -> None:
    """Chosen entities that the new grouping does not contain are dropped from the selection."""
    state.entities = ["Alpine Visa Gold", "Talwind"]
    state.grouping = "mandant:Alpine"
    assert state.entities == ["Alpine Visa Gold"]
    assert list(state.param.entities.objects) == ["Alpine", *ALPINE_PRODUCTS]


def test_kpi_group_limits_the_kpi_choices(state: SheetState, sheet: kpisheet.KPISheet) -> None:
    """The KPI multi-select offers the KPIs of the chosen group, labelled, in declared order."""
    state.kpis = ["turnover", "active_accounts"]
    state.kpi_group = "Konten"
    assert state.kpis == ["active_accounts"]
    assert state.param.kpis.names == {k.label: k.id for k in sheet.registry.in_group("Konten")}


def test_table_formats_numbers_per_unit(state: SheetState) -> None:
    """Value, previous year and changes are the result's numbers, formatted by the KPI's unit."""
    state.param.update(
        entities=["Kartenwelt AG"], kpis=["turnover", "transactions", "activity_rate"]
    )
    table = state.table().set_index(KPI_COLUMN)
    result = state.result.set_index("kpi")
    assert table.loc["Umsatz Total", VALUE_COLUMN] == format_value(
        result.loc["turnover", "value"], "currency"
    )
    assert table.loc["Umsatz Total", VALUE_COLUMN].startswith("CHF ")
    assert table.loc["Anzahl Trx Total", PREVIOUS_COLUMN] == format_value(
        result.loc["transactions", "previous_value"], "count"
    )
    assert "'" in table.loc["Anzahl Trx Total", PREVIOUS_COLUMN]
    assert table.loc["Aktivitätsquote", VALUE_COLUMN].endswith(" %")
    assert table.loc["Aktivitätsquote", "Abw. VJ"].endswith(" Pp.")
    assert table.loc["Umsatz Total", CHANGE_PCT_COLUMN] == format_change_pct(
        result.loc["turnover", "change_pct"]
    )
    assert set(table[GROUP_COLUMN]) == {"Kartenwelt AG (Total)"}


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (1234567.0, "count", "1'234'567"),
        (1234567.891, "currency", "CHF 1'234'567.89"),
        (0.7133, "percent", "71.3 %"),
        (0.6576, "ratio", "0.66"),
        (float("nan"), "count", "–"),
    ],
)
def test_format_value_swiss_style(value: float, unit: str, text: str) -> None:
    """Numbers are shown Swiss style: apostrophes between thousands, CHF before amounts, % after."""
    assert format_value(value, unit) == text


def test_format_changes_are_signed() -> None:
    """Changes carry their sign; percentage changes of shares are in percentage points."""
    assert format_change(1349876.0, "count") == "+1'349'876"
    assert format_change(-2.2154, "currency") == "-CHF 2.22"
    assert format_change(0.00491, "percent") == "+0.5 Pp."
    assert format_change_pct(-0.0216) == "-2.2 %"
    assert format_value(12.345, "count", per_account=True) == "12.35"


def test_table_grouped_by_kpi(state: SheetState, sheet: kpisheet.KPISheet) -> None:
    """Grouped by KPI, rows come KPI by KPI (declared order), each with its entities."""
    state.param.update(display=BY_KPI, grouping="mandant:Alpine", kpis=["turnover", "transactions"])
    table = state.table()
    labels = [sheet.registry["turnover"].label, sheet.registry["transactions"].label]
    assert list(dict.fromkeys(table[GROUP_COLUMN])) == labels
    assert list(table[ENTITY_COLUMN][:7]) == ["Alpine", *ALPINE_PRODUCTS]


def test_incomplete_windows_are_marked(state: SheetState) -> None:
    """A window with months missing shows ⚠ after its month count and a yellow value cell."""
    state.param.update(
        as_of="2024-06", window="3M", entities=["Rhonetal Visa Gold"], kpis=["turnover"]
    )
    row = state.result.iloc[0]
    assert (row["months"], bool(row["complete"])) == (2, False)
    assert state.table().loc[0, MONTHS_COLUMN] == f"2 {INCOMPLETE_MARK}"
    assert state.table_styles().loc[0, VALUE_COLUMN] == INCOMPLETE_STYLE


def test_largest_changes_are_highlighted(state: SheetState) -> None:
    """The rows with the largest relative change are marked: rises green, falls red."""
    state.param.update(grouping="mandant:Alpine", kpis=["turnover"], window="12M")
    marks = state.highlighted()
    change = state.result["change_pct"]
    assert marks.abs().sum() == 2  # 7 rows: one highlight per five rows
    largest = change.abs().nlargest(2).index
    assert list(marks[marks != 0].index) == sorted(largest)
    styles = state.table_styles()
    for index in largest:
        expected = RISE_STYLE if change[index] > 0 else FALL_STYLE
        assert styles.loc[index, CHANGE_PCT_COLUMN] == expected


def test_styles_reach_exactly_the_styled_cells(state: SheetState) -> None:
    """Applied through pandas' Styler as the app applies them, the styles mark exactly the
    incomplete windows (value and months) and the largest changes (both change columns)."""
    state.param.update(as_of="2024-06", window="3M", grouping="mandant:Rhonetal")
    table = state.table()
    styles = state.table_styles()
    assert set(styles.index) <= set(table.index) and not styles.empty
    ctx = table.style.apply(lambda frame: styles, axis=None)._compute().ctx
    styled = {
        (table.index[i], table.columns[j]): "; ".join(f"{k}: {v}" for k, v in css)
        for (i, j), css in ctx.items()
    }
    incomplete = ~state.result["complete"].astype(bool)
    marks = state.highlighted()
    expected = {}
    for row in table.index:
        if incomplete[row]:
            expected[(row, VALUE_COLUMN)] = expected[(row, MONTHS_COLUMN)] = INCOMPLETE_STYLE
        if marks[row]:
            css = RISE_STYLE if marks[row] > 0 else FALL_STYLE
            expected[(row, "Abw. VJ")] = expected[(row, CHANGE_PCT_COLUMN)] = css
    assert incomplete.any() and marks.abs().sum() > 0
    assert styled == expected


def test_large_selection_is_shown_page_by_page(sheet: kpisheet.KPISheet) -> None:
    """A result longer than a page shows one page at a time: the same rows, numbers and styles
    as the whole table has there; the highlights are those of the whole result."""
    whole = SheetState(sheet, window="12M")
    paged = SheetState(sheet, window="12M", page_rows=100)
    total = len(paged.result)
    assert whole.pages == 1 and len(whole.table()) == total > PAGE_ROWS // 10
    assert paged.pages == -(-total // 100)
    assert list(paged.table().index) == list(range(100))
    paged.page = 3
    pd.testing.assert_frame_equal(paged.table(), whole.table().iloc[200:300])
    assert paged.page_text() == f"Zeilen 201–300 von {total} · Seite 3 von {paged.pages}"
    paged.page = paged.pages
    last = whole.table().iloc[(paged.pages - 1) * 100 :]
    pd.testing.assert_frame_equal(paged.table(), last)
    full_styles = whole.table_styles()
    pd.testing.assert_frame_equal(
        paged.table_styles(), full_styles[full_styles.index >= (paged.pages - 1) * 100]
    )
    pd.testing.assert_series_equal(paged.highlighted(), whole.highlighted())


def test_page_stays_for_new_numbers_and_restarts_for_new_rows(sheet: kpisheet.KPISheet) -> None:
    """Window, as-of month and per-account keep the page (same rows, new numbers); a new
    grouping, KPI group, display or pick of entities or KPIs starts on page one; a page past
    the end shows the last."""
    state = SheetState(sheet, page_rows=100)
    state.page = 3
    state.param.update(window="YTD", as_of="2025-06")
    assert state.page == 3
    pd.testing.assert_frame_equal(state.result, sheet.query(window="YTD", as_of="2025-06"))
    assert state.table().index[0] == 200
    state.per_account = True
    assert state.page == 3
    state.display = BY_KPI
    assert state.page == 1
    state.page = 2
    state.kpi_group = "Umsatz"
    assert state.page == 1
    state.page = 99
    assert state.page == state.pages
    state.grouping = "mandant:Alpine"
    assert (state.page, state.pages) == (1, 1)


def test_chart_for_one_kpi_and_up_to_eight_entities(state: SheetState) -> None:
    """One KPI and at most eight entities get the chart; a ninth entity hides it."""
    state.param.update(grouping=ALL, kpis=["turnover"])
    entities = list(state.param.entities.objects)
    state.entities = entities[:8]
    assert state.shows_chart
    assert state.chart_message() == ""
    state.entities = entities[:9]
    assert not state.shows_chart
    assert state.chart_message() == no_chart_message(NoChart.TOO_MANY_ENTITIES)


def test_chart_for_one_entity_and_up_to_two_kpis(state: SheetState) -> None:
    """One entity with two KPIs gets the chart, with three it does not."""
    state.param.update(entities=["Alpine"], kpis=["turnover", "transactions"])
    assert state.shows_chart
    state.kpis = ["turnover", "transactions", "active_accounts"]
    assert state.chart_reason() == NoChart.TOO_MANY_KPIS


def test_chart_series_is_13_months_of_the_selection(
    state: SheetState, sheet: kpisheet.KPISheet
) -> None:
    """The chart shows sheet.series for the selection: 13 months ending with the as-of month."""
    state.param.update(as_of="2025-03", entities=["Alpine", "B2C"], kpis=["turnover"])
    series = state.series()
    pd.testing.assert_frame_equal(
        series, sheet.series(["turnover"], ["Alpine", "B2C"], as_of="2025-03", months=13)
    )
    assert str(series["month"].min()) == "2024-03"
    assert state.chart() is not None


def test_stock_note_for_windows_over_one_month(state: SheetState) -> None:
    """Stock KPIs in a window over several months get a note; 1M and flow KPIs get none."""
    state.param.update(kpi_group="Konten", window="12M")
    note = state.stock_note()
    assert note.startswith("Hinweis: Bestandesgrössen werden nicht über die Zeit summiert.")
    assert "Anzahl aktive Konten (Wert des letzten Monats)" in note
    assert note.endswith(
        "Aktivitätsquote (berechnet als Anzahl aktive Konten / Anzahl gültige Konten "
        "aus den Fensterwerten). Ein Fenster mit dem Wert des letzten Monats ist vollständig, "
        "wenn dieser Monat abgedeckt ist."
    )
    assert note in state.notes()
    state.per_account = True  # stocks have no per-account value: nothing to explain
    assert state.stock_note() == ""
    state.per_account = False
    state.window = "1M"
    assert state.stock_note() == ""
    state.param.update(window="YTD", kpi_group="Umsatz")
    assert state.stock_note() == ""


def test_per_account_note_names_kpis_without_denominator(state: SheetState) -> None:
    """Per active account, KPIs without a denominator are named as having no value."""
    state.param.update(per_account=True, kpis=["turnover", "nca_received"])
    assert state.notes() == [
        "Ø pro aktives Konto: ohne Bezugsgrösse und daher ohne Wert: NCA Anträge eingegangen."
    ]


def test_table_download_reads_back(state: SheetState) -> None:
    """The XLSX of the table holds the result's rows and numbers and records the selection."""
    state.param.update(window="12M", grouping="mandant:Alpine", kpis=["turnover"])
    workbook = openpyxl.load_workbook(state.table_xlsx())
    rows = list(workbook["KPIs"].iter_rows(values_only=True))
    assert len(rows) == len(state.result) + 1
    header = rows[0]
    first = dict(zip(header, rows[1], strict=True))
    assert first["Entität"] == "Alpine"
    assert first["Wert"] == pytest.approx(state.result.iloc[0]["value"])
    selection = [row for row in workbook["Auswahl"].iter_rows(values_only=True) if row[0]]
    assert ("Entitäten-Gruppe", "Mandant: Alpine") in [(row[0], row[1]) for row in selection]
    assert state.table_filename() == f"kpisheet_{state.as_of}_12M.xlsx"


def test_chart_downloads_read_back(state: SheetState) -> None:
    """The chart's series as XLSX, the chart as PNG and as standalone HTML are real files."""
    state.param.update(entities=["Alpine", "B2C"], kpis=["turnover"])
    workbook = openpyxl.load_workbook(state.series_xlsx())
    assert workbook["Verlauf"].max_row == 1 + 13 * 2
    png = state.chart_png().getvalue()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    html = state.chart_html().getvalue().decode("utf-8")
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert "Bokeh" in html
    assert not re.search(r"<(script|link)[^>]+(src|href)=\"https?:", html)  # opens offline


def _store_with(path, observations: pd.DataFrame) -> str:
    url = sqlite_url(path)
    with Store(url) as store:
        store.write_release(observations, source="test", hierarchy=load_hierarchy(DEMO_ENTITIES))
    return url


def test_new_release_is_picked_up_with_a_notice(tmp_path) -> None:
    """A new release in the store reaches an open session: newest month, Datenstand and notice."""
    observations = generate_observations()
    older = observations[observations["month"] < observations["month"].max()]
    url = _store_with(tmp_path / "kpis.db", older)
    source = SheetSource(SheetConfig(store=url, poll_seconds=0))
    state = SheetState(source.current())
    assert state.as_of == "2026-09"
    assert "Release 1" in state.data_version
    with Store(url) as store:
        store.write_release(observations, source="test", hierarchy=load_hierarchy(DEMO_ENTITIES))
    sheet = source.current()
    assert sheet is source.current()  # cached per release
    state.use_sheet(sheet)
    assert state.as_of == "2026-10"
    assert state.data_version.startswith(f"Datenstand: {month_long('2026-10')} · Release 2 vom ")
    assert state.notice == "Neue Daten geladen: Release 2, neuester Monat Oktober 2026."
    pd.testing.assert_frame_equal(state.result, sheet.query())
    state.window = "3M"
    assert state.notice == ""


def test_new_release_keeps_an_older_as_of_month(tmp_path) -> None:
    """A session looking at an older month stays on it when a new release arrives."""
    observations = generate_observations()
    older = observations[observations["month"] < observations["month"].max()]
    url = _store_with(tmp_path / "kpis.db", older)
    source = SheetSource(SheetConfig(store=url, poll_seconds=0))
    state = SheetState(source.current(), as_of="2025-01", kpis=["turnover"])
    with Store(url) as store:
        store.write_release(observations, source="test", hierarchy=load_hierarchy(DEMO_ENTITIES))
    state.use_sheet(source.current())
    assert (state.as_of, state.kpis) == ("2025-01", ["turnover"])


def test_usage_log_has_one_json_line_per_interaction(state: SheetState, tmp_path) -> None:
    """Each selection change and download writes one JSON line: user, action, selection, ms."""
    target = tmp_path / "usage.log"
    handler = configure_usage_log(target)
    try:
        state.window = "6M"
        state.table_xlsx()
    finally:
        logging.getLogger(USAGE_LOGGER).removeHandler(handler)
        handler.close()
    lines = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [line["action"] for line in lines] == ["auswahl", "download"]
    assert lines[0]["user"] == "anna"
    assert lines[0]["selection"]["window"] == "6M"
    assert lines[1]["file"] == "xlsx"
    assert all(isinstance(line["ms"], float) and line["ms"] >= 0 for line in lines)


def test_usage_log_records_page_turns(sheet: kpisheet.KPISheet, tmp_path) -> None:
    """Turning a page is an interaction of its own in the usage log, with the page number."""
    state = SheetState(sheet, user="anna", page_rows=100)
    target = tmp_path / "usage.log"
    handler = configure_usage_log(target)
    try:
        state.page = 2
    finally:
        logging.getLogger(USAGE_LOGGER).removeHandler(handler)
        handler.close()
    lines = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [(line["action"], line["page"], line["user"]) for line in lines] == [
        ("seite", 2, "anna")
    ]


def test_xlsx_download_is_a_fresh_buffer(state: SheetState) -> None:
    """Each download call returns a new buffer positioned at its start."""
    first, second = state.table_xlsx(), state.table_xlsx()
    assert isinstance(first, io.BytesIO) and first is not second
    assert first.tell() == 0 and first.getvalue()[:2] == b"PK"


@pytest.fixture(scope="module")
def gap_sheet() -> kpisheet.KPISheet:
    """The demo data without Alpine Visa Gold's turnover of October 2025 (inside its lifetime)."""
    observations = generate_observations()
    gap = (
        (observations["month"] == pd.Period("2025-10", "M"))
        & (observations["kpi"] == "turnover")
        & (observations["entity"] == "Alpine Visa Gold")
    )
    return kpisheet.open(observations[~gap].reset_index(drop=True))


GAP_REASON = "Vorjahr: Mitglied fehlt im Oktober 2025: Alpine Visa Gold"


def test_changes_of_incomplete_comparisons_read_a_dash_with_the_reason(
    gap_sheet: kpisheet.KPISheet,
) -> None:
    """Rows whose previous window lacks a member show "–" for both changes and carry the reason;
    complete rows show their formatted change and no reason; values stay shown."""
    state = SheetState(
        gap_sheet, kpis=["turnover"], entities=["Kartenwelt AG", "Alpine", "Nordlicht"]
    )
    table = state.table()
    assert list(table[CHANGE_COLUMN])[:2] == ["–", "–"]
    assert list(table[CHANGE_PCT_COLUMN])[:2] == ["–", "–"]
    assert list(table[NOTE_COLUMN]) == [GAP_REASON, GAP_REASON, ""]
    result = state.result
    assert table[CHANGE_COLUMN].iloc[2] == format_change(result["change"].iloc[2], "currency")
    assert table[VALUE_COLUMN].iloc[0] == format_value(result["value"].iloc[0], "currency")
    styles = state.table_styles()
    assert styles.loc[0, PREVIOUS_COLUMN] == INCOMPLETE_STYLE
    assert styles.loc[0, VALUE_COLUMN] == ""
    assert f"{GAP_REASON} (2 Zeilen)" in state.comparison_note()
    assert state.comparison_note() in state.notes()


def test_incomplete_comparisons_are_never_highlighted(gap_sheet: kpisheet.KPISheet) -> None:
    """The total's turnover change is inflated by the gap (the largest of the selection), yet the
    highlight goes to the largest complete change instead."""
    state = SheetState(
        gap_sheet, kpis=["turnover"], entities=["Kartenwelt AG", "Alpine", "Nordlicht", "Talwind"]
    )
    result = state.result
    assert result["change_pct"].abs().idxmax() in (0, 1)  # a row with a "–"
    marks = state.highlighted()
    assert marks.iloc[:2].eq(0).all()
    complete = result.loc[2:, "change_pct"].abs()
    assert marks.loc[complete.idxmax()] != 0


def test_table_download_writes_the_dash_and_the_named_member(gap_sheet: kpisheet.KPISheet) -> None:
    """The XLSX of the table shows "–" and the reason naming the member, like the app."""
    state = SheetState(gap_sheet, kpis=["turnover"], entities=["Kartenwelt AG", "Nordlicht"])
    sheet = openpyxl.load_workbook(state.table_xlsx())["KPIs"]
    rows = list(sheet.iter_rows(values_only=True))
    header = rows[0]
    assert rows[1][header.index("Abw. VJ")] == "–"
    assert [row[header.index("Hinweis")] for row in rows[1:]] == [GAP_REASON, None]


def test_thresholds_decide_the_highlights_of_their_kpis(state: SheetState) -> None:
    """Rows of a KPI with highlight thresholds (the demo's active accounts: 20 %) are marked
    exactly when they pass them; rows of other KPIs keep the largest-percentages rule among
    themselves; incomplete comparisons are never marked."""
    from kpisheet.thresholds import flags

    state.param.update(kpis=["turnover", "active_accounts"], window="1M")
    result = state.result
    marks = state.highlighted()
    accounts = result["kpi"] == "active_accounts"
    over = pd.Series(flags(result, state.registry), index=result.index)
    assert over[accounts].any() and not over[accounts].all()
    assert list(marks[accounts] != 0) == list(over[accounts])
    assert (marks[over] == np.sign(result.loc[over, "change"]).astype(int)).all()
    turnover = result[~accounts]
    count = min(5, -(-len(turnover) // 5))
    comparable = turnover["complete"] & turnover["previous_complete"]
    largest = turnover.loc[comparable, "change_pct"].abs().nlargest(count).index
    assert sorted(marks[~accounts][marks[~accounts] != 0].index) == sorted(largest)
    incomplete = ~(result["complete"] & result["previous_complete"])
    assert (marks[incomplete] == 0).all()
