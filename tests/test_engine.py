"""Unit tests of the engine (docs/analysts.md) on small tables whose results are computed by hand."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kpisheet.sheet
from kpisheet.errors import QueryError
from tests.reference import COLUMNS

KPIS = """\
- {id: flow, label: Umsatz, group: Umsatz, unit: currency, time_aggregation: sum, average_per: accounts}
- {id: trx, label: Anzahl Trx, group: Trx, unit: count, time_aggregation: sum, average_per: accounts}
- {id: accounts, label: Aktive Konten, group: Konten, unit: count, time_aggregation: last}
- {id: opening, label: Eröffnung, group: Konten, unit: count, time_aggregation: first}
- {id: balance, label: Saldo, group: Saldo, unit: currency, time_aggregation: mean}
- {id: low, label: Tiefst, group: Saldo, unit: currency, time_aggregation: min}
- {id: high, label: Höchst, group: Saldo, unit: currency, time_aggregation: max}
- {id: leaf_only, label: Nur Produkt, group: Saldo, unit: count, time_aggregation: sum, entity_aggregation: none}
- {id: ticket, label: Umsatz pro Trx, group: Umsatz, unit: currency, formula: flow / trx}
"""

ENTITIES = """\
total: Kartenwelt
levels: [sector, mandant]
entities:
  Alpine Gold:    {mandant: Alpine, sector: B2C, cardprofile: CC}
  Alpine Prepaid: {mandant: Alpine, sector: B2C, cardprofile: PP}
  Borealis Card:  {mandant: Borealis, sector: B2B2C, cardprofile: CC}
