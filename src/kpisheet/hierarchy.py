"""The entity hierarchy: leaves (card products) with attributes, rolled up level by level to a total.

Declared in YAML (docs/semantics.md, "Entity hierarchy")::

    total: Kartenwelt AG
    levels: [sector, mandant]          # group levels, coarse to fine; leaves are level "product"
    entities:
      Alpine Visa Gold: {mandant: Alpine, sector: B2C, cardprofile: CC}
    labels: {sector: Sektor, cardprofile: Kartenprofil}   # optional: how people read the names

Attributes that are not levels (``cardprofile``) are *views*: the same leaves grouped another way.
``labels`` names levels and views for people (the app, the XLSX exports); a level without one is
shown by its name, capitalised (:func:`kpisheet.presentation.level_label`).

The same structure can come from a table, e.g. the warehouse's product table, one row per
product with a column per level and attribute (:func:`hierarchy_from_table`); each release of the
store keeps the hierarchy it was validated against (:meth:`Hierarchy.to_data`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pandas as pd
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from kpisheet.constants import PRODUCT_LEVEL, TOTAL_LEVEL
from kpisheet.errors import (
    HierarchyError,
    Location,
    Problem,
    Problems,
    quoted,
    validation_problems,
)
from kpisheet.files import display_path, mapping_nodes, node_line, read_yaml, repeated_keys

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails


__all__ = [
    "Attributes",
    "Hierarchy",
    "HierarchyFile",
    "Name",
    "hierarchy_from_table",
    "load_hierarchy",
    "parse_hierarchy",
]


class Hierarchy:
    """Leaves with their attributes and the groups they roll up to."""

    def __init__(
        self,
        total: str,
        levels: Sequence[str],
        attributes: pd.DataFrame,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.total = total
        #: How people read the names of levels and views (from the file's ``labels``).
        self.labels: dict[str, str] = dict(labels or {})
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

    def descendants(self, name: str) -> tuple[str, ...]:
        """The entity and every group and product under it, coarse to fine (as :attr:`entities`).

        A view's groups are not part of the tree; raises ``KeyError`` for unknown names.
        """
        level = self._level_of[name]
        if level == TOTAL_LEVEL:
            return self.entities
        leaves = self.members(name)
        under = {name, *leaves}
        if level != PRODUCT_LEVEL:
            for finer in self.levels[self.levels.index(level) + 1 :]:
                under.update(self.attributes.loc[list(leaves), finer])
        return tuple(entity for entity in self.entities if entity in under)

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
        data: dict[str, Any] = {
            "total": self.total,
            "levels": list(self.levels),
            "entities": {
                str(name): {key: value for key, value in row.items() if value != ""}
                for name, row in rows.items()
            },
        }
        if self.labels:
            data["labels"] = dict(self.labels)
        return data

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


def _attribute(value: Any) -> str | None:
    """An attribute as text (``2024`` as ``'2024'``); a mapping or a list is no attribute."""
    if isinstance(value, Mapping | list):
        raise ValueError(f"must be a single value, found {quoted(value)}")
    return None if value is None else str(value).strip()


def _name(value: Any) -> Any:
    """An entity name as text without surrounding blanks (YAML may give numbers)."""
    return str(value).strip() if isinstance(value, str | int | float) else value


#: A name: text, blanks around it removed, not empty.
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
#: Attributes of a product: level and view names to groups (``None``: no group).
Attributes = dict[
    Annotated[str, BeforeValidator(_name)], Annotated[str | None, BeforeValidator(_attribute)]
]


class HierarchyFile(BaseModel):
    """The entity hierarchy file as declared: the total, the group levels and the products.

    Checks the shape of each part; what needs the whole tree (every level attribute given,
    names unique across levels, one parent per group) is checked by :func:`parse_hierarchy`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    total: Name
    levels: list[Name] = []
    entities: Annotated[
        dict[Annotated[str, BeforeValidator(_name)], Attributes], Field(min_length=1)
    ]
    #: How people read the names of levels and views (``{sector: Sektor}``), optional.
    labels: dict[Name, Name] = {}

    @field_validator("levels")
    @classmethod
    def _not_reserved(cls, levels: list[str]) -> list[str]:
        for reserved in (PRODUCT_LEVEL, TOTAL_LEVEL):
            if reserved in levels:
                raise ValueError(f"levels must not contain '{reserved}' (a reserved level name)")
        return levels


