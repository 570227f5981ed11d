"""Tests of kpisheet.export: formatted, safe XLSX workbooks of query results and chart series."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import os
import re
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import openpyxl
import pandas as pd
import pytest
from click.testing import CliRunner

import kpisheet
from kpisheet.cli import main
from kpisheet.constants import RESULT_COLUMNS
from kpisheet.errors import QueryError
from kpisheet.export import (
    INCOMPLETE_FILL,
    neutralise_formulas,
    write_result_xlsx,
    write_series_xlsx,
)
from kpisheet.plugins import load_kpis
from kpisheet.presentation.formats import EXCEL_CHANGE_PCT, excel_format
from kpisheet.presentation.words import result_headers, series_headers
from kpisheet.series import month_on_month

HEADERS = list(result_headers().values())
assert HEADERS[-3:] == ["Monate VJ", "Vollständig VJ", "Hinweis"]
RELEASE = SimpleNamespace(
    id=7,
    newest_month=pd.Period("2026-10", "M"),
    created_at=dt.datetime(2026, 11, 3, 8, 15, tzinfo=dt.UTC),
)


@pytest.fixture(scope="module")
def sheet() -> kpisheet.KPISheet:
    """The bundled demo sheet."""
    return kpisheet.open()


@pytest.fixture(scope="module")
def result(sheet: kpisheet.KPISheet) -> pd.DataFrame:
    """A 12-month result with a flow (CHF), a count, a stock and a share, over several levels."""
    return sheet.query(
        window="12M",
        kpis=["turnover", "transactions", "active_accounts", "activity_rate"],
        entities=["Kartenwelt AG", "B2C", "Alpine", "Alpine Visa Gold"],
    )


def _read(path_or_buffer: Path | io.BytesIO) -> openpyxl.Workbook:
    return openpyxl.load_workbook(path_or_buffer)


def _column(sheet: openpyxl.worksheet.worksheet.Worksheet, header: str) -> list[openpyxl.cell.Cell]:
    headers = [cell.value for cell in sheet[1]]
    index = headers.index(header)
    return [row[index] for row in sheet.iter_rows(min_row=2)]


def _pairs(sheet: openpyxl.worksheet.worksheet.Worksheet) -> dict[str, object]:
    """Column A → column B of the "Auswahl" sheet."""
    return {
        row[0].value: row[1].value
        for row in sheet.iter_rows(min_row=1, max_col=2)
        if isinstance(row[0].value, str)
    }


def _hand_made(**overrides: object) -> pd.DataFrame:
    """One row per given entity with the result columns (for cases the demo data lacks)."""
    entities = overrides.pop("entity", ["Alpine Visa Gold"])
    n = len(entities)  # type: ignore[arg-type]
    frame = pd.DataFrame(
        {
            "as_of": ["2026-10"] * n,
            "window": ["3M"] * n,
            "level": ["product"] * n,
            "entity": entities,
            "kpi": ["turnover"] * n,
            "value": [1234567.891] * n,
            "previous_value": [1000000.0] * n,
            "change": [234567.891] * n,
            "change_pct": [0.234567891] * n,
            "months": [3] * n,
            "complete": [True] * n,
            "previous_months": [3] * n,
            "previous_complete": [True] * n,
        }
    )
    for column, values in overrides.items():
        frame[column] = values
    return frame[list(RESULT_COLUMNS)]


def test_result_sheet_has_german_headers_and_labels_next_to_ids(
    result: pd.DataFrame, sheet: kpisheet.KPISheet, tmp_path: Path
) -> None:
    """The first sheet is "KPIs" with the German headers in order and each KPI's label beside its id."""
    path = tmp_path / "result.xlsx"
    write_result_xlsx(result, path, registry=sheet.registry, hierarchy=sheet.hierarchy)
    workbook = _read(path)
    assert workbook.sheetnames == ["KPIs", "Auswahl"]
    table = workbook["KPIs"]
    assert [cell.value for cell in table[1]] == HEADERS
    ids = [cell.value for cell in _column(table, "KPI")]
    labels = [cell.value for cell in _column(table, "KPI-Bezeichnung")]
    assert ids == result["kpi"].tolist()
    assert labels == [sheet.registry[kpi].label for kpi in ids]
    levels = {cell.value for cell in _column(table, "Ebene")}
    assert levels == {"Total", "Sektor", "Mandant", "Produkt"}
    assert table.max_row == len(result) + 1


