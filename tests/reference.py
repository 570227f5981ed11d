"""A brute-force reference of the computation rules (docs/analysts.md), written to be obviously
right rather than fast, including coverage: lifetimes, covered months and both windows' flags.

Plain Python loops over months, entities and KPIs, on a :class:`~tests.strategies.Project`
(plain data: hierarchy mapping, KPI mappings, observation tuples). Nothing here calls
kpisheet, so the engine is compared with an independent computation.
"""

from __future__ import annotations

import ast
import csv
import math
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import pandas as pd
import yaml

from tests.strategies import Project

NAN = math.nan
COLUMNS = [
    "as_of",
    "window",
    "level",
    "entity",
    "kpi",
    "value",
    "previous_value",
    "change",
    "change_pct",
    "months",
    "complete",
    "previous_months",
    "previous_complete",
]
WINDOW_LENGTHS = {"1M": 1, "3M": 3, "6M": 6, "12M": 12}


def month_number(text: str) -> int:
    """``YYYY-MM`` as a running month number (year * 12 + month - 1)."""
    year, month = text.split("-")
    return int(year) * 12 + int(month) - 1


def month_text(number: int) -> str:
    """A running month number as ``YYYY-MM``."""
    return f"{number // 12:04d}-{number % 12 + 1:02d}"


def window_months(as_of: int, window: str) -> list[int]:
    """The months of a window ending at ``as_of``, oldest first."""
    length = WINDOW_LENGTHS[window] if window != "YTD" else as_of % 12 + 1
    return [as_of - offset for offset in reversed(range(length))]


