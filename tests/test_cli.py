"""Tests of kpisheet.cli: exit codes, messages without tracebacks, the KPI table and --help."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

import kpisheet
from kpisheet.cli import main
from kpisheet.demo import write_demo_csv
from kpisheet.errors import QUOTED_CHARS, DefinitionError
from tests.strategies import MUTATIONS, DefinitionSet, definition_sets

REPO = Path(__file__).resolve().parents[1]
KPISHEET = Path(sys.executable).with_name("kpisheet")

BROKEN = """\
- id: turnover
  label: Umsatz Total
  group: Umsatz
  unit: currency
  time_aggregation: summe
  average_per: active_accounts

- id: per_transaction
  label: Umsatz pro Trx
  grup: Umsatz
  unit: currency
  formula: turnover / transaktions
"""


def run(*args: str) -> Result:
    """Invoke the CLI in-process."""
    return CliRunner().invoke(main, list(args))


def assert_clean_exit(result: Result, code: int) -> None:
    """The command ended by itself with ``code``: no exception escaped and no traceback shown."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The paths of every command and sub-command of a click group, plugins' commands included."""
    paths = []
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        paths.append((*prefix, name))
        if isinstance(command, click.Group):
            paths += all_commands(command, (*prefix, name))
    return paths


# --- validate --------------------------------------------------------------------------------


def test_validate_builtin_sheet() -> None:
    """Without --definitions, validate checks the built-in sheet and exits 0."""
    result = run("validate")
    assert_clean_exit(result, 0)
    assert result.stdout == "OK: 14 KPIs in 4 groups.\n"


def test_validate_lists_every_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Invalid definitions give exit 1 and every problem, one per line, on stderr."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "umsatz.yaml").write_text(BROKEN, encoding="utf-8")
    result = run("validate", "--definitions", "umsatz.yaml")
    assert_clean_exit(result, 1)
    assert result.stdout == ""
    assert result.stderr == (
        "5 problems in KPI definitions:\n"
        "  umsatz.yaml:5: KPI 'turnover': time_aggregation 'summe' is not one of: "
        "sum, last, first, mean, min, max\n"
        "  umsatz.yaml:6: KPI 'turnover': average_per references unknown KPI 'active_accounts'; "
        "known KPIs: turnover, per_transaction\n"
        "  umsatz.yaml:8: KPI 'per_transaction': missing required field 'group'\n"
        "  umsatz.yaml:10: KPI 'per_transaction': unknown key 'grup' (did you mean 'group'?); "
        "allowed keys: id, label, group, unit, time_aggregation, entity_aggregation, "
        "average_per, description, source, formula, highlight\n"
        "  umsatz.yaml:12: KPI 'per_transaction': formula 'turnover / transaktions' references "
        "unknown KPI 'transaktions'; did you mean 'per_transaction'?\n"
    )


