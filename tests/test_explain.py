"""Tests of kpisheet.explain: a group's change split over its members (docs/analysts.md,
"Explaining a change") — hand-computed examples, the edge cases, and a property test on generated
sheets against a brute-force computation written from the documented formulas."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import kpisheet
from kpisheet.explain import EXPLAIN_COLUMNS, ExplainKind
from tests.reference import (
    NAN,
    Reference,
    evaluate,
    formula_names,
    is_missing,
    load_project,
    month_number,
    window_months,
)
from tests.strategies import Project, projects
from tests.test_properties import engine_sheet

KPIS = [
    {"id": "turnover", "label": "Umsatz", "group": "U", "unit": "currency",
     "time_aggregation": "sum"},
    {"id": "transactions", "label": "Trx", "group": "U", "unit": "count",
     "time_aggregation": "sum"},
    {"id": "accounts", "label": "Konten", "group": "K", "unit": "count",
     "time_aggregation": "last"},
    {"id": "peak", "label": "Spitze", "group": "K", "unit": "count", "time_aggregation": "max"},
    {"id": "local", "label": "Lokal", "group": "K", "unit": "count", "time_aggregation": "sum",
     "entity_aggregation": "none"},
    {"id": "ticket", "label": "Umsatz pro Trx", "group": "U", "unit": "currency",
     "formula": "turnover / transactions"},
    {"id": "turnover_net", "label": "Umsatz netto", "group": "U", "unit": "currency",
     "formula": "turnover - transactions * 2"},
    {"id": "squared", "label": "Quadrat", "group": "U", "unit": "count",
     "formula": "turnover * transactions"},
]  # fmt: skip
ENTITIES = {
    "total": "Total",
    "levels": ["sector"],
    "entities": {
        "P": {"sector": "S", "cardprofile": "CC"},
        "Q": {"sector": "S", "cardprofile": "PP"},
        "R": {"sector": "S", "cardprofile": "CC"},
        "X": {"sector": "T", "cardprofile": "CC"},
    },
}


def make_sheet(tmp_path: Path, rows: list[tuple[str, str, str, float]]) -> kpisheet.KPISheet:
    """A sheet of the test KPIs and entities over the given observations."""
    definitions = tmp_path / "kpis.yaml"
    entities = tmp_path / "entities.yaml"
    definitions.write_text(yaml.safe_dump(KPIS, sort_keys=False), encoding="utf-8")
    entities.write_text(yaml.safe_dump(ENTITIES, sort_keys=False), encoding="utf-8")
    frame = pd.DataFrame(rows, columns=["month", "kpi", "entity", "value"])
    return kpisheet.open(frame, definitions=definitions, entities=entities)


#: The worked example of docs/analysts.md: two products, turnover and transactions, 1M windows.
TWO_PRODUCTS = [
    ("2020-01", "turnover", "P", 100.0),
    ("2020-01", "transactions", "P", 10.0),
    ("2020-01", "turnover", "Q", 300.0),
    ("2020-01", "transactions", "Q", 10.0),
    ("2021-01", "turnover", "P", 360.0),
    ("2021-01", "transactions", "P", 30.0),
    ("2021-01", "turnover", "Q", 310.0),
    ("2021-01", "transactions", "Q", 10.0),
]


def by_member(frame: pd.DataFrame, column: str) -> dict[str, float]:
    return dict(zip(frame["member"], frame[column], strict=True))


def test_additive_two_products_with_a_launch_and_a_stop(tmp_path: Path) -> None:
    """Each product contributes its own change; a launched one its value, a stopped one minus
    its previous value; together exactly the group's change from sheet.query."""
    rows = [
        *TWO_PRODUCTS,
        ("2021-01", "turnover", "R", 50.0),  # launched
        ("2019-12", "turnover", "X", 1.0),
        ("2020-01", "turnover", "X", 40.0),  # stopped (in sector T: not part of S)
    ]
    sheet = make_sheet(tmp_path, rows)
    explanation = sheet.explain("turnover", "Total", as_of="2021-01")
    assert explanation.by == "sector"
    assert by_member(explanation.members, "contribution") == {"S": 320.0, "T": -40.0}
    products = sheet.explain("turnover", "Total", as_of="2021-01", by="product").members
    assert list(products.columns) == list(EXPLAIN_COLUMNS)
    assert list(products["member"]) == ["P", "R", "X", "Q"]  # largest contribution first
    assert by_member(products, "contribution") == {"P": 260.0, "Q": 10.0, "R": 50.0, "X": -40.0}
    assert by_member(products, "change") == pytest.approx(
        {"P": 260.0, "Q": 10.0, "R": NAN, "X": NAN}, nan_ok=True
    )
    group = sheet.query(as_of="2021-01", kpis="turnover", entities="Total")
    assert explanation.change == group["change"].iloc[0] == 280.0
    assert math.fsum(products["contribution"]) == 280.0
    assert products["rate_effect"].isna().all() and products["mix_effect"].isna().all()
    assert explanation.kind is ExplainKind.ADDITIVE and explanation.fully_explained


