"""Tests of the demo sheet's entity hierarchy and its deterministic data generator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import kpisheet
from kpisheet.constants import ENTITY, KPI, MONTH, OBSERVATION_COLUMNS, VALUE
from kpisheet.demo import (
    DEFAULT_END,
    DEFAULT_START,
    DEMO_ENTITIES,
    LAUNCHED,
    MISSING_MONTH,
    RETIRED,
    generate_observations,
    write_demo_csv,
)
from kpisheet.hierarchy import load_hierarchy


@pytest.fixture(scope="module")
def observations() -> pd.DataFrame:
    return generate_observations()


@pytest.fixture(scope="module")
def wide(observations: pd.DataFrame) -> pd.DataFrame:
    """One row per (entity, month), one column per KPI."""
    return observations.pivot(index=[ENTITY, MONTH], columns=KPI, values=VALUE)


@pytest.fixture(scope="module")
def hierarchy():
    return load_hierarchy(DEMO_ENTITIES)


def monthly_totals(observations: pd.DataFrame, kpi: str) -> pd.Series:
    rows = observations[observations[KPI] == kpi]
    return rows.groupby(MONTH)[VALUE].sum()


def complete_years(totals: pd.Series) -> list[int]:
    counts = pd.Series(totals.index.year).value_counts()
    return sorted(counts[counts == 12].index)


def test_demo_entities_is_a_valid_hierarchy(hierarchy) -> None:
    """The shipped demo hierarchy loads and has the shape of the demo sheet: 40 products, 12 brands."""
    assert hierarchy.total == "Kartenwelt AG"
    assert hierarchy.levels == ("sector", "mandant")
    assert len(hierarchy.leaves) == 40
    assert len(hierarchy.groups("mandant")) == 12
    assert set(hierarchy.groups("sector")) == {"B2C", "B2B2C"}
    assert set(hierarchy.attributes["cardprofile"]) == {"CC", "PP", "CH"}


def test_demo_entities_ships_inside_the_package() -> None:
    """The hierarchy file lives in the package directory, so the wheel carries it."""
    package = DEMO_ENTITIES.parents[1]
    assert package.name == "kpisheet"
    assert DEMO_ENTITIES.is_file()


def test_same_seed_gives_the_same_table(observations: pd.DataFrame) -> None:
    """Two runs with the default seed give identical tables, bit for bit."""
    pd.testing.assert_frame_equal(generate_observations(), observations)


def test_other_seed_gives_other_values(observations: pd.DataFrame) -> None:
    """The seed drives the random parts: another seed changes the values but not the rows."""
    other = generate_observations(seed=7)
    pd.testing.assert_frame_equal(other[[MONTH, KPI, ENTITY]], observations[[MONTH, KPI, ENTITY]])
    assert not np.array_equal(other[VALUE].to_numpy(), observations[VALUE].to_numpy())


def test_canonical_long_format(observations: pd.DataFrame) -> None:
    """Columns, types and keys are those of docs/semantics.md, "Observations": one row per month, KPI and product."""
    assert tuple(observations.columns) == OBSERVATION_COLUMNS
    assert observations[MONTH].dtype == pd.PeriodDtype("M")
    assert observations[VALUE].dtype == np.float64
    assert np.isfinite(observations[VALUE]).all()
    assert not observations.duplicated([MONTH, KPI, ENTITY]).any()
    assert observations[MONTH].min() == pd.Period(DEFAULT_START, "M")
    assert observations[MONTH].max() == pd.Period(DEFAULT_END, "M")


def test_default_range_is_five_years_ending_october_2026(observations: pd.DataFrame) -> None:
    """The default range is fixed (not the clock): the 60 months November 2021 to October 2026."""
    months = pd.PeriodIndex(observations[MONTH].unique())
    assert len(months) == 60
    assert str(months.max()) == "2026-10"


def test_start_and_end_limit_the_months() -> None:
    """``start`` and ``end`` choose the months generated."""
    short = generate_observations(start="2024-01", end="2024-03")
    assert sorted(str(month) for month in short[MONTH].unique()) == [
        "2024-01",
        "2024-02",
        "2024-03",
    ]


def test_kpis_are_the_source_kpis_of_the_builtin_registry(observations: pd.DataFrame) -> None:
    """The generator writes exactly the source KPIs of the built-in sheet, nothing else."""
    registry = kpisheet.load_kpis()
    assert set(observations[KPI]) == {kpi.id for kpi in registry.source_kpis}


def test_every_entity_is_a_leaf_of_the_demo_hierarchy(
    observations: pd.DataFrame, hierarchy
) -> None:
    """Every product in the data is a leaf of the demo hierarchy, and every leaf has data."""
    assert set(observations[ENTITY]) == set(hierarchy.leaves)


def test_domestic_plus_abroad_is_the_total(wide: pd.DataFrame) -> None:
    """Domestic and abroad add up to the total: turnover to the cent, transactions exactly."""
    cents = (wide[["turnover", "turnover_domestic", "turnover_abroad"]] * 100).round()
    assert (cents["turnover_domestic"] + cents["turnover_abroad"] == cents["turnover"]).all()
    trx = wide["transactions_domestic"] + wide["transactions_abroad"]
    assert (trx == wide["transactions"]).all()


def test_counts_are_whole_and_currency_is_in_cents(observations: pd.DataFrame) -> None:
    """Count KPIs are whole numbers; currency KPIs have at most two decimals."""
    is_currency = observations[KPI].str.startswith("turnover")
    counts = observations.loc[~is_currency, VALUE]
    assert (counts == counts.round()).all()
    assert (counts >= 0).all()
    currency = observations.loc[is_currency, VALUE]
    assert (currency == currency.round(2)).all()
    assert (currency > 0).all()


def test_approved_applications_never_exceed_received(wide: pd.DataFrame) -> None:
    """NCA approvals are at most the applications received, and some are approved."""
    nca = wide[["nca_received", "nca_approved"]].dropna()
    assert (nca["nca_approved"] <= nca["nca_received"]).all()
    assert nca["nca_approved"].sum() > 0


def test_nca_only_for_credit_and_charge_cards(observations: pd.DataFrame, hierarchy) -> None:
    """Applications are reported for credit and charge cards only, not for prepaid cards."""
    nca_products = observations.loc[observations[KPI] == "nca_received", ENTITY].unique()
    profiles = set(hierarchy.attributes.loc[nca_products, "cardprofile"])
    assert profiles == {"CC", "CH"}


def test_active_accounts_are_60_to_85_percent_of_valid(wide: pd.DataFrame) -> None:
    """Active accounts are a share of 60-85 % of the valid accounts (up to rounding)."""
    active, valid = wide["active_accounts"], wide["valid_accounts"]
    assert (active <= valid).all()
    assert (active >= 0.60 * valid - 0.5).all()
    assert (active <= 0.85 * valid + 0.5).all()


def test_valid_accounts_are_hundreds_to_tens_of_thousands(wide: pd.DataFrame) -> None:
    """Each product's typical portfolio has hundreds to tens of thousands of valid accounts."""
    typical = wide["valid_accounts"].groupby(level=ENTITY).median()
    assert typical.min() >= 100
    assert typical.max() < 100_000


