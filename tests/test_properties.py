"""Property tests of the engine (docs/analysts.md) on generated sheets, against a brute-force
reference and against the coverage rules stated one by one.

The reference (:mod:`tests.reference`) loops over months in plain Python; the sheets
(:func:`tests.strategies.projects`) have gaps, late starts, early ends, months without any
value (also the newest) and zeros.
"""

from __future__ import annotations

import functools
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

import kpisheet.sheet
from kpisheet import engine
from kpisheet.constants import Window
from kpisheet.hierarchy import Hierarchy, load_hierarchy
from kpisheet.months import window_bounds
from kpisheet.plugins import load_kpis
from kpisheet.presentation import incomplete_reasons
from kpisheet.presentation.words import CURRENT_WINDOW_WORD, members_text, month_long
from kpisheet.registry import Registry
from tests.reference import (
    Reference,
    assert_same_table,
    is_missing,
    month_number,
    month_text,
    window_months,
)
from tests.strategies import Project, projects

WINDOWS = [window.value for window in Window]


def open_sheet(project: Project, frame: pd.DataFrame | None = None) -> kpisheet.sheet.KPISheet:
    """The project through the front door: YAML files and ``kpisheet.sheet.open``."""
    with tempfile.TemporaryDirectory() as directory:
        definitions, entities = project.write(Path(directory))
        return kpisheet.sheet.open(
            project.frame() if frame is None else frame,
            definitions=definitions,
            entities=entities,
        )


@functools.lru_cache(maxsize=32)
def _loaded(definitions_yaml: str, hierarchy_yaml: str) -> tuple[Registry, Hierarchy]:
    with tempfile.TemporaryDirectory() as directory:
        definitions, entities = Path(directory) / "kpis.yaml", Path(directory) / "entities.yaml"
        definitions.write_text(definitions_yaml, encoding="utf-8")
        entities.write_text(hierarchy_yaml, encoding="utf-8")
        return load_kpis(definitions), load_hierarchy(entities)


def engine_sheet(project: Project) -> kpisheet.sheet.KPISheet:
    """The project's sheet built straight from canonical observations (no file reading and
    validation, which the front-door tests cover), so that many examples run quickly."""
    registry, hierarchy = _loaded(project.definitions_yaml(), project.hierarchy_yaml())
    frame = project.frame()
    frame["month"] = pd.PeriodIndex(frame["month"], freq="M")
    return kpisheet.sheet.KPISheet(frame, registry, hierarchy)


def values_by_key(table: pd.DataFrame, column: str = "value") -> dict[tuple[str, str], float]:
    return dict(zip(zip(table["entity"], table["kpi"], strict=True), table[column], strict=True))


def same_number(left: float, right: float) -> bool:
    if is_missing(left) or is_missing(right):
        return is_missing(left) and is_missing(right)
    return math.isclose(left, right, rel_tol=1e-9, abs_tol=1e-9)


@st.composite
def projects_and_as_of(draw: st.DrawFn) -> tuple[Project, str]:
    project = draw(projects())
    return project, draw(st.sampled_from(project.months))


@given(case=projects_and_as_of(), per_account=st.booleans())
def test_query_equals_brute_force_for_every_window(
    case: tuple[Project, str], per_account: bool
) -> None:
    """The whole query table, for every window and the views too, equals the brute-force table."""
    project, as_of = case
    sheet = engine_sheet(project)
    reference = Reference(project)
    levels = [*sheet.levels, *sheet.views]
    for window in WINDOWS:
        expected = reference.query(as_of, window, per_account=per_account, levels=levels)
        actual = sheet.query(as_of=as_of, window=window, per_account=per_account, levels=levels)
        assert_same_table(actual, expected)
    default = sheet.query(as_of=as_of, window="12M")
    assert_same_table(default, reference.query(as_of, "12M"))


@st.composite
def projects_and_months(draw: st.DrawFn) -> tuple[Project, list[str]]:
    """A project and up to four of its months (the oldest and newest among the candidates)."""
    project = draw(projects())
    months = draw(st.lists(st.sampled_from(project.months), min_size=1, max_size=2, unique=True))
    return project, sorted({project.months[0], project.months[-1], *months})


