"""The entity hierarchy: leaves (card products) with attributes, rolled up level by level to a total.

Declared in YAML (SPEC §5)::

    total: Kartenwelt AG
    levels: [sector, mandant]          # group levels, coarse to fine; leaves are level "product"
    entities:
      Alpine Visa Gold: {mandant: Alpine, sector: B2C, cardprofile: CC}

Attributes that are not levels (``cardprofile``) are *views*: the same leaves grouped another way.

The same structure can come from a table, e.g. the warehouse's product table, one row per
product with a column per level and attribute (:func:`hierarchy_from_table`); each release of the
store keeps the hierarchy it was validated against (:meth:`Hierarchy.to_data`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from kpisheet.constants import PRODUCT_LEVEL, TOTAL_LEVEL
from kpisheet.errors import HierarchyError, Problem, quoted
from kpisheet.files import display_path, read_yaml

_KEYS = ("total", "levels", "entities")


class Hierarchy:
    """Leaves with their attributes and the groups they roll up to."""

    def __init__(self, total: str, levels: Sequence[str], attributes: pd.DataFrame) -> None:
        self.total = total
        self.levels: tuple[str, ...] = tuple(levels)
        self.attributes = attributes
        self.leaves: tuple[str, ...] = tuple(attributes.index)
        self.views: tuple[str, ...] = tuple(c for c in attributes.columns if c not in self.levels)
        self._level_of: dict[str, str] = {total: TOTAL_LEVEL}
        for level in self.levels:
            self._level_of.update(dict.fromkeys(self.groups(level), level))
        self._level_of.update(dict.fromkeys(self.leaves, PRODUCT_LEVEL))

    def __repr__(self) -> str:
        return (
            f"<Hierarchy {self.total!r}: {len(self.leaves)} products, levels {list(self.levels)}>"
        )

    def __contains__(self, name: object) -> bool:
        return name in self._level_of

    @property
    def level_names(self) -> tuple[str, ...]:
        """Every level, fine to coarse: ``product``, the group levels, ``total``."""
        return (PRODUCT_LEVEL, *reversed(self.levels), TOTAL_LEVEL)

    @property
    def entities(self) -> tuple[str, ...]:
        """Every entity of the tree, coarse to fine: the total, the groups level by level, the leaves."""
        return tuple(self._level_of)

    def level_of(self, name: str) -> str:
        """``product``, a level name, or ``total``; raises ``KeyError`` for unknown names."""
        return self._level_of[name]

    def groups(self, level: str) -> tuple[str, ...]:
        """The groups of a level or view in order of first appearance.

        A product without a view attribute belongs to no group of that view.
        """
        if level == TOTAL_LEVEL:
            return (self.total,)
        if level == PRODUCT_LEVEL:
            return self.leaves
        return tuple(group for group in pd.unique(self.attributes[level]) if group != "")

    def members(self, name: str) -> tuple[str, ...]:
        """The leaves under an entity (the entity itself for a leaf)."""
        level = self._level_of[name]
        if level == PRODUCT_LEVEL:
            return (name,)
        if level == TOTAL_LEVEL:
            return self.leaves
        return tuple(self.attributes.index[self.attributes[level] == name])

    def parent_of(self, name: str) -> str | None:
        """The next coarser group of an entity (``None`` for the total)."""
        level = self._level_of[name]
        if level == TOTAL_LEVEL:
            return None
        chain = (PRODUCT_LEVEL, *reversed(self.levels))
        position = chain.index(level)
        if position + 1 == len(chain):
            return self.total
        leaf = self.members(name)[0]
        return str(self.attributes.at[leaf, chain[position + 1]])

    def to_data(self) -> dict[str, Any]:
        """The hierarchy as the YAML file declares it (``total``, ``levels``, ``entities``).

        :func:`parse_hierarchy` of the result gives an equal hierarchy; an attribute a product
        does not have is left out.
        """
        rows = self.attributes.to_dict(orient="index")
        return {
            "total": self.total,
            "levels": list(self.levels),
            "entities": {
                str(name): {key: value for key, value in row.items() if value != ""}
                for name, row in rows.items()
            },
        }

    def moves(self, newer: Hierarchy) -> pd.DataFrame:
        """Products of both hierarchies whose group changed, one row per product and level or view.

        Columns ``entity``, ``level``, ``old``, ``new`` (``""`` where the product had no group).
        """
        common = self.attributes.index.intersection(newer.attributes.index)
        columns = [c for c in self.attributes.columns if c in newer.attributes.columns]
        columns += [c for c in newer.attributes.columns if c not in columns]
        old = self.attributes.reindex(index=common, columns=columns).fillna("")
        new = newer.attributes.reindex(index=common, columns=columns).fillna("")
        changed = (old != new).stack()
        changed = changed[changed]
        entities = changed.index.get_level_values(0)
        levels = changed.index.get_level_values(1)
        return pd.DataFrame(
            {
                "entity": list(entities),
                "level": list(levels),
                "old": [old.at[e, c] for e, c in zip(entities, levels, strict=True)],
                "new": [new.at[e, c] for e, c in zip(entities, levels, strict=True)],
            },
            columns=["entity", "level", "old", "new"],
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per entity of the tree: ``entity``, ``level``, ``parent``."""
        return pd.DataFrame(
            {
                "entity": list(self.entities),
                "level": [self._level_of[e] for e in self.entities],
                "parent": [self.parent_of(e) for e in self.entities],
            }
        )


