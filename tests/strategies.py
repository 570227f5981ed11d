"""Hypothesis strategies shared by the tests: formulas and KPI definition sets, valid or broken.

A :class:`DefinitionSet` is plain data (file name -> KPI mappings) that knows what a correct
loader must make of it (declared order, formula references, leaf components), so tests compare
the registry against this obviously-right reference instead of against kpisheet's own code.
The mutations each break a valid set in exactly one way and say which problem must be reported.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from hypothesis import strategies as st

from kpisheet.constants import EntityAggregation, TimeAggregation, Unit
from kpisheet.definitions import FIELDS

# --- formulas --------------------------------------------------------------------------------

#: Precedence of generated expressions: sums, products, atoms (numbers, ids, parentheses, -x).
_SUM, _PRODUCT, _ATOM = 1, 2, 3


@dataclass(frozen=True)
class Expression:
    """A generated formula: its text, the ids it references and a reference evaluator."""

    text: str
    references: tuple[str, ...]
    evaluate: Callable[[Mapping[str, float]], float] = field(compare=False, repr=False)
    precedence: int = _ATOM

    def as_operand(self, minimum: int) -> str:
        """The text, in parentheses when its precedence is too low to stand where it goes."""
        return self.text if self.precedence >= minimum else f"({self.text})"


def _divide(left: float, right: float) -> float:
    return left / right if right != 0 else math.nan


_ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _divide,
}

_space = st.sampled_from(["", " ", "  "])


def _number() -> st.SearchStrategy[Expression]:
    texts = st.one_of(
        st.integers(0, 1000).map(str),
        st.integers(0, 10_000).map(lambda n: f"{n // 100}.{n % 100:02d}"),
        st.integers(1, 99).map(lambda n: f".{n}"),
    )
    return texts.map(lambda text: Expression(text, (), lambda _values, v=float(text): v))


def _reference(ids: list[str]) -> st.SearchStrategy[Expression]:
    return st.sampled_from(ids).map(
        lambda kpi: Expression(kpi, (kpi,), lambda values, k=kpi: values[k])
    )


@st.composite
def _binary(draw: st.DrawFn, operands: st.SearchStrategy[Expression]) -> Expression:
    op = draw(st.sampled_from(sorted(_ARITHMETIC)))
    left, right = draw(operands), draw(operands)
    precedence = _SUM if op in "+-" else _PRODUCT
    # Left-associative: the left operand may share the precedence, the right one may not.
    text = f"{left.as_operand(precedence)}{draw(_space)}{op}{draw(_space)}{right.as_operand(precedence + 1)}"
    apply = _ARITHMETIC[op]
    return Expression(
        text,
        left.references + right.references,
        lambda values: apply(left.evaluate(values), right.evaluate(values)),
        precedence,
    )


def _negated(operand: Expression) -> Expression:
    return Expression(
        f"-{operand.as_operand(_ATOM)}",
        operand.references,
        lambda values: -operand.evaluate(values),
    )


def _parenthesised(inner: Expression) -> Expression:
    return Expression(f"({inner.text})", inner.references, inner.evaluate)


@st.composite
def expressions(draw: st.DrawFn, ids: list[str], depth: int = 4) -> Expression:
    """Formulas over ``ids`` and numbers, written with the fewest parentheses precedence needs."""
    leaves = st.one_of(_reference(ids), _number()) if ids else _number()
    # Binary operations weigh most: they are what precedence and associativity are about.
    # (Shrinks towards a leaf.)
    choice = draw(st.integers(0, 9)) if depth > 0 else 0
    if choice <= 1:
        return draw(leaves)
    inner = expressions(ids, depth - 1)
    if choice <= 7:
        return draw(_binary(inner))
    return _negated(draw(inner)) if choice == 8 else _parenthesised(draw(inner))


def formulas(ids: list[str], depth: int = 4) -> st.SearchStrategy[Expression]:
    """Formulas over ``ids`` that reference at least one of them."""
    return expressions(ids, depth).filter(lambda expression: bool(expression.references))


# --- definition sets -------------------------------------------------------------------------

kpi_ids = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
_text = st.text(
    alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzABCXYZäöüÄÖÜß0123456789 -/()&%.,'\":#"),
    min_size=1,
    max_size=30,
)
labels = _text.filter(lambda text: text.strip() != "")
groups = st.one_of(st.sampled_from(["Umsatz", "Anzahl Trx", "Konten", "NCA"]), labels)
sources = st.one_of(
    st.builds(lambda name: {"kpi_name": name}, labels),
    st.builds(lambda kpi_id: {"kpi_id": kpi_id}, st.integers(1, 99_999)),
    st.builds(
        lambda kpi_id, period: {"kpi_id": kpi_id, "period_id": period},
        st.integers(1, 99_999),
        st.integers(1, 12),
    ),
)


#: Bookkeeping key (never written to YAML): the references a generated formula was built from.
REFERENCES_KEY = "_references"


@dataclass
class DefinitionSet:
    """KPI definition files as data: ``files`` maps a file name to its KPI mappings, in order.

    Files named in ``single`` hold one KPI written as a mapping rather than a list; ``texts``
    replaces a file's generated YAML with other text (used to break its syntax).
    """

    files: dict[str, list[dict[str, Any]]]
    single: set[str] = field(default_factory=set)
    texts: dict[str, str] = field(default_factory=dict)

    @property
    def kpis(self) -> list[dict[str, Any]]:
        """Every KPI mapping in declared order (files in name order, then order in the file)."""
        return [kpi for name in sorted(self.files) for kpi in self.files[name]]

    @property
    def ids(self) -> list[str]:
        """KPI ids in declared order."""
        return [kpi["id"] for kpi in self.kpis]

    def kpi(self, kpi_id: str) -> dict[str, Any]:
        """The (first) mapping declaring ``kpi_id``."""
        return next(kpi for kpi in self.kpis if kpi["id"] == kpi_id)

    def file_of(self, kpi_id: str) -> str:
        """Name of the (first) file declaring ``kpi_id``."""
        return next(name for name in sorted(self.files) if kpi_id in _ids(self.files[name]))

    def references(self, kpi_id: str) -> tuple[str, ...]:
        """Formula references of a KPI, as recorded when the formula was generated."""
        return tuple(self.kpi(kpi_id).get(REFERENCES_KEY, ()))

    def leaf_components(self, kpi_id: str) -> set[str]:
        """Source KPIs a KPI rests on, by brute-force expansion of the formulas."""
        refs = self.references(kpi_id)
        if not refs:
            return {kpi_id}
        return set().union(*(self.leaf_components(ref) for ref in refs))

    def depends_on(self, kpi_id: str) -> set[str]:
        """Every KPI the formula of ``kpi_id`` uses, directly or through other formulas."""
        found: set[str] = set()
        for ref in self.references(kpi_id):
            found |= {ref} | self.depends_on(ref)
        return found

    def text(self, name: str) -> str:
        """The YAML text of one file."""
        if name in self.texts:
            return self.texts[name]
        kpis = [{k: v for k, v in kpi.items() if k != REFERENCES_KEY} for kpi in self.files[name]]
        data: Any = kpis[0] if name in self.single and len(kpis) == 1 else kpis
        header = f"# KPI definitions generated for a test: {name}\n"
        return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10**6)

    def write(self, directory: Path) -> Path:
        """Write every file into ``directory`` and return it."""
        for name in self.files:
            (directory / name).write_text(self.text(name), encoding="utf-8")
        return directory

    def copy(self) -> DefinitionSet:
        """A deep copy to mutate."""
        return copy.deepcopy(self)


def _ids(kpis: list[dict[str, Any]]) -> list[str]:
    return [kpi["id"] for kpi in kpis]


@st.composite
def _source_kpi(draw: st.DrawFn, kpi_id: str) -> dict[str, Any]:
    kpi: dict[str, Any] = {"id": kpi_id, "label": draw(labels), "group": draw(groups)}
    kpi["unit"] = draw(st.sampled_from(Unit)).value
    kpi["time_aggregation"] = draw(st.sampled_from(TimeAggregation)).value
    if draw(st.booleans()):
        kpi["entity_aggregation"] = draw(st.sampled_from(EntityAggregation)).value
    if draw(st.booleans()):
        kpi["description"] = draw(labels)
    if draw(st.booleans()):
        kpi["source"] = draw(sources)
    return kpi


@st.composite
def _derived_kpi(draw: st.DrawFn, kpi_id: str, earlier: list[str]) -> dict[str, Any]:
    formula = draw(formulas(earlier, depth=2))
    kpi: dict[str, Any] = {"id": kpi_id, "label": draw(labels), "group": draw(groups)}
    kpi["unit"] = draw(st.sampled_from(Unit)).value
    kpi["formula"] = formula.text
    if draw(st.booleans()):
        kpi["description"] = draw(labels)
    kpi[REFERENCES_KEY] = list(dict.fromkeys(formula.references))
    return kpi


@st.composite
def definition_sets(
    draw: st.DrawFn, min_files: int = 1, min_derived: int = 0, max_kpis: int = 10
) -> DefinitionSet:
    """Valid definition sets: source KPIs of every aggregation, derived KPIs over earlier KPIs,
    ``average_per`` naming any KPI of the set, spread over several files."""
    count = draw(st.integers(max(min_files, min_derived + 1), max_kpis))
    ids = draw(st.lists(kpi_ids, min_size=count, max_size=count, unique=True))
    derived_positions = draw(
        st.sets(st.integers(1, count - 1), min_size=min_derived, max_size=count - 1)
        if count > 1
        else st.just(set())
    )
    kpis = [
        draw(_derived_kpi(kpi_id, ids[:i]) if i in derived_positions else _source_kpi(kpi_id))
        for i, kpi_id in enumerate(ids)
    ]
    for kpi in kpis:
        if draw(st.integers(0, 3)) == 0:
            kpi["average_per"] = draw(st.sampled_from(ids))
    file_count = draw(st.integers(min_files, min(4, count)))
    cuts = (
        sorted(
            draw(
                st.sets(st.integers(1, count - 1), min_size=file_count - 1, max_size=file_count - 1)
            )
        )
        if file_count > 1
        else []
    )
    bounds = [0, *cuts, count]
    files: dict[str, list[dict[str, Any]]] = {}
    single: set[str] = set()
    for index, (start, stop) in enumerate(itertools.pairwise(bounds)):
        suffix = draw(st.sampled_from([".yaml", ".yml"]))
        name = f"{index:02d}_{draw(st.sampled_from(['umsatz', 'konten', 'nca', 'misc']))}{suffix}"
        files[name] = kpis[start:stop]
        if stop - start == 1 and draw(st.booleans()):
            single.add(name)
    return DefinitionSet(files, single)


# --- mutations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """The problem a mutation must cause.

    ``file`` and ``kpi`` are where it must be reported and ``field`` the field it must name;
    the reported line of the file must contain ``line_text`` (or be exactly ``line``).
    ``words`` must appear in the message. For a formula cycle, ``cycle`` holds ids the cycle
    must pass through; the problem may then be reported at any KPI of the cycle.
    """

    file: str
    kpi: str | None
    field: str | None
    line_text: str | None = None
    line: int | None = None
    words: tuple[str, ...] = ()
    cycle: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mutation:
    """A definition set broken in one way, and the problem that must be reported."""

    kind: str
    definitions: DefinitionSet
    expected: Expected


def _fresh_id(draw: st.DrawFn, taken: list[str]) -> str:
    return draw(kpi_ids.filter(lambda kpi_id: kpi_id not in taken))


def _typo(draw: st.DrawFn, word: str) -> str:
    """A misspelling of ``word``: one character dropped, doubled, swapped or replaced."""
    i = draw(st.integers(0, len(word) - 1))
    kind = draw(st.sampled_from(["drop", "double", "swap", "replace"]))
    if kind == "drop" and len(word) > 1:
        return word[:i] + word[i + 1 :]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    if kind == "swap" and i < len(word) - 1 and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    letter = draw(st.sampled_from("abcdefghijklmnopqrstuvwxyz").filter(lambda c: c != word[i]))
    return word[:i] + letter + word[i + 1 :]


def _renamed(kpi: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """``kpi`` with key ``old`` renamed to ``new``, keeping the key order."""
    return {(new if key == old else key): value for key, value in kpi.items()}


def _replace_kpi(definitions: DefinitionSet, kpi_id: str, new: dict[str, Any]) -> None:
    kpis = definitions.files[definitions.file_of(kpi_id)]
    kpis[_ids(kpis).index(kpi_id)] = new


@st.composite
def yaml_syntax_errors(draw: st.DrawFn) -> Mutation:
    """A line that YAML cannot scan, inserted anywhere into one file."""
    definitions = draw(definition_sets()).copy()
    name = draw(st.sampled_from(sorted(definitions.files)))
    lines = definitions.text(name).splitlines()
    position = draw(st.integers(0, len(lines)))
    broken = draw(st.sampled_from(["@oops", "`backtick: 1", "\tlabel: tab", ": no key"]))
    definitions.texts[name] = "\n".join([*lines[:position], broken, *lines[position:]]) + "\n"
    expected = Expected(name, None, None, line=position + 1, words=("YAML syntax error",))
    return Mutation("yaml syntax error", definitions, expected)


@st.composite
def unknown_keys(draw: st.DrawFn) -> Mutation:
    """A field name of one KPI misspelt."""
    definitions = draw(definition_sets()).copy()
    kpi = draw(st.sampled_from(definitions.kpis))
    present = [key for key in kpi if key in FIELDS and key != "id"]
    old = draw(st.sampled_from(present))
    new = _typo(draw, old)
    if new in FIELDS or new in kpi:
        new = old + "_x"
    _replace_kpi(definitions, kpi["id"], _renamed(kpi, old, new))
    expected = Expected(
        definitions.file_of(kpi["id"]), kpi["id"], new, line_text=f"{new}:", words=("unknown key",)
    )
    return Mutation("unknown key", definitions, expected)


@st.composite
def missing_fields(draw: st.DrawFn) -> Mutation:
    """A required field removed from one KPI."""
    definitions = draw(definition_sets()).copy()
    kpi = draw(st.sampled_from(definitions.kpis))
    required = ["label", "group", "unit"] + ([] if "formula" in kpi else ["time_aggregation"])
    removed = draw(st.sampled_from(required))
    del kpi[removed]
    expected = Expected(
        definitions.file_of(kpi["id"]),
        kpi["id"],
        removed,
        line_text="id:",
        words=(f"missing required field '{removed}'",),
    )
    return Mutation("missing field", definitions, expected)


@st.composite
def wrong_words(draw: st.DrawFn) -> Mutation:
    """A unit or aggregation word that is not one of the allowed ones."""
    definitions = draw(definition_sets()).copy()
    kpi = draw(st.sampled_from(definitions.kpis))
    choices: dict[str, type[Unit | TimeAggregation | EntityAggregation]] = {
        "unit": Unit,
        "entity_aggregation": EntityAggregation,
    }
    if "formula" not in kpi:
        choices["time_aggregation"] = TimeAggregation
    name = draw(st.sampled_from(sorted(choices)))
    allowed = {member.value for member in choices[name]}
    word = draw(
        st.one_of(
            st.sampled_from(["summe", "Sum", "SUM", "avg", "average", "total", "CHF", "pct"]),
            st.from_regex(r"[A-Za-z][A-Za-z_]{0,11}", fullmatch=True),
        ).filter(lambda w: w not in allowed)
    )
    kpi[name] = word
    expected = Expected(
        definitions.file_of(kpi["id"]),
        kpi["id"],
        name,
        line_text=f"{name}:",
        words=(f"is not one of: {', '.join(member.value for member in choices[name])}",),
    )
    return Mutation("wrong word", definitions, expected)


@st.composite
def duplicate_ids(draw: st.DrawFn) -> Mutation:
    """A KPI of one file declared again in another file."""
    definitions = draw(definition_sets(min_files=2)).copy()
    kpi = draw(st.sampled_from(definitions.kpis))
    home = definitions.file_of(kpi["id"])
    other = draw(st.sampled_from(sorted(set(definitions.files) - {home})))
    definitions.files[other].append(copy.deepcopy(kpi))
    definitions.single.discard(other)
    first, second = sorted([home, other])
    expected = Expected(
        second,
        kpi["id"],
        "id",
        line_text="id:",
        words=("duplicate id; already declared in ", f"{first}:"),
    )
    return Mutation("duplicate id", definitions, expected)


@st.composite
def unknown_formula_references(draw: st.DrawFn) -> Mutation:
    """A derived KPI's formula extended by a KPI id that nobody declares."""
    definitions = draw(definition_sets(min_derived=1)).copy()
    kpi = draw(st.sampled_from([kpi for kpi in definitions.kpis if "formula" in kpi]))
    unknown = _fresh_id(draw, definitions.ids)
    kpi["formula"] = f"{kpi['formula']} + {unknown}"
    expected = Expected(
        definitions.file_of(kpi["id"]),
        kpi["id"],
        "formula",
        line_text="formula:",
        words=(f"unknown KPI '{unknown}'",),
    )
    return Mutation("formula references unknown KPI", definitions, expected)


