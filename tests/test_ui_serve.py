"""Tests of `kpisheet serve` before the server starts: bad input fails at once, with a message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from kpisheet.cli import main
from kpisheet.errors import StoreError
from kpisheet.store import sqlite_url
from kpisheet_ui.serve import serve, sheet_config
from kpisheet_ui.source import SheetConfig


def test_missing_store_fails_before_serving(tmp_path: Path) -> None:
    """A store that does not exist is reported and the command exits 1 without serving."""
    url = sqlite_url(tmp_path / "missing.db")
    result = CliRunner().invoke(main, ["serve", "--store", url, "--port", "0"])
    assert result.exit_code == 1
    assert result.output.startswith(
        f"no store at {tmp_path / 'missing.db'}: the file does not exist"
    )


def test_missing_users_file_fails_before_serving(tmp_path: Path) -> None:
    """With --auth, a users file that does not exist is reported with the command that makes it."""
    users = tmp_path / "users.json"
    result = CliRunner().invoke(main, ["serve", "--demo", "--auth", str(users), "--port", "0"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"users file {users} does not exist; create it with "
        f"`kpisheet users add NAME --auth {users}`"
    )


def test_serve_function_raises_store_error(tmp_path: Path) -> None:
    """serve() raises kpisheet's StoreError for an unreadable store, before any server exists."""
    config = SheetConfig(store=sqlite_url(tmp_path / "missing.db"))
    with pytest.raises(StoreError, match=re.escape(f"no store at {tmp_path / 'missing.db'}")):
        serve(config, port=0)


def test_default_is_the_demo_store(tmp_path: Path, monkeypatch) -> None:
    """Without --store the app serves the demo store, built in the cache directory."""
    monkeypatch.setenv("KPISHEET_CACHE_DIR", str(tmp_path))
    config = sheet_config(None, ["kpi_definitions"], None, poll_seconds=5)
    assert config.store is not None and config.store.startswith("sqlite:///")
    assert Path(config.store.removeprefix("sqlite:///")).parent == tmp_path.resolve()
    assert (config.definitions, config.entities, config.poll_seconds) == (
        ("kpi_definitions",),
        None,
        5,
    )


def test_store_given_as_a_file_becomes_its_url(tmp_path: Path, monkeypatch) -> None:
    """`kpisheet serve --store kpisheet.db` serves the SQLite file by its absolute URL."""
    monkeypatch.setenv("KPISHEET_CACHE_DIR", str(tmp_path / "cache"))
    demo = sheet_config(None)
    store = tmp_path / "kpisheet.db"
    store.write_bytes(Path(demo.store.removeprefix("sqlite:///")).read_bytes())
    monkeypatch.chdir(tmp_path)
    assert sheet_config("kpisheet.db").store == sqlite_url(store)
