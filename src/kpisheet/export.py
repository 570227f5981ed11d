"""XLSX exports people can hand on: a query result or a chart's monthly series, formatted and safe.

Numbers stay numbers (formatted by the KPI's unit), the header is frozen and filterable, and a
second sheet "Auswahl" records the selection, the data release and how to read the numbers.
Text that a spreadsheet could take for a formula is stored as plain text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import pandas as pd
from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, Cell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

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
    RESULT_COLUMNS,
    TOTAL_LEVEL,
    VALUE,
    WINDOW,
    TimeAggregation,
    Unit,
)
from kpisheet.errors import QueryError
from kpisheet.explain import CONTRIBUTION, MEMBER, MIX_EFFECT, RATE_EFFECT, Explanation
from kpisheet.presentation import (
    FLAGS_NOTE,
    NOT_COMPARABLE,
    comparable,
    incomplete_reasons,
    members_text,
)
from kpisheet.registry import Registry

#: Column of the KPI label, written next to the KPI id.
LABEL = "label"
#: Column of the reason why a row's change is not shown.
NOTE = "note"
#: Columns of a chart series with its month-on-month change (see :func:`month_on_month`).
PREVIOUS_MONTH_VALUE = "previous_month_value"
SERIES_COLUMNS: tuple[str, ...] = (MONTH, ENTITY, KPI, VALUE)

#: Sheet names.
RESULT_SHEET = "KPIs"
SERIES_SHEET = "Verlauf"
SELECTION_SHEET = "Auswahl"

#: German headers of the result sheet, in column order.
RESULT_HEADERS: dict[str, str] = {
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
}
#: German headers of the series sheet, in column order.
SERIES_HEADERS: dict[str, str] = {
    MONTH: "Monat",
    ENTITY: "Entität",
    KPI: "KPI",
    LABEL: "KPI-Bezeichnung",
    VALUE: "Wert",
    CHANGE: "Abw. Vormonat",
    CHANGE_PCT: "Abw. Vormonat %",
}

#: German names of levels; other levels (hierarchy attributes) are shown capitalised.
LEVEL_LABELS: dict[str, str] = {
    PRODUCT_LEVEL: "Produkt",
    TOTAL_LEVEL: "Total",
    "mandant": "Mandant",
    "sector": "Sektor",
    "cardprofile": "Kartenprofil",
}
YES, NO = "ja", "nein"

# Excel number formats. Thousands separators follow the reader's regional settings
# (1'234'567 in Switzerland), so a number stays a number in every locale.
_COUNT = "#,##0"
_DECIMAL = "#,##0.00"
_CURRENCY = '"CHF "#,##0.00;"CHF "-#,##0.00'
_PERCENT = "0.0%"
#: Number format of a value, by the KPI's unit.
NUMBER_FORMATS: dict[Unit, str] = {
    Unit.COUNT: _COUNT,
    Unit.CURRENCY: _CURRENCY,
    Unit.PERCENT: _PERCENT,
    Unit.RATIO: _DECIMAL,
}
#: Number format of a change (value − comparison value), by the KPI's unit: always signed.
CHANGE_FORMATS: dict[Unit, str] = {
    Unit.COUNT: "+#,##0;-#,##0;0",
    Unit.CURRENCY: '"CHF "+#,##0.00;"CHF "-#,##0.00;"CHF "0.00',
    Unit.PERCENT: "+0.0%;-0.0%;0.0%",
    Unit.RATIO: "+#,##0.00;-#,##0.00;0.00",
}
#: Number format of a relative change.
CHANGE_PCT_FORMAT = "+0.0%;-0.0%;0.0%"
MONTH_FORMAT = "mmm yyyy"
INTEGER_FORMAT = "0"

#: Text starting with one of these could run as a formula in a spreadsheet.
FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")

HEADER_FONT = Font(bold=True, color="FFFFFF")
HEADER_FILL = PatternFill("solid", fgColor="1F4E79")
#: Fill of the cells of a window with months missing.
INCOMPLETE_FILL = PatternFill("solid", fgColor="FFE699")
TITLE_FONT = Font(bold=True, size=12)
BOLD = Font(bold=True)
MIN_WIDTH, MAX_WIDTH = 8, 60

#: How a window combines the months of a KPI, in the words of the app and the XLSX notes.
TIME_AGGREGATION_TEXT: dict[TimeAggregation, str] = {
    TimeAggregation.SUM: "Summe der Monate",
    TimeAggregation.LAST: "Wert des letzten Monats",
    TimeAggregation.FIRST: "Wert des ersten Monats",
    TimeAggregation.MEAN: "Durchschnitt der Monate",
    TimeAggregation.MIN: "kleinster Monatswert",
    TimeAggregation.MAX: "grösster Monatswert",
}
_UNIT_TEXT: dict[Unit, str] = {
    Unit.COUNT: "Anzahl",
    Unit.CURRENCY: "CHF",
    Unit.PERCENT: "Prozent",
    Unit.RATIO: "Verhältnis",
}

Target = str | Path | IO[bytes]


class ReleaseLike(Protocol):
    """What an export records of a data release (the store's release info)."""

    id: Any
    newest_month: Any
    created_at: Any


def write_result_xlsx(
    result: pd.DataFrame,
    target: Target,
    *,
    registry: Registry,
    release: ReleaseLike | None = None,
    selection: Mapping[str, object] | None = None,
    reasons: pd.Series | None = None,
) -> None:
    """Write a query result as a formatted workbook to a path or binary buffer.

    ``selection`` records what was asked: keys ``as_of``, ``window``, ``kpis``, ``entities``,
    ``levels``, ``per_account`` (as for ``sheet.query``); missing ``as_of`` and ``window`` are
    read from the result. Further keys are recorded under their own name.

    A change is written only where both windows are complete; elsewhere the change cells read
    "–" and the column "Hinweis" gives the reason: ``reasons`` (one text per row, e.g. from
    :func:`kpisheet.presentation.incomplete_reasons` with the sheet, naming missing members),
    or by default the reasons that the result's own flags and month counts give.

    :raises QueryError: when the result lacks a column of a query result.
    """
    _require_columns(result, RESULT_COLUMNS, "a query result")
    selection = dict(selection or {})
    per_account = bool(selection.get("per_account", False))
    for key in (AS_OF, WINDOW):
        if selection.get(key) is None and len(result):
            selection[key] = ", ".join(str(v) for v in result[key].drop_duplicates())

    table = result.loc[:, list(RESULT_COLUMNS)].copy()
    table.insert(table.columns.get_loc(KPI) + 1, LABEL, _labels(table[KPI], registry))
    table[LEVEL] = table[LEVEL].map(level_label)
    incomplete = ~table[COMPLETE].fillna(False).astype(bool)
    previous_incomplete = ~table[PREVIOUS_COMPLETE].fillna(False).astype(bool)
    table[COMPLETE] = incomplete.map({True: NO, False: YES})
    table[PREVIOUS_COMPLETE] = previous_incomplete.map({True: NO, False: YES})
    if reasons is None:
        reasons = incomplete_reasons(result, registry, per_account=per_account)
    table[NOTE] = np.asarray(reasons, dtype=object)
    units = table[KPI].map(lambda kpi: _unit(kpi, registry))
    numeric = table  # widths are measured on the numbers, before changes become "–"
    hidden = ~comparable(result)
    if hidden.any():
        table = table.astype({CHANGE: object, CHANGE_PCT: object})
        table.loc[hidden, [CHANGE, CHANGE_PCT]] = NOT_COMPARABLE

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = RESULT_SHEET
    _write_table(sheet, table, RESULT_HEADERS)
    columns = list(RESULT_HEADERS)
    for column in (VALUE, PREVIOUS_VALUE):
        _format_column(sheet, columns.index(column), _value_formats(units, per_account))
    _format_column(sheet, columns.index(CHANGE), _change_formats(units, per_account))
    _format_column(sheet, columns.index(CHANGE_PCT), [CHANGE_PCT_FORMAT] * len(table))
    for column in (MONTHS, PREVIOUS_MONTHS):
        _format_column(sheet, columns.index(column), [INTEGER_FORMAT] * len(table))
    for column in (VALUE, COMPLETE):
        _fill_rows(sheet, columns.index(column), incomplete.to_numpy(), INCOMPLETE_FILL)
    for column in (PREVIOUS_VALUE, PREVIOUS_COMPLETE):
        _fill_rows(sheet, columns.index(column), previous_incomplete.to_numpy(), INCOMPLETE_FILL)
    for column in (VALUE, PREVIOUS_VALUE):
        _align(sheet, columns.index(column), "right", len(table), header_only=True)
    for column in (CHANGE, CHANGE_PCT):  # "–" stands where the numbers would
        _align(sheet, columns.index(column), "right", len(table))
    for column in (MONTHS, COMPLETE, PREVIOUS_MONTHS, PREVIOUS_COMPLETE):
        _align(sheet, columns.index(column), "center", len(table))
    _fit_widths(sheet, numeric, RESULT_HEADERS, units, per_account)

    kpis = list(dict.fromkeys(table[KPI]))
    notes = result_notes(kpis, registry, window=selection.get(WINDOW), per_account=per_account)
    _write_selection_sheet(workbook, selection, kpis, registry, release, notes, rows=len(table))
    _save(workbook, target)


def write_series_xlsx(
    series: pd.DataFrame,
    target: Target,
    *,
    registry: Registry,
    release: ReleaseLike | None = None,
    selection: Mapping[str, object] | None = None,
) -> None:
    """Write a chart's monthly series (``month, entity, kpi, value``) with month-on-month change.

    :raises QueryError: when the series lacks a column.
    """
    _require_columns(series, SERIES_COLUMNS, "a series")
    # Monthly values: a query's window and levels do not apply to them.
    selection = {k: v for k, v in (selection or {}).items() if k not in (WINDOW, "levels")}
    per_account = bool(selection.get("per_account", False))
    table = month_on_month(series)
    months = table[MONTH]
    if selection.get(AS_OF) is None and len(table):
        selection[AS_OF] = str(months.max())
    if len(table):
        selection.setdefault("months", f"{months.min()} bis {months.max()}")
    table[MONTH] = months.dt.to_timestamp().dt.date
    table.insert(table.columns.get_loc(KPI) + 1, LABEL, _labels(table[KPI], registry))
    table = table.loc[:, list(SERIES_HEADERS)]
    units = table[KPI].map(lambda kpi: _unit(kpi, registry))

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = SERIES_SHEET
    _write_table(sheet, table, SERIES_HEADERS)
    columns = list(SERIES_HEADERS)
    _format_column(sheet, columns.index(MONTH), [MONTH_FORMAT] * len(table))
    _format_column(sheet, columns.index(VALUE), _value_formats(units, per_account))
    _format_column(sheet, columns.index(CHANGE), _change_formats(units, per_account))
    _format_column(sheet, columns.index(CHANGE_PCT), [CHANGE_PCT_FORMAT] * len(table))
    for column in (VALUE, CHANGE, CHANGE_PCT):
        _align(sheet, columns.index(column), "right", len(table), header_only=True)
    _fit_widths(sheet, table, SERIES_HEADERS, units, per_account)

    kpis = list(dict.fromkeys(table[KPI]))
    notes = [
        "Abw. Vormonat: Wert minus Wert des Vormonats; Abw. Vormonat % bezogen auf den Betrag "
        "des Vormonatswerts. Leer, wenn der Vormonat keinen Wert hat oder null ist.",
        "Gruppen (Mandant, Sektor, Total) zeigen je Monat die Summe ihrer Produkte mit Wert.",
    ]
    if per_account:
        notes.append(
            "Ø pro aktives Konto: Monatswert geteilt durch die aktiven Konten derselben Entität "
            "im selben Monat; KPIs ohne Bezugsgrösse bleiben leer."
        )
    _write_selection_sheet(workbook, selection, kpis, registry, release, notes, rows=len(table))
    _save(workbook, target)


#: Sheet name of an explanation ("Warum?").
EXPLAIN_SHEET = "Warum"
#: Column of an explanation export: the member's contribution as a share of the group's change.
SHARE = "share"
#: German headers of an explanation, in column order (rate and mix only for ratios).
EXPLAIN_HEADERS: dict[str, str] = {
    AS_OF: "Stichtag",
    WINDOW: "Fenster",
    KPI: "KPI",
    LABEL: "KPI-Bezeichnung",
    ENTITY: "Gruppe",
    MEMBER: "Mitglied",
    LEVEL: "Ebene",
    VALUE: "Wert",
    PREVIOUS_VALUE: "Vorjahr",
    CHANGE: "Abw. VJ",
    CONTRIBUTION: "Beitrag zur Abw.",
    SHARE: "Anteil an der Abw.",
    RATE_EFFECT: "Rateneffekt",
    MIX_EFFECT: "Mixeffekt",
    COMPLETE: "Vollständig",
    PREVIOUS_COMPLETE: "Vollständig VJ",
}
#: Number format of a contribution to a percentage's change (percentage points, finer).
_POINTS = "+0.00%;-0.00%;0.00%"


def explanation_notes(explanation: Explanation, registry: Registry) -> list[str]:
    """How to read an explanation, in German: whether the change is fully explained, what a
    contribution is, and for a ratio what rate and mix effects are."""
    label = registry[explanation.kpi].label if explanation.kpi in registry else explanation.kpi
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


def write_explanation_xlsx(
    explanation: Explanation,
    target: Target,
    *,
    registry: Registry,
    release: ReleaseLike | None = None,
    selection: Mapping[str, object] | None = None,
) -> None:
    """Write an explanation ("Warum?") as a formatted workbook: one row per member, largest
    contribution first, with its share of the group's change; rate and mix effects for a ratio.

    The "Auswahl" sheet records the group, its values, whether the change is fully explained
    and how to read the numbers.
    """
    members = explanation.members
    table = members.copy()
    table.insert(table.columns.get_loc(KPI) + 1, LABEL, _labels(table[KPI], registry))
    table[LEVEL] = table[LEVEL].map(level_label)
    change = explanation.change
    explained = np.isfinite(change) and change != 0
    table[SHARE] = table[CONTRIBUTION] / change if explained else np.nan
    incomplete = ~table[COMPLETE].astype(bool)
    previous_incomplete = ~table[PREVIOUS_COMPLETE].astype(bool)
    table[COMPLETE] = incomplete.map({True: NO, False: YES})
    table[PREVIOUS_COMPLETE] = previous_incomplete.map({True: NO, False: YES})
    headers = {
        column: header
        for column, header in EXPLAIN_HEADERS.items()
        if explanation.is_ratio or column not in (RATE_EFFECT, MIX_EFFECT)
    }
    table = table.loc[:, list(headers)]
    unit = _unit(explanation.kpi, registry)
    units = pd.Series([unit] * len(table), index=table.index, dtype=object)

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = EXPLAIN_SHEET
    _write_table(sheet, table, headers)
    columns = list(headers)
    points = [_POINTS if unit is Unit.PERCENT else CHANGE_FORMATS[unit]] * len(table)
    for column in (VALUE, PREVIOUS_VALUE):
        _format_column(sheet, columns.index(column), _value_formats(units, False))
    _format_column(sheet, columns.index(CHANGE), _change_formats(units, False))
    for column in (CONTRIBUTION, RATE_EFFECT, MIX_EFFECT):
        if column in headers:
            _format_column(sheet, columns.index(column), points)
    _format_column(sheet, columns.index(SHARE), [CHANGE_PCT_FORMAT] * len(table))
    for column in (VALUE, COMPLETE):
        _fill_rows(sheet, columns.index(column), incomplete.to_numpy(), INCOMPLETE_FILL)
    for column in (PREVIOUS_VALUE, PREVIOUS_COMPLETE):
        _fill_rows(sheet, columns.index(column), previous_incomplete.to_numpy(), INCOMPLETE_FILL)
    for column in (VALUE, PREVIOUS_VALUE, CHANGE, CONTRIBUTION, SHARE, RATE_EFFECT, MIX_EFFECT):
        if column in headers:
            _align(sheet, columns.index(column), "right", len(table), header_only=True)
    for column in (COMPLETE, PREVIOUS_COMPLETE):
        _align(sheet, columns.index(column), "center", len(table))
    _fit_widths(sheet, table, headers, units, False)

    recorded: dict[str, object] = {
        AS_OF: explanation.as_of,
        WINDOW: explanation.window,
        "kpis": [explanation.kpi],
        "entities": [explanation.entity],
        "Mitglieder": level_label(explanation.by),
        "Wert der Gruppe": _number_text(explanation.value),
        "Vorjahr der Gruppe": _number_text(explanation.previous_value),
        "Abw. VJ der Gruppe": _number_text(explanation.change),
        "Vollständig erklärt": YES if explanation.fully_explained else NO,
    }
    recorded.update({k: v for k, v in (selection or {}).items() if k not in recorded})
    notes = explanation_notes(explanation, registry)
    _write_selection_sheet(
        workbook, recorded, [explanation.kpi], registry, release, notes, rows=len(table)
    )
    _save(workbook, target)


def _number_text(value: float) -> str:
    """A number for the "Auswahl" sheet: rounded to two decimals, "–" when missing."""
    return "–" if not np.isfinite(value) else f"{value:,.2f}".replace(",", "'")


def month_on_month(series: pd.DataFrame) -> pd.DataFrame:
    """The series sorted by KPI, entity and month, with the change against the calendar month before.

    Adds ``previous_month_value``, ``change`` and ``change_pct`` (a fraction of the previous
    value's magnitude; missing when the previous month has no value or a zero value). Months
    are matched by calendar, so a gap in the data never compares with an earlier month.
    """
    frame = series.loc[:, list(SERIES_COLUMNS)].copy()
    frame[MONTH] = pd.PeriodIndex(frame[MONTH], freq="M")
    previous = frame.assign(**{MONTH: frame[MONTH] + 1}).rename(
        columns={VALUE: PREVIOUS_MONTH_VALUE}
    )
    frame = frame.merge(previous, on=[MONTH, ENTITY, KPI], how="left", validate="one_to_one")
    frame[CHANGE] = frame[VALUE] - frame[PREVIOUS_MONTH_VALUE]
    divisor = frame[PREVIOUS_MONTH_VALUE].abs().where(lambda v: v != 0)
    frame[CHANGE_PCT] = frame[CHANGE] / divisor
    ranks = {
        "_kpi_rank": pd.Categorical(frame[KPI], categories=pd.unique(frame[KPI])).codes,
        "_entity_rank": pd.Categorical(frame[ENTITY], categories=pd.unique(frame[ENTITY])).codes,
    }
    frame = frame.assign(**ranks).sort_values([*ranks, MONTH], kind="stable").drop(columns=[*ranks])
    return frame.reset_index(drop=True)


def level_label(level: str) -> str:
    """The German name of a level, e.g. ``Produkt`` for ``product``."""
    return LEVEL_LABELS.get(level, level[:1].upper() + level[1:])


def number_format(unit: Unit | str, *, per_account: bool = False) -> str:
    """The Excel number format of a KPI value of this unit (counts get decimals per account)."""
    unit = Unit(unit)
    if per_account and unit is Unit.COUNT:
        return _DECIMAL
    return NUMBER_FORMATS[unit]


def result_notes(
    kpis: Sequence[str], registry: Registry, *, window: object = None, per_account: bool = False
) -> list[str]:
    """How to read a result: stock KPIs, incomplete windows, previous year, per-account values."""
    notes: list[str] = []
    stocks = [kpi for kpi in kpis if kpi in registry and registry.is_stock(kpi)]
    if stocks:
        named = ", ".join(_stock_text(kpi, registry) for kpi in stocks)
        notes.append(
            "Bestandesgrössen werden nicht über die Zeit summiert; ein Fenster über mehrere "
            f"Monate zeigt: {named}. {STOCK_COMPLETE_NOTE}"
        )
    notes.append(
        "Unvollständige Fenster stehen in der Spalte „Vollständig“ (Vorjahr: „Vollständig VJ“) "
        "auf „nein“ und sind gelb hinterlegt; „Monate“ zählt die Monate mit Wert."
    )
    notes.append(FLAGS_NOTE)
    notes.append(
        "Vorjahr: dasselbe Fenster zwölf Monate früher. Abw. VJ % ist die Abweichung bezogen "
        "auf den Betrag des Vorjahreswerts; leer, wenn der Vorjahreswert fehlt oder null ist."
    )
    if per_account:
        notes.append(_PER_ACCOUNT_NOTE)
    if window is not None:
        notes.append(f"Fenster {window}: alle Fenster enden mit dem Stichtag (inklusive).")
    return notes


#: How a stock's window is judged, for the stock notes of the XLSX and the app.
STOCK_COMPLETE_NOTE = (
    "Ein Fenster mit dem Wert des letzten Monats ist vollständig, wenn dieser Monat abgedeckt ist."
)
_PER_ACCOUNT_NOTE = (
    "Ø pro aktives Konto: Wert geteilt durch den Durchschnitt der aktiven Konten derselben "
    "Entität über die Monate des Fensters; KPIs ohne Bezugsgrösse bleiben leer."
)


def _stock_text(kpi: str, registry: Registry) -> str:
    definition = registry[kpi]
    if definition.is_derived:
        how = f"berechnet als {definition.formula} aus den Fensterwerten"
    else:
        how = TIME_AGGREGATION_TEXT[TimeAggregation(definition.time_aggregation)]
    return f"{definition.label} ({how})"


def _require_columns(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise QueryError(
            f"cannot export {what}: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, frame.columns)) or 'none'}"
        )


def _labels(kpis: pd.Series, registry: Registry) -> pd.Series:
    return kpis.map(lambda kpi: registry[kpi].label if kpi in registry else kpi)


def _unit(kpi: str, registry: Registry) -> Unit:
    return Unit(registry[kpi].unit) if kpi in registry else Unit.RATIO


def _value_formats(units: pd.Series, per_account: bool) -> list[str]:
    return [number_format(unit, per_account=per_account) for unit in units]


def _change_formats(units: pd.Series, per_account: bool) -> list[str]:
    return [
        CHANGE_FORMATS[Unit.RATIO if per_account and unit is Unit.COUNT else unit] for unit in units
    ]


def set_text(cell: Cell, text: str) -> None:
    """Store ``text`` in ``cell`` as plain text, never as a formula or an error value.

    Text that starts like a formula keeps its characters and gets Excel's quote prefix
    (shown as ``'=…`` in the formula bar), so editing the cell does not run it either.
    """
    text = ILLEGAL_CHARACTERS_RE.sub("", text)
    cell.value = text
    cell.data_type = "s"
    if text.startswith(FORMULA_PREFIXES):
        cell.quotePrefix = True


#: What CSV and JSON put before text that starts like a formula (they have no quote prefix).
TEXT_PREFIX = "'"


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` for CSV or JSON in which no text starts like a formula.

    Text beginning with one of :data:`FORMULA_PREFIXES` gets a leading apostrophe, as a
    spreadsheet user would type it to enter text; spreadsheets opening the file then show the
    text instead of running it. Numbers (and every other non-text column) stay as they are.
    """
    out = frame.copy(deep=False)
    for column in out.columns:
        values = out[column]
        if not (
            pd.api.types.is_object_dtype(values)
            or pd.api.types.is_string_dtype(values)
            or isinstance(values.dtype, pd.CategoricalDtype)
        ):
            continue
        text = values.astype("string")
        risky = text.str.startswith(FORMULA_PREFIXES).fillna(False).to_numpy(dtype=bool)
        if risky.any():
            values = values.astype(object)
            values[risky] = TEXT_PREFIX + text[risky]
            out[column] = values
    return out


def _write_value(cell: Cell, value: object) -> None:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return
    if isinstance(value, str):
        set_text(cell, value)
    elif isinstance(value, bool | int | float | dt.date):
        cell.value = value
    else:
        set_text(cell, str(value))


def _write_table(sheet: Worksheet, table: pd.DataFrame, headers: Mapping[str, str]) -> None:
    """Header row (styled, frozen, with autofilter) and the rows of ``table``."""
    for col, header in enumerate(headers.values(), start=1):
        cell = sheet.cell(row=1, column=col)
        set_text(cell, header)
        cell.font = HEADER_FONT
        cell.fill = HEADER_FILL
        cell.alignment = Alignment(vertical="center")
    rows = table.astype(object).where(table.notna(), None).itertuples(index=False, name=None)
    for row_number, row in enumerate(rows, start=2):
        for col, value in enumerate(row, start=1):
            _write_value(sheet.cell(row=row_number, column=col), _plain(value))
    sheet.freeze_panes = "A2"
    last = get_column_letter(len(headers))
    sheet.auto_filter.ref = f"A1:{last}{max(len(table) + 1, 1)}"
    sheet.page_setup.orientation = "landscape"
    sheet.page_setup.fitToWidth = 1
    sheet.page_setup.fitToHeight = 0
    sheet.sheet_properties.pageSetUpPr.fitToPage = True
    sheet.print_title_rows = "1:1"


def _plain(value: object) -> object:
    """numpy scalars as Python values, for openpyxl."""
    return value.item() if hasattr(value, "item") and not isinstance(value, str) else value


def _format_column(sheet: Worksheet, index: int, formats: Sequence[str]) -> None:
    for row_number, fmt in enumerate(formats, start=2):
        sheet.cell(row=row_number, column=index + 1).number_format = fmt


def _align(
    sheet: Worksheet, index: int, horizontal: str, rows: int, *, header_only: bool = False
) -> None:
    """Align a column's header (and, unless ``header_only``, its cells) like its numbers."""
    last = 1 if header_only else rows + 1
    for row_number in range(1, last + 1):
        cell = sheet.cell(row=row_number, column=index + 1)
        cell.alignment = Alignment(horizontal=horizontal, vertical="center")


def _fill_rows(sheet: Worksheet, index: int, mask: Sequence[bool], fill: PatternFill) -> None:
    for row_number, marked in enumerate(mask, start=2):
        if marked:
            sheet.cell(row=row_number, column=index + 1).fill = fill


def _fit_widths(
    sheet: Worksheet,
    table: pd.DataFrame,
    headers: Mapping[str, str],
    units: pd.Series,
    per_account: bool,
) -> None:
    """Column widths from the longest shown text, header included (filter button allowed for)."""
    for index, (column, header) in enumerate(headers.items(), start=1):
        values = table[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            shown = _shown_number_width(values, units, column, per_account)
        else:
            shown = int(values.astype(str).str.len().max()) if len(values) else 0
        width = min(max(shown, len(header) + 3, MIN_WIDTH), MAX_WIDTH) + 2
        sheet.column_dimensions[get_column_letter(index)].width = width


def _shown_number_width(values: pd.Series, units: pd.Series, column: str, per_account: bool) -> int:
    """Characters of the widest formatted number: digits, separators, sign, unit text."""
    magnitude = values.abs().fillna(0)
    digits = magnitude.where(magnitude >= 1, 1).map(lambda v: len(f"{v:,.0f}"))
    if column in (CHANGE_PCT, MONTHS, PREVIOUS_MONTHS):
        return int(digits.max()) + 4 if len(values) else 0
    extra = units.map(
        {
            Unit.COUNT: 3 if per_account else 0,
            Unit.CURRENCY: 7,
            Unit.PERCENT: 4,
            Unit.RATIO: 3,
        }
    )
    if column == VALUE and units.eq(Unit.PERCENT).all():
        digits = digits + 2
    return int((digits + extra + 1).max()) if len(values) else 0


def _write_selection_sheet(
    workbook: Workbook,
    selection: Mapping[str, object],
    kpis: Sequence[str],
    registry: Registry,
    release: ReleaseLike | None,
    notes: Sequence[str],
    *,
    rows: int,
) -> None:
    """The "Auswahl" sheet: what was selected, which data, when, and how to read it."""
    sheet = workbook.create_sheet(SELECTION_SHEET)
    lines: list[tuple[str, object]] = []
    described = dict(selection)
    for key, (title, render) in _SELECTION_FIELDS.items():
        if key in described:
            lines.append((title, render(described.pop(key), registry)))
        elif key in _SELECTION_DEFAULTS:
            lines.append((title, _SELECTION_DEFAULTS[key]))
    lines += [(str(key), _text(value)) for key, value in described.items()]
    lines.append(("Zeilen", rows))
    if release is None:
        lines.append(("Datenstand", "ohne Release (Daten direkt gelesen)"))
    else:
        lines += [
            ("Datenstand (Release)", _text(getattr(release, "id", None))),
            ("Neuester Monat", _text(getattr(release, "newest_month", None))),
            ("Release erstellt", _text(getattr(release, "created_at", None))),
        ]
    lines.append(("Exportiert am", _text(dt.datetime.now().astimezone())))

    for letter, width in _SELECTION_WIDTHS.items():
        sheet.column_dimensions[letter].width = width
    title = sheet.cell(row=1, column=1)
    set_text(title, "Auswahl")
    title.font = TITLE_FONT
    row = 3
    for key, value in lines:
        label = sheet.cell(row=row, column=1)
        set_text(label, key)
        label.font = BOLD
        label.alignment = Alignment(vertical="top")
        _write_wide(sheet, row, value)
        row += 1

    row += 1
    set_text(sheet.cell(row=row, column=1), "Hinweise")
    sheet.cell(row=row, column=1).font = TITLE_FONT
    for number, note in enumerate(notes, start=1):
        row += 1
        set_text(sheet.cell(row=row, column=1), f"{number}.")
        sheet.cell(row=row, column=1).alignment = Alignment(horizontal="right", vertical="top")
        _write_wide(sheet, row, note)

    row += 2
    set_text(sheet.cell(row=row, column=1), "KPIs in diesem Export")
    sheet.cell(row=row, column=1).font = TITLE_FONT
    row += 1
    for col, header in enumerate(("KPI", "Bezeichnung", "Einheit", "Über die Zeit"), start=1):
        set_text(sheet.cell(row=row, column=col), header)
        sheet.cell(row=row, column=col).font = BOLD
    for kpi in kpis:
        row += 1
        definition = registry.get(kpi)
        cells = (
            (kpi, "", "", "")
            if definition is None
            else (
                kpi,
                definition.label,
                _UNIT_TEXT[Unit(definition.unit)],
                f"Formel: {definition.formula}"
                if definition.is_derived
                else TIME_AGGREGATION_TEXT[TimeAggregation(definition.time_aggregation)],
            )
        )
        for col, text in enumerate(cells, start=1):
            set_text(sheet.cell(row=row, column=col), text)
    sheet.page_setup.fitToWidth = 1
    sheet.page_setup.fitToHeight = 0
    sheet.sheet_properties.pageSetUpPr.fitToPage = True


#: Column widths of the "Auswahl" sheet: labels, then values and notes spread over B to D.
_SELECTION_WIDTHS: dict[str, float] = {"A": 26, "B": 34, "C": 12, "D": 40}
_WIDE_CHARACTERS = 90
_LINE_HEIGHT = 15


def _write_wide(sheet: Worksheet, row: int, value: object) -> None:
    """A value or note across columns B to D, wrapped, with a row tall enough for its lines."""
    cell = sheet.cell(row=row, column=2)
    _write_value(cell, value)
    cell.alignment = Alignment(horizontal="left", vertical="top", wrap_text=True)
    sheet.merge_cells(start_row=row, start_column=2, end_row=row, end_column=4)
    lines = -(-len(str(value)) // _WIDE_CHARACTERS)
    if lines > 1:
        sheet.row_dimensions[row].height = lines * _LINE_HEIGHT


def _text(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M %Z").strip()
    return str(value)


def _listed(value: object, registry: Registry) -> str:
    if value is None:
        return "alle"
    if isinstance(value, str):
        return value
    items = [str(item) for item in value]  # type: ignore[attr-defined]
    return ", ".join(items) if items else "alle"


def _listed_kpis(value: object, registry: Registry) -> str:
    if value is None or isinstance(value, str):
        return _listed(value, registry)
    items = list(value)  # type: ignore[call-overload]
    if not items:
        return "alle"
    return ", ".join(
        f"{registry[kpi].label} ({kpi})" if kpi in registry else str(kpi) for kpi in items
    )


def _listed_levels(value: object, registry: Registry) -> str:
    if value is None or isinstance(value, str):
        return level_label(value) if isinstance(value, str) else "alle"
    items = [level_label(str(item)) for item in value]  # type: ignore[attr-defined]
    return ", ".join(items) if items else "alle"


def _yes_no(value: object, registry: Registry) -> str:
    return YES if value else NO


def _as_text(value: object, registry: Registry) -> str:
    return _text(value)


_SELECTION_FIELDS: dict[str, tuple[str, Callable[[object, Registry], object]]] = {
    AS_OF: ("Stichtag", _as_text),
    "months": ("Monate", _as_text),
    WINDOW: ("Fenster", _as_text),
    "kpis": ("KPIs", _listed_kpis),
    "entities": ("Entitäten", _listed),
    "levels": ("Ebenen", _listed_levels),
    "per_account": ("Ø pro aktives Konto", _yes_no),
}
_SELECTION_DEFAULTS: dict[str, str] = {
    "kpis": "alle",
    "entities": "alle",
    "per_account": NO,
}


def _save(workbook: Workbook, target: Target) -> None:
    if isinstance(target, str | Path):
        workbook.save(Path(target))
    else:
        workbook.save(target)
