"""The app's table: a query result's rows as displayed (grouped, every number formatted, the
reason a change is not shown), the highlighted changes, and the cells' styles.

Functions of a result and the registry only; :class:`~kpisheet_ui.state.SheetState` decides
which rows and caches what they build. Headers and number formats come from
:mod:`kpisheet.presentation`, looked up when a table is built.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import kpisheet
from kpisheet import presentation
from kpisheet.constants import (
    CHANGE,
    CHANGE_PCT,
    COMPLETE,
    ENTITY,
    KPI,
    LEVEL,
    MONTHS,
    PREVIOUS_COMPLETE,
    PREVIOUS_VALUE,
    VALUE,
)
from kpisheet.hierarchy import Hierarchy
from kpisheet.presentation import formats, words
from kpisheet.thresholds import flags, has_threshold

#: Rows whose change against the previous year (in %) is largest are highlighted: at most this
#: many, and one per :data:`HIGHLIGHT_PER_ROWS` rows shown.
HIGHLIGHT_COUNT = 5
HIGHLIGHT_PER_ROWS = 5
#: Most distinct reasons the notes list.
LISTED_REASONS = 5

# How a display is grouped.
BY_ENTITY = "entity"
BY_KPI = "kpi"

#: The group column (an entity with its level, or a KPI); the others are result columns.
GROUP = "group"


def header(column: str) -> str:
    """The header of a column of the table (``GROUP`` or a result column), as now worded."""
    return words.GROUP_WORD if column == GROUP else words.column_word(column)


# The headers as worded when the app starts, for the views' layout (widths, alignment).
GROUP_COLUMN = header(GROUP)
ENTITY_COLUMN = header(ENTITY)
LEVEL_COLUMN = header(LEVEL)
KPI_COLUMN = header(KPI)
VALUE_COLUMN = header(VALUE)
PREVIOUS_COLUMN = header(PREVIOUS_VALUE)
CHANGE_COLUMN = header(CHANGE)
CHANGE_PCT_COLUMN = header(CHANGE_PCT)
MONTHS_COLUMN = header(MONTHS)
#: Why a change is not shown ("" when it is); hidden in the table, shown on hover and in the notes.
NOTE_COLUMN = header(presentation.NOTE)
NUMBER_COLUMNS = (VALUE_COLUMN, PREVIOUS_COLUMN, CHANGE_COLUMN, CHANGE_PCT_COLUMN, MONTHS_COLUMN)
INCOMPLETE_MARK = words.INCOMPLETE_MARK

# Cell styles of the table.
INCOMPLETE_STYLE = "background-color: #FFE699"
RISE_STYLE = "background-color: #C6EFCE; color: #006100; font-weight: bold"
FALL_STYLE = "background-color: #FFC7CE; color: #9C0006; font-weight: bold"


def build_table(
    result: pd.DataFrame,
    sheet: kpisheet.KPISheet,
    *,
    display: str,
    per_account: bool,
    hierarchy: Hierarchy | None = None,
) -> pd.DataFrame:
    """Some rows of a result as displayed: every cell formatted, a column at a time.

    Grouped by entity, the group column is the entity with its level and the KPI follows; by
    KPI, the group is the KPI's label and entity and level follow. The reason a change is not
    shown is in the note column, naming the members that did not report.
    """
    registry = sheet.registry
    kpi_codes, kpis = pd.factorize(result[KPI])
    definitions = [registry[kpi] for kpi in kpis]
    units = np.array([str(d.unit) for d in definitions], dtype=str)[kpi_codes]
    labels = pd.Index([d.label for d in definitions], dtype="str").take(kpi_codes)
    level_codes, level_names = pd.factorize(result[LEVEL])
    levels = pd.Index([words.level_label(name, hierarchy) for name in level_names], dtype="str")
    levels = levels.take(level_codes)
    months = result[MONTHS].astype("Int64").astype(str)
    incomplete = ~result[COMPLETE].fillna(False).astype(bool)
    hidden = ~presentation.comparable(result)
    changes = formats.format_changes(result[CHANGE], units, per_account=per_account)
    changes_pct = formats.format_changes_pct(result[CHANGE_PCT])
    reasons = presentation.incomplete_reasons(
        result, registry, sheet=sheet, per_account=per_account
    )
    values = formats.format_values(result[VALUE], units, per_account=per_account)
    previous = formats.format_values(result[PREVIOUS_VALUE], units, per_account=per_account)
    shown = {
        header(VALUE): values,
        header(PREVIOUS_VALUE): previous,
        header(CHANGE): changes.where(~hidden, words.NOT_COMPARABLE),
        header(CHANGE_PCT): changes_pct.where(~hidden, words.NOT_COMPARABLE),
        header(MONTHS): months.where(~incomplete, months + f" {words.INCOMPLETE_MARK}"),
        header(presentation.NOTE): pd.Series(
            reasons.to_numpy(dtype=str), index=result.index, dtype="str"
        ),
    }
    entities = result[ENTITY].astype("str")
    if display == BY_KPI:
        leading = {header(GROUP): labels, header(ENTITY): entities, header(LEVEL): levels}
    else:
        leading = {header(GROUP): entities + " (" + levels + ")", header(KPI): labels}
    columns = {name: column.array for name, column in {**leading, **shown}.items()}
    return pd.DataFrame(columns, index=result.index)


def highlights(
    result: pd.DataFrame, registry: kpisheet.Registry, *, per_account: bool
) -> pd.Series:
    """Per row: ``1`` for a highlighted rise, ``-1`` for a highlighted fall, else 0.

    Rows of a KPI with ``highlight`` thresholds are highlighted when their change passes them;
    among the others, the largest relative changes (:func:`largest`).
    """
    if result.empty:
        return pd.Series(dtype="int64")
    with_threshold = has_threshold(registry, result[KPI])
    over = flags(result, registry, per_account=per_account)
    marks = largest(result[~with_threshold])
    marks = marks.reindex(result.index, fill_value=0)
    signs = np.sign(result[CHANGE].to_numpy(dtype=float)[over]).astype("int64")
    marks.iloc[np.flatnonzero(over)] = signs
    return marks


def largest(result: pd.DataFrame) -> pd.Series:
    """The largest relative changes of ``result`` (the rule for KPIs without thresholds): one
    per :data:`HIGHLIGHT_PER_ROWS` rows, at most :data:`HIGHLIGHT_COUNT`, complete ones only."""
    if result.empty:
        return pd.Series(dtype="int64")
    # a change whose windows are not both complete is never among the largest
    change = result[CHANGE_PCT].astype(float).where(presentation.comparable(result))
    magnitude = change.abs().where(change.ne(0))
    count = min(HIGHLIGHT_COUNT, -(-len(result) // HIGHLIGHT_PER_ROWS))
    chosen = magnitude.dropna().nlargest(count, keep="first").index
    marks = pd.Series(0, index=result.index, dtype="int64")
    marks[chosen] = np.sign(change[chosen]).astype("int64")
    return marks


def styles(result: pd.DataFrame, table: pd.DataFrame, marks: pd.Series) -> pd.DataFrame:
    """CSS of the styled cells of ``table`` (the rows of ``result``): incomplete windows and the
    highlighted changes; only rows with a style, ``""`` for a cell without."""
    value, previous, months = header(VALUE), header(PREVIOUS_VALUE), header(MONTHS)
    change, change_pct = header(CHANGE), header(CHANGE_PCT)
    columns = [value, previous, months, change, change_pct]
    if table.empty:
        return pd.DataFrame(columns=columns, dtype="str")
    incomplete = ~result[COMPLETE].fillna(False).astype(bool).to_numpy()
    previous_incomplete = ~result[PREVIOUS_COMPLETE].fillna(False).astype(bool).to_numpy()
    rises, falls = marks.eq(1).to_numpy(), marks.eq(-1).to_numpy()
    rows = np.flatnonzero(incomplete | previous_incomplete | rises | falls)
    empty = np.full(len(rows), "", dtype=object)
    incomplete_css = np.where(incomplete[rows], INCOMPLETE_STYLE, empty)
    previous_css = np.where(previous_incomplete[rows], INCOMPLETE_STYLE, empty)
    change_css = np.where(rises[rows], RISE_STYLE, np.where(falls[rows], FALL_STYLE, empty))
    return pd.DataFrame(
        {
            value: incomplete_css,
            previous: previous_css,
            months: incomplete_css,
            change: change_css,
            change_pct: change_css,
        },
        index=table.index[rows],
        dtype="str",
    )


def comparison_note(table: pd.DataFrame) -> str:
    """Why changes in ``table`` read "–": the distinct reasons, most frequent first."""
    note = header(presentation.NOTE)
    reasons = table.loc[table[note] != "", note]
    counts = reasons.value_counts(sort=True)
    return words.comparison_note(counts.to_dict(), listed=LISTED_REASONS)
