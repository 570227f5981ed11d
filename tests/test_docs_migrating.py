"""docs/migrating.md runs as written: its files are written and every command of it runs, in
order, on a sample of the old dashboard's data in both formats (tests/old_dashboard.py)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from kpisheet.cli import main
from kpisheet.store import Store
from tests.old_dashboard import write_sample

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "migrating.md"
BLOCK = re.compile(r"```(yaml|sql|console)\n(.*?)```", re.DOTALL)
#: A file block starts with a comment naming the file: "# migrate.yaml: ..." or "-- x.sql: ...".
FILE_NAME = re.compile(r"(?:#|--) ([\w./-]+\.(?:yaml|sql)):")
#: The project directory the guide's output shows.
PROJECT = "/srv/kpisheet"


def blocks() -> list[tuple[str, str]]:
    """The guide's YAML, SQL and console blocks, in order."""
    return BLOCK.findall(GUIDE.read_text(encoding="utf-8"))


def files() -> dict[str, str]:
    """The files the guide writes, by name."""
    found = {}
    for kind, body in blocks():
        match = FILE_NAME.match(body)
        if kind != "console" and match:
            found[match.group(1)] = body
    return found


def commands() -> list[tuple[list[str], list[str]]]:
    """Every `$ kpisheet` command of the guide with the output lines it shows."""
    found: list[tuple[list[str], list[str]]] = []
    for kind, body in blocks():
        if kind != "console":
            continue
        for line in body.splitlines():
            if line.startswith("$ kpisheet "):
                found.append((shlex.split(line[len("$ kpisheet ") :]), []))
            elif found and line.strip():
                found[-1][1].append(line)
    return found


def test_the_guide_has_its_files_and_commands() -> None:
    """The guide writes definitions, the configuration and both queries, and has its commands."""
    assert sorted(files()) == [
        "extract.sql",
        "kpi_definitions/sheet.yaml",
        "migrate.yaml",
        "products.sql",
    ]
    assert len(commands()) == 7


def test_every_command_of_the_guide_runs_on_the_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a directory with the sample, each command exits 0 and prints the lines the guide
    shows; the end state is two releases, the second restating September's turnover."""
    write_sample(tmp_path)
    for name, body in files().items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for args, shown in commands():
        result = runner.invoke(main, args)
        output = result.output.replace(str(tmp_path), PROJECT)
        assert result.exit_code == 0, f"kpisheet {shlex.join(args)}:\n{output}"
        assert output.splitlines()[: len(shown)] == shown, shlex.join(args)
    infos = Store(str(tmp_path / "kpisheet.db")).releases()
    assert [(info.id, info.newest_month, info.note) for info in infos] == [
        (1, "2024-09", "migrated from the old dashboard"),
        (2, "2024-10", "October"),
    ]
