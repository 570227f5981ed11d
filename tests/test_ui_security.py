"""Security of ``kpisheet serve`` in Debian's Chromium and over plain HTTP.

Three servers run for the module: one without login whose entity names and KPI texts are script
payloads, one with ``--auth`` (users with and without scopes) for the session, redirect, CSRF,
header and scope tests, and one with a quick lock for the password flood. Every page is checked
for browser console errors (a Content-Security-Policy violation is one) and the server logs for
tracebacks.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pytest
import yaml

import kpisheet
from kpisheet.builtin import builtin_definitions_dir
from kpisheet.demo import DEMO_ENTITIES, generate_observations
from kpisheet.presentation.formats import format_value
from kpisheet_ui.headers import SECURITY_HEADERS
from kpisheet_ui.scopes import visible_entities
from kpisheet_ui.sessions import SESSION_COOKIE
from kpisheet_ui.users import add_user, remove_user, set_password
from tests.test_ui_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    START_TIMEOUT,
    UPDATE_TIMEOUT,
    Server,
    _require_browser,
    _start,
    _write_store,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: Script payloads, each marking the element it would inject with an id starting ``xss``.
PAYLOADS = {
    "total": 'Welt "><svg id=xss-total onload=alert(1)>',
    "sector": "B2C <img id=xss-sector src=x onerror=alert(2)>",
    "mandant": "Alpine <img id=xss-mandant src=x onerror=alert(3)>",
    "product": "Karte <script id=xss-product>alert(4)</script>",
    "view": "<b id=xss-view onmouseover=alert(5)>CC</b>",
    "label": "Umsatz <img id=xss-label src=x onerror=alert(6)>",
    "stock": "Konten [klick](javascript:alert(7)) <img id=xss-stock src=x onerror=alert(7)>",
    "group": "<img id=xss-group src=x onerror=alert(8)> Gruppe",
    "description": "<script id=xss-description>alert(9)</script>",
}
INJECTED = "[id^=xss]"
PRODUCT = "Alpine Visa Classic"
PASSWORDS = {
    "anna": "richtig-123",
    "beat": "richtig-456",
    "carla": "richtig-789",
    "dora": "richtig-abc",
}
#: Failed logins in a row that lock, on the flood server.
FLOOD_LOCK_AFTER = 5
#: Most password guesses sent to the flood server (it stops once the lock is reported).
FLOOD_ATTEMPTS = 2000


def _hostile_project(directory: Path) -> tuple[str, Path, Path]:
    """A store, KPI definitions and entities whose texts are the payloads."""
    entities = yaml.safe_load(Path(DEMO_ENTITIES).read_text(encoding="utf-8"))
    entities["total"] = PAYLOADS["total"]
    renamed = {}
    for name, attributes in entities["entities"].items():
        attributes = dict(attributes)
        if attributes["mandant"] == "Alpine":
            attributes["mandant"] = PAYLOADS["mandant"]
        if attributes["sector"] == "B2C":
            attributes["sector"] = PAYLOADS["sector"]
        if attributes["cardprofile"] == "CC":
            attributes["cardprofile"] = PAYLOADS["view"]
        renamed[PAYLOADS["product"] if name == PRODUCT else name] = attributes
    entities["entities"] = renamed
    entities_file = directory / "entities.yaml"
    entities_file.write_text(
        yaml.safe_dump(entities, allow_unicode=True, sort_keys=False), encoding="utf-8"
    )

    definitions = directory / "kpi_definitions"
    definitions.mkdir()
    for source in sorted(Path(builtin_definitions_dir()).glob("*.yaml")):
        kpis = yaml.safe_load(source.read_text(encoding="utf-8"))
        for kpi in kpis:
            kpi["description"] = PAYLOADS["description"]
            if kpi["id"] == "turnover":
                kpi["label"] = PAYLOADS["label"]
            if kpi["id"] == "active_accounts":
                kpi["label"] = PAYLOADS["stock"]
            if kpi.get("group") == "Konten":
                kpi["group"] = PAYLOADS["group"]
        (definitions / source.name).write_text(
            yaml.safe_dump(kpis, allow_unicode=True, sort_keys=False), encoding="utf-8"
        )
    observations = generate_observations()
    observations["entity"] = observations["entity"].replace({PRODUCT: PAYLOADS["product"]})
    return _write_store(directory / "kpis.db", observations), definitions, entities_file


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[dict[str, Server]]:
    """The three servers, started at once."""
    _require_browser()
    hostile_dir = tmp_path_factory.mktemp("hostile")
    auth_dir = tmp_path_factory.mktemp("auth")
    flood_dir = tmp_path_factory.mktemp("flood")
    store, definitions, entities = _hostile_project(hostile_dir)
    users = auth_dir / "users.json"
    for name, password in PASSWORDS.items():
        add_user(users, name, password, scopes=["mandant=Alpine"] if name == "beat" else None)
    flood_users = flood_dir / "users.json"
    add_user(flood_users, "anna", PASSWORDS["anna"])
    add_user(flood_users, "eva", "richtig-eva")
    demo = generate_observations()
    auth_store = _write_store(auth_dir / "kpis.db", demo)
    flood_store = _write_store(flood_dir / "kpis.db", demo)
    starts = {
        "hostile": lambda: _start(
            hostile_dir,
            store,
            "--definitions",
            str(definitions),
            "--entities",
            str(entities),
            "--poll-seconds",
            "0.5",
        ),
        "auth": lambda: _start(auth_dir, auth_store, "--auth", str(users)),
        "flood": lambda: _start(
            flood_dir,
            flood_store,
            "--auth",
            str(flood_users),
            "--login-backoff-seconds",
            "0.05",
            "--login-lock-after",
            str(FLOOD_LOCK_AFTER),
            "--login-lock-minutes",
            "10",
        ),
    }
    started = {name: start() for name, start in starts.items()}
    deadline = time.monotonic() + START_TIMEOUT
    for name, server in started.items():
        # A port taken by another program between choosing it and listening: once more.
        while server.process.poll() is None and not _answers(server):
            if time.monotonic() > deadline:
                break  # Server.wait reports it
            time.sleep(0.5)
        if server.process.poll() is not None and "the port is in use" in server.log_text():
            started[name] = starts[name]()
    started["auth"].users = users  # type: ignore[attr-defined]
    started["flood"].restart = starts["flood"]  # type: ignore[attr-defined]
    yield started
    for server in started.values():
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def _answers(server: Server) -> bool:
    """True once the server answers HTTP."""
    try:
        connection = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=5)
        connection.request("GET", "/login")
        connection.getresponse().read()
        connection.close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def hostile(servers) -> Server:
    servers["hostile"].wait()
    return servers["hostile"]


@pytest.fixture(scope="module")
def auth_app(servers) -> Server:
    servers["auth"].wait()
    return servers["auth"]


@pytest.fixture
def flood_app(servers) -> Server:
    """The flood server; a run after the first (a retry) gets it restarted with an empty usage
    log, since the earlier run's locks and log lines would decide the later one."""
    server = servers["flood"]
    if getattr(server, "flooded", False):
        server.process.terminate()
        server.process.wait(timeout=15)
        server.usage_log.unlink(missing_ok=True)
        restart = server.restart  # type: ignore[attr-defined]
        server = servers["flood"] = restart()
        server.restart = restart  # type: ignore[attr-defined]
    server.wait()
    server.flooded = True  # type: ignore[attr-defined]
    return server


