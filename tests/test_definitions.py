"""Tests of kpisheet.definitions: the KPI model, the YAML loader and its messages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import kpisheet
from kpisheet.constants import EntityAggregation, TimeAggregation, Unit
from kpisheet.definitions import FIELDS, KPIDefinition, iter_definition_files, load_file
from kpisheet.errors import DefinitionError

TURNOVER = """\
id: turnover
label: Umsatz Total
group: Umsatz
unit: currency
time_aggregation: sum
average_per: active_accounts
source: {kpi_name: "Umsatz Total"}
"""

ACCOUNTS = """\
- id: active_accounts
  label: Anzahl aktive Konten
  group: Konten
  unit: count
  time_aggregation: last
  description: Accounts with at least one transaction in the month.
  source: {kpi_name: "Anzahl aktive Konten Total"}

- id: activity_rate
  label: Aktivitätsquote
  group: Konten
  unit: percent
  formula: active_accounts / valid_accounts
"""


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory, so messages show short relative file names."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def problems(directory: Path, files: dict[str, str]) -> list[str]:
    """Write ``files`` and return every problem loading them reports, as text."""
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    with pytest.raises(DefinitionError) as info:
        kpisheet.load_kpis(directory)
    return [str(problem) for problem in info.value.problems]


# --- valid files -----------------------------------------------------------------------------


def test_file_with_one_mapping(here: Path) -> None:
    """A file may hold a single KPI as a mapping; every field is read and typed."""
    (here / "umsatz.yaml").write_text(TURNOVER, encoding="utf-8")
    loaded, found = load_file(here / "umsatz.yaml", plugin="p")
    assert found == []
    [item] = loaded
    kpi = item.definition
    assert kpi.id == "turnover"
    assert kpi.unit is Unit.CURRENCY
    assert kpi.time_aggregation is TimeAggregation.SUM
    assert kpi.entity_aggregation is EntityAggregation.SUM
    assert kpi.average_per == "active_accounts"
    assert kpi.source.kpi_name == "Umsatz Total"
    assert kpi.description == ""
    assert not kpi.is_derived
    assert kpi.references == ("active_accounts",)
    assert (item.origin.file, item.origin.line, item.origin.plugin) == ("umsatz.yaml", 1, "p")
    assert item.origin.line_of("source") == 7
    assert str(item.origin) == "p: umsatz.yaml"


def test_file_with_a_list(here: Path) -> None:
    """A file may hold a list of KPIs; each remembers the line it starts on."""
    (here / "konten.yaml").write_text(ACCOUNTS, encoding="utf-8")
    loaded, found = load_file(here / "konten.yaml")
    assert found == []
    assert [item.definition.id for item in loaded] == ["active_accounts", "activity_rate"]
    assert [item.origin.line for item in loaded] == [1, 9]
    rate = loaded[1].definition
    assert rate.is_derived
    assert rate.time_aggregation is None
    assert rate.parsed_formula.references == ("active_accounts", "valid_accounts")
    assert rate.references == ("active_accounts", "valid_accounts")
    assert loaded[1].origin.line_of("formula") == 13


def test_directories_are_searched_recursively_in_sorted_order(here: Path) -> None:
    """Directories yield their .yaml and .yml files, recursively and sorted; other files are skipped."""
    for name in ["b.yaml", "a.yml", "sub/c.yaml", "notes.txt", "sub/deeper/d.yml"]:
        (here / name).parent.mkdir(parents=True, exist_ok=True)
        (here / name).write_text("", encoding="utf-8")
    found = [path.relative_to(here).as_posix() for path in iter_definition_files([here])]
    assert found == ["a.yml", "b.yaml", "sub/c.yaml", "sub/deeper/d.yml"]


def test_fields_are_the_documented_ones() -> None:
    """The model has exactly the fields docs/kpi-definitions.md describes, in this order."""
    assert FIELDS == (
        "id",
        "label",
        "group",
        "unit",
        "time_aggregation",
        "entity_aggregation",
        "average_per",
        "description",
        "source",
        "formula",
        "highlight",
    )


def test_model_rejects_invalid_combinations_directly() -> None:
    """Built in Python, a KPI with both formula and source is rejected too."""
    with pytest.raises(
        ValueError, match=re.escape("a KPI with a formula is derived and takes no source")
    ):
        KPIDefinition(
            id="x", label="X", group="G", unit="ratio", formula="a / b", source={"kpi_name": "X"}
        )


# --- problems, each message exactly ----------------------------------------------------------


def test_yaml_syntax_error_with_line(here: Path) -> None:
    """A YAML syntax error names the file and the line, and other files are still checked."""
    assert problems(
        here,
        {
            "a.yaml": "- id: x\n  label: [unclosed\n  group: G\n",
            "b.yaml": "id: y\nlabel: Y\ngroup: G\nunit: count\ntime_aggregation: summe\n",
        },
    ) == [
        "a.yaml:3: YAML syntax error: while parsing a flow sequence, expected ',' or ']', "
        "but got ':'",
        "b.yaml:5: KPI 'y': time_aggregation 'summe' is not one of: sum, last, first, mean, min, max",
    ]


def test_unknown_key_suggests_the_close_match(here: Path) -> None:
    """An unknown key names the close match and lists the allowed keys, at the key's line;
    the invalid KPI's references are still checked in the same run."""
    text = TURNOVER.replace("group:", "grup:").replace("kpi_name:", "kpi_nme:")
    assert problems(here, {"a.yaml": text}) == [
        "a.yaml:1: KPI 'turnover': missing required field 'group'",
        "a.yaml:3: KPI 'turnover': unknown key 'grup' (did you mean 'group'?); allowed keys: "
        "id, label, group, unit, time_aggregation, entity_aggregation, average_per, description, "
        "source, formula, highlight",
        "a.yaml:6: KPI 'turnover': average_per references unknown KPI 'active_accounts'; "
        "known KPIs: turnover",
        "a.yaml:7: KPI 'turnover': unknown key 'source.kpi_nme' (did you mean 'kpi_name'?); "
        "allowed keys: kpi_name, kpi_id, period_id",
    ]


