"""Every word kpisheet shows to people, in German: months, column headers, level, unit and window
labels, and the notes of the app, the XLSX exports and the charts.

Words are looked up when a text is built (module-level mappings and functions), so changing an
entry here changes the app, the workbooks and the charts alike. Level labels come from the
hierarchy (its ``labels``), KPI labels and units from the registry; nothing here names the
levels of a particular sheet.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kpisheet.constants import (
    AS_OF,
    CHANGE,
    CHANGE_PCT,
    COMPLETE,
    ENTITY,
    KPI,
    LEVEL,
    MONTH,
    MONTHS,
    PREVIOUS_COMPLETE,
    PREVIOUS_MONTHS,
    PREVIOUS_VALUE,
    PRODUCT_LEVEL,
    TOTAL_LEVEL,
    VALUE,
    WINDOW,
    TimeAggregation,
    Unit,
    Window,
)
from kpisheet.explain import CONTRIBUTION, MEMBER, MIX_EFFECT, RATE_EFFECT, Explanation
from kpisheet.presentation import formats
from kpisheet.registry import Registry

if TYPE_CHECKING:
    from kpisheet.hierarchy import Hierarchy
    from kpisheet.store import ReleaseInfo

__all__ = [
    "ALL_ENTITIES",
    "ALL_KPI_GROUPS",
    "ALL_WORD",
    "AXIS_UNIT_WORDS",
    "CHOICE_WORDS",
    "COLUMN_WORDS",
    "COVERAGE_WORD",
    "CURRENT_BAR",
    "CURRENT_WINDOW_WORD",
    "DISPLAY_RECORD",
    "DISPLAY_WORDS",
    "EXPLAIN_PER_ACCOUNT_NOTE",
    "EXPLAIN_SELECTION_WORDS",
    "EXPLAIN_SHEET",
    "EXPLAIN_VIEW_WORDS",
    "EXPLAIN_WORDS",
    "EXPORTED_WORD",
    "FILE_WORDS",
    "FLAGS_NOTE",
    "FORMULA_WORD",
    "GROUPING_RECORD",
    "GROUP_WORD",
    "INCOMPLETE_MARK",
    "INCOMPLETE_NOTE",
    "KPIS_TITLE",
    "KPI_GROUP_RECORD",
    "KPI_TABLE_WORDS",
    "LABEL",
    "LEVEL_WORDS",
    "MARK_NOTE",
    "MONTHS_SPAN",
    "MONTH_ABBREVIATIONS",
    "MONTH_NAMES",
    "NAMED_MEMBERS",
    "NO",
    "NOTE",
    "NOTES_TITLE",
    "NOTE_PREFIX",
    "NOT_COMPARABLE",
    "NO_CHART_TEXTS",
    "NO_RELEASE_WORDS",
    "OTHERS_BAR",
    "PER_ACCOUNT_NOTE",
    "PER_ACCOUNT_WORD",
    "PREVIOUS_BAR",
    "PREVIOUS_WINDOW_WORD",
    "PREVIOUS_YEAR_NOTE",
    "RELEASE_WORDS",
    "RESULT_SHEET",
    "ROWS_WORD",
    "SELECTION_SHEET",
    "SELECTION_TITLE",
    "SELECTION_WORDS",
    "SERIES_CHANGE_NOTE",
    "SERIES_GROUPS_NOTE",
    "SERIES_PER_ACCOUNT_NOTE",
    "SERIES_SHEET",
    "SERIES_WORDS",
    "SHARE",
    "STOCK_COMPLETE_NOTE",
    "TIME_AGGREGATION_WORDS",
    "UNCOVERED_TEXT",
    "UNIT_WORDS",
    "VIEW_WORD",
    "X_WORD",
    "YES",
    "axis_label",
    "chart_title",
    "chart_tooltips",
    "column_word",
    "comparison_note",
    "data_version_text",
    "explain_headers",
    "explain_product_text",
    "explain_unsplittable_text",
    "explanation_notes",
    "explanation_status",
    "formula_text",
    "kpi_label",
    "level_label",
    "level_labels",
    "listing",
    "members_text",
    "month_long",
    "month_short",
    "new_data_text",
    "no_chart_text",
    "page_text",
    "result_headers",
    "result_notes",
    "series_headers",
    "series_notes",
    "stock_note",
    "table_legend",
    "time_aggregation_word",
    "unit_word",
    "waterfall_title",
    "window_label",
    "window_labels",
    "without_reference_note",
    "yes_no",
]

MONTH_NAMES: tuple[str, ...] = (
    "Januar",
    "Februar",
    "März",
    "April",
    "Mai",
    "Juni",
    "Juli",
    "August",
    "September",
    "Oktober",
    "November",
    "Dezember",
)
MONTH_ABBREVIATIONS: tuple[str, ...] = (
    "Jan",
    "Feb",
    "Mär",
    "Apr",
    "Mai",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Okt",
    "Nov",
    "Dez",
)


def month_long(month: str | pd.Period) -> str:
    """``2019-05`` as ``Mai 2019``; ``2026-10`` as ``Oktober 2026``."""
    period = pd.Period(month, freq="M")
    return f"{MONTH_NAMES[period.month - 1]} {period.year}"


def month_short(month: str | pd.Period) -> str:
    """``2021-03`` as ``Mär 2021`` (charts, where thirteen months stand side by side)."""
    period = pd.Period(month, freq="M")
    return f"{MONTH_ABBREVIATIONS[period.month - 1]} {period.year}"


#: Most members a text names; more are counted ("und 3 weitere").
NAMED_MEMBERS = 3


def listing(items: Sequence[str]) -> str:
    """``a``, ``a und b``, ``a, b und c``."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} und {items[-1]}"


