"""Tests of per-user entity scopes: what a scoped user's state offers, queries and downloads."""

from __future__ import annotations

import io
import re

import openpyxl
import pytest

import kpisheet
from kpisheet_ui.choices import ALL
from kpisheet_ui.scopes import ScopedSheetState, parse_scope, unknown_scopes, visible_entities
from kpisheet_ui.table import BY_KPI
from kpisheet_ui.users import AuthError

ALPINE = [
    "Alpine",
    "Alpine Mastercard Corporate",
    "Alpine Visa Classic",
    "Alpine Visa Gold",
    "Alpine Visa Platinum",
    "Alpine Visa Prepaid",
    "Alpine Visa Student Prepaid",
]


@pytest.fixture(scope="module")
def sheet() -> kpisheet.KPISheet:
    return kpisheet.open()


def _entities_of_workbook(data: io.BytesIO, sheet_name: str) -> set[str]:
    rows = list(openpyxl.load_workbook(data)[sheet_name].iter_rows(values_only=True))
    column = rows[0].index("Entität") if "Entität" in rows[0] else rows[0].index("entity")
    return {row[column] for row in rows[1:]}


def test_visible_entities_are_the_products_and_groups_wholly_inside(sheet) -> None:
    """A mandant scope shows the mandant and its products; no sector, view group or total."""
    assert sorted(visible_entities(sheet.hierarchy, ["mandant=Alpine"])) == ALPINE
    b2c = visible_entities(sheet.hierarchy, ["sector=B2C"])
    assert "B2C" in b2c and "Alpine" in b2c and "Talwind" not in b2c
    assert "Kartenwelt AG" not in b2c and "CC" not in b2c
    everything = visible_entities(sheet.hierarchy, ["sector=B2C", "sector=B2B2C"])
    assert "Kartenwelt AG" in everything and "CC" in everything


def test_scopes_add_up(sheet) -> None:
    """Two scopes show the union of their entities."""
    both = visible_entities(sheet.hierarchy, ["mandant=Alpine", "mandant=Talwind"])
    assert {"Alpine", "Talwind", "Talwind Visa Gold"} <= both
    assert "B2B2C" not in both and "Seeland" not in both


def test_unknown_scope_named_and_malformed_scope_refused(sheet) -> None:
    """A scope naming nothing is reported; a scope without '=' is refused."""
    assert unknown_scopes(sheet.hierarchy, ["mandant=Alpine", "mandant=Atlantis"]) == [
        "mandant=Atlantis"
    ]
    assert visible_entities(sheet.hierarchy, ["mandant=Atlantis"]) == frozenset()
    with pytest.raises(AuthError, match=re.escape("scope 'mandant' is not LEVEL=NAME")):
        parse_scope("mandant")


def test_scoped_state_offers_and_queries_only_visible_entities(sheet) -> None:
    """Options, the table (both displays), the chart series and both downloads hold only the scope."""
    state = ScopedSheetState(sheet, scopes=["mandant=Alpine"], user="beat")
    assert state.grouping_options() == {"Alle Entitäten": ALL, "Mandant: Alpine": "mandant:Alpine"}
    assert sorted(state.param.entities.objects.values()) == ALPINE
    assert sorted(state.result["entity"].unique()) == ALPINE
    state.display = BY_KPI
    assert set(state.table()["Entität"]) == set(ALPINE)
    assert _entities_of_workbook(state.table_xlsx(), "KPIs") == set(ALPINE)
    state.param.update(kpis=["turnover"], entities=["Alpine", "Alpine Visa Gold"])
    assert set(state.series()["entity"]) == {"Alpine", "Alpine Visa Gold"}
    series = openpyxl.load_workbook(state.series_xlsx())["Verlauf"]
    names = {cell for row in series.iter_rows(values_only=True) for cell in row}
    assert "Alpine Visa Gold" in names and "Kartenwelt AG" not in names


def test_out_of_scope_selection_is_refused(sheet) -> None:
    """Entities outside the scope set by hand are dropped; an outside grouping is not accepted."""
    state = ScopedSheetState(sheet, scopes=["mandant=Alpine"], user="beat")
    state.entities = ["Kartenwelt AG", "Talwind", "Alpine"]
    assert state.entities == ["Alpine"]
    assert list(state.result["entity"].unique()) == ["Alpine"]
    state.entities = ["Kartenwelt AG"]
    assert state.entities == []
    assert "Kartenwelt AG" not in set(state.result["entity"])
    with pytest.raises(ValueError, match=re.escape("does not accept 'total:Kartenwelt AG'")):
        state.grouping = "total:Kartenwelt AG"
    assert sorted(state.query_arguments()["entities"]) == ALPINE
