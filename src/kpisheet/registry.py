"""The registry of KPIs: every definition from every file and plugin, checked as a whole.

Cross-KPI rules live here: ids unique across files, formulas and ``average_per`` naming known
KPIs, and no formula cycles. Declared order is kept.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from kpisheet.constants import TimeAggregation
from kpisheet.definitions import (
    KPIDefinition,
    LoadedKPI,
    Origin,
    iter_definition_files,
    load_file,
)
from kpisheet.errors import DefinitionError, Problem, Problems, did_you_mean, quoted
from kpisheet.files import display_path

__all__ = [
    "MAX_DERIVED_DEPTH",
    "Registry",
    "check_references",
    "load_registry",
]

#: Derived KPIs that may build on each other in a chain (a formula of a formula of ...).
MAX_DERIVED_DEPTH = 50


class Registry:
    """An ordered, validated collection of KPI definitions with their origins."""

    def __init__(self, loaded: Iterable[LoadedKPI]) -> None:
        self._kpis: dict[str, KPIDefinition] = {}
        self._origins: dict[str, Origin] = {}
        for item in loaded:
            self._kpis[item.definition.id] = item.definition
            self._origins[item.definition.id] = item.origin
        self.evaluation_order: tuple[str, ...] = _evaluation_order(self._kpis)

    def __iter__(self) -> Iterator[KPIDefinition]:
        return iter(self._kpis.values())

    def __len__(self) -> int:
        return len(self._kpis)

    def __contains__(self, kpi_id: object) -> bool:
        return kpi_id in self._kpis

    def __getitem__(self, kpi_id: str) -> KPIDefinition:
        return self._kpis[kpi_id]

    def __repr__(self) -> str:
        return f"<Registry of {len(self)} KPIs in {len(self.groups)} groups>"

    @property
    def ids(self) -> tuple[str, ...]:
        """KPI ids in declared order."""
        return tuple(self._kpis)

    @property
    def groups(self) -> tuple[str, ...]:
        """KPI groups in order of first appearance."""
        return tuple(dict.fromkeys(kpi.group for kpi in self))

    def get(self, kpi_id: str) -> KPIDefinition | None:
        """The KPI with this id, or ``None``."""
        return self._kpis.get(kpi_id)

    def origin(self, kpi_id: str) -> Origin:
        """Where the KPI was declared."""
        return self._origins[kpi_id]

    def in_group(self, group: str) -> tuple[KPIDefinition, ...]:
        """The KPIs of one group, in declared order."""
        return tuple(kpi for kpi in self if kpi.group == group)

    @property
    def source_kpis(self) -> tuple[KPIDefinition, ...]:
        """KPIs that come from data (not derived)."""
        return tuple(kpi for kpi in self if not kpi.is_derived)

    @property
    def derived_kpis(self) -> tuple[KPIDefinition, ...]:
        """Derived KPIs in an order where every formula's components come first."""
        return tuple(self._kpis[k] for k in self.evaluation_order if self._kpis[k].is_derived)

    def leaf_components(self, kpi_id: str) -> tuple[str, ...]:
        """The source KPIs a KPI ultimately rests on (itself, for a source KPI)."""
        formula = self._kpis[kpi_id].parsed_formula
        if formula is None:
            return (kpi_id,)
        found: dict[str, None] = {}
        for ref in formula.references:
            found.update(dict.fromkeys(self.leaf_components(ref)))
        return tuple(found)

    def is_stock(self, kpi_id: str) -> bool:
        """True when the KPI (or a component of a derived KPI) is not summed over time."""
        return any(
            self._kpis[ref].time_aggregation is not TimeAggregation.SUM
            for ref in self.leaf_components(kpi_id)
        )


def _evaluation_order(kpis: dict[str, KPIDefinition]) -> tuple[str, ...]:
    sorter = graphlib.TopologicalSorter(
        {
            kpi.id: formula.references if (formula := kpi.parsed_formula) is not None else ()
            for kpi in kpis.values()
        }
    )
    return tuple(sorter.static_order())