def test_numbers_are_stored_as_numbers_with_formats_by_unit(
    result: pd.DataFrame, sheet: kpisheet.KPISheet, tmp_path: Path
) -> None:
    """Values are numeric cells equal to the result, formatted by unit; changes are signed percent."""
    path = tmp_path / "result.xlsx"
    write_result_xlsx(result, path, registry=sheet.registry)
    table = _read(path)["KPIs"]
    values = _column(table, "Wert")
    assert all(cell.data_type == "n" for cell in values)
    assert [cell.value for cell in values] == pytest.approx(result["value"].tolist())
    expected_formats = {
        "turnover": '"CHF "#,##0.00;"CHF "-#,##0.00',
        "transactions": "#,##0",
        "active_accounts": "#,##0",
        "activity_rate": "0.0%",
    }
    for kpi, cell in zip(result["kpi"], values, strict=True):
        assert cell.number_format == expected_formats[kpi]
    assert {cell.number_format for cell in _column(table, "Abw. VJ %")} == {EXCEL_CHANGE_PCT}
    assert {cell.number_format for cell in _column(table, "Abw. VJ")} >= {"+#,##0;-#,##0;0"}
    assert {type(cell.value) for cell in _column(table, "Monate")} == {int}


def test_missing_values_are_empty_cells_not_text(sheet: kpisheet.KPISheet, tmp_path: Path) -> None:
    """A missing previous-year value is an empty cell, never the text "nan"."""
    frame = _hand_made(previous_value=[np.nan], change=[np.nan], change_pct=[np.nan])
    path = tmp_path / "missing.xlsx"
    write_result_xlsx(frame, path, registry=sheet.registry)
    table = _read(path)["KPIs"]
    for header in ("Vorjahr", "Abw. VJ", "Abw. VJ %"):
        assert _column(table, header)[0].value is None


def test_per_account_counts_get_decimals(sheet: kpisheet.KPISheet, tmp_path: Path) -> None:
    """Per active account, a count (transactions per account) is shown with two decimals."""
    frame = _hand_made(kpi=["transactions"], value=[12.3456])
    path = tmp_path / "per_account.xlsx"
    write_result_xlsx(frame, path, registry=sheet.registry, selection={"per_account": True})
    assert _column(_read(path)["KPIs"], "Wert")[0].number_format == "#,##0.00"
    assert excel_format("count") == "#,##0"
    assert excel_format("count", per_account=True) == "#,##0.00"


def test_header_is_frozen_with_autofilter_and_readable_widths(
    result: pd.DataFrame, sheet: kpisheet.KPISheet, tmp_path: Path
) -> None:
    """The header row stays on screen, filters cover every row and columns fit their content."""
    path = tmp_path / "result.xlsx"
    write_result_xlsx(result, path, registry=sheet.registry)
    table = _read(path)["KPIs"]
    assert table.freeze_panes == "A2"
    assert table.auto_filter.ref == f"A1:O{len(result) + 1}"
    widths = {letter: table.column_dimensions[letter].width for letter in "ABCDEFGHIJKL"}
    assert widths["D"] >= len("Alpine Visa Gold")  # Entität
    assert widths["F"] >= len("Anzahl aktive Konten")  # KPI-Bezeichnung
    # "CHF 11'527'693'017.24" must not show as ####.
    assert widths["G"] >= len("CHF 11'527'693'017.24")
    assert all(width <= 62 for width in widths.values())