def members_text(names: Sequence[str]) -> str:
    """At most :data:`NAMED_MEMBERS` names, the rest counted: ``A, B, C und 2 weitere``."""
    names = list(names)
    if len(names) <= NAMED_MEMBERS:
        return listing(names)
    return f"{', '.join(names[:NAMED_MEMBERS])} und {len(names) - NAMED_MEMBERS} weitere"


# -- small words --------------------------------------------------------------------------------

YES, NO = "ja", "nein"
#: Shown for "everything" in a selection (no KPI or entity chosen).
ALL_WORD = "alle"
#: Shown in place of a change whose windows are not both complete.
NOT_COMPARABLE = "–"
#: The per-account option, as the app, the exports and the charts name it.
PER_ACCOUNT_WORD = "Ø pro aktives Konto"
#: How the two windows of a row are named in a reason.
CURRENT_WINDOW_WORD = "Fenster"
PREVIOUS_WINDOW_WORD = "Vorjahr"

# -- columns ------------------------------------------------------------------------------------

#: Columns that only presentations have: the KPI's label, the reason a change is not shown, and a
#: member's share of its group's change.
LABEL = "label"
NOTE = "note"
SHARE = "share"
#: The word of each column, wherever a table shows it (app, XLSX, chart tooltips).
COLUMN_WORDS: dict[str, str] = {
    AS_OF: "Stichtag",
    WINDOW: "Fenster",
    LEVEL: "Ebene",
    ENTITY: "Entität",
    KPI: "KPI",
    LABEL: "KPI-Bezeichnung",
    VALUE: "Wert",
    PREVIOUS_VALUE: "Vorjahr",
    CHANGE: "Abw. VJ",
    CHANGE_PCT: "Abw. VJ %",
    MONTHS: "Monate",
    COMPLETE: "Vollständig",
    PREVIOUS_MONTHS: "Monate VJ",
    PREVIOUS_COMPLETE: "Vollständig VJ",
    NOTE: "Hinweis",
    MONTH: "Monat",
    MEMBER: "Mitglied",
    CONTRIBUTION: "Beitrag zur Abw.",
    SHARE: "Anteil an der Abw.",
    RATE_EFFECT: "Rateneffekt",
    MIX_EFFECT: "Mixeffekt",
}
#: Column words of a monthly series, where a change is against the month before.
SERIES_WORDS: dict[str, str] = {CHANGE: "Abw. Vormonat", CHANGE_PCT: "Abw. Vormonat %"}
#: Column words of an explanation, where the entity is the explained group.
EXPLAIN_WORDS: dict[str, str] = {ENTITY: "Gruppe"}
#: The group column of the app's table (an entity with its level, or a KPI).
GROUP_WORD = "Gruppe"