_KEYS = tuple(HierarchyFile.model_fields)


def _message_of(data: Any) -> Callable[[ErrorDetails, str], str | None]:
    """The hierarchy's wording of pydantic errors: what each key must be and what was found."""

    def message_of(error: ErrorDetails, field: str) -> str | None:
        loc, kind = error["loc"], error["type"]
        reason = (error.get("ctx") or {}).get("error")
        if not loc:
            return f"expected a mapping with keys: {', '.join(_KEYS)}"
        if loc[0] == "total":
            found = data.get("total")
            return f"total must be the name of the grand-total entity, found {quoted(found)}"
        if loc[0] == "levels" and kind == "value_error" and len(loc) == 1:
            return str(reason)
        if loc[0] == "levels":
            return (
                "levels must be a list of attribute names, coarse to fine, "
                f"found {quoted(data.get('levels'))}"
            )
        if loc[0] == "entities" and len(loc) == 1:
            return "entities must be a non-empty mapping of product name to attributes"
        if loc[0] == "entities" and len(loc) == 2:
            return f"entity '{loc[1]}': expected a mapping of attributes, found {quoted(error['input'])}"
        if loc[0] == "entities" and kind == "value_error":
            return f"entity '{loc[1]}': attribute '{loc[2]}' {reason}"
        if loc[0] == "labels":
            return f"labels must map level names to texts, found {quoted(data.get('labels'))}"
        return None

    return message_of


def _valid_part(data: Any, errors: list[ErrorDetails]) -> HierarchyFile | None:
    """The file without the parts that have errors, for the checks of the whole tree; ``None``
    when no product is left to check."""
    if not isinstance(data, Mapping):
        return None
    bad = {error["loc"][0] for error in errors if len(error["loc"]) == 1}
    bad |= {"levels", "labels"} & {error["loc"][0] for error in errors if error["loc"]}
    bad_entities = {
        e["loc"][1] for e in errors if e["loc"][:1] == ("entities",) and len(e["loc"]) > 1
    }
    entities = data.get("entities")
    if "entities" in bad or not isinstance(entities, Mapping):
        return None
    part = {key: data[key] for key in _KEYS if key in data and key not in bad}
    part["entities"] = {k: v for k, v in entities.items() if _name(k) not in bad_entities}
    if not part["entities"]:
        return None
    part.setdefault("total", "total")  # a stand-in, cleared below
    model = HierarchyFile.model_validate(part)
    return model.model_copy(update={"total": ""}) if "total" in bad else model


def parse_hierarchy(data: Any, file: str, node: yaml.Node | None = None) -> Hierarchy:
    """Validate hierarchy data (as loaded from YAML) and build the :class:`Hierarchy`.

    :param node: the YAML node of ``data``, for line numbers in messages.
    :raises HierarchyError: listing every problem.
    """
    problems = Problems(file)
    top = mapping_nodes(node)
    entity_nodes = mapping_nodes(top["entities"][1]) if "entities" in top else {}

    def line_of(loc: Location) -> int | None:
        if not loc:
            return node_line(node)
        if loc[0] == "entities" and len(loc) > 1 and str(loc[1]) in entity_nodes:
            return node_line(entity_nodes[str(loc[1])][0])
        return node_line(top[str(loc[0])][0]) if str(loc[0]) in top else None

    try:
        declared: HierarchyFile | None = HierarchyFile.model_validate(data)
    except ValidationError as exc:
        problems.extend(
            validation_problems(
                exc, HierarchyFile, file=file, line_of=line_of, message_of=_message_of(data)
            )
        )
        declared = _valid_part(data, exc.errors())
    for name, first, line in repeated_keys(top["entities"][1] if "entities" in top else None):
        problems.add(
            f"entity '{name}' is declared twice (first on line {first})",
            line=line,
            field="entities",
        )
    if declared is None:  # no product left whose tree could be checked
        raise HierarchyError(problems.problems)
    lines = {str(key).strip(): node_line(key_node) for key, (key_node, _) in entity_nodes.items()}
    for name, attributes in declared.entities.items():
        for level in declared.levels:
            if not attributes.get(level):
                problems.add(
                    f"entity '{name}': missing level attribute '{level}'",
                    line=lines.get(name),
                    field="entities",
                )
    rows = {
        name: {key: value for key, value in attributes.items() if value is not None}
        for name, attributes in declared.entities.items()
    }
    levels = list(declared.levels)
    frame = pd.DataFrame.from_dict(rows, orient="index").fillna("")
    for column in levels:
        if column not in frame:
            frame[column] = ""
    frame = frame[[*levels, *[c for c in frame.columns if c not in levels]]]
    total_line = line_of(("total",))
    _check_tree(frame, declared.total, levels, lines, problems, total_line)
    named = {*levels, *frame.columns, PRODUCT_LEVEL, TOTAL_LEVEL}
    for level in declared.labels:
        if level not in named:
            problems.add(
                f"labels: '{level}' is not a level or attribute; known: {', '.join(sorted(named))}",
                line=line_of(("labels",)),
                field="labels",
            )
    problems.raise_if_any(HierarchyError)
    frame.index.name = "entity"
    return Hierarchy(declared.total, levels, frame, declared.labels)