@pytest.fixture(scope="module")
def browser(servers):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def context(browser, servers):
    """A fresh browser context; afterwards: no console errors, no dialog, no traceback in the logs."""
    from playwright.sync_api import expect

    expect.set_options(timeout=UPDATE_TIMEOUT)
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    errors: list[str] = []
    dialogs: list[str] = []

    def watch(page) -> None:
        page.on(
            "console",
            lambda message: errors.append(message.text) if message.type == "error" else None,
        )
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    context.on("page", watch)
    yield context
    context.close()
    assert dialogs == []
    assert [e for e in errors if "Failed to load resource" not in e] == []
    for server in servers.values():
        assert "Traceback (most recent call last)" not in server.log_text()


@pytest.fixture
def page(context):
    return context.new_page()


# -- helpers -------------------------------------------------------------------------------


def _rows(page):
    return page.locator(".kpi-tabelle .tabulator-row")


def _groups(page):
    return page.locator(".kpi-tabelle .tabulator-group")


def _no_injection(page) -> None:
    from playwright.sync_api import expect

    expect(page.locator(INJECTED)).to_have_count(0)


def _choose(page, widget: str, text: str) -> None:
    """Pick the option of a multi-select whose text contains ``text`` (again if the widget was
    redrawn with new options while the dropdown was open)."""
    from playwright.sync_api import Error

    field = page.locator(f".{widget} input[type=search]")
    option = page.locator(
        f".{widget} .choices__list--dropdown .choices__item--selectable", has_text=text
    ).first
    for attempt in range(3):
        field.click()
        field.fill(text[:6])
        try:
            option.click(timeout=5_000)
            break
        except Error:
            if attempt == 2:
                raise
    field.press("Escape")