def test_ratio_two_products_rate_and_mix(tmp_path: Path) -> None:
    """The hand-computed example of docs/analysts.md: both tickets rose (rate +1.625), but the
    weight moved to the cheaper product (mix −4.875): the group's ticket fell by 3.25."""
    sheet = make_sheet(tmp_path, TWO_PRODUCTS)
    explanation = sheet.explain("ticket", "S", as_of="2021-01")
    members = explanation.members
    assert explanation.kind is ExplainKind.RATIO and explanation.by == "product"
    assert (explanation.previous_value, explanation.value, explanation.change) == (
        20.0,
        16.75,
        -3.25,
    )
    assert by_member(members, "rate_effect") == {"P": 1.25, "Q": 0.375}
    assert by_member(members, "mix_effect") == {"P": -1.84375, "Q": -3.03125}
    assert by_member(members, "contribution") == {"P": -0.59375, "Q": -2.65625}
    assert math.isclose(math.fsum(members["contribution"]), explanation.change)
    assert by_member(members, "value") == {"P": 12.0, "Q": 31.0}


def test_ratio_member_in_one_window_puts_its_whole_effect_into_mix(tmp_path: Path) -> None:
    """A product launched this year has no previous ratio: rate 0, and its whole effect (its
    term of Σa/B less the average ratio times its weight) is mix; the sum stays exact."""
    rows = [
        *TWO_PRODUCTS,
        ("2021-01", "turnover", "R", 50.0),
        ("2021-01", "transactions", "R", 10.0),
    ]
    sheet = make_sheet(tmp_path, rows)
    explanation = sheet.explain("ticket", "S", as_of="2021-01")
    members = explanation.members.set_index("member")
    big_b1, ratio1 = 50.0, 720.0 / 50.0
    mean_ratio = (20.0 + ratio1) / 2
    assert members.loc["R", "rate_effect"] == 0.0
    assert members.loc["R", "mix_effect"] == pytest.approx(50.0 / big_b1 - mean_ratio * 10 / big_b1)
    assert math.isclose(math.fsum(members["contribution"]), explanation.change, abs_tol=1e-12)
    assert math.isclose(ratio1 - 20.0, explanation.change)


def test_stock_uses_the_final_month(tmp_path: Path) -> None:
    """A stock (last) is explained on the window's final month, as the query values it."""
    rows = [
        ("2020-01", "accounts", "P", 5.0),
        ("2020-03", "accounts", "P", 7.0),
        ("2020-03", "accounts", "Q", 1.0),
        ("2021-01", "accounts", "P", 100.0),
        ("2021-03", "accounts", "P", 9.0),
        ("2021-03", "accounts", "Q", 4.0),
    ]
    sheet = make_sheet(tmp_path, rows)
    members = sheet.explain("accounts", "S", as_of="2021-03", window="3M").members
    assert by_member(members, "contribution") == {"P": 2.0, "Q": 3.0}


def test_additive_formula_splits_by_its_terms(tmp_path: Path) -> None:
    """A derived sum (turnover − 2 × transactions) splits like its terms, product by product."""
    sheet = make_sheet(tmp_path, TWO_PRODUCTS)
    explanation = sheet.explain("turnover_net", "S", as_of="2021-01")
    assert by_member(explanation.members, "contribution") == {"P": 220.0, "Q": 10.0}
    assert explanation.change == 230.0


def test_incomplete_group_is_marked_not_fully_explained(tmp_path: Path) -> None:
    """A product missing a month inside its lifetime leaves the group's window incomplete: the
    member is marked and the explanation says the change is not fully explained."""
    rows = [
        *TWO_PRODUCTS,
        ("2021-02", "turnover", "P", 1.0),
        ("2021-03", "turnover", "P", 1.0),
        ("2021-03", "turnover", "Q", 1.0),  # Q did not report in 2021-02
    ]
    sheet = make_sheet(tmp_path, rows)
    explanation = sheet.explain("turnover", "S", as_of="2021-03", window="3M")
    assert not explanation.fully_explained
    assert explanation.message == (
        "the change of 'S' is not fully explained: its current and previous-year window is not "
        "complete (a product expected in a month did not report); members with incomplete "
        "windows: 'P', 'Q'"
    )
    assert not explanation.members["previous_complete"].any()


