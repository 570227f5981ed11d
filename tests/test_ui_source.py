"""Tests of kpisheet_ui.source: sheets opened once per release, shared, and new releases noticed."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.engine import make_url

from kpisheet.demo import DEMO_ENTITIES, generate_observations
from kpisheet.errors import ChecksumError
from kpisheet.hierarchy import load_hierarchy
from kpisheet.store import Store, sqlite_url
from kpisheet_ui.source import SheetConfig, SheetSource, get_source, refusal_notice


@pytest.fixture(scope="module")
def observations() -> pd.DataFrame:
    return generate_observations()


@pytest.fixture
def store_url(tmp_path: Path, observations: pd.DataFrame) -> str:
    url = sqlite_url(tmp_path / "kpis.db")
    with Store(url) as store:
        store.write_release(observations, source="test", hierarchy=load_hierarchy(DEMO_ENTITIES))
    return url


def test_config_from_environment(monkeypatch) -> None:
    """`panel serve` reads store, definitions, entities and poll interval from KPISHEET_* variables."""
    monkeypatch.setenv("KPISHEET_STORE", "sqlite:///kpis.db")
    monkeypatch.setenv("KPISHEET_DEFINITIONS", os.pathsep.join(["a", "b"]))
    monkeypatch.setenv("KPISHEET_ENTITIES", "entities.yaml")
    monkeypatch.setenv("KPISHEET_POLL_SECONDS", "2.5")
    assert SheetConfig.from_env() == SheetConfig(
        "sqlite:///kpis.db", ("a", "b"), "entities.yaml", 2.5
    )
    for name in (
        "KPISHEET_STORE",
        "KPISHEET_DEFINITIONS",
        "KPISHEET_ENTITIES",
        "KPISHEET_POLL_SECONDS",
    ):
        monkeypatch.delenv(name)
    assert SheetConfig.from_env() == SheetConfig()


def test_one_source_per_configuration(store_url: str) -> None:
    """Sessions with the same configuration share one source, so one cache of sheets."""
    config = SheetConfig(store=store_url)
    assert get_source(config) is get_source(SheetConfig(store=store_url))
    assert get_source(config) is not get_source(SheetConfig(store=store_url, poll_seconds=1))


def test_sheet_opened_once_per_release(store_url: str) -> None:
    """The sheet of a release is opened once and then served from the cache."""
    source = SheetSource(SheetConfig(store=store_url, poll_seconds=0))
    first = source.current()
    assert first.release.id == 1
    assert source.current() is first
    assert source.sheet(1) is first


def test_new_release_noticed_after_poll_interval(store_url: str, observations) -> None:
    """A new release is seen once the poll interval has passed, not before."""
    source = SheetSource(SheetConfig(store=store_url, poll_seconds=3600))
    first = source.current()
    with Store(store_url) as store:
        store.write_release(observations, source="test", hierarchy=load_hierarchy(DEMO_ENTITIES))
    assert source.current() is first  # within the poll interval
    second = source.current(max_age=0)
    assert second.release.id == 2 and second is not first


def test_without_store_the_demo_sheet() -> None:
    """Without a store the source serves kpisheet.open()'s demo sheet and polls nothing."""
    source = SheetSource(SheetConfig())
    sheet = source.current()
    assert str(sheet.newest_month) == str(generate_observations()["month"].max())
    assert source.current() is sheet
    assert source.latest_release_id() is None


def test_changes_note_names_restated_values_per_month_and_products(
    store_url: str, observations
) -> None:
    """The note shown with a new release counts restated values per month, newest first, in
    German, and names products added, dropped or moved; a release without changes has none."""
    source = SheetSource(SheetConfig(store=store_url, poll_seconds=0))
    changed = observations.copy()
    restated = [
        ("2026-09", "Alpine Visa Gold"),
        ("2026-09", "Alpine Visa Classic"),
        ("2026-08", "Alpine Visa Gold"),
    ]
    for month, entity in restated:
        row = (
            (changed["month"] == pd.Period(month, "M"))
            & (changed["entity"] == entity)
            & (changed["kpi"] == "turnover")
        )
        changed.loc[row, "value"] += 1.0
    hierarchy = load_hierarchy(DEMO_ENTITIES)
    with Store(store_url) as store:
        store.write_release(observations, source="same", hierarchy=hierarchy)
        store.write_release(changed, source="restated", hierarchy=hierarchy)
    assert source.changes_note(1) == ""
    assert source.changes_note(2) == ""
    assert source.changes_note(3) == "2 Werte aus September 2026, 1 Wert aus August 2026 restated."
    fewer = changed[changed["entity"] != "Alpine Visa Gold"]
    with Store(store_url) as store:
        store.write_release(fewer, source="fewer", hierarchy=hierarchy)
    assert source.changes_note(4) == "1 Produkt entfallen."


