"""The monthly series behind a chart (``sheet.series``): its columns and its change against the
month before, as the chart's hover and the "Verlauf" workbook show it."""

from __future__ import annotations

import pandas as pd

from kpisheet.constants import CHANGE, CHANGE_PCT, ENTITY, KPI, MONTH, VALUE

__all__ = ["PREVIOUS_MONTH_VALUE", "SERIES_COLUMNS", "month_on_month"]

#: Columns of a monthly series, as ``sheet.series`` returns it.
SERIES_COLUMNS: tuple[str, ...] = (MONTH, ENTITY, KPI, VALUE)
#: Column added by :func:`month_on_month`: the value of the calendar month before.
PREVIOUS_MONTH_VALUE = "previous_month_value"


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