def test_missing_group_change_gives_missing_contributions(tmp_path: Path) -> None:
    """Without a previous value there is no change to explain: contributions are missing."""
    sheet = make_sheet(tmp_path, [("2021-01", "turnover", "P", 1.0)])
    explanation = sheet.explain("turnover", "S", as_of="2021-01")
    assert explanation.members["contribution"].isna().all()
    assert explanation.message == (
        "'S' has no previous value of KPI 'turnover' (or it is a division by zero), so there is "
        "no change to explain"
    )


def test_view_inside_a_level_group_explains_by_its_parts(tmp_path: Path) -> None:
    """Explaining a sector by card profile gives the part of each profile inside the sector."""
    rows = [*TWO_PRODUCTS, ("2020-01", "turnover", "X", 7.0), ("2021-01", "turnover", "X", 9.0)]
    sheet = make_sheet(tmp_path, rows)
    members = sheet.explain("turnover", "S", as_of="2021-01", by="cardprofile").members
    assert by_member(members, "value") == {"CC": 360.0, "PP": 310.0}  # X (sector T) not in CC
    assert list(members["level"]) == ["cardprofile", "cardprofile"]


@pytest.mark.parametrize(
    ("kpi", "entity", "by", "message"),
    [
        (
            "local",
            "S",
            None,
            "cannot explain KPI 'local': it has entity_aggregation none: there is no group "
            "value; a change is explained for KPIs summed over products and for a ratio of two "
            "such KPIs",
        ),
        (
            "peak",
            "S",
            None,
            "cannot explain KPI 'peak': KPI 'peak' takes the max over the window's months, which "
            "is not a sum of the members' values; a change is explained for KPIs summed over "
            "products and for a ratio of two such KPIs",
        ),
        (
            "squared",
            "S",
            None,
            "cannot explain KPI 'squared' (formula: turnover * transactions): a product or "
            "quotient of KPIs inside a sum has no exact split over members; a change is "
            "explained for KPIs summed over products and for a ratio of two such KPIs",
        ),
        (
            "turnover",
            "P",
            None,
            "'P' is a product and has no members; explain a group (the total, a group of a "
            "level or of a view) instead",
        ),
        (
            "turnover",
            "S",
            "sector",
            "cannot explain 'S' (sector) by 'sector': its members must be finer; choose one of: "
            "product, cardprofile",
        ),
        (
            "turnover",
            "S",
            "mandant",
            "unknown level 'mandant'; known: product, sector, cardprofile",
        ),
        (
            "turnover",
            "Nowhere",
            None,
            "unknown entity 'Nowhere'; known: Total, S, T, CC, PP, P, Q, R, X",
        ),
    ],
)
def test_refusals_name_the_reason(
    tmp_path: Path, kpi: str, entity: str, by: str | None, message: str
) -> None:
    """What has no exact split, or no members, is refused with a message saying why."""
    sheet = make_sheet(tmp_path, TWO_PRODUCTS)
    with pytest.raises(kpisheet.QueryError, match=re.escape(message)):
        sheet.explain(kpi, entity, as_of="2021-01", by=by)


# -- property test against a brute-force computation -------------------------------------------


def _splittable(project: Project, kpi: str) -> bool:
    """Whether the KPI has an exact split (docs/analysts.md), decided from the plain data."""
    definitions = {k["id"]: k for k in project.kpis}
    definition = definitions[kpi]
    if definition.get("entity_aggregation") == "none":
        return False
    if "formula" not in definition:
        return definition["time_aggregation"] in ("sum", "last", "first", "mean")
    formula = definition["formula"]
    names = formula_names(formula)
    if not all(_splittable(project, name) and not _is_ratio(project, name) for name in names):
        return False
    return "*" not in formula or formula.endswith("* 2")


def _is_ratio(project: Project, kpi: str) -> bool:
    definition = {k["id"]: k for k in project.kpis}[kpi]
    return " / " in definition.get("formula", "")


