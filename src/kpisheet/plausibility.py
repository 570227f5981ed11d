"""Plausibility checks of a new release: data that is valid row by row but cannot be right.

Declared in the ``checks:`` section of the ingest configuration, with defaults that suit a
monthly refresh (docs/data-engineers.md, "Plausibility checks"):

- months after the current month are refused (``2999-12`` is a typing error, not a forecast);
- months more than ``months_after_previous`` (default 1) after the previous release's newest
  month are refused (a year typed wrong, or a month skipped);
- a source whose value column holds no value at all is refused;
- *late data*: products that reported a KPI for the month before the newest month but not for
  the newest month, are a warning;
- *jumps*: a month-on-month change of a KPI beyond the threshold the configuration sets for it
  is a warning (checked for the months the release adds).

Errors stop the ingest; warnings are recorded with the release (``kpisheet releases show``),
and ``kpisheet ingest --strict`` makes them errors. Every message names the month, the KPI, the
product and the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from kpisheet.constants import ENTITY, KPI, MONTH, VALUE
from kpisheet.months import month_text, parse_month

#: Rule names, as recorded with a release's warnings and used in the configuration.
FUTURE_MONTHS = "future_months"
MONTHS_AFTER_PREVIOUS = "months_after_previous"
EMPTY_VALUES = "empty_values"
LATE_DATA = "late_data"
JUMPS = "jumps"
#: Key of ``jumps:`` that sets the threshold of every KPI not named.
DEFAULT_KEY = "default"
#: How many messages of one rule a report shows before it says "and N more".
SHOWN_PER_RULE = 20


class Checks(BaseModel):
    """The ``checks:`` section of the ingest configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    future_months: Literal["error", "off"] = "error"
    months_after_previous: int | None = Field(default=1, ge=0)
    empty_values: Literal["error", "off"] = "error"
    late_data: Literal["warning", "off"] = "warning"
    #: Month-on-month change beyond which a KPI's value is a warning, as a fraction (0.5 = ±50 %),
    #: by KPI id; ``default`` for every KPI not named. No threshold: no check.
    jumps: dict[str, float] = {}

    def jump_threshold(self, kpi: str) -> float | None:
        """The jump threshold of a KPI, or ``None`` when its jumps are not checked."""
        return self.jumps.get(kpi, self.jumps.get(DEFAULT_KEY))


@dataclass(frozen=True)
class Finding:
    """One implausible thing: the rule, and a message naming month, KPI, product and value."""

    rule: str
    message: str


def number(value: float) -> str:
    """A value as messages show it: ``1,234.5``, or ``missing``."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "missing"
    return f"{value:,.10g}"


def _example(rows: pd.DataFrame) -> str:
    first = rows.iloc[0]
    return f"KPI '{first[KPI]}', entity '{first[ENTITY]}', value {number(first[VALUE])}"


def _rows(count: int) -> str:
    return f"{count:,} row" if count == 1 else f"{count:,} rows"


def empty_value_column(values: pd.Series, missing: pd.Series, column: str) -> Finding | None:
    """An error when a source's value column holds no value at all (``missing`` marks empties)."""
    if len(values) and bool(missing.all()):
        return Finding(
            EMPTY_VALUES,
            f"the value column '{column}' is empty in all {_rows(len(values))}; "
            "refused (checks: empty_values)",
        )
    return None


def month_errors(
    observations: pd.DataFrame,
    checks: Checks,
    *,
    today: date,
    previous_newest: pd.Period | None,
    previous_id: int | None,
) -> list[Finding]:
    """Months after the current month, or too far after the previous release's newest month."""
    findings: list[Finding] = []
    months = observations[MONTH]
    current = parse_month(today)
    future = pd.Series(False, index=observations.index)
    if checks.future_months == "error":
        future = months > current
        if future.any():
            findings.append(
                Finding(
                    FUTURE_MONTHS,
                    f"{_months(observations[future])} after the current month "
                    f"{month_text(current)}; refused (checks: future_months)",
                )
            )
    if checks.months_after_previous is not None and previous_newest is not None:
        ahead = (months > previous_newest + checks.months_after_previous) & ~future
        if ahead.any():
            allowed = checks.months_after_previous
            findings.append(
                Finding(
                    MONTHS_AFTER_PREVIOUS,
                    f"{_months(observations[ahead])} more than {allowed} month"
                    f"{'s' if allowed != 1 else ''} after {month_text(previous_newest)}, the newest "
                    f"month of release {previous_id}; refused (checks: months_after_previous)",
                )
            )
    return findings