@st.composite
def unknown_average_per(draw: st.DrawFn) -> Mutation:
    """``average_per`` naming a KPI that nobody declares."""
    definitions = draw(definition_sets()).copy()
    kpi = draw(st.sampled_from(definitions.kpis))
    unknown = _fresh_id(draw, definitions.ids)
    kpi["average_per"] = unknown
    expected = Expected(
        definitions.file_of(kpi["id"]),
        kpi["id"],
        "average_per",
        line_text="average_per:",
        words=(f"unknown KPI '{unknown}'",),
    )
    return Mutation("average_per unknown KPI", definitions, expected)


@st.composite
def formula_cycles(draw: st.DrawFn) -> Mutation:
    """A derived KPI made to reference a KPI whose formula already depends on it (or itself)."""
    definitions = draw(definition_sets(min_derived=1)).copy()
    target = draw(st.sampled_from([kpi["id"] for kpi in definitions.kpis if "formula" in kpi]))
    candidates = [
        target,
        *sorted(
            kpi_id
            for kpi_id in definitions.depends_on(target)
            if "formula" in definitions.kpi(kpi_id)
        ),
    ]
    closing = definitions.kpi(draw(st.sampled_from(candidates)))
    closing["formula"] = f"{closing['formula']} + {target}"
    # The file of the reported KPI is checked by the test; any KPI of the cycle may be named.
    expected = Expected(
        "",
        None,
        "formula",
        line_text="formula:",
        words=("formula cycle",),
        cycle=(target, closing["id"]),
    )
    return Mutation("formula cycle", definitions, expected)