@given(case=projects_and_months())
def test_one_month_windows_equal_the_raw_values(case: tuple[Project, list[str]]) -> None:
    """A product's 1M value is its observation of that month (rows only where one exists)."""
    project, months = case
    sheet = engine_sheet(project)
    raw = {(m, k, e): v for m, k, e, v in project.observations}
    for month in months:
        result = sheet.query(as_of=month, window="1M", levels="product", kpis=project.source_ids)
        got = values_by_key(result)
        expected = {(e, k): v for (m, k, e), v in raw.items() if m == month and not is_missing(v)}
        assert set(got) >= set(expected)
        for key, value in expected.items():
            assert got[key] == value, (month, key)
        assert all(is_missing(got[key]) for key in set(got) - set(expected))
        assert (result["months"] == result["complete"].astype(int)).all()


@given(case=projects_and_as_of())
def test_complete_three_month_sum_is_the_sum_of_three_months(case: tuple[Project, str]) -> None:
    """A complete 3M ``sum`` equals the sum of the three 1M values of its months."""
    project, as_of = case
    sheet = engine_sheet(project)
    sums = [k["id"] for k in project.kpis if k.get("time_aggregation") == "sum"]
    three = sheet.query(as_of=as_of, window="3M", kpis=sums)
    ones = [
        values_by_key(
            sheet.query(as_of=month_text(month_number(as_of) - i), window="1M", kpis=sums)
        )
        if month_number(as_of) - i >= month_number(project.months[0])
        else {}
        for i in range(3)
    ]
    complete = three[three["complete"]]
    for key, value in values_by_key(complete).items():
        assert same_number(value, sum(one[key] for one in ones)), key


@given(case=projects_and_as_of(), window=st.sampled_from(WINDOWS))
def test_last_is_the_value_of_the_as_of_month(case: tuple[Project, str], window: str) -> None:
    """A ``last`` KPI's window value is its 1M value at the as-of month, or missing without one."""
    project, as_of = case
    sheet = engine_sheet(project)
    lasts = [k["id"] for k in project.kpis if k.get("time_aggregation") == "last"]
    one = values_by_key(sheet.query(as_of=as_of, window="1M", kpis=lasts, levels=sheet.levels))
    result = sheet.query(as_of=as_of, window=window, kpis=lasts, levels=sheet.levels)
    for key, value in values_by_key(result).items():
        assert same_number(value, one.get(key, math.nan)), key


@given(case=projects_and_months())
def test_a_group_is_the_sum_of_its_children_month_by_month(
    case: tuple[Project, list[str]],
) -> None:
    """Each month, a mandant sums its products, a sector its mandants, the total its sectors;
    a group without any child value that month is missing."""
    project, months = case
    sheet = engine_sheet(project)
    rolled = [k["id"] for k in project.kpis if k.get("entity_aggregation", "sum") == "sum"]
    rolled = [k for k in rolled if k in project.source_ids]
    tree = sheet.hierarchy.to_frame()
    children = tree.groupby("parent")["entity"].apply(list).to_dict()
    for month in months:
        got = values_by_key(sheet.query(as_of=month, window="1M", kpis=rolled))
        for parent, kids in children.items():
            for kpi in rolled:
                present = [got[(kid, kpi)] for kid in kids if not is_missing(got.get((kid, kpi)))]
                expected = sum(present) if present else math.nan
                assert same_number(got.get((parent, kpi), math.nan), expected), (month, parent, kpi)


@given(
    project=projects(),
    data=st.data(),
    window=st.sampled_from(WINDOWS),
    per_account=st.booleans(),
)
def test_changing_one_series_changes_no_other_series(
    project: Project, data: st.DataObject, window: str, per_account: bool
) -> None:
    """New values for one (KPI, product) series change only rows of that product and its groups
    for that KPI and the KPIs computed from it."""
    kpi = data.draw(st.sampled_from(project.source_ids))
    product = data.draw(st.sampled_from(sorted(project.entities)))
    changed = project.with_observations(
        [
            (m, k, e, v * 3 + 1 if (k, e) == (kpi, product) else v)
            for m, k, e, v in project.observations
        ]
    )
    before, after = engine_sheet(project), engine_sheet(changed)
    touched_entities = {product, project.total, *project.entities[product].values()}
    reference = Reference(project)
    touched_kpis = {
        k["id"]
        for k in project.kpis
        if kpi in reference.leaf_components(k["id"]) or k.get("average_per") == kpi
    }
    touched_kpis |= {k["id"] for k in project.kpis if k.get("average_per") in touched_kpis}
    levels = [*before.levels, *before.views]
    old, new = (
        values_by_key(sheet.query(window=window, levels=levels, per_account=per_account))
        for sheet in (before, after)
    )
    for key in set(old) | set(new):
        if key[0] in touched_entities and key[1] in touched_kpis:
            continue
        assert same_number(old.get(key, math.nan), new.get(key, math.nan)), key
        assert key in old and key in new, key