def _check_tree(
    frame: pd.DataFrame,
    total: str,
    levels: list[str],
    lines: Mapping[str, int | None],
    problems: Problems,
    total_line: int | None = None,
) -> None:
    """Names are unique across levels and every group sits under exactly one parent.

    Each problem points at the line of the product that shows it.
    """
    if frame.empty:
        return

    def add(message: str, where: Iterable[str]) -> None:
        line = next((lines[leaf] for leaf in where if leaf in lines), None)
        problems.add(message, line=line, field="entities")

    owner: dict[str, str] = dict.fromkeys(frame.index, PRODUCT_LEVEL)
    if total in owner:
        problems.add(f"'{total}' is both the total and a product", line=total_line, field="total")
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
                    where,
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
                add(f"{fine} '{group}' belongs to more than one {coarse}: {shown}", differs)
    view_of: dict[str, str] = {}  # a view group is selected by its name, so names are unique
    for view in (c for c in frame.columns if c not in levels):
        for group in pd.unique(frame[view]):
            if group == "":  # a product without this attribute
                continue
            if group in owner:
                add(
                    f"value '{group}' of attribute '{view}' is also the name of an entity; names must be unique",
                    frame.index[frame[view] == group],
                )
            elif view_of.setdefault(group, view) != view:
                add(
                    f"value '{group}' of attribute '{view}' is also a value of attribute "
                    f"'{view_of[group]}'; names must be unique",
                    frame.index[frame[view] == group],
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
    labels: Mapping[str, str] | None = None,
) -> Hierarchy:
    """A hierarchy from a product table: one row per leaf, a column per level and attribute.

    :param leaf: the column naming the leaves (products).
    :param levels: ``(level name, column)`` pairs, coarse to fine.
    :param attributes: ``(attribute name, column)`` pairs of views such as ``cardprofile``.
    :param file: the table's name in messages; ``where`` names its rows (``line 7``).
    :param labels: how people read the level and attribute names (as ``labels`` in YAML).
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
    problems = Problems(file)
    empty = frame["leaf"] == ""
    if empty.any():
        problems.add(f"{leaf} is empty in {', '.join(name_rows(frame.index[empty])[:5])}")
    frame = frame[~empty].drop_duplicates()
    twice = frame["leaf"].duplicated(keep=False)
    for product, rows in frame[twice].groupby("leaf", sort=True):
        problems.add(
            f"product '{product}' is listed {len(rows)} times with different groups "
            f"({', '.join(name_rows(rows.index)[:5])})"
        )
    problems.raise_if_any(HierarchyError)
    entities = {
        row["leaf"]: {key: row[key] for key in names[1:] if row[key] != ""}
        for row in frame.to_dict(orient="records")
    }
    data = {"total": total, "levels": [level for level, _ in levels], "entities": entities}
    if labels:
        data["labels"] = dict(labels)
    return parse_hierarchy(data, file)
