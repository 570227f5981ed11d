"""Tests of kpisheet.registry: cross-file checks, declared order, origins and the generated sets."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kpisheet
from kpisheet.constants import TimeAggregation
from kpisheet.errors import DefinitionError, Problem
from kpisheet.plugins import BUILTIN_PLUGIN, EXPLICIT_ORIGIN
from kpisheet.registry import MAX_DERIVED_DEPTH, load_registry
from tests.strategies import MUTATIONS, DefinitionSet, Mutation, definition_sets

DEMO_IDS = (
    "turnover",
    "turnover_domestic",
    "turnover_abroad",
    "turnover_per_transaction",
    "turnover_abroad_share",
    "transactions",
    "transactions_domestic",
    "transactions_abroad",
    "active_accounts",
    "valid_accounts",
    "activity_rate",
    "nca_received",
    "nca_approved",
    "nca_approval_rate",
)


@contextmanager
def written(definitions: DefinitionSet) -> Iterator[Path]:
    """The definition set written into a fresh directory (hypothesis runs many per test)."""
    with tempfile.TemporaryDirectory() as name:
        yield definitions.write(Path(name).resolve())


def write(directory: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (name -> YAML text) into ``directory``."""
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def kpi_yaml(kpi_id: str, **fields: str) -> str:
    """YAML of one list item: a KPI with the required fields, overridden or extended by ``fields``."""
    data = {"label": kpi_id.title(), "group": "G", "unit": "count", "time_aggregation": "sum"}
    if "formula" in fields:
        del data["time_aggregation"]
    data.update(fields)
    return f"- id: {kpi_id}\n" + "".join(f"  {key}: {value}\n" for key, value in data.items())


def problems_of(directory: Path) -> list[str]:
    """The problems loading ``directory`` reports, as text; fails when it loads."""
    with pytest.raises(DefinitionError) as info:
        kpisheet.load_kpis(directory)
    return [str(problem) for problem in info.value.problems]


# --- generated definition sets ---------------------------------------------------------------


@given(definitions=definition_sets())
def test_valid_sets_load_in_declared_order_with_origins(definitions: DefinitionSet) -> None:
    """Every valid generated set loads, in declared order, each KPI remembering its file."""
    with written(definitions) as directory:
        registry = kpisheet.load_kpis(directory)
        assert registry.ids == tuple(definitions.ids)
        for kpi_id in definitions.ids:
            origin = registry.origin(kpi_id)
            assert origin.file == str(directory / definitions.file_of(kpi_id))
            assert origin.plugin == EXPLICIT_ORIGIN


@given(definitions=definition_sets())
def test_valid_sets_keep_every_field(definitions: DefinitionSet) -> None:
    """Every field written to YAML comes back unchanged on the loaded definition."""
    with written(definitions) as directory:
        registry = kpisheet.load_kpis(directory)
    for expected in definitions.kpis:
        kpi = registry[expected["id"]]
        assert kpi.label == expected["label"]
        assert kpi.group == expected["group"]
        assert kpi.unit == expected["unit"]
        assert kpi.time_aggregation == expected.get("time_aggregation")
        assert kpi.entity_aggregation == expected.get("entity_aggregation", "sum")
        assert kpi.average_per == expected.get("average_per")
        assert kpi.description == expected.get("description", "")
        assert kpi.formula == expected.get("formula")
        source = kpi.source.model_dump(exclude_none=True) if kpi.source else None
        assert source == expected.get("source")