_RESULT_ORDER = (
    AS_OF, WINDOW, LEVEL, ENTITY, KPI, LABEL, VALUE, PREVIOUS_VALUE, CHANGE, CHANGE_PCT, MONTHS,
    COMPLETE, PREVIOUS_MONTHS, PREVIOUS_COMPLETE, NOTE,
)  # fmt: skip
_SERIES_ORDER = (MONTH, ENTITY, KPI, LABEL, VALUE, CHANGE, CHANGE_PCT)
_EXPLAIN_ORDER = (
    AS_OF, WINDOW, KPI, LABEL, ENTITY, MEMBER, LEVEL, VALUE, PREVIOUS_VALUE, CHANGE, CONTRIBUTION,
    SHARE, RATE_EFFECT, MIX_EFFECT, COMPLETE, PREVIOUS_COMPLETE,
)  # fmt: skip


def column_word(column: str) -> str:
    """The header of a column of a query result or explanation, e.g. ``Wert`` for ``value``."""
    return COLUMN_WORDS[column]


def result_headers() -> dict[str, str]:
    """Headers of a query result's table (XLSX sheet "KPIs"), in column order."""
    return {column: COLUMN_WORDS[column] for column in _RESULT_ORDER}


def series_headers() -> dict[str, str]:
    """Headers of a monthly series with month-on-month change (sheet "Verlauf"), in order."""
    return {column: SERIES_WORDS.get(column, COLUMN_WORDS[column]) for column in _SERIES_ORDER}


def explain_headers(*, ratio: bool = True) -> dict[str, str]:
    """Headers of an explanation's members (sheet "Warum"); rate and mix only for a ratio."""
    return {
        column: EXPLAIN_WORDS.get(column, COLUMN_WORDS[column])
        for column in _EXPLAIN_ORDER
        if ratio or column not in (RATE_EFFECT, MIX_EFFECT)
    }


# -- levels, windows, units ---------------------------------------------------------------------

#: Words of the levels every hierarchy has; the other levels are named by the hierarchy.
LEVEL_WORDS: dict[str, str] = {PRODUCT_LEVEL: "Produkt", TOTAL_LEVEL: "Total"}


def level_label(level: str, hierarchy: Hierarchy | None = None) -> str:
    """How people read a level or view: the hierarchy's label (its ``labels``), the word of
    ``product`` and ``total``, or else the name capitalised (``mandant`` → ``Mandant``)."""
    labels = hierarchy.labels if hierarchy is not None else {}
    if level in labels:
        return labels[level]
    if level in LEVEL_WORDS:
        return LEVEL_WORDS[level]
    return level[:1].upper() + level[1:]


def level_labels(hierarchy: Hierarchy | None) -> dict[str, str]:
    """Every level and view of a hierarchy (fine to coarse, then the views) → its label."""
    if hierarchy is None:
        return {level: level_label(level) for level in LEVEL_WORDS}
    names = (*hierarchy.level_names, *hierarchy.views)
    return {name: level_label(name, hierarchy) for name in names}


def window_label(window: str | Window) -> str:
    """How a window is offered and named: ``1M``, ``3M``, ``6M``, ``12M``, ``YTD``."""
    return Window(window).value


def window_labels() -> dict[str, str]:
    """Every window, label → window, in the order the app offers them."""
    return {window_label(window): window.value for window in Window}


#: What a unit is called (the XLSX's "Einheit"); the currency is :data:`formats.CURRENCY`.
UNIT_WORDS: dict[Unit, str] = {
    Unit.COUNT: "Anzahl",
    Unit.PERCENT: "Prozent",
    Unit.RATIO: "Verhältnis",
}
#: A chart axis names a percentage by its sign.
AXIS_UNIT_WORDS: dict[Unit, str] = {Unit.PERCENT: "%"}


def unit_word(unit: Unit | str, *, axis: bool = False) -> str:
    """The unit's word (``Anzahl``, ``CHF``, ``Prozent``); on a chart axis ``%`` for percent."""
    unit = Unit(unit)
    if unit is Unit.CURRENCY:
        return formats.CURRENCY
    if axis and unit in AXIS_UNIT_WORDS:
        return AXIS_UNIT_WORDS[unit]
    return UNIT_WORDS[unit]