def test_validate_missing_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A --definitions path that does not exist is a problem, not a crash."""
    monkeypatch.chdir(tmp_path)
    result = run("validate", "--definitions", "nowhere")
    assert_clean_exit(result, 1)
    assert result.stderr == (
        "1 problem in KPI definitions:\n  nowhere: no such file or directory (from definitions)\n"
    )


@pytest.mark.parametrize("kind", sorted(MUTATIONS))
@settings(max_examples=10)
@given(data=st.data())
def test_validate_reports_every_mutation(kind: str, data: st.DataObject) -> None:
    """Every kind of broken definition set gives exit 1 listing all of its problems, no traceback."""
    mutation = data.draw(MUTATIONS[kind], label="mutation")
    with tempfile.TemporaryDirectory() as name:
        directory = mutation.definitions.write(Path(name).resolve())
        with pytest.raises(DefinitionError) as info:
            kpisheet.load_kpis(directory)
        result = run("validate", "--definitions", str(directory))
    assert_clean_exit(result, 1)
    lines = result.stderr.splitlines()
    assert lines[1:] == [f"  {problem}" for problem in info.value.problems]


@settings(max_examples=10)
@given(definitions=definition_sets())
def test_validate_accepts_valid_sets(definitions: DefinitionSet) -> None:
    """Every valid generated set validates with exit 0 and the KPI count."""
    with tempfile.TemporaryDirectory() as name:
        directory = definitions.write(Path(name).resolve())
        result = run("validate", "--definitions", str(directory))
    assert_clean_exit(result, 0)
    groups = len({kpi["group"] for kpi in definitions.kpis})
    assert result.stdout == f"OK: {len(definitions.ids)} KPIs in {groups} groups.\n"


def test_no_traceback_from_the_real_command(tmp_path: Path) -> None:
    """The installed `kpisheet` command prints the problems without a traceback and exits 1."""
    (tmp_path / "umsatz.yaml").write_text(BROKEN, encoding="utf-8")
    result = subprocess.run(
        [str(KPISHEET), "validate", "--definitions", "umsatz.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("5 problems in KPI definitions:\n  umsatz.yaml:5: ")


# --- kpis ------------------------------------------------------------------------------------


def test_kpis_table_of_the_builtin_sheet(monkeypatch: pytest.MonkeyPatch) -> None:
    """`kpisheet kpis` lists every KPI with label, group, aggregation and origin, aligned."""
    monkeypatch.chdir(REPO)
    result = run("kpis")
    assert_clean_exit(result, 0)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["id", "label", "group", "aggregation", "origin"]
    assert set(lines[1]) == {"-", " "}
    assert len(lines) == 2 + 14
    assert lines[2].split("  ")[0] == "turnover"
    assert " ".join(lines[2].split()) == (
        "turnover Umsatz Total Umsatz sum kpisheet.builtin: kpi_definitions/10_umsatz.yaml"
    )
    assert " ".join(lines[12].split()) == (
        "activity_rate Aktivitätsquote Konten formula: active_accounts / valid_accounts "
        "kpisheet.builtin: kpi_definitions/30_konten.yaml"
    )
    origin_column = lines[0].index("origin")
    assert all(line[origin_column:].startswith("kpisheet.builtin: ") for line in lines[2:])


def test_kpis_with_definitions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With --definitions, only those KPIs are listed, their origin the file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.yaml").write_text(
        "id: x\nlabel: X\ngroup: G\nunit: count\ntime_aggregation: last\n", encoding="utf-8"
    )
    result = run("kpis", "--definitions", "a.yaml")
    assert_clean_exit(result, 0)
    assert result.stdout.splitlines()[2].split() == [
        "x",
        "X",
        "G",
        "last",
        "definitions:",
        "a.yaml",
    ]


def test_kpis_with_invalid_definitions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kpisheet kpis` on invalid definitions exits 1 with the problems, no table."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "umsatz.yaml").write_text(BROKEN, encoding="utf-8")
    result = run("kpis", "--definitions", "umsatz.yaml")
    assert_clean_exit(result, 1)
    assert result.stdout == ""
    assert result.stderr.startswith("5 problems in KPI definitions:\n")


# --- help ------------------------------------------------------------------------------------


def test_every_command_has_help() -> None:
    """`--help` works on the group and on every command, and describes it."""
    paths = all_commands(main)
    assert {("validate",), ("kpis",), ("serve",), ("users", "add")} <= set(paths)
    for path in [(), *paths]:
        result = run(*path, "--help")
        assert_clean_exit(result, 0)
        assert result.stdout.startswith(f"Usage: main {' '.join(path)}".rstrip())
        command: click.Command | None = main
        for name in path:
            assert isinstance(command, click.Group)
            command = command.get_command(click.Context(command), name)
        assert command is not None
        assert command.help, f"{' '.join(path)} has no help text"


def test_unknown_command_is_a_usage_error() -> None:
    """An unknown command exits 2 with click's usage message, no traceback."""
    result = run("validat")
    assert_clean_exit(result, 2)
    assert "No such command 'validat'" in result.stderr


# -- expected failures: one line, exit 1, no traceback ---------------------------------------


def assert_one_line_failure(result: Result, message: str) -> None:
    """The command failed with exactly ``message`` on one line, exit 1 and no traceback."""
    assert_clean_exit(result, 1)
    assert result.stderr == message + "\n"