def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _key_nodes(node: yaml.Node) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value): (k, v) for k, v in node.value}


def parse_hierarchy(data: Any, file: str, node: yaml.Node | None = None) -> Hierarchy:
    """Validate hierarchy data (as loaded from YAML) and build the :class:`Hierarchy`.

    :raises HierarchyError: listing every problem.
    """
    problems: list[Problem] = []
    top = _key_nodes(node) if node is not None else {}

    def add(message: str, key: str | None = None, line: int | None = None) -> None:
        where = line if line is not None else _line(top[key][0]) if key in top else None
        problems.append(Problem(message, file=file, line=where, field=key))

    if not isinstance(data, Mapping):
        raise HierarchyError(
            [
                Problem(
                    "expected a mapping with keys: total, levels, entities",
                    file=file,
                    line=_line(node),
                )
            ]
        )
    for key in data:
        if key not in _KEYS:
            add(f"unknown key '{key}'; allowed keys: {', '.join(_KEYS)}", str(key))
    total = data.get("total")
    if not isinstance(total, str) or not total.strip():
        add(f"total must be the name of the grand-total entity, found {quoted(total)}", "total")
        total = ""
    levels = data.get("levels", [])
    if not isinstance(levels, list) or not all(
        isinstance(level, str) and level for level in levels
    ):
        add(
            f"levels must be a list of attribute names, coarse to fine, found {quoted(levels)}",
            "levels",
        )
        levels = []
    for reserved in (PRODUCT_LEVEL, TOTAL_LEVEL):
        if reserved in levels:
            add(f"levels must not contain '{reserved}' (a reserved level name)", "levels")
    entities = data.get("entities")
    entity_nodes = _key_nodes(top["entities"][1]) if "entities" in top else {}
    if not isinstance(entities, Mapping) or not entities:
        add("entities must be a non-empty mapping of product name to attributes", "entities")
        entities = {}
    entities_node = top["entities"][1] if "entities" in top else None
    if isinstance(entities_node, yaml.MappingNode):  # YAML keeps only the last of repeated keys
        declared: dict[str, int | None] = {}
        for key_node, _ in entities_node.value:
            name, line = str(key_node.value).strip(), _line(key_node)
            if name in declared:
                add(
                    f"entity '{name}' is declared twice (first on line {declared[name]})",
                    "entities",
                    line,
                )
            declared.setdefault(name, line)
    rows: dict[str, dict[str, str]] = {}
    for name, attributes in entities.items():
        line = _line(entity_nodes[str(name)][0]) if str(name) in entity_nodes else None
        if not isinstance(attributes, Mapping):
            add(
                f"entity '{name}': expected a mapping of attributes, found {quoted(attributes)}",
                "entities",
                line,
            )
            continue
        for level in levels:
            value = attributes.get(level)
            if value is None or str(value).strip() == "":
                add(f"entity '{name}': missing level attribute '{level}'", "entities", line)
        for key, value in attributes.items():
            if isinstance(value, Mapping | list):
                add(
                    f"entity '{name}': attribute '{key}' must be a single value, found {quoted(value)}",
                    "entities",
                    line,
                )
        rows[str(name).strip()] = {
            str(k): str(v).strip() for k, v in attributes.items() if v is not None
        }
    frame = pd.DataFrame.from_dict(rows, orient="index").fillna("")
    if not frame.empty:
        for column in levels:
            if column not in frame:
                frame[column] = ""
        frame = frame[[*levels, *[c for c in frame.columns if c not in levels]]]
    _check_tree(frame, total, levels, entity_nodes, add)
    if problems:
        raise HierarchyError(problems)
    frame.index.name = "entity"
    return Hierarchy(total, levels, frame)


