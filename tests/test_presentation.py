"""Tests of kpisheet.presentation: German month names and why a comparison is not shown."""

from __future__ import annotations

import pandas as pd
import pytest

import kpisheet
from kpisheet.demo import DEMO_ENTITIES
from kpisheet.hierarchy import load_hierarchy
from kpisheet.presentation import (
    comparable,
    incomplete_reasons,
    listing,
    members_text,
    month_long,
    month_short,
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
