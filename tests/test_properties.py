"""Property tests of the engine (SPEC §6) on generated sheets, against a brute-force reference.

The reference (:mod:`tests.reference`) loops over months in plain Python; the sheets
(:func:`tests.strategies.projects`) have gaps, late starts, early ends, months without any
value (also the newest) and zeros.
"""

from __future__ import annotations

import functools
import math
import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

import kpisheet.sheet
from kpisheet.constants import Window
from kpisheet.hierarchy import Hierarchy, load_hierarchy
from kpisheet.plugins import load_kpis
from kpisheet.registry import Registry
from tests.reference import Reference, assert_same_table, is_missing, month_number, month_text
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
    """``previous_value`` equals the value of the same query at as-of − 12 months."""
    project, as_of = case
    sheet = engine_sheet(project)
    result = sheet.query(as_of=as_of, window=window, per_account=per_account)
    previous_as_of = month_text(month_number(as_of) - 12)
    if previous_as_of < project.months[0]:
        assert result["previous_value"].isna().all()
        return
    earlier = values_by_key(
        sheet.query(as_of=previous_as_of, window=window, per_account=per_account)
    )
    for key, value in values_by_key(result, "previous_value").items():
        assert same_number(value, earlier.get(key, math.nan)), key