#: How a window combines the months of a KPI.
TIME_AGGREGATION_WORDS: dict[TimeAggregation, str] = {
    TimeAggregation.SUM: "Summe der Monate",
    TimeAggregation.LAST: "Wert des letzten Monats",
    TimeAggregation.FIRST: "Wert des ersten Monats",
    TimeAggregation.MEAN: "Durchschnitt der Monate",
    TimeAggregation.MIN: "kleinster Monatswert",
    TimeAggregation.MAX: "grösster Monatswert",
}


def time_aggregation_word(aggregation: TimeAggregation | str) -> str:
    """How a window combines the months, e.g. ``Wert des letzten Monats``."""
    return TIME_AGGREGATION_WORDS[TimeAggregation(aggregation)]


def kpi_label(kpi: str, registry: Registry) -> str:
    """The KPI's label from the registry; an unknown KPI by its id."""
    return registry[kpi].label if kpi in registry else kpi


def formula_text(formula: str, registry: Registry) -> str:
    """A formula with KPI labels in place of KPI ids."""
    return re.sub(
        r"\b[a-z][a-z0-9_]*\b",
        lambda match: registry[match[0]].label if match[0] in registry else match[0],
        formula,
    )


# -- notes --------------------------------------------------------------------------------------

#: Explains the flags, for the XLSX "Auswahl" sheet and the app's legend.
FLAGS_NOTE = (
    "Vollständig heisst: jeder massgebende Monat des Fensters ist abgedeckt — die Entität hat "
    "einen Wert und jedes Produkt darunter, das in diesem Monat erwartet wird (zwischen seinem "
    "ersten und letzten Monat mit Wert), hat gemeldet. Zeigt ein KPI den Wert des letzten "
    "Monats, zählt nur dieser Monat. „Vollständig VJ“ beurteilt das Vorjahresfenster "
    "ebenso. Abw. VJ und Abw. VJ % stehen nur, wenn beide Fenster vollständig sind; sonst steht "
    "„–“ und der Grund unter „Hinweis“."
)
#: How a stock's window is judged.
STOCK_COMPLETE_NOTE = (
    "Ein Fenster mit dem Wert des letzten Monats ist vollständig, wenn dieser Monat abgedeckt ist."
)
INCOMPLETE_NOTE = (
    "Unvollständige Fenster stehen in der Spalte „Vollständig“ (Vorjahr: „Vollständig VJ“) "
    "auf „nein“ und sind gelb hinterlegt; „Monate“ zählt die Monate mit Wert."
)
PREVIOUS_YEAR_NOTE = (
    "Vorjahr: dasselbe Fenster zwölf Monate früher. Abw. VJ % ist die Abweichung bezogen "
    "auf den Betrag des Vorjahreswerts; leer, wenn der Vorjahreswert fehlt oder null ist."
)
PER_ACCOUNT_NOTE = (
    f"{PER_ACCOUNT_WORD}: Wert geteilt durch den Durchschnitt der aktiven Konten derselben "
    "Entität über die Monate des Fensters; KPIs ohne Bezugsgrösse bleiben leer."
)
SERIES_CHANGE_NOTE = (
    "Abw. Vormonat: Wert minus Wert des Vormonats; Abw. Vormonat % bezogen auf den Betrag "
    "des Vormonatswerts. Leer, wenn der Vormonat keinen Wert hat oder null ist."
)
SERIES_GROUPS_NOTE = (
    "Gruppen (Mandant, Sektor, Total) zeigen je Monat die Summe ihrer Produkte mit Wert."
)
SERIES_PER_ACCOUNT_NOTE = (
    f"{PER_ACCOUNT_WORD}: Monatswert geteilt durch die aktiven Konten derselben Entität "
    "im selben Monat; KPIs ohne Bezugsgrösse bleiben leer."
)