@st.composite
def formula_and_source(draw: st.DrawFn) -> Mutation:
    """A derived KPI that also declares an upstream source."""
    definitions = draw(definition_sets(min_derived=1)).copy()
    kpi = draw(st.sampled_from([kpi for kpi in definitions.kpis if "formula" in kpi]))
    kpi["source"] = draw(sources)
    expected = Expected(
        definitions.file_of(kpi["id"]),
        kpi["id"],
        "source",
        line_text="source:",
        words=("a KPI with a formula is derived and takes no source",),
    )
    return Mutation("formula and source", definitions, expected)


#: Every kind of mutation, by name.
MUTATIONS: dict[str, st.SearchStrategy[Mutation]] = {
    "yaml syntax error": yaml_syntax_errors(),
    "unknown key": unknown_keys(),
    "missing field": missing_fields(),
    "wrong word": wrong_words(),
    "duplicate id": duplicate_ids(),
    "formula references unknown KPI": unknown_formula_references(),
    "average_per unknown KPI": unknown_average_per(),
    "formula cycle": formula_cycles(),
    "formula and source": formula_and_source(),
}


# --- sheets: hierarchy, KPIs and observations --------------------------------------------------


@dataclass
class Project:
    """A small KPI sheet as plain data, written out as YAML and observations for kpisheet.

    ``entities`` maps each leaf to its attributes (levels and views); ``kpis`` are KPI mappings
    as in YAML; ``observations`` are ``(month "YYYY-MM", kpi, entity, value)`` tuples, where a
    NaN value is a row whose value is missing.
    """

    total: str
    levels: list[str]
    entities: dict[str, dict[str, str]]
    kpis: list[dict[str, Any]]
    observations: list[tuple[str, str, str, float]]

    @property
    def views(self) -> list[str]:
        """Attributes that are not levels (e.g. ``cardprofile``)."""
        names = {key for attributes in self.entities.values() for key in attributes}
        return sorted(names - set(self.levels))

    @property
    def source_ids(self) -> list[str]:
        return [kpi["id"] for kpi in self.kpis if "formula" not in kpi]

    @property
    def months(self) -> list[str]:
        """Every month from the oldest to the newest observation, as ``YYYY-MM``."""
        numbers = [int(m[:4]) * 12 + int(m[5:]) - 1 for m, *_ in self.observations]
        return [f"{n // 12:04d}-{n % 12 + 1:02d}" for n in range(min(numbers), max(numbers) + 1)]

    def frame(self) -> pd.DataFrame:
        """The observations as a DataFrame with columns month, kpi, entity, value."""
        return pd.DataFrame(self.observations, columns=["month", "kpi", "entity", "value"])

    def definitions_yaml(self) -> str:
        """The KPI definitions as one YAML file."""
        return yaml.safe_dump(self.kpis, sort_keys=False, allow_unicode=True)

    def hierarchy_yaml(self) -> str:
        """The entity hierarchy as YAML (docs/semantics.md)."""
        data = {"total": self.total, "levels": self.levels, "entities": self.entities}
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    def write(self, directory: Path) -> tuple[Path, Path]:
        """Write ``kpis.yaml`` and ``entities.yaml`` into ``directory``; return their paths."""
        definitions = directory / "kpis.yaml"
        entities = directory / "entities.yaml"
        definitions.write_text(self.definitions_yaml(), encoding="utf-8")
        entities.write_text(self.hierarchy_yaml(), encoding="utf-8")
        return definitions, entities

    def with_observations(self, observations: list[tuple[str, str, str, float]]) -> Project:
        """The same sheet with other observations."""
        return Project(self.total, self.levels, self.entities, self.kpis, observations)