def load_project(directory: Path) -> Project:
    """A project from ``kpis.yaml``, ``entities.yaml`` and ``observations.csv`` in ``directory``,
    read with yaml and the csv module (months as ``YYYY-MM``, ``YYYYMM`` or ``YYYY-MM-DD``)."""
    kpis = yaml.safe_load((directory / "kpis.yaml").read_text(encoding="utf-8"))
    tree = yaml.safe_load((directory / "entities.yaml").read_text(encoding="utf-8"))
    observations = []
    with (directory / "observations.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            month = row["month"]
            month = f"{month[:4]}-{month[4:]}" if len(month) == 6 else month[:7]
            value = float(row["value"]) if row["value"] else NAN
            observations.append((month, row["kpi"], row["entity"], value))
    entities = {name: dict(attributes) for name, attributes in tree["entities"].items()}
    return Project(tree["total"], list(tree["levels"]), entities, kpis, observations)


def is_missing(value: float) -> bool:
    return value is None or math.isnan(value)


def evaluate(formula: str, values: dict[str, float]) -> float:
    """Evaluate ``+ - * /``, parentheses, numbers and ids; division by zero gives NaN."""

    def run(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return run(node.body)
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -run(node.operand)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd):
            return run(node.operand)
        if isinstance(node, ast.BinOp):
            left, right = run(node.left), run(node.right)
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            if isinstance(node.op, ast.Mult):
                return left * right
            if isinstance(node.op, ast.Div):
                return NAN if right == 0 else left / right
        raise ValueError(f"unsupported formula {formula!r}")

    result = run(ast.parse(formula, mode="eval"))
    return result if math.isfinite(result) else NAN


def formula_names(formula: str) -> list[str]:
    """The ids a formula references."""
    return sorted(
        {
            node.id
            for node in ast.walk(ast.parse(formula, mode="eval"))
            if isinstance(node, ast.Name)
        }
    )


class Reference:
    """Window values of a :class:`Project` computed month by month in plain Python."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.kpis = {kpi["id"]: kpi for kpi in project.kpis}
        self.values: dict[tuple[int, str, str], float] = {}
        for month, kpi, entity, value in project.observations:
            self.values[(month_number(month), kpi, entity)] = float(value)
        months = [month_number(row[0]) for row in project.observations]
        self.first, self.last = min(months), max(months)
        self.monthly = cache(self._monthly)
        self.window_value = cache(self._window_value)
        self.covered = cache(self._covered)
        # lifetime of each (source KPI, leaf): its first and last month with a value
        self.lifetime: dict[tuple[str, str], tuple[int, int]] = {}
        for (month, kpi, leaf), value in self.values.items():
            if is_missing(value):
                continue
            first, last = self.lifetime.get((kpi, leaf), (month, month))
            self.lifetime[(kpi, leaf)] = (min(first, month), max(last, month))

    # --- the entity tree ---------------------------------------------------------------------

    def members(self, entity: str) -> list[str]:
        """The leaves under an entity (itself for a leaf)."""
        leaves = self.project.entities
        if entity in leaves:
            return [entity]
        if entity == self.project.total:
            return list(leaves)
        return [leaf for leaf, attributes in leaves.items() if entity in attributes.values()]

    def entities(self, views: bool = False) -> list[tuple[str, str]]:
        """``(entity, level)`` of the total, every group of every level (and view), every leaf."""
        found = [(self.project.total, "total")]
        groupings = list(self.project.levels)
        if views:
            groupings += self.project.views
        for grouping in groupings:
            for attributes in self.project.entities.values():
                group = attributes.get(grouping, "")
                if group and (group, grouping) not in found:
                    found.append((group, grouping))
        found += [(leaf, "product") for leaf in self.project.entities]
        return found

    # --- docs/semantics.md -------------------------------------------------------------------------------

    def is_group(self, entity: str) -> bool:
        return entity not in self.project.entities

    def _monthly(self, kpi: str, entity: str, month: int) -> float:
        """Rule 1: the value of a month; a group sums those of its leaves that have one."""
        definition = self.kpis[kpi]
        if self.is_group(entity) and definition.get("entity_aggregation") == "none":
            return NAN
        if "formula" in definition:
            names = formula_names(definition["formula"])
            return evaluate(
                definition["formula"], {n: self.monthly(n, entity, month) for n in names}
            )
        present = [
            self.values[(month, kpi, leaf)]
            for leaf in self.members(entity)
            if not is_missing(self.values.get((month, kpi, leaf), NAN))
        ]
        return sum(present) if present else NAN

    def leaf_components(self, kpi: str) -> list[str]:
        definition = self.kpis[kpi]
        if "formula" not in definition:
            return [kpi]
        return sorted(
            {c for n in formula_names(definition["formula"]) for c in self.leaf_components(n)}
        )

    def _window_value(self, kpi: str, entity: str, as_of: int, window: str) -> tuple[float, int]:
        """Rules 2 and 3: ``(value, months with a value)`` of a window."""
        definition = self.kpis[kpi]
        months = window_months(as_of, window)
        if "formula" in definition:
            if self.is_group(entity) and definition.get("entity_aggregation") == "none":
                return NAN, 0
            names = formula_names(definition["formula"])
            value = evaluate(
                definition["formula"],
                {n: self.window_value(n, entity, as_of, window)[0] for n in names},
            )
            count = min(
                self.window_value(c, entity, as_of, window)[1] for c in self.leaf_components(kpi)
            )
            return value, count
        monthly = [self.monthly(kpi, entity, month) for month in months]
        present = [value for value in monthly if not is_missing(value)]
        rule = definition["time_aggregation"]
        if not present:
            return NAN, 0
        if rule == "sum":
            value = sum(present)
        elif rule == "mean":
            value = sum(present) / len(present)
        elif rule == "min":
            value = min(present)
        elif rule == "max":
            value = max(present)
        elif rule == "last":
            value = monthly[-1]
        elif rule == "first":
            value = monthly[0]
        else:
            raise ValueError(rule)
        return value, len(present)

    # --- coverage ---------------------------------------------------------------------------

    def expected(self, kpi: str, leaf: str, month: int) -> bool:
        """Whether the month lies inside the leaf's lifetime for a source KPI."""
        if (kpi, leaf) not in self.lifetime:
            return False
        first, last = self.lifetime[(kpi, leaf)]
        return first <= month <= last

    def _covered(self, kpi: str, entity: str, month: int) -> bool:
        """A month is covered when the entity has a value and every expected member reports.

        A derived KPI's month is covered when all of its source KPIs' are.
        """
        definition = self.kpis[kpi]
        if self.is_group(entity) and definition.get("entity_aggregation") == "none":
            return False
        if "formula" in definition:
            return all(self.covered(c, entity, month) for c in self.leaf_components(kpi))
        if is_missing(self.monthly(kpi, entity, month)):
            return False
        return all(
            not is_missing(self.values.get((month, kpi, leaf), NAN))
            for leaf in self.members(entity)
            if self.expected(kpi, leaf, month)
        )

    def all_covered(self, kpi: str, entity: str, as_of: int, window: str) -> bool:
        """Every month of the window is covered."""
        return all(self.covered(kpi, entity, m) for m in window_months(as_of, window))

    def complete(self, kpi: str, entity: str, as_of: int, window: str) -> bool:
        """``last``/``first``: that month covered; other rules: every month covered; derived: all
        source KPIs complete."""
        definition = self.kpis[kpi]
        if self.is_group(entity) and definition.get("entity_aggregation") == "none":
            return False
        if "formula" in definition:
            return all(self.complete(c, entity, as_of, window) for c in self.leaf_components(kpi))
        months = window_months(as_of, window)
        rule = definition["time_aggregation"]
        if rule == "last":
            return self.covered(kpi, entity, months[-1])
        if rule == "first":
            return self.covered(kpi, entity, months[0])
        return self.all_covered(kpi, entity, as_of, window)

    def complete_per_account(self, kpi: str, entity: str, as_of: int, window: str) -> bool:
        """Per account: also the ``average_per`` KPI covered in every month of the window."""
        per = self.kpis[kpi].get("average_per")
        complete = self.complete(kpi, entity, as_of, window)
        return complete and (per is None or self.all_covered(per, entity, as_of, window))

    def per_account(self, kpi: str, entity: str, as_of: int, window: str) -> float:
        """Rule 4: the window value divided by the window's mean of the ``average_per`` KPI."""
        per = self.kpis[kpi].get("average_per")
        if per is None:
            return NAN
        value = self.window_value(kpi, entity, as_of, window)[0]
        present = [
            v
            for v in (self.monthly(per, entity, m) for m in window_months(as_of, window))
            if not is_missing(v)
        ]
        if not present:
            return NAN
        mean = sum(present) / len(present)
        return NAN if mean == 0 else value / mean

    def row(
        self, kpi: str, entity: str, as_of: int, window: str, per_account: bool
    ) -> tuple[float, float, int, int, bool, bool]:
        """``(value, previous value, months, previous months, complete, previous complete)``;
        rule 5 for the previous year."""
        value, months = self.window_value(kpi, entity, as_of, window)
        previous, previous_months = self.window_value(kpi, entity, as_of - 12, window)
        flag = self.complete_per_account if per_account else self.complete
        complete = flag(kpi, entity, as_of, window)
        previous_complete = flag(kpi, entity, as_of - 12, window)
        if per_account:
            value = self.per_account(kpi, entity, as_of, window)
            previous = self.per_account(kpi, entity, as_of - 12, window)
        return value, previous, months, previous_months, complete, previous_complete

    def query(
        self,
        as_of: str,
        window: str,
        per_account: bool = False,
        levels: Iterable[str] | None = None,
        kpis: Iterable[str] | None = None,
    ) -> pd.DataFrame:
        """The table of docs/semantics.md, "The result table"; rows for every (entity, KPI) with a value in either window."""
        wanted = set(levels) if levels is not None else None
        kpi_ids = list(kpis) if kpis is not None else list(self.kpis)
        as_of_number = month_number(as_of)
        rows = []
        for entity, level in self.entities(views=wanted is not None):
            if wanted is not None and level not in wanted:
                continue
            if wanted is None and level in self.project.views:
                continue
            for kpi in kpi_ids:
                value, previous, months, previous_months, complete, previous_complete = self.row(
                    kpi, entity, as_of_number, window, per_account
                )
                if months == 0 and previous_months == 0:
                    continue
                change = value - previous
                change_pct = (
                    NAN if is_missing(previous) or previous == 0 else change / abs(previous)
                )
                rows.append(
                    [
                        as_of,
                        window,
                        level,
                        entity,
                        kpi,
                        value,
                        previous,
                        change,
                        change_pct,
                        months,
                        complete,
                        previous_months,
                        previous_complete,
                    ]
                )
        return pd.DataFrame(rows, columns=COLUMNS)


def assert_same_table(actual: pd.DataFrame, expected: pd.DataFrame, rtol: float = 1e-9) -> None:
    """Same rows (by entity and KPI), same text and counts, numbers equal within ``rtol``."""
    assert list(actual.columns) == COLUMNS
    key = ["entity", "kpi"]
    actual = actual.sort_values(key, kind="stable").reset_index(drop=True)
    expected = expected.sort_values(key, kind="stable").reset_index(drop=True)
    actual_keys = list(zip(actual["entity"], actual["kpi"], strict=True))
    expected_keys = list(zip(expected["entity"], expected["kpi"], strict=True))
    assert actual_keys == expected_keys, (
        f"rows differ: extra {sorted(set(actual_keys) - set(expected_keys))}, "
        f"missing {sorted(set(expected_keys) - set(actual_keys))}"
    )
    for column in [
        "as_of",
        "window",
        "level",
        "months",
        "complete",
        "previous_months",
        "previous_complete",
    ]:
        assert list(actual[column]) == list(expected[column]), column
    for column in ["value", "previous_value", "change", "change_pct"]:
        for (entity, kpi), got, want in zip(
            actual_keys, actual[column], expected[column], strict=True
        ):
            if is_missing(want):
                assert is_missing(got), f"{column} of {entity}/{kpi}: expected missing, got {got}"
            else:
                assert math.isclose(got, want, rel_tol=rtol, abs_tol=rtol), (
                    f"{column} of {entity}/{kpi}: expected {want}, got {got}"
                )