@given(definitions=definition_sets())
def test_valid_sets_formula_structure(definitions: DefinitionSet) -> None:
    """References, leaf components, stock-ness and evaluation order match a brute-force reference."""
    with written(definitions) as directory:
        registry = kpisheet.load_kpis(directory)
    derived = [kpi["id"] for kpi in definitions.kpis if "formula" in kpi]
    assert [kpi.id for kpi in registry.source_kpis] == [
        kpi_id for kpi_id in definitions.ids if kpi_id not in derived
    ]
    assert sorted(kpi.id for kpi in registry.derived_kpis) == sorted(derived)
    for kpi_id in definitions.ids:
        assert registry[kpi_id].is_derived == (kpi_id in derived)
        if kpi_id in derived:
            assert registry[kpi_id].parsed_formula.references == definitions.references(kpi_id)
        leaves = definitions.leaf_components(kpi_id)
        assert set(registry.leaf_components(kpi_id)) == leaves
        assert registry.is_stock(kpi_id) == any(
            definitions.kpi(leaf)["time_aggregation"] != "sum" for leaf in leaves
        )
    order = registry.evaluation_order
    assert sorted(order) == sorted(definitions.ids)
    for kpi_id in definitions.ids:
        for ref in definitions.references(kpi_id):
            assert order.index(ref) < order.index(kpi_id)
    evaluated = [kpi.id for kpi in registry.derived_kpis]
    for kpi_id in evaluated:
        for ref in definitions.depends_on(kpi_id) & set(derived):
            assert evaluated.index(ref) < evaluated.index(kpi_id)


@given(definitions=definition_sets())
def test_valid_sets_groups(definitions: DefinitionSet) -> None:
    """Groups are listed in order of first appearance and each lists its KPIs in declared order."""
    with written(definitions) as directory:
        registry = kpisheet.load_kpis(directory)
    expected_groups = list(dict.fromkeys(kpi["group"] for kpi in definitions.kpis))
    assert list(registry.groups) == expected_groups
    for group in expected_groups:
        assert [kpi.id for kpi in registry.in_group(group)] == [
            kpi["id"] for kpi in definitions.kpis if kpi["group"] == group
        ]


def describes(problem: Problem, mutation: Mutation, directory: Path) -> bool:
    """True when ``problem`` reports the mutation: right file, KPI, field, line and words."""
    expected = mutation.expected
    definitions = mutation.definitions
    text = str(problem)
    if expected.cycle:
        members = problem.message.removeprefix("formula cycle: ").split(" -> ")
        if not set(expected.cycle) <= set(members) or problem.kpi not in members:
            return False
        file = definitions.file_of(problem.kpi)
    else:
        file = expected.file
        if problem.kpi != expected.kpi:
            return False
        if expected.kpi is not None and f"KPI '{expected.kpi}'" not in text:
            return False
    if problem.file != str(directory / file) or not text.startswith(f"{problem.file}:"):
        return False
    if problem.field != expected.field:
        return False
    if expected.field is not None and expected.field not in problem.message:
        return False
    if not all(word in problem.message for word in expected.words):
        return False
    if expected.line is not None and problem.line != expected.line:
        return False
    if expected.line_text is not None:
        lines = (directory / file).read_text(encoding="utf-8").splitlines()
        if problem.line is None or expected.line_text not in lines[problem.line - 1]:
            return False
    return True


@pytest.mark.parametrize("kind", sorted(MUTATIONS))
@given(data=st.data())
def test_mutations_are_rejected_naming_field_kpi_and_file(kind: str, data: st.DataObject) -> None:
    """Each kind of broken definition set is rejected with a problem that pinpoints the mutation."""
    mutation = data.draw(MUTATIONS[kind], label="mutation")
    with written(mutation.definitions) as directory:
        with pytest.raises(DefinitionError) as info:
            kpisheet.load_kpis(directory)
        problems = info.value.problems
        assert any(describes(problem, mutation, directory) for problem in problems), (
            mutation.expected,
            [str(problem) for problem in problems],
        )


# --- the demo sheet --------------------------------------------------------------------------


def test_demo_registry_ids_groups_and_origins() -> None:
    """The built-in sheet has its 14 KPIs in file order, four groups, all from the built-in plugin."""
    registry = kpisheet.load_kpis(manager=kpisheet.get_plugin_manager(entry_points=False))
    assert registry.ids == DEMO_IDS
    assert registry.groups == ("Umsatz", "Anzahl Trx", "Konten", "NCA")
    assert {registry.origin(kpi_id).plugin for kpi_id in registry.ids} == {BUILTIN_PLUGIN}
    assert registry.origin("active_accounts").file.endswith("30_konten.yaml")
    assert repr(registry) == "<Registry of 14 KPIs in 4 groups>"