def test_release_changed_with_sql_is_refused_with_a_german_notice(
    store_url: str, observations: pd.DataFrame
) -> None:
    """The app opens releases verified: a release whose values were changed is refused."""
    with Store(store_url) as store:
        second = store.write_release(
            observations, source="test", hierarchy=load_hierarchy(DEMO_ENTITIES)
        )
    path = Path(make_url(store_url).database)
    where = "WHERE release_id = 2"  # its snapshot, which is what is read
    with sqlite3.connect(path) as conn:
        (written,) = conn.execute(f"SELECT data FROM kpisheet_snapshots {where}").fetchone()
        changed = written[:100] + bytes([written[100] ^ 0xFF]) + written[101:]
        conn.execute(f"UPDATE kpisheet_snapshots SET data = ? {where}", (changed,))
    source = SheetSource(SheetConfig(store=store_url, poll_seconds=0))
    with pytest.raises(ChecksumError, match=re.escape("release 2 does not match its checksum")):
        source.current()
    with sqlite3.connect(path) as conn:  # the refusal is remembered, not recomputed every poll
        conn.execute(f"UPDATE kpisheet_snapshots SET data = ? {where}", (written,))
    with pytest.raises(ChecksumError, match=re.escape("release 2 does not match its checksum")):
        source.current()
    assert source.sheet(1).release.id == 1  # the untouched release is still served
    error = ChecksumError(store_url, second.id, second.checksum, "0" * 64)
    assert refusal_notice(error) == (
        "Release 2 wird nicht angezeigt: Seine gespeicherten Werte stimmen nicht mehr mit der "
        "Prüfsumme überein, mit der sie geladen wurden; sie wurden nachträglich verändert. "
        "Bitte die Datenverantwortlichen informieren."
    )


def test_replaced_store_file_is_read_anew(tmp_path: Path, observations: pd.DataFrame) -> None:
    """A store file replaced under a running server (same release ids, other values) is reloaded
    at the next poll instead of being served from the cache."""
    path = tmp_path / "kpis.db"
    with Store(sqlite_url(path)) as store:
        store.write_release(observations, source="old", hierarchy=load_hierarchy(DEMO_ENTITIES))
    source = SheetSource(SheetConfig(store=sqlite_url(path), poll_seconds=3600))
    old = source.current()
    replacement = tmp_path / "replacement.db"
    doubled = observations.assign(value=observations["value"] * 2)
    with Store(sqlite_url(replacement)) as store:
        store.write_release(doubled, source="new", hierarchy=load_hierarchy(DEMO_ENTITIES))
    os.replace(replacement, path)
    assert source.current() is old  # within the poll interval nothing is looked at
    new = source.current(max_age=0)
    assert new is not old
    assert (new.release.id, new.release.source) == (1, "new")
    assert new.observations["value"].sum() == pytest.approx(2 * old.observations["value"].sum())
    assert source.current(max_age=0) is new  # and cached again until the next replacement


def test_a_new_release_is_no_replacement(store_url: str, observations: pd.DataFrame) -> None:
    """A release added to the store keeps the sheets already open: only replacements empty the cache."""
    source = SheetSource(SheetConfig(store=store_url, poll_seconds=0))
    first = source.current()
    with Store(store_url) as store:
        store.write_release(observations, source="test", hierarchy=load_hierarchy(DEMO_ENTITIES))
    assert source.current().release.id == 2
    assert source.sheet(1) is first
