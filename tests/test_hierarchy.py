"""Tests of the entity hierarchy (docs/semantics.md, "Entity hierarchy"): the tree it builds and the problems it reports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kpisheet.errors import HierarchyError
from kpisheet.hierarchy import load_hierarchy, parse_hierarchy

VALID = """\
total: Kartenwelt AG
levels: [sector, mandant]
entities:
  Alpine Visa Gold:    {mandant: Alpine, sector: B2C, cardprofile: CC}
  Alpine Visa Prepaid: {mandant: Alpine, sector: B2C, cardprofile: PP}
  Borealis Charge:     {mandant: Borealis, sector: B2B2C, cardprofile: CH}
  Cumulus Card:        {mandant: Cumulus, sector: B2C}
"""


def write(tmp_path: Path, text: str, name: str = "entities.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[tuple[int | None, str]]:
    """(line, message) of every problem loading ``path`` reports."""
    with pytest.raises(HierarchyError) as caught:
        load_hierarchy(path)
    assert {problem.file for problem in caught.value.problems} == {str(path)}
    return [(problem.line, problem.message) for problem in caught.value.problems]


def test_a_valid_hierarchy_builds_the_tree(tmp_path: Path) -> None:
    """Leaves in declared order with their attributes; groups per level; members; parents."""
    hierarchy = load_hierarchy(write(tmp_path, VALID))
    leaves = ("Alpine Visa Gold", "Alpine Visa Prepaid", "Borealis Charge", "Cumulus Card")
    assert hierarchy.total == "Kartenwelt AG"
    assert hierarchy.levels == ("sector", "mandant")
    assert hierarchy.leaves == leaves
    assert list(hierarchy.attributes.index) == list(leaves)
    assert hierarchy.attributes.loc["Borealis Charge"].to_dict() == {
        "sector": "B2B2C",
        "mandant": "Borealis",
        "cardprofile": "CH",
    }
    assert hierarchy.level_names == ("product", "mandant", "sector", "total")
    assert hierarchy.views == ("cardprofile",)
    assert hierarchy.groups("sector") == ("B2C", "B2B2C")
    assert hierarchy.groups("mandant") == ("Alpine", "Borealis", "Cumulus")
    assert hierarchy.groups("total") == ("Kartenwelt AG",)
    assert hierarchy.members("Alpine") == ("Alpine Visa Gold", "Alpine Visa Prepaid")
    assert hierarchy.members("B2C") == ("Alpine Visa Gold", "Alpine Visa Prepaid", "Cumulus Card")
    assert hierarchy.members("Kartenwelt AG") == leaves
    assert hierarchy.members("Cumulus Card") == ("Cumulus Card",)
    assert hierarchy.level_of("Alpine") == "mandant"
    assert hierarchy.level_of("B2B2C") == "sector"
    assert hierarchy.level_of("Kartenwelt AG") == "total"
    assert hierarchy.level_of("Cumulus Card") == "product"
    assert hierarchy.parent_of("Alpine Visa Gold") == "Alpine"
    assert hierarchy.parent_of("Alpine") == "B2C"
    assert hierarchy.parent_of("B2C") == "Kartenwelt AG"
    assert hierarchy.parent_of("Kartenwelt AG") is None
    assert "Borealis" in hierarchy
    assert "CC" not in hierarchy  # a view group is not part of the tree
    with pytest.raises(KeyError):
        hierarchy.level_of("Nobody")


def test_a_product_without_a_view_attribute_is_in_no_view_group(tmp_path: Path) -> None:
    """Cumulus Card has no cardprofile: the view has groups CC, PP, CH only (no empty name)."""
    hierarchy = load_hierarchy(write(tmp_path, VALID))
    assert hierarchy.groups("cardprofile") == ("CC", "PP", "CH")


def test_to_frame_lists_every_entity_coarse_to_fine(tmp_path: Path) -> None:
    """One row per entity of the tree with its level and parent."""
    frame = load_hierarchy(write(tmp_path, VALID)).to_frame()
    assert list(frame.columns) == ["entity", "level", "parent"]
    assert list(frame["entity"]) == [
        "Kartenwelt AG",
        "B2C",
        "B2B2C",
        "Alpine",
        "Borealis",
        "Cumulus",
        "Alpine Visa Gold",
        "Alpine Visa Prepaid",
        "Borealis Charge",
        "Cumulus Card",
    ]
    assert list(frame["level"])[:4] == ["total", "sector", "sector", "mandant"]
    assert frame.set_index("entity").loc["Cumulus", "parent"] == "B2C"


def test_the_demo_hierarchy_is_valid() -> None:
    """The bundled demo hierarchy loads."""
    from kpisheet.demo import DEMO_ENTITIES

    hierarchy = load_hierarchy(DEMO_ENTITIES)
    assert len(hierarchy.leaves) > 0
    assert set(hierarchy.level_names) >= {"product", "total"}


# --- problems --------------------------------------------------------------------------------


def test_missing_level_attribute(tmp_path: Path) -> None:
    """Every leaf needs every level attribute; the problem names entity, attribute and line."""
    path = write(
        tmp_path,
        "total: T\nlevels: [sector, mandant]\nentities:\n"
        "  P1: {mandant: M1, sector: S1}\n"
        "  P2: {sector: S1}\n"
        "  P3: {mandant: M1, sector: ' '}\n",
    )
    assert problems_of(path) == [
        (5, "entity 'P2': missing level attribute 'mandant'"),
        (6, "entity 'P3': missing level attribute 'sector'"),
    ]


def test_a_name_that_is_both_leaf_and_group(tmp_path: Path) -> None:
    """A product may not share its name with a group (or the total, or a view group)."""
    path = write(
        tmp_path,
        "total: P1\nlevels: [sector, mandant]\nentities:\n"
        "  P1: {mandant: M1, sector: S1}\n"
        "  M1: {mandant: M2, sector: S1}\n"
        "  P3: {mandant: S1, sector: S1, cardprofile: P1}\n",
    )
    assert problems_of(path) == [
        (1, "'P1' is both the total and a product"),
        (5, "'M1' is a group of level 'mandant' and also a product; names must be unique"),
        (
            6,
            "'S1' is a group of level 'mandant' and also a group of level 'sector'; "
            "names must be unique",
        ),
        (
            6,
            "value 'P1' of attribute 'cardprofile' is also the name of an entity; "
            "names must be unique",
        ),
    ]


def test_two_views_sharing_a_group_name(tmp_path: Path) -> None:
    """A group name of one view may not reappear in another view: names select entities."""
    path = write(
        tmp_path,
        "total: T\nlevels: [mandant]\nentities:\n"
        "  P1: {mandant: M1, cardprofile: CC, segment: Retail}\n"
        "  P2: {mandant: M1, cardprofile: PP, segment: CC}\n",
    )
    assert problems_of(path) == [
        (
            5,
            "value 'CC' of attribute 'segment' is also a value of attribute 'cardprofile'; "
            "names must be unique",
        ),
    ]


def test_a_mandant_under_two_sectors(tmp_path: Path) -> None:
    """A group sits under one parent; the line is that of the first product that disagrees."""
    path = write(
        tmp_path,
        "total: T\nlevels: [sector, mandant]\nentities:\n"
        "  P1: {mandant: Alpine, sector: B2C}\n"
        "  P2: {mandant: Alpine, sector: B2C}\n"
        "  P3: {mandant: Alpine, sector: B2B2C}\n",
    )
    assert problems_of(path) == [
        (6, "mandant 'Alpine' belongs to more than one sector: 'B2C', 'B2B2C'"),
    ]


def test_unknown_key(tmp_path: Path) -> None:
    """Only total, levels and entities are allowed at the top; a near miss gets a suggestion."""
    path = write(
        tmp_path, "total: T\nlevel: [mandant]\nentities:\n  P1: {mandant: M}\n", "typo.yaml"
    )
    assert problems_of(path) == [
        (
            2,
            "unknown key 'level' (did you mean 'levels'?); allowed keys: total, levels, "
            "entities, labels",
        )
    ]


def test_yaml_syntax_error_with_line(tmp_path: Path) -> None:
    """A YAML syntax error is reported with the line it is on."""
    path = write(tmp_path, "total: T\nlevels: [mandant\nentities:\n  P1: {mandant: M}\n")
    message = f"{path}:3: YAML syntax error: while parsing a flow sequence, expected ',' or ']', but got ':'"
    with pytest.raises(HierarchyError, match=re.escape(message)):
        load_hierarchy(path)


def test_a_product_declared_twice(tmp_path: Path) -> None:
    """A repeated product name is reported, not silently replaced by the later entry."""
    path = write(
        tmp_path,
        "total: T\nlevels: [mandant]\nentities:\n"
        "  P1: {mandant: M1}\n  P2: {mandant: M1}\n  P1: {mandant: M2}\n",
    )
    assert problems_of(path) == [(6, "entity 'P1' is declared twice (first on line 4)")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", [(None, "expected a mapping with keys: total, levels, entities, labels")]),
        ("- a\n- b\n", [(1, "expected a mapping with keys: total, levels, entities, labels")]),
        (
            "levels: [mandant]\nentities:\n  P1: {mandant: M}\n",
            [(None, "total must be the name of the grand-total entity, found None")],
        ),
        (
            "total: T\nlevels: mandant\nentities:\n  P1: {mandant: M}\n",
            [(2, "levels must be a list of attribute names, coarse to fine, found 'mandant'")],
        ),
        (
            "total: T\nlevels: [total]\nentities:\n  P1: {total: M}\n",
            [(2, "levels must not contain 'total' (a reserved level name)")],
        ),
        (
            "total: T\nlevels: [mandant]\nentities: {}\n",
            [(3, "entities must be a non-empty mapping of product name to attributes")],
        ),
        (
            "total: T\nlevels: [mandant]\nentities:\n  P1: {mandant: [M, N]}\n  P2: x\n",
            [
                (4, "entity 'P1': attribute 'mandant' must be a single value, found ['M', 'N']"),
                (5, "entity 'P2': expected a mapping of attributes, found 'x'"),
            ],
        ),
    ],
    ids=[
        "empty",
        "list",
        "no total",
        "levels not a list",
        "reserved level",
        "no entities",
        "bad attributes",
    ],
)
def test_malformed_files(tmp_path: Path, text: str, expected: list[tuple[int | None, str]]) -> None:
    """Files of the wrong shape are reported with what was expected and what was found."""
    assert problems_of(write(tmp_path, text)) == expected


def test_every_problem_is_reported_together(tmp_path: Path) -> None:
    """Several problems in one file come in one HierarchyError, counted in its heading."""
    path = write(
        tmp_path,
        "total: T\nlevels: [sector, mandant]\ncolour: blue\nentities:\n"
        "  P1: {mandant: A, sector: B2C}\n"
        "  P2: {mandant: A, sector: B2B2C}\n"
        "  P3: {sector: B2C}\n",
    )
    with pytest.raises(HierarchyError) as caught:
        load_hierarchy(path)
    assert str(caught.value) == (
        "3 problems in the entity hierarchy:\n"
        f"  {path}:3: unknown key 'colour'; allowed keys: total, levels, entities, labels\n"
        f"  {path}:7: entity 'P3': missing level attribute 'mandant'\n"
        f"  {path}:6: mandant 'A' belongs to more than one sector: 'B2C', 'B2B2C'"
    )


def test_unreadable_file(tmp_path: Path) -> None:
    """A missing file is a HierarchyError naming the file."""
    path = tmp_path / "missing.yaml"
    with pytest.raises(HierarchyError, match=re.escape(f"{path}: cannot read file:")):
        load_hierarchy(path)


def test_numbers_in_the_file_are_names() -> None:
    """YAML numbers as product names or attribute values are read as their text."""
    hierarchy = parse_hierarchy(
        {"total": "T", "levels": ["year"], "entities": {4711: {"year": 2024, "code": 1.5}}},
        "entities.yaml",
    )
    assert hierarchy.leaves == ("4711",)
    assert hierarchy.groups("year") == ("2024",)
    assert hierarchy.groups("code") == ("1.5",)


def test_shape_problems_and_tree_problems_come_together(tmp_path: Path) -> None:
    """A blank total, an entity that is no mapping and a product missing a level are reported
    in one round: the tree is checked on the products whose shape is valid."""
    path = write(
        tmp_path,
        "total: ' '\nlevels: [mandant, '']\nentities:\n"
        "  P1: {mandant: M1}\n  P2: [M1]\n  P3: {sector: S}\n",
    )
    assert problems_of(path) == [
        (1, "total must be the name of the grand-total entity, found ' '"),
        (2, "levels must be a list of attribute names, coarse to fine, found ['mandant', '']"),
        (5, "entity 'P2': expected a mapping of attributes, found ['M1']"),
    ]
    path = write(tmp_path, "total: ' '\nentities:\n  P1: {mandant: M1}\n  P2: [M1]\n")
    assert problems_of(path) == [
        (1, "total must be the name of the grand-total entity, found ' '"),
        (4, "entity 'P2': expected a mapping of attributes, found ['M1']"),
    ]
    path = write(tmp_path, "total: T\nlevels: [mandant]\nentities:\n  P1: {}\n  P2: 7\n")
    assert problems_of(path) == [
        (5, "entity 'P2': expected a mapping of attributes, found 7"),
        (4, "entity 'P1': missing level attribute 'mandant'"),
    ]


def test_labels_name_levels_and_views_and_survive_a_round_trip(tmp_path: Path) -> None:
    """``labels`` names levels and views for people; they are kept when a store saves the
    hierarchy (to_data) and reads it back."""
    hierarchy = load_hierarchy(
        write(tmp_path, VALID + "labels: {sector: Sektor, cardprofile: Kartenprofil}\n")
    )
    assert hierarchy.labels == {"sector": "Sektor", "cardprofile": "Kartenprofil"}
    again = parse_hierarchy(hierarchy.to_data(), "store")
    assert again.labels == hierarchy.labels
    assert "labels" not in load_hierarchy(write(tmp_path, VALID, "plain.yaml")).to_data()


def test_labels_of_unknown_levels_or_not_texts_are_problems(tmp_path: Path) -> None:
    """A label for a name that is no level or attribute, or a label that is no text, is reported
    with the known names."""
    path = write(tmp_path, VALID + "labels: {sektor: Sektor}\n")
    assert problems_of(path) == [
        (
            8,
            "labels: 'sektor' is not a level or attribute; known: cardprofile, mandant, "
            "product, sector, total",
        )
    ]
    path = write(tmp_path, VALID + "labels: {sector: [a, b]}\n", "list.yaml")
    assert problems_of(path) == [
        (8, "labels must map level names to texts, found {'sector': ['a', 'b']}")
    ]


def test_descendants_are_the_subtree_coarse_to_fine(tmp_path: Path) -> None:
    """A group's descendants are the group, its subgroups and its products in tree order; a
    product is its own; the total has every entity."""
    hierarchy = load_hierarchy(write(tmp_path, VALID))
    assert hierarchy.descendants("B2C") == (
        "B2C",
        "Alpine",
        "Cumulus",
        "Alpine Visa Gold",
        "Alpine Visa Prepaid",
        "Cumulus Card",
    )
    assert hierarchy.descendants("Alpine") == ("Alpine", "Alpine Visa Gold", "Alpine Visa Prepaid")
    assert hierarchy.descendants("Cumulus Card") == ("Cumulus Card",)
    assert hierarchy.descendants("Kartenwelt AG") == hierarchy.entities
    with pytest.raises(KeyError):
        hierarchy.descendants("CC")  # a view's group is not in the tree