"""

GOLD, PREPAID, BOREALIS = "Alpine Gold", "Alpine Prepaid", "Borealis Card"

Row = tuple[str, str, str, float]
SheetOf = Callable[[list[Row]], kpisheet.sheet.KPISheet]


@pytest.fixture
def sheet_of(tmp_path: Path) -> SheetOf:
    """Build a sheet of the KPIs and hierarchy above from (month, kpi, entity, value) rows."""
    definitions = tmp_path / "kpis.yaml"
    entities = tmp_path / "entities.yaml"
    definitions.write_text(KPIS, encoding="utf-8")
    entities.write_text(ENTITIES, encoding="utf-8")

    def build(rows: list[Row]) -> kpisheet.sheet.KPISheet:
        frame = pd.DataFrame(rows, columns=["month", "kpi", "entity", "value"])
        return kpisheet.sheet.open(frame, definitions=definitions, entities=entities)

    return build


def cell(result: pd.DataFrame, entity: str, kpi: str, column: str = "value") -> object:
    """The one value of a column for (entity, KPI); fails when there is no such row."""
    rows = result[(result["entity"] == entity) & (result["kpi"] == kpi)]
    assert len(rows) == 1, f"expected one row for {entity}/{kpi}, found {len(rows)}"
    return rows[column].iloc[0]


def has_row(result: pd.DataFrame, entity: str, kpi: str) -> bool:
    return bool(((result["entity"] == entity) & (result["kpi"] == kpi)).any())


def same(actual: object, expected: float) -> bool:
    if math.isnan(expected):
        return math.isnan(actual)  # type: ignore[arg-type]
    return math.isclose(actual, expected, rel_tol=1e-12)  # type: ignore[arg-type]


# --- time aggregation ------------------------------------------------------------------------

# One series with gaps (2022-08, 2022-12, 2023-03 missing), starting in 2022-07, for every rule.
SERIES = {
    "2022-07": 3,
    "2022-09": 5,
    "2022-10": 0,
    "2022-11": 7,
    "2023-01": 2,
    "2023-02": 6,
    "2023-04": 4,
    "2023-05": 1,
    "2023-06": 9,
}
RULE_KPIS = {
    "sum": "flow",
    "last": "accounts",
    "first": "opening",
    "mean": "balance",
    "min": "low",
    "max": "high",
}
NAN = math.nan

# (as_of, window): expected value per rule, months with a value, and whether every month of the
# window has a value (complete for sum, mean, min and max) — computed by hand. A one-leaf series is
# covered exactly in its months with a value, so last (first) is complete when the window's final
# (first) month has one.
WINDOW_CASES = {
    ("2023-06", "3M"): (dict(sum=14, last=9, first=4, mean=14 / 3, min=1, max=9), 3, True),
    ("2023-06", "6M"): (dict(sum=22, last=9, first=2, mean=22 / 5, min=1, max=9), 5, False),
    ("2023-06", "12M"): (dict(sum=37, last=9, first=3, mean=37 / 9, min=0, max=9), 9, False),
    ("2023-06", "YTD"): (dict(sum=22, last=9, first=2, mean=22 / 5, min=1, max=9), 5, False),
    ("2023-03", "3M"): (dict(sum=8, last=NAN, first=2, mean=4, min=2, max=6), 2, False),
    ("2023-03", "6M"): (dict(sum=15, last=NAN, first=0, mean=15 / 4, min=0, max=7), 4, False),
    ("2023-03", "12M"): (dict(sum=23, last=NAN, first=NAN, mean=23 / 6, min=0, max=7), 6, False),
    ("2023-03", "YTD"): (dict(sum=8, last=NAN, first=2, mean=4, min=2, max=6), 2, False),
    ("2022-12", "3M"): (dict(sum=7, last=NAN, first=0, mean=7 / 2, min=0, max=7), 2, False),
    ("2022-12", "YTD"): (dict(sum=15, last=NAN, first=NAN, mean=15 / 4, min=0, max=7), 4, False),
    ("2023-01", "YTD"): (dict(sum=2, last=2, first=2, mean=2, min=2, max=2), 1, True),
    ("2023-05", "1M"): (dict(sum=1, last=1, first=1, mean=1, min=1, max=1), 1, True),
}


@pytest.fixture
def series_sheet(sheet_of: SheetOf) -> kpisheet.sheet.KPISheet:
    return sheet_of(
        [(month, kpi, GOLD, value) for kpi in RULE_KPIS.values() for month, value in SERIES.items()]
    )


@pytest.mark.parametrize(("as_of", "window"), list(WINDOW_CASES))
def test_time_aggregation_of_every_rule_over_windows_with_gaps(
    series_sheet: kpisheet.sheet.KPISheet, as_of: str, window: str
) -> None:
    """Each rule combines only the months of the calendar window that have a value; a gap never
    pulls in an older month; last/first are missing when the window's final/first month is, and
    complete exactly when that month is covered (the other rules: when every month is)."""
    values, months, every_month = WINDOW_CASES[(as_of, window)]
    result = series_sheet.query(as_of=as_of, window=window, levels="product")
    for rule, kpi in RULE_KPIS.items():
        assert same(cell(result, GOLD, kpi), values[rule]), (rule, cell(result, GOLD, kpi))
        assert cell(result, GOLD, kpi, "months") == months
        complete = not math.isnan(values[rule]) if rule in ("last", "first") else every_month
        assert cell(result, GOLD, kpi, "complete") == complete, rule


def test_a_month_without_any_value_gives_no_row(series_sheet: kpisheet.sheet.KPISheet) -> None:
    """A 1M query of a month the series misses (and without a previous year) has no row for it."""
    result = series_sheet.query(as_of="2023-03", window="1M")
    assert result.empty
    assert list(result.columns) == COLUMNS


def test_as_of_defaults_to_the_newest_month_and_accepts_month_forms(
    series_sheet: kpisheet.sheet.KPISheet,
) -> None:
    """Without as_of the newest month is used; YYYYMM, a Period and a date name the same month."""
    default = series_sheet.query(window="3M")
    assert set(default["as_of"]) == {"2023-06"}
    for as_of in ("202306", pd.Period("2023-06", "M"), date(2023, 6, 30), "2023-06"):
        pd.testing.assert_frame_equal(series_sheet.query(as_of=as_of, window="3M"), default)


# --- group roll-up ---------------------------------------------------------------------------


@pytest.fixture
def groups_sheet(sheet_of: SheetOf) -> kpisheet.sheet.KPISheet:
    return sheet_of(
        [
            ("2023-01", "flow", GOLD, 10),
            ("2023-03", "flow", GOLD, 5),
            ("2023-01", "flow", PREPAID, 1),
            ("2023-03", "flow", BOREALIS, 7),
            ("2023-02", "accounts", GOLD, 100),
            ("2023-03", "accounts", GOLD, 120),
            ("2023-02", "accounts", PREPAID, 50),
            ("2023-01", "leaf_only", GOLD, 4),
            ("2023-01", "leaf_only", BOREALIS, 6),
        ]
    )


def test_groups_sum_their_leaves_month_by_month(groups_sheet: kpisheet.sheet.KPISheet) -> None:
    """A group's month is the sum of the leaves with a value; missing when no leaf has one."""
    entities = ["Alpine", "B2C", "Borealis", "B2B2C", "Kartenwelt", "CC", "PP"]
    series = groups_sheet.series("flow", entities, as_of="2023-03", months=3)
    table = series.pivot(index="entity", columns="month", values="value")
    expected = {
        "Alpine": [11, NAN, 5],
        "B2C": [11, NAN, 5],
        "Borealis": [NAN, NAN, 7],
        "B2B2C": [NAN, NAN, 7],
        "Kartenwelt": [11, NAN, 12],
        "CC": [10, NAN, 12],
        "PP": [1, NAN, NAN],
    }
    for entity, values in expected.items():
        got = table.loc[entity].to_numpy()
        np.testing.assert_array_equal(got, np.array(values, dtype=float), err_msg=entity)


