"""Tests of kpisheet.files: YAML read within limits of size, nesting and alias expansion."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from kpisheet import files
from kpisheet.errors import DefinitionError, HierarchyError, IngestConfigError
from kpisheet.files import MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_VALUES
from kpisheet.hierarchy import load_hierarchy
from kpisheet.ingest import load_ingest_config
from kpisheet.plugins import load_kpis
from tests.limits import run_limited

#: Seconds in which a hostile file must be refused ("well under a second").
REFUSED_WITHIN = 1.0

LOAD_KPIS = "from kpisheet.plugins import load_kpis\nload_kpis([sys.argv[1]])"
LOAD_HIERARCHY = "from kpisheet.hierarchy import load_hierarchy\nload_hierarchy(sys.argv[1])"


def laughs(indent: str = "") -> list[str]:
    """The "billion laughs": nine anchors, each a list of nine aliases of the one before."""
    lines = [f'{indent}l0: &l0 "lol"']
    for level in range(1, 10):
        aliases = ", ".join([f"*l{level - 1}"] * 9)
        lines.append(f"{indent}l{level}: &l{level} [{aliases}]")
    return lines


def kpi_bomb(path: Path) -> Path:
    """A KPI file whose label is the alias bomb (9**9 values once expanded)."""
    lines = ["- id: lol", *laughs("  "), "  label: *l9", "  group: g", "  unit: count"]
    path.write_text("\n".join([*lines, "  time_aggregation: sum", ""]), encoding="utf-8")
    return path


def test_alias_bomb_in_a_kpi_label_is_refused_quickly(tmp_path: Path) -> None:
    """A billion-laughs label is refused in well under a second, within 2 GiB of memory;
    the message names the anchor whose expansion passes the limit."""
    result = run_limited(LOAD_KPIS, str(kpi_bomb(tmp_path / "bomb.yaml")))
    assert result["seconds"] < REFUSED_WITHIN
    assert result["error"] == (
        "1 problem in KPI definitions:\n"
        f"  {tmp_path / 'bomb.yaml'}:9: YAML refused: aliases expand to more than "
        f"{MAX_YAML_VALUES:,} values"
    )


def test_alias_bomb_in_the_hierarchy_is_refused_quickly(tmp_path: Path) -> None:
    """A billion-laughs attribute in the entity hierarchy is refused just as quickly."""
    path = tmp_path / "entities.yaml"
    lines = ["total: Kartenwelt AG", "levels: [mandant]", "anchors:", *laughs("  ")]
    lines += ["entities:", "  Karte: {mandant: *l9}", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    result = run_limited(LOAD_HIERARCHY, str(path))
    assert result["seconds"] < REFUSED_WITHIN
    assert result["error"] == (
        f"1 problem in the entity hierarchy:\n  {path}:11: YAML refused: aliases expand to "
        f"more than {MAX_YAML_VALUES:,} values"
    )


def test_yaml_nested_5000_deep_is_refused_quickly(tmp_path: Path) -> None:
    """A label nested 5,000 lists deep is a message naming file and line, not a RecursionError."""
    path = tmp_path / "deep.yaml"
    path.write_text("- id: deep\n  label: " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    result = run_limited(LOAD_KPIS, str(path))
    assert result["seconds"] < REFUSED_WITHIN
    assert result["error"] == (
        f"1 problem in KPI definitions:\n  {path}:2: YAML refused: nested more than "
        f"{MAX_YAML_DEPTH} levels deep"
    )


def test_aliases_that_nest_deeper_than_the_limit_are_refused(tmp_path: Path) -> None:
    """Aliases cannot build, from shallow pieces, a value nested deeper than the limit."""
    depth = MAX_YAML_DEPTH - 5
    lines = ["a: &a " + "[" * depth + "1" + "]" * depth]
    lines += [f"b: &b [{'[' * depth}*a{']' * depth}]", "c: *b", ""]
    path = tmp_path / "entities.yaml"
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(
        HierarchyError,
        match=re.escape(f"{path}:2: YAML refused: aliases nest more than {MAX_YAML_DEPTH} levels"),
    ):
        load_hierarchy(path)


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    """A value that contains itself (``&a [*a]``) is refused instead of expanding forever."""
    path = tmp_path / "loop.yaml"
    path.write_text("- id: loop\n  label: &a [*a]\n", encoding="utf-8")
    with pytest.raises(
        DefinitionError,
        match=re.escape(f"{path}:2: YAML refused: an alias refers to a value that contains it"),
    ):
        load_kpis([path])


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    """A YAML file larger than the limit is refused by its size, naming both numbers."""
    path = tmp_path / "huge.yaml"
    with path.open("wb") as file:
        file.truncate(MAX_YAML_BYTES + 1)
    with pytest.raises(
        DefinitionError,
        match=re.escape(
            f"{path}: file is {MAX_YAML_BYTES + 1:,} bytes; a configuration file may have at "
            f"most {MAX_YAML_BYTES:,}"
        ),
    ):
        load_kpis([path])


def test_anchors_within_the_limits_still_load(tmp_path: Path) -> None:
    """Ordinary anchors and aliases (a group named once, used twice) keep working."""
    path = tmp_path / "kpis.yaml"
    path.write_text(
        "- id: turnover\n  label: Umsatz\n  group: &group Umsatz\n  unit: currency\n"
        "  time_aggregation: sum\n"
        "- id: turnover_abroad\n  label: Umsatz Ausland\n  group: *group\n  unit: currency\n"
        "  time_aggregation: sum\n",
        encoding="utf-8",
    )
    registry = load_kpis([path])
    assert registry.ids == ("turnover", "turnover_abroad")
    assert registry["turnover_abroad"].group == "Umsatz"


def test_alias_bomb_in_an_ingest_configuration_is_refused(tmp_path: Path) -> None:
    """The ingest configuration is read by the same bounded reader."""
    path = tmp_path / "ingest.yaml"
    path.write_text("\n".join([*laughs(), "columns: *l9", ""]), encoding="utf-8")
    with pytest.raises(
        IngestConfigError,
        match=re.escape(
            f"{path}:8: YAML refused: aliases expand to more than {MAX_YAML_VALUES:,} values"
        ),
    ):
        load_ingest_config(path)


def test_toml_ingest_configuration_nested_too_deeply_is_a_problem(tmp_path: Path) -> None:
    """A TOML configuration nested thousands of arrays deep is a message, not a RecursionError."""
    path = tmp_path / "ingest.toml"
    path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    with pytest.raises(
        IngestConfigError, match=re.escape(f"{path}: cannot read: nested too deeply")
    ):
        load_ingest_config(path)


def _refused(loader: type, text: str) -> bool:
    """Whether a loader refuses a document for its depth."""
    try:
        files._read_document(loader(text))
    except files._LimitExceeded:
        return True
    return False


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml")
@pytest.mark.parametrize(
    "text",
    [
        "[" * MAX_YAML_DEPTH + "]" * MAX_YAML_DEPTH,  # collections at the limit
        "[" * (MAX_YAML_DEPTH + 1) + "]" * (MAX_YAML_DEPTH + 1),
        "[" * (MAX_YAML_DEPTH - 1) + "x" + "]" * (MAX_YAML_DEPTH - 1),  # a scalar at the limit
        "[" * MAX_YAML_DEPTH + "x" + "]" * MAX_YAML_DEPTH,
        "a: &x [1]\nb: " + "[" * (MAX_YAML_DEPTH - 1) + "*x" + "]" * (MAX_YAML_DEPTH - 1),
        "- " * MAX_YAML_DEPTH + "x",  # block sequences
        "- " * (MAX_YAML_DEPTH - 1) + "x",
    ],
)
def test_libyaml_loader_refuses_the_depth_the_python_loader_refuses(text: str) -> None:
    """The C loader, whose composer has no limit of its own, refuses exactly the documents the
    Python loader refuses for their depth (checked on the events before composing)."""
    assert _refused(files._FastBoundedLoader, text) == _refused(files._BoundedLoader, text)


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml")
def test_libyaml_loader_refuses_200000_levels_before_composing() -> None:
    """A document 200,000 levels deep (block sequences, which libyaml's scanner does not limit)
    never reaches libyaml's recursive composer."""
    with pytest.raises(files._LimitExceeded, match="nested more than"):
        files._FastBoundedLoader("- " * 200_000 + "x")