def test_spend_per_account_charge_above_credit_above_prepaid(wide: pd.DataFrame, hierarchy) -> None:
    """Turnover per active account is highest for charge cards and lowest for prepaid cards."""
    totals = wide[["turnover", "active_accounts"]].groupby(level=ENTITY).sum()
    profile = hierarchy.attributes.loc[totals.index, "cardprofile"]
    by_profile = totals.groupby(profile).sum()
    spend = by_profile["turnover"] / by_profile["active_accounts"]
    assert spend["CH"] > spend["CC"] > spend["PP"]


def test_exactly_one_product_misses_exactly_one_month(wide: pd.DataFrame) -> None:
    """One product has one month without any KPI between its first and last month."""
    present = wide.reset_index()[[ENTITY, MONTH]]
    span = present.groupby(ENTITY)[MONTH].agg(["min", "max", "count"])
    expected = span["max"].map(lambda p: p.ordinal) - span["min"].map(lambda p: p.ordinal) + 1
    gaps = (expected - span["count"])[lambda gap: gap > 0]
    product, month = MISSING_MONTH
    assert gaps.to_dict() == {product: 1}
    months = present.loc[present[ENTITY] == product, MONTH]
    assert pd.Period(month, "M") not in set(months)


def test_no_kpi_of_the_missing_month_is_present(observations: pd.DataFrame) -> None:
    """In the missing month the product has no row at all, for any KPI."""
    product, month = MISSING_MONTH
    rows = observations[
        (observations[ENTITY] == product) & (observations[MONTH] == pd.Period(month, "M"))
    ]
    assert rows.empty