def test_missing_required_fields(here: Path) -> None:
    """Each missing required field is one problem at the KPI's first line."""
    assert problems(
        here,
        {"a.yaml": "- id: x\n  unit: count\n\n- id: y\n  label: Y\n  group: G\n  unit: count\n"},
    ) == [
        "a.yaml:1: KPI 'x': missing required field 'time_aggregation' (every KPI without a "
        "formula needs one of: sum, last, first, mean, min, max)",
        "a.yaml:1: KPI 'x': missing required field 'label'",
        "a.yaml:1: KPI 'x': missing required field 'group'",
        "a.yaml:4: KPI 'y': missing required field 'time_aggregation' (every KPI without a "
        "formula needs one of: sum, last, first, mean, min, max)",
    ]


def test_missing_id(here: Path) -> None:
    """A KPI without an id is reported at its line without a KPI name."""
    assert problems(
        here, {"a.yaml": "label: X\ngroup: G\nunit: count\ntime_aggregation: sum\n"}
    ) == ["a.yaml:1: missing required field 'id'"]


def test_wrong_words_list_the_allowed_ones(here: Path) -> None:
    """Unit and aggregation words not in the vocabulary are named with the allowed values."""
    text = "id: x\nlabel: X\ngroup: G\nunit: CHF\ntime_aggregation: Sum\nentity_aggregation: mean\n"
    assert problems(here, {"a.yaml": text}) == [
        "a.yaml:4: KPI 'x': unit 'CHF' is not one of: count, currency, percent, ratio",
        "a.yaml:5: KPI 'x': time_aggregation 'Sum' is not one of: sum, last, first, mean, min, max",
        "a.yaml:6: KPI 'x': entity_aggregation 'mean' is not one of: sum, none",
    ]


