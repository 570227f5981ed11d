"""The demo sheet's data: a deterministic generator of a believable card business.

Kartenwelt AG issues credit (CC), prepaid (PP) and charge (CH) cards: 40 products under
12 partner brands in the sectors B2C and B2B2C (:data:`DEMO_ENTITIES`). The generator tells
this story, month by month from November 2021 to October 2026 (five years):

- **Accounts.** Each product starts with a portfolio of valid accounts (hundreds to tens of
  thousands, credit cards the largest) that grows by a few percent a year, some products faster,
  some shrinking, with a small random walk on top. 60-85 % of the valid accounts are active in a
  month (charge cards the most, prepaid the least), a little more in December.
- **Turnover** is active accounts times spend per account: charge cards spend most, prepaid
  least, premium tiers (Gold, Platinum, Infinite, Corporate) more than classic ones. Spend grows
  about 2.5 % a year and peaks in December (gifts), dips in January and February.
- **Abroad.** The share of turnover booked abroad peaks in the summer holidays (July, August),
  is highest for the airline and travel partners (Talwind, Rhonetal), lowest for the fuel card
  (Kiesel), and recovers during 2022 as travel comes back. Domestic + abroad equals the total
  to the cent.
- **Transactions** are turnover divided by the ticket size, which is larger abroad and in
  December and shrinks slowly over the years as small contactless payments grow; domestic +
  abroad equals the total exactly.
- **New card applications** (NCA) are reported for credit and charge cards only (prepaid cards
  need no application): a Poisson inflow with spring and autumn campaigns and a summer and
  December lull, a burst after a launch, and 40-90 % approved (approved ≤ received).
- **History.** Four products launch mid-history (no rows before, a ramp-up after), among them
  Seeland Visa Flex, which replaces Seeland Visa Classic: that and one more product wind down
  and are retired (no rows after). Rhonetal Visa Gold misses one month entirely (a failed
  delivery), so that windows over it are incomplete.

The demo store (:func:`demo_store_url`) keeps these observations, validated, as a release of a
SQLite store in kpisheet's cache directory, built once and shared by every process.

The output is the canonical long format of docs/semantics.md, "Observations" (``month``, ``kpi``, ``entity``, ``value``)
for the source KPIs of the demo sheet; derived KPIs are the engine's business. The same seed
gives the same table, bit for bit.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import platformdirs

from kpisheet.builtin import builtin_definitions_dir
from kpisheet.constants import ENTITY, KPI, MONTH, VALUE
from kpisheet.errors import StoreError
from kpisheet.hierarchy import load_hierarchy
from kpisheet.months import parse_month
from kpisheet.observations import validate_observations
from kpisheet.plugins import load_kpis

# The store (and SQLAlchemy) is imported by the functions that build the demo store: the demo's
# hierarchy and generator are used without it.
if TYPE_CHECKING:
    from kpisheet.store import ReleaseInfo

__all__ = [
    "ACTIVE_ACCOUNTS",
    "CACHE_DIR_ENV",
    "DEFAULT_END",
    "DEFAULT_SEED",
    "DEFAULT_START",
    "DEMO_ENTITIES",
    "DEMO_KPIS",
    "DEMO_SOURCE",
    "LAUNCHED",
    "MISSING_MONTH",
    "NCA_APPROVED",
    "NCA_KPIS",
    "NCA_RECEIVED",
    "RETIRED",
    "TRANSACTIONS",
    "TRANSACTIONS_ABROAD",
    "TRANSACTIONS_DOMESTIC",
    "TURNOVER",
    "TURNOVER_ABROAD",
    "TURNOVER_DOMESTIC",
    "VALID_ACCOUNTS",
    "cache_dir",
    "demo_products",
    "demo_store_key",
    "demo_store_url",
    "generate_observations",
    "write_demo_csv",
    "write_demo_store",
]

#: The demo sheet's entity hierarchy (docs/semantics.md, "Entity hierarchy"), shipped inside the package.
DEMO_ENTITIES: Path = Path(__file__).resolve().parent / "data" / "demo_entities.yaml"

#: Default first and last month: five years ending with the last complete month before the
#: demo was frozen (2026-11-26). Fixed, so the demo never depends on the clock.
DEFAULT_START = "2021-11"
DEFAULT_END = "2026-10"
DEFAULT_SEED = 20211231

# Source KPIs of the demo sheet (ids as declared in kpi_definitions/).
TURNOVER = "turnover"
TURNOVER_DOMESTIC = "turnover_domestic"
TURNOVER_ABROAD = "turnover_abroad"
TRANSACTIONS = "transactions"
TRANSACTIONS_DOMESTIC = "transactions_domestic"
TRANSACTIONS_ABROAD = "transactions_abroad"
ACTIVE_ACCOUNTS = "active_accounts"
VALID_ACCOUNTS = "valid_accounts"
NCA_RECEIVED = "nca_received"
NCA_APPROVED = "nca_approved"
#: The KPIs the generator writes, in the order of the definitions.
DEMO_KPIS: tuple[str, ...] = (
    TURNOVER,
    TURNOVER_DOMESTIC,
    TURNOVER_ABROAD,
    TRANSACTIONS,
    TRANSACTIONS_DOMESTIC,
    TRANSACTIONS_ABROAD,
    ACTIVE_ACCOUNTS,
    VALID_ACCOUNTS,
    NCA_RECEIVED,
    NCA_APPROVED,
)
NCA_KPIS = (NCA_RECEIVED, NCA_APPROVED)

#: First month with data of the products launched mid-history.
LAUNCHED: dict[str, str] = {
    "Gletscher Visa Gold": "2022-06",
    "Seeland Visa Flex": "2023-10",
    "Nordlicht Mastercard Prepaid": "2024-09",
    "Talwind Visa Infinite": "2025-03",
}
#: Last month with data of the products retired mid-history.
RETIRED: dict[str, str] = {
    "Seeland Visa Classic": "2024-03",
    "Lindenhof Mastercard Prepaid": "2025-06",
}
#: The one product and month without any data.
MISSING_MONTH: tuple[str, str] = ("Rhonetal Visa Gold", "2024-05")

# Card profile parameters: portfolio size range (valid accounts), active share, monthly spend
# per active account (CHF), ticket size (CHF), abroad share, NCA inflow per valid account and
# approval rate (NaN: no applications reported).
_PROFILES = pd.DataFrame(
    {
        "accounts_low": [2_000, 500, 300],
        "accounts_high": [60_000, 20_000, 8_000],
        "active_share": [0.72, 0.66, 0.79],
        "spend": [1_350.0, 380.0, 2_700.0],
        "ticket": [82.0, 46.0, 135.0],
        "abroad_share": [0.24, 0.30, 0.36],
        "nca_rate": [0.018, np.nan, 0.012],
        "approval": [0.68, np.nan, 0.60],
    },
    index=pd.Index(["CC", "PP", "CH"], name="cardprofile"),
)
# Spend factor by a word in the product name (premium tiers spend more, youth cards less).
_TIER_SPEND = {
    "Infinite": 1.9,
    "Platinum": 1.7,
    "Fleet": 1.6,
    "Corporate": 1.5,
    "Business": 1.4,
    "Gold": 1.3,
    "Student": 0.6,
    "Junior": 0.4,
}
# Abroad share factor by partner brand.
_ABROAD_AFFINITY = {"Talwind": 1.6, "Rhonetal": 1.7, "Kiesel": 0.4}
_ACTIVE_SHARE_RANGE = (0.60, 0.85)
_ABROAD_TICKET_FACTOR = 1.35

# Seasonal factors, January to December.
_SPEND_SEASON = np.array([0.90, 0.87, 0.97, 0.98, 1.00, 1.02, 1.04, 1.03, 0.99, 1.01, 1.07, 1.26])
_ABROAD_SEASON = np.array([0.85, 0.95, 0.90, 1.00, 1.00, 1.10, 1.45, 1.40, 1.10, 1.05, 0.85, 1.00])
_TICKET_SEASON = np.array([0.97, 0.97, 0.99, 1.00, 1.00, 1.01, 1.02, 1.02, 1.00, 1.00, 1.02, 1.08])
_NCA_SEASON = np.array([1.10, 1.00, 1.15, 1.05, 1.00, 0.95, 0.80, 0.85, 1.15, 1.10, 1.05, 0.80])
_ACTIVE_DECEMBER_BUMP = 0.02

#: Month from which growth is counted, so that levels do not depend on ``start``.
_ANCHOR = parse_month(DEFAULT_START)
# Launch and retirement age (months from the anchor) of products that are neither.
_FOREVER = 100_000


def demo_products(entities: Path = DEMO_ENTITIES) -> pd.DataFrame:
    """The demo products with their attributes, in declared order (index = product name)."""
    return load_hierarchy(entities).attributes


def generate_observations(
    start: str = DEFAULT_START, end: str = DEFAULT_END, seed: int = DEFAULT_SEED
) -> pd.DataFrame:
    """Observations of the demo sheet's source KPIs for every month from ``start`` to ``end``.

    Canonical long format (``month`` as ``Period[M]``, ``kpi``, ``entity``, ``value`` float),
    sorted by month, product (declared order) and KPI; counts are whole numbers, currency is
    rounded to the cent. The same arguments always give the same table.
    """
    months = pd.period_range(start, end, freq="M")
    products = demo_products()
    names = products.index.to_numpy()
    params = products.join(_PROFILES, on="cardprofile")
    rng = np.random.default_rng(seed)
    n_products, n_months = len(products), len(months)
    grid = (n_products, n_months)

    age = (months.asi8 - _ANCHOR.ordinal)[None, :]  # months since the anchor
    years = age / 12
    month_of_year = months.month.to_numpy() - 1
    launch_age = _ages(names, LAUNCHED, default=-_FOREVER)[:, None]
    retire_age = _ages(names, RETIRED, default=_FOREVER)[:, None]
    launched = np.isin(names, list(LAUNCHED))[:, None]
    since_launch = np.maximum(age - launch_age, 0)
    until_retire = np.clip(retire_age - age, 0, None)

    # Valid accounts: portfolio size x yearly growth x launch ramp-up x run-off before retirement.
    low = np.log(params["accounts_low"].to_numpy(float))
    high = np.log(params["accounts_high"].to_numpy(float))
    base = np.exp(rng.uniform(low, high))[:, None]
    growth = rng.normal(0.06, 0.05, n_products)[:, None]
    portfolio = base * (1 + growth) ** years
    ramp = np.where(launched, 1 - 0.88 * np.exp(-since_launch / 7), 1.0)
    run_off = 0.35 + 0.65 * np.clip(until_retire / 9, 0, 1)
    walk = np.exp(np.cumsum(rng.normal(0, 0.008, grid), axis=1))
    valid = np.rint(portfolio * ramp * run_off * walk)

    # Active accounts: a share of the valid ones, a little higher in December.
    share = params["active_share"].to_numpy()[:, None] + rng.normal(0, 0.04, (n_products, 1))
    share = share + _ACTIVE_DECEMBER_BUMP * (month_of_year == 11) + rng.normal(0, 0.01, grid)
    active = np.rint(valid * np.clip(share, *_ACTIVE_SHARE_RANGE))

    # Turnover in cents: active accounts x spend per account, split into abroad and domestic.
    tier = products.index.str.extract(f"({'|'.join(_TIER_SPEND)})", expand=False)
    tier_factor = pd.Series(tier).map(_TIER_SPEND).fillna(1.0).to_numpy()[:, None]
    spend = params["spend"].to_numpy()[:, None] * tier_factor
    spend = spend * rng.lognormal(0, 0.15, (n_products, 1)) * 1.025**years
    spend = spend * _SPEND_SEASON[month_of_year] * rng.lognormal(0, 0.03, grid)
    turnover_cents = np.rint(active * spend * 100)
    affinity = params["mandant"].map(_ABROAD_AFFINITY).fillna(1.0).to_numpy()[:, None]
    travel_recovery = np.clip(0.8 + 0.2 * age / 12, None, 1.0)
    abroad_share = params["abroad_share"].to_numpy()[:, None] * affinity
    abroad_share = abroad_share * rng.lognormal(0, 0.2, (n_products, 1)) * travel_recovery
    abroad_share = abroad_share * _ABROAD_SEASON[month_of_year] * rng.lognormal(0, 0.03, grid)
    abroad_cents = np.rint(turnover_cents * np.clip(abroad_share, 0.02, 0.8))
    domestic_cents = turnover_cents - abroad_cents

    # Transactions: turnover over the ticket size; abroad tickets are larger.
    ticket = params["ticket"].to_numpy()[:, None] * np.sqrt(tier_factor)
    ticket = ticket * rng.lognormal(0, 0.1, (n_products, 1)) * 0.98**years
    ticket = ticket * _TICKET_SEASON[month_of_year] * rng.lognormal(0, 0.02, grid)
    transactions_domestic = _count_for(domestic_cents / 100 / ticket)
    transactions_abroad = _count_for(abroad_cents / 100 / (ticket * _ABROAD_TICKET_FACTOR))

    # New card applications: campaigns in spring and autumn, a burst after a launch.
    nca_rate = params["nca_rate"].to_numpy()[:, None] * rng.lognormal(0, 0.25, (n_products, 1))
    campaign = np.where(launched, 0.08 * base * np.exp(-since_launch / 4), 0.0)
    expected = np.nan_to_num(portfolio * nca_rate) * _NCA_SEASON[month_of_year] + campaign
    received = rng.poisson(expected).astype(float)
    approval = params["approval"].to_numpy()[:, None] + rng.normal(0, 0.05, (n_products, 1))
    approval = np.clip(np.nan_to_num(approval) + rng.normal(0, 0.02, grid), 0.4, 0.9)
    approved = rng.binomial(received.astype(np.int64), approval).astype(float)

    values = {
        TURNOVER: turnover_cents / 100,
        TURNOVER_DOMESTIC: domestic_cents / 100,
        TURNOVER_ABROAD: abroad_cents / 100,
        TRANSACTIONS: transactions_domestic + transactions_abroad,
        TRANSACTIONS_DOMESTIC: transactions_domestic,
        TRANSACTIONS_ABROAD: transactions_abroad,
        ACTIVE_ACCOUNTS: active,
        VALID_ACCOUNTS: valid,
        NCA_RECEIVED: received,
        NCA_APPROVED: approved,
    }

    missing_product, missing_month = MISSING_MONTH
    live = (age >= launch_age) & (age <= retire_age)
    live &= ~((names == missing_product)[:, None] & (months == missing_month)[None, :])
    has_nca = params["nca_rate"].notna().to_numpy()[:, None]
    frames = []
    for code, kpi in enumerate(DEMO_KPIS):
        rows = live & has_nca if kpi in NCA_KPIS else live
        product_index, month_index = np.nonzero(rows)
        frames.append(
            pd.DataFrame(
                {
                    "_month": month_index,
                    "_product": product_index,
                    "_kpi": code,
                    VALUE: values[kpi][rows].astype(float),
                }
            )
        )
    long = pd.concat(frames, ignore_index=True)
    long = long.sort_values(["_month", "_product", "_kpi"], kind="stable", ignore_index=True)
    return pd.DataFrame(
        {
            MONTH: months[long["_month"].to_numpy()],
            KPI: np.asarray(DEMO_KPIS, dtype=object)[long["_kpi"].to_numpy()],
            ENTITY: names[long["_product"].to_numpy()],
            VALUE: long[VALUE].to_numpy(),
        }
    )


def write_demo_csv(
    path: Path | str,
    start: str = DEFAULT_START,
    end: str = DEFAULT_END,
    seed: int = DEFAULT_SEED,
) -> Path:
    """Write :func:`generate_observations` as a canonical CSV (months as ``YYYY-MM``)."""
    path = Path(path)
    generate_observations(start, end, seed).to_csv(path, index=False)
    return path


def _ages(names: np.ndarray, months_by_name: dict[str, str], default: int) -> np.ndarray:
    """Months since the anchor of each product's month in ``months_by_name``, else ``default``."""
    ages = {
        name: parse_month(month).ordinal - _ANCHOR.ordinal for name, month in months_by_name.items()
    }
    months: np.ndarray = pd.Series(names).map(ages).fillna(default).to_numpy(np.int64)
    return months


