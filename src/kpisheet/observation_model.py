"""The declaration of a validated observation as a pandera model.

Kept apart from :mod:`kpisheet.observations`, which enforces every rule of it with vectorised
checks on integer codes, so that opening a sheet neither imports pandera nor pays its start-up;
:func:`kpisheet.observations.observation_schema` gives the schema of one sheet.
"""

from __future__ import annotations

import numpy as np
import pandera.pandas as pa
from pandera.typing import Series

from kpisheet.constants import ENTITY, KPI, MONTH, VALUE
from kpisheet.observations import MonthDtype


class ObservationModel(pa.DataFrameModel):
    """The canonical long format; KPI and entity sets are added per sheet by :func:`sheet_schema`."""

    # pandera takes a dtype instance as the column type; for a type checker it is a value
    month: Series[MonthDtype] = pa.Field(nullable=False)  # type: ignore[valid-type]
    kpi: Series[str] = pa.Field(nullable=False)
    entity: Series[str] = pa.Field(nullable=False)
    value: Series[float] = pa.Field(nullable=True)

    class Config:
        strict = True
        unique = [MONTH, KPI, ENTITY]  # noqa: RUF012 (pandera reads this list)

    @pa.check(VALUE, name="finite or missing")
    @classmethod
    def _finite(cls, value: Series[float]) -> Series[bool]:
        finite: Series[bool] = value.isna() | np.isfinite(value)
        return finite


def sheet_schema(kpis: list[str], leaves: list[str]) -> pa.DataFrameSchema:
    """:class:`ObservationModel` with a sheet's source KPIs and leaf entities."""
    return ObservationModel.to_schema().update_columns(
        {
            KPI: {"checks": [pa.Check.isin(kpis, name="known KPI")]},
            ENTITY: {"checks": [pa.Check.isin(leaves, name="known entity")]},
        }
    )