def stock_note(kpis: Sequence[str], registry: Registry, *, window: object = None) -> str:
    """Why stock KPIs are not summed over a window, naming how each is taken ("" for none).

    ``Bestandesgrössen werden nicht über die Zeit summiert. Im Fenster 12M zeigen Anzahl aktive
    Konten (Wert des letzten Monats) und Aktivitätsquote (berechnet als …). Ein Fenster …``
    """
    stocks = [kpi for kpi in kpis if kpi in registry and registry.is_stock(kpi)]
    if not stocks:
        return ""
    parts = []
    for kpi in stocks:
        definition = registry[kpi]
        if definition.formula is not None:
            how = (
                f"berechnet als {formula_text(definition.formula, registry)} aus den Fensterwerten"
            )
        else:
            assert definition.time_aggregation is not None  # every source KPI has one
            how = time_aggregation_word(definition.time_aggregation)
        parts.append(f"{definition.label} ({how})")
    where = f"Im Fenster {window}" if window is not None else "Über mehrere Monate"
    return (
        "Bestandesgrössen werden nicht über die Zeit summiert. "
        f"{where} zeigen {listing(parts)}. {STOCK_COMPLETE_NOTE}"
    )


def result_notes(
    kpis: Sequence[str], registry: Registry, *, window: object = None, per_account: bool = False
) -> list[str]:
    """How to read a result: stock KPIs, incomplete windows, previous year, per-account values."""
    notes: list[str] = []
    stocks = stock_note(kpis, registry, window=window)
    if stocks:
        notes.append(stocks)
    notes += [INCOMPLETE_NOTE, FLAGS_NOTE, PREVIOUS_YEAR_NOTE]
    if per_account:
        notes.append(PER_ACCOUNT_NOTE)
    if window is not None:
        notes.append(f"Fenster {window}: alle Fenster enden mit dem Stichtag (inklusive).")
    return notes


def series_notes(*, per_account: bool = False) -> list[str]:
    """How to read a monthly series: month-on-month change, groups, per-account values."""
    notes = [SERIES_CHANGE_NOTE, SERIES_GROUPS_NOTE]
    if per_account:
        notes.append(SERIES_PER_ACCOUNT_NOTE)
    return notes


def explanation_status(explanation: Explanation, label: str) -> str:
    """One German sentence: the group's change and whether the members explain it fully."""
    if not explanation.fully_explained and not np.isfinite(explanation.change):
        return (
            f"{label} von {explanation.entity}: keine Abweichung zum Vorjahr (ein Fensterwert "
            "fehlt), daher nichts zu erklären."
        )
    if explanation.fully_explained:
        return (
            f"{label} von {explanation.entity}: die Beiträge der {len(explanation.members)} "
            "Mitglieder erklären die Abweichung zum Vorjahr vollständig."
        )
    windows = [
        word
        for word, ok in (
            ("das aktuelle Fenster", explanation.complete),
            ("das Vorjahresfenster", explanation.previous_complete),
        )
        if not ok
    ]
    members = explanation.members
    gaps = members.loc[~(members[COMPLETE] & members[PREVIOUS_COMPLETE]), MEMBER].tolist()
    named = f" Mitglieder mit Lücken: {members_text(gaps)}." if gaps else ""
    return (
        f"{label} von {explanation.entity}: nicht vollständig erklärt, weil "
        f"{' und '.join(windows)} der Gruppe unvollständig ist (ein erwartetes Produkt hat "
        f"nicht gemeldet).{named}"
    )


def explanation_notes(explanation: Explanation, registry: Registry) -> list[str]:
    """How to read an explanation: whether the change is fully explained, what a contribution
    is, and for a ratio what rate and mix effects are."""
    label = kpi_label(explanation.kpi, registry)
    notes = [explanation_status(explanation, label)]
    notes.append(
        "Beitrag zur Abw.: der Teil der Abweichung der Gruppe zum Vorjahr, den das Mitglied "
        "erklärt; die Beiträge ergeben zusammen genau die Abweichung der Gruppe. Ein Mitglied "
        "mit Wert nur im aktuellen Fenster (neu) trägt seinen Wert bei, eines mit Wert nur im "
        "Vorjahr (eingestellt) minus seinen Vorjahreswert."
    )
    if explanation.is_ratio:
        notes.append(
            f"{label} ist ein Verhältnis (Formel: {registry[explanation.kpi].formula}). Seine "
            "Abweichung teilt sich je Mitglied in den Rateneffekt (das Verhältnis des Mitglieds "
            "selbst hat sich verändert, bei mittlerem Gewicht) und den Mixeffekt (das Gewicht "
            "des Mitglieds im Nenner hat sich verschoben; positiv, wenn ein Mitglied mit "
            "überdurchschnittlichem Verhältnis an Gewicht gewinnt). Rateneffekt + Mixeffekt = "
            "Beitrag."
        )
    return notes