def _part(
    ref: Reference, kpi: str, leaves: list[str], group: list[str], as_of: int, window: str
) -> float:
    """A member's part of the group's window value (missing as 0): Σ over its products' values
    in the window's months by the KPI's rule; ``mean`` over the group's months with a value."""
    definition = ref.kpis[kpi]
    if "formula" in definition:
        names = formula_names(definition["formula"])
        return evaluate(
            definition["formula"], {n: _part(ref, n, leaves, group, as_of, window) for n in names}
        )
    months = window_months(as_of, window)
    rule = definition["time_aggregation"]
    if rule == "last":
        months = months[-1:]
    elif rule == "first":
        months = months[:1]

    def value(month: int, leaf: str) -> float:
        found = ref.values.get((month, kpi, leaf), NAN)
        return 0.0 if is_missing(found) else found

    total = sum(value(m, leaf) for m in months for leaf in leaves)
    if rule == "mean":
        group_months = [
            m for m in months
            if any(not is_missing(ref.values.get((m, kpi, leaf), NAN)) for leaf in group)
        ]  # fmt: skip
        return total / len(group_months) if group_months else 0.0
    return total


def _expected_members(
    ref: Reference, project: Project, entity: str, by: str
) -> dict[str, list[str]]:
    """Member name → its products inside the entity (product members: the product itself)."""
    leaves = ref.members(entity)
    members: dict[str, list[str]] = {}
    for leaf in leaves:
        group = leaf if by == "product" else project.entities[leaf].get(by, "")
        members.setdefault(group or leaf, []).append(leaf)
    return members


@st.composite
def cases(draw: st.DrawFn) -> tuple[Project, str, str, str, str]:
    """A sheet, an as-of month, a window, a way to choose members and one of the sheet's KPIs."""
    project = draw(projects())
    return (
        project,
        draw(st.sampled_from(project.months)),
        draw(st.sampled_from(["1M", "3M", "12M", "YTD"])),
        draw(st.sampled_from(["next", "product", "mandant", "cardprofile"])),
        draw(st.sampled_from([kpi["id"] for kpi in project.kpis])),
    )


@settings(deadline=None)
@given(cases())
def test_contributions_sum_to_the_change_and_match_brute_force(
    case: tuple[Project, str, str, str, str],
) -> None:
    """On generated sheets (gaps, launches, stops, zeros), for every group, every explainable
    KPI and every grouping of the members: contributions match a brute-force computation and
    sum to the group's change, rate + mix to the contribution; other KPIs are refused."""
    project, as_of_text, window, grouping, kpi = case
    sheet = engine_sheet(project)
    ref = Reference(project)
    if not _splittable(project, kpi):
        with pytest.raises(kpisheet.QueryError, match="cannot explain KPI"):
            sheet.explain(kpi, project.total, as_of=as_of_text, window=window)
        return
    for entity, level in _groups(ref):
        by = None if grouping == "next" else grouping
        if _allowed(project, level, by):
            check_explanation(sheet, ref, project, kpi, entity, level, by, as_of_text, window)


HELDOUT = Path(__file__).parent / "data" / "heldout"


@pytest.mark.parametrize("as_of", ["2023-04", "2023-02", "2022-05"])
def test_heldout_every_explanation_matches_brute_force(as_of: str) -> None:
    """The held-out sheet: for every group, window, explainable KPI and grouping of members, the
    contributions match the brute-force split and sum to the group's change; rate + mix to the
    ratio's change."""
    project = load_project(HELDOUT)
    sheet = engine_sheet(project)
    ref = Reference(project)
    kpis = [k["id"] for k in project.kpis if _splittable(project, k["id"])]
    assert {"avg_ticket", "spend_per_card", "balance", "cards_active"} <= set(kpis)
    checked = 0
    for kpi in kpis:
        for window in ["1M", "3M", "6M", "12M", "YTD"]:
            for entity, level in _groups(ref):
                for by in [None, "product", *project.levels, *project.views]:
                    if _allowed(project, level, by):
                        check_explanation(
                            sheet, ref, project, kpi, entity, level, by, as_of, window
                        )
                        checked += 1
    assert checked > 500


def _groups(ref: Reference) -> list[tuple[str, str]]:
    """Every group of the tree and of the views whose name no other grouping uses."""
    groups = [(e, level) for e, level in ref.entities(views=True) if level != "product"]
    names = [name for name, _ in groups]
    return [(e, level) for e, level in groups if names.count(e) == 1]


def _allowed(project: Project, level: str, by: str | None) -> bool:
    """Whether members ``by`` are finer than ``level`` (views and products always are)."""
    if by is None or by == "product" or (by in project.views and by != level):
        return True
    order = ["total", *project.levels]
    return by in order and level in order and order.index(by) > order.index(level)


