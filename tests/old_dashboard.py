"""A small sample of the old Streamlit dashboard's data, in both of its formats, for the test
that runs every command of docs/migrating.md.

- The **warehouse extract**: ``period_value`` (YYYYMM), ``kpi_id``, ``kpi_name``, ``period_id``,
  ``product_name``, ``value``, ``cardprofile``; one row per month, product, KPI and period
  (``period_id`` 1 the month, 3 the year to date, in this warehouse's own numbering).
- The **preprocessed history files** ``data/history/kpis_YYYY-MM.csv``: ``calculation_date``
  (month-end dates), ``product_name``, ``kpi_name``, ``value``, ``level`` (0 total, 1 sector,
  2 mandant, 3 product); each file holds the 37 months up to its month, later files restating
  earlier months.
- The product table ``products.csv`` (what the old ``PRODUCT_LOOK_UP`` dict held, with the
  card profile from ``v_produkt.kartenprofil``), and ``warehouse.db``, a SQLite database with
  the extract (``kpi_extract``) and the product view (``v_produkt``).

Values are simple formulas of month and product, so a reader of the guide can check them.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pandas as pd

TOTAL = "Kartenwelt AG"
#: product -> (mandant, sector, card profile)
PRODUCTS = {
    "Alpine Visa Gold": ("Alpine", "B2C", "CC"),
    "Alpine Prepaid": ("Alpine", "B2C", "PP"),
    "Boreal Mastercard": ("Boreal", "B2B2C", "CC"),
    "Boreal Business": ("Boreal", "B2B2C", "CH"),
}
#: upstream KPI name -> warehouse kpi_id
KPIS = {"Umsatz Total": 101, "Anzahl Trx Total": 102, "Anzahl gültige Konten": 201}
#: The months of the history files (one file each) and of the extracts.
HISTORY_MONTHS = ("2024-06", "2024-07", "2024-08")
EXTRACT_MONTHS = ("2024-07", "2024-08", "2024-09")
WAREHOUSE_LAST = "2024-10"
#: Values that a later delivery restates: (month, KPI name, product) -> value.
HISTORY_RESTATED = {("2024-07", "Umsatz Total", "Alpine Visa Gold"): 123_456.0}
EXTRACT_RESTATED = {("2024-08", "Anzahl Trx Total", "Boreal Mastercard"): 4_321.0}
WAREHOUSE_RESTATED = {("2024-09", "Umsatz Total", "Boreal Business"): 99_999.5}
WINDOW = 37


def value(month: pd.Period, kpi: str, product: str) -> float:
    """The value of a month, upstream KPI and product before any restatement."""
    number = list(PRODUCTS).index(product) + 1
    step = (month.year - 2021) * 12 + month.month
    if kpi == "Umsatz Total":
        return 10_000.0 * number + 100.0 * step + 0.5
    if kpi == "Anzahl Trx Total":
        return 100.0 * number + step
    return 1_000.0 * number + 10.0 * step


def _products(months: pd.PeriodIndex, restated: dict) -> pd.DataFrame:
    rows = [
        (month, kpi, product, restated.get((str(month), kpi, product), value(month, kpi, product)))
        for month in months
        for kpi in KPIS
        for product in PRODUCTS
    ]
    return pd.DataFrame(rows, columns=["month", "kpi_name", "product_name", "value"])


def history_file(last: str, restated: dict) -> pd.DataFrame:
    """One preprocessed history file: 37 months up to ``last``, products and their roll-ups."""
    months = pd.period_range(end=last, periods=WINDOW, freq="M")
    products = _products(months, restated)
    attributes = pd.DataFrame.from_dict(
        PRODUCTS, orient="index", columns=["mandant", "sector", "cardprofile"]
    )
    frames = [products.assign(level=3)]
    for level, column in ((2, "mandant"), (1, "sector")):
        grouped = products.assign(group=products["product_name"].map(attributes[column]))
        sums = grouped.groupby(["month", "kpi_name", "group"], as_index=False)["value"].sum()
        frames.append(sums.rename(columns={"group": "product_name"}).assign(level=level))
    totals = products.groupby(["month", "kpi_name"], as_index=False)["value"].sum()
    frames.append(totals.assign(product_name=TOTAL, level=0))
    frame = pd.concat(frames, ignore_index=True)
    return pd.DataFrame(
        {
            "calculation_date": frame["month"].dt.end_time.dt.strftime("%Y-%m-%d"),
            "product_name": frame["product_name"],
            "kpi_name": frame["kpi_name"],
            "value": frame["value"],
            "level": frame["level"],
        }
    )


def extract(months: pd.PeriodIndex, restated: dict) -> pd.DataFrame:
    """The warehouse extract of some months: monthly (period 1) and year-to-date (3) rows."""
    monthly = _products(months, restated)
    year_to_date = monthly.copy()
    year_to_date["value"] = monthly.groupby([monthly["month"].dt.year, "kpi_name", "product_name"])[
        "value"
    ].cumsum()
    frame = pd.concat(
        [monthly.assign(period_id=1), year_to_date.assign(period_id=3)], ignore_index=True
    )
    return pd.DataFrame(
        {
            "period_value": frame["month"].dt.year * 100 + frame["month"].dt.month,
            "kpi_id": frame["kpi_name"].map(KPIS),
            "kpi_name": frame["kpi_name"],
            "period_id": frame["period_id"],
            "product_name": frame["product_name"],
            "value": frame["value"],
            "cardprofile": frame["product_name"].map({p: a[2] for p, a in PRODUCTS.items()}),
        }
    )


def product_table() -> pd.DataFrame:
    """The product table: product, mandant, sector and card profile (``kartenprofil``)."""
    return pd.DataFrame(
        [(product, *attributes) for product, attributes in PRODUCTS.items()],
        columns=["product_name", "mandant", "sector", "kartenprofil"],
    )


def write_sample(directory: Path) -> None:
    """Write the history files, the newest extract, the product table and the warehouse."""
    history = directory / "data" / "history"
    history.mkdir(parents=True, exist_ok=True)
    for number, month in enumerate(HISTORY_MONTHS):
        restated = HISTORY_RESTATED if number == len(HISTORY_MONTHS) - 1 else {}
        history_file(month, restated).to_csv(history / f"kpis_{month}.csv", index=False)
    extract_months = pd.PeriodIndex(EXTRACT_MONTHS, freq="M")
    restated = {**HISTORY_RESTATED, **EXTRACT_RESTATED}
    extract(extract_months, restated).to_csv(
        directory / f"extract_{EXTRACT_MONTHS[-1]}.csv", index=False
    )
    product_table().to_csv(directory / "products.csv", index=False)
    months = pd.period_range(end=WAREHOUSE_LAST, periods=WINDOW + 4, freq="M")
    warehouse = extract(months, {**restated, **WAREHOUSE_RESTATED})
    with closing(sqlite3.connect(directory / "warehouse.db")) as conn:
        warehouse.to_sql("kpi_extract", conn, index=False)
        product_table().to_sql("v_produkt", conn, index=False)
        conn.commit()
