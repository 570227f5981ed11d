"""Tests of the package as shipped: no web imports in the core, and a wheel that carries the sheet."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kpisheet.demo import generate_observations

REPO = Path(__file__).resolve().parents[1]
WEB_PACKAGES = ("panel", "bokeh", "holoviews")


def imported_after(statement: str, packages: tuple[str, ...] = WEB_PACKAGES) -> set[str]:
    """Top-level packages among ``packages`` that a fresh interpreter has imported after ``statement``."""
    code = (
        f"import sys\n{statement}\n"
        f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & {set(packages)!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return set(result.stdout.split())


@pytest.mark.parametrize("statement", ["import kpisheet", "import kpisheet.cli"])
def test_core_does_not_import_web_packages(statement: str) -> None:
    """`import kpisheet` (and the CLI module) loads neither panel, bokeh nor holoviews."""
    assert imported_after(statement) == set()


def test_the_check_can_see_web_imports() -> None:
    """The import check does detect a web package when one is imported."""
    assert imported_after("import kpisheet, bokeh") == {"bokeh"}


def test_a_sheet_opened_from_a_file_does_not_import_the_store(tmp_path: Path) -> None:
    """Opening a Parquet file imports neither SQLAlchemy nor the store (about 14 MB and 0.3 s);
    the store's names are there when asked for, and opening a store imports it."""
    path = tmp_path / "observations.parquet"
    observations = generate_observations("2024-01", "2024-12")
    observations.assign(month=observations["month"].dt.to_timestamp()).to_parquet(path)
    opened = f"import kpisheet\nkpisheet.open({str(path)!r}).query()"
    assert imported_after(opened, ("sqlalchemy",)) == set()
    assert imported_after("import kpisheet\nkpisheet.Store", ("sqlalchemy",)) == {"sqlalchemy"}
    assert imported_after("import kpisheet\nkpisheet.open()", ("sqlalchemy",)) == {"sqlalchemy"}


@pytest.mark.slow
def test_wheel_carries_the_builtin_definitions(tmp_path: Path) -> None:
    """The wheel holds kpi_definitions/*.yaml under kpisheet/_builtin, and works installed from it."""
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", ".", "--quiet", "--no-deps"),
            *("--no-build-isolation", "--no-index", "-w", str(tmp_path)),
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("kpisheet-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"kpisheet/_builtin/kpi_definitions/{path.name}"
        for path in (REPO / "kpi_definitions").glob("*.yaml")
    }
    assert len(expected) >= 4
    assert expected <= names
    assert {"kpisheet/__init__.py", "kpisheet/builtin.py", "kpisheet_ui/__init__.py"} <= names
    # The web app's commands reach the command line through the wheel's plugin entry point.
    [entry_points] = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
    declared = zipfile.ZipFile(wheel).read(entry_points).decode("utf-8")
    assert "[kpisheet]\nkpisheet_ui = kpisheet_ui.plugin\n" in declared

    # Installed from the wheel (outside the checkout), the built-in plugin finds its copy.
    site = tmp_path / "site"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"),
            *("--target", str(site), str(wheel)),
        ],
        check=True,
        capture_output=True,
    )
    code = (
        "import kpisheet, kpisheet.builtin as b\n"
        "print(b.builtin_definitions_dir())\n"
        "print(len(kpisheet.load_kpis()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.splitlines() == [
        str(site / "kpisheet" / "_builtin" / "kpi_definitions"),
        "14",
    ]