def test_launched_products_have_no_rows_before_launch(observations: pd.DataFrame) -> None:
    """Products launched mid-history start with their launch month."""
    first = observations.groupby(ENTITY)[MONTH].min()
    late = {name: str(month) for name, month in first.items() if str(month) != DEFAULT_START}
    assert late == LAUNCHED
    assert len(late) >= 2


def test_retired_products_have_no_rows_after_retirement(observations: pd.DataFrame) -> None:
    """Retired products end with their last month before the newest month."""
    last = observations.groupby(ENTITY)[MONTH].max()
    early = {name: str(month) for name, month in last.items() if str(month) != DEFAULT_END}
    assert early == RETIRED
    assert len(early) >= 1


def test_launched_products_ramp_up(wide: pd.DataFrame) -> None:
    """A launched product's portfolio grows strongly in its first year."""
    for product, launch in LAUNCHED.items():
        valid = wide.loc[product, "valid_accounts"]
        launch_month = pd.Period(launch, "M")
        if launch_month + 11 <= pd.Period(DEFAULT_END, "M"):
            assert valid[launch_month + 11] > 2 * valid[launch_month], product


def test_december_is_the_turnover_peak_of_every_year(observations: pd.DataFrame) -> None:
    """In every complete year, December has the highest total turnover."""
    totals = monthly_totals(observations, "turnover")
    years = complete_years(totals)
    assert years == [2022, 2023, 2024, 2025]
    for year in years:
        in_year = totals[totals.index.year == year]
        assert in_year.idxmax().month == 12, year


def test_abroad_share_peaks_in_summer(observations: pd.DataFrame) -> None:
    """In every complete year, the share of turnover abroad is highest in July or August."""
    share = monthly_totals(observations, "turnover_abroad") / monthly_totals(
        observations, "turnover"
    )
    for year in complete_years(share):
        in_year = share[share.index.year == year]
        assert in_year.idxmax().month in (7, 8), year


def test_business_grows_year_on_year(observations: pd.DataFrame) -> None:
    """Yearly total turnover and December valid accounts grow every year."""
    turnover = monthly_totals(observations, "turnover")
    years = complete_years(turnover)
    yearly = turnover.groupby(turnover.index.year).sum()[years]
    assert yearly.is_monotonic_increasing
    valid = monthly_totals(observations, "valid_accounts")
    december = valid[valid.index.month == 12]
    assert december.is_monotonic_increasing


def test_write_demo_csv_round_trips(tmp_path) -> None:
    """The CSV holds the generated table with months as ``YYYY-MM``."""
    path = write_demo_csv(tmp_path / "demo.csv", start="2025-11", end="2026-01")
    text = path.read_text(encoding="utf-8").splitlines()
    assert text[0] == ",".join(OBSERVATION_COLUMNS)
    assert text[1].startswith("2025-11,turnover,Alpine Visa Classic,")
    back = pd.read_csv(path)
    back[MONTH] = pd.PeriodIndex(back[MONTH], freq="M")
    expected = generate_observations(start="2025-11", end="2026-01")
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)