def test_group_windows_aggregate_the_rolled_up_months(
    groups_sheet: kpisheet.sheet.KPISheet,
) -> None:
    """Windows over groups use the group's monthly values: a stock's last month sums only the
    leaves reporting that month, and months counts the group's months with a value. Prepaid's
    accounts end in February, so Alpine's March is covered and its 3M stock complete."""
    result = groups_sheet.query(
        as_of="2023-03", window="3M", levels=["total", "mandant", "cardprofile"]
    )
    assert cell(result, "Alpine", "flow") == 16
    assert cell(result, "Alpine", "flow", "months") == 2
    assert cell(result, "Kartenwelt", "flow") == 23
    assert cell(result, "Borealis", "flow", "months") == 1
    assert cell(result, "CC", "flow") == 22
    assert cell(result, "PP", "flow") == 1
    assert cell(result, "Alpine", "accounts") == 120  # 2023-03: only Alpine Gold reports
    assert cell(result, "Alpine", "accounts", "months") == 2
    assert cell(result, "Alpine", "accounts", "complete")
    one = groups_sheet.query(as_of="2023-02", window="1M")
    assert not (one["kpi"] == "flow").any()  # no leaf has a flow in 2023-02, so no group has
    assert cell(one, "Alpine", "accounts") == 150


def test_entity_aggregation_none_has_no_group_rows(groups_sheet: kpisheet.sheet.KPISheet) -> None:
    """A KPI with entity_aggregation none has values for products only, never for groups."""
    result = groups_sheet.query(
        as_of="2023-01", window="1M", levels=[*groups_sheet.levels, "cardprofile"]
    )
    rows = result[result["kpi"] == "leaf_only"]
    assert list(rows["entity"]) == [GOLD, BOREALIS]
    assert set(rows["level"]) == {"product"}
    series = groups_sheet.series("leaf_only", ["Alpine", GOLD], as_of="2023-01", months=1)
    assert list(series["value"].isna()) == [True, False]


# --- derived KPIs ----------------------------------------------------------------------------


@pytest.fixture
def derived_sheet(sheet_of: SheetOf) -> kpisheet.sheet.KPISheet:
    return sheet_of(
        [
            ("2023-01", "flow", GOLD, 10),
            ("2023-02", "flow", GOLD, 30),
            ("2023-01", "trx", GOLD, 1),
            ("2023-02", "trx", GOLD, 10),
            ("2023-01", "flow", PREPAID, 5),
            ("2023-02", "flow", PREPAID, 8),
            ("2023-01", "trx", PREPAID, 0),
            ("2023-01", "flow", BOREALIS, 0),
            ("2023-01", "trx", BOREALIS, 0),
        ]
    )


def test_derived_kpis_are_computed_after_aggregation(
    derived_sheet: kpisheet.sheet.KPISheet,
) -> None:
    """A ratio over a window is the ratio of the window sums (40 / 11), not the mean of the
    monthly ratios (6.5); for groups it is the ratio of the rolled-up sums."""
    result = derived_sheet.query(as_of="2023-02", window="YTD")
    assert cell(result, GOLD, "ticket") == pytest.approx(40 / 11)
    assert cell(result, GOLD, "ticket", "months") == 2
    assert cell(result, GOLD, "ticket", "complete")
    assert cell(result, "Alpine", "ticket") == pytest.approx((40 + 13) / 11)
    january = derived_sheet.query(as_of="2023-01", window="1M")
    assert cell(january, "Alpine", "ticket") == 15  # (10 + 5) / (1 + 0)
    assert cell(january, "Kartenwelt", "ticket") == 15  # (10 + 5 + 0) / (1 + 0 + 0)


def test_derived_kpi_is_complete_only_if_all_components_are(
    derived_sheet: kpisheet.sheet.KPISheet,
) -> None:
    """Prepaid has flows in both months but transactions in one: its ticket is incomplete."""
    result = derived_sheet.query(as_of="2023-02", window="YTD")
    assert cell(result, PREPAID, "flow", "complete")
    assert cell(result, PREPAID, "ticket", "months") == 1
    assert not cell(result, PREPAID, "ticket", "complete")


def test_division_by_zero_gives_a_missing_value_not_inf(
    derived_sheet: kpisheet.sheet.KPISheet,
) -> None:
    """5 / 0 and 0 / 0 give NaN (a missing value), never inf."""
    result = derived_sheet.query(as_of="2023-01", window="1M")
    assert math.isnan(cell(result, PREPAID, "ticket"))
    assert math.isnan(cell(result, BOREALIS, "ticket"))
    assert not np.isinf(result[["value", "previous_value", "change", "change_pct"]]).any().any()


# --- per active account ----------------------------------------------------------------------


@pytest.fixture
def account_sheet(sheet_of: SheetOf) -> kpisheet.sheet.KPISheet:
    return sheet_of(
        [
            ("2022-03", "flow", GOLD, 40),
            ("2022-03", "accounts", GOLD, 8),
            ("2023-01", "flow", GOLD, 100),
            ("2023-02", "flow", GOLD, 200),
            ("2023-03", "flow", GOLD, 300),
            ("2023-01", "accounts", GOLD, 10),
            ("2023-03", "accounts", GOLD, 30),
            ("2023-03", "flow", PREPAID, 50),
            ("2023-03", "accounts", PREPAID, 0),
            ("2023-03", "trx", PREPAID, 2),
        ]
    )


