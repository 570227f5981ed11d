"""Tests of kpisheet.plugins and kpisheet.builtin: the plugin manager and plugins' KPI definitions."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import kpisheet
from kpisheet import builtin, hookspecs
from kpisheet.errors import DefinitionError
from kpisheet.plugins import BUILTIN_PLUGIN, definition_sources, get_plugin_manager
from tests.plugins import extra_kpis

KPISHEET = Path(sys.executable).with_name("kpisheet")
CHECKOUT_DEFINITIONS = Path(__file__).resolve().parents[1] / "kpi_definitions"


def test_builtin_plugin_contributes_the_demo_sheet() -> None:
    """The built-in plugin is registered by name and contributes the sheet's kpi_definitions/."""
    manager = get_plugin_manager(entry_points=False)
    assert manager.get_plugin(BUILTIN_PLUGIN) is builtin
    assert manager.project_name == hookspecs.PROJECT_NAME == "kpisheet"
    assert manager.hook.kpisheet_definition_paths() == [[builtin.builtin_definitions_dir()]]
    assert builtin.builtin_definitions_dir().resolve() == CHECKOUT_DEFINITIONS
    assert definition_sources(manager) == [(builtin.builtin_definitions_dir(), BUILTIN_PLUGIN)]


def test_hookimpl_is_exported() -> None:
    """Plugins import the marker from the package root; it marks hooks of project 'kpisheet'."""
    assert kpisheet.hookimpl is hookspecs.hookimpl
    assert kpisheet.hookimpl.project_name == "kpisheet"


def test_test_plugin_adds_kpis_after_the_builtin_ones() -> None:
    """A registered plugin's KPIs join the registry after the built-in ones, with its name as origin."""
    manager = get_plugin_manager(entry_points=False)
    manager.register(extra_kpis, name="extra_kpis")
    registry = kpisheet.load_kpis(manager=manager)
    assert registry.ids[-2:] == ("nca_rejected", "nca_open")
    assert len(registry) == 16
    origin = registry.origin("nca_open")
    assert origin.plugin == "extra_kpis"
    assert Path(origin.file).resolve() == extra_kpis.DEFINITIONS / "rejections.yaml"
    assert registry.origin("turnover").plugin == BUILTIN_PLUGIN
    assert registry.leaf_components("nca_open") == ("nca_received", "nca_approved", "nca_rejected")
    assert [kpi.id for kpi in registry.in_group("NCA")] == [
        "nca_received",
        "nca_approved",
        "nca_approval_rate",
        "nca_rejected",
        "nca_open",
    ]


def test_plugin_managers_are_independent() -> None:
    """A plugin registered on one manager does not appear in a fresh one."""
    first = get_plugin_manager(entry_points=False)
    first.register(extra_kpis, name="extra_kpis")
    assert len(kpisheet.load_kpis(manager=get_plugin_manager(entry_points=False))) == 14


def test_explicit_definitions_replace_plugins(tmp_path: Path) -> None:
    """Definitions given explicitly are used alone, without the built-in sheet or plugins."""
    (tmp_path / "a.yaml").write_text(
        "id: x\nlabel: X\ngroup: G\nunit: count\ntime_aggregation: sum\n", encoding="utf-8"
    )
    manager = get_plugin_manager(entry_points=False)
    manager.register(extra_kpis, name="extra_kpis")
    assert kpisheet.load_kpis([tmp_path], manager=manager).ids == ("x",)


class DuplicatePlugin:
    """A plugin object (not a module) whose KPI clashes with a built-in id."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @kpisheet.hookimpl
    def kpisheet_definition_paths(self) -> list[Path]:
        return [self.directory / "turnover.yaml", self.directory / "missing.yaml"]


def test_plugin_problems_are_reported_with_builtin_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin's duplicate id names the built-in file, and a missing path names the plugin."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "turnover.yaml").write_text(
        "id: turnover\nlabel: Umsatz\ngroup: Umsatz\nunit: currency\ntime_aggregation: sum\n",
        encoding="utf-8",
    )
    manager = get_plugin_manager(entry_points=False)
    manager.register(DuplicatePlugin(tmp_path), name="clash")
    with pytest.raises(DefinitionError) as info:
        kpisheet.load_kpis(manager=manager)
    [duplicate, missing] = [str(problem) for problem in info.value.problems]
    builtin_file = str(builtin.builtin_definitions_dir() / "10_umsatz.yaml")
    assert re.fullmatch(
        re.escape("turnover.yaml:1: KPI 'turnover': duplicate id; already declared in ")
        + r".*"
        + re.escape("10_umsatz.yaml:2"),
        duplicate,
    ), duplicate
    assert Path(builtin_file).exists()
    assert missing == f"{tmp_path / 'missing.yaml'}: no such file or directory (from clash)"


PLUGIN_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "kpisheet-plugin-fixture"
version = "0.1.0"

[project.entry-points.kpisheet]
fixture_kpis = "kpisheet_plugin_fixture"

[tool.hatch.build.targets.wheel]
packages = ["kpisheet_plugin_fixture"]
"""