def _login(page, url: str, user: str, password: str | None = None) -> None:
    from playwright.sync_api import expect

    page.goto(url)
    page.locator("input[name=username]").fill(user)
    page.locator("input[name=password]").fill(password or PASSWORDS[user])
    page.get_by_role("button", name="Anmelden").click()
    expect(_rows(page).first).to_be_visible(timeout=60_000)


class Http:
    """Plain HTTP requests to a server, keeping cookies like a browser that ignores SameSite."""

    def __init__(self, server: Server) -> None:
        self.host = server.url.removeprefix("http://")
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None
    ) -> tuple[int, http.client.HTTPMessage, str]:
        connection = http.client.HTTPConnection(self.host, timeout=30)
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        text = response.read().decode("utf-8", errors="replace")
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if "expires=Thu, 01 Jan 1970" in header or value in ('""', ""):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        connection.close()
        return response.status, response.headers, text

    def login_form(self, path: str = "/login") -> str:
        """Load the login page; the form's XSRF token."""
        status, _, text = self.request("GET", path)
        assert status == 200
        match = re.search(r'name="_xsrf" value="([^"]+)"', text)
        assert match is not None
        return match[1]

    def login(self, user: str, password: str, next_url: str = "/") -> tuple[int, str]:
        """Post the login form; the status and the redirect target."""
        token = self.login_form()
        status, headers, _ = self.request(
            "POST",
            "/login",
            {"_xsrf": token, "username": user, "password": password, "next": next_url},
        )
        return status, headers.get("Location", "")


def _token_payloads(html: str) -> list[dict]:
    """The payloads of the Bokeh session tokens embedded in a page."""
    from bokeh.util.token import get_token_payload

    return [get_token_payload(token) for token in re.findall(r'token\\?":\s*\\?"([\w.-]+)', html)]


# -- escaping ------------------------------------------------------------------------------