def _check_tree(
    frame: pd.DataFrame, total: str, levels: list[str], entity_nodes: dict, add: Any
) -> None:
    """Names are unique across levels and every group sits under exactly one parent.

    Each problem points at the line of the product that shows it.
    """
    if frame.empty:
        return

    def line_of(leaves: pd.Index) -> int | None:
        node = next((entity_nodes[leaf][0] for leaf in leaves if leaf in entity_nodes), None)
        return _line(node)

    owner: dict[str, str] = dict.fromkeys(frame.index, PRODUCT_LEVEL)
    if total in owner:
        add(f"'{total}' is both the total and a product", "total")
    owner.setdefault(total, TOTAL_LEVEL)
    for level in levels:
        for group in pd.unique(frame[level]):
            if group == "":
                continue
            if group in owner:
                other = owner[group]
                what = "a product" if other == PRODUCT_LEVEL else f"a group of level '{other}'"
                where = [group] if other == PRODUCT_LEVEL else frame.index[frame[level] == group]
                add(
                    f"'{group}' is a group of level '{level}' and also {what}; names must be unique",
                    "entities",
                    line_of(where),
                )
            else:
                owner[group] = level
    for coarse, fine in itertools.pairwise(levels):
        # A missing attribute is reported already; it is no second parent.
        known = frame[(frame[fine] != "") & (frame[coarse] != "")]
        parents = known.groupby(fine, sort=False)[coarse].unique()
        for group, values in parents.items():
            if len(values) > 1:
                shown = ", ".join(f"'{v}'" for v in values)
                differs = known.index[(known[fine] == group) & (known[coarse] != values[0])]
                add(
                    f"{fine} '{group}' belongs to more than one {coarse}: {shown}",
                    "entities",
                    line_of(differs),
                )
    view_of: dict[str, str] = {}  # a view group is selected by its name, so names are unique
    for view in (c for c in frame.columns if c not in levels):
        for group in pd.unique(frame[view]):
            if group in owner:
                add(
                    f"value '{group}' of attribute '{view}' is also the name of an entity; names must be unique",
                    "entities",
                    line_of(frame.index[frame[view] == group]),
                )
            elif group != "" and view_of.setdefault(group, view) != view:
                add(
                    f"value '{group}' of attribute '{view}' is also a value of attribute "
                    f"'{view_of[group]}'; names must be unique",
                    "entities",
                    line_of(frame.index[frame[view] == group]),
                )


def load_hierarchy(path: Path | str) -> Hierarchy:
    """Read and validate an entity hierarchy YAML file.

    :raises HierarchyError: listing every problem, with file and line.
    """
    path = Path(path)
    file = display_path(path)
    data, node, problem = read_yaml(path, file)
    if problem is not None:
        raise HierarchyError([problem])
    return parse_hierarchy(data, file, node)


def hierarchy_from_table(
    table: pd.DataFrame,
    *,
    leaf: str,
    levels: Sequence[tuple[str, str]],
    attributes: Sequence[tuple[str, str]],
    total: str,
    file: str,
    where: Callable[[pd.Index], list[str]] | None = None,
) -> Hierarchy:
    """A hierarchy from a product table: one row per leaf, a column per level and attribute.

    :param leaf: the column naming the leaves (products).
    :param levels: ``(level name, column)`` pairs, coarse to fine.
    :param attributes: ``(attribute name, column)`` pairs of views such as ``cardprofile``.
    :param file: the table's name in messages; ``where`` names its rows (``line 7``).
    :raises HierarchyError: listing every problem: missing columns, products listed twice with
        different groups, and everything :func:`parse_hierarchy` checks.
    """
    name_rows = where or (lambda index: [f"row {i}" for i in index])
    by_lower = {str(column).strip().lower(): column for column in table.columns}
    wanted = [("leaf", leaf), *levels, *attributes]
    missing = [f"{role} '{column}'" for role, column in wanted if column.lower() not in by_lower]
    if missing:
        raise HierarchyError(
            [
                Problem(
                    f"missing column(s) {', '.join(missing)}; found "
                    f"{', '.join(map(str, table.columns)) or 'none'} — name the product table's "
                    "columns under 'entities:' in the ingest configuration",
                    file=file,
                )
            ]
        )
    names = [role for role, _ in wanted]
    frame = pd.DataFrame(
        {role: table[by_lower[column.lower()]] for role, column in wanted}, index=table.index
    )
    frame.columns = names
    frame = frame.astype("string").apply(lambda column: column.str.strip()).fillna("")
    problems: list[Problem] = []
    empty = frame["leaf"] == ""
    if empty.any():
        problems.append(
            Problem(f"{leaf} is empty in {', '.join(name_rows(frame.index[empty])[:5])}", file=file)
        )
    frame = frame[~empty].drop_duplicates()
    twice = frame["leaf"].duplicated(keep=False)
    for product, rows in frame[twice].groupby("leaf", sort=True):
        problems.append(
            Problem(
                f"product '{product}' is listed {len(rows)} times with different groups "
                f"({', '.join(name_rows(rows.index)[:5])})",
                file=file,
            )
        )
    if problems:
        raise HierarchyError(problems)
    entities = {
        row["leaf"]: {key: row[key] for key in names[1:] if row[key] != ""}
        for row in frame.to_dict(orient="records")
    }
    data = {"total": total, "levels": [level for level, _ in levels], "entities": entities}
    return parse_hierarchy(data, file)
