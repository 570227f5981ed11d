"""Tests of kpisheet_ui.explain_view: the "Warum?" state driven in plain pytest (the browser test
in tests/test_ui_browser.py drives the same through the page)."""

from __future__ import annotations

import io

import openpyxl
import pandas as pd
import pytest

import kpisheet
from kpisheet_ui.explain_view import (
    CONTRIBUTION_COLUMN,
    MEMBER_COLUMN,
    MIX_COLUMN,
    RATE_COLUMN,
    ExplainPanel,
    ExplainState,
)
from kpisheet_ui.state import SheetState


@pytest.fixture(scope="module")
def sheet() -> kpisheet.KPISheet:
    return kpisheet.open()


@pytest.fixture
def state(sheet: kpisheet.KPISheet) -> SheetState:
    return SheetState(sheet, user="anna")


def test_choices_are_the_tables_groups_and_explainable_kpis(state: SheetState) -> None:
    """The groups offered are the table's group rows (no products); the KPIs those shown."""
    explain = ExplainState(state)
    state.param.update(grouping="sector:B2C", kpi_group="Umsatz")
    groups = list(explain.param.entity.objects.values())
    assert groups[:2] == ["B2C", "Alpine"] and "Alpine Visa Gold" not in groups
    assert list(explain.param.entity.names)[:2] == ["B2C (Sektor)", "Alpine (Mandant)"]
    assert list(explain.param.kpi.objects.values()) == [
        "turnover",
        "turnover_domestic",
        "turnover_abroad",
        "turnover_per_transaction",
        "turnover_abroad_share",
    ]
    assert explain.entity == "B2C" and explain.kpi == "turnover"


def test_explanation_follows_the_table(state: SheetState, sheet: kpisheet.KPISheet) -> None:
    """The explanation is sheet.explain's for the table's month and window, and follows a new
    window; rows of a ratio carry rate and mix effects."""
    explain = ExplainState(state)
    explain.param.update(entity="B2C", kpi="turnover_per_transaction")
    explain.explain()
    expected = sheet.explain("turnover_per_transaction", "B2C")
    pd.testing.assert_frame_equal(explain.explanation.members, expected.members)
    table = explain.table()
    assert list(table[MEMBER_COLUMN]) == list(expected.members["member"])
    assert {RATE_COLUMN, MIX_COLUMN} <= set(table.columns)
    state.window = "12M"
    assert explain.explanation.window == "12M"
    pd.testing.assert_frame_equal(
        explain.explanation.members,
        sheet.explain("turnover_per_transaction", "B2C", window="12M").members,
    )


def test_row_choice_and_refusals(state: SheetState) -> None:
    """A click on a group row explains it; a product row or a KPI without a split says why."""
    explain = ExplainState(state)
    explain.choose("Alpine", "mandant", "active_accounts")
    assert explain.explanation.entity == "Alpine" and explain.message == ""
    explain.choose("Alpine Visa Gold", "product", "turnover")
    assert explain.explanation is None
    assert explain.message == (
        "Alpine Visa Gold ist ein Produkt: erklärt werden Gruppen (Total, Sektor, Mandant …)."
    )


def test_downloads_read_back(state: SheetState) -> None:
    """The XLSX has the members and the Auswahl sheet; the PNG is a PNG; usage is logged."""
    explain = ExplainState(state)
    explain.choose("B2C", "sector", "turnover")
    workbook = openpyxl.load_workbook(io.BytesIO(explain.xlsx().getvalue()))
    rows = list(workbook["Warum"].iter_rows(values_only=True))
    members = explain.explanation.members
    assert [row[rows[0].index("Mitglied")] for row in rows[1:]] == list(members["member"])
    assert explain.png().getvalue().startswith(b"\x89PNG\r\n\x1a\n")
    assert explain.filename("png") == f"kpisheet_{state.as_of}_1M_warum_turnover.png"


def test_panel_shows_names_as_plain_text(state: SheetState) -> None:
    """No cell of the members' table is rendered as HTML, and the status is a plain-text pane."""
    explain = ExplainState(state)
    panel = ExplainPanel(explain, guard=lambda make: make)
    explain.choose("B2C", "sector", "turnover")
    assert panel.body.visible and panel.table.formatters == {}
    assert panel.table.value[CONTRIBUTION_COLUMN].iloc[0].startswith("+CHF ")
    assert panel.status.object.startswith("Umsatz Total von B2C")
    explain.param.update(explanation=None, message="<img src=x onerror=alert(1)>")
    assert panel.message.object == "&lt;img src=x onerror=alert(1)&gt;"