def test_script_payloads_in_every_text_field_stay_text(page, hostile: Server) -> None:
    """Payloads in entity names, KPI labels, groups and descriptions show as text in every view:
    group headers, selects, multi-selects, table, notes, chart; no dialog, no injected element."""
    from playwright.sync_api import expect

    page.goto(hostile.url)
    expect(_rows(page).first).to_be_visible(timeout=60_000)
    expect(_groups(page).first).to_contain_text(f"{PAYLOADS['total']} (Total)")
    _no_injection(page)

    page.locator(".entitaeten-gruppe select").select_option(label=f"Mandant: {PAYLOADS['mandant']}")
    expect(_groups(page).first).to_contain_text(f"{PAYLOADS['mandant']} (Mandant)")
    expect(page.locator(".kpi-tabelle")).to_contain_text(f"{PAYLOADS['product']} (Produkt)")
    expect(page.locator(".kpi-tabelle")).to_contain_text(PAYLOADS["label"])
    _choose(page, "entitaeten", PAYLOADS["product"])
    expect(page.locator(".entitaeten .choices__list--multiple")).to_contain_text(
        PAYLOADS["product"]
    )
    page.locator(".kpi-gruppe select").select_option(label=PAYLOADS["group"])
    _choose(page, "kpis", PAYLOADS["stock"])
    expect(page.locator(".diagramm .download-png")).to_be_visible()
    expect(page.locator(".kpis .choices__list--multiple")).to_contain_text(PAYLOADS["stock"])
    box = page.locator(".diagramm canvas").first.bounding_box()
    assert box is not None
    for step in range(1, 10):
        page.mouse.move(box["x"] + box["width"] * step / 10, box["y"] + box["height"] / 2)
    _no_injection(page)

    page.locator(".fenster button", has_text="12M").click()
    expect(page.locator(".hinweise")).to_contain_text(PAYLOADS["stock"])
    page.locator(".darstellung button", has_text="nach KPI").click()
    expect(_groups(page).first).to_contain_text(PAYLOADS["stock"])
    page.locator(".auswahl-loeschen button").click()
    page.locator(".pro-konto input").check()
    expect(page.locator(".hinweise")).to_contain_text("ohne Bezugsgrösse")
    _no_injection(page)

    with page.expect_download() as info:
        page.locator(".entitaeten-gruppe select").select_option(
            label=f"Mandant: {PAYLOADS['mandant']}"
        )
        _choose(page, "kpis", PAYLOADS["stock"])
        page.locator(".diagramm .download-html button").click()
    chart = Path(info.value.path()).read_text(encoding="utf-8")
    assert "<img id=xss" not in chart and "<script id=xss" not in chart
    _no_injection(page)


# -- sessions ------------------------------------------------------------------------------


def test_session_token_carries_no_cookie_and_the_cookie_is_httponly(
    context, page, auth_app: Server
) -> None:
    """The session cookie is HttpOnly and SameSite=Strict, and neither it nor any cookie header is
    in the Bokeh session token that page scripts can read."""
    _login(page, auth_app.url, "anna")
    cookie = next(c for c in context.cookies() if c["name"] == SESSION_COOKIE)
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    html = page.content()
    payloads = _token_payloads(html)
    assert payloads, "no session token found in the page"
    for payload in payloads:
        assert payload["cookies"] == {}
        assert not {name.lower() for name in payload["headers"]} & {"cookie", "authorization"}
        assert cookie["value"] not in json.dumps(payload)
    assert cookie["value"] not in html


def test_logout_ends_the_session_and_closes_open_pages(context, page, auth_app: Server) -> None:
    """Logout in one tab sends the other open tab to the login page; the old cookie is refused."""
    from playwright.sync_api import expect

    _login(page, auth_app.url, "anna")
    cookie = next(c for c in context.cookies() if c["name"] == SESSION_COOKIE)["value"]
    other = context.new_page()
    other.goto(f"{auth_app.url}/logout")
    expect(other.get_by_text("Sie sind abgemeldet.")).to_be_visible()
    expect(page.get_by_text("Bitte melden Sie sich an.")).to_be_visible(timeout=15_000)
    client = Http(auth_app)
    client.cookies[SESSION_COOKIE] = cookie
    status, headers, _ = client.request("GET", "/")
    assert status == 302 and "login" in headers["Location"]
    usage = auth_app.usage_log.read_text(encoding="utf-8")
    assert '"action": "abmeldung", "reason": "logout"' in usage


@pytest.mark.parametrize("change", ["passwd", "remove"])
def test_password_change_and_removal_revoke_open_sessions(
    context, page, auth_app: Server, change: str
) -> None:
    """`users passwd` and `users remove` end the user's sessions: the open page goes to the login
    page and the old cookie no longer opens anything."""
    from playwright.sync_api import expect

    user = "carla" if change == "passwd" else "dora"
    _login(page, auth_app.url, user)
    cookie = next(c for c in context.cookies() if c["name"] == SESSION_COOKIE)["value"]
    users = auth_app.users  # type: ignore[attr-defined]
    if change == "passwd":
        set_password(users, user, "ganz-neues-pw")
    else:
        remove_user(users, user)
    expect(page.get_by_text("Bitte melden Sie sich an.")).to_be_visible(timeout=20_000)
    client = Http(auth_app)
    client.cookies[SESSION_COOKIE] = cookie
    status, headers, _ = client.request("GET", "/")
    assert status == 302 and "login" in headers["Location"]
    assert f'"user": "{user}", "action": "abmeldung", "reason": "revoked"' in (
        auth_app.usage_log.read_text(encoding="utf-8")
    )