def test_demo_registry_stocks_and_components() -> None:
    """Account counts are stocks, and so is every derived KPI resting on one; flows are not."""
    registry = kpisheet.load_kpis(manager=kpisheet.get_plugin_manager(entry_points=False))
    assert registry["active_accounts"].time_aggregation is TimeAggregation.LAST
    assert registry.is_stock("active_accounts")
    assert registry.is_stock("activity_rate")
    assert not registry.is_stock("turnover")
    assert not registry.is_stock("turnover_per_transaction")
    assert registry.leaf_components("turnover_per_transaction") == ("turnover", "transactions")
    assert registry.leaf_components("turnover") == ("turnover",)
    assert [kpi.id for kpi in registry.in_group("Konten")] == [
        "active_accounts",
        "valid_accounts",
        "activity_rate",
    ]


def test_registry_lookup() -> None:
    """``get`` gives ``None`` for an unknown id, ``[]`` raises KeyError, ``in`` and ``len`` work."""
    registry = kpisheet.load_kpis(manager=kpisheet.get_plugin_manager(entry_points=False))
    assert registry.get("turnover").label == "Umsatz Total"
    assert registry.get("umsatz") is None
    assert "turnover" in registry
    assert "umsatz" not in registry
    assert len(registry) == 14
    with pytest.raises(KeyError):
        registry["umsatz"]


# --- cross-file problems ---------------------------------------------------------------------


def test_duplicate_id_names_both_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A KPI declared in two files is reported at the second, naming the first with its line."""
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path, {"a.yaml": kpi_yaml("x") + kpi_yaml("turnover"), "b.yaml": kpi_yaml("turnover")}
    )
    with pytest.raises(
        DefinitionError,
        match=re.escape("b.yaml:1: KPI 'turnover': duplicate id; already declared in a.yaml:6"),
    ):
        kpisheet.load_kpis(tmp_path)


def test_unknown_references_with_suggestions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Formulas and average_per naming unknown KPIs are reported, with the close match or the list."""
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path,
        {
            "a.yaml": kpi_yaml("turnover", average_per="active_acounts")
            + kpi_yaml("active_accounts")
            + kpi_yaml("per_account", formula="turnover / active_acount + zzz"),
        },
    )
    assert problems_of(tmp_path) == [
        "a.yaml:6: KPI 'turnover': average_per references unknown KPI 'active_acounts'; "
        "did you mean 'active_accounts'?",
        "a.yaml:16: KPI 'per_account': formula 'turnover / active_acount + zzz' references "
        "unknown KPI 'active_acount'; did you mean 'active_accounts'?",
        "a.yaml:16: KPI 'per_account': formula 'turnover / active_acount + zzz' references "
        "unknown KPI 'zzz'; known KPIs: turnover, active_accounts, per_account",
    ]


def test_formula_cycles_all_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each independent formula cycle is one problem, self-references included."""
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path,
        {
            "a.yaml": kpi_yaml("a", formula="b + 1")
            + kpi_yaml("b", formula="a * 2")
            + kpi_yaml("c", formula="c / 2")
            + kpi_yaml("d")
            + kpi_yaml("e", formula="d - a"),
        },
    )
    problems = problems_of(tmp_path)
    assert len(problems) == 2
    assert problems[0] in (
        "a.yaml:5: KPI 'a': formula cycle: a -> b -> a",
        "a.yaml:10: KPI 'b': formula cycle: b -> a -> b",
    )
    assert problems[1] == "a.yaml:15: KPI 'c': formula cycle: c -> c"


def test_reference_to_invalid_kpi_is_not_called_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A formula naming a KPI that is declared but invalid reports only the KPI's own problem."""
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path,
        {
            "a.yaml": kpi_yaml("turnover", unit="chf"),
            "b.yaml": kpi_yaml("per", formula="turnover / 2", average_per="turnover"),
        },
    )
    assert problems_of(tmp_path) == [
        "a.yaml:4: KPI 'turnover': unit 'chf' is not one of: count, currency, percent, ratio"
    ]