def test_incomplete_windows_are_marked(sheet: kpisheet.KPISheet, tmp_path: Path) -> None:
    """A window with months missing says "nein" and is filled; a complete one says "ja", unfilled."""
    frame = _hand_made(
        entity=["Alpine Visa Gold", "Alpine Visa Classic"],
        months=[2, 3],
        complete=[False, True],
    )
    path = tmp_path / "incomplete.xlsx"
    write_result_xlsx(frame, path, registry=sheet.registry)
    table = _read(path)["KPIs"]
    complete = _column(table, "Vollständig")
    assert [cell.value for cell in complete] == ["nein", "ja"]
    marked = INCOMPLETE_FILL.fgColor.rgb
    assert complete[0].fill.fgColor.rgb == marked
    assert _column(table, "Wert")[0].fill.fgColor.rgb == marked
    assert complete[1].fill.fgColor.rgb != marked


def test_changes_of_incomplete_comparisons_read_a_dash_with_the_reason(
    sheet: kpisheet.KPISheet, tmp_path: Path
) -> None:
    """Where either window is incomplete, Abw. VJ and Abw. VJ % read "–", the previous window's
    cells are filled when it is the incomplete one, and "Hinweis" says why (months counted)."""
    frame = _hand_made(
        entity=["Alpine Visa Gold", "Alpine Visa Classic", "Alpine Visa Prepaid"],
        months=[3, 2, 3],
        complete=[True, False, True],
        previous_months=[3, 3, 1],
        previous_complete=[True, True, False],
    )
    path = tmp_path / "dash.xlsx"
    write_result_xlsx(frame, path, registry=sheet.registry)
    table = _read(path)["KPIs"]
    assert [c.value for c in _column(table, "Abw. VJ")] == [234567.891, "–", "–"]
    assert [c.value for c in _column(table, "Abw. VJ %")] == [0.234567891, "–", "–"]
    assert [c.value for c in _column(table, "Hinweis")] == [
        None,
        "Fenster: 2 von 3 Monaten",
        "Vorjahr: 1 von 3 Monaten",
    ]
    assert [c.value for c in _column(table, "Vollständig VJ")] == ["ja", "ja", "nein"]
    marked = INCOMPLETE_FILL.fgColor.rgb
    assert [c.fill.fgColor.rgb == marked for c in _column(table, "Vorjahr")] == [
        False,
        False,
        True,
    ]
    assert all(c.alignment.horizontal == "right" for c in _column(table, "Abw. VJ"))


def test_to_excel_names_the_member_that_did_not_report(tmp_path: Path) -> None:
    """Through sheet.to_excel, a group whose previous window lacks one product's month says which
    product and month, in German, and shows no change."""
    months = [str(m) for m in pd.period_range("2022-01", "2023-06", freq="M")]
    rows = [
        (m, "turnover", product, 100.0)
        for m in months
        for product in ("Alpine Visa Gold", "Alpine Visa Classic")
        if (m, product) != ("2022-05", "Alpine Visa Gold")
    ]
    gap_sheet = kpisheet.open(pd.DataFrame(rows, columns=["month", "kpi", "entity", "value"]))
    result = gap_sheet.query(as_of="2023-06", window="3M", kpis="turnover", entities="Alpine")
    path = tmp_path / "gap.xlsx"
    gap_sheet.to_excel(result, path)
    table = _read(path)["KPIs"]
    assert [c.value for c in _column(table, "Abw. VJ")] == ["–"]
    assert [c.value for c in _column(table, "Hinweis")] == [
        "Vorjahr: Mitglied fehlt im Mai 2022: Alpine Visa Gold"
    ]
    assert [c.value for c in _column(table, "Vorjahr")] == [500.0]


