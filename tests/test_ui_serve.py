"""Tests of `kpisheet serve`: bad input fails at once, with a message, before the server starts;
a running server frees a closed page's session and answers one page while another's work waits."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import kpisheet
from kpisheet.cli import main
from kpisheet.errors import StoreError
from kpisheet.store import sqlite_url
from kpisheet_ui.app import PAGES
from kpisheet_ui.escape import html_text
from kpisheet_ui.serve import (
    MANY_PROCESSES_WITH_LOGIN,
    SERVER_ENV,
    SessionOrderedExecutor,
    make_server,
    quiet_closed_pages,
    serve,
    server_environment,
    sheet_config,
)
from kpisheet_ui.source import SheetConfig, get_source
from kpisheet_ui.sync import only_sent_models_synced
from kpisheet_ui.table import GROUP_COLUMN
from kpisheet_ui.users import add_user
from tests.page_client import ENTITIES, KPIS, WINDOW, Page

#: Seconds within which a closed page is freed: its session is destroyed 0.3 s after it closed
#: (the fixture's setting), well before the page's next look for a new release (30 s).
FREED_SECONDS = 10
#: Quick picks: pages, entities picked one after another on each, seconds between two picks (a
#: browser's pace when the visitor clicks through a list), seconds to wait for late messages.
PICK_ROUNDS, PICKS, PICK_SECONDS, SETTLE_SECONDS = 8, 6, 0.04, 0.5
#: Index of the 12M window among the app's window buttons (1M, 3M, 6M, 12M, YTD).
WINDOW_12M = 3


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


def test_several_processes_with_login_are_refused(tmp_path: Path) -> None:
    """--num-procs with --auth is refused with the reason and the way out (logins live in one
    process), before anything is served."""
    users = tmp_path / "users.json"
    add_user(users, "anna", "richtig-123")
    result = CliRunner().invoke(
        main, ["serve", "--demo", "--auth", str(users), "--num-procs", "2", "--port", "0"]
    )
    assert result.exit_code == 1
    assert result.output.strip() == MANY_PROCESSES_WITH_LOGIN


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


# -- the running server: many sessions -----------------------------------------------------------
#: Seconds a client waits for the server before the test fails (a blocked server never answers).
ANSWER_SECONDS = 120


@dataclass
class RunningServer:
    """``make_server`` on a free port in a thread of this process (so its pages can be counted)."""

    url: str
    sheet: kpisheet.KPISheet
    server: Any


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def running_server(tmp_path: Path, monkeypatch) -> Iterator[RunningServer]:
    """The demo store served with four threads; a closed page's session is destroyed after 0.3 s."""
    import panel as pn

    monkeypatch.setenv("KPISHEET_CACHE_DIR", str(tmp_path / "cache"))
    config = sheet_config(None)
    port = _free_port()
    started: dict[str, Any] = {}
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        try:
            started["server"] = make_server(
                config,
                port=port,
                address="127.0.0.1",
                usage_log=tmp_path / "usage.log",
                threads=4,
                unused_session_milliseconds=300,
            )
            started["server"].start()
        finally:
            ready.set()
        started["server"].io_loop.start()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(ANSWER_SECONDS) and "server" in started
    server = started["server"]
    yield RunningServer(f"http://127.0.0.1:{port}", get_source(config).current(), server)
    server.io_loop.add_callback(server.stop)
    server.io_loop.add_callback(server.io_loop.stop)
    thread.join(ANSWER_SECONDS)
    pn.config.nthreads = None  # the thread pool is the process's: other tests run without it


def _answered(step: Awaitable[Any]) -> Any:
    """Run a client step, failing the test when the server does not answer within
    :data:`ANSWER_SECONDS` (a client waiting for a blocked server would wait for ever)."""
    return asyncio.run(asyncio.wait_for(step, ANSWER_SECONDS))


def test_closed_page_frees_its_session(running_server: RunningServer) -> None:
    """A page that closes leaves the server's pages once its session is destroyed, and nothing
    else holds its objects (the registry holds pages weakly)."""

    async def open_and_close() -> weakref.ref[Any]:
        page = Page(running_server.url)
        await page.open()
        assert len(PAGES) == 1
        state = weakref.ref(next(iter(PAGES.values())).state)
        page.close()
        return state

    _freed(_answered(open_and_close()))


def test_a_page_that_worked_is_freed_when_closed(running_server: RunningServer) -> None:
    """A page whose changes were worked on (on the server's threads, each answered with a new
    table) is freed like one that only opened, once its session is destroyed."""

    async def work_and_close() -> weakref.ref[Any]:
        page = Page(running_server.url)
        await page.open()
        assert len(PAGES) == 1
        state = weakref.ref(next(iter(PAGES.values())).state)
        for count in (1, 2, 0):
            await page.change(ENTITIES, page.widgets[ENTITIES].options[:count])
            await page.table_update()
        await page.change(WINDOW, WINDOW_12M)
        await page.table_update()
        page.close()
        return state

    _freed(_answered(work_and_close()))


