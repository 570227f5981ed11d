"""Tests of release diffs: `kpisheet releases diff` on known restatements, as a table, CSV and
JSON, and the same summary printed by the ingest of the new release."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from kpisheet.cli import main
from kpisheet.diff import diff_releases
from kpisheet.ingest import ingest
from kpisheet.store import sqlite_url
from tests.small_sheet import ENTITIES_YAML, Sheet, history_csv, small_sheet, value

RESTATED = {
    (202409, "turnover", "Alpha Gold"): 2000.0,
    (202409, "turnover", "Beta Classic"): 600.0,
    (202408, "accounts", "Alpha Prepaid"): 7.0,
}
#: Release 2's hierarchy: a new product, and Beta Classic moved to mandant Alpha.
ENTITIES_2 = (
    ENTITIES_YAML.replace(
        "Beta Classic: {mandant: Beta, sector: B2B2C", "Beta Classic: {mandant: Alpha, sector: B2C"
    )
    + "  Gamma Card: {mandant: Beta, sector: B2B2C, cardprofile: CH}\n"
)


@pytest.fixture
def store(tmp_path: Path) -> tuple[Sheet, str, list[str]]:
    """A store with release 1 (Aug-Sep 2024) and release 2 (Aug-Oct, three values restated, a new
    product, a move); also what the second ingest printed."""
    sheet = small_sheet(tmp_path)
    url = sqlite_url(tmp_path / "kpisheet.db")
    options = {"definitions": [sheet.definitions], "config": sheet.config}
    ingest(
        sheet.write("2024-09.csv", history_csv([202408, 202409])),
        url,
        entities=sheet.entities,
        **options,
    )
    second = history_csv([202408, 202409, 202410], changed=RESTATED)
    second += "202410,Umsatz Total,Gamma Card,1.5\n"
    said: list[str] = []
    ingest(
        sheet.write("2024-10.csv", second),
        url,
        entities=sheet.write("entities-2.yaml", ENTITIES_2),
        echo=said.append,
        **options,
    )
    return sheet, url, said


def old(month: int, kpi: str, product: str) -> str:
    """A release 1 value as the summary prints it."""
    return f"{value(month, kpi, product):,.10g}"


def test_diff_table_of_the_newest_two_releases(store: tuple[Sheet, str, list[str]]) -> None:
    """Without ids the newest two are compared: months and products added, the move, and the
    restated values counted per month and KPI, largest first with old and new value."""
    _, url, said = store
    result = CliRunner().invoke(main, ["releases", "diff", "--store", url])
    assert result.exit_code == 0, result.stderr
    alpha, beta = old(202409, "turnover", "Alpha Gold"), old(202409, "turnover", "Beta Classic")
    prepaid = old(202408, "accounts", "Alpha Prepaid")
    assert result.stdout.splitlines() == [
        "changes from release 1 to release 2:",
        "  months added: 2024-10",
        "  products added: Gamma Card",
        "  moved: 'Beta Classic' sector B2B2C -> B2C",
        "  moved: 'Beta Classic' mandant Beta -> Alpha",
        "  restated values: 3",
        "    month    kpi       restated",
        "    -------  --------  --------",
        "    2024-08  accounts  1",
        "    2024-09  turnover  2",
        "  largest restatements (of 3):",
        "    month    kpi       entity         old  new    change",
        "    -------  --------  -------------  ---  -----  ------",
        f"    2024-09  turnover  Alpha Gold     {alpha}  2,000  1,015",
        f"    2024-09  turnover  Beta Classic   {beta}  600    115",
        f"    2024-08  accounts  Alpha Prepaid  {prepaid}   7      13",
    ]
    assert said[-len(result.stdout.splitlines()) :] == result.stdout.splitlines()


def test_diff_as_csv_and_json(store: tuple[Sheet, str, list[str]]) -> None:
    """--format csv gives one row per change, --format json the counts and the largest values."""
    _, url, _ = store
    runner = CliRunner()
    csv = runner.invoke(main, ["releases", "diff", "1", "2", "--store", url, "--format", "csv"])
    assert csv.exit_code == 0, csv.stderr
    rows = pd.read_csv(pd.io.common.StringIO(csv.stdout), keep_default_na=False)
    assert list(rows["change"]) == [
        "month_added",
        "entity_added",
        "moved",
        "moved",
        "restated",
        "restated",
        "restated",
    ]
    restated = rows[rows["change"] == "restated"]
    assert list(restated["new"].astype(float)) == [2000.0, 600.0, 7.0]
    as_json = runner.invoke(main, ["releases", "diff", "--store", url, "--format", "json"])
    data = json.loads(as_json.stdout)
    assert (data["old_release"], data["new_release"], data["restated_count"]) == (1, 2, 3)
    assert data["restated_per_month_and_kpi"] == [
        {"month": "2024-08", "kpi": "accounts", "count": 1},
        {"month": "2024-09", "kpi": "turnover", "count": 2},
    ]
    assert data["largest_restated"][0] == {
        "month": "2024-09",
        "kpi": "turnover",
        "entity": "Alpha Gold",
        "old": value(202409, "turnover", "Alpha Gold"),
        "new": 2000.0,
        "change": 2000.0 - value(202409, "turnover", "Alpha Gold"),
    }
    assert data["moves"] == [
        {"entity": "Beta Classic", "level": "sector", "old": "B2B2C", "new": "B2C"},
        {"entity": "Beta Classic", "level": "mandant", "old": "Beta", "new": "Alpha"},
    ]


def test_diff_needs_two_releases(tmp_path: Path) -> None:
    """A store with one release says a diff needs two."""
    sheet = small_sheet(tmp_path)
    url = sqlite_url(tmp_path / "kpisheet.db")
    ingest(
        sheet.write("a.csv", history_csv([202409])),
        url,
        definitions=[sheet.definitions],
        entities=sheet.entities,
        config=sheet.config,
    )
    result = CliRunner().invoke(main, ["releases", "diff", "--store", url])
    assert result.exit_code == 1
    assert result.stderr == f"store {url} has only 1 release; a diff needs two\n"


def test_removed_months_kpis_and_values_that_vanished() -> None:
    """A month and a KPI dropped, and a value that became missing, are each reported."""
    month = pd.Period("2024-09", "M")
    before = pd.DataFrame(
        {
            "month": [month - 1, month, month, month],
            "kpi": ["turnover", "turnover", "turnover", "accounts"],
            "entity": ["A", "A", "B", "A"],
            "value": [1.0, 2.0, 3.0, 4.0],
        }
    )
    after = pd.DataFrame(
        {"month": [month, month], "kpi": ["turnover", "turnover"], "entity": ["A", "B"]}
    ).assign(value=[2.0, float("nan")])
    changes = diff_releases(before, after, old_id=1, new_id=2)
    assert changes.months_removed == ["2024-08"]
    assert changes.kpis_removed == ["accounts"]
    assert changes.values_removed == 1
    assert changes.restated.to_dict(orient="records") == [
        {
            "month": "2024-09",
            "kpi": "turnover",
            "entity": "B",
            "old": 3.0,
            "new": pytest.approx(float("nan"), nan_ok=True),
            "change": pytest.approx(float("nan"), nan_ok=True),
        }
    ]
    assert not changes.unchanged
    assert diff_releases(before, before).unchanged