# -- the "Auswahl" sheet of an export -----------------------------------------------------------

#: Title of each recorded selection key, in the order the sheet lists them.
SELECTION_WORDS: dict[str, str] = {
    AS_OF: "Stichtag",
    "months": "Monate",
    WINDOW: "Fenster",
    "kpis": "KPIs",
    "entities": "Entitäten",
    "levels": "Ebenen",
    "per_account": PER_ACCOUNT_WORD,
}
#: Lines of the "Auswahl" sheet besides the selection.
ROWS_WORD = "Zeilen"
NO_RELEASE_WORDS = ("Datenstand", "ohne Release (Daten direkt gelesen)")
RELEASE_WORDS = ("Datenstand (Release)", "Neuester Monat", "Release erstellt")
EXPORTED_WORD = "Exportiert am"
SELECTION_TITLE = "Auswahl"
NOTES_TITLE = "Hinweise"
KPIS_TITLE = "KPIs in diesem Export"
KPI_TABLE_WORDS = ("KPI", "Bezeichnung", "Einheit", "Über die Zeit")
FORMULA_WORD = "Formel"
#: Recorded for an explanation: members, the group's values, whether fully explained.
EXPLAIN_SELECTION_WORDS = (
    "Mitglieder",
    "Wert der Gruppe",
    "Vorjahr der Gruppe",
    "Abw. VJ der Gruppe",
    "Vollständig erklärt",
)
#: Months of a monthly series: ``2025-10 bis 2026-10``.
MONTHS_SPAN = "{first} bis {last}"

#: Sheet names of the workbooks.
RESULT_SHEET = "KPIs"
SERIES_SHEET = "Verlauf"
EXPLAIN_SHEET = "Warum"
SELECTION_SHEET = SELECTION_TITLE


def yes_no(value: object) -> str:
    """``ja`` or ``nein``."""
    return YES if value else NO


# -- charts -------------------------------------------------------------------------------------

#: Words of the line chart and its hover.
X_WORD = "Monat"
COVERAGE_WORD = "Abdeckung"
#: Hover text of a month whose value lacks an expected product, and what its mark means.
UNCOVERED_TEXT = "unvollständig: nicht alle erwarteten Produkte haben gemeldet"
#: Said in the title when a line has marked months.
MARK_NOTE = "× = nicht alle Produkte gemeldet"
#: What the app says when a selection gets no chart (keys: ``charts.NoChart`` values).
NO_CHART_TEXTS: dict[str, str] = {
    "no_kpi": "Für ein Diagramm einen KPI wählen.",
    "no_entity": "Für ein Diagramm eine Entität wählen.",
    "too_many_entities": "Ein Diagramm zeigt einen KPI für höchstens {max_entities} Entitäten.",
    "too_many_kpis": "Ein Diagramm zeigt für eine Entität höchstens {max_kpis} KPIs.",
    "several_kpis_and_entities": (
        "Ein Diagramm zeigt einen KPI für bis zu {max_entities} Entitäten "
        "oder eine Entität mit bis zu {max_kpis} KPIs."
    ),
}
#: Bars of the waterfall ("Warum?"): the previous value, the rest of the members, the value.
PREVIOUS_BAR, CURRENT_BAR, OTHERS_BAR = "Vorjahr", "Aktuell", "Übrige"


def waterfall_title(label: str, explanation: Explanation, change: str, *, cut: bool) -> str:
    """The waterfall's title: ``Warum? Umsatz Total · B2C · 12M bis Oktober 2026`` and, on a
    second line, the change (``Abw. VJ +CHF 1'234 (+5.6 %)``) and what to mind."""
    title = (
        f"Warum? {label} · {explanation.entity} · {explanation.window} bis "
        f"{month_long(explanation.as_of)}\n{COLUMN_WORDS[CHANGE]} {change}"
    )
    if cut:
        title += " · Achse beginnt nicht bei 0"
    if not explanation.fully_explained:
        title += " · nicht vollständig erklärt"
    return title


