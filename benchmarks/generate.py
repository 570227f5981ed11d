"""Synthetic KPI sheets for the benchmarks, at three sizes, written once into a cache directory.

A sheet is what ``kpisheet.open`` reads: a KPI definitions YAML file, an entity hierarchy YAML
file and the observations as Parquet. Sizes (products x source KPIs x months):

- ``S``: 70 x 25 x 37, the scale of the dashboard kpisheet replaces;
- ``M``: 500 x 100 x 60 = 3 million observations;
- ``L``: 2,000 x 200 x 120 = 48 million observations.

10 % of the source KPIs are stocks (``time_aggregation: last``, e.g. account counts), the rest
flows (``sum``); one derived KPI (a ratio) per 20 source KPIs sits on top. Products are grouped
into a few sectors and one brand (mandant) per ten products, with a card-profile view. Every
(month, KPI, product) has a row; about 0.1 % of the values are missing (NaN), so some windows
are incomplete. The observations are dictionary-encoded Parquet (``kpi`` and ``entity`` read back
as categoricals) with ``month`` as the first day of the month, as a warehouse export would be.

Usage: ``python benchmarks/generate.py --size M [--cache DIR]``. The same size always gives the
same files; existing files are reused.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

#: Default cache directory (ignored by git).
DEFAULT_CACHE = Path(__file__).resolve().parent / "results" / "data"
#: Newest month of every synthetic sheet.
LAST_MONTH = (2025, 12)
SEED = 20240601
#: Share of source KPIs that are stocks.
STOCK_SHARE = 0.10
#: One derived KPI per this many source KPIs.
SOURCES_PER_DERIVED = 20
#: Share of observations whose value is missing.
MISSING_SHARE = 0.001
SECTORS = ("B2C", "B2B2C", "B2B")
CARD_PROFILES = ("CC", "PP", "CH")
PRODUCTS_PER_BRAND = 10
KPIS_PER_GROUP = 10
#: Rows per Parquet row group.
ROW_GROUP = 1_000_000


@dataclass(frozen=True)
class Size:
    """Dimensions of a synthetic sheet."""

    name: str
    products: int
    kpis: int
    months: int

    @property
    def observations(self) -> int:
        return self.products * self.kpis * self.months


SIZES: dict[str, Size] = {
    "S": Size("S", products=70, kpis=25, months=37),
    "M": Size("M", products=500, kpis=100, months=60),
    "L": Size("L", products=2_000, kpis=200, months=120),
}


@dataclass(frozen=True)
class SheetFiles:
    """Where a generated sheet lives."""

    directory: Path
    definitions: Path
    entities: Path
    observations: Path
    size: Size


def kpi_ids(size: Size) -> tuple[list[str], list[str], list[str]]:
    """Ids of the stock, flow and derived KPIs of a size."""
    stocks = max(1, round(size.kpis * STOCK_SHARE))
    stock_ids = [f"stock_{i:03d}" for i in range(stocks)]
    flow_ids = [f"flow_{i:03d}" for i in range(size.kpis - stocks)]
    derived_ids = [f"ratio_{i:03d}" for i in range(max(1, size.kpis // SOURCES_PER_DERIVED))]
    return stock_ids, flow_ids, derived_ids


def definitions(size: Size) -> list[dict[str, object]]:
    """KPI definitions (as YAML data): stocks first, then flows, then derived ratios."""
    stock_ids, flow_ids, derived_ids = kpi_ids(size)
    accounts = stock_ids[0]
    out: list[dict[str, object]] = []
    for i, kpi in enumerate(stock_ids):
        out.append(
            {
                "id": kpi,
                "label": f"Bestand {i}",
                "group": "Konten",
                "unit": "count",
                "time_aggregation": "last",
                "entity_aggregation": "sum",
                "description": "Synthetic stock KPI.",
                "source": {"kpi_name": f"Bestand {i}"},
            }
        )
    for i, kpi in enumerate(flow_ids):
        out.append(
            {
                "id": kpi,
                "label": f"Fluss {i}",
                "group": f"Gruppe {i // KPIS_PER_GROUP}",
                "unit": "currency" if i % 2 == 0 else "count",
                "time_aggregation": "sum",
                "entity_aggregation": "sum",
                "average_per": accounts,
                "description": "Synthetic flow KPI.",
                "source": {"kpi_name": f"Fluss {i}"},
            }
        )
    for i, kpi in enumerate(derived_ids):
        numerator = flow_ids[(2 * i) % len(flow_ids)]
        denominator = flow_ids[(2 * i + 1) % len(flow_ids)]
        out.append(
            {
                "id": kpi,
                "label": f"Verhältnis {i}",
                "group": "Verhältnisse",
                "unit": "ratio",
                "formula": f"{numerator} / {denominator}",
                "description": "Synthetic derived KPI.",
            }
        )
    return out


def products(size: Size) -> list[str]:
    """Product names."""
    return [f"Produkt {i:04d}" for i in range(size.products)]


def hierarchy(size: Size) -> dict[str, object]:
    """The entity hierarchy (as YAML data): sectors, brands of ten products, a card-profile view."""
    entities = {}
    for i, name in enumerate(products(size)):
        brand = i // PRODUCTS_PER_BRAND
        entities[name] = {
            "mandant": f"Marke {brand:03d}",
            "sector": SECTORS[brand % len(SECTORS)],
            "cardprofile": CARD_PROFILES[i % len(CARD_PROFILES)],
        }
    return {"total": "Gesamt", "levels": ["sector", "mandant"], "entities": entities}


def observation_table(size: Size) -> pa.Table:
    """Every (month, KPI, product) with a value, month-major, as an Arrow table."""
    rng = np.random.default_rng(SEED)
    stock_ids, flow_ids, _ = kpi_ids(size)
    kpis = [*stock_ids, *flow_ids]
    n_k, n_e, n_t = len(kpis), size.products, size.months
    year, month = LAST_MONTH
    last = year * 12 + month - 1
    ordinals = np.arange(last - n_t + 1, last + 1)
    month_of_year = ordinals % 12

    # values[t, e, k]: a level per (product, KPI), yearly growth, a season and monthly noise.
    level = rng.lognormal(8.0, 1.5, (1, n_e, n_k))
    growth = 1.0 + rng.normal(0.04, 0.03, (1, n_e, n_k))
    years = ((ordinals - ordinals[0]) / 12.0)[:, None, None]
    season = (1.0 + 0.1 * np.sin(2 * np.pi * month_of_year / 12.0))[:, None, None]
    values = level * growth**years
    values *= season
    values *= rng.lognormal(0.0, 0.05, (n_t, n_e, n_k))
    np.rint(values, out=values)
    values[rng.random((n_t, n_e, n_k)) < MISSING_SHARE] = np.nan

    days = (
        np.array([f"{o // 12:04d}-{o % 12 + 1:02d}-01" for o in ordinals], dtype="datetime64[D]")
        .astype("datetime64[ms]")
        .astype(np.int64)
    )
    month_col = pa.array(np.repeat(days, n_e * n_k), type=pa.int64()).cast(pa.timestamp("ms"))
    entity_codes = np.tile(np.repeat(np.arange(n_e, dtype=np.int32), n_k), n_t)
    kpi_codes = np.tile(np.arange(n_k, dtype=np.int32), n_t * n_e)
    return pa.table(
        {
            "month": month_col,
            "kpi": pa.DictionaryArray.from_arrays(kpi_codes, pa.array(kpis)),
            "entity": pa.DictionaryArray.from_arrays(entity_codes, pa.array(products(size))),
            "value": pa.array(values.ravel()),
        }
    )


def generate(size: Size | str, cache: Path = DEFAULT_CACHE) -> SheetFiles:
    """Write (or reuse) the sheet of a size under ``cache/<size>/`` and say where it is."""
    size = SIZES[size] if isinstance(size, str) else size
    directory = cache / size.name
    files = SheetFiles(
        directory=directory,
        definitions=directory / "kpis.yaml",
        entities=directory / "entities.yaml",
        observations=directory / "observations.parquet",
        size=size,
    )
    stamp = directory / "size.json"
    wanted = json.dumps(
        {"products": size.products, "kpis": size.kpis, "months": size.months, "seed": SEED}
    )
    if stamp.is_file() and stamp.read_text() == wanted and files.observations.is_file():
        return files
    directory.mkdir(parents=True, exist_ok=True)
    files.definitions.write_text(
        yaml.safe_dump(definitions(size), sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    files.entities.write_text(
        yaml.safe_dump(hierarchy(size), sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    pq.write_table(observation_table(size), files.observations, row_group_size=ROW_GROUP)
    stamp.write_text(wanted)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), action="append", required=True)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    for name in args.size:
        files = generate(name, args.cache)
        print(f"{name}: {files.size.observations:,} observations in {files.directory}")


if __name__ == "__main__":
    main()