def test_id_must_be_snake_case(here: Path) -> None:
    """An id with capitals or dashes is rejected with the rule spelt out."""
    text = "id: Umsatz-Total\nlabel: X\ngroup: G\nunit: count\ntime_aggregation: sum\n"
    assert problems(here, {"a.yaml": text}) == [
        "a.yaml:1: KPI 'Umsatz-Total': id 'Umsatz-Total' is not snake_case (lower-case letters, "
        "digits and '_', starting with a letter)"
    ]


def test_formula_combinations(here: Path) -> None:
    """A derived KPI takes neither a source nor a time_aggregation."""
    text = (
        "id: x\nlabel: X\ngroup: G\nunit: ratio\nformula: x * 2\n"
        "time_aggregation: sum\nsource: {kpi_name: X}\n"
    )
    assert problems(here, {"a.yaml": text}) == [
        "a.yaml:5: KPI 'x': formula cycle: x -> x",
        "a.yaml:6: KPI 'x': a KPI with a formula is evaluated after aggregation and takes no "
        "time_aggregation; remove it or the formula",
        "a.yaml:7: KPI 'x': a KPI with a formula is derived and takes no source",
    ]


def test_formula_syntax_error(here: Path) -> None:
    """A formula that does not parse is reported at its line with the position in the formula."""
    text = "id: x\nlabel: X\ngroup: G\nunit: ratio\nformula: turnover // transactions\n"
    assert problems(here, {"a.yaml": text}) == [
        "a.yaml:5: KPI 'x': formula 'turnover // transactions': expected a number, a KPI id or "
        "'(' at position 11, found '/'"
    ]


def test_formula_without_kpi(here: Path) -> None:
    """A formula of numbers only is no derived KPI and is rejected."""
    text = "id: x\nlabel: X\ngroup: G\nunit: ratio\nformula: (1 + 2) * 3\n"
    assert problems(here, {"a.yaml": text}) == [
        "a.yaml:5: KPI 'x': formula: '(1 + 2) * 3' references no KPI; a derived KPI is computed "
        "from other KPIs"
    ]


def test_source_problems(here: Path) -> None:
    """A source needs kpi_name or kpi_id, period_id needs kpi_id, and it must be a mapping."""
    base = "  label: X\n  group: G\n  unit: count\n  time_aggregation: sum\n"
    text = (
        f"- id: a\n{base}  source: {{}}\n"
        f"- id: b\n{base}  source: {{kpi_name: B, period_id: 3}}\n"
        f"- id: c\n{base}  source: Umsatz Total\n"
    )
    assert problems(here, {"a.yaml": text}) == [
        "a.yaml:6: KPI 'a': source: needs kpi_name or kpi_id",
        "a.yaml:12: KPI 'b': source: period_id needs kpi_id",
        "a.yaml:18: KPI 'c': source 'Umsatz Total' is not a mapping; expected keys from: "
        'kpi_name, kpi_id, period_id, e.g. source: {kpi_name: "Umsatz Total"}',
    ]


def test_wrong_types(here: Path) -> None:
    """A number where text is expected, or empty text, is named with the value found."""
    text = "id: x\nlabel: 2024\ngroup: ''\nunit: count\ntime_aggregation: sum\n"
    assert problems(here, {"a.yaml": text}) == [
        "a.yaml:2: KPI 'x': label: input should be a valid string, got 2024",
        "a.yaml:3: KPI 'x': group: string should have at least 1 character, got ''",
    ]


def test_key_twice(here: Path) -> None:
    """A key given twice in one KPI is reported at its second occurrence."""
    text = "id: x\nlabel: X\ngroup: G\nunit: count\ntime_aggregation: sum\nlabel: Y\n"
    assert problems(here, {"a.yaml": text}) == ["a.yaml:6: KPI 'x': key 'label' appears twice"]