def test_per_account_divides_by_the_window_mean_of_active_accounts(
    account_sheet: kpisheet.sheet.KPISheet,
) -> None:
    """Per account: the window value ÷ the mean of the months of the window that have active
    accounts; groups use their rolled-up accounts; months stay those of the value, and the value
    is complete only when the accounts are covered every month (February lacks them)."""
    result = account_sheet.query(as_of="2023-03", window="3M", per_account=True)
    assert cell(result, GOLD, "flow") == 30  # 600 / mean(10, 30)
    assert cell(result, GOLD, "flow", "months") == 3
    assert not cell(result, GOLD, "flow", "complete")
    assert cell(account_sheet.query(as_of="2023-03", window="3M"), GOLD, "flow", "complete")
    assert cell(result, "Alpine", "flow") == 32.5  # (600 + 50) / mean(10, 30 + 0)
    one = account_sheet.query(as_of="2023-03", window="1M", per_account=True)
    assert cell(one, GOLD, "flow") == 10  # 300 / 30
    assert cell(one, GOLD, "flow", "previous_value") == 5  # 40 / 8
    assert cell(one, GOLD, "flow", "change") == 5
    assert cell(one, GOLD, "flow", "change_pct") == 1.0
    february = account_sheet.query(as_of="2023-02", window="1M", per_account=True)
    assert math.isnan(cell(february, GOLD, "flow"))  # no accounts in the window


def test_per_account_is_missing_without_average_per_or_with_zero_accounts(
    account_sheet: kpisheet.sheet.KPISheet,
) -> None:
    """KPIs without average_per (accounts, ticket) have no per-account value; zero accounts give
    a missing value, not inf."""
    result = account_sheet.query(as_of="2023-03", window="1M", per_account=True)
    assert math.isnan(cell(result, GOLD, "accounts"))
    assert math.isnan(cell(result, PREPAID, "flow"))  # 50 / 0
    assert math.isnan(cell(result, PREPAID, "trx"))  # 2 / 0
    assert math.isnan(cell(result, PREPAID, "ticket"))
    plain = account_sheet.query(as_of="2023-03", window="1M")
    assert cell(plain, GOLD, "accounts") == 30


# --- previous year ---------------------------------------------------------------------------


@pytest.fixture
def year_sheet(sheet_of: SheetOf) -> kpisheet.sheet.KPISheet:
    return sheet_of(
        [
            ("2022-01", "flow", GOLD, 50),
            ("2023-01", "flow", GOLD, 60),
            ("2022-01", "flow", PREPAID, 0),
            ("2023-01", "flow", PREPAID, 5),
            ("2023-01", "flow", BOREALIS, 7),
            ("2022-01", "balance", GOLD, -20),
            ("2023-01", "balance", GOLD, -10),
            ("2022-01", "trx", BOREALIS, 3),
            ("2022-06", "accounts", GOLD, 9),
        ]
    )


def test_previous_year_change_and_change_pct(year_sheet: kpisheet.sheet.KPISheet) -> None:
    """previous_value is the window twelve months earlier; change is the difference and
    change_pct the change as a fraction of |previous_value|."""
    result = year_sheet.query(as_of="2023-01", window="1M")
    assert cell(result, GOLD, "flow", "previous_value") == 50
    assert cell(result, GOLD, "flow", "change") == 10
    assert cell(result, GOLD, "flow", "change_pct") == pytest.approx(0.2)
    assert cell(result, GOLD, "balance", "change") == 10  # -10 - (-20)
    assert cell(result, GOLD, "balance", "change_pct") == pytest.approx(0.5)  # 10 / |-20|
    assert cell(result, "Kartenwelt", "flow", "change") == 22  # 72 - 50
    assert cell(result, "Kartenwelt", "flow", "change_pct") == pytest.approx(0.44)


def test_change_pct_is_missing_when_previous_is_zero_or_missing(
    year_sheet: kpisheet.sheet.KPISheet,
) -> None:
    """A zero previous value gives a change but no change_pct; a missing one gives neither."""
    result = year_sheet.query(as_of="2023-01", window="1M")
    assert cell(result, PREPAID, "flow", "change") == 5
    assert math.isnan(cell(result, PREPAID, "flow", "change_pct"))
    assert math.isnan(cell(result, BOREALIS, "flow", "previous_value"))
    assert math.isnan(cell(result, BOREALIS, "flow", "change"))
    assert math.isnan(cell(result, BOREALIS, "flow", "change_pct"))