def no_chart_text(reason: str, *, max_entities: int, max_kpis: int) -> str:
    """Why a selection gets no chart, in German."""
    return NO_CHART_TEXTS[str(reason)].format(max_entities=max_entities, max_kpis=max_kpis)


def chart_tooltips() -> list[tuple[str, str]]:
    """The chart's hover lines: word and the column of the chart frame it shows."""
    return [
        (COLUMN_WORDS[ENTITY], "@entity"),
        (COLUMN_WORDS[KPI], "@kpi_label"),
        (X_WORD, "@month_text"),
        (COLUMN_WORDS[VALUE], "@value_text"),
        (SERIES_WORDS[CHANGE], "@change_text"),
        (COVERAGE_WORD, "@coverage_text"),
    ]


def axis_label(name: str, unit: Unit | str, *, per_account: bool = False) -> str:
    """A chart's y-axis: ``Umsatz Total (CHF)``, ``Anzahl aktive Konten (Anzahl, Ø pro …)``."""
    text = unit_word(unit, axis=True)
    if per_account:
        text = f"{text}, {PER_ACCOUNT_WORD}"
    return f"{name} ({text})"


def chart_title(subject: str, first: pd.Period, last: pd.Period, **flags: bool) -> str:
    """A chart's title: the KPI or entity, the months shown, and what marks or options apply:
    ``Umsatz Total · Ø pro aktives Konto · Okt 2025 – Okt 2026 · × = …``.

    :param flags: ``per_account`` and ``marked`` (a line has months not fully covered).
    """
    suffix = f" · {PER_ACCOUNT_WORD}" if flags.get("per_account") else ""
    span = f"{month_short(first)} – {month_short(last)}"
    marks = f" · {MARK_NOTE}" if flags.get("marked") else ""
    return f"{subject}{suffix} · {span}{marks}"


# -- the app ------------------------------------------------------------------------------------

#: Marks the month count of a window that is not complete.
INCOMPLETE_MARK = "⚠"
#: Put before a note the app shows above its table.
NOTE_PREFIX = "Hinweis: "


def table_legend(highlight_count: int) -> str:
    """The legend under the app's table: marks, colours, "–" and the "Warum?" click."""
    return (
        f"{INCOMPLETE_MARK} und gelb: Fenster unvollständig — nicht jeder massgebende Monat ist "
        "abgedeckt (ein Monat ohne Wert, oder ein Produkt, das in diesem Monat erwartet wurde, hat "
        "nicht gemeldet); gelber Vorjahreswert: das Vorjahresfenster ist unvollständig. "
        f"„{NOT_COMPARABLE}“ bei Abw. VJ: die Abweichung wird nur gezeigt, wenn beide Fenster "
        "vollständig sind; der Grund erscheint beim Darüberfahren mit der Maus. "
        "Grün und rot hinterlegt: Abweichungen zum Vorjahr über dem Schwellenwert des KPI, bei "
        "KPIs ohne Schwellenwert die grössten prozentualen Abweichungen "
        f"(höchstens {highlight_count}, eine je fünf Zeilen); nur vollständige Vergleiche. "
        "Ein Klick auf eine Zeile einer Gruppe zeigt unten unter «Warum?», welche Mitglieder die "
        "Abweichung erklären."
    )


def comparison_note(counts: Mapping[str, int], *, listed: int) -> str:
    """Why changes read "–": the distinct reasons with their rows (at most ``listed``)."""
    if not counts:
        return ""
    shown = [
        f"{reason} ({formats.swiss_count(int(n))} Zeilen)"
        for reason, n in list(counts.items())[:listed]
    ]
    more = len(counts) - listed
    tail = f"; und {formats.swiss_count(more)} weitere Gründe" if more > 0 else ""
    return (
        f"„{NOT_COMPARABLE}“ bei Abw. VJ: Vergleich nicht vollständig (Grund beim Darüberfahren "
        f"mit der Maus): {'; '.join(shown)}{tail}."
    )


def without_reference_note(labels: Sequence[str]) -> str:
    """Which KPIs have no per-account value (no reference KPI); "" for none."""
    if not labels:
        return ""
    return f"{PER_ACCOUNT_WORD}: ohne Bezugsgrösse und daher ohne Wert: {listing(labels)}."