EVIL_NEXT = [
    "///evil.example/x",
    "//evil.example/x",
    "/\\evil.example/x",
    "https://evil.example/x",
    "/\t/evil.example",
]


def test_next_off_site_is_refused(auth_app: Server) -> None:
    """After login the browser goes only to a path on this site, whatever ``next=`` says."""
    client = Http(auth_app)
    status, _, text = client.request("GET", "/login?next=" + urllib.parse.quote(EVIL_NEXT[0]))
    assert status == 200 and 'name="next" value="/"' in text
    for evil in EVIL_NEXT:
        assert client.login("anna", PASSWORDS["anna"], next_url=evil) == (302, "/")
    assert client.login("anna", PASSWORDS["anna"], next_url="/?theme=dark") == (302, "/?theme=dark")


def test_login_without_csrf_token_is_refused(auth_app: Server) -> None:
    """A login post without the form's token (or with a wrong one) gets no session."""
    client = Http(auth_app)
    form = {"username": "anna", "password": PASSWORDS["anna"], "next": "/"}
    status, headers, _ = client.request("POST", "/login", form)
    assert status == 302 and "error=formular" in headers["Location"]
    client.login_form()
    status, headers, _ = client.request("POST", "/login", {**form, "_xsrf": "2|00|00|00"})
    assert status == 302 and "error=formular" in headers["Location"]
    assert SESSION_COOKIE not in client.cookies
    status, _, text = client.request("GET", headers["Location"])
    assert "Das Anmeldeformular war abgelaufen." in text


def test_login_page_shows_no_text_from_the_url(auth_app: Server) -> None:
    """``?error=`` selects a fixed message; other text from the URL is never shown."""
    client = Http(auth_app)
    _, _, text = client.request("GET", "/login?error=%3Cscript%3Ealert(1)%3C/script%3EHallo")
    assert "alert(1)" not in text and "Hallo" not in text
    _, _, text = client.request("GET", "/login?error=falsch")
    assert '<p class="error" id="error-message">Benutzername oder Passwort falsch.</p>' in text


def test_security_headers_on_every_response(auth_app: Server) -> None:
    """Pages, login, logout, static files, redirects and errors all carry the security headers."""
    client = Http(auth_app)
    client.login("anna", PASSWORDS["anna"])
    _, _, page = client.request("GET", "/")
    static = re.search(r'src="(static/[^"]+\.js)', page)
    assert static is not None
    paths = ["/", "/login", f"/{static[1]}", "/nichts-hier", "/logout"]
    for path in paths:
        status, headers, _ = client.request("GET", path)
        for name, value in SECURITY_HEADERS.items():
            assert headers.get(name) == value, (path, status, name)
    status, headers, _ = Http(auth_app).request("GET", "/")
    assert status == 302 and headers.get("X-Frame-Options") == "DENY"


def test_autoload_without_login_is_refused_without_traceback(auth_app: Server) -> None:
    """An unauthenticated autoload.js is a plain 403, and the server logs no traceback for it.

    Only the log written from these requests on is read: the server is shared with browser tests,
    whose closed pages may leave tornado's note of a websocket closed mid-write before them."""
    before = len(auth_app.log_text())
    for _ in range(3):
        status, _, _ = Http(auth_app).request("GET", "/autoload.js?bokeh-autoload-element=x")
        assert status == 403
    deadline = time.monotonic() + 10
    while auth_app.log_text()[before:].count("403 GET /autoload.js") < 3:
        assert time.monotonic() < deadline, "the server did not log the three refusals"
        time.sleep(0.05)
    assert "Traceback" not in auth_app.log_text()[before:]


# -- throttling ----------------------------------------------------------------------------