def _count_for(amount: np.ndarray) -> np.ndarray:
    """Whole transactions for an amount: rounded, and at least one where there is any amount."""
    count: np.ndarray = np.maximum(np.rint(amount), amount > 0).astype(float)
    return count


# -- the demo store --------------------------------------------------------------------------

#: Environment variable naming the cache directory of the demo store.
CACHE_DIR_ENV = "KPISHEET_CACHE_DIR"
#: Source recorded for the demo release.
DEMO_SOURCE = "kpisheet demo generator"


def write_demo_store(url: str) -> ReleaseInfo:
    """Write the demo sheet's observations, validated, as a release of the store at ``url``."""
    from kpisheet.store import Store

    hierarchy = load_hierarchy(DEMO_ENTITIES)
    observations = validate_observations(
        generate_observations(),
        load_kpis(builtin_definitions_dir()),
        hierarchy,
        source=DEMO_SOURCE,
    )
    with Store(url) as store:
        return store.write_release(
            observations, source=DEMO_SOURCE, note="demo data", hierarchy=hierarchy
        )


def cache_dir() -> Path:
    """kpisheet's cache directory (``$KPISHEET_CACHE_DIR``, else the user cache directory)."""
    return Path(os.environ.get(CACHE_DIR_ENV) or platformdirs.user_cache_dir("kpisheet"))