@pytest.mark.parametrize(
    "args",
    [
        ("query",),
        ("query", "--format", "xlsx"),
        ("chart", "--kpi", "turnover", "--entity", "Kartenwelt AG"),
        ("explain", "--kpi", "turnover", "--entity", "B2C"),
    ],
)
def test_output_in_a_missing_directory_is_refused_before_any_work(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """An --output in a directory that does not exist is a one-line message, exit 1."""
    target = tmp_path / "missing" / ("out.png" if args[0] == "chart" else "out.csv")
    result = run(*args, "--output", str(target))
    assert_one_line_failure(
        result, f"cannot write {target}: there is no directory {tmp_path / 'missing'}"
    )


def test_output_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    """An --output naming a directory is a one-line message, exit 1."""
    result = run("query", "--output", str(tmp_path))
    assert_one_line_failure(result, f"cannot write {tmp_path}: it is a directory; give a file name")


def test_output_that_cannot_be_written_is_one_line() -> None:
    """A file the system refuses to create (in /proc) is a one-line message with the reason."""
    result = run("query", "--output", "/proc/kpisheet-test.csv")
    assert_one_line_failure(
        result, "cannot write /proc/kpisheet-test.csv: No such file or directory"
    )


def test_demo_output_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    """`kpisheet demo --output` below a file (no directory can be made there) is one line."""
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    target = tmp_path / "a-file" / "demo"
    result = run("demo", "--output", str(target))
    assert_one_line_failure(result, f"cannot write {target}: Not a directory")


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    """`kpisheet serve` on a port another program listens on ends with a message, exit 1."""
    import socket

    with socket.socket() as taken:
        taken.bind(("localhost", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(KPISHEET), "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr == (
        f"cannot serve on localhost:{port}: the port is in use (another server?); "
        "choose another with --port/--address\n"
    )


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true"]
)
def test_in_memory_store_is_refused(tmp_path: Path, url: str) -> None:
    """An in-memory store URL would keep nothing: ingest refuses it, writing nothing."""
    source = write_demo_csv(tmp_path / "demo.csv", start="2026-01", end="2026-02")
    result = run("ingest", "--source", str(source), "--store", url)
    assert_one_line_failure(
        result,
        f"--store {url} is an in-memory database, gone when kpisheet exits; give a file, "
        "e.g. sqlite:///kpisheet.db",
    )
    assert "written" not in result.stdout


def test_param_without_query_is_refused(tmp_path: Path) -> None:
    """--param binds a query parameter; without --query or --entities-query it is refused
    instead of ignored."""
    source = write_demo_csv(tmp_path / "demo.csv", start="2026-01", end="2026-02")
    store = tmp_path / "kpisheet.db"
    result = run(
        "ingest", "--source", str(source), "--store", f"sqlite:///{store}", "--param", "a=1"
    )
    assert_one_line_failure(
        result,
        "--param a binds a parameter of a --query or --entities-query, and neither was given; "
        "give the query with --query FILE.sql, or leave out --param",
    )
    assert not store.exists()


def test_escape_sequences_from_input_are_printed_escaped() -> None:
    """A terminal escape sequence in a KPI name reaches the terminal as text, not as a command."""
    result = run("query", "--kpi", "\x1b[2J\x1b]0;owned\x07x")
    assert_clean_exit(result, 1)
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert result.stderr.startswith("unknown KPI '\\x1b[2J\\x1b]0;owned\\x07x'; known: turnover,")


def test_a_60_mib_field_is_quoted_short_within_memory_limits(tmp_path: Path) -> None:
    """A 60 MiB entity name is quoted cut to a few hundred characters, within 2 GiB, no traceback."""
    from tests.limits import run_limited

    path = tmp_path / "big.csv"
    path.write_text(
        "month,kpi,entity,value\n2026-01,turnover," + "X" * (60 * 2**20) + ",1\n",
        encoding="utf-8",
    )
    result = run_limited(
        "from kpisheet.sheet import open as open_sheet\nopen_sheet(sys.argv[1])", str(path)
    )
    shown = "X" * QUOTED_CHARS
    assert result["error"] == (
        f"1 problem in data {path}:\n"
        f"  {path}: unknown entity '{shown}'… ({60 * 2**20:,} characters) in 1 row (line 2)"
    )


def test_releases_verify_names_a_changed_release(tmp_path: Path) -> None:
    """`releases verify` passes untouched releases and names one changed with SQL, exit 1."""
    import sqlite3

    from kpisheet.store import Store, sqlite_url

    source = write_demo_csv(tmp_path / "demo.csv", start="2026-01", end="2026-02")
    url = sqlite_url(tmp_path / "kpisheet.db")
    for _ in range(2):
        assert_clean_exit(run("ingest", "--source", str(source), "--store", url), 0)
    with Store(url) as store:
        checksum = store.releases()[1].checksum
    ok = run("releases", "verify", "--store", url)
    assert_clean_exit(ok, 0)
    assert [line.split(":")[0] for line in ok.stdout.splitlines()] == [
        "release 1 (724 rows)",
        "release 2 (724 rows)",
    ]
    with sqlite3.connect(tmp_path / "kpisheet.db") as conn:
        conn.execute("UPDATE kpisheet_observations SET value = 0 WHERE release_id = 2")
    with Store(url) as store:
        actual = store.verify(2)[0].actual
    changed = run("releases", "--store", url, "verify")
    assert_clean_exit(changed, 1)
    assert changed.stdout.startswith("release 1 (724 rows): OK")
    assert changed.stderr == (
        f"1 release of {url} changed since written:\n"
        f"  release 2 (724 rows): CHANGED — checksum written {checksum[:12]}…, now "
        f"{actual[:12]}…; its values were changed outside kpisheet\n"
    )
    served = run("validate", "--data", url)  # from the snapshot, which rows changed with SQL miss
    assert_clean_exit(served, 0)
    with sqlite3.connect(tmp_path / "kpisheet.db") as conn:
        conn.execute(
            "UPDATE kpisheet_snapshots SET data = zeroblob(length(data)) WHERE release_id = 2"
        )
    refused = run("validate", "--data", url)
    assert_clean_exit(refused, 1)
    assert f"store {url}: release 2 does not match its checksum: its snapshot" in refused.stderr
    only_first = run("releases", "verify", "1", "--store", url)
    assert_clean_exit(only_first, 0)
    assert only_first.stdout.startswith("release 1 (724 rows): OK")


EXPLAIN_COLUMNS_TEXT = (
    "as_of,window,kpi,entity,member,level,value,previous_value,change,contribution,"
    "rate_effect,mix_effect,complete,previous_complete"
)


def test_explain_csv_has_the_documented_columns_and_sums_to_the_change() -> None:
    """`kpisheet explain` prints one row per member with exactly the documented columns; the
    contributions add up to the group's change from `kpisheet query`."""
    import io
    import math

    import pandas as pd

    result = run("explain", "--kpi", "turnover", "--entity", "B2C", "--window", "12M")
    assert_clean_exit(result, 0)
    assert result.stdout.splitlines()[0] == EXPLAIN_COLUMNS_TEXT
    members = pd.read_csv(io.StringIO(result.stdout))
    assert set(members["level"]) == {"mandant"} and set(members["entity"]) == {"B2C"}
    assert members["rate_effect"].isna().all() and members["mix_effect"].isna().all()
    query = run("query", "--kpi", "turnover", "--entity", "B2C", "--window", "12M")
    change = pd.read_csv(io.StringIO(query.stdout))["change"].iloc[0]
    assert math.isclose(math.fsum(members["contribution"]), change, rel_tol=1e-12)
    abroad = run(
        "explain",
        "--kpi",
        "turnover_abroad_share",
        "--entity",
        "Kartenwelt AG",
        "--by",
        "cardprofile",
    )
    assert_clean_exit(abroad, 0)
    shares = pd.read_csv(io.StringIO(abroad.stdout))
    assert list(shares["member"].sort_values()) == ["CC", "CH", "PP"]
    assert (
        shares["rate_effect"] + shares["mix_effect"] - shares["contribution"]
    ).abs().max() < 1e-15


def test_explain_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    """A KPI without an exact split, an unknown entity or xlsx without --output: a clear
    message and exit 1."""
    result = run("explain", "--kpi", "turnover", "--entity", "B2D")
    assert_clean_exit(result, 1)
    assert result.stderr.startswith("unknown entity 'B2D' (did you mean 'B2C'?)")
    result = run("explain", "--kpi", "turnover", "--entity", "B2C", "--format", "xlsx")
    assert_clean_exit(result, 1)
    assert result.stderr == "--format xlsx writes a file; give it with --output FILE.xlsx\n"


def test_explain_xlsx_is_german_with_a_selection_sheet(tmp_path: Path) -> None:
    """The XLSX has German headers, numbers as numbers, the share of the change and an
    "Auswahl" sheet saying whether the change is fully explained."""
    import openpyxl

    target = tmp_path / "warum.xlsx"
    result = run(
        "explain", "--kpi", "activity_rate", "--entity", "B2C", "--window", "3M",
        "--format", "xlsx", "--output", str(target),
    )  # fmt: skip
    assert_clean_exit(result, 0)
    workbook = openpyxl.load_workbook(target)
    assert workbook.sheetnames == ["Warum", "Auswahl"]
    rows = list(workbook["Warum"].iter_rows(values_only=True))
    assert rows[0] == (
        "Stichtag", "Fenster", "KPI", "KPI-Bezeichnung", "Gruppe", "Mitglied", "Ebene", "Wert",
        "Vorjahr", "Abw. VJ", "Beitrag zur Abw.", "Anteil an der Abw.", "Rateneffekt",
        "Mixeffekt", "Vollständig", "Vollständig VJ",
    )  # fmt: skip
    shares = [row[11] for row in rows[1:]]
    assert abs(sum(shares) - 1) < 1e-9 and all(isinstance(row[10], float) for row in rows[1:])
    selection = {row[0]: row[1] for row in workbook["Auswahl"].iter_rows(values_only=True)}
    assert selection["Vollständig erklärt"] == "ja"
    assert selection["Mitglieder"] == "Mandant"
