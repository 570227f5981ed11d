"""Why a group's value changed ("Warum?"): each member's contribution to the change against the
previous year, and for a ratio its rate and mix effects (docs/analysts.md, "Explaining a change").

Every number rests on ``sheet.query``: the group's value, previous value and change are the
query's, and so are the members' rows (a member that is the part of a view's group inside the
entity is computed by the same engine, as a group of an extra view). The contributions are computed from the members' window
values of the KPI's additive parts, so that they add up to the group's change exactly (up to
floating-point rounding):

- an *additive* KPI (a source KPI rolled up by sum, or a derived KPI that is a sum or difference of
  such KPIs, possibly scaled by constants): a member contributes its own change; a member with a
  value in only one window contributes that value (launch) or minus its previous value (stop);
- a *ratio* ``a / b`` of two additive parts: the group's ratio ``R = Σ a_i / Σ b_i`` is the
  weighted mean ``Σ w_i r_i`` of the members' ratios ``r_i = a_i / b_i`` with weights
  ``w_i = b_i / Σ b``; its change splits per member into a *rate effect* ``w̄_i (r1_i − r0_i)``
  and a *mix effect* ``(r̄_i − R̄)(w1_i − w0_i)`` (bars are midpoints of the two windows). A
  member without a ratio in one window (no ``b``, or ``b`` zero) puts its whole effect
  ``a1_i / B1 − a0_i / B0 − R̄ (w1_i − w0_i)`` into mix.

Other KPIs (``min``/``max`` over time, products of KPIs, constants added) have no exact split;
explaining them raises :class:`~kpisheet.errors.QueryError` saying why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kpisheet.constants import (
    AS_OF,
    CHANGE,
    COMPLETE,
    ENTITY,
    KPI,
    LEVEL,
    MONTHS,
    PREVIOUS_COMPLETE,
    PREVIOUS_MONTHS,
    PREVIOUS_VALUE,
    PRODUCT_LEVEL,
    TOTAL_LEVEL,
    VALUE,
    WINDOW,
    EntityAggregation,
    TimeAggregation,
    Window,
)
from kpisheet.errors import QueryError
from kpisheet.formula import Binary, Node, Number, Ref, Unary
from kpisheet.registry import Registry

if TYPE_CHECKING:
    from kpisheet.months import MonthLike
    from kpisheet.sheet import KPISheet

__all__ = [
    "CONTRIBUTION",
    "EXPLAIN_COLUMNS",
    "MEMBER",
    "MIX_EFFECT",
    "NAMED_MEMBERS",
    "RATE_EFFECT",
    "SPLITTABLE_TIME",
    "ExplainKind",
    "Explanation",
    "Member",
    "decompose",
    "default_by",
    "entity_level",
    "explain",
    "members_of",
    "sheet_window",
    "split_of",
]

#: Column of an explanation: the member (child) of the explained group.
MEMBER = "member"
#: Column of an explanation: the member's share of the group's change.
CONTRIBUTION = "contribution"
#: Columns of a ratio's decomposition (empty for other KPIs).
RATE_EFFECT = "rate_effect"
MIX_EFFECT = "mix_effect"
#: Columns of :attr:`Explanation.members`, in order (``entity`` is the explained group).
EXPLAIN_COLUMNS: tuple[str, ...] = (
    AS_OF,
    WINDOW,
    KPI,
    ENTITY,
    MEMBER,
    LEVEL,
    VALUE,
    PREVIOUS_VALUE,
    CHANGE,
    CONTRIBUTION,
    RATE_EFFECT,
    MIX_EFFECT,
    COMPLETE,
    PREVIOUS_COMPLETE,
)
#: Time aggregations whose group value is a sum of the members' values (``mean``: of their
#: window sums divided by the group's months).
SPLITTABLE_TIME: frozenset[TimeAggregation] = frozenset(
    {TimeAggregation.SUM, TimeAggregation.LAST, TimeAggregation.FIRST, TimeAggregation.MEAN}
)
#: Members named in a message before the rest is counted.
NAMED_MEMBERS = 3


class ExplainKind(StrEnum):
    """How a KPI's change splits over members."""

    ADDITIVE = "additive"
    RATIO = "ratio"


