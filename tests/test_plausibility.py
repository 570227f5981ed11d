"""Tests of the plausibility checks at ingest: each refused input exits 1 with a message naming
month, KPI, entity and value and leaves the releases unchanged; warnings are recorded with the
release, shown by `kpisheet releases show`, and made errors by --strict."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner, Result

from kpisheet.cli import main
from kpisheet.errors import DataError, IngestConfigError
from kpisheet.ingest import ingest
from kpisheet.store import Store, sqlite_url
from tests.small_sheet import CONFIG, Sheet, history_csv, small_sheet

#: The months of the first release of these tests: far enough back to be in the past anywhere.
FIRST = [202408, 202409]
SECOND = [202408, 202409, 202410]


def run_ingest(sheet: Sheet, url: str, source: Path, *extra: str) -> Result:
    """`kpisheet ingest` of one file of the small sheet."""
    return CliRunner().invoke(
        main,
        [
            "ingest",
            "--source",
            str(source),
            "--store",
            url,
            "--definitions",
            str(sheet.definitions),
            "--entities",
            str(sheet.entities),
            "--config",
            str(sheet.config),
            *extra,
        ],
    )


@pytest.fixture
def sheet(tmp_path: Path) -> Sheet:
    """The small sheet, with jumps of turnover beyond ±50 % checked."""
    return small_sheet(tmp_path, config=CONFIG + "checks: {jumps: {turnover: 0.5}}\n")


@pytest.fixture
def url(tmp_path: Path, sheet: Sheet) -> str:
    """A store whose release 1 holds August and September 2024."""
    url = sqlite_url(tmp_path / "kpisheet.db")
    result = run_ingest(sheet, url, sheet.write("2024-09.csv", history_csv(FIRST)))
    assert result.exit_code == 0, result.stderr
    return url


def releases(url: str) -> list[tuple[int, str, str]]:
    """The store's releases: id, checksum, newest month."""
    return [(r.id, r.checksum, r.newest_month) for r in Store(url).releases()]


def assert_refused(result: Result, url: str, before: list[tuple[int, str, str]], text: str) -> None:
    """Exit 1, the message in the report, no traceback, and the releases as they were."""
    assert result.exit_code == 1, result.output
    assert text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert releases(url) == before


def test_month_after_the_current_month_is_refused(sheet: Sheet, url: str) -> None:
    """A row dated 2999-12 is refused, naming month, KPI, entity and value."""
    before = releases(url)
    content = history_csv(SECOND) + "299912,Umsatz Total,Alpha Gold,1\n"
    result = run_ingest(sheet, url, sheet.write("typo.csv", content))
    assert_refused(
        result,
        url,
        before,
        "month 2999-12 (1 row, first: month 2999-12, KPI 'turnover', entity 'Alpha Gold', "
        "value 1) is after the current month ",
    )
    assert result.stderr.rstrip().endswith("; refused (checks: future_months)")


def test_future_month_judged_against_the_date_given(tmp_path: Path, sheet: Sheet) -> None:
    """The library takes the current date, so the rule is exact: the month after it is refused."""
    source = sheet.write("2024-10.csv", history_csv(SECOND))
    url = sqlite_url(tmp_path / "other.db")
    options = {
        "definitions": [sheet.definitions],
        "entities": sheet.entities,
        "config": sheet.config,
    }
    with pytest.raises(
        DataError,
        match=re.escape(
            "month 2024-10 (6 rows, first: month 2024-10, KPI 'accounts', entity 'Alpha Gold', "
            "value 86) is after the current month 2024-09; refused (checks: future_months)"
        ),
    ):
        ingest(source, url, today=date(2024, 9, 30), **options)
    assert ingest(source, url, today=date(2024, 10, 1), **options).newest_month == "2024-10"


def test_months_beyond_the_month_after_the_previous_release_are_refused(
    sheet: Sheet, url: str
) -> None:
    """A delivery that skips a month (or has a year typed wrong) is refused."""
    before = releases(url)
    result = run_ingest(sheet, url, sheet.write("skip.csv", history_csv([*SECOND, 202411])))
    assert_refused(
        result,
        url,
        before,
        "month 2024-11 (6 rows, first: month 2024-11, KPI 'accounts', entity 'Alpha Gold', "
        "value 87) is more than 1 month after 2024-09, the newest month of release 1; "
        "refused (checks: months_after_previous)",
    )


def test_empty_value_column_is_refused(sheet: Sheet, url: str) -> None:
    """A file whose value column holds no value at all is refused, naming the column."""
    before = releases(url)
    lines = history_csv(SECOND).splitlines()
    emptied = [lines[0]] + [line.rsplit(",", 1)[0] + "," for line in lines[1:]]
    source = sheet.write("empty.csv", "\n".join(emptied) + "\n")
    result = run_ingest(sheet, url, source)
    assert_refused(
        result,
        url,
        before,
        f"{source}: the value column 'value' is empty in all 18 rows; refused "
        "(checks: empty_values)",
    )


