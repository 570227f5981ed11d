"""The held-out project (tests/data/heldout): ``kpisheet query --format csv`` gives the figures of
the brute-force reference for every window and several as-of months (issue 3, "Done when")."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from kpisheet.cli import main
from kpisheet.constants import Window
from tests.reference import Reference, assert_same_table, load_project

HELDOUT = Path(__file__).parent / "data" / "heldout"
WINDOWS = [window.value for window in Window]
ARGUMENTS = [
    "--data",
    str(HELDOUT / "observations.csv"),
    "--definitions",
    str(HELDOUT / "kpis.yaml"),
    "--entities",
    str(HELDOUT / "entities.yaml"),
    "--format",
    "csv",
]

# Newest month (a stock missing), the month the Aurora brand misses, the month of zero
# denominators, the month after a zero previous value, the late start, a year without a
# previous year.
AS_OF_MONTHS = ["2023-04", "2023-02", "2023-01", "2023-03", "2022-05", "2021-12"]


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference(load_project(HELDOUT))


def query(*options: str) -> pd.DataFrame:
    """Run ``kpisheet query`` on the held-out project and read its CSV output."""
    result = CliRunner().invoke(main, ["query", *ARGUMENTS, *options])
    assert result.exit_code == 0, result.output
    return pd.read_csv(io.StringIO(result.stdout), keep_default_na=True, dtype={"as_of": str})


def test_the_project_has_what_it_is_meant_to_test(reference: Reference) -> None:
    """The data really holds the late start, missing as-of months, zero denominators, a
    discontinued series and group months with a value that are not covered."""
    values = reference.values
    may_2022, feb_2023 = 2022 * 12 + 4, 2023 * 12 + 1
    business = {m for m, _, e in values if e == "Brisa Business"}
    assert min(business) == may_2022  # late start
    assert not any(e.startswith("Aurora") for m, _, e in values if m == feb_2023)
    assert (reference.first, reference.last) == (2021 * 12, 2023 * 12 + 3)
    assert values[(2023 * 12, "purchases", "Cirrus Student")] == 0
    assert values[(2023 * 12, "cards_active", "Cirrus Student")] == 0
    assert pd.isna(values[(2023 * 12 + 3, "cards_active", "Cirrus Student")])
    platinum = [m for m, k, e in values if (k, e) == ("cards_active", "Aurora Platinum")]
    assert max(platinum) == 2022 * 12 + 8  # discontinued after 2022-09
    uncovered = [
        (month, kpi, group)
        for month in range(reference.first, reference.last + 1)
        for kpi in ("spend", "cards_active")
        for group in ("Aurora", "Nord", "Nordlicht Karten AG")
        if not pd.isna(reference.monthly(kpi, group, month))
        and not reference.covered(kpi, group, month)
    ]
    assert len(uncovered) >= 3
    flags = reference.query("2023-04", "3M")
    assert set(flags["previous_complete"]) == {True, False}
    assert set(flags["complete"]) == {True, False}


@pytest.mark.parametrize("as_of", AS_OF_MONTHS)
def test_cli_query_equals_brute_force_for_every_window(reference: Reference, as_of: str) -> None:
    """Every window at this as-of month: the CSV of ``kpisheet query`` equals the reference."""
    for window in WINDOWS:
        actual = query("--window", window, "--as-of", as_of)
        assert len(actual) > 0
        assert_same_table(actual, reference.query(as_of, window), rtol=1e-9)


@pytest.mark.parametrize("as_of", ["2023-04", "2023-01"])
def test_cli_per_account_equals_brute_force(reference: Reference, as_of: str) -> None:
    """``--per-account`` for every window equals the reference's per-card values."""
    for window in WINDOWS:
        actual = query("--window", window, "--as-of", as_of, "--per-account")
        assert_same_table(actual, reference.query(as_of, window, per_account=True))


def test_cli_levels_with_the_network_view(reference: Reference) -> None:
    """``--level network --level brand`` gives the view's groups and the brands."""
    for window in ("1M", "12M"):
        actual = query("--window", window, "--as-of", "2023-02", "--level", "network")
        expected = reference.query("2023-02", window, levels=["network"])
        assert set(actual["entity"]) == {"VISA", "MC"}
        assert_same_table(actual, expected)


def test_the_kpisheet_executable() -> None:
    """The installed ``kpisheet`` command prints the same CSV as the click command."""
    executable = Path(sys.executable).with_name("kpisheet")
    completed = subprocess.run(
        [str(executable), "query", *ARGUMENTS, "--window", "YTD", "--as-of", "2023-03"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    expected = query("--window", "YTD", "--as-of", "2023-03")
    actual = pd.read_csv(io.StringIO(completed.stdout), dtype={"as_of": str})
    pd.testing.assert_frame_equal(actual, expected)
