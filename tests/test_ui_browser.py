"""Browser tests: ``kpisheet serve`` driven in Debian's Chromium through Playwright.

Two servers run for the module: one without login on a fixed store (the demo data with one
product's turnover missing a month, :data:`GAP`), one with ``--auth`` on a store that a test adds
a release to. Every page is checked for browser console errors and for
Python error text. Screenshots go to ``$KPISHEET_SCREENSHOTS`` (the guide's are made with
``KPISHEET_SCREENSHOTS=docs/images``), else to a temporary directory.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

import kpisheet
from kpisheet.demo import DEMO_ENTITIES, generate_observations
from kpisheet.hierarchy import load_hierarchy
from kpisheet.presentation.formats import format_change, format_value
from kpisheet.store import Store, sqlite_url
from kpisheet_ui.app import PAGE_ROWS_ENV
from kpisheet_ui.users import add_user

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Seconds a server may take to start (imports, opening the sheet) on a busy machine.
START_TIMEOUT = 180
#: Milliseconds the page may take to show a change.
UPDATE_TIMEOUT = 30_000
USER, PASSWORD = "anna", "richtig-123"
TOTAL = "Kartenwelt AG"
#: Texts that mean Python failed somewhere.
PYTHON_ERRORS = ("Traceback (most recent call last)", "Exception:", "Error:")
SCREENSHOT_SIZE = {"width": 1440, "height": 1000}
#: Rows per page of the table on the server with login, so that the demo sheet needs pages.
AUTH_PAGE_ROWS = 300
#: (month, KPI, product) missing from the plain server's store: the previous-year month of the
#: newest month, inside the product's lifetime.
GAP = ("2025-10", "turnover", "Alpine Visa Gold")


def _require_browser() -> None:
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing (apt-get install chromium)"
    if os.environ.get("KPISHEET_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A ``kpisheet serve`` subprocess."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    usage_log: Path
    store: str
    ready: bool = field(default=False)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait(self) -> str:
        """Block until the server answers; the base URL."""
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ready:
            if self.process.poll() is not None:
                pytest.fail(
                    f"kpisheet serve exited with {self.process.returncode}:\n{self.log_text()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/login", timeout=5):
                    self.ready = True
            except urllib.error.HTTPError:
                self.ready = True  # answering (404 without a login page)
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"kpisheet serve did not answer in {START_TIMEOUT} s:\n{self.log_text()}"
                    )
                time.sleep(0.5)
        return self.url


def _start(directory: Path, store: str, *args: str, env: dict[str, str] | None = None) -> Server:
    port = _free_port()
    log = directory / "server.log"
    env = {**os.environ, "KPISHEET_CACHE_DIR": str(directory / "cache"), **(env or {})}
    command = [sys.executable, "-m", "kpisheet.cli", "serve", "--port", str(port), "--store", store]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--usage-log", str(directory / "usage.log"), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return Server(f"http://localhost:{port}", process, log, directory / "usage.log", store)


def _write_store(path: Path, observations: pd.DataFrame) -> str:
    url = sqlite_url(path)
    with Store(url) as store:
        store.write_release(
            observations, source="browser test", hierarchy=load_hierarchy(DEMO_ENTITIES)
        )
    return url


@pytest.fixture(scope="module")
def observations() -> pd.DataFrame:
    return generate_observations()


def _with_gap(observations: pd.DataFrame) -> pd.DataFrame:
    """The observations without the :data:`GAP` row."""
    month, kpi, entity = GAP
    gap = (
        (observations["month"] == pd.Period(month, "M"))
        & (observations["kpi"] == kpi)
        & (observations["entity"] == entity)
    )
    assert gap.sum() == 1
    return observations[~gap].reset_index(drop=True)


@pytest.fixture(scope="module")
def servers(tmp_path_factory, observations) -> Iterator[dict[str, Server]]:
    """Both servers, started at once so that they start up side by side."""
    _require_browser()
    plain_dir = tmp_path_factory.mktemp("plain")
    auth_dir = tmp_path_factory.mktemp("auth")
    users = auth_dir / "users.json"
    add_user(users, USER, PASSWORD)
    older = observations[observations["month"] < observations["month"].max()]
    started = {
        "plain": _start(plain_dir, _write_store(plain_dir / "kpis.db", _with_gap(observations))),
        "auth": _start(
            auth_dir,
            _write_store(auth_dir / "kpis.db", older),
            "--auth",
            str(users),
            "--poll-seconds",
            "1",
            env={PAGE_ROWS_ENV: str(AUTH_PAGE_ROWS)},
        ),
    }
    yield started
    for server in started.values():
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@pytest.fixture(scope="module")
def app(servers: dict[str, Server]) -> Server:
    servers["plain"].wait()
    return servers["plain"]


@pytest.fixture(scope="module")
def auth_app(servers: dict[str, Server]) -> Server:
    servers["auth"].wait()
    return servers["auth"]


@pytest.fixture(scope="module")
def sheet(app: Server) -> kpisheet.KPISheet:
    """The sheet the plain server serves, opened by the library."""
    return kpisheet.open(app.store)


@pytest.fixture(scope="module")
def browser(servers):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, servers):
    """A fresh page; afterwards: no console errors, no Python error text on it or in the logs."""
    from playwright.sync_api import expect

    expect.set_options(timeout=UPDATE_TIMEOUT)
    context = browser.new_context(viewport=SCREENSHOT_SIZE, accept_downloads=True, locale="de-CH")
    page = context.new_page()
    errors: list[str] = []
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    text = page.locator("body").inner_text() if not page.is_closed() else ""
    context.close()
    assert errors == []
    assert not [marker for marker in PYTHON_ERRORS if marker in text]
    for server in servers.values():
        assert "Traceback (most recent call last)" not in server.log_text()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    target = os.environ.get("KPISHEET_SCREENSHOTS")
    directory = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


# -- helpers -------------------------------------------------------------------------------


def _open(page, url: str) -> None:
    from playwright.sync_api import expect

    page.goto(url)
    expect(page.locator(".kpi-tabelle .tabulator-row").first).to_be_visible(timeout=60_000)


def _values(page, column: str = "Wert"):
    return page.locator(f'.kpi-tabelle .tabulator-row [tabulator-field="{column}"]')


def _expected(sheet: kpisheet.KPISheet, **query) -> list[str]:
    """What sheet.query says, formatted as the app formats it."""
    result = sheet.query(**query)
    return [
        format_value(value, sheet.registry[kpi].unit)
        for value, kpi in zip(result["value"], result["kpi"], strict=True)
    ]


def _choose(page, widget: str, label: str) -> None:
    """Pick an option of a multi-select by typing its label, and wait until it shows as picked
    (the next pick must not type into a list the server is still redrawing)."""
    from playwright.sync_api import expect

    field = page.locator(f".{widget} input[type=search]")
    field.fill(label)
    page.locator(
        f".{widget} .choices__list--dropdown .choices__item--selectable", has_text=label
    ).first.click()
    picked = page.locator(f".{widget} .choices__list--multiple .choices__item", has_text=label)
    expect(picked.first).to_be_visible()


def _login(page, url: str, user: str, password: str) -> None:
    page.goto(url)
    page.locator("input[name=username]").fill(user)
    page.locator("input[name=password]").fill(password)
    page.get_by_role("button", name="Anmelden").click()


# -- tests ---------------------------------------------------------------------------------


def test_first_page_shows_tables(
    page, app: Server, sheet: kpisheet.KPISheet, screenshots: Path
) -> None:
    """The first page shows the Datenstand and the KPI table of the newest month, total first."""
    from playwright.sync_api import expect

    _open(page, app.url)
    expect(page.locator(".datenstand")).to_contain_text("Datenstand: Oktober 2026 · Release 1 vom")
    expect(page.locator(".kpi-tabelle .tabulator-group").first).to_contain_text(f"{TOTAL} (Total)")
    first = _expected(sheet, entities=[TOTAL])
    expect(_values(page).first).to_have_text(first[0])
    for title in ("KPI", "Wert", "Vorjahr", "Abw. VJ", "Abw. VJ %", "Monate"):
        header = page.locator(f'.kpi-tabelle .tabulator-col[tabulator-field="{title}"]')
        expect(header).to_have_text(title)
    page.screenshot(path=screenshots / "uebersicht.png")


def test_window_and_as_of_change_the_numbers(page, app: Server, sheet: kpisheet.KPISheet) -> None:
    """Window and as-of month change the numbers to what sheet.query says; 12M adds the stock note."""
    from playwright.sync_api import expect

    _open(page, app.url)
    page.locator(".entitaeten-gruppe select").select_option(label=f"Total: {TOTAL}")
    expect(_values(page)).to_have_text(_expected(sheet, entities=[TOTAL]))
    page.locator(".fenster button", has_text="12M").click()
    expect(_values(page)).to_have_text(_expected(sheet, entities=[TOTAL], window="12M"))
    expect(page.locator(".hinweise")).to_contain_text(
        "Hinweis: Bestandesgrössen werden nicht über die Zeit summiert. Im Fenster 12M zeigen "
        "Anzahl aktive Konten (Wert des letzten Monats)"
    )
    page.locator(".stichtag select").select_option(label="Januar 2025")
    expect(_values(page)).to_have_text(
        _expected(sheet, entities=[TOTAL], window="12M", as_of="2025-01")
    )
    page.locator(".fenster button", has_text="1M").click()
    expect(_values(page)).to_have_text(_expected(sheet, entities=[TOTAL], as_of="2025-01"))
    expect(page.locator(".hinweise")).to_be_hidden()


def test_member_gap_shows_a_dash_with_the_reason_and_no_highlight(
    page, app: Server, sheet: kpisheet.KPISheet, screenshots: Path
) -> None:
    """Alpine Visa Gold lacks its turnover of October 2025: the total's, B2C's and Alpine's
    turnover change against that month reads "–", with the culprit on hover and in the notes;
    no "–" row is highlighted, and the table download says the same."""
    from playwright.sync_api import expect

    reason = "Vorjahr: Mitglied fehlt im Oktober 2025: Alpine Visa Gold"
    _open(page, app.url)
    _choose(page, "kpis", "Umsatz Total")
    for group in (f"{TOTAL} (Total)", "B2C (Sektor)", "Alpine (Mandant)"):
        _choose(page, "entitaeten", group)
    page.locator(".entitaeten input[type=search]").press("Escape")
    changes = _values(page, "Abw. VJ")
    expect(changes).to_have_text(["–", "–", "–"])
    expect(_values(page, "Abw. VJ %")).to_have_text(["–", "–", "–"])
    for cell in changes.all():
        expect(cell.locator("span")).to_have_attribute("title", reason)
    expect(page.locator(".hinweise")).to_contain_text(f"{reason} (3 Zeilen)")
    expect(_values(page)).to_have_text(
        _expected(sheet, kpis=["turnover"], entities=[TOTAL, "B2C", "Alpine"])
    )
    page.screenshot(path=screenshots / "unvollstaendig.png")
    # One of three rows would be highlighted (the largest change), but none may be: all are "–".
    backgrounds = _values(page, "Abw. VJ %").evaluate_all(
        "cells => cells.map(cell => getComputedStyle(cell).backgroundColor)"
    )
    assert len(backgrounds) == 3
    assert not {"rgb(198, 239, 206)", "rgb(255, 199, 206)"} & set(backgrounds)
    with page.expect_download() as info:
        page.locator(".download-tabelle button").click()
    workbook = openpyxl.load_workbook(io.BytesIO(Path(info.value.path()).read_bytes()))
    rows = list(workbook["KPIs"].iter_rows(values_only=True))
    header = rows[0]
    assert [row[header.index("Abw. VJ")] for row in rows[1:]] == ["–", "–", "–"]
    assert [row[header.index("Hinweis")] for row in rows[1:]] == [reason] * 3


def test_chart_shown_for_eight_entities_and_downloads(
    page, app: Server, sheet: kpisheet.KPISheet, screenshots: Path
) -> None:
    """One KPI and 8 entities show the chart, its downloads read back; a 9th entity hides it."""
    from playwright.sync_api import expect

    _open(page, app.url)
    expect(page.locator(".kein-diagramm")).to_contain_text("Kein Diagramm")
    _choose(page, "kpis", "Umsatz Total")
    entities = sheet.entities["entity"].tolist()[:9]
    labels = page.locator(".entitaeten .choices__list--dropdown .choices__item--selectable")
    expect(labels.first).to_have_text(f"{TOTAL} (Total)")
    for label in [text.strip() for text in labels.all_text_contents()[:8]]:
        _choose(page, "entitaeten", label)
    expect(page.locator(".diagramm .download-png")).to_be_visible()
    expect(_values(page)).to_have_count(8)
    page.locator(".entitaeten input[type=search]").press("Escape")
    page.get_by_text("Verlauf der letzten 13 Monate").click()
    page.screenshot(path=screenshots / "auswahl.png")
    page.locator(".diagramm").screenshot(path=screenshots / "diagramm.png")

    def download(css: str) -> bytes:
        with page.expect_download() as info:
            page.locator(f"{css} button").click()
        return Path(info.value.path()).read_bytes()

    workbook = openpyxl.load_workbook(io.BytesIO(download(".download-tabelle")))
    rows = list(workbook["KPIs"].iter_rows(values_only=True))
    expected = sheet.query(kpis=["turnover"], entities=entities[:8])
    assert len(rows) == 1 + len(expected)
    assert rows[1][rows[0].index("Wert")] == pytest.approx(expected["value"].iloc[0])
    series = openpyxl.load_workbook(io.BytesIO(download(".download-verlauf")))
    assert series["Verlauf"].max_row == 1 + 13 * 8
    assert download(".download-png").startswith(b"\x89PNG\r\n\x1a\n")
    html = download(".download-html").decode("utf-8")
    assert html.lstrip().lower().startswith("<!doctype html>") and "Umsatz Total" in html

    usage = [json.loads(line) for line in app.usage_log.read_text(encoding="utf-8").splitlines()]
    assert {line["file"] for line in usage if line["action"] == "download"} >= {
        "xlsx",
        "png",
        "html",
    }

    _choose(page, "entitaeten", "Talwind (Mandant)")
    expect(page.locator(".kein-diagramm")).to_contain_text("höchstens 8 Entitäten")
    expect(page.locator(".diagramm .download-png")).to_be_hidden()
    expect(page.locator(".diagramm canvas").first).to_be_hidden()


def test_login_required_and_working(page, auth_app: Server, screenshots: Path) -> None:
    """With --auth nothing answers without a session; a wrong password fails, the right one works."""
    from playwright.sync_api import expect

    host = auth_app.url.removeprefix("http://")
    connection = http.client.HTTPConnection(host, timeout=10)
    connection.request("GET", "/")
    response = connection.getresponse()
    assert response.status == 302
    assert response.getheader("Location", "").split("?")[0] in ("/login", "./login")
    connection.close()
    connection = http.client.HTTPConnection(host, timeout=10)
    connection.request(
        "GET",
        "/ws",
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Origin": auth_app.url,
        },
    )
    assert connection.getresponse().status == 403  # the websocket refuses a client without session
    connection.close()

    page.goto(auth_app.url)
    expect(page.get_by_text("Bitte melden Sie sich an.")).to_be_visible()
    page.screenshot(path=screenshots / "anmeldung.png")
    _login(page, auth_app.url, USER, "falsch-falsch")
    expect(page.locator("#error-message")).to_have_text("Benutzername oder Passwort falsch.")
    _login(page, auth_app.url, USER, PASSWORD)
    expect(page.locator(".kpi-tabelle .tabulator-row").first).to_be_visible(timeout=60_000)
    expect(page.locator(".angemeldet")).to_contain_text(f"Angemeldet: {USER}")


def test_large_table_is_shown_page_by_page(page, auth_app: Server) -> None:
    """A table longer than a page shows a page at a time: the pager turns pages, a window change
    keeps the page with new numbers, a smaller selection needs no pager."""
    from playwright.sync_api import expect

    def position(first: int, last: int, total: int) -> str:
        pages = -(-total // AUTH_PAGE_ROWS)
        return f"Zeilen {first}–{last} von {total} · Seite {-(-last // AUTH_PAGE_ROWS)} von {pages}"

    sheet = kpisheet.open(auth_app.store)
    one_month, twelve_months = _expected(sheet), _expected(sheet, window="12M")
    _login(page, auth_app.url, USER, PASSWORD)
    pager = page.locator(".blaettern .seite")
    expect(pager).to_have_text(position(1, 300, len(one_month)))
    expect(page.locator(".seite-zurueck button")).to_be_disabled()
    page.locator(".seite-weiter button").click()
    expect(pager).to_have_text(position(301, 600, len(one_month)))
    expect(_values(page).first).to_have_text(one_month[300])
    page.locator(".fenster button", has_text="12M").click()
    expect(pager).to_have_text(position(301, 600, len(twelve_months)))
    expect(_values(page).first).to_have_text(twelve_months[300])
    page.locator(".seite-letzte button").click()
    last = (len(twelve_months) - 1) // AUTH_PAGE_ROWS * AUTH_PAGE_ROWS
    expect(pager).to_have_text(position(last + 1, len(twelve_months), len(twelve_months)))
    expect(_values(page).first).to_have_text(twelve_months[last])
    expect(page.locator(".seite-weiter button")).to_be_disabled()
    page.locator(".entitaeten-gruppe select").select_option(label=f"Total: {TOTAL}")
    expect(_values(page)).to_have_text(_expected(sheet, entities=[TOTAL], window="12M"))
    expect(page.locator(".blaettern")).to_be_hidden()


def test_new_release_appears_in_open_session(
    page, auth_app: Server, observations: pd.DataFrame, screenshots: Path
) -> None:
    """A release ingested while the page is open replaces the data there, with a notice that
    says what it restated."""
    from playwright.sync_api import expect

    _login(page, auth_app.url, USER, PASSWORD)
    expect(page.locator(".datenstand")).to_contain_text("Datenstand: September 2026 · Release 1")
    restated = (
        (observations["month"] == pd.Period("2026-09", "M"))
        & (observations["kpi"] == "turnover")
        & (observations["entity"] == "Alpine Visa Gold")
    )
    with Store(auth_app.store) as store:
        store.write_release(
            observations.assign(value=observations["value"].where(~restated, 1.0)),
            source="browser test, second release",
            hierarchy=load_hierarchy(DEMO_ENTITIES),
        )
    expect(page.locator(".datenstand")).to_contain_text("Datenstand: Oktober 2026 · Release 2")
    expect(page.locator(".neue-daten")).to_have_text(
        "Neue Daten geladen: Release 2, neuester Monat Oktober 2026. "
        "1 Wert aus September 2026 restated."
    )
    sheet = kpisheet.open(auth_app.store)
    expect(_values(page).first).to_have_text(_expected(sheet, entities=[TOTAL])[0])
    page.screenshot(path=screenshots / "neue-daten.png")


def test_warum_explains_a_group_row_with_table_waterfall_and_downloads(
    page, app: Server, sheet: kpisheet.KPISheet, screenshots: Path
) -> None:
    """ "Warum?" on B2C's turnover shows the members sorted by contribution (as sheet.explain
    says), says the change is not fully explained (Alpine Visa Gold's gap), draws the waterfall,
    and downloads an XLSX and a PNG that read back; a click on a table row explains that row."""
    from playwright.sync_api import expect

    _open(page, app.url)
    page.locator(".fenster button", has_text="12M").click()
    expect(_values(page).first).to_have_text(_expected(sheet, entities=[TOTAL], window="12M")[0])
    page.locator(".warum-gruppe select").select_option(label="B2C (Sektor)")
    page.locator(".warum-kpi select").select_option(label="Umsatz Total")
    page.locator(".warum-button button").click()
    explanation = sheet.explain("turnover", "B2C", window="12M")
    members = page.locator('.warum-tabelle .tabulator-row [tabulator-field="Mitglied"]')
    expect(members).to_have_text(list(explanation.members["member"]))
    contributions = page.locator(
        '.warum-tabelle .tabulator-row [tabulator-field="Beitrag zur Abw."]'
    )
    expect(contributions).to_have_text(
        [format_change(value, "currency") for value in explanation.members["contribution"]]
    )
    expect(page.locator(".warum-status")).to_contain_text(
        "Umsatz Total von B2C: nicht vollständig erklärt, weil das Vorjahresfenster der Gruppe "
        "unvollständig ist"
    )
    expect(page.locator(".warum-diagramm .bk-Canvas, .warum-diagramm canvas").first).to_be_visible()
    page.locator(".warum").screenshot(path=screenshots / "warum.png")

    def download(css: str) -> bytes:
        with page.expect_download() as info:
            page.locator(f"{css} button").click()
        return Path(info.value.path()).read_bytes()

    workbook = openpyxl.load_workbook(io.BytesIO(download(".download-warum-xlsx")))
    assert workbook.sheetnames == ["Warum", "Auswahl"]
    rows = list(workbook["Warum"].iter_rows(values_only=True))
    header = rows[0]
    assert [row[header.index("Mitglied")] for row in rows[1:]] == list(
        explanation.members["member"]
    )
    assert [row[header.index("Beitrag zur Abw.")] for row in rows[1:]] == pytest.approx(
        list(explanation.members["contribution"])
    )
    selection = {row[0]: row[1] for row in workbook["Auswahl"].iter_rows(values_only=True)}
    assert selection["Vollständig erklärt"] == "nein"
    assert download(".download-warum-png").startswith(b"\x89PNG\r\n\x1a\n")

    # A click on a row of the KPI table explains that row: Alpine's active accounts.
    _choose(page, "kpis", "Anzahl aktive Konten")
    _choose(page, "entitaeten", "Alpine (Mandant)")
    page.locator(".entitaeten input[type=search]").press("Escape")
    expect(_values(page)).to_have_count(1)
    _values(page).first.click()
    alpine = sheet.explain("active_accounts", "Alpine", window="12M")
    expect(members).to_have_text(list(alpine.members["member"]))
    expect(page.locator(".warum-status")).to_contain_text("Anzahl aktive Konten von Alpine")
    usage = [json.loads(line) for line in app.usage_log.read_text(encoding="utf-8").splitlines()]
    assert {line["file"] for line in usage if line["action"] == "download"} >= {
        "warum_xlsx",
        "warum_png",
    }
    assert any(line["action"] == "warum" for line in usage)