def test_rows_exist_iff_a_value_in_the_current_or_previous_window(
    year_sheet: kpisheet.sheet.KPISheet,
) -> None:
    """A series with a value only last year has a row (value missing, months 0); a series with
    values in neither window has none."""
    result = year_sheet.query(as_of="2023-01", window="1M")
    assert math.isnan(cell(result, BOREALIS, "trx"))
    assert cell(result, BOREALIS, "trx", "previous_value") == 3
    assert cell(result, BOREALIS, "trx", "months") == 0
    assert not cell(result, BOREALIS, "trx", "complete")
    assert not has_row(result, PREPAID, "trx")
    assert not has_row(result, GOLD, "accounts")  # its only value (2022-06) is in neither window
    assert has_row(year_sheet.query(as_of="2023-01", window="12M"), GOLD, "accounts")


# --- coverage: complete and previous_complete ------------------------------------------------


def _months(first: str, last: str, *, without: tuple[str, ...] = ()) -> list[str]:
    return [
        str(month) for month in pd.period_range(first, last, freq="M") if str(month) not in without
    ]


@pytest.fixture
def coverage_sheet(sheet_of: SheetOf) -> kpisheet.sheet.KPISheet:
    """Gold lacks its flow in 2022-05 and its accounts in 2023-02; Borealis launches its flow in
    2022-09 and stops reporting accounts after 2022-12; Prepaid reports everything."""
    rows: list[Row] = []
    rows += [(m, "flow", GOLD, 10) for m in _months("2022-01", "2023-06", without=("2022-05",))]
    rows += [(m, "flow", PREPAID, 1) for m in _months("2022-01", "2023-06")]
    rows += [(m, "flow", BOREALIS, 100) for m in _months("2022-09", "2023-06")]
    rows += [(m, "accounts", GOLD, 5) for m in _months("2022-01", "2023-06", without=("2023-02",))]
    rows += [(m, "accounts", PREPAID, 2) for m in _months("2022-01", "2023-06")]
    rows += [(m, "accounts", BOREALIS, 50) for m in _months("2022-01", "2022-12")]
    return sheet_of(rows)


def test_a_member_gap_makes_every_ancestor_incomplete_in_that_month_only(
    coverage_sheet: kpisheet.sheet.KPISheet,
) -> None:
    """Gold's missing May 2022 leaves Alpine, B2C and the total with a (too small) value in every
    window containing that month, all marked incomplete; windows without May 2022 are complete."""
    july = coverage_sheet.query(as_of="2022-07", window="3M", kpis="flow")
    assert cell(july, "Alpine", "flow") == 1 + 11 + 11
    assert cell(july, "Alpine", "flow", "months") == 3
    for entity in (GOLD, "Alpine", "B2C", "Kartenwelt"):
        assert not cell(july, entity, "flow", "complete"), entity
    assert cell(july, PREPAID, "flow", "complete")
    august = coverage_sheet.query(as_of="2022-08", window="3M", kpis="flow")
    for entity in ("Alpine", "B2C", "Kartenwelt"):
        assert cell(august, entity, "flow", "complete"), entity


def test_the_previous_window_has_its_own_flags(coverage_sheet: kpisheet.sheet.KPISheet) -> None:
    """At 2023-06 the 3M window is covered, but the previous one (2022-04..06) holds Gold's gap:
    previous_complete is false for Gold and its ancestors, although all three months have values."""
    result = coverage_sheet.query(as_of="2023-06", window="3M", kpis="flow")
    for entity in (GOLD, "Alpine", "B2C", "Kartenwelt"):
        assert cell(result, entity, "flow", "complete"), entity
        assert not cell(result, entity, "flow", "previous_complete"), entity
    assert cell(result, "Alpine", "flow", "previous_months") == 3
    assert cell(result, "Alpine", "flow", "previous_value") == 11 + 1 + 11
    assert cell(result, PREPAID, "flow", "previous_complete")
    # Borealis had not launched: no previous value, previous window not complete
    assert cell(result, BOREALIS, "flow", "previous_months") == 0
    assert not cell(result, BOREALIS, "flow", "previous_complete")


def test_launches_and_discontinuations_never_make_a_group_incomplete(
    coverage_sheet: kpisheet.sheet.KPISheet,
) -> None:
    """Before Borealis's launch (2022-09) and after its accounts stop (2022-12) it is not
    expected, so the total stays covered; Borealis's own window before its launch is not."""
    october = coverage_sheet.query(as_of="2022-10", window="3M", kpis="flow")
    assert cell(october, "Kartenwelt", "flow", "complete")  # 2022-08 has no Borealis: not expected
    assert cell(october, BOREALIS, "flow", "months") == 2
    assert not cell(october, BOREALIS, "flow", "complete")
    june = coverage_sheet.query(as_of="2023-06", window="1M", kpis="accounts")
    assert cell(june, "Kartenwelt", "accounts") == 5 + 2
    assert cell(june, "Kartenwelt", "accounts", "complete")


