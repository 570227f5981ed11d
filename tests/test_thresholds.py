"""Tests of kpisheet.thresholds: which query rows pass their KPI's ``highlight`` thresholds, in the
library (``sheet.flagged``) and on the command line (``kpisheet query --flagged``)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

import kpisheet
from kpisheet.cli import main
from kpisheet.thresholds import flags

KPIS = [
    {"id": "both", "label": "B", "group": "G", "unit": "count", "time_aggregation": "sum",
     "highlight": {"min_abs_change": 100, "min_pct_change": 0.1}},
    {"id": "absolute", "label": "A", "group": "G", "unit": "count", "time_aggregation": "sum",
     "highlight": {"min_abs_change": 100}},
    {"id": "relative", "label": "R", "group": "G", "unit": "count", "time_aggregation": "sum",
     "highlight": {"min_pct_change": 0.5}, "average_per": "plain"},
    {"id": "plain", "label": "P", "group": "G", "unit": "count", "time_aggregation": "last"},
]  # fmt: skip
ENTITIES = {"total": "T", "levels": [], "entities": {"X": {}, "Y": {}}}


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    """KPI definitions with thresholds and a two-product hierarchy, as files."""
    definitions, entities = tmp_path / "kpis.yaml", tmp_path / "entities.yaml"
    definitions.write_text(yaml.safe_dump(KPIS, sort_keys=False), encoding="utf-8")
    entities.write_text(yaml.safe_dump(ENTITIES, sort_keys=False), encoding="utf-8")
    return definitions, entities


def result(rows: list[tuple[str, float, float, bool, bool]]) -> pd.DataFrame:
    """Query-shaped rows ``(kpi, previous_value, value, complete, previous_complete)``."""
    frame = pd.DataFrame(
        rows, columns=["kpi", "previous_value", "value", "complete", "previous_complete"]
    )
    frame["change"] = frame["value"] - frame["previous_value"]
    frame["change_pct"] = frame["change"] / frame["previous_value"].abs().where(lambda v: v != 0)
    return frame


def test_flag_rule(project: tuple[Path, Path]) -> None:
    """A row is flagged when |change| or |change %| reaches a declared threshold (either one),
    never when a window is incomplete, the change is missing or the KPI declares none."""
    registry = kpisheet.load_kpis(project[0])
    rows = result(
        [
            ("both", 1000, 1100, True, True),  # +100 (abs reached), +10 % (reached)
            ("both", 1000, 1099, True, True),  # +99, +9.9 %: neither
            ("both", 100, 80, True, True),  # -20: abs not, but -20 %: reached
            ("absolute", 10, 200, True, True),  # +190: reached (percent not declared)
            ("absolute", 1000, 1099, True, True),  # +99: not
            ("relative", 10, 14, True, True),  # +40 %: not
            ("relative", -10, -5, True, True),  # +50 % of |previous|: reached
            ("relative", 0, 5, True, True),  # no percentage (previous zero): not
            ("plain", 1, 1000, True, True),  # no threshold declared: never
            ("both", 1000, 5000, False, True),  # incomplete current window: never
            ("both", 1000, 5000, True, False),  # incomplete previous window: never
            ("both", np.nan, 5000, True, True),  # no change: never
        ]
    )
    expected = [True, False, True, True, False, False, True, False, False, False, False, False]
    assert flags(rows, registry).tolist() == expected


def test_per_account_uses_only_the_percentage(project: tuple[Path, Path]) -> None:
    """Per account, min_abs_change (stated in the KPI's own unit) does not apply."""
    registry = kpisheet.load_kpis(project[0])
    rows = result([("absolute", 10, 200, True, True), ("both", 100, 80, True, True)])
    assert flags(rows, registry, per_account=True).tolist() == [False, True]


def test_sheet_flagged_and_cli(project: tuple[Path, Path], tmp_path: Path) -> None:
    """sheet.flagged keeps the flagged rows of a query; `query --flagged` prints exactly those."""
    definitions, entities = project
    rows = [
        ("2020-01", "both", "X", 1000.0),
        ("2021-01", "both", "X", 1200.0),
        ("2020-01", "both", "Y", 1000.0),
        ("2021-01", "both", "Y", 1050.0),
    ]
    data = tmp_path / "data.csv"
    pd.DataFrame(rows, columns=["month", "kpi", "entity", "value"]).to_csv(data, index=False)
    sheet = kpisheet.open(data, definitions=definitions, entities=entities)
    flagged = sheet.flagged(sheet.query(as_of="2021-01"))
    assert list(zip(flagged["entity"], flagged["change"], strict=True)) == [
        ("T", 250.0),
        ("X", 200.0),
    ]
    args = ["--data", str(data), "--definitions", str(definitions), "--entities", str(entities)]
    out = CliRunner().invoke(main, ["query", *args, "--as-of", "2021-01", "--flagged"])
    assert out.exit_code == 0, out.output
    printed = pd.read_csv(io.StringIO(out.output))
    assert list(printed["entity"]) == ["T", "X"]
    assert list(printed["change"]) == [250.0, 200.0]