def demo_store_key() -> str:
    """A short hash of everything the demo store is made from; a change makes a new store."""
    from kpisheet.store import SCHEMA_VERSION

    # "snapshots": a demo store built before releases kept snapshots is not reused.
    digest = hashlib.sha256(f"schema {SCHEMA_VERSION}, snapshots\n".encode())
    for path in (Path(__file__), DEMO_ENTITIES):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def demo_store_url() -> str:
    """The URL of the demo sheet's SQLite store, built once in the cache directory.

    Built in a temporary file and moved into place, so processes racing to build it never
    see a half-built store; the key in the file name changes with the generator.
    """
    from kpisheet.store import sqlite_url

    directory = cache_dir()
    path = directory / f"demo-{demo_store_key()}.db"
    if path.is_file():
        return sqlite_url(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f"{path.stem}.", suffix=".building", dir=directory)
    except OSError as exc:
        raise StoreError(f"cannot create the demo store in {directory}: {exc}") from exc
    os.close(handle)
    building = Path(name)
    try:
        write_demo_store(sqlite_url(building))
        # Back to a rollback journal: a single file that can be moved and read anywhere.
        with contextlib.closing(sqlite3.connect(building)) as conn:
            conn.execute("PRAGMA journal_mode=DELETE")
        try:
            os.replace(building, path)
        except OSError:
            if not path.is_file():  # another process's copy in place and open (Windows) is fine
                raise
    except OSError as exc:
        raise StoreError(f"cannot create the demo store {path}: {exc}") from exc
    finally:
        for leftover in (building, *(Path(f"{building}{s}") for s in ("-wal", "-shm"))):
            leftover.unlink(missing_ok=True)
    return sqlite_url(path)