def test_file_shapes(here: Path) -> None:
    """An empty file, a plain scalar and list items that are not mappings are reported."""
    assert problems(here, {"a.yaml": "", "b.yaml": "just text\n", "c.yaml": "- 1\n- [a, b]\n"}) == [
        "a.yaml: file is empty; expected a KPI mapping or a list of KPIs",
        "b.yaml:1: expected a KPI mapping or a list of KPIs, found str",
        "c.yaml:1: item 1 is int; expected a KPI mapping (id, label, ...)",
        "c.yaml:2: item 2 is list; expected a KPI mapping (id, label, ...)",
    ]


def test_unreadable_file(here: Path) -> None:
    """A file that is not UTF-8 text is reported, not a traceback."""
    (here / "a.yaml").write_bytes(b"id: \xff\xfe\n")
    [problem] = problems(here, {})
    assert problem.startswith("a.yaml: cannot read file: ")


def test_all_problems_in_one_report(here: Path) -> None:
    """Problems of every file are reported together under one heading that counts them."""
    message = (
        "3 problems in KPI definitions:\n"
        "  a.yaml:4: KPI 'x': unit 'chf' is not one of: count, currency, percent, ratio\n"
        "  b.yaml:1: missing required field 'id'\n"
    )
    (here / "a.yaml").write_text("id: x\nlabel: X\ngroup: G\nunit: chf\ntime_aggregation: sum\n")
    (here / "b.yaml").write_text("label: X\ngroup: G\nunit: count\ntime_aggregation: sum\n")
    (here / "c.yaml").write_text("- id: [\n")
    with pytest.raises(DefinitionError, match=re.escape(message)) as info:
        kpisheet.load_kpis(here)
    assert len(info.value.problems) == 3
    assert [(p.file, p.kpi, p.field) for p in info.value.problems[:2]] == [
        ("a.yaml", "x", "unit"),
        ("b.yaml", None, "id"),
    ]


def test_highlight_is_validated_like_every_field(here: Path) -> None:
    """Unknown keys, negative or non-numeric thresholds, an empty or non-mapping highlight are
    each reported with file, line, KPI and field."""
    base = "  label: X\n  group: G\n  unit: count\n  time_aggregation: sum\n"
    text = (
        f"- id: a\n{base}  highlight: {{min_abs: 5}}\n"
        f"- id: b\n{base}  highlight: {{min_abs_change: -1, min_pct_change: abc}}\n"
        f"- id: c\n{base}  highlight: {{}}\n"
        f"- id: d\n{base}  highlight: 10%\n"
        f"- id: e\n{base}  highlight: {{min_pct_change: true}}\n"
        f"- id: f\n{base}  highlight: {{min_abs_change: .inf}}\n"
    )
    assert problems(here, {"a.yaml": text}) == [
        "a.yaml:6: KPI 'a': unknown key 'highlight.min_abs' (did you mean 'min_abs_change'?); "
        "allowed keys: min_abs_change, min_pct_change",
        "a.yaml:12: KPI 'b': highlight.min_abs_change -1 is negative; expected a number >= 0",
        "a.yaml:12: KPI 'b': highlight.min_pct_change: expected a number >= 0, got 'abc'",
        "a.yaml:18: KPI 'c': highlight: needs min_abs_change or min_pct_change (or both)",
        "a.yaml:24: KPI 'd': highlight '10%' is not a mapping; expected keys from: "
        "min_abs_change, min_pct_change, e.g. highlight: {min_abs_change: 100000}",
        "a.yaml:30: KPI 'e': highlight.min_pct_change: expected a number >= 0, got True",
        "a.yaml:36: KPI 'f': highlight.min_abs_change inf is not a finite number; expected a "
        "number >= 0",
    ]


def test_highlight_is_read(here: Path) -> None:
    """Declared thresholds are on the definition; integers are read as numbers."""
    text = TURNOVER.replace("average_per: active_accounts\n", "")
    text += "highlight: {min_abs_change: 100000, min_pct_change: 0.1}\n"
    (here / "a.yaml").write_text(text, encoding="utf-8")
    highlight = kpisheet.load_kpis(here / "a.yaml")["turnover"].highlight
    assert (highlight.min_abs_change, highlight.min_pct_change) == (100000.0, 0.1)
