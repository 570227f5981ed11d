"""What the app offers to choose from a sheet: months, entity groupings and their entities, KPI
groups and their KPIs, each as label → key.

Labels come from :mod:`kpisheet.presentation` (level labels from the hierarchy), entities and
their order from the sheet's hierarchy (:meth:`kpisheet.hierarchy.Hierarchy.descendants`).
"""

from __future__ import annotations

import kpisheet
from kpisheet.constants import ENTITY, LEVEL, TOTAL_LEVEL
from kpisheet.presentation import words

#: Key of "everything" in the entity-grouping and KPI-group choices.
ALL = "*"
#: Prefix of a view (another grouping of the products, e.g. by card profile) in the grouping keys.
VIEW_PREFIX = "view:"


def month_options(sheet: kpisheet.KPISheet) -> dict[str, str]:
    """Months of the sheet, newest first, label → ``YYYY-MM``."""
    months = [str(month) for month in sheet.months[::-1]]
    return {words.month_long(month): month for month in months}


def grouping_options(sheet: kpisheet.KPISheet) -> dict[str, str]:
    """Entity groupings, label → key: all, the total, each group of each level, each view."""
    hierarchy = sheet.hierarchy
    options = {words.ALL_ENTITIES: ALL}
    for level in reversed(sheet.levels[1:]):
        label = words.level_label(level, hierarchy)
        for name in hierarchy.groups(level):
            options[f"{label}: {name}"] = f"{level}:{name}"
    for view in sheet.views:
        options[f"{words.VIEW_WORD} {words.level_label(view, hierarchy)}"] = f"{VIEW_PREFIX}{view}"
    return options


def grouping_entities(sheet: kpisheet.KPISheet, key: str) -> list[str]:
    """The entities of a grouping, coarse to fine.

    All: every entity of the tree. The total: the total alone. A group: the group, its
    subgroups and its products. A view: the total and the view's groups.
    """
    hierarchy = sheet.hierarchy
    if key == ALL:
        return list(hierarchy.entities)
    if key.startswith(VIEW_PREFIX):
        return [hierarchy.total, *hierarchy.groups(key.removeprefix(VIEW_PREFIX))]
    level, name = key.split(":", 1)
    if level == TOTAL_LEVEL:
        return [name]
    return list(hierarchy.descendants(name))


def entity_options(sheet: kpisheet.KPISheet, entities: list[str]) -> dict[str, str]:
    """Entities, label (name and level) → name."""
    frame = sheet.entities
    levels = dict(zip(frame[ENTITY], frame[LEVEL], strict=False))
    hierarchy = sheet.hierarchy
    return {f"{name} ({words.level_label(levels[name], hierarchy)})": name for name in entities}


def kpi_group_options(registry: kpisheet.Registry) -> dict[str, str]:
    """KPI groups, label → key."""
    return {words.ALL_KPI_GROUPS: ALL, **{group: group for group in registry.groups}}


def kpi_options(registry: kpisheet.Registry, group: str) -> dict[str, str]:
    """The KPIs of a KPI group (``ALL``: every KPI), label → id, in declared order."""
    definitions = list(registry) if group == ALL else list(registry.in_group(group))
    return {definition.label: definition.id for definition in definitions}