@dataclass(frozen=True)
class Explanation:
    """Why a group's KPI changed against the previous year: one row per member in ``members``.

    ``value``, ``previous_value``, ``change``, ``complete`` and ``previous_complete`` are the
    group's, as ``sheet.query`` reports them. ``members`` has the columns
    :data:`EXPLAIN_COLUMNS`, sorted by the size of the contribution (largest first); its
    ``contribution`` column sums to ``change``. ``fully_explained`` is false when the group's
    change is missing or either window of the group is not complete; ``message`` then says why.
    """

    kpi: str
    entity: str
    level: str
    by: str
    as_of: str
    window: str
    kind: ExplainKind
    value: float
    previous_value: float
    change: float
    complete: bool
    previous_complete: bool
    members: pd.DataFrame
    fully_explained: bool
    message: str

    @property
    def is_ratio(self) -> bool:
        """True when the members carry rate and mix effects."""
        return self.kind is ExplainKind.RATIO

    def shares(self) -> pd.Series:
        """Each member's contribution as a fraction of the group's change (index of ``members``);
        missing when the change is missing or zero."""
        change = self.change
        explained = bool(np.isfinite(change)) and change != 0
        return pd.Series(
            self.members[CONTRIBUTION] / change if explained else np.nan,
            index=self.members.index,
            dtype=float,
        )


# -- which KPIs split, and how ---------------------------------------------------------------


class _NotSplittable(Exception):
    """Raised inside the split analysis with the reason a formula has no exact split."""


def _linear(node: Node, registry: Registry) -> dict[str, float]:
    """Coefficients of source KPIs when ``node`` is a sum of rolled-up KPIs times constants."""
    if isinstance(node, Ref):
        return _linear_kpi(node.kpi, registry)
    if isinstance(node, Unary):
        return {k: -c for k, c in _linear(node.operand, registry).items()}
    if isinstance(node, Number):
        raise _NotSplittable(
            f"the constant {node.value:g} is not part of any member, so it cannot be shared out"
        )
    if node.op in "+-":
        left = _linear(node.left, registry)
        sign = 1.0 if node.op == "+" else -1.0
        for kpi, coefficient in _linear(node.right, registry).items():
            left[kpi] = left.get(kpi, 0.0) + sign * coefficient
        return left
    if node.op == "*" and isinstance(node.left, Number):
        return {k: node.left.value * c for k, c in _linear(node.right, registry).items()}
    if node.op in "*/" and isinstance(node.right, Number) and node.right.value != 0:
        factor = node.right.value if node.op == "*" else 1.0 / node.right.value
        return {k: factor * c for k, c in _linear(node.left, registry).items()}
    raise _NotSplittable(
        "a product or quotient of KPIs inside a sum has no exact split over members"
    )


def _linear_kpi(kpi_id: str, registry: Registry) -> dict[str, float]:
    definition = registry[kpi_id]
    if definition.entity_aggregation is EntityAggregation.NONE:
        raise _NotSplittable(f"KPI '{kpi_id}' has entity_aggregation none: it has no group values")
    if (formula := definition.parsed_formula) is not None:
        return _linear(formula.tree, registry)
    rule = definition.time_aggregation
    assert rule is not None  # every source KPI has one (checked when the definitions load)
    if rule not in SPLITTABLE_TIME:
        raise _NotSplittable(
            f"KPI '{kpi_id}' takes the {rule.value} over the window's months, which is not a sum "
            "of the members' values"
        )
    return {kpi_id: 1.0}


def split_of(
    kpi_id: str, registry: Registry
) -> tuple[ExplainKind, dict[str, float], dict[str, float]]:
    """How a KPI's change splits: additive (source KPI coefficients) or a ratio of two such sums.

    :raises QueryError: naming the KPI and why it has no exact split over members.
    """
    definition = registry[kpi_id]
    try:
        if definition.entity_aggregation is EntityAggregation.NONE:
            raise _NotSplittable("it has entity_aggregation none: there is no group value")
        formula = definition.parsed_formula
        tree = formula.tree if formula is not None else Ref(kpi_id)
        if isinstance(tree, Binary) and tree.op == "/" and not isinstance(tree.right, Number):
            numerator = _linear(tree.left, registry)
            denominator = _linear(tree.right, registry)
            return ExplainKind.RATIO, numerator, denominator
        return ExplainKind.ADDITIVE, _linear(tree, registry), {}
    except _NotSplittable as exc:
        how = f" (formula: {definition.formula})" if definition.is_derived else ""
        raise QueryError(
            f"cannot explain KPI '{kpi_id}'{how}: {exc}; a change is explained for KPIs summed "
            "over products and for a ratio of two such KPIs"
        ) from None