@given(project=projects(), seed=st.integers(0, 2**32 - 1), window=st.sampled_from(WINDOWS))
def test_shuffling_input_rows_changes_nothing(project: Project, seed: int, window: str) -> None:
    """The order of the observation rows does not matter."""
    frame = project.frame()
    shuffled = frame.sample(frac=1, random_state=seed % 2**32).reset_index(drop=True)
    sheet = engine_sheet(project)
    levels = [*sheet.levels, *sheet.views]
    original = sheet.query(window=window, levels=levels, per_account=True)
    again = open_sheet(project, shuffled).query(window=window, levels=levels, per_account=True)
    pd.testing.assert_frame_equal(original, again)


@given(case=projects_and_as_of(), window=st.sampled_from(WINDOWS), per_account=st.booleans())
def test_previous_year_is_the_query_twelve_months_earlier(
    case: tuple[Project, str], window: str, per_account: bool
) -> None:
    """``previous_value``, ``previous_months`` and ``previous_complete`` equal value, months and
    complete of the same query at as-of − 12 months."""
    project, as_of = case
    sheet = engine_sheet(project)
    levels = [*sheet.levels, *sheet.views]
    result = sheet.query(as_of=as_of, window=window, per_account=per_account, levels=levels)
    previous_as_of = month_text(month_number(as_of) - 12)
    if previous_as_of < project.months[0]:
        assert result["previous_value"].isna().all()
        assert (result["previous_months"] == 0).all()
        assert not result["previous_complete"].any()
        return
    earlier = sheet.query(
        as_of=previous_as_of, window=window, per_account=per_account, levels=levels
    )
    for column, previous_column, missing in (
        ("value", "previous_value", math.nan),
        ("months", "previous_months", 0),
        ("complete", "previous_complete", False),
    ):
        before = values_by_key(earlier, column)
        for key, value in values_by_key(result, previous_column).items():
            assert same_number(value, before.get(key, missing)), (column, key)


def _series_months(project: Project, kpi: str, leaf: str) -> list[str]:
    """The months in which a (source KPI, leaf) series has a value, oldest first."""
    return sorted(
        m for m, k, e, v in project.observations if (k, e) == (kpi, leaf) and not is_missing(v)
    )


def _ancestors(project: Project, leaf: str) -> set[str]:
    """The leaf, its groups on every level and view, and the total."""
    return {leaf, project.total, *(g for g in project.entities[leaf].values() if g)}


@st.composite
def inner_gaps(draw: st.DrawFn) -> tuple[Project, str, str, str]:
    """A project and a (KPI, leaf, month) whose value lies strictly inside the series' lifetime."""
    project = draw(projects())
    candidates = [
        (kpi, leaf, month)
        for kpi in project.source_ids
        for leaf in project.entities
        for month in _series_months(project, kpi, leaf)[1:-1]
    ]
    if not candidates:
        project = project.with_observations(
            [
                *project.observations,
                *(
                    (project.months[i], project.source_ids[0], next(iter(project.entities)), 5.0)
                    for i in range(3)
                ),
            ]
        )
        project = project.with_observations(list({r[:3]: r for r in project.observations}.values()))
        candidates = [(project.source_ids[0], next(iter(project.entities)), project.months[1])]
    return (project, *draw(st.sampled_from(candidates)))


@given(case=inner_gaps())
def test_a_member_gap_makes_every_ancestor_incomplete_in_that_month_only(
    case: tuple[Project, str, str, str],
) -> None:
    """Removing one value inside a series' lifetime makes the product and all its groups
    incomplete in that month for that KPI, and changes no 1M flag of any other month."""
    project, kpi, leaf, gap = case
    without = project.with_observations(
        [row for row in project.observations if row[:3] != (gap, kpi, leaf)]
    )
    before, after = engine_sheet(project), engine_sheet(without)
    levels = [*before.levels, *before.views]
    for month in project.months:
        old = values_by_key(before.query(as_of=month, window="1M", levels=levels), "complete")
        new = values_by_key(after.query(as_of=month, window="1M", levels=levels), "complete")
        if month == gap:
            for entity in _ancestors(project, leaf):
                assert not new.get((entity, kpi), False), (entity, month)
        else:
            for key in set(old) | set(new):
                assert old.get(key, False) == new.get(key, False), (key, month)