def test_a_stock_is_complete_when_its_final_month_is_covered(
    coverage_sheet: kpisheet.sheet.KPISheet,
) -> None:
    """Gold's accounts lack February 2023: the 12M stock at 2023-06 (June's value) is complete,
    the 1M window of February is not, nor is a flow over the same 12 months."""
    result = coverage_sheet.query(as_of="2023-06", window="12M", kpis=["flow", "accounts"])
    assert cell(result, "Alpine", "accounts") == 7
    assert cell(result, "Alpine", "accounts", "months") == 12
    assert cell(result, "Alpine", "accounts", "complete")
    assert cell(result, GOLD, "accounts", "months") == 11
    assert cell(result, GOLD, "accounts", "complete")
    february = coverage_sheet.query(as_of="2023-02", window="1M", kpis="accounts")
    assert cell(february, "Alpine", "accounts") == 2
    assert not cell(february, "Alpine", "accounts", "complete")


def test_windows_reaching_before_the_data_are_never_complete(
    coverage_sheet: kpisheet.sheet.KPISheet,
) -> None:
    """In the first year of a sheet no comparison is complete: the previous window lies (partly)
    before the first month, and so does a 12M window ending before month twelve."""
    early = coverage_sheet.query(as_of="2022-06", window="12M", kpis="flow")
    assert cell(early, PREPAID, "flow", "months") == 6
    assert not cell(early, PREPAID, "flow", "complete")
    march = coverage_sheet.query(as_of="2023-03", window="12M", kpis="flow")
    assert cell(march, PREPAID, "flow", "previous_months") == 3
    assert not cell(march, PREPAID, "flow", "previous_complete")
    assert cell(march, PREPAID, "flow", "complete")


def test_a_month_missing_for_every_product_leaves_the_total_incomplete(
    sheet_of: SheetOf,
) -> None:
    """When nobody reports 2022-05, the total's previous 3M window has two months with values and
    is marked incomplete, so its change (against two months) is not called complete."""
    months = _months("2022-01", "2023-06", without=("2022-05",))
    sheet = sheet_of([(m, "flow", e, 10) for m in months for e in (GOLD, PREPAID, BOREALIS)])
    result = sheet.query(as_of="2023-06", window="3M", kpis="flow", entities="Kartenwelt")
    assert cell(result, "Kartenwelt", "flow", "previous_value") == 60
    assert cell(result, "Kartenwelt", "flow", "previous_months") == 2
    assert cell(result, "Kartenwelt", "flow", "complete")
    assert not cell(result, "Kartenwelt", "flow", "previous_complete")


def test_per_account_of_a_group_needs_every_members_accounts(
    coverage_sheet: kpisheet.sheet.KPISheet,
) -> None:
    """In February 2023 Gold reports its flow but not its accounts: Alpine's flow per account is
    inflated (11 / 2 instead of 11 / 7) and marked incomplete, while its flow is complete."""
    result = coverage_sheet.query(as_of="2023-02", window="1M", kpis="flow", per_account=True)
    assert cell(result, "Alpine", "flow") == 11 / 2
    assert not cell(result, "Alpine", "flow", "complete")
    assert cell(result, PREPAID, "flow", "complete")
    plain = coverage_sheet.query(as_of="2023-02", window="1M", kpis="flow")
    assert cell(plain, "Alpine", "flow", "complete")


def test_previous_flags_equal_the_current_flags_twelve_months_earlier(
    coverage_sheet: kpisheet.sheet.KPISheet,
) -> None:
    """previous_months and previous_complete of a query are months and complete of the same query
    at as_of − 12, row by row."""
    for window in ("1M", "3M", "12M", "YTD"):
        now = coverage_sheet.query(as_of="2023-06", window=window)
        before = coverage_sheet.query(as_of="2022-06", window=window)
        merged = now.merge(before, on=["entity", "kpi"], suffixes=("", "_before"))
        assert len(merged) > 0
        assert list(merged["previous_months"]) == list(merged["months_before"]), window
        assert list(merged["previous_complete"]) == list(merged["complete_before"]), window


def test_coverage_names_the_members_that_did_not_report(
    coverage_sheet: kpisheet.sheet.KPISheet,
) -> None:
    """sheet.coverage lists both windows month by month; May 2022 names Gold as missing for Alpine,
    and for a stock only the final month decides."""
    table = coverage_sheet.coverage("flow", "Alpine", as_of="2023-06", window="3M")
    assert list(table.columns) == [
        "period", "month", "kpi", "has_value", "covered", "decides", "missing"
    ]  # fmt: skip
    assert list(table["period"]) == ["current"] * 3 + ["previous"] * 3
    assert list(table["month"]) == [
        "2023-04", "2023-05", "2023-06", "2022-04", "2022-05", "2022-06"
    ]  # fmt: skip
    assert list(table["covered"]) == [True, True, True, True, False, True]
    assert list(table["has_value"]) == [True] * 6
    assert list(table["missing"]) == [(), (), (), (), (GOLD,), ()]
    assert table["decides"].all()
    stock = coverage_sheet.coverage("accounts", "Kartenwelt", as_of="2023-06", window="6M")
    current = stock[stock["period"] == "current"].set_index("month")
    assert current.loc["2023-02", "missing"] == (GOLD,)
    assert list(current["decides"]) == [False] * 5 + [True]
    previous = stock[stock["period"] == "previous"].set_index("month")
    assert previous.loc["2022-06", "missing"] == ()  # Borealis still reported in 2022