#: Values a generated observation takes: zeros, negatives, integers and exact binary fractions
#: (so sums do not depend on the order of addition).
_VALUE_POOL = np.array([0.0, 0.0, -2.0, -0.5, 0.25, 1.0, 2.0, 3.0, 5.5, 7.0, 12.0, 40.0, 100.0])


@st.composite
def hierarchies(draw: st.DrawFn) -> tuple[str, list[str], dict[str, dict[str, str]]]:
    """Two group levels (sector over mandant), 2–5 products, a ``cardprofile`` view that a
    product may lack."""
    mandant_count = draw(st.integers(1, 3))
    sector_of = {f"M{i}": f"S{draw(st.integers(0, min(i, 1)))}" for i in range(mandant_count)}
    product_count = draw(st.integers(2, 5))
    entities: dict[str, dict[str, str]] = {}
    for i in range(product_count):
        mandant = draw(st.sampled_from(sorted(sector_of)))
        attributes = {"sector": sector_of[mandant], "mandant": mandant}
        profile = draw(st.sampled_from(["CC", "PP", "CH", None]))
        if profile is not None:
            attributes["cardprofile"] = profile
        entities[f"P{i}"] = attributes
    return "T", ["sector", "mandant"], entities


_FORMULAS = ["{a} / {b}", "{a} - {b}", "({a} + {b}) / {c}", "{a} * 2"]