def test_selection_sheet_records_selection_release_time_and_notes(
    result: pd.DataFrame, sheet: kpisheet.KPISheet, tmp_path: Path
) -> None:
    """ "Auswahl" records as-of, window, KPIs, entities, per-account, release, export time and notes."""
    path = tmp_path / "result.xlsx"
    before = dt.datetime.now().astimezone().replace(second=0, microsecond=0)
    write_result_xlsx(
        result,
        path,
        registry=sheet.registry,
        release=RELEASE,
        selection={
            "as_of": "2026-10",
            "window": "12M",
            "kpis": ["turnover", "active_accounts"],
            "entities": ["Alpine", "B2C"],
            "per_account": False,
        },
    )
    selection = _read(path)["Auswahl"]
    pairs = _pairs(selection)
    assert pairs["Stichtag"] == "2026-10"
    assert pairs["Fenster"] == "12M"
    assert pairs["KPIs"] == "Umsatz Total (turnover), Anzahl aktive Konten (active_accounts)"
    assert pairs["Entitäten"] == "Alpine, B2C"
    assert pairs["Ø pro aktives Konto"] == "nein"
    assert pairs["Datenstand (Release)"] == "7"
    assert pairs["Neuester Monat"] == "2026-10"
    assert pairs["Release erstellt"] == "2026-11-03 08:15 UTC"
    exported = dt.datetime.strptime(pairs["Exportiert am"][:16], "%Y-%m-%d %H:%M")
    assert before.replace(tzinfo=None) <= exported <= dt.datetime.now()
    texts = " ".join(str(cell.value) for row in selection.iter_rows() for cell in row)
    assert "Bestandesgrössen werden nicht über die Zeit summiert" in texts
    assert "Anzahl aktive Konten (Wert des letzten Monats)" in texts
    assert "Aktivitätsquote (berechnet als Anzahl aktive Konten / Anzahl gültige Konten" in texts
    assert "„nein“ und sind gelb hinterlegt" in texts
    assert "Abw. VJ und Abw. VJ % stehen nur, wenn beide Fenster vollständig sind" in texts
    assert "vollständig, wenn dieser Monat abgedeckt ist" in texts


def test_selection_defaults_come_from_the_result(sheet: kpisheet.KPISheet, tmp_path: Path) -> None:
    """Without a selection, as-of and window come from the result; KPIs and entities read "alle"."""
    path = tmp_path / "flows.xlsx"
    write_result_xlsx(_hand_made(), path, registry=sheet.registry)
    pairs = _pairs(_read(path)["Auswahl"])
    assert (pairs["Stichtag"], pairs["Fenster"]) == ("2026-10", "3M")
    assert (pairs["KPIs"], pairs["Entitäten"]) == ("alle", "alle")
    assert pairs["Datenstand"] == "ohne Release (Daten direkt gelesen)"
    texts = " ".join(str(v) for v in pairs.values())
    assert "Bestandesgrössen" not in texts  # turnover is a flow: no stock note


@pytest.fixture
def tricky_registry(tmp_path: Path) -> kpisheet.Registry:
    """A registry whose only KPI has a label and group that look like formulas."""
    definitions = tmp_path / "tricky.yaml"
    definitions.write_text(
        "- id: tricky\n"
        '  label: "=1+2"\n'
        '  group: "@Gruppe"\n'
        "  unit: count\n"
        "  time_aggregation: sum\n"
        "  source: {kpi_name: tricky}\n",
        encoding="utf-8",
    )
    return load_kpis([definitions])


FORMULA_LIKE = ["=1+2", "+41 79 123 45 67", "-Minus", "@SUM(A1)", "#N/A"]


def _tricky_result() -> pd.DataFrame:
    return _hand_made(entity=FORMULA_LIKE, kpi=["tricky"] * len(FORMULA_LIKE))


def test_formula_like_text_is_stored_as_text(
    tricky_registry: kpisheet.Registry, tmp_path: Path
) -> None:
    """Text starting with =, +, -, @ (or an error code) arrives as text with a quote prefix, no formula."""
    path = tmp_path / "tricky.xlsx"
    write_result_xlsx(
        _tricky_result(), path, registry=tricky_registry, selection={"entities": ["=1+2"]}
    )
    table = _read(path)["KPIs"]
    entities = _column(table, "Entität")
    assert [cell.value for cell in entities] == FORMULA_LIKE
    assert all(cell.data_type == "s" for cell in entities)
    assert all(cell.quotePrefix for cell in entities[:4])
    labels = _column(table, "KPI-Bezeichnung")
    assert {cell.value for cell in labels} == {"=1+2"}
    assert all(cell.data_type == "s" and cell.quotePrefix for cell in labels)
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.startswith("xl/worksheets/"):
                assert "<f>" not in archive.read(name).decode("utf-8"), name


