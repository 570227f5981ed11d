"""Tests of kpisheet.plugins and kpisheet.builtin: the plugin manager and plugins' KPI definitions."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import kpisheet
from kpisheet import builtin, hookspecs
from kpisheet.cli import KpisheetGroup, UserError, add_plugin_commands
from kpisheet.errors import DefinitionError
from kpisheet.plugins import BUILTIN_PLUGIN, definition_sources, get_plugin_manager
from tests.plugins import extra_kpis, kpi_groups

KPISHEET = Path(sys.executable).with_name("kpisheet")
REPO = Path(__file__).resolve().parents[1]
CHECKOUT_DEFINITIONS = REPO / "kpi_definitions"
PLUGINS_DOC = REPO / "docs" / "plugins.md"
#: What `kpisheet kpi-groups` of the test plugin prints for the built-in sheet.
GROUP_COUNTS = "Umsatz: 5\nAnzahl Trx: 3\nKonten: 3\nNCA: 3\n"


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


def install_entry_points(site: Path, name: str, entry_points: dict[str, str]) -> None:
    """Make ``site`` hold an installed distribution ``name`` with these ``kpisheet`` entry points."""
    info = site / f"{name}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n", encoding="utf-8"
    )
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[kpisheet]\n{lines}", encoding="utf-8")


def test_plugin_adds_a_command(tmp_path: Path) -> None:
    """A plugin's kpisheet_cli_commands adds a command that takes kpisheet's shared options."""
    manager = get_plugin_manager(entry_points=False)
    manager.register(kpi_groups, name="kpi_groups")
    group = KpisheetGroup()
    add_plugin_commands(group, manager)
    assert list(group.commands) == ["kpi-groups"]
    result = CliRunner().invoke(group, ["kpi-groups"])
    assert (result.exit_code, result.output) == (0, GROUP_COUNTS)
    (tmp_path / "a.yaml").write_text(
        "id: x\nlabel: X\ngroup: G\nunit: count\ntime_aggregation: sum\n", encoding="utf-8"
    )
    result = CliRunner().invoke(group, ["kpi-groups", "--definitions", str(tmp_path)])
    assert (result.exit_code, result.output) == (0, "G: 1\n")


class RivalCommands:
    """A plugin adding a command under a name given to it."""

    def __init__(self, name: str) -> None:
        self.name = name

    @kpisheet.hookimpl
    def kpisheet_cli_commands(self, cli: click.Group) -> None:
        cli.add_command(click.Command(self.name, help="A rival."))


@pytest.mark.parametrize(
    ("name", "owner"), [("query", "kpisheet"), ("kpi-groups", "plugin 'kpi_groups'")]
)
def test_a_command_name_taken_already_is_refused(name: str, owner: str) -> None:
    """A plugin's command named like one of kpisheet's or another plugin's is refused, naming
    both, and the first keeps its name."""
    group = KpisheetGroup()
    query = group.command("query")(lambda: None)
    manager = get_plugin_manager(entry_points=False)
    manager.register(kpi_groups, name="kpi_groups")
    manager.register(RivalCommands(name), name="rival")
    with pytest.raises(
        UserError,
        match=re.escape(
            f"plugin 'rival' adds a command {name!r}, which {owner} has already; "
            "give the plugin's command another name"
        ),
    ):
        add_plugin_commands(group, manager)
    assert group.commands["query"] is query
    assert group.commands["kpi-groups"].callback.__module__ == kpi_groups.__name__


def test_installed_plugin_adds_its_command(tmp_path: Path) -> None:
    """An installed package whose entry point implements kpisheet_cli_commands extends `kpisheet`."""
    site = tmp_path / "site"
    install_entry_points(site, "kpisheet_kpi_groups", {"kpi_groups": kpi_groups.__name__})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    ran = subprocess.run(
        [str(KPISHEET), "kpi-groups"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, GROUP_COUNTS, "")
    helped = subprocess.run(
        [str(KPISHEET), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert "  kpi-groups  Count the KPIs of each group, in the order of the sheet.\n" in (
        helped.stdout
    )
    assert "  serve " in helped.stdout


def test_command_example_of_the_docs_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command plugin of docs/plugins.md, installed with its KPIs, prints what the doc
    shows, and the doc's test of it passes."""
    text = PLUGINS_DOC.read_text(encoding="utf-8")
    blocks = {
        match["body"].splitlines()[0]: match["body"]
        for match in re.finditer(r"```(?P<kind>\w*)\n(?P<body>.*?)```", text, re.DOTALL)
    }
    site = tmp_path / "site"
    for path in (
        "card_risk_kpis/__init__.py",
        "card_risk_kpis/kpi_definitions/chargebacks.yaml",
        "card_risk_kpis/commands.py",
    ):
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_text(blocks[f"# {path}"], encoding="utf-8")
    declared = dict(
        line.replace('"', "").split(" = ")
        for line in blocks["[project.entry-points.kpisheet]"].splitlines()[1:]
    )
    assert declared == {
        "card_risk": "card_risk_kpis",
        "card_risk_commands": "card_risk_kpis.commands",
    }
    install_entry_points(site, "kpisheet_card_risk", declared)
    [console] = [body for first, body in blocks.items() if first == "$ kpisheet kpi-groups"]
    env = {**os.environ, "PYTHONPATH": str(site)}
    ran = subprocess.run(
        [str(KPISHEET), "kpi-groups"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, console.split("\n", 1)[1], "")
    # The package is imported from this test's site: not from another test's, and not after it.
    for name in [name for name in sys.modules if name.partition(".")[0] == "card_risk_kpis"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(site))
    example = next(body for first, body in blocks.items() if first.startswith("from click.testing"))
    try:
        exec(compile(example, str(PLUGINS_DOC), "exec"), {})
    finally:
        for name in [name for name in sys.modules if name.partition(".")[0] == "card_risk_kpis"]:
            del sys.modules[name]
