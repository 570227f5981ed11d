"""XLSX exports people can hand on: a query result or a chart's monthly series, formatted and safe.

Numbers stay numbers (formatted by the KPI's unit), the header is frozen and filterable, and a
second sheet "Auswahl" records the selection, the data release and how to read the numbers.
Text that a spreadsheet could take for a formula is stored as plain text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

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
    KPI,
    LEVEL,
    MONTH,
    MONTHS,
    PREVIOUS_COMPLETE,
    PREVIOUS_MONTHS,
    PREVIOUS_VALUE,
    RESULT_COLUMNS,
    VALUE,
    WINDOW,
    Unit,
)
from kpisheet.errors import QueryError
from kpisheet.explain import CONTRIBUTION, MIX_EFFECT, RATE_EFFECT, Explanation
from kpisheet.presentation import formats, words
from kpisheet.presentation.reasons import comparable, incomplete_reasons
from kpisheet.presentation.words import LABEL, NOTE, SHARE
from kpisheet.registry import Registry
from kpisheet.series import SERIES_COLUMNS, month_on_month

if TYPE_CHECKING:
    from kpisheet.hierarchy import Hierarchy


__all__ = [
    "BOLD",
    "FORMULA_PREFIXES",
    "HEADER_FILL",
    "HEADER_FONT",
    "INCOMPLETE_FILL",
    "MAX_WIDTH",
    "MIN_WIDTH",
    "TEXT_PREFIX",
    "TITLE_FONT",
    "ReleaseLike",
    "Target",
    "neutralise_formulas",
    "set_text",
    "write_explanation_xlsx",
    "write_result_xlsx",
    "write_series_xlsx",
]

#: Text starting with one of these could run as a formula in a spreadsheet.
FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")

HEADER_FONT = Font(bold=True, color="FFFFFF")
HEADER_FILL = PatternFill("solid", fgColor="1F4E79")
#: Fill of the cells of a window with months missing.
INCOMPLETE_FILL = PatternFill("solid", fgColor="FFE699")
TITLE_FONT = Font(bold=True, size=12)
BOLD = Font(bold=True)
MIN_WIDTH, MAX_WIDTH = 8, 60

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
    hierarchy: Hierarchy | None = None,
) -> None:
    """Write a query result as a formatted workbook to a path or binary buffer.

    ``selection`` records what was asked: keys ``as_of``, ``window``, ``kpis``, ``entities``,
    ``levels``, ``per_account`` (as for ``sheet.query``); missing ``as_of`` and ``window`` are
    read from the result. Further keys are recorded under their own name.

    A change is written only where both windows are complete; elsewhere the change cells read
    "–" and the column "Hinweis" gives the reason: ``reasons`` (one text per row, e.g. from
    :func:`kpisheet.presentation.incomplete_reasons` with the sheet, naming missing members),
    or by default the reasons that the result's own flags and month counts give.

    Levels are named by the ``hierarchy``'s labels (:func:`kpisheet.presentation.level_label`).

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
    table[LEVEL] = _level_labels(table[LEVEL], hierarchy)
    incomplete = ~table[COMPLETE].fillna(False).astype(bool)
    previous_incomplete = ~table[PREVIOUS_COMPLETE].fillna(False).astype(bool)
    table[COMPLETE] = incomplete.map({True: words.NO, False: words.YES})
    table[PREVIOUS_COMPLETE] = previous_incomplete.map({True: words.NO, False: words.YES})
    if reasons is None:
        reasons = incomplete_reasons(result, registry, per_account=per_account)
    table[NOTE] = np.asarray(reasons, dtype=object)
    units = table[KPI].map(lambda kpi: _unit(kpi, registry))
    numeric = table  # widths are measured on the numbers, before changes become "–"
    hidden = ~comparable(result)
    if hidden.any():
        table = table.astype({CHANGE: object, CHANGE_PCT: object})
        table.loc[hidden, [CHANGE, CHANGE_PCT]] = words.NOT_COMPARABLE

    headers = words.result_headers()
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = words.RESULT_SHEET
    _write_table(sheet, table, headers)
    columns = list(headers)
    for column in (VALUE, PREVIOUS_VALUE):
        _format_column(
            sheet, columns.index(column), formats.excel_formats(units, per_account=per_account)
        )
    _format_column(
        sheet, columns.index(CHANGE), formats.excel_change_formats(units, per_account=per_account)
    )
    _format_column(sheet, columns.index(CHANGE_PCT), [formats.EXCEL_CHANGE_PCT] * len(table))
    for column in (MONTHS, PREVIOUS_MONTHS):
        _format_column(sheet, columns.index(column), [formats.EXCEL_INTEGER] * len(table))
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
    _fit_widths(sheet, numeric, headers, units, per_account)

    kpis = list(dict.fromkeys(table[KPI]))
    notes = words.result_notes(
        kpis, registry, window=selection.get(WINDOW), per_account=per_account
    )
    _write_selection_sheet(
        workbook, selection, kpis, registry, release, notes, rows=len(table), hierarchy=hierarchy
    )
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
        selection.setdefault(
            "months", words.MONTHS_SPAN.format(first=months.min(), last=months.max())
        )
    table[MONTH] = months.dt.to_timestamp().dt.date
    table.insert(table.columns.get_loc(KPI) + 1, LABEL, _labels(table[KPI], registry))
    headers = words.series_headers()
    table = table.loc[:, list(headers)]
    units = table[KPI].map(lambda kpi: _unit(kpi, registry))

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = words.SERIES_SHEET
    _write_table(sheet, table, headers)
    columns = list(headers)
    _format_column(sheet, columns.index(MONTH), [formats.EXCEL_MONTH] * len(table))
    _format_column(
        sheet, columns.index(VALUE), formats.excel_formats(units, per_account=per_account)
    )
    _format_column(
        sheet, columns.index(CHANGE), formats.excel_change_formats(units, per_account=per_account)
    )
    _format_column(sheet, columns.index(CHANGE_PCT), [formats.EXCEL_CHANGE_PCT] * len(table))
    for column in (VALUE, CHANGE, CHANGE_PCT):
        _align(sheet, columns.index(column), "right", len(table), header_only=True)
    _fit_widths(sheet, table, headers, units, per_account)

    kpis = list(dict.fromkeys(table[KPI]))
    notes = words.series_notes(per_account=per_account)
    _write_selection_sheet(workbook, selection, kpis, registry, release, notes, rows=len(table))
    _save(workbook, target)