@st.composite
def shortened_series(draw: st.DrawFn) -> tuple[Project, str, str, str, bool]:
    """A project, a (KPI, leaf) series with at least two values, a cut month inside it and
    whether the series is cut at its start (a later launch) or its end (an earlier stop)."""
    project = draw(projects())
    series = [
        (kpi, leaf)
        for kpi in project.source_ids
        for leaf in project.entities
        if len(_series_months(project, kpi, leaf)) >= 2
    ]
    if not series:
        leaf = next(iter(project.entities))
        rows = {r[:3]: r for r in project.observations}
        for month in project.months[:2]:
            rows[(month, project.source_ids[0], leaf)] = (month, project.source_ids[0], leaf, 3.0)
        project = project.with_observations(list(rows.values()))
        series = [(project.source_ids[0], leaf)]
    kpi, leaf = draw(st.sampled_from(series))
    months = _series_months(project, kpi, leaf)
    launch = draw(st.booleans())
    cut = draw(st.sampled_from(months[1:] if launch else months[:-1]))
    return project, kpi, leaf, cut, launch


@given(case=shortened_series())
def test_launches_and_discontinuations_never_make_a_group_incomplete(
    case: tuple[Project, str, str, str, bool],
) -> None:
    """A product that launches later (or stops earlier) is not expected before (after) that, so
    any group that was complete in such a month stays complete while it has a value."""
    project, kpi, leaf, cut, launch = case

    def kept(month: str) -> bool:
        return month >= cut if launch else month <= cut

    shortened = project.with_observations(
        [row for row in project.observations if (row[1], row[2]) != (kpi, leaf) or kept(row[0])]
    )
    before, after = engine_sheet(project), engine_sheet(shortened)
    levels = [*before.levels, *before.views]
    groups = _ancestors(project, leaf) - {leaf}
    still_in_data = {str(month) for month in after.months}  # the cut may shorten the sheet
    for month in project.months:
        if kept(month) or month not in still_in_data:
            continue
        old = before.query(as_of=month, window="1M", kpis=kpi, levels=levels)
        new = after.query(as_of=month, window="1M", kpis=kpi, levels=levels)
        was_complete = values_by_key(old, "complete")
        is_complete, has_value = values_by_key(new, "complete"), values_by_key(new)
        for group in groups:
            key = (group, kpi)
            if was_complete.get(key, False) and not is_missing(has_value.get(key, math.nan)):
                assert is_complete[key], (group, month)


@given(case=projects_and_as_of(), window=st.sampled_from(WINDOWS))
def test_a_stock_is_complete_exactly_when_its_deciding_month_is(
    case: tuple[Project, str], window: str
) -> None:
    """A ``last`` KPI is complete over any window iff its 1M value at the as-of month is; a
    ``first`` KPI iff its 1M value at the window's first month is (never before the data)."""
    project, as_of = case
    sheet = engine_sheet(project)
    levels = [*sheet.levels, *sheet.views]
    rules = {k["id"]: k.get("time_aggregation") for k in project.kpis}
    for rule in ("last", "first"):
        kpis = [kpi for kpi, r in rules.items() if r == rule]
        if not kpis:
            continue
        result = sheet.query(as_of=as_of, window=window, kpis=kpis, levels=levels)
        months = [month_text(m) for m in window_months(month_number(as_of), window)]
        deciding = months[-1] if rule == "last" else months[0]
        one = (
            values_by_key(
                sheet.query(as_of=deciding, window="1M", kpis=kpis, levels=levels), "complete"
            )
            if deciding >= project.months[0]
            else {}
        )
        for key, complete in values_by_key(result, "complete").items():
            assert complete == one.get(key, False), (rule, key)


#: Examples of the tests whose reference asks the sheet row by row (up to a second each).
ROW_BY_ROW_EXAMPLES = min(60, settings.default.max_examples)