def _freed(state: weakref.ref[Any]) -> None:
    """Wait until the server's pages are gone and the closed page's state is garbage, within
    :data:`FREED_SECONDS`."""

    async def freed() -> None:
        while PAGES or state() is not None:
            gc.collect()
            await asyncio.sleep(0.1)

    asyncio.run(asyncio.wait_for(freed(), FREED_SECONDS))
    assert len(PAGES) == 0 and state() is None


def test_a_slow_session_does_not_block_another(running_server: RunningServer, monkeypatch) -> None:
    """While one page's query is held up, another page's change is answered with its new table;
    the held-up page gets its table when its query goes on."""
    sheet = running_server.sheet
    query = sheet.query
    entered, release = threading.Event(), threading.Event()
    armed = {"once": False}

    def held_query(*args: Any, **kwargs: Any) -> Any:
        if armed["once"]:
            armed["once"] = False
            entered.set()
            release.wait(ANSWER_SECONDS)
        return query(*args, **kwargs)

    monkeypatch.setattr(sheet, "query", held_query)

    async def scenario() -> None:
        slow, quick = Page(running_server.url), Page(running_server.url)
        await slow.open()
        await quick.open()
        armed["once"] = True
        await slow.change(WINDOW, WINDOW_12M)
        while not entered.is_set():  # the slow page's query has started and waits
            await asyncio.sleep(0.05)
        await quick.change(WINDOW, WINDOW_12M)
        quick_table = await quick.table_update()
        assert not release.is_set()  # answered while the other page's query was held up
        release.set()
        slow_table = await slow.table_update()
        values = slow.column(slow_table, "Wert")
        assert values and values == quick.column(quick_table, "Wert")
        slow.close()
        quick.close()

    _answered(scenario())


async def _pick_quickly(page: Page) -> tuple[list[str], set[str]]:
    """Pick :data:`PICKS` entities one after another at a browser's pace; the picks and the
    groups of the first table that shows them all."""
    picks = page.widgets[ENTITIES].options[:PICKS]
    for count in range(1, PICKS + 1):
        await page.change(ENTITIES, picks[:count])
        await asyncio.sleep(PICK_SECONDS)
    groups: set[str] = set()
    while len(groups) != PICKS:
        groups = set(page.column(await page.table_update(), GROUP_COLUMN))
    return picks, groups


def test_a_pages_own_changes_are_not_sent_back(running_server: RunningServer) -> None:
    """Entities picked one after another as quickly as a browser sends them: the server never
    sends the page a value of the entity choice (an older pick after a newer one made the page
    show it while the table followed the newer), and the table follows the last pick."""

    async def scenario() -> None:
        for _ in range(PICK_ROUNDS):
            page = Page(running_server.url)
            await page.open()
            picks, groups = await _pick_quickly(page)
            await asyncio.sleep(SETTLE_SECONDS)  # anything sent after the last table came
            assert groups == {html_text(pick) for pick in picks}
            assert page.sent_values.get(ENTITIES, []) == []
            page.close()

    _answered(scenario())


def test_a_closed_page_is_no_error_in_the_log(caplog) -> None:
    """A page gone while the server wrote to it is noted at debug level without a traceback;
    any other error nobody waited for is logged with its traceback, as asyncio does."""
    from tornado.iostream import StreamClosedError
    from tornado.websocket import WebSocketClosedError

    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.DEBUG):
            for gone in (WebSocketClosedError(), StreamClosedError()):
                quiet_closed_pages(loop, {"message": "never retrieved", "exception": gone})
            assert [r.levelno for r in caplog.records] == [logging.DEBUG, logging.DEBUG]
            assert all(r.exc_info is None for r in caplog.records)
            caplog.clear()
            quiet_closed_pages(loop, {"message": "never retrieved", "exception": ValueError("x")})
    finally:
        loop.close()
    assert [(r.levelno, r.exc_info[0] if r.exc_info else None) for r in caplog.records] == [
        (logging.ERROR, ValueError)
    ]


def test_one_pages_tasks_run_in_order_others_beside_them() -> None:
    """The server's pool runs a page's tasks one at a time in the order given (a later change of
    the page waits for the earlier one), and another page's tasks meanwhile."""
    from bokeh.document import Document

    page, other = Document(), Document()
    executor = SessionOrderedExecutor(4)
    started, release = threading.Event(), threading.Event()
    done: list[str] = []

    def first(document: Document) -> None:
        started.set()
        release.wait(ANSWER_SECONDS)
        done.append("first")

    def record(document: Document, name: str) -> str:
        done.append(name)
        return name

    try:
        held = executor.submit(first, page)
        assert started.wait(ANSWER_SECONDS)
        later = executor.submit(record, page, "later")
        beside = executor.submit(record, other, "other page")
        assert beside.result(ANSWER_SECONDS) == "other page"
        assert not later.done()  # waits for the held task of its page
        release.set()
        assert later.result(ANSWER_SECONDS) == "later"
        held.result(ANSWER_SECONDS)
        assert done == ["other page", "first", "later"]
    finally:
        release.set()
        executor.shutdown(wait=True)