# -- which members ----------------------------------------------------------------------------


def _leaves_of(sheet: KPISheet, entity: str, level: str) -> pd.Index:
    attributes = sheet.hierarchy.attributes
    if level == TOTAL_LEVEL:
        return attributes.index
    if level == PRODUCT_LEVEL:
        return pd.Index([entity])
    return attributes.index[attributes[level] == entity]


def entity_level(sheet: KPISheet, entity: str) -> str:
    """The level (or view) of an entity name, as ``sheet.query`` reports it (the first match)."""
    cube = sheet._cube
    if entity not in cube.entity_index:
        from kpisheet.sheet import _unknown

        raise _unknown("entity", [entity], list(dict.fromkeys(cube.entities)))
    return str(cube.entity_levels[cube.entity_index[entity]])


def default_by(sheet: KPISheet, level: str) -> str:
    """The next finer level of the tree below ``level`` (products below the finest level and
    below a view's groups)."""
    levels = sheet.hierarchy.levels  # coarse to fine
    if level == TOTAL_LEVEL:
        return levels[0] if levels else PRODUCT_LEVEL
    if level in levels and levels.index(level) + 1 < len(levels):
        return levels[levels.index(level) + 1]
    return PRODUCT_LEVEL


@dataclass(frozen=True)
class Member:
    """A member of an explained group: its name, level (or view) and the products it holds;
    ``partial`` when it is the part of a larger group that lies inside the explained entity."""

    name: str
    level: str
    leaves: tuple[str, ...]
    partial: bool = False


def members_of(sheet: KPISheet, entity: str, level: str, by: str) -> list[Member]:
    """The members that partition the entity's products, in hierarchy order.

    The groups of ``by`` (a level or view) that hold the entity's products — where such a group
    also holds products outside the entity (a view cutting across a level, e.g. the card
    profiles of a sector), only its part inside the entity; products that belong to no group of
    a view are members of their own.

    :raises QueryError: when the entity is a product, or ``by`` is unknown or not finer than it.
    """
    hierarchy = sheet.hierarchy
    tree_levels = sheet.levels  # fine to coarse, with product and total
    known = [PRODUCT_LEVEL, *hierarchy.levels, *hierarchy.views]
    if by not in known:
        from kpisheet.sheet import _unknown

        raise _unknown("level", [by], known)
    if level == PRODUCT_LEVEL:
        raise QueryError(
            f"'{entity}' is a product and has no members; explain a group (the total, a group "
            "of a level or of a view) instead"
        )
    if by == level or (
        by in tree_levels
        and level in tree_levels
        and tree_levels.index(by) >= tree_levels.index(level)
    ):
        if level in tree_levels:
            finer = tree_levels[: tree_levels.index(level)]
            choices = [name for name in known if name in finer or name in hierarchy.views]
        else:
            choices = [name for name in known if name != level]
        raise QueryError(
            f"cannot explain '{entity}' ({level}) by '{by}': its members must be finer; "
            f"choose one of: {', '.join(choices)}"
        )
    leaves = _leaves_of(sheet, entity, level)
    if by == PRODUCT_LEVEL:
        return [Member(leaf, PRODUCT_LEVEL, (leaf,)) for leaf in leaves]
    attributes = hierarchy.attributes
    groups = attributes.loc[leaves, by]
    members: list[Member] = []
    for group in dict.fromkeys(groups):
        if group == "":
            continue
        inside = tuple(groups.index[groups == group])
        whole = int((attributes[by] == group).sum())
        members.append(Member(str(group), by, inside, partial=len(inside) < whole))
    members += [
        Member(leaf, PRODUCT_LEVEL, (leaf,)) for leaf, group in groups.items() if group == ""
    ]
    return members