def check_references(loaded: Sequence[LoadedKPI]) -> list[Problem]:
    """Problems that need all KPIs at once: duplicate ids, unknown references, formula cycles.

    ``loaded`` may include KPIs that failed validation (``valid=False``): they count as declared,
    and their references are checked too, so one run reports every problem.
    """
    problems = Problems()
    first: dict[str, LoadedKPI] = {}
    for item in loaded:
        kpi_id = item.definition.id
        if kpi_id in first:
            earlier = first[kpi_id].origin
            where = f"{earlier.file}:{earlier.line_of('id')}" if earlier.line else earlier.file
            problems.add(
                f"duplicate id; already declared in {where}",
                file=item.origin.file,
                line=item.origin.line_of("id"),
                kpi=kpi_id,
                field="id",
            )
        else:
            first[kpi_id] = item

    def unknown(ref: str) -> str:
        hint = did_you_mean(ref, first) or "known KPIs: " + ", ".join(first)
        return f"unknown KPI '{ref}'; {hint}"

    for item in first.values():
        kpi = item.definition
        origin = item.origin
        if (formula := kpi.parsed_formula) is not None:
            for ref in formula.references:
                if ref not in first:
                    problems.add(
                        f"formula {quoted(kpi.formula)} references {unknown(ref)}",
                        file=origin.file,
                        line=origin.line_of("formula"),
                        kpi=kpi.id,
                        field="formula",
                    )
        if kpi.average_per is not None and kpi.average_per not in first:
            problems.add(
                f"average_per references {unknown(kpi.average_per)}",
                file=origin.file,
                line=origin.line_of("average_per"),
                kpi=kpi.id,
                field="average_per",
            )
    graph = {
        kpi_id: [r for r in formula.references if r in first]
        for kpi_id, item in first.items()
        if (formula := item.definition.parsed_formula) is not None
    }
    while True:  # one problem per cycle: report a cycle, drop its KPIs, look again
        try:
            graphlib.TopologicalSorter(graph).prepare()
        except graphlib.CycleError as exc:
            cycle = exc.args[1]
            start = cycle[-1]
            origin = first[start].origin
            problems.add(
                f"formula cycle: {' -> '.join(reversed(cycle))}",
                file=origin.file,
                line=origin.line_of("formula"),
                kpi=start,
                field="formula",
            )
            for kpi_id in cycle:
                graph.pop(kpi_id, None)
        else:
            problems.extend(_chain_problems(graph, first))
            return problems.problems


def _chain_problems(graph: dict[str, list[str]], first: dict[str, LoadedKPI]) -> list[Problem]:
    """A problem for each derived KPI whose formula rests on a chain of more than
    :data:`MAX_DERIVED_DEPTH` derived KPIs (the first KPI beyond the limit on each chain).

    ``graph`` (derived KPI -> the derived and source KPIs its formula names) has no cycles.
    """
    depth: dict[str, int] = {}
    longest: dict[str, str | None] = {}
    problems = Problems()
    for kpi_id in graphlib.TopologicalSorter(graph).static_order():
        below = [ref for ref in graph.get(kpi_id, ()) if ref in graph]
        deepest = max(below, key=depth.__getitem__, default=None)
        depth[kpi_id] = 1 + (depth[deepest] if deepest is not None else 0)
        longest[kpi_id] = deepest
        if kpi_id in graph and depth[kpi_id] == MAX_DERIVED_DEPTH + 1:
            chain = [kpi_id]
            while (step := longest[chain[-1]]) is not None and len(chain) < 4:
                chain.append(step)
            origin = first[kpi_id].origin
            problems.add(
                f"formula rests on a chain of more than {MAX_DERIVED_DEPTH} derived KPIs "
                f"({' -> '.join(chain)} -> ...); at most {MAX_DERIVED_DEPTH} may build on "
                "each other",
                file=origin.file,
                line=origin.line_of("formula"),
                kpi=kpi_id,
                field="formula",
            )
    return problems.problems


def load_registry(sources: Iterable[tuple[Path | str, str]]) -> Registry:
    """Load KPIs from ``(path, plugin name)`` pairs into a registry, or raise every problem at once.

    :raises DefinitionError: listing every problem of every file.
    """
    loaded: list[LoadedKPI] = []
    problems = Problems()
    seen_files: set[Path] = set()
    file_order: dict[str | None, int] = {}  # problems are reported in the order files were read
    searched: list[str] = []
    for path, plugin in sources:
        searched.append(str(path))
        if not Path(path).exists():
            file_order.setdefault(str(path), len(file_order))
            problems.add(
                f"no such file or directory (from {plugin or 'arguments'})", file=str(path)
            )
            continue
        for file in iter_definition_files([path]):
            if file.resolve() in seen_files:
                continue
            seen_files.add(file.resolve())
            file_order.setdefault(display_path(file), len(file_order))
            items, file_problems = load_file(file, plugin, keep_invalid=True)
            loaded += items
            problems.extend(file_problems)
    problems.extend(check_references(loaded))
    problems.problems.sort(key=lambda p: (file_order.get(p.file, len(file_order)), p.line or 0))
    problems.raise_if_any(DefinitionError)
    if not loaded:
        where = f" in {', '.join(searched)}" if searched else " (no files or directories given)"
        raise DefinitionError([Problem(f"no KPI definitions found{where}")])
    return Registry(item for item in loaded if item.valid)