def _months(rows: pd.DataFrame) -> str:
    """``month 2999-12 is`` or ``months 2025-08 to 2026-10 (15 months) are``, with the row count
    and the first row (month, KPI, entity, value)."""
    distinct = sorted(pd.unique(rows[MONTH]))
    first = rows.sort_values([MONTH, KPI, ENTITY]).iloc[[0]]
    example = f"first: month {month_text(first[MONTH].iloc[0])}, {_example(first)}"
    if len(distinct) == 1:
        return f"month {month_text(distinct[0])} ({_rows(len(rows))}, {example}) is"
    return (
        f"months {month_text(distinct[0])} to {month_text(distinct[-1])} ({len(distinct)} months, "
        f"{_rows(len(rows))}, {example}) are"
    )


def warnings(
    observations: pd.DataFrame, checks: Checks, *, previous_newest: pd.Period | None
) -> list[Finding]:
    """Late data and jumps of canonical observations, in this order."""
    if observations.empty:
        return []
    return _late_data(observations, checks) + _jumps(observations, checks, previous_newest)


def _late_data(observations: pd.DataFrame, checks: Checks) -> list[Finding]:
    """Products with a value for the month before the newest month but none for the newest."""
    if checks.late_data == "off":
        return []
    newest = observations[MONTH].max()
    before = newest - 1
    has_value = observations[VALUE].notna()
    keys = [KPI, ENTITY]
    last = observations[has_value & (observations[MONTH] == newest)][keys]
    earlier = observations[has_value & (observations[MONTH] == before)]
    merged = earlier.merge(last.assign(reported=True), on=keys, how="left")
    late = merged[merged["reported"].isna()].sort_values(keys)
    return [
        Finding(
            LATE_DATA,
            f"late data: entity '{row[ENTITY]}' has no value of KPI '{row[KPI]}' for "
            f"{month_text(newest)}, the newest month (value {number(row[VALUE])} for {month_text(before)})",
        )
        for row in late.to_dict(orient="records")
    ]


def _jumps(
    observations: pd.DataFrame, checks: Checks, previous_newest: pd.Period | None
) -> list[Finding]:
    """Month-on-month changes beyond a KPI's threshold, in the months the release adds."""
    kpis = observations[KPI]
    # a categorical column's categories, not a text per row
    distinct = kpis.cat.categories if isinstance(kpis.dtype, pd.CategoricalDtype) else kpis.unique()
    thresholds = {str(kpi): checks.jump_threshold(str(kpi)) for kpi in distinct}
    thresholds = {kpi: t for kpi, t in thresholds.items() if t is not None}
    if not thresholds:
        return []
    newest = observations[MONTH].max()
    first_checked = previous_newest + 1 if previous_newest is not None else newest
    rows = observations[kpis.isin(list(thresholds))]
    current = rows[rows[MONTH] >= first_checked]
    earlier = rows.assign(**{MONTH: rows[MONTH] + 1}).rename(columns={VALUE: "before"})
    pairs = current.merge(earlier, on=[MONTH, KPI, ENTITY], how="inner")
    base = pairs["before"].abs()
    change = (pairs[VALUE] - pairs["before"]) / base.where(base > 0)
    limit = pairs[KPI].astype(str).map(thresholds).astype(float)
    pairs = pairs.assign(change=change, limit=limit)
    jumped = pairs[change.abs() > limit].sort_values([MONTH, KPI, ENTITY])
    return [
        Finding(
            JUMPS,
            f"jump: KPI '{row[KPI]}' of entity '{row[ENTITY]}' went from {number(row['before'])} "
            f"in {month_text(row[MONTH] - 1)} to {number(row[VALUE])} in {month_text(row[MONTH])} "
            f"({row['change']:+.0%}), beyond ±{row['limit']:.0%} (checks: jumps)",
        )
        for row in jumped.to_dict(orient="records")
    ]


def shown(findings: list[Finding]) -> list[str]:
    """Messages to print: up to :data:`SHOWN_PER_RULE` per rule, then how many more."""
    lines: list[str] = []
    counts: dict[str, int] = {}
    for finding in findings:
        counts[finding.rule] = counts.get(finding.rule, 0) + 1
        if counts[finding.rule] <= SHOWN_PER_RULE:
            lines.append(finding.message)
    for rule, count in counts.items():
        if count > SHOWN_PER_RULE:
            lines.append(f"... and {count - SHOWN_PER_RULE} more of {rule}")
    return lines
