"""Tests of kpisheet_ui.users and `kpisheet users add`: salted password hashes, owner-only files."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from kpisheet.cli import main
from kpisheet_ui.users import (
    COOKIE_SECRET_ENV,
    AuthError,
    add_user,
    check_credentials,
    cookie_secret,
    hash_password,
    load_users,
    verify_password,
)

posix_only = pytest.mark.skipif(not hasattr(stat, "S_IRWXO"), reason="POSIX permissions")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_hash_is_salted_and_verifies() -> None:
    """The same password hashes differently each time; each hash verifies it and nothing else."""
    first, second = hash_password("geheim123"), hash_password("geheim123")
    assert first != second
    assert first.startswith("scrypt$16384$8$1$")
    assert "geheim123" not in first
    assert verify_password("geheim123", first) and verify_password("geheim123", second)
    assert not verify_password("geheim124", first)


def test_malformed_hash_never_verifies() -> None:
    """A damaged or foreign hash string is a failed check, not an exception."""
    assert not verify_password("x", "plain-text-password")
    assert not verify_password("x", "bcrypt$1$2$3$AAAA$BBBB")
    assert not verify_password("x", "scrypt$16384$8$1$not base64!$AAAA")


def test_credentials_need_known_user_and_right_password() -> None:
    """A login needs a known user name with its own password."""
    users = {"anna": hash_password("richtig-123"), "beat": hash_password("anderes-456")}
    assert check_credentials(users, "anna", "richtig-123")
    assert not check_credentials(users, "anna", "anderes-456")
    assert not check_credentials(users, "carla", "richtig-123")
    assert not check_credentials(users, "anna", "")


@posix_only
def test_add_user_writes_owner_only_file(tmp_path: Path) -> None:
    """`add_user` creates the users file readable by its owner only, holding hashes only."""
    path = tmp_path / "users.json"
    assert add_user(path, "anna", "richtig-123") is True
    assert add_user(path, "anna", "neues-pass-9") is False
    assert _mode(path) == 0o600
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["version"] == 2 and list(data["users"]) == ["anna"]
    assert data["users"]["anna"]["scopes"] == []
    assert "neues-pass-9" not in path.read_text(encoding="utf-8")
    assert check_credentials(load_users(path), "anna", "neues-pass-9")


def test_add_user_rejects_bad_names_and_short_passwords(tmp_path: Path) -> None:
    """User names are plain words; passwords have at least eight characters."""
    path = tmp_path / "users.json"
    with pytest.raises(AuthError, match=re.escape("user name 'anna maria' is not allowed")):
        add_user(path, "anna maria", "richtig-123")
    with pytest.raises(AuthError, match=re.escape("the password must have at least 8 characters")):
        add_user(path, "anna", "kurz")
    assert not path.exists()


@posix_only
def test_users_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    """A users file others can read is refused with the chmod that fixes it."""
    path = tmp_path / "users.json"
    add_user(path, "anna", "richtig-123")
    path.chmod(0o644)
    with pytest.raises(
        AuthError,
        match=re.escape(
            f"{path} is readable or writable by others (mode 644); make it owner-only: chmod 600 {path}"
        ),
    ):
        load_users(path)


def test_missing_or_foreign_users_file_is_explained(tmp_path: Path) -> None:
    """A missing file names the command that creates it; a foreign file is not misread."""
    missing = tmp_path / "nobody.json"
    with pytest.raises(AuthError, match=re.escape(f"users file {missing} does not exist")):
        load_users(missing)
    foreign = tmp_path / "plain.json"
    foreign.write_text('{"anna": "klartext"}', encoding="utf-8")
    foreign.chmod(0o600)
    with pytest.raises(
        AuthError, match=re.escape(f"users file {foreign} is not a kpisheet users file")
    ):
        load_users(foreign)


@posix_only
def test_cookie_secret_generated_once_owner_only(tmp_path: Path, monkeypatch) -> None:
    """Without the environment variable the secret is generated once, owner-only, and reused."""
    monkeypatch.delenv(COOKIE_SECRET_ENV, raising=False)
    users = tmp_path / "users.json"
    first = cookie_secret(users)
    secret_file = tmp_path / "users.json.cookie-secret"
    assert _mode(secret_file) == 0o600
    assert len(first) >= 32 and cookie_secret(users) == first


def test_cookie_secret_from_environment(tmp_path: Path, monkeypatch) -> None:
    """KPISHEET_COOKIE_SECRET wins over the file; a short one is refused."""
    monkeypatch.setenv(COOKIE_SECRET_ENV, "x" * 40)
    assert cookie_secret(tmp_path / "users.json") == "x" * 40
    assert not (tmp_path / "users.json.cookie-secret").exists()
    monkeypatch.setenv(COOKIE_SECRET_ENV, "short")
    with pytest.raises(
        AuthError, match=re.escape(f"{COOKIE_SECRET_ENV} must have at least 32 characters")
    ):
        cookie_secret(tmp_path / "users.json")


def test_cli_users_add_reads_password_from_stdin(tmp_path: Path) -> None:
    """`kpisheet users add NAME --auth FILE --password-stdin` stores a hash of the given password."""
    path = tmp_path / "users.json"
    result = CliRunner().invoke(
        main,
        ["users", "add", "anna", "--auth", str(path), "--password-stdin"],
        input="richtig-123\n",
    )
    assert result.exit_code == 0, result.output
    assert result.output == f"added user anna in {path}\n"
    assert check_credentials(load_users(path), "anna", "richtig-123")


def test_cli_users_add_prompts_twice(tmp_path: Path) -> None:
    """Without --password-stdin the password is prompted for, hidden, and confirmed."""
    path = tmp_path / "users.json"
    result = CliRunner().invoke(
        main, ["users", "add", "beat", "--auth", str(path)], input="geheim-789\ngeheim-789\n"
    )
    assert result.exit_code == 0, result.output
    assert "geheim-789" not in result.output
    assert check_credentials(load_users(path), "beat", "geheim-789")


def test_cli_users_add_short_password_fails(tmp_path: Path) -> None:
    """A rejected password is a one-line message and exit status 1, with nothing written."""
    path = tmp_path / "users.json"
    result = CliRunner().invoke(
        main, ["users", "add", "anna", "--auth", str(path), "--password-stdin"], input="kurz\n"
    )
    assert result.exit_code == 1
    assert result.output.strip() == "the password must have at least 8 characters"
    assert not path.exists()