def write_explanation_xlsx(
    explanation: Explanation,
    target: Target,
    *,
    registry: Registry,
    release: ReleaseLike | None = None,
    selection: Mapping[str, object] | None = None,
    hierarchy: Hierarchy | None = None,
) -> None:
    """Write an explanation ("Warum?") as a formatted workbook: one row per member, largest
    contribution first, with its share of the group's change; rate and mix effects for a ratio.

    The "Auswahl" sheet records the group, its values, whether the change is fully explained
    and how to read the numbers.
    """
    table = explanation.members.copy()
    table.insert(table.columns.get_loc(KPI) + 1, LABEL, _labels(table[KPI], registry))
    table[LEVEL] = _level_labels(table[LEVEL], hierarchy)
    table[SHARE] = explanation.shares()
    incomplete = ~table[COMPLETE].astype(bool)
    previous_incomplete = ~table[PREVIOUS_COMPLETE].astype(bool)
    table[COMPLETE] = incomplete.map({True: words.NO, False: words.YES})
    table[PREVIOUS_COMPLETE] = previous_incomplete.map({True: words.NO, False: words.YES})
    headers = words.explain_headers(ratio=explanation.is_ratio)
    table = table.loc[:, list(headers)]
    unit = _unit(explanation.kpi, registry)
    units = pd.Series([unit] * len(table), index=table.index, dtype=object)

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = words.EXPLAIN_SHEET
    _write_table(sheet, table, headers)
    columns = list(headers)
    point = formats.EXCEL_POINTS if unit is Unit.PERCENT else formats.excel_change_format(unit)
    points = [point] * len(table)
    for column in (VALUE, PREVIOUS_VALUE):
        _format_column(sheet, columns.index(column), formats.excel_formats(units))
    _format_column(sheet, columns.index(CHANGE), formats.excel_change_formats(units))
    for column in (CONTRIBUTION, RATE_EFFECT, MIX_EFFECT):
        if column in headers:
            _format_column(sheet, columns.index(column), points)
    _format_column(sheet, columns.index(SHARE), [formats.EXCEL_CHANGE_PCT] * len(table))
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

    members_word, value_word, previous_word, change_word, explained_word = (
        words.EXPLAIN_SELECTION_WORDS
    )
    recorded: dict[str, object] = {
        AS_OF: explanation.as_of,
        WINDOW: explanation.window,
        "kpis": [explanation.kpi],
        "entities": [explanation.entity],
        members_word: words.level_label(explanation.by, hierarchy),
        value_word: _number_text(explanation.value),
        previous_word: _number_text(explanation.previous_value),
        change_word: _number_text(explanation.change),
        explained_word: words.yes_no(explanation.fully_explained),
    }
    recorded.update({k: v for k, v in (selection or {}).items() if k not in recorded})
    notes = words.explanation_notes(explanation, registry)
    _write_selection_sheet(
        workbook,
        recorded,
        [explanation.kpi],
        registry,
        release,
        notes,
        rows=len(table),
        hierarchy=hierarchy,
    )
    _save(workbook, target)


def _number_text(value: float) -> str:
    """A number for the "Auswahl" sheet: rounded to two decimals, "–" when missing."""
    return formats.MISSING if not np.isfinite(value) else formats.swiss(value, 2)


