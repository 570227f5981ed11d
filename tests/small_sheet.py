"""A small sheet for the tests of the monthly refresh: two KPIs known upstream by name, three
products in two mandants, a product table, and history files in the warehouse's layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

KPIS = """\
- id: turnover
  label: Umsatz
  group: Umsatz
  unit: currency
  time_aggregation: sum
  source: {kpi_name: "Umsatz Total"}
- id: accounts
  label: Konten
  group: Konten
  unit: count
  time_aggregation: last
  source: {kpi_name: "Anzahl Konten"}
"""

#: The product table, as the warehouse's product view gives it (German column names).
PRODUCTS = """\
product_name,mandant,sector,kartenprofil
Alpha Gold,Alpha,B2C,CC
Alpha Prepaid,Alpha,B2C,PP
Beta Classic,Beta,B2B2C,CC
"""

#: The same products after Alpha Prepaid moved to mandant Beta.
PRODUCTS_MOVED = PRODUCTS.replace("Alpha Prepaid,Alpha,B2C,PP", "Alpha Prepaid,Beta,B2B2C,PP")

ENTITIES_YAML = """\
total: Test AG
levels: [sector, mandant]
entities:
  Alpha Gold: {mandant: Alpha, sector: B2C, cardprofile: CC}
  Alpha Prepaid: {mandant: Alpha, sector: B2C, cardprofile: PP}
  Beta Classic: {mandant: Beta, sector: B2B2C, cardprofile: CC}
"""

#: Ingest configuration: the warehouse's columns and the hierarchy from the product table.
CONFIG = """\
columns: {month: period_value, entity: product_name, kpi_name: kpi_name, value: value}
entities:
  total: Test AG
  leaf: product_name
  levels: [sector, mandant]
  attributes: [{cardprofile: kartenprofil}]
"""

PRODUCT_NAMES = ("Alpha Gold", "Alpha Prepaid", "Beta Classic")
UPSTREAM = {"turnover": "Umsatz Total", "accounts": "Anzahl Konten"}


def value(month: int, kpi: str, product: str) -> float:
    """The value the history files hold for a month (YYYYMM), KPI and product."""
    base = {"Alpha Gold": 1000.0, "Alpha Prepaid": 100.0, "Beta Classic": 500.0}[product]
    step = (month // 100 - 2026) * 12 + month % 100
    return base + step if kpi == "turnover" else base / 10 + step


def history_csv(months: list[int], changed: dict[tuple[int, str, str], float] | None = None) -> str:
    """A history file in the warehouse layout (``period_value`` YYYYMM, upstream KPI names) for
    ``months``, every product and KPI; ``changed`` overrides single values."""
    changed = changed or {}
    lines = ["period_value,kpi_name,product_name,value"]
    for month in months:
        for kpi, name in UPSTREAM.items():
            for product in PRODUCT_NAMES:
                number = changed.get((month, kpi, product), value(month, kpi, product))
                lines.append(f"{month},{name},{product},{number}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Sheet:
    """The small sheet's files in a directory."""

    directory: Path
    definitions: Path
    products: Path
    entities: Path
    config: Path

    def write(self, name: str, content: str) -> Path:
        """Write a file into the directory."""
        path = self.directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        return path


def small_sheet(directory: Path, config: str = CONFIG) -> Sheet:
    """Write the small sheet's definitions, product table, hierarchy YAML and ingest config."""
    files = {
        "kpis.yaml": KPIS,
        "products.csv": PRODUCTS,
        "entities.yaml": ENTITIES_YAML,
        "ingest.yaml": config,
    }
    for name, content in files.items():
        (directory / name).write_text(content, encoding="utf-8")
    return Sheet(
        directory,
        directory / "kpis.yaml",
        directory / "products.csv",
        directory / "entities.yaml",
        directory / "ingest.yaml",
    )
