"""Tests of the app's login machinery without a browser: redirects, throttling, sessions, users
file changes, the usage log's mode, the security headers and the escaping of text from data."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from kpisheet.cli import main
from kpisheet_ui.auth import LOGIN_ERRORS, local_path
from kpisheet_ui.escape import html_column, html_text, markdown_text
from kpisheet_ui.headers import CONTENT_SECURITY_POLICY, SECURITY_HEADERS
from kpisheet_ui.sessions import EndReason, SessionSettings, SessionStore, UsersFile
from kpisheet_ui.throttle import LoginThrottle, ThrottleSettings
from kpisheet_ui.usage import configure_usage_log, log_event
from kpisheet_ui.users import (
    AuthError,
    add_user,
    load_user_records,
    load_users,
    remove_user,
    set_password,
)

posix_only = pytest.mark.skipif(not hasattr(stat, "S_IRWXO"), reason="POSIX permissions")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- redirects -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "///evil.example/x",
        "//evil.example/x",
        "/\\evil.example/x",
        "\\\\evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "evil.example",
        "/\t/evil.example",
        "/ok\n//evil",
        "",
        None,
    ],
)
def test_next_refuses_everything_but_a_local_path(url: str | None) -> None:
    """An absolute, scheme-relative or backslash URL, or one with control characters, is replaced
    by the default."""
    assert local_path(url, "/") == "/"


@pytest.mark.parametrize("url", ["/", "/?theme=dark", "/app/seite#oben", "/%2F%2Fevil"])
def test_next_keeps_a_local_path(url: str) -> None:
    """A path on this site is kept as it is."""
    assert local_path(url, "/") == url


def test_login_messages_are_fixed_texts() -> None:
    """The login page knows four messages, each a fixed German sentence."""
    assert LOGIN_ERRORS == {
        "falsch": "Benutzername oder Passwort falsch.",
        "gebremst": "Zu viele Fehlversuche. Bitte warten Sie einen Moment und versuchen Sie es "
        "erneut.",
        "gesperrt": "Zu viele Fehlversuche. Bitte warten Sie einige Minuten und versuchen Sie "
        "es dann erneut.",
        "formular": "Das Anmeldeformular war abgelaufen. Bitte melden Sie sich erneut an.",
    }


# -- throttling ----------------------------------------------------------------------------


def test_backoff_doubles_per_failure_and_success_clears_the_user() -> None:
    """After the free failures each failure doubles the wait for the user name and the address;
    a success clears the name."""
    clock = Clock()
    settings = ThrottleSettings(base_seconds=1, max_delay_seconds=8, free_failures=1)
    throttle = LoginThrottle(settings, clock)
    assert throttle.wait_seconds("anna", "10.0.0.1") == 0
    waits = []
    for _ in range(5):
        throttle.failure("anna", "10.0.0.1")
        waits.append(throttle.wait_seconds("anna", "10.0.0.1"))
    assert waits == [0, 1, 2, 4, 8]  # the first failure is free, then the wait doubles
    assert throttle.wait_seconds("anna", "10.0.0.2") == 8  # the user name is slowed down
    assert throttle.wait_seconds("beat", "10.0.0.1") == 8  # and so is the address
    assert throttle.wait_seconds("beat", "10.0.0.2") == 0
    clock.now += 8
    assert throttle.wait_seconds("anna", "10.0.0.2") == 0
    throttle.success("anna", "10.0.0.2")
    assert throttle.wait_seconds("anna", "10.0.0.2") == 0
    assert throttle.wait_seconds("beat", "10.0.0.1") == 0  # the delay has passed


def test_one_check_at_a_time_per_name_and_address() -> None:
    """While a password of a name or an address is being checked, another attempt is refused."""
    throttle = LoginThrottle(ThrottleSettings(), Clock())
    assert throttle.begin("anna", "10.0.0.1")
    assert not throttle.begin("anna", "10.0.0.2")
    assert not throttle.begin("beat", "10.0.0.1")
    assert throttle.begin("beat", "10.0.0.2")
    throttle.failure("anna", "10.0.0.1")  # the first failure is free: no wait
    assert throttle.begin("anna", "10.0.0.1")
    throttle.success("anna", "10.0.0.1")
    assert throttle.begin("carla", "10.0.0.1")


def test_lock_after_n_failures_until_the_lock_time_passed() -> None:
    """The N-th failure in a row locks the name and address for the configured time."""
    clock = Clock()
    settings = ThrottleSettings(base_seconds=0.001, lock_after=3, lock_seconds=600)
    throttle = LoginThrottle(settings, clock)
    assert [throttle.failure("anna", "10.0.0.1") for _ in range(3)] == [False, False, True]
    assert throttle.locked("anna", "10.0.0.9") and throttle.locked("carla", "10.0.0.1")
    assert throttle.wait_seconds("anna", "10.0.0.9") == pytest.approx(600)
    clock.now += 599
    assert throttle.locked("anna", "10.0.0.9")
    clock.now += 2
    assert not throttle.locked("anna", "10.0.0.9")
    assert throttle.wait_seconds("anna", "10.0.0.9") == 0


# -- users file ----------------------------------------------------------------------------


def test_scopes_stored_and_kept_on_new_password(tmp_path: Path) -> None:
    """Scopes are stored with the user; a new password keeps them; several scopes are kept in order."""
    path = tmp_path / "users.json"
    add_user(path, "beat", "richtig-456", scopes=["mandant=Alpine", " sector = B2C "])
    assert load_user_records(path)["beat"].scopes == ("mandant=Alpine", "sector=B2C")
    add_user(path, "beat", "neues-pass-9")
    set_password(path, "beat", "drittes-pass")
    assert load_user_records(path)["beat"].scopes == ("mandant=Alpine", "sector=B2C")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["version"] == 2 and data["users"]["beat"]["scopes"] == [
        "mandant=Alpine",
        "sector=B2C",
    ]


def test_malformed_scope_refused(tmp_path: Path) -> None:
    """A scope must be LEVEL=NAME."""
    with pytest.raises(AuthError, match=re.escape("scope 'Alpine' is not LEVEL=NAME")):
        add_user(tmp_path / "users.json", "beat", "richtig-456", scopes=["Alpine"])


@posix_only
def test_version_1_file_still_read(tmp_path: Path) -> None:
    """A users file of version 1 (name → hash) is read, without scopes."""
    path = tmp_path / "users.json"
    add_user(path, "anna", "richtig-123")
    hashes = load_users(path)
    path.write_text(json.dumps({"version": 1, "users": hashes}), encoding="utf-8")
    path.chmod(0o600)
    assert load_user_records(path)["anna"].hash == hashes["anna"]
    assert load_user_records(path)["anna"].scopes == ()


def test_passwd_and_remove_need_a_known_user(tmp_path: Path) -> None:
    """`passwd` and `remove` of an unknown user name the known ones."""
    path = tmp_path / "users.json"
    add_user(path, "anna", "richtig-123")
    with pytest.raises(AuthError, match=re.escape(f"no user 'otto' in {path} (users: anna)")):
        set_password(path, "otto", "richtig-123")
    with pytest.raises(AuthError, match=re.escape(f"no user 'otto' in {path} (users: anna)")):
        remove_user(path, "otto")


def test_cli_users_passwd_and_remove(tmp_path: Path) -> None:
    """`kpisheet users passwd/remove` change the file and say that open sessions end."""
    path = tmp_path / "users.json"
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "users",
            "add",
            "beat",
            "--auth",
            str(path),
            "--password-stdin",
            "--scope",
            "mandant=Alpine",
        ],
        input="richtig-456\n",
    )
    assert result.exit_code == 0
    assert result.output == f"added user beat in {path} (scopes: mandant=Alpine)\n"
    before = load_user_records(path)["beat"]
    result = runner.invoke(
        main,
        ["users", "passwd", "beat", "--auth", str(path), "--password-stdin"],
        input="neu-pass-77\n",
    )
    assert result.exit_code == 0
    assert result.output == f"new password for beat in {path}; their open sessions end\n"
    after = load_user_records(path)["beat"]
    assert after.hash != before.hash and after.scopes == ("mandant=Alpine",)
    result = runner.invoke(main, ["users", "remove", "beat", "--auth", str(path)])
    assert result.exit_code == 0
    assert result.output == f"removed user beat from {path}; their open sessions end\n"
    assert load_user_records(path) == {}
    result = runner.invoke(main, ["users", "remove", "beat", "--auth", str(path)])
    assert result.exit_code == 1
    assert result.output == f"no user 'beat' in {path} (users: none)\n"


# -- sessions ------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> tuple[SessionStore, Clock, Path]:
    path = tmp_path / "users.json"
    add_user(path, "anna", "richtig-123")
    add_user(path, "beat", "richtig-456", scopes=["mandant=Alpine"])
    clock = Clock()
    settings = SessionSettings(idle_seconds=60, absolute_seconds=600)
    return SessionStore(UsersFile(path), settings, clock), clock, path


def _login(store: SessionStore, name: str):
    return store.create(store.users.users()[name], "127.0.0.1")


def test_session_ids_are_random_and_logout_ends_the_session(store) -> None:
    """Each login gets a new random id; logout forgets it and closes the pages opened with it."""
    sessions, _, _ = store
    first, second = _login(sessions, "anna"), _login(sessions, "anna")
    assert first.id != second.id and len(first.id) >= 40
    closed = []
    first.attach_page("page-1", lambda: closed.append("page-1"))
    assert sessions.get(first.id) is first
    sessions.end(first.id, EndReason.LOGOUT)
    assert closed == ["page-1"]
    assert sessions.get(first.id) is None
    assert sessions.get(second.id) is second


def test_idle_and_absolute_expiry(store) -> None:
    """A session ends after the idle time without activity and after the absolute time regardless."""
    sessions, clock, _ = store
    session = _login(sessions, "anna")
    for _ in range(10):
        clock.now += 59
        assert session.alive()  # activity within the idle time keeps it
    clock.now += 59
    assert not session.alive()  # 649 s after login: past the absolute time
    idle = _login(sessions, "anna")
    clock.now += 61
    assert sessions.get(idle.id) is None


def test_password_change_removal_and_scope_change_revoke(store) -> None:
    """A new password, a removed user or changed scopes end the user's sessions at the next sweep."""
    sessions, _, path = store
    anna, beat = _login(sessions, "anna"), _login(sessions, "beat")
    closed: list[str] = []
    anna.attach_page("a", lambda: closed.append("anna"))
    beat.attach_page("b", lambda: closed.append("beat"))
    set_password(path, "anna", "neues-pass-9")
    assert sessions.sweep() == 1 and closed == ["anna"]
    assert sessions.get(beat.id) is beat
    add_user(path, "beat", "richtig-456", scopes=["mandant=Talwind"])
    assert sessions.get(beat.id) is None and closed == ["anna", "beat"]
    beat = _login(sessions, "beat")
    remove_user(path, "beat")
    assert sessions.get(beat.id) is None


