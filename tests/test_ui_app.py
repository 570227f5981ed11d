"""Tests of kpisheet_ui.app without a browser: what a page does when the store changes."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pandas as pd

from kpisheet.demo import DEMO_ENTITIES, generate_observations
from kpisheet.hierarchy import load_hierarchy
from kpisheet.store import Store, sqlite_url
from kpisheet_ui.app import AppView
from kpisheet_ui.source import SheetConfig, SheetSource
from kpisheet_ui.state import SheetState

HIERARCHY = load_hierarchy(DEMO_ENTITIES)


def test_page_refuses_a_changed_release_with_a_german_notice(tmp_path: Path) -> None:
    """A new release whose values were changed after writing is not shown: the page keeps its
    release and says why, in German."""
    url = sqlite_url(tmp_path / "kpis.db")
    observations = generate_observations()
    with Store(url) as store:
        store.write_release(observations, source="first", hierarchy=HIERARCHY)
    source = SheetSource(SheetConfig(store=url, poll_seconds=0))
    view = AppView(SheetState(source.current()), source)
    with Store(url) as store:
        store.write_release(observations, source="second", hierarchy=HIERARCHY)
    with sqlite3.connect(tmp_path / "kpis.db") as conn:  # its snapshot, which is what is read
        conn.execute(
            "UPDATE kpisheet_snapshots SET data = zeroblob(length(data)) WHERE release_id = 2"
        )
    asyncio.run(view.poll()())
    assert view.state.sheet.release.id == 1
    assert view.error.visible
    assert view.error.object == (
        "Release 2 wird nicht angezeigt: Seine gespeicherten Werte stimmen nicht mehr mit der "
        "Prüfsumme überein, mit der sie geladen wurden; sie wurden nachträglich verändert. "
        "Bitte die Datenverantwortlichen informieren."
    )


def test_reasons_reach_the_table_as_escaped_tooltips() -> None:
    """A reason naming a product with markup in its name becomes an escaped title attribute of
    the change and month cells; the cells' own text is escaped too, and rows without a reason
    stay plain text."""
    from kpisheet_ui.app import with_reasons
    from kpisheet_ui.table import (
        CHANGE_COLUMN,
        CHANGE_PCT_COLUMN,
        GROUP_COLUMN,
        MONTHS_COLUMN,
        NOTE_COLUMN,
    )

    payload = '"><img src=x onerror=alert(1)>'
    table = pd.DataFrame(
        {
            GROUP_COLUMN: ["a", "b"],
            CHANGE_COLUMN: ["–", "+5"],
            CHANGE_PCT_COLUMN: ["–", "<b>1 %</b>"],
            MONTHS_COLUMN: ["1 ⚠", "1"],
            NOTE_COLUMN: [f"Vorjahr: Mitglied fehlt im Mai 2022: {payload}", ""],
        }
    )
    shown = with_reasons(table)
    assert NOTE_COLUMN not in shown.columns
    title = "Vorjahr: Mitglied fehlt im Mai 2022: &quot;&gt;&lt;img src=x onerror=alert(1)&gt;"
    assert shown.loc[0, CHANGE_COLUMN] == f'<span title="{title}">–</span>'
    assert shown.loc[0, MONTHS_COLUMN] == f'<span title="{title}">1 ⚠</span>'
    assert shown.loc[1, CHANGE_COLUMN] == "+5"
    assert shown.loc[1, CHANGE_PCT_COLUMN] == "&lt;b&gt;1 %&lt;/b&gt;"


def test_table_text_goes_to_bokeh_as_one_list_per_column() -> None:
    """The KPI table's text columns reach Bokeh as numpy ``str`` arrays, which Bokeh serialises
    as one plain list each (not value by value), holding exactly the table's texts."""
    import numpy as np
    from bokeh.core.serialization import Serializer

    from kpisheet_ui.table import KPI_COLUMN, VALUE_COLUMN

    view = AppView(SheetState(SheetSource(SheetConfig()).current()))
    shown, data = view.table._get_data()
    for column in (KPI_COLUMN, VALUE_COLUMN):
        assert isinstance(data[column], np.ndarray) and data[column].dtype.kind == "U"
        assert data[column].tolist() == shown[column].tolist()
        encoded = Serializer().encode(data[column])
        assert encoded["dtype"] == "object" and encoded["array"] == shown[column].tolist()
    assert data["index"].dtype.kind == "i"  # numbers stay numbers