def test_write_to_a_binary_buffer(result: pd.DataFrame, sheet: kpisheet.KPISheet) -> None:
    """The workbook can be written to an in-memory buffer (the app's download)."""
    buffer = io.BytesIO()
    write_result_xlsx(result, buffer, registry=sheet.registry)
    buffer.seek(0)
    assert _read(buffer)["KPIs"].max_row == len(result) + 1


def test_result_without_a_column_is_rejected(sheet: kpisheet.KPISheet, tmp_path: Path) -> None:
    """A frame that is not a query result is refused with the missing columns named."""
    with pytest.raises(
        QueryError,
        match=re.escape(
            "cannot export a query result: missing column(s) as_of, window, level, months, "
            "complete; found entity, kpi, value, previous_value, change, change_pct, "
            "previous_months, previous_complete"
        ),
    ):
        write_result_xlsx(
            _hand_made().drop(columns=["as_of", "window", "level", "months", "complete"]),
            tmp_path / "bad.xlsx",
            registry=sheet.registry,
        )


def test_cli_xlsx_value_column_sums_like_the_csv(tmp_path: Path) -> None:
    """`kpisheet query --format xlsx` writes the same values as the CSV output, header frozen."""
    args = ["query", "--window", "12M", "--kpi", "turnover", "--kpi", "active_accounts"]
    runner = CliRunner()
    csv_run = runner.invoke(main, args)
    assert csv_run.exit_code == 0, csv_run.output
    from_csv = pd.read_csv(io.StringIO(csv_run.stdout))
    path = tmp_path / "query.xlsx"
    xlsx_run = runner.invoke(main, [*args, "--format", "xlsx", "--output", str(path)])
    assert xlsx_run.exit_code == 0, xlsx_run.output
    workbook = _read(path)
    table = workbook["KPIs"]
    values = [cell.value for cell in _column(table, "Wert")]
    assert math.fsum(v for v in values if v is not None) == pytest.approx(
        math.fsum(from_csv["value"].dropna()), rel=1e-12
    )
    assert table.freeze_panes == "A2"
    assert _pairs(workbook["Auswahl"])["Fenster"] == "12M"


# -- month-on-month change and the series workbook ------------------------------------------


def test_month_on_month_compares_with_the_calendar_month_before() -> None:
    """The change compares with the previous calendar month; a gap gives no change, not a jump."""
    months = pd.period_range("2026-01", "2026-05", freq="M")
    series = pd.DataFrame(
        {
            "month": list(months[[0, 1, 3, 4]]) + list(months[:2]),
            "entity": ["A"] * 4 + ["B"] * 2,
            "kpi": "turnover",
            "value": [100.0, 110.0, 200.0, 0.0, 5.0, 0.0],
        }
    )
    frame = month_on_month(series.iloc[::-1])
    by_key = frame.set_index(["entity", frame["month"].astype(str)])
    assert by_key.loc[("A", "2026-02"), "change"] == 10.0
    assert by_key.loc[("A", "2026-02"), "change_pct"] == pytest.approx(0.1)
    assert np.isnan(by_key.loc[("A", "2026-04"), "change"])  # March is missing
    assert by_key.loc[("A", "2026-05"), "change_pct"] == -1.0
    assert by_key.loc[("B", "2026-02"), "change"] == -5.0  # B never mixes with A
    zero = pd.DataFrame(
        {"month": list(months[:2]), "entity": "C", "kpi": "turnover", "value": [0.0, 3.0]}
    )
    assert np.isnan(month_on_month(zero)["change_pct"].iloc[1])
    assert frame["entity"].tolist() == ["B", "B", "A", "A", "A", "A"]  # series order kept