#: Name of the grouping that holds partial members while they are computed (not an attribute
#: a hierarchy file can declare), and the prefix of their internal names.
_PART_VIEW = "\x00explain"
_PART_PREFIX = "\x00part-"


def _partial_rows(
    sheet: KPISheet,
    members: list[Member],
    as_of: MonthLike | None,
    window: str | Window,
    kpis: list[str],
) -> pd.DataFrame:
    """Query rows of members that are parts of groups, computed like any group of the sheet.

    The parts become the groups of an extra view of the hierarchy, so their values, roll-ups and
    coverage follow exactly the rules of every other group (docs/analysts.md).
    """
    from kpisheet import engine
    from kpisheet.hierarchy import Hierarchy
    from kpisheet.sheet import parse_window

    hierarchy = sheet.hierarchy
    labels = pd.Series("", index=hierarchy.attributes.index, dtype=object)
    codes = {}
    for i, member in enumerate(members):
        code = f"{_PART_PREFIX}{i}"
        labels[list(member.leaves)] = code
        codes[code] = member
    attributes = hierarchy.attributes.assign(**{_PART_VIEW: labels})
    cube = engine.Cube(
        sheet._cube.observations(),
        sheet.registry,
        Hierarchy(hierarchy.total, hierarchy.levels, attributes),
    )
    rows = engine.compute(cube, sheet._as_of(as_of), parse_window(window), kpis, list(codes))
    found = [codes[code] for code in rows[ENTITY]]
    rows[ENTITY] = pd.Series([m.name for m in found], index=rows.index, dtype=str)
    rows[LEVEL] = pd.Series([m.level for m in found], index=rows.index, dtype=str)
    return rows


# -- the explanation --------------------------------------------------------------------------


def _nan0(values: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(values), 0.0, values)


@dataclass(frozen=True)
class _Rows:
    """The query rows of one KPI as arrays: per member (``members``, NaN where a member has no
    row) and for the group (``group``, ``None`` when it has no row)."""

    members: Mapping[str, np.ndarray]
    group: Mapping[str, float] | None

    @property
    def listed(self) -> np.ndarray:
        """Members that have a row."""
        listed: np.ndarray = ~np.isnan(self.members[MONTHS])
        return listed


_ROW_COLUMNS = (VALUE, PREVIOUS_VALUE, CHANGE, MONTHS, PREVIOUS_MONTHS, COMPLETE, PREVIOUS_COMPLETE)


def _rows_by_kpi(
    result: pd.DataFrame, members: list[Member], entity: str, level: str, kpis: list[str]
) -> dict[str, _Rows]:
    """Split query rows by KPI into member arrays (in ``members`` order) and the group's row."""
    keys = pd.MultiIndex.from_arrays([result[ENTITY].to_numpy(), result[LEVEL].to_numpy()])
    wanted = pd.MultiIndex.from_tuples([(m.name, m.level) for m in members])
    position = wanted.get_indexer(keys)
    is_group = (result[ENTITY].to_numpy() == entity) & (result[LEVEL].to_numpy() == level)
    kpi_column = result[KPI].to_numpy()
    columns = {column: result[column].to_numpy(dtype=float) for column in _ROW_COLUMNS}
    out = {}
    for kpi in kpis:
        of_kpi = kpi_column == kpi
        rows = np.flatnonzero(of_kpi & (position >= 0))
        arrays = {}
        for column, values in columns.items():
            array = np.full(len(members), np.nan)
            array[position[rows]] = values[rows]
            arrays[column] = array
        group_rows = np.flatnonzero(of_kpi & is_group)
        group = (
            {column: values[group_rows[0]] for column, values in columns.items()}
            if len(group_rows)
            else None
        )
        out[kpi] = _Rows(arrays, group)
    return out


