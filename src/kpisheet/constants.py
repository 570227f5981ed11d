"""The words of the domain, defined once: units, aggregation rules, windows, levels, columns."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AS_OF",
    "CHANGE",
    "CHANGE_PCT",
    "COMPLETE",
    "COVERED",
    "ENTITY",
    "KPI",
    "LEVEL",
    "MONTH",
    "MONTHS",
    "MONTH_TEXT_FORMAT",
    "OBSERVATION_COLUMNS",
    "PREVIOUS_COMPLETE",
    "PREVIOUS_MONTHS",
    "PREVIOUS_VALUE",
    "PREVIOUS_YEAR_OFFSET",
    "PRODUCT_LEVEL",
    "RESULT_COLUMNS",
    "TOTAL_LEVEL",
    "VALUE",
    "WINDOW",
    "EntityAggregation",
    "TimeAggregation",
    "Unit",
    "Window",
]


class Unit(StrEnum):
    """How a KPI's numbers are formatted."""

    COUNT = "count"
    CURRENCY = "currency"
    PERCENT = "percent"
    RATIO = "ratio"


class TimeAggregation(StrEnum):
    """How the monthly values of a window combine into one value."""

    SUM = "sum"
    LAST = "last"
    FIRST = "first"
    MEAN = "mean"
    MIN = "min"
    MAX = "max"


class EntityAggregation(StrEnum):
    """Whether a KPI has values at group levels (summed over the leaves) or only at leaves."""

    SUM = "sum"
    NONE = "none"


class Window(StrEnum):
    """The time windows a query can ask for; all end with the as-of month."""

    M1 = "1M"
    M3 = "3M"
    M6 = "6M"
    M12 = "12M"
    YTD = "YTD"

    @property
    def length(self) -> int | None:
        """Number of months for trailing windows, ``None`` for year-to-date."""
        return None if self is Window.YTD else int(self.value[:-1])


#: Level name of the leaves of the entity hierarchy.
PRODUCT_LEVEL = "product"
#: Level name of the grand total.
TOTAL_LEVEL = "total"

#: Months between a window and its previous-year comparison window.
PREVIOUS_YEAR_OFFSET = 12

# Columns of the canonical observations (docs/semantics.md, "Observations").
MONTH = "month"
KPI = "kpi"
ENTITY = "entity"
VALUE = "value"
OBSERVATION_COLUMNS: tuple[str, ...] = (MONTH, KPI, ENTITY, VALUE)

# Columns of a query result (docs/semantics.md, "The result table"), in order.
AS_OF = "as_of"
WINDOW = "window"
LEVEL = "level"
PREVIOUS_VALUE = "previous_value"
CHANGE = "change"
CHANGE_PCT = "change_pct"
MONTHS = "months"
COMPLETE = "complete"
PREVIOUS_MONTHS = "previous_months"
PREVIOUS_COMPLETE = "previous_complete"
RESULT_COLUMNS: tuple[str, ...] = (
    AS_OF,
    WINDOW,
    LEVEL,
    ENTITY,
    KPI,
    VALUE,
    PREVIOUS_VALUE,
    CHANGE,
    CHANGE_PCT,
    MONTHS,
    COMPLETE,
    PREVIOUS_MONTHS,
    PREVIOUS_COMPLETE,
)
#: Column of a monthly series: whether every expected member reported that month.
COVERED = "covered"

#: Format of a month as text, e.g. ``2021-06``.
MONTH_TEXT_FORMAT = "%Y-%m"