PLUGIN_MODULE = '''\
"""A separately installed kpisheet plugin."""

from pathlib import Path

import kpisheet


@kpisheet.hookimpl
def kpisheet_definition_paths():
    return [Path(__file__).parent / "chargebacks.yaml"]
'''

PLUGIN_KPIS = """\
- id: chargebacks
  label: Anzahl Rückbuchungen
  group: Anzahl Trx
  unit: count
  time_aggregation: sum
  source: {kpi_name: "Anzahl Chargebacks"}
- id: chargeback_rate
  label: Rückbuchungsquote
  group: Anzahl Trx
  unit: percent
  formula: chargebacks / transactions
"""


@pytest.mark.slow
def test_installed_package_with_entry_point_shows_in_kpis(tmp_path: Path) -> None:
    """A separately installed package with a 'kpisheet' entry point has its KPIs in `kpisheet kpis`."""
    source = tmp_path / "plugin"
    (source / "kpisheet_plugin_fixture").mkdir(parents=True)
    (source / "pyproject.toml").write_text(PLUGIN_PYPROJECT, encoding="utf-8")
    (source / "kpisheet_plugin_fixture" / "__init__.py").write_text(PLUGIN_MODULE, encoding="utf-8")
    (source / "kpisheet_plugin_fixture" / "chargebacks.yaml").write_text(
        PLUGIN_KPIS, encoding="utf-8"
    )
    target = tmp_path / "site"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"),
            *("--no-build-isolation", "--target", str(target), str(source)),
        ],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run(
        [str(KPISHEET), "kpis"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    installed = target / "kpisheet_plugin_fixture" / "chargebacks.yaml"
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[2:]}
    assert len(rows) == 16
    assert rows["chargebacks"].endswith(f"fixture_kpis: {installed.relative_to(tmp_path)}")
    assert rows["chargeback_rate"].split("  ")[0] == "chargeback_rate"
    assert rows["turnover"].split()[-2] == f"{BUILTIN_PLUGIN}:"
    validated = subprocess.run(
        [str(KPISHEET), "validate"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert (validated.returncode, validated.stdout) == (0, "OK: 16 KPIs in 4 groups.\n")
    with_plugin = subprocess.run(
        [sys.executable, "-c", "import kpisheet; print(len(kpisheet.load_kpis()))"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert with_plugin.stdout == "16\n"
    without_plugin = subprocess.run(
        [sys.executable, "-c", "import kpisheet; print(len(kpisheet.load_kpis()))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert without_plugin.stdout == "14\n"


def test_installed_plugin_entry_points_are_loaded_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """get_plugin_manager() loads entry points of group 'kpisheet' found on sys.path."""
    site = tmp_path / "site"
    package = site / "kpisheet_plugin_inline"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(PLUGIN_MODULE, encoding="utf-8")
    (package / "chargebacks.yaml").write_text(PLUGIN_KPIS, encoding="utf-8")
    info = site / "kpisheet_plugin_inline-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: kpisheet-plugin-inline\nVersion: 0.1.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [kpisheet]
            inline_kpis = kpisheet_plugin_inline
            """
        ),
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(site))
    manager = get_plugin_manager()
    assert "inline_kpis" in {name for name, _ in manager.list_name_plugin()}
    registry = kpisheet.load_kpis(manager=manager)
    assert registry.origin("chargeback_rate").plugin == "inline_kpis"
    assert not get_plugin_manager(entry_points=False).has_plugin("inline_kpis")