# -- usage log, headers, escaping ----------------------------------------------------------


@posix_only
def test_usage_log_is_owner_only(tmp_path: Path) -> None:
    """The usage log file is created, or made, readable by its owner only; events are JSON lines."""
    created = tmp_path / "usage.log"
    handler = configure_usage_log(created)
    log_event("gesperrt", user="anna", address="127.0.0.1", minutes=15)
    handler.flush()
    assert stat.S_IMODE(created.stat().st_mode) == 0o600
    line = json.loads(created.read_text(encoding="utf-8"))
    assert {k: line[k] for k in ("user", "action", "address", "minutes")} == {
        "user": "anna",
        "action": "gesperrt",
        "address": "127.0.0.1",
        "minutes": 15,
    }
    existing = tmp_path / "old.log"
    existing.write_text("", encoding="utf-8")
    existing.chmod(0o644)
    configure_usage_log(existing)
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600
    configure_usage_log(None)


def test_security_policy_forbids_inline_handlers_and_framing() -> None:
    """The policy forbids inline event handlers, plugins, foreign bases and framing."""
    directives = dict(d.split(" ", 1) for d in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["script-src-attr"] == "'none'"
    assert directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == "'self'"
    assert SECURITY_HEADERS["X-Frame-Options"] == "DENY"
    assert SECURITY_HEADERS["X-Content-Type-Options"] == "nosniff"


def test_escaping_of_text_from_data() -> None:
    """HTML and Markdown panes get text: tags, links, emphasis and lists come out as the characters."""
    payload = '<img src=x onerror="alert(1)"> [klick](javascript:alert(2)) *fett*'
    assert html_text(payload) == (
        "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; [klick](javascript:alert(2)) *fett*"
    )
    assert markdown_text(payload) == (
        "&lt;img src=x onerror=&quot;alert\\(1\\)&quot;&gt; \\[klick\\]\\(javascript:alert\\(2\\)\\) "
        "\\*fett\\*"
    )
    assert markdown_text("1. Rang\n- Punkt: gut.") == "1\\. Rang\n\\- Punkt: gut."
    assert markdown_text("Release 2 wird nicht angezeigt: bitte melden.") == (
        "Release 2 wird nicht angezeigt: bitte melden."
    )
    column = pd.Series(["<b>", "a & b", "<b>"], index=[5, 6, 7])
    assert html_column(column).tolist() == ["&lt;b&gt;", "a &amp; b", "&lt;b&gt;"]
    assert html_column(column).index.tolist() == [5, 6, 7]


@given(st.lists(st.text(alphabet=st.sampled_from("&<>\"'a ;#x2&amp"), max_size=8), max_size=12))
def test_a_column_is_escaped_as_each_of_its_texts(texts: list[str]) -> None:
    """The table's columns are escaped a column at a time, exactly as one text is escaped."""
    assert html_column(pd.Series(texts, dtype="str")).tolist() == [html_text(t) for t in texts]