def page_text(first: int, last: int, total: int, page: int, pages: int) -> str:
    """Which rows a page shows: ``Zeilen 2'501–5'000 von 58'170 · Seite 2 von 24``."""
    count = formats.swiss_count
    return f"Zeilen {count(first)}–{count(last)} von {count(total)} · Seite {page} von {pages}"


#: The app's choices, by parameter name.
CHOICE_WORDS: dict[str, str] = {
    "as_of": "Stichtag",
    "window": "Fenster",
    "grouping": "Entitäten",
    "kpi_group": "KPI-Gruppe",
    "display": "Darstellung",
    "per_account": PER_ACCOUNT_WORD,
    "entities": "Entitäten auswählen",
    "kpis": "KPIs auswählen",
    "page": "Seite",
}
ALL_ENTITIES = "Alle Entitäten"
ALL_KPI_GROUPS = "Alle KPI-Gruppen"
#: A grouping of the products by a view: ``Sicht Kartenprofil``.
VIEW_WORD = "Sicht"
#: How the table is grouped, label → key (``entity`` or ``kpi``).
DISPLAY_WORDS: dict[str, str] = {"nach Entität": "entity", "nach KPI": "kpi"}
#: What an export records of the app's selection besides the query.
GROUPING_RECORD, KPI_GROUP_RECORD, DISPLAY_RECORD = "Entitäten-Gruppe", "KPI-Gruppe", "Darstellung"


def data_version_text(
    newest: pd.Period | None, release: ReleaseInfo | None, source: str | None
) -> str:
    """The app's "Datenstand": newest month and release (``Release 7 vom 03.11.2026 08:15``)."""
    text = f"Datenstand: {month_long(newest) if newest is not None else 'keine Daten'}"
    if release is None:
        return f"{text} · ohne Release ({source or 'Daten'})"
    created = release.created_at.astimezone().strftime("%d.%m.%Y %H:%M")
    return f"{text} · Release {release.id} vom {created}"


def new_data_text(release_id: int, newest_month: str | pd.Period) -> str:
    """Said once when a new release was loaded."""
    return f"Neue Daten geladen: Release {release_id}, neuester Monat {month_long(newest_month)}."


#: Words of the file names of the app's downloads: ``kpisheet_2026-10_12M_verlauf.xlsx``.
FILE_WORDS: dict[str, str] = {"series": "verlauf", "chart": "diagramm", "explain": "warum"}

# -- the app's "Warum?" view --------------------------------------------------------------------

#: Words of the "Warum?" view, by what they name.
EXPLAIN_VIEW_WORDS: dict[str, str] = {
    "heading": "Warum? Abweichung zum Vorjahr erklären",
    "button": "Warum?",
    "group": "Gruppe",
    "kpi": "KPI",
    "members": "Mitglieder",
    "next_level": "nächste Ebene",
    "products": "Produkte",
    "xlsx": "Erklärung als XLSX",
    "png": "Wasserfall als PNG",
    "explained_by": "Erklärt von",
    "nothing": "Keine Gruppe mit einem erklärbaren KPI in der Tabelle.",
    "impossible": "Keine Erklärung möglich",
}
#: Said when the table shows values per active account: the explanation explains the values.
EXPLAIN_PER_ACCOUNT_NOTE = f"Erklärt werden die Werte selbst, nicht «{PER_ACCOUNT_WORD}»."


def explain_product_text(entity: str, hierarchy: Hierarchy | None) -> str:
    """Why a product row gets no explanation, naming the levels that do (coarse to fine)."""
    levels = [TOTAL_LEVEL, *(hierarchy.levels if hierarchy is not None else ())]
    named = ", ".join(level_label(level, hierarchy) for level in levels)
    return f"{entity} ist ein Produkt: erklärt werden Gruppen ({named} …)."


def explain_unsplittable_text(label: str) -> str:
    """Why a KPI gets no explanation: its change does not split over members."""
    return (
        f"{label} lässt sich nicht nach Mitgliedern aufteilen: erklärt werden KPIs, die "
        "über die Produkte summiert werden, und Verhältnisse zweier solcher KPIs."
    )