def test_password_flood_is_throttled_while_a_logged_in_user_is_served(
    page, flood_app: Server
) -> None:
    """A flood of wrong passwords from one address: after a few checks the address and the name
    are locked (logged), guesses cost no hashing, and a logged-in user's page keeps updating."""
    from playwright.sync_api import expect

    _login(page, flood_app.url, "anna")
    sheet = kpisheet.open(flood_app.store)
    windows = ["12M", "3M", "YTD", "1M", "6M"]
    expected = {
        window: format_value(
            sheet.query(entities=[sheet.hierarchy.total], kpis=["turnover"], window=window)[
                "value"
            ].iloc[0],
            sheet.registry["turnover"].unit,
        )
        for window in windows
    }
    page.locator(".entitaeten-gruppe select").select_option(label=f"Total: {sheet.hierarchy.total}")
    outcomes: list[str] = []

    def guess(count: int) -> None:
        client = Http(flood_app)
        for attempt in range(count):
            _, location = client.login("eva", f"falsch-{attempt}")
            outcomes.append(
                urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["error"][0]
            )

    threads = [threading.Thread(target=guess, args=(FLOOD_ATTEMPTS // 4,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    latencies = []
    while any(thread.is_alive() for thread in threads):
        for window in windows:
            start = time.monotonic()
            page.locator(".fenster button", has_text=window).click()
            expect(
                page.locator('.kpi-tabelle .tabulator-row [tabulator-field="Wert"]').first
            ).to_have_text(expected[window])
            latencies.append(time.monotonic() - start)
    for thread in threads:
        thread.join()

    assert "gesperrt" in outcomes and len(outcomes) < FLOOD_ATTEMPTS + 4
    assert set(outcomes) <= {"falsch", "gebremst", "gesperrt"}
    assert outcomes.count("falsch") < FLOOD_LOCK_AFTER  # the rest was refused unchecked
    assert latencies and max(latencies) < 10
    assert Http(flood_app).login("eva", "richtig-eva") == (302, "/login?error=gesperrt&next=%2F")
    usage = [json.loads(line) for line in flood_app.usage_log.read_text().splitlines()]
    failed = [u for u in usage if u["action"] == "anmeldung_fehlgeschlagen"]
    assert len(failed) == FLOOD_LOCK_AFTER and {u["user"] for u in failed} == {"eva"}
    assert [u["user"] for u in usage if u["action"] == "gesperrt"] == ["eva"]
    log = flood_app.log_text()
    assert log.count("failed login: user 'eva' from 127.0.0.1") == FLOOD_LOCK_AFTER
    assert "login locked for 10 minutes: user 'eva' / address 127.0.0.1" in log


# -- scopes --------------------------------------------------------------------------------


def test_scoped_user_cannot_obtain_other_entities(context, page, auth_app: Server) -> None:
    """A user scoped to one mandant never receives another entity's name or number: not in the
    page, not in any websocket message, not in a download, not by setting widgets by hand."""
    from playwright.sync_api import expect

    sheet = kpisheet.open(auth_app.store)
    visible = visible_entities(sheet.hierarchy, ["mandant=Alpine"])
    hidden = [e for e in sheet.entities["entity"] if e not in visible and len(e) >= 5]
    totals = sheet.query(entities=[sheet.hierarchy.total, "Talwind", "B2C"], kpis=["turnover"])
    hidden_numbers = [format_value(v, sheet.registry["turnover"].unit) for v in totals["value"]]
    received: list[str] = []

    def frames(ws) -> None:
        ws.on(
            "framereceived",
            lambda frame: received.append(
                frame if isinstance(frame, str) else base64.b64encode(frame).decode()
            ),
        )

    page.on("websocket", frames)
    _login(page, auth_app.url, "beat")
    received.append(page.content())
    expect(_groups(page).first).to_contain_text("Alpine (Mandant)")
    page.locator(".darstellung button", has_text="nach KPI").click()
    expect(_groups(page).first).to_contain_text("Umsatz Total")
    page.locator(".darstellung button", has_text="nach Entität").click()
    expect(_groups(page).first).to_contain_text("Alpine (Mandant)")
    page.locator(".fenster button", has_text="12M").click()
    expect(page.locator(".hinweise")).to_be_visible()  # the 12M stock note: the change landed
    _choose(page, "kpis", "Umsatz Total")
    expect(page.locator(".diagramm .download-png")).to_be_visible()

    def download(css: str) -> bytes:
        with page.expect_download() as info:
            page.locator(f"{css} button").click()
        return Path(info.value.path()).read_bytes()

    table = openpyxl.load_workbook(io.BytesIO(download(".download-tabelle")))
    series = openpyxl.load_workbook(io.BytesIO(download(".download-verlauf")))
    cells = [
        str(cell)
        for workbook in (table, series)
        for sheet_ in workbook.worksheets
        for row in sheet_.iter_rows(values_only=True)
        for cell in row
        if cell is not None
    ]
    received.append(download(".download-html").decode("utf-8"))
    # Setting the widgets by hand in the browser, as a script could.
    page.evaluate(
        """() => {
        const models = [...Bokeh.documents[0].all_models];
        for (const m of models) {
          const kind = m.constructor.__name__;
          const values = (m.options || []).map(o => (Array.isArray(o) ? o[0] : String(o)));
          if (kind === "MultiChoice" && values.includes("Alpine (Mandant)"))
            m.value = ["Kartenwelt AG (Total)", "Talwind (Mandant)"];
          if (kind === "Select" && m.options.some(o => String(o).startsWith("Mandant:")))
            m.value = "Total: Kartenwelt AG";
        }
    }"""
    )
    page.wait_for_timeout(1500)
    page.locator(".fenster button", has_text="1M").click()
    expect(_rows(page).first).to_be_visible()
    page.wait_for_timeout(1500)
    everything = "\n".join(received + cells)
    assert "Alpine Visa Gold" in everything  # the check looks at the right text
    assert [name for name in hidden if name in everything] == []
    assert [number for number in hidden_numbers if number in everything] == []
    assert {c for c in cells if c in set(sheet.entities["entity"])} <= visible


# -- unavailable data ----------------------------------------------------------------------


def test_missing_store_gives_a_german_notice_that_retries(page, hostile: Server) -> None:
    """A visitor arriving while the store is missing gets a German notice, not a blank page; the
    page shows the sheet by itself once the store is back."""
    from playwright.sync_api import expect

    path = Path(hostile.store.removeprefix("sqlite:///"))
    away = path.with_name("weg.db")
    path.rename(away)
    try:
        time.sleep(1)  # longer than the server's poll interval: it looks at the store again
        page.goto(hostile.url)
        expect(page.locator(".meldung")).to_contain_text("Daten zurzeit nicht erreichbar")
        expect(page.locator(".meldung")).to_contain_text("alle 10 Sekunden erneut")
    finally:
        away.rename(path)
    expect(_rows(page).first).to_be_visible(timeout=40_000)
    assert f"page without data: no store at {path}" in hostile.log_text()


def test_warum_shows_payloads_as_text(page, hostile: Server) -> None:
    """ "Warum?" on the hostile sector's turnover, by product and by the hostile view: names and
    labels show as text in the selects, the status, the members' table and the waterfall."""
    from playwright.sync_api import expect

    page.goto(hostile.url)
    expect(_rows(page).first).to_be_visible(timeout=60_000)
    page.locator(".warum-gruppe select").select_option(label=f"{PAYLOADS['sector']} (Sektor)")
    page.locator(".warum-kpi select").select_option(label=PAYLOADS["label"])
    page.locator(".warum-mitglieder select").select_option(label="Produkte")
    page.locator(".warum-button button").click()
    table = page.locator(".warum-tabelle")
    expect(table).to_contain_text(PAYLOADS["product"])
    expect(page.locator(".warum-status")).to_contain_text(
        f"{PAYLOADS['label']} von {PAYLOADS['sector']}"
    )
    page.locator(".warum-mitglieder select").select_option(label="Kartenprofil")
    page.locator(".warum-button button").click()
    expect(table).to_contain_text(PAYLOADS["view"])
    box = page.locator(".warum-diagramm canvas").first.bounding_box()
    assert box is not None
    for step in range(1, 10):
        page.mouse.move(box["x"] + box["width"] * step / 10, box["y"] + box["height"] / 2)
    _no_injection(page)