def test_series_workbook_has_months_values_and_changes(
    sheet: kpisheet.KPISheet, tmp_path: Path
) -> None:
    """The chart download lists 13 months per line with month-on-month change, months as dates."""
    series = sheet.series(["turnover"], ["Alpine", "B2C"])
    path = tmp_path / "series.xlsx"
    write_series_xlsx(
        series, path, registry=sheet.registry, release=RELEASE, selection={"window": "12M"}
    )
    workbook = _read(path)
    assert workbook.sheetnames == ["Verlauf", "Auswahl"]
    table = workbook["Verlauf"]
    assert [cell.value for cell in table[1]] == list(series_headers().values())
    assert table.max_row == 2 * 13 + 1
    months = _column(table, "Monat")
    assert months[0].value == dt.datetime(2025, 10, 1)
    assert months[0].number_format == "mmm yyyy"
    values = [cell.value for cell in _column(table, "Wert")]
    changes = [cell.value for cell in _column(table, "Abw. Vormonat")]
    assert changes[0] is None
    assert changes[1] == pytest.approx(values[1] - values[0])
    assert table.freeze_panes == "A2"
    pairs = _pairs(workbook["Auswahl"])
    assert pairs["Monate"] == "2025-10 bis 2026-10"
    assert "Fenster" not in pairs  # a query's window does not apply to monthly values
    assert pairs["Datenstand (Release)"] == "7"


# -- LibreOffice --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def soffice() -> str:
    """The LibreOffice binary; skipped when absent unless KPISHEET_REQUIRE_SOFFICE=1 (then it fails)."""
    found = shutil.which("soffice") or shutil.which("libreoffice")
    if found is None:
        reason = "LibreOffice (soffice) not installed"
        if os.environ.get("KPISHEET_REQUIRE_SOFFICE") == "1":
            pytest.fail(f"LibreOffice is required (KPISHEET_REQUIRE_SOFFICE=1): {reason}")
        pytest.skip(reason)
    return found


#: LibreOffice CSV filter: comma, double quotes, UTF-8, raw values (not as shown), every sheet.
CSV_FILTER = "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,false,false,false,-1"