def test_coverage_of_a_derived_kpi_per_account_lists_every_source(
    coverage_sheet: kpisheet.sheet.KPISheet,
) -> None:
    """Per account, the flow's coverage includes the accounts it is divided by, every month
    deciding; unknown names are refused like in a query."""
    table = coverage_sheet.coverage(
        "flow", "Alpine", as_of="2023-02", window="1M", per_account=True
    )
    assert list(table["kpi"]) == ["flow", "accounts", "flow", "accounts"]
    assert list(table["missing"]) == [(), (GOLD,), (), ()]
    with pytest.raises(QueryError, match=re.escape("unknown entity 'Alpin'")):
        coverage_sheet.coverage("flow", "Alpin")


# --- the result table ------------------------------------------------------------------------


def test_result_columns_and_dtypes(year_sheet: kpisheet.sheet.KPISheet) -> None:
    """Exactly the columns of docs/semantics.md in order: text, floats, an integer count and a boolean."""
    for result in (
        year_sheet.query(as_of="2023-01", window="YTD"),
        year_sheet.query(as_of="2023-01", window="YTD", kpis="opening"),  # no rows
    ):
        assert list(result.columns) == COLUMNS
        for column in ("as_of", "window", "level", "entity", "kpi"):
            assert pd.api.types.is_string_dtype(result[column]), column
        for column in ("value", "previous_value", "change", "change_pct"):
            assert result[column].dtype == np.float64, column
        for column in ("months", "previous_months"):
            assert result[column].dtype == np.int64, column
        for column in ("complete", "previous_complete"):
            assert result[column].dtype == np.bool_, column
    result = year_sheet.query(as_of="2023-01", window="YTD")
    assert set(result["as_of"]) == {"2023-01"}
    assert set(result["window"]) == {"YTD"}
    assert result.index.equals(pd.RangeIndex(len(result)))


def test_default_levels_are_the_tree_without_views(groups_sheet: kpisheet.sheet.KPISheet) -> None:
    """Without entities or levels: the total, every sector and mandant and every product."""
    result = groups_sheet.query(as_of="2023-03", window="3M", kpis="flow")
    assert dict(zip(result["entity"], result["level"], strict=True)) == {
        "Kartenwelt": "total",
        "B2C": "sector",
        "B2B2C": "sector",
        "Alpine": "mandant",
        "Borealis": "mandant",
        GOLD: "product",
        PREPAID: "product",
        BOREALIS: "product",
    }
    assert groups_sheet.levels == ("product", "mandant", "sector", "total")


@pytest.mark.parametrize(
    ("entities", "levels", "expected"),
    [
        (["Alpine"], None, {"Alpine": "mandant"}),
        ("Alpine", None, {"Alpine": "mandant"}),
        ([GOLD, "Kartenwelt"], None, {GOLD: "product", "Kartenwelt": "total"}),
        (None, ["mandant"], {"Alpine": "mandant", "Borealis": "mandant"}),
        (None, "total", {"Kartenwelt": "total"}),
        (None, ["cardprofile"], {"CC": "cardprofile", "PP": "cardprofile"}),
        ("CC", None, {"CC": "cardprofile"}),
        (["Alpine", GOLD], ["product"], {GOLD: "product"}),
        (
            None,
            ["sector", "product"],
            {
                "B2C": "sector",
                "B2B2C": "sector",
                GOLD: "product",
                PREPAID: "product",
                BOREALIS: "product",
            },
        ),
    ],
)
def test_entities_and_levels_select_rows(
    groups_sheet: kpisheet.sheet.KPISheet,
    entities: str | list[str] | None,
    levels: str | list[str] | None,
    expected: dict[str, str],
) -> None:
    """A group's name gives the group's own row, not its members'; levels select by level (the
    cardprofile view included); both together select the rows matching both."""
    result = groups_sheet.query(
        as_of="2023-03", window="3M", kpis="flow", entities=entities, levels=levels
    )
    assert dict(zip(result["entity"], result["level"], strict=True)) == expected


def test_kpis_select_rows(groups_sheet: kpisheet.sheet.KPISheet) -> None:
    """kpis selects KPIs by id (one id or a list); other KPIs have no rows."""
    result = groups_sheet.query(as_of="2023-03", window="3M", kpis=["accounts"], entities=GOLD)
    assert list(result["kpi"]) == ["accounts"]
    assert set(groups_sheet.query(as_of="2023-03", kpis="flow")["kpi"]) == {"flow"}


# --- query errors ----------------------------------------------------------------------------