def check_explanation(
    sheet: kpisheet.KPISheet,
    ref: Reference,
    project: Project,
    kpi: str,
    entity: str,
    level: str,
    by: str | None,
    as_of_text: str,
    window: str,
) -> None:
    """One explanation against the brute force: group change, contributions, rate and mix,
    the members listed and whether the change is fully explained."""
    explanation = sheet.explain(kpi, entity, as_of=as_of_text, window=window, by=by)
    if by is None:
        order = ["total", *project.levels, "product"]
        by = order[order.index(level) + 1] if level in order else "product"
    assert explanation.by == by
    as_of = month_number(as_of_text)
    previous = as_of - 12
    members = explanation.members.set_index("member")
    group_change = (
        ref.window_value(kpi, entity, as_of, window)[0]
        - ref.window_value(kpi, entity, previous, window)[0]
    )
    assert _same(explanation.change, group_change)
    if is_missing(group_change):
        assert members["contribution"].isna().all() and not explanation.fully_explained
        return
    assert math.isclose(
        math.fsum(members["contribution"]), group_change, rel_tol=1e-9, abs_tol=1e-9
    )
    expected = _brute_force(ref, project, kpi, entity, by, as_of, window)
    for name, (contribution, rate, mix) in expected.items():
        if name not in members.index:
            assert contribution == 0.0
            continue
        got = members.loc[name]
        assert math.isclose(got["contribution"], contribution, rel_tol=1e-9, abs_tol=1e-9)
        if _is_ratio(project, kpi):
            assert math.isclose(got["rate_effect"], rate, rel_tol=1e-9, abs_tol=1e-9)
            assert math.isclose(got["mix_effect"], mix, rel_tol=1e-9, abs_tol=1e-9)
            total = got["rate_effect"] + got["mix_effect"]
            assert math.isclose(total, got["contribution"], rel_tol=1e-9, abs_tol=1e-9)
        else:
            assert is_missing(got["rate_effect"]) and is_missing(got["mix_effect"])
    assert set(members.index) <= set(expected)
    assert explanation.fully_explained == (
        ref.complete(kpi, entity, as_of, window) and ref.complete(kpi, entity, previous, window)
    )


def _same(left: float, right: float) -> bool:
    if is_missing(left) or is_missing(right):
        return is_missing(left) and is_missing(right)
    return math.isclose(left, right, rel_tol=1e-9, abs_tol=1e-9)


def _brute_force(
    ref: Reference, project: Project, kpi: str, entity: str, by: str, as_of: int, window: str
) -> dict[str, tuple[float, float, float]]:
    """Member → (contribution, rate effect, mix effect), one member at a time, from the formulas
    of docs/analysts.md; rate and mix are NaN for an additive KPI."""
    group = ref.members(entity)
    members = _expected_members(ref, project, entity, by)
    previous = as_of - 12
    out: dict[str, tuple[float, float, float]] = {}
    definition = ref.kpis[kpi]
    if not _is_ratio(project, kpi):
        for name, leaves in members.items():
            now = _part(ref, kpi, leaves, group, as_of, window)
            before = _part(ref, kpi, leaves, group, previous, window)
            out[name] = (now - before, NAN, NAN)
        return out
    numerator, denominator = definition["formula"].rsplit(" / ", 1)

    def side(text: str, leaves: list[str], month: int) -> float:
        names = formula_names(text)
        return evaluate(text, {n: _part(ref, n, leaves, group, month, window) for n in names})

    ratio1 = ref.window_value(kpi, entity, as_of, window)[0]
    ratio0 = ref.window_value(kpi, entity, previous, window)[0]
    big_b1, big_b0 = side(denominator, group, as_of), side(denominator, group, previous)
    mean_ratio = (ratio0 + ratio1) / 2
    for name, leaves in members.items():
        a1, b1 = side(numerator, leaves, as_of), side(denominator, leaves, as_of)
        a0, b0 = side(numerator, leaves, previous), side(denominator, leaves, previous)
        w1, w0 = b1 / big_b1, b0 / big_b0
        if b1 != 0 and b0 != 0:
            r1, r0 = a1 / b1, a0 / b0
            rate = (w0 + w1) / 2 * (r1 - r0)
            mix = ((r0 + r1) / 2 - mean_ratio) * (w1 - w0)
        else:
            rate = 0.0
            mix = a1 / big_b1 - a0 / big_b0 - mean_ratio * (w1 - w0)
        out[name] = (rate + mix, rate, mix)
    return out


def test_flags_are_numpy_free_of_side_channels() -> None:
    """The explanation is an explicit record: no DataFrame.attrs carry its flags."""
    sheet = kpisheet.open()
    explanation = sheet.explain("turnover", "B2C", window="12M")
    assert explanation.members.attrs == {}
    assert isinstance(explanation.fully_explained, bool)
    assert np.isfinite(explanation.change)