def _libreoffice_csv(soffice: str, workbook: Path, tmp_path: Path) -> Iterator[list[list[str]]]:
    out = tmp_path / "csv"
    profile = tmp_path / "lo-profile"
    subprocess.run(
        [
            soffice,
            f"-env:UserInstallation={profile.as_uri()}",
            "--headless",
            "--convert-to",
            CSV_FILTER,
            "--outdir",
            str(out),
            str(workbook),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    for name in ("KPIs", "Auswahl"):
        path = out / f"{workbook.stem}-{name}.csv"
        with path.open(encoding="utf-8", newline="") as handle:
            yield list(csv.reader(handle))


def _number(text: str) -> float:
    """A number as LibreOffice writes it raw; percent-formatted cells keep their % sign."""
    return float(text[:-1]) / 100 if text.endswith("%") else float(text)


@pytest.mark.slow
def test_libreoffice_reads_the_same_values(
    soffice: str, result: pd.DataFrame, sheet: kpisheet.KPISheet, tmp_path: Path
) -> None:
    """LibreOffice opens the workbook; its value column sums to the result's and both sheets are there."""
    path = tmp_path / "result.xlsx"
    write_result_xlsx(result, path, registry=sheet.registry, release=RELEASE)
    table, selection = _libreoffice_csv(soffice, path, tmp_path)
    assert table[0] == HEADERS
    values = [_number(row[HEADERS.index("Wert")]) for row in table[1:]]
    assert values == pytest.approx(result["value"].tolist(), rel=1e-12)
    assert math.fsum(values) == pytest.approx(math.fsum(result["value"].dropna()), rel=1e-12)
    changes = [_number(row[HEADERS.index("Abw. VJ %")]) for row in table[1:]]
    assert changes == pytest.approx(result["change_pct"].tolist(), rel=1e-9)
    rows = {row[0]: row[1:] for row in selection if row}
    assert rows["Datenstand (Release)"][0] == "7"


@pytest.mark.slow
def test_libreoffice_runs_no_formula_from_text(
    soffice: str, tricky_registry: kpisheet.Registry, tmp_path: Path
) -> None:
    """In LibreOffice, "=1+2" stays that text (a formula would read 3)."""
    path = tmp_path / "tricky.xlsx"
    write_result_xlsx(_tricky_result(), path, registry=tricky_registry)
    table, _ = _libreoffice_csv(soffice, path, tmp_path)
    assert [row[HEADERS.index("Entität")] for row in table[1:]] == FORMULA_LIKE
    assert {row[HEADERS.index("KPI-Bezeichnung")] for row in table[1:]} == {"=1+2"}


# -- CSV and JSON: text that starts like a formula ----------------------------------------------

HOSTILE_NAMES = ("=1+2", "+SUM(A1:A9)", "-2+3", "@cmd", "Plain")

HOSTILE_ENTITIES = "total: Kartenwelt AG\nlevels: [mandant]\nentities:\n" + "".join(
    f"  {json.dumps(name)}: {{mandant: {json.dumps('=HYPERLINK(1)')}}}\n" for name in HOSTILE_NAMES
)


def test_neutralise_formulas_prefixes_text_and_leaves_numbers() -> None:
    """Text starting with = + - @ tab or CR gets an apostrophe; numbers and other text stay."""
    frame = pd.DataFrame(
        {
            "entity": pd.Categorical(["=1+2", "Plain", "-x"]),
            "kpi": ["@a", None, "\tb"],
            "value": [-1.5, 2.0, math.nan],
        }
    )
    safe = neutralise_formulas(frame)
    assert safe["entity"].tolist() == ["'=1+2", "Plain", "'-x"]
    assert safe["kpi"][[0, 2]].tolist() == ["'@a", "'\tb"] and pd.isna(safe["kpi"][1])
    assert safe["value"].dtype == np.float64
    np.testing.assert_array_equal(safe["value"], frame["value"])
    assert frame["entity"].tolist() == ["=1+2", "Plain", "-x"]  # the caller's frame is unchanged


@pytest.mark.parametrize("output_format", ["csv", "json"])
def test_query_csv_and_json_neutralise_formula_like_names(
    tmp_path: Path, output_format: str
) -> None:
    """`kpisheet query` CSV and JSON carry names as text a spreadsheet will not run; numbers stay numbers."""
    entities = tmp_path / "entities.yaml"
    entities.write_text(HOSTILE_ENTITIES, encoding="utf-8")
    data = tmp_path / "obs.csv"
    rows = [f"2026-01,turnover,{name},-{i + 1}" for i, name in enumerate(HOSTILE_NAMES)]
    data.write_text("month,kpi,entity,value\n" + "\n".join(rows) + "\n", encoding="utf-8")
    output = tmp_path / f"out.{output_format}"
    result = CliRunner().invoke(
        main,
        [
            "query",
            "--data",
            str(data),
            "--entities",
            str(entities),
            "--kpi",
            "turnover",
            "--level",
            "product",
            "--level",
            "mandant",
            "--format",
            output_format,
            "--output",
            str(output),
        ],
    )
    assert result.exit_code == 0, result.output
    text = output.read_text(encoding="utf-8")
    if output_format == "csv":
        records = list(csv.DictReader(io.StringIO(text)))
    else:
        records = json.loads(text)
    by_entity = {record["entity"]: record for record in records}
    expected = {f"'{name}" if name != "Plain" else name for name in HOSTILE_NAMES}
    assert set(by_entity) == expected | {"'=HYPERLINK(1)"}
    assert float(by_entity["'=1+2"]["value"]) == -1.0
    assert float(by_entity["'=HYPERLINK(1)"]["value"]) == -15.0
    if output_format == "json":
        assert isinstance(by_entity["Plain"]["value"], float)
