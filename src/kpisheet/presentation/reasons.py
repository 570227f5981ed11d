"""Why a row's comparison with last year is not shown, in German: the reason for each window
that is not complete, naming the members that did not report where the sheet can tell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kpisheet import engine
from kpisheet.constants import (
    AS_OF,
    COMPLETE,
    ENTITY,
    KPI,
    MONTHS,
    PREVIOUS_COMPLETE,
    PREVIOUS_MONTHS,
    WINDOW,
    Window,
)
from kpisheet.months import window_bounds
from kpisheet.presentation.words import (
    CURRENT_WINDOW_WORD,
    PREVIOUS_WINDOW_WORD,
    members_text,
    month_long,
)
from kpisheet.registry import Registry

if TYPE_CHECKING:
    from kpisheet.sheet import KPISheet

__all__ = [
    "LOOKUP_LIMIT",
    "comparable",
    "incomplete_reasons",
]

#: Most rows of one window whose missing members are looked up (one batch lookup in the engine,
#: :func:`kpisheet.engine.first_gaps`, about 40 bytes per row, source KPI and month of the
#: window at once); beyond it every row gets the general reason, which needs no lookup. A guard
#: on memory only: a full 12-month result of every level at benchmark size M has some 3,000.
LOOKUP_LIMIT = 100_000


def comparable(result: pd.DataFrame) -> np.ndarray:
    """Rows whose change may be shown: both windows complete."""
    complete = result[COMPLETE].to_numpy(dtype=bool)
    both: np.ndarray = complete & result[PREVIOUS_COMPLETE].to_numpy(dtype=bool)
    return both


def incomplete_reasons(
    result: pd.DataFrame,
    registry: Registry,
    *,
    sheet: KPISheet | None = None,
    per_account: bool = False,
    limit: int = LOOKUP_LIMIT,
) -> pd.Series:
    """Why each row's windows are not complete, in German; ``""`` for a complete row.

    The current window's reason comes first ("Fenster: …"), then the previous year's
    ("Vorjahr: …"), e.g. ``Vorjahr: 3 von 12 Monaten`` or ``Vorjahr: Mitglied fehlt im Mai 2019:
    TUI VISA Card Gold``: the first month that decides the row's ``complete`` flag and is not
    covered, with the expected members missing then, as :meth:`KPISheet.coverage` explains one
    row (here looked up for all rows at once). Naming the members needs the ``sheet``; without
    it, or when more than ``limit`` rows of a window need a lookup, the reason says only that
    members did not report.
    """
    current = _window_reasons(
        result, registry, CURRENT_WINDOW_WORD, MONTHS, COMPLETE, 0, sheet, per_account, limit
    )
    previous = _window_reasons(
        result, registry, PREVIOUS_WINDOW_WORD, PREVIOUS_MONTHS, PREVIOUS_COMPLETE, 12, sheet,
        per_account, limit,
    )  # fmt: skip
    both = (current != "") & (previous != "")
    joined = np.where(both, current + "; " + previous, current + previous)
    return pd.Series(joined, index=result.index, dtype=object)


def _window_lengths(result: pd.DataFrame) -> np.ndarray:
    """Months of each row's window (a year-to-date window's length is its as-of month)."""
    as_of_codes, as_of = pd.factorize(result[AS_OF].astype(str))
    window_codes, windows = pd.factorize(result[WINDOW].astype(str))
    months = np.array([int(month[5:7]) for month in as_of], dtype=np.int64)[as_of_codes]
    lengths = np.array([Window(w).length or 0 for w in windows], dtype=np.int64)[window_codes]
    window_lengths: np.ndarray = np.where(lengths > 0, lengths, months)
    return window_lengths


def _window_reasons(
    result: pd.DataFrame,
    registry: Registry,
    word: str,
    months_column: str,
    complete_column: str,
    offset: int,
    sheet: KPISheet | None,
    per_account: bool,
    limit: int,
) -> np.ndarray:
    """The reasons of one window (current: ``offset`` 0; previous: 12), ``""`` where complete."""
    reasons = np.full(len(result), "", dtype=object)
    incomplete = ~result[complete_column].to_numpy(dtype=bool)
    if not incomplete.any():
        return reasons
    months = result[months_column].to_numpy(dtype=np.int64)
    lengths = _window_lengths(result)
    kpis = result[KPI].astype(str)
    flows = kpis.map({k: not registry.is_stock(k) for k in kpis.unique()}).to_numpy(dtype=bool)
    empty = incomplete & (months == 0)
    reasons[empty] = f"{word}: keine Werte"
    short = incomplete & ~empty & flows & (months < lengths)
    reasons[short] = [
        f"{word}: {m} von {n} Monaten" for m, n in zip(months[short], lengths[short], strict=True)
    ]
    rest = np.flatnonzero(incomplete & ~empty & ~short)
    general = f"{word}: nicht alle erwarteten Produkte haben gemeldet"
    if not len(rest):
        return reasons
    if sheet is None or len(rest) > limit:
        reasons[rest] = general
        return reasons
    named = _named_gaps(result.iloc[rest], sheet, offset, per_account)
    reasons[rest] = [general if text is None else f"{word}: {text}" for text in named]
    return reasons


def _named_gaps(
    rows: pd.DataFrame, sheet: KPISheet, offset: int, per_account: bool
) -> list[str | None]:
    """For each row's window ``offset`` months before its as-of month, the first deciding month
    that is not covered and who did not report then, as the reason's words after the window's
    (``None`` where every deciding month is covered): one batch lookup in the engine."""
    # The engine's cube; the batch lookup is the vectorised form of ``sheet.coverage``.
    cube = sheet._cube
    keys = rows[AS_OF].astype(str) + " " + rows[WINDOW].astype(str)
    codes, distinct = pd.factorize(keys)
    bounds = np.array(
        [
            [
                cube.month_position(month)
                for month in window_bounds(pd.Period(as_of, freq="M") - offset, Window(window))
            ]
            for as_of, window in (key.split(" ") for key in distinct)
        ],
        dtype=np.int64,
    ).reshape(-1, 2)
    gaps = engine.first_gaps(
        cube,
        rows[KPI].astype(str).tolist(),
        rows[ENTITY].astype(str).tolist(),
        bounds[codes, 0],
        bounds[codes, 1],
        per_account=per_account,
    )
    leaves = np.asarray(cube.hierarchy.leaves, dtype=object)
    cuts = np.searchsorted(gaps.missing_rows, np.arange(1, len(rows)))
    missing = np.split(leaves[gaps.missing_leaves], cuts)
    positions, at = np.unique(gaps.month, return_inverse=True)
    texts = np.array([month_long(cube.first + int(p)) for p in positions], dtype=object)
    return [
        _member_reason(month, list(names)) if found else None
        for found, month, names in zip(gaps.found, texts[at], missing, strict=True)
    ]


def _member_reason(month: str, missing: list[str]) -> str:
    """The first uncovered month: who did not report, or that the entity had no value."""
    if not missing:
        return f"kein Wert im {month}"
    verb = "Mitglied fehlt" if len(missing) == 1 else "Mitglieder fehlen"
    return f"{verb} im {month}: {members_text(missing)}"