def _shares(
    rows: _Rows, kpi: str, registry: Registry, previous: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Each member's part of the group's window value of a source KPI (``mean``: its window sum
    over the group's months) and whether it has a value; NaN-free."""
    value_column, months_column = (PREVIOUS_VALUE, PREVIOUS_MONTHS) if previous else (VALUE, MONTHS)
    values = rows.members[value_column]
    has = ~np.isnan(values)
    if registry[kpi].time_aggregation is TimeAggregation.MEAN:
        group_months = float(rows.group[months_column]) if rows.group is not None else 0.0
        if group_months > 0:
            values = values * rows.members[months_column] / group_months
    return _nan0(values), has


def _combine(
    coefficients: Mapping[str, float], rows: Mapping[str, _Rows], registry: Registry, previous: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Σ coefficient × share over the source KPIs, per member, and whether any of them has a value."""
    parts = [(c, *_shares(rows[kpi], kpi, registry, previous)) for kpi, c in coefficients.items()]
    total = np.sum([c * share for c, share, _ in parts], axis=0)
    has = np.logical_or.reduce([present for _, _, present in parts])
    return total, has


def _group_part(
    coefficients: Mapping[str, float], rows: Mapping[str, _Rows], previous: bool
) -> float:
    """The group's window value of a linear part, as the formula gives it (NaN when a term is)."""
    column = PREVIOUS_VALUE if previous else VALUE
    total = 0.0
    for kpi, coefficient in coefficients.items():
        group = rows[kpi].group
        total += coefficient * (float(group[column]) if group is not None else math.nan)
    return total


def explain(
    sheet: KPISheet,
    kpi: str,
    entity: str,
    as_of: MonthLike | None = None,
    window: str | Window = "1M",
    by: str | None = None,
) -> Explanation:
    """The explanation of one group's change (see :meth:`kpisheet.KPISheet.explain`)."""
    (kpi_id,) = sheet._kpi_ids([kpi])
    level = entity_level(sheet, entity)
    kind, numerator, denominator = split_of(kpi_id, sheet.registry)
    grouping = by if by is not None else default_by(sheet, level)
    members = members_of(sheet, entity, level, grouping)
    sources = list(dict.fromkeys([*numerator, *denominator]))
    kpi_ids = [kpi_id, *[source for source in sources if source != kpi_id]]
    parts = [member for member in members if member.partial]
    whole = [member.name for member in members if not member.partial]
    result = sheet.query(as_of=as_of, window=window, kpis=kpi_ids, entities=[entity, *whole])
    if parts:
        partial = _partial_rows(sheet, parts, as_of, window, kpi_ids)
        result = pd.concat([result, partial], ignore_index=True)
    as_of_text = str(result[AS_OF].iloc[0]) if len(result) else str(sheet._as_of(as_of))
    window_text = sheet_window(window)

    rows = _rows_by_kpi(result, members, entity, level, kpi_ids)
    own, group = rows[kpi_id].members, rows[kpi_id].group
    value = float(group[VALUE]) if group is not None else math.nan
    previous_value = float(group[PREVIOUS_VALUE]) if group is not None else math.nan
    change = value - previous_value
    complete = bool(group[COMPLETE]) if group is not None else False
    previous_complete = bool(group[PREVIOUS_COMPLETE]) if group is not None else False

    registry = sheet.registry
    a1, has_a1 = _combine(numerator, rows, registry, previous=False)
    a0, has_a0 = _combine(numerator, rows, registry, previous=True)
    rate = mix = np.full(len(members), np.nan)
    if kind is ExplainKind.ADDITIVE:
        contribution = a1 - a0
        present = has_a1 | has_a0
    else:
        b1, has_b1 = _combine(denominator, rows, registry, previous=False)
        b0, has_b0 = _combine(denominator, rows, registry, previous=True)
        big_b1 = _group_part(denominator, rows, previous=False)
        big_b0 = _group_part(denominator, rows, previous=True)
        rate, mix = decompose(a0, b0, a1, b1, big_b0, big_b1, previous_value, value)
        contribution = rate + mix
        present = has_a1 | has_a0 | has_b1 | has_b0
    if not math.isfinite(change):
        contribution = np.full(len(members), np.nan)
        rate = mix = contribution
    frame = pd.DataFrame(
        {
            AS_OF: as_of_text,
            WINDOW: window_text,
            KPI: kpi_id,
            ENTITY: entity,
            MEMBER: [member.name for member in members],
            LEVEL: [member.level for member in members],
            VALUE: own[VALUE],
            PREVIOUS_VALUE: own[PREVIOUS_VALUE],
            CHANGE: own[CHANGE],
            CONTRIBUTION: contribution,
            RATE_EFFECT: rate,
            MIX_EFFECT: mix,
            COMPLETE: own[COMPLETE] == 1,
            PREVIOUS_COMPLETE: own[PREVIOUS_COMPLETE] == 1,
        },
        columns=list(EXPLAIN_COLUMNS),
    )
    listed = np.logical_or.reduce([part.listed for part in rows.values()])
    frame = frame[present | listed]
    magnitude = np.nan_to_num(frame[CONTRIBUTION].abs().to_numpy(), nan=-1.0)
    frame = frame.iloc[np.argsort(-magnitude, kind="stable")].reset_index(drop=True)
    message = _message(entity, kpi_id, value, previous_value, complete, previous_complete, frame)
    return Explanation(
        kpi=kpi_id,
        entity=entity,
        level=level,
        by=grouping,
        as_of=as_of_text,
        window=window_text,
        kind=kind,
        value=value,
        previous_value=previous_value,
        change=change,
        complete=complete,
        previous_complete=previous_complete,
        members=frame,
        fully_explained=not message,
        message=message,
    )


def sheet_window(window: str | Window) -> str:
    """The window word of a query argument (``"12m"`` → ``12M``)."""
    from kpisheet.sheet import parse_window

    return parse_window(window).value


def decompose(
    a0: np.ndarray,
    b0: np.ndarray,
    a1: np.ndarray,
    b1: np.ndarray,
    big_b0: float,
    big_b1: float,
    ratio0: float,
    ratio1: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Rate and mix effects per member of the change of ``R = Σ a / Σ b`` (docs/analysts.md).

    ``a*``/``b*`` are the members' parts (missing as 0), ``big_b*`` the group's denominators and
    ``ratio*`` the group's ratios, previous (0) and current (1). With ``w = b / B``,
    ``r = a / b`` and bars for midpoints: rate ``w̄ (r1 − r0)``, mix ``(r̄ − R̄)(w1 − w0)``;
    a member without a ratio in a window (``b`` zero) gets rate 0 and its whole effect
    ``a1 / B1 − a0 / B0 − R̄ (w1 − w0)`` as mix. Per member, rate + mix is its contribution;
    summed over members, ``ratio1 − ratio0``.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        w0, w1 = b0 / big_b0, b1 / big_b1
        t0, t1 = a0 / big_b0, a1 / big_b1  # each member's term of Σ a / B
        defined = (b0 != 0) & (b1 != 0)
        r0 = np.where(defined, a0 / np.where(defined, b0, 1.0), 0.0)
        r1 = np.where(defined, a1 / np.where(defined, b1, 1.0), 0.0)
    mean_ratio = (ratio0 + ratio1) / 2
    rate = np.where(defined, (w0 + w1) / 2 * (r1 - r0), 0.0)
    mix = np.where(
        defined,
        ((r0 + r1) / 2 - mean_ratio) * (w1 - w0),
        (t1 - t0) - mean_ratio * (w1 - w0),
    )
    return rate, mix


def _message(
    entity: str,
    kpi: str,
    value: float,
    previous_value: float,
    complete: bool,
    previous_complete: bool,
    members: pd.DataFrame,
) -> str:
    """Why the change is not fully explained ("" when it is)."""
    if not math.isfinite(value) or not math.isfinite(previous_value):
        which = "current" if not math.isfinite(value) else "previous"
        return (
            f"'{entity}' has no {which} value of KPI '{kpi}' (or it is a division by zero), so "
            "there is no change to explain"
        )
    windows = [
        word for word, ok in (("current", complete), ("previous-year", previous_complete)) if not ok
    ]
    if not windows:
        return ""
    gaps = members.loc[~(members[COMPLETE] & members[PREVIOUS_COMPLETE]), MEMBER].tolist()
    named = ", ".join(f"'{name}'" for name in gaps[:NAMED_MEMBERS])
    more = f" and {len(gaps) - NAMED_MEMBERS} more" if len(gaps) > NAMED_MEMBERS else ""
    culprits = f"; members with incomplete windows: {named}{more}" if gaps else ""
    return (
        f"the change of '{entity}' is not fully explained: its {' and '.join(windows)} window "
        f"is not complete (a product expected in a month did not report){culprits}"
    )