KNOWN_ENTITIES = (
    "Kartenwelt, B2C, B2B2C, Alpine, Borealis, CC, PP, Alpine Gold, Alpine Prepaid, Borealis Card"
)
KNOWN_KPIS = "flow, trx, accounts, opening, balance, low, high, leaf_only, ticket"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"as_of": "2023-04"},
            "as_of 2023-04 is outside the data; months go from 2023-01 to 2023-03",
        ),
        (
            {"as_of": "2022-12"},
            "as_of 2022-12 is outside the data; months go from 2023-01 to 2023-03",
        ),
        ({"as_of": "März"}, "as_of 'März' is not a month; expected YYYY-MM, e.g. 2021-06"),
        ({"as_of": "2023-13"}, "as_of '2023-13' is not a month; expected YYYY-MM, e.g. 2021-06"),
        ({"window": "2M"}, "window '2M' is not one of: 1M, 3M, 6M, 12M, YTD"),
        (
            {"kpis": ["flw", "zzz"]},
            f"unknown KPI 'flw' (did you mean 'flow'?), 'zzz'; known: {KNOWN_KPIS}",
        ),
        (
            {"entities": "Alpin"},
            f"unknown entity 'Alpin' (did you mean 'Alpine'?); known: {KNOWN_ENTITIES}",
        ),
        (
            {"levels": ["brand"]},
            "unknown level 'brand'; known: product, mandant, sector, total, cardprofile",
        ),
    ],
)
def test_query_errors_name_what_is_unknown(
    groups_sheet: kpisheet.sheet.KPISheet, arguments: dict[str, object], message: str
) -> None:
    """Unknown as-of months, windows, KPIs, entities and levels raise QueryError saying what
    was asked and what is known."""
    with pytest.raises(QueryError, match=f"^{re.escape(message)}$"):
        groups_sheet.query(**arguments)


def test_empty_as_of_is_a_query_error(groups_sheet: kpisheet.sheet.KPISheet) -> None:
    """An empty as-of text is reported as not a month, not as a crash."""
    with pytest.raises(
        QueryError, match=re.escape("as_of '' is not a month; expected YYYY-MM, e.g. 2021-06")
    ):
        groups_sheet.query(as_of="")


def test_window_words_are_case_insensitive(groups_sheet: kpisheet.sheet.KPISheet) -> None:
    """'ytd' and 'YTD' are the same window."""
    pd.testing.assert_frame_equal(
        groups_sheet.query(as_of="2023-03", window="ytd"),
        groups_sheet.query(as_of="2023-03", window="YTD"),
    )


def test_a_cube_remembers_a_bounded_number_of_selections(
    groups_sheet: kpisheet.sheet.KPISheet,
) -> None:
    """A long-running app asks for ever new selections: the cube keeps the positions and plans
    of at most :data:`kpisheet.engine._REMEMBERED_SELECTIONS` of them, and a selection asked for
    after they were forgotten gives the same table as before."""
    from kpisheet import engine

    cube = groups_sheet._cube
    entities = list(cube.entities)
    first = groups_sheet.query(as_of="2023-03", window="3M", entities=entities[:2], kpis=["flow"])
    # every selection a different subset of the entities (the bits of its number)
    count = 3 * engine._REMEMBERED_SELECTIONS
    assert 2 ** len(entities) > count
    selections = [[e for bit, e in enumerate(entities) if i >> bit & 1] for i in range(1, count)]
    kpis = ["flow", "accounts", "leaf_only"]
    for i, selection in enumerate(selections):
        groups_sheet.query(as_of="2023-03", window="1M", entities=selection, kpis=kpis[: i % 3 + 1])
        assert len(cube._entity_positions) <= engine._REMEMBERED_SELECTIONS
        assert len(cube._plans) <= engine._REMEMBERED_SELECTIONS
    again = groups_sheet.query(as_of="2023-03", window="3M", entities=entities[:2], kpis=["flow"])
    pd.testing.assert_frame_equal(again, first)


def test_a_selection_asked_again_gets_the_texts_of_its_own_rows(
    groups_sheet: kpisheet.sheet.KPISheet,
) -> None:
    """The cube reuses a selection's text columns only for the same rows: month by month and
    window by window (rows come and go with the data), every result equals that of a sheet that
    never answered before, and a result's texts can be changed without changing another's."""
    from kpisheet import engine

    observations = groups_sheet.observations
    asked = [
        (month, window)
        for month in ("2023-01", "2023-02", "2023-03", "2023-02", "2023-03")
        for window in ("1M", "3M", "1M")
    ]
    results = []
    for month, window in asked:
        result = groups_sheet.query(as_of=month, window=window)
        fresh = kpisheet.sheet.KPISheet(
            observations, groups_sheet.registry, groups_sheet.hierarchy
        ).query(as_of=month, window=window)
        pd.testing.assert_frame_equal(result, fresh)
        results.append(result)
        assert len(groups_sheet._cube._texts) <= engine._REMEMBERED_TEXTS
    assert len({len(result) for result in results}) > 1  # rows did change between questions
    first, second = results[-1], groups_sheet.query(as_of="2023-03", window="1M")
    first.loc[first.index[0], "entity"] = "changed"
    assert second["entity"].iloc[0] != "changed"
    pd.testing.assert_frame_equal(second, groups_sheet.query(as_of="2023-03", window="1M"))