@st.composite
def sheet_kpis(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A source KPI of every time aggregation (plus up to two more), mostly rolled up over
    entities, some with ``average_per``; then one or two derived KPIs over earlier KPIs."""
    rules = [rule.value for rule in TimeAggregation]
    rules += draw(st.lists(st.sampled_from(rules), max_size=2))
    kpis: list[dict[str, Any]] = []
    for i, rule in enumerate(rules):
        kpi = {"id": f"k{i}_{rule}", "label": f"K{i}", "group": "G", "unit": "count"}
        kpi["time_aggregation"] = rule
        if draw(st.integers(0, 4)) == 0:
            kpi["entity_aggregation"] = EntityAggregation.NONE.value
        kpis.append(kpi)
    source_ids = [kpi["id"] for kpi in kpis]
    for i in range(draw(st.integers(1, 2))):
        earlier = [kpi["id"] for kpi in kpis]
        template = draw(st.sampled_from(_FORMULAS))
        names = {name: draw(st.sampled_from(earlier)) for name in "abc"}
        kpi = {"id": f"d{i}", "label": f"D{i}", "group": "G", "unit": "ratio"}
        kpi["formula"] = template.format(**names)
        if draw(st.integers(0, 5)) == 0:
            kpi["entity_aggregation"] = EntityAggregation.NONE.value
        kpis.append(kpi)
    ids = [kpi["id"] for kpi in kpis]
    for kpi in kpis:
        if draw(st.integers(0, 2)) == 0:
            kpi["average_per"] = draw(st.sampled_from(ids if draw(st.booleans()) else source_ids))
    return kpis


def _month(number: int) -> str:
    return f"{number // 12:04d}-{number % 12 + 1:02d}"


@st.composite
def projects(draw: st.DrawFn, min_months: int = 13, max_months: int = 27) -> Project:
    """Small random sheets: series with gaps, late starts and early ends, months missing for
    every series (also the newest: rows with missing values), values including zeros."""
    total, levels, entities = draw(hierarchies())
    kpis = draw(sheet_kpis())
    source_ids = [kpi["id"] for kpi in kpis if "formula" not in kpi]
    start = 2020 * 12 + draw(st.integers(0, 11))
    count = draw(st.integers(min_months, max_months))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    gap_rate = draw(st.sampled_from([0.0, 0.15, 0.4]))
    blank_months = set(draw(st.lists(st.integers(0, count - 1), max_size=2)))
    newest_blank = draw(st.booleans())
    if newest_blank:
        blank_months.add(count - 1)
    observations: list[tuple[str, str, str, float]] = []
    for kpi in source_ids:
        for entity in entities:
            if rng.random() < 0.1:
                continue  # a series without any data
            first = int(rng.integers(0, count // 2)) if rng.random() < 0.3 else 0
            last = int(rng.integers(count // 2, count)) if rng.random() < 0.15 else count - 1
            for offset in range(first, last + 1):
                if offset in blank_months or rng.random() < gap_rate:
                    continue
                observations.append(
                    (_month(start + offset), kpi, entity, float(rng.choice(_VALUE_POOL)))
                )
    # The data always spans the whole range; a blank newest month is carried by rows whose
    # value is missing, so that month is in the sheet but has no value anywhere.
    observations.append((_month(start), source_ids[0], next(iter(entities)), 1.0))
    if newest_blank:
        observations.append(
            (_month(start + count - 1), source_ids[0], next(iter(entities)), math.nan)
        )
    else:
        observations.append((_month(start + count - 1), source_ids[-1], list(entities)[-1], 2.0))
    unique = {row[:3]: row for row in observations}  # the two anchors may repeat a drawn row
    rows = list(unique.values())
    order = rng.permutation(len(rows))
    return Project(total, levels, entities, kpis, [rows[i] for i in order])