def test_ambiguous_dates_are_refused_unless_the_format_is_named(
    tmp_path: Path, sheet: Sheet, url: str
) -> None:
    """01/10/2024 could be January or October: refused, naming the values, until the
    configuration names the format; a column with 30/09/2024 shows its order by itself."""
    before = releases(url)
    csv = history_csv(SECOND)
    for month, text in ((202408, "01/08/2024"), (202409, "01/09/2024"), (202410, "01/10/2024")):
        csv = csv.replace(f"\n{month},", f"\n{text},")
    source = sheet.write("dates.csv", csv)
    result = run_ingest(sheet, url, source)
    assert_refused(
        result,
        url,
        before,
        f"{source}: month is a date that may be day first or month first; name the format in "
        "the ingest configuration (date_format: '%d/%m/%Y' or '%m/%d/%Y'): line 2 "
        "('01/08/2024'), line 3 ('01/08/2024')",
    )
    sheet.write("ingest.yaml", CONFIG + "date_format: '%d/%m/%Y'\n")
    assert run_ingest(sheet, url, source).exit_code == 0
    assert Store(url).latest().newest_month == "2024-10"
    month_ends = csv.replace("01/08/2024", "31/08/2024").replace("01/09/2024", "30/09/2024")
    sheet.write("ingest.yaml", CONFIG)
    result = run_ingest(sheet, url, sheet.write("month-ends.csv", month_ends))
    assert result.exit_code == 0, result.stderr
    assert Store(url).latest().newest_month == "2024-10"


def test_late_data_is_a_warning_recorded_with_the_release(sheet: Sheet, url: str) -> None:
    """A product that reported September but not October is written with a warning that
    `kpisheet releases show` lists; --strict refuses the same file."""
    csv = history_csv(SECOND)
    late = "\n".join(
        line for line in csv.splitlines() if not line.startswith("202410,Umsatz Total,Beta")
    )
    source = sheet.write("late.csv", late + "\n")
    warning = (
        "late data: entity 'Beta Classic' has no value of KPI 'turnover' for 2024-10, the "
        "newest month (value 485 for 2024-09)"
    )
    before = releases(url)
    strict = run_ingest(sheet, url, source, "--strict")
    assert_refused(strict, url, before, f"{warning} (a warning, an error with --strict)")
    result = run_ingest(sheet, url, source)
    assert result.exit_code == 0, result.stderr
    assert f"warning: {warning}\n" in result.stderr
    shown = CliRunner().invoke(main, ["releases", "show", "2", "--store", url])
    assert shown.exit_code == 0
    assert shown.stdout.splitlines()[-2:] == ["warnings: 1", f"  {warning}"]
    assert (
        CliRunner()
        .invoke(main, ["releases", "show", "1", "--store", url])
        .stdout.endswith("warnings: 0\n")
    )


def test_jump_beyond_the_kpi_threshold_is_a_warning(sheet: Sheet, url: str) -> None:
    """A month-on-month change beyond the KPI's threshold is a warning naming the values;
    --strict refuses it; KPIs without a threshold are not checked."""
    csv = history_csv(SECOND, changed={(202410, "turnover", "Alpha Gold"): 5000.0})
    csv = csv.replace("202410,Anzahl Konten,Alpha Gold,86", "202410,Anzahl Konten,Alpha Gold,900")
    source = sheet.write("jump.csv", csv)
    warning = (
        "jump: KPI 'turnover' of entity 'Alpha Gold' went from 985 in 2024-09 to 5,000 in "
        "2024-10 (+408%), beyond ±50% (checks: jumps)"
    )
    before = releases(url)
    assert_refused(
        run_ingest(sheet, url, source, "--strict"),
        url,
        before,
        f"{warning} (a warning, an error with --strict)",
    )
    result = run_ingest(sheet, url, source)
    assert result.exit_code == 0, result.stderr
    assert [w.message for w in Store(url).warnings(2)] == [warning]


def test_unknown_kpi_in_jump_thresholds_is_a_configuration_error(tmp_path: Path) -> None:
    """A threshold for a KPI the sheet does not have is reported with the KPIs it has."""
    sheet = small_sheet(tmp_path, config=CONFIG + "checks: {jumps: {umsatz: 0.5}}\n")
    with pytest.raises(
        IngestConfigError,
        match=re.escape(
            "ingest.yaml: checks.jumps: unknown KPI 'umsatz'; known: turnover, accounts "
            "(or 'default')"
        ),
    ):
        ingest(
            sheet.write("a.csv", history_csv(FIRST)),
            sqlite_url(tmp_path / "kpisheet.db"),
            definitions=[sheet.definitions],
            entities=sheet.entities,
            config=sheet.config,
        )


def test_checks_can_be_switched_off(tmp_path: Path) -> None:
    """With future_months: 'off' a far-future month loads (e.g. for plan data)."""
    sheet = small_sheet(tmp_path, config=CONFIG + "checks: {future_months: 'off'}\n")
    info = ingest(
        sheet.write("plan.csv", history_csv([209912])),
        sqlite_url(tmp_path / "kpisheet.db"),
        definitions=[sheet.definitions],
        entities=sheet.entities,
        config=sheet.config,
    )
    assert info.newest_month == pd.Period("2099-12", "M").strftime("%Y-%m")