def _reasons_by_coverage(
    result: pd.DataFrame, sheet: kpisheet.sheet.KPISheet, per_account: bool
) -> list[str]:
    """The reasons as :meth:`KPISheet.coverage` explains each row on its own: where the words
    without the sheet say only that members did not report, the first deciding uncovered month
    of that window and the expected members missing then (a member named once)."""
    plain = incomplete_reasons(result, sheet.registry, per_account=per_account)
    expected = []
    for row, reason in enumerate(plain):
        record = result.iloc[row]
        parts = []
        for part in reason.split("; ") if reason else []:
            word, _, text = part.partition(": ")
            if text == "nicht alle erwarteten Produkte haben gemeldet":
                coverage = sheet.coverage(
                    record["kpi"],
                    record["entity"],
                    as_of=record["as_of"],
                    window=record["window"],
                    per_account=per_account,
                )
                period = "current" if word == CURRENT_WINDOW_WORD else "previous"
                culprits = coverage[
                    (coverage["period"] == period) & coverage["decides"] & ~coverage["covered"]
                ]
                if len(culprits):
                    first = culprits["month"].min()
                    names = culprits.loc[culprits["month"] == first, "missing"]
                    missing = list(dict.fromkeys(name for tuple_ in names for name in tuple_))
                    month = month_long(first)
                    if not missing:
                        text = f"kein Wert im {month}"
                    elif len(missing) == 1:
                        text = f"Mitglied fehlt im {month}: {members_text(missing)}"
                    else:
                        text = f"Mitglieder fehlen im {month}: {members_text(missing)}"
            parts.append(f"{word}: {text}")
        expected.append("; ".join(parts))
    return expected


@settings(deadline=None, max_examples=ROW_BY_ROW_EXAMPLES)  # the reference asks row by row
@given(case=projects_and_as_of(), window=st.sampled_from(WINDOWS), per_account=st.booleans())
def test_the_batch_reasons_equal_the_reasons_row_by_row(
    case: tuple[Project, str], window: str, per_account: bool
) -> None:
    """The reasons the engine's batch lookup gives for a whole result (every level and view)
    equal those :meth:`KPISheet.coverage` gives row by row: the same first month, the same
    members in the same order."""
    project, as_of = case
    sheet = engine_sheet(project)
    levels = [*sheet.levels, *sheet.views]
    result = sheet.query(as_of=as_of, window=window, per_account=per_account, levels=levels)
    actual = incomplete_reasons(result, sheet.registry, sheet=sheet, per_account=per_account)
    assert list(actual) == _reasons_by_coverage(result, sheet, per_account)


@settings(deadline=None, max_examples=ROW_BY_ROW_EXAMPLES)  # the reference asks row by row
@given(
    case=projects_and_as_of(),
    window=st.sampled_from(WINDOWS),
    per_account=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_first_gaps_equal_coverage_for_any_kpi_and_entity(
    case: tuple[Project, str], window: str, per_account: bool, seed: int
) -> None:
    """For any KPI and entity (also those a query leaves out, such as a KPI not rolled up at a
    group) and both windows, the engine's batch lookup finds the first deciding uncovered month
    and its missing members exactly as :meth:`KPISheet.coverage` does for the one row."""
    project, as_of = case
    sheet = engine_sheet(project)
    cube = sheet._cube
    every = [(k, e) for k in sheet.registry.ids for e in dict.fromkeys(cube.entities)]
    rng = np.random.default_rng(seed)
    pairs = [every[i] for i in rng.choice(len(every), min(len(every), 40), replace=False)]
    leaves = list(sheet.hierarchy.leaves)
    gaps = {}
    for offset, period in ((0, "current"), (12, "previous")):
        first, last = window_bounds(pd.Period(as_of, freq="M") - offset, Window(window))
        gaps[period] = engine.first_gaps(
            cube,
            [k for k, _ in pairs],
            [e for _, e in pairs],
            np.full(len(pairs), cube.month_position(first)),
            np.full(len(pairs), cube.month_position(last)),
            per_account=per_account,
        )
    for row, (kpi, entity) in enumerate(pairs):
        coverage = sheet.coverage(kpi, entity, as_of=as_of, window=window, per_account=per_account)
        for period, found in gaps.items():
            culprits = coverage[
                (coverage["period"] == period) & coverage["decides"] & ~coverage["covered"]
            ]
            assert found.found[row] == bool(len(culprits)), (period, kpi, entity)
            if not len(culprits):
                continue
            month = culprits["month"].min()
            names = culprits.loc[culprits["month"] == month, "missing"]
            missing = list(dict.fromkeys(name for tuple_ in names for name in tuple_))
            named = [leaves[i] for i in found.missing_leaves[found.missing_rows == row]]
            assert (cube.first + int(found.month[row])).strftime("%Y-%m") == month, (kpi, entity)
            assert named == missing, (period, kpi, entity)