#: Seconds each message of the server waits before it is written (a loaded machine's event loop).
SLOW_WRITE_SECONDS = (0.0, 0.02)
#: Seconds within which the server's last chart reaches its page (a few on a loaded machine).
SENT_SECONDS = 30


def _charts(server: Any) -> list[str]:
    """Ids of the charts (Bokeh figures) the server's sessions show now."""
    return [
        model.id
        for session in server.get_sessions("/")
        for model in session.document.models
        if type(model).__name__.lower() == "figure"
    ]


@pytest.mark.parametrize("slow_write", SLOW_WRITE_SECONDS)
def test_a_page_is_sent_every_model_it_is_told_about(
    running_server: RunningServer, monkeypatch, slow_write: float
) -> None:
    """With a KPI chosen, every pick of entities draws a new chart: new Bokeh models, which a
    message must define to the page before any message names them by id alone. Three pages pick
    entities quickly, at once, with every write of the server delayed or not (as on a loaded
    machine): no message names a model the page was not sent (a browser reports "reference ...
    isn't known" and drops the change), and once the server has sent everything, each page has
    the chart its session shows."""
    from bokeh.protocol.message import Message

    send = Message.send

    async def slow_send(self: Message, conn: Any) -> int:
        await asyncio.sleep(slow_write)
        return await send(self, conn)

    monkeypatch.setattr(Message, "send", slow_send)
    server = running_server.server

    async def one_page() -> Page:
        page = Page(running_server.url)
        await page.open()
        await page.change(KPIS, page.widgets[KPIS].options[:1])
        await _pick_quickly(page)
        return page

    def all_sent(pages: list[Page], charts: list[str]) -> bool:
        """Every session's chart has reached one page."""
        return all(sum(chart in page.known_models for page in pages) == 1 for chart in charts)

    async def scenario() -> tuple[list[Page], list[str]]:
        pages = await asyncio.gather(*(one_page() for _ in range(3)))
        deadline = asyncio.get_running_loop().time() + SENT_SECONDS
        while True:  # until the server's last chart has reached its page, or the time is up
            await asyncio.gather(*(page.quiet(SETTLE_SECONDS) for page in pages))
            charts = _charts(server)
            if all_sent(pages, charts) or asyncio.get_running_loop().time() > deadline:
                break
        for page in pages:
            page.close()
        return pages, charts

    pages, charts = _answered(scenario())
    assert [page.unknown_references for page in pages] == [[], [], []]
    assert len(charts) == 3
    assert all_sent(pages, charts)


def test_only_models_a_page_was_sent_count_as_sent() -> None:
    """A change from the browser leaves the models the page was not sent yet new (Bokeh alone
    counted every model as sent then); sending the document counts the models it defines."""
    from bokeh.document import Document
    from bokeh.models import Column, Div

    only_sent_models_synced()
    document = Document()
    column = Column(Div(text="a"))
    document.add_root(column)
    added = Div(text="b")
    column.children = [*column.children, added]  # a new model, not sent yet
    browser_change = {"kind": "ModelChanged", "model": {"id": column.children[0].id}}
    document.apply_json_patch({"events": [{**browser_change, "attr": "text", "new": "c"}]})
    assert added not in document.models.synced_references
    assert column.children[0].text == "c"
    document.to_json()  # the page opens: every model of the document is defined to it
    assert {column, added} <= document.models.synced_references


def test_the_server_environment_adds_only_the_allocator_settings_not_given() -> None:
    """The allocators the server restarts with: those not set are added, one set is kept
    whatever its value (the operator's choice), and with all set there is no restart."""
    assert server_environment({"HOME": "/root"}) == {"HOME": "/root", **SERVER_ENV}
    chosen = {"PYTHONMALLOC": "pymalloc"}
    assert server_environment(chosen) == {**SERVER_ENV, **chosen}
    assert server_environment({**SERVER_ENV, "HOME": "/root"}) is None
    assert server_environment({name: "" for name in SERVER_ENV}) is None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc/PID/environ")
@pytest.mark.parametrize("given", [{}, {"PYTHONMALLOC": "pymalloc"}], ids=["default", "chosen"])
def test_the_server_process_runs_with_allocators_that_return_memory(
    given: dict[str, str],
) -> None:
    """`kpisheet serve`, started as a command, runs as the same process with the allocators of
    SERVER_ENV (it restarts itself with them before anything else); a setting given is kept."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in SERVER_ENV} | given
    command = [str(Path(sys.executable).parent / "kpisheet"), "serve", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--address", "127.0.0.1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 180
        while process.poll() is None and time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        raw = Path(f"/proc/{process.pid}/environ").read_bytes().decode()
        environ = dict(entry.split("=", 1) for entry in raw.split("\0") if "=" in entry)
        assert {name: environ.get(name) for name in SERVER_ENV} == {**SERVER_ENV, **given}
    finally:
        process.terminate()
        process.wait(30)