def test_problems_listed_in_file_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Problems come in the order the files were read, by line within a file, cross-file ones too."""
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path,
        {
            "a.yaml": kpi_yaml("x") + kpi_yaml("y", unit="chf"),
            "b.yaml": kpi_yaml("x"),
            "c.yaml": "- id: [broken\n",
        },
    )
    problems = problems_of(tmp_path)
    assert [problem.split(":")[0] for problem in problems] == ["a.yaml", "b.yaml", "c.yaml"]


def test_missing_path_and_empty_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path that does not exist is a problem naming who gave it; no YAML at all says where it looked."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DefinitionError,
        match=re.escape("nope.yaml: no such file or directory (from my_plugin)"),
    ):
        load_registry([(Path("nope.yaml"), "my_plugin")])
    with pytest.raises(
        DefinitionError,
        match=re.escape("1 problem in KPI definitions:\n  no KPI definitions found in empty"),
    ):
        kpisheet.load_kpis("empty")


def test_same_file_twice_is_loaded_once(tmp_path: Path) -> None:
    """A file reached twice (directly and through its directory) is read once, not a duplicate."""
    write(tmp_path, {"a.yaml": kpi_yaml("x")})
    registry = kpisheet.load_kpis([tmp_path / "a.yaml", tmp_path])
    assert registry.ids == ("x",)


def test_invalid_kpis_still_take_part_in_cross_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KPI that failed validation still has its references checked and its id counted once."""
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path,
        {
            "a.yaml": kpi_yaml("x", unit="chf", average_per="nope")
            + kpi_yaml("rate", formula="x / y", group="''"),
            "b.yaml": kpi_yaml("x"),
        },
    )
    assert problems_of(tmp_path) == [
        "a.yaml:4: KPI 'x': unit 'chf' is not one of: count, currency, percent, ratio",
        "a.yaml:6: KPI 'x': average_per references unknown KPI 'nope'; known KPIs: x, rate",
        "a.yaml:9: KPI 'rate': group: string should have at least 1 character, got ''",
        "a.yaml:11: KPI 'rate': formula 'x / y' references unknown KPI 'y'; known KPIs: x, rate",
        "b.yaml:1: KPI 'x': duplicate id; already declared in a.yaml:1",
    ]


def chain_file(path: Path, length: int) -> Path:
    """A source KPI ``k0`` and ``length`` derived KPIs, each the one before plus one."""
    parts = ["- id: k0\n  label: K\n  group: G\n  unit: count\n  time_aggregation: sum\n"]
    parts += [
        f"- id: k{i}\n  label: K{i}\n  group: G\n  unit: count\n  formula: k{i - 1} + 1\n"
        for i in range(1, length + 1)
    ]
    path.write_text("".join(parts), encoding="utf-8")
    return path


def test_chain_of_1500_derived_kpis_is_refused_at_validation(tmp_path: Path) -> None:
    """A chain of derived KPIs deeper than the limit is a problem at the first KPI beyond it."""
    path = chain_file(tmp_path / "chain.yaml", 1500)
    depth = MAX_DERIVED_DEPTH
    with pytest.raises(DefinitionError) as info:
        load_registry([(path, "")])
    assert str(info.value) == (
        "1 problem in KPI definitions:\n"
        f"  {path}:{5 * depth + 10}: KPI 'k{depth + 1}': formula rests on a chain of more than "
        f"{depth} derived KPIs (k{depth + 1} -> k{depth} -> k{depth - 1} -> k{depth - 2} -> ...); "
        f"at most {depth} may build on each other"
    )


def test_chain_at_the_limit_loads_and_is_computed(tmp_path: Path) -> None:
    """A chain exactly as deep as allowed loads, and its last KPI is computed from the first."""
    registry = load_registry([(chain_file(tmp_path / "chain.yaml", MAX_DERIVED_DEPTH), "")])
    last = f"k{MAX_DERIVED_DEPTH}"
    assert registry.leaf_components(last) == ("k0",)
    sheet_data = pd.DataFrame(
        {"month": ["2024-01"], "kpi": ["k0"], "entity": ["Alpine Visa Gold"], "value": [1.0]}
    )
    sheet = kpisheet.open(sheet_data, definitions=[tmp_path / "chain.yaml"])
    result = sheet.query(kpis=[last], entities=["Alpine Visa Gold"])
    assert result["value"].tolist() == [1.0 + MAX_DERIVED_DEPTH]
