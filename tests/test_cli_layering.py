"""The command line keeps the layers apart: the core never imports the web app, whose commands
come through the hook ``kpisheet_cli_commands``, and the core works without the app."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from kpisheet.cli import APP_COMMANDS, APP_PACKAGE, main
from kpisheet.plugins import get_plugin_manager

CORE = Path(__file__).resolve().parents[1] / "src" / "kpisheet"
#: Runs the command line in a fresh interpreter in which the app package cannot be imported,
#: as when it is not installed (``None`` in ``sys.modules`` stops every import of it).
WITHOUT_APP = (
    f"import sys; sys.modules[{APP_PACKAGE!r}] = None; "
    "from kpisheet.cli import main; main(prog_name='kpisheet')"
)


def run_without_app(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``kpisheet ARGS`` run in ``directory`` by an interpreter that cannot import the app."""
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_APP, *args], cwd=directory, capture_output=True, text=True
    )


MISSING_APP = (
    "kpisheet {command} is a command of the web app, package kpisheet_ui, which is not "
    "installed; reinstall kpisheet to get it\n"
)


def imported_modules(source: str) -> set[str]:
    """Every module a Python source imports: ``import``, ``from ... import`` and
    ``import_module``/``__import__`` calls with a literal name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def app_imports(source: str) -> set[str]:
    """The modules of the app package among those a source imports."""
    return {
        name
        for name in imported_modules(source)
        if name == APP_PACKAGE or name.startswith(f"{APP_PACKAGE}.")
    }


def test_the_import_check_sees_every_kind_of_app_import() -> None:
    """The check finds imports of the app in each form, and not a module that merely starts alike."""
    source = (
        "import kpisheet_ui\n"
        "import os, kpisheet_ui.app as app\n"
        "def f():\n"
        "    from kpisheet_ui.serve import serve\n"
        "    importlib.import_module('kpisheet_ui.users')\n"
        "    return __import__('kpisheet_ui.state')\n"
        "import kpisheet_uix\n"
        "from . import kpisheet_ui\n"
    )
    assert app_imports(source) == {
        "kpisheet_ui",
        "kpisheet_ui.app",
        "kpisheet_ui.serve",
        "kpisheet_ui.users",
        "kpisheet_ui.state",
    }


def test_no_core_module_imports_the_app() -> None:
    """No module under src/kpisheet (cli.py included) imports kpisheet_ui, not even inside a function."""
    modules = sorted(CORE.rglob("*.py"))
    assert CORE / "cli.py" in modules
    offenders = {
        str(path.relative_to(CORE)): sorted(found)
        for path in modules
        if (found := app_imports(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}


def test_app_commands_come_from_the_app_plugin() -> None:
    """`serve` and `users` are the app's own commands, added by its installed plugin."""
    manager = get_plugin_manager()
    assert manager.get_plugin(APP_PACKAGE).__name__ == "kpisheet_ui.plugin"
    context = click.Context(main)
    for name in APP_COMMANDS:
        assert main.get_command(context, name).callback.__module__ == "kpisheet_ui.commands"


@pytest.mark.parametrize(
    ("command", "usage"),
    [("serve", "Serve the web app"), ("users", "Manage the users of the web app's login")],
)
def test_app_commands_have_help(command: str, usage: str) -> None:
    """`kpisheet serve --help` and `kpisheet users --help` work through the hook."""
    result = CliRunner().invoke(main, [command, "--help"], prog_name="kpisheet")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Usage: kpisheet {command} [OPTIONS]")
    assert usage in result.stdout


def test_serve_shows_its_environment_variables() -> None:
    """The settings `kpisheet serve` takes from the environment are named in its help."""
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    shown = re.findall(r"\[env var: (\w+)", " ".join(result.stdout.split()))
    assert shown == [
        "KPISHEET_STORE",
        "KPISHEET_DEFINITIONS",
        "KPISHEET_ENTITIES",
        "KPISHEET_AUTH",
        "KPISHEET_POLL_SECONDS",
        "KPISHEET_USAGE_LOG",
    ]


def test_core_commands_do_not_import_the_app_commands(tmp_path: Path) -> None:
    """`kpisheet kpis` loads the app's small plugin module (as every plugin) but not its commands."""
    code = (
        "import sys\n"
        "from kpisheet.cli import main\n"
        "main(['kpis'], standalone_mode=False)\n"
        "print(sorted(m for m in sys.modules if m.startswith('kpisheet_ui')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines()[-1] == "['kpisheet_ui', 'kpisheet_ui.plugin']"


@pytest.mark.parametrize("command", APP_COMMANDS)
def test_app_command_without_the_app_is_one_line(tmp_path: Path, command: str) -> None:
    """Without the app package, its commands end with one line naming the package, exit 1."""
    result = run_without_app(tmp_path, command, "--help")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == MISSING_APP.format(command=command)


def test_core_works_without_the_app(tmp_path: Path) -> None:
    """Without the app package, `kpisheet --help` lists the core's commands and `kpis` works."""
    helped = run_without_app(tmp_path, "--help")
    assert (helped.returncode, helped.stderr) == (0, "")
    listed = helped.stdout.split("Commands:\n")[1]
    names = [line.split()[0] for line in listed.splitlines() if line.startswith("  ")]
    assert names == [
        "chart",
        "demo",
        "explain",
        "ingest",
        "kpis",
        "query",
        "releases",
        "store",
        "validate",
    ]
    kpis = run_without_app(tmp_path, "kpis")
    assert (kpis.returncode, kpis.stderr) == (0, "")
    assert len(kpis.stdout.splitlines()) == 2 + 14


def test_serve_reads_its_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """KPISHEET_* variables fill serve's options as `panel serve` reads them (definitions split
    at os.pathsep); an option given on the command line wins."""
    monkeypatch.setenv("KPISHEET_STORE", "sqlite:///kpis.db")
    monkeypatch.setenv("KPISHEET_DEFINITIONS", os.pathsep.join(["a", "b"]))
    monkeypatch.setenv("KPISHEET_ENTITIES", "entities.yaml")
    monkeypatch.setenv("KPISHEET_AUTH", "users.json")
    monkeypatch.setenv("KPISHEET_POLL_SECONDS", "2.5")
    monkeypatch.setenv("KPISHEET_USAGE_LOG", "usage.log")
    serve = main.get_command(click.Context(main), "serve")
    params = serve.make_context("serve", ["--entities", "other.yaml"]).params
    assert {name: params[name] for name in ("store_url", "definitions", "entities")} == {
        "store_url": "sqlite:///kpis.db",
        "definitions": (Path("a"), Path("b")),
        "entities": Path("other.yaml"),
    }
    assert (params["auth_file"], params["poll_seconds"], params["usage_log"]) == (
        Path("users.json"),
        2.5,
        Path("usage.log"),
    )


def test_store_from_the_environment_is_checked_like_the_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An in-memory KPISHEET_STORE is refused by `kpisheet serve` as --store would be."""
    monkeypatch.setenv("KPISHEET_STORE", "sqlite://")
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        "--store sqlite:// is an in-memory database, gone when kpisheet exits; "
        "give a file, e.g. sqlite:///kpisheet.db\n"
    )