def _require_columns(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise QueryError(
            f"cannot export {what}: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, frame.columns)) or 'none'}"
        )


def _labels(kpis: pd.Series, registry: Registry) -> pd.Series:
    return kpis.map(lambda kpi: words.kpi_label(kpi, registry))


def _level_labels(levels: pd.Series, hierarchy: Hierarchy | None) -> pd.Series:
    return levels.map(lambda level: words.level_label(level, hierarchy))


def _unit(kpi: str, registry: Registry) -> Unit:
    return Unit(registry[kpi].unit) if kpi in registry else Unit.RATIO


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
            Unit.CURRENCY: len(formats.CURRENCY) + 4,  # "CHF " and ".00"
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
    hierarchy: Hierarchy | None = None,
) -> None:
    """The "Auswahl" sheet: what was selected, which data, when, and how to read it."""
    sheet = workbook.create_sheet(words.SELECTION_SHEET)
    lines: list[tuple[str, object]] = []
    described = dict(selection)
    for key, render in _SELECTION_FIELDS.items():
        title = words.SELECTION_WORDS[key]
        if key in described:
            lines.append((title, render(described.pop(key), registry, hierarchy)))
        elif key in _SELECTION_DEFAULTS:
            lines.append((title, _SELECTION_DEFAULTS[key]()))
    lines += [(str(key), _text(value)) for key, value in described.items()]
    lines.append((words.ROWS_WORD, rows))
    if release is None:
        lines.append(words.NO_RELEASE_WORDS)
    else:
        release_word, newest_word, created_word = words.RELEASE_WORDS
        lines += [
            (release_word, _text(getattr(release, "id", None))),
            (newest_word, _text(getattr(release, "newest_month", None))),
            (created_word, _text(getattr(release, "created_at", None))),
        ]
    lines.append((words.EXPORTED_WORD, _text(dt.datetime.now().astimezone())))

    for letter, width in _SELECTION_WIDTHS.items():
        sheet.column_dimensions[letter].width = width
    title = sheet.cell(row=1, column=1)
    set_text(title, words.SELECTION_TITLE)
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
    set_text(sheet.cell(row=row, column=1), words.NOTES_TITLE)
    sheet.cell(row=row, column=1).font = TITLE_FONT
    for number, note in enumerate(notes, start=1):
        row += 1
        set_text(sheet.cell(row=row, column=1), f"{number}.")
        sheet.cell(row=row, column=1).alignment = Alignment(horizontal="right", vertical="top")
        _write_wide(sheet, row, note)

    row += 2
    set_text(sheet.cell(row=row, column=1), words.KPIS_TITLE)
    sheet.cell(row=row, column=1).font = TITLE_FONT
    row += 1
    for col, header in enumerate(words.KPI_TABLE_WORDS, start=1):
        set_text(sheet.cell(row=row, column=col), header)
        sheet.cell(row=row, column=col).font = BOLD
    for kpi in kpis:
        row += 1
        definition = registry.get(kpi)
        if definition is None:
            cells = (kpi, "", "", "")
        else:
            aggregation = definition.time_aggregation
            cells = (
                kpi,
                definition.label,
                words.unit_word(definition.unit),
                words.time_aggregation_word(aggregation)
                if aggregation is not None  # a source KPI; a derived one has a formula instead
                else f"{words.FORMULA_WORD}: {definition.formula}",
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
        return formats.MISSING
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M %Z").strip()
    return str(value)


def _listed(value: object, registry: Registry, hierarchy: Hierarchy | None) -> str:
    if value is None:
        return words.ALL_WORD
    if isinstance(value, str):
        return value
    items = [str(item) for item in value]  # type: ignore[attr-defined]
    return ", ".join(items) if items else words.ALL_WORD


def _listed_kpis(value: object, registry: Registry, hierarchy: Hierarchy | None) -> str:
    if value is None or isinstance(value, str):
        return _listed(value, registry, hierarchy)
    items = list(value)  # type: ignore[call-overload]
    if not items:
        return words.ALL_WORD
    return ", ".join(
        f"{registry[kpi].label} ({kpi})" if kpi in registry else str(kpi) for kpi in items
    )


def _listed_levels(value: object, registry: Registry, hierarchy: Hierarchy | None) -> str:
    if value is None:
        return words.ALL_WORD
    if isinstance(value, str):
        return words.level_label(value, hierarchy)
    items = [words.level_label(str(item), hierarchy) for item in value]  # type: ignore[attr-defined]
    return ", ".join(items) if items else words.ALL_WORD


def _yes_no(value: object, registry: Registry, hierarchy: Hierarchy | None) -> str:
    return words.yes_no(value)


def _as_text(value: object, registry: Registry, hierarchy: Hierarchy | None) -> str:
    return _text(value)


#: How each recorded selection key is written, in the order the sheet lists them (titles:
#: :data:`kpisheet.presentation.words.SELECTION_WORDS`).
_SELECTION_FIELDS: dict[str, Callable[[object, Registry, Hierarchy | None], object]] = {
    AS_OF: _as_text,
    "months": _as_text,
    WINDOW: _as_text,
    "kpis": _listed_kpis,
    "entities": _listed,
    "levels": _listed_levels,
    "per_account": _yes_no,
}
_SELECTION_DEFAULTS: dict[str, Callable[[], str]] = {
    "kpis": lambda: words.ALL_WORD,
    "entities": lambda: words.ALL_WORD,
    "per_account": lambda: words.NO,
}


def _save(workbook: Workbook, target: Target) -> None:
    if isinstance(target, str | Path):
        workbook.save(Path(target))
    else:
        workbook.save(target)
