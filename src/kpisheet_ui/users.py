"""The users file of the app's login: user names with salted scrypt password hashes and scopes.

A JSON file written by ``kpisheet users add NAME --auth FILE``, readable by its owner only::

    {"version": 2, "users": {"anna": {"hash": "scrypt$16384$8$1$<salt>$<hash>", "scopes": []},
                             "beat": {"hash": "...", "scopes": ["mandant=Alpine"]}}}

A user with scopes sees only the entities inside them (:mod:`kpisheet_ui.scopes`). Version 1
files (``{"users": {name: hash}}``) are still read; the next write turns them into version 2.

Passwords are never stored; checks compare hashes in constant time, and an unknown user name
costs as much time as a wrong password. The cookie secret that signs login cookies comes from
``KPISHEET_COOKIE_SECRET`` or from a generated file next to the users file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kpisheet.errors import KpisheetError

USERS_FILE_VERSION = 2
#: Versions of the users file that can be read.
READABLE_VERSIONS = (1, 2)
#: scrypt cost parameters (n, r, p): about 16 MiB and some tens of milliseconds per check.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES = 16
HASH_BYTES = 32
SCHEME = "scrypt"
MIN_PASSWORD_LENGTH = 8
USER_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}"
#: Environment variable naming the users file (``--auth`` of ``kpisheet serve`` and ``kpisheet users``).
AUTH_ENV = "KPISHEET_AUTH"
#: Environment variable holding the cookie secret (else a generated file is used).
COOKIE_SECRET_ENV = "KPISHEET_COOKIE_SECRET"
COOKIE_SECRET_SUFFIX = ".cookie-secret"
OWNER_ONLY = 0o600


class AuthError(KpisheetError, ValueError):
    """Raised when a users file, a user name, a password, a scope or the cookie secret cannot be used."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=HASH_BYTES, maxmem=2**26
    )


def hash_password(password: str) -> str:
    """A salted scrypt hash of ``password``: ``scrypt$n$r$p$salt$hash`` (base64)."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"{SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches the hash; the hashes are compared in constant time."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != SCHEME:
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = _scrypt(password, base64.b64decode(salt, validate=True), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


#: Checked against when the user name is unknown, so that case takes as long as a wrong password.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def check_credentials(users: Mapping[str, str], name: str, password: str) -> bool:
    """True when ``name`` is a user and ``password`` is theirs."""
    known = name in users
    matches = verify_password(password, users[name] if known else _DUMMY_HASH)
    return known and matches


@dataclass(frozen=True)
class User:
    """One user of the users file: the password hash and the entity scopes (empty: all)."""

    name: str
    hash: str
    scopes: tuple[str, ...] = ()


def load_user_records(path: str | Path) -> dict[str, User]:
    """The users of a users file, name → :class:`User`.

    :raises AuthError: when the file is missing, not a users file, or readable by others.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AuthError(
            f"users file {path} does not exist; create it with `kpisheet users add NAME --auth {path}`"
        ) from None
    except OSError as exc:
        raise AuthError(f"cannot read users file {path}: {exc.strerror}") from exc
    check_owner_only(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AuthError(
            f"users file {path} is not valid JSON (line {exc.lineno}): {exc.msg}"
        ) from None
    users = data.get("users") if isinstance(data, dict) else None
    version = data.get("version") if isinstance(data, dict) else None
    records = _records(version, users) if isinstance(users, dict) else None
    if records is None:
        raise AuthError(
            f'users file {path} is not a kpisheet users file (expected {{"version": '
            f'{USERS_FILE_VERSION}, "users": {{name: {{"hash": ..., "scopes": [...]}}}}}}); '
            "write it with `kpisheet users add`"
        )
    return records


def _records(version: object, users: dict[object, object]) -> dict[str, User] | None:
    """The users of a file's ``users`` object, or ``None`` when it has the wrong shape."""
    records: dict[str, User] = {}
    for name, entry in users.items():
        if not isinstance(name, str):
            return None
        if version == 1 and isinstance(entry, str):
            records[name] = User(name, entry)
        elif (
            version == 2
            and isinstance(entry, dict)
            and isinstance(entry.get("hash"), str)
            and isinstance(entry.get("scopes", []), list)
            and all(isinstance(scope, str) for scope in entry.get("scopes", []))
        ):
            records[name] = User(name, entry["hash"], tuple(entry.get("scopes", [])))
        else:
            return None
    return records


def load_users(path: str | Path) -> dict[str, str]:
    """The users of a users file, name → password hash.

    :raises AuthError: when the file is missing, not a users file, or readable by others.
    """
    return {name: user.hash for name, user in load_user_records(path).items()}


def check_owner_only(path: Path) -> None:
    """Refuse a secret file that others may read or write (on POSIX systems)."""
    if sys.platform == "win32":
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise AuthError(
            f"{path} is readable or writable by others (mode {mode:o}); "
            f"make it owner-only: chmod 600 {path}"
        )


def write_owner_only(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable and writable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(name, OWNER_ONLY)
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def _write_users(path: Path, users: Mapping[str, User]) -> None:
    entries = {
        name: {"hash": user.hash, "scopes": list(user.scopes)} for name, user in users.items()
    }
    text = json.dumps({"version": USERS_FILE_VERSION, "users": entries}, indent=2, sort_keys=True)
    write_owner_only(path, text + "\n")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AuthError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")


def require_user(path: Path, name: str) -> dict[str, User]:
    """The users of ``path``, which must hold ``name``.

    :raises AuthError: naming the known users when ``name`` is not one of them.
    """
    users = load_user_records(path)
    if name not in users:
        known = ", ".join(sorted(users)) or "none"
        raise AuthError(f"no user {name!r} in {path} (users: {known})")
    return users


def add_user(
    path: str | Path, name: str, password: str, scopes: Sequence[str] | None = None
) -> bool:
    """Add a user to the users file (created if missing), or set a new password.

    ``scopes`` (``level=name`` texts, see :mod:`kpisheet_ui.scopes`) restrict what the user
    sees; ``None`` keeps an existing user's scopes (a new user then sees everything).

    :returns: True when the user was new.
    :raises AuthError: for an invalid name, a short password, a malformed scope or an unusable file.
    """
    from kpisheet_ui.scopes import parse_scope

    path = Path(path)
    if not re.fullmatch(USER_NAME_PATTERN, name):
        raise AuthError(
            f"user name {name!r} is not allowed: use letters, digits and . _ @ -, "
            "starting with a letter or digit, at most 64 characters"
        )
    _check_password(password)
    parsed = None if scopes is None else tuple(dict.fromkeys(parse_scope(s) for s in scopes))
    users = load_user_records(path) if path.exists() else {}
    old = users.get(name)
    if parsed is None:
        parsed = old.scopes if old is not None else ()
    users[name] = User(name, hash_password(password), parsed)
    _write_users(path, users)
    return old is None


def set_password(path: str | Path, name: str, password: str) -> None:
    """Give an existing user a new password (their open sessions end: the hash changed).

    :raises AuthError: for an unknown user, a short password or an unusable file.
    """
    path = Path(path)
    users = require_user(path, name)
    _check_password(password)
    users[name] = User(name, hash_password(password), users[name].scopes)
    _write_users(path, users)


def remove_user(path: str | Path, name: str) -> None:
    """Remove a user from the users file (their open sessions end).

    :raises AuthError: for an unknown user or an unusable file.
    """
    path = Path(path)
    users = require_user(path, name)
    del users[name]
    _write_users(path, users)


def cookie_secret(users_file: str | Path) -> str:
    """The secret that signs login cookies.

    From ``KPISHEET_COOKIE_SECRET`` if set, else from ``<users file>.cookie-secret``, which is
    generated (random, owner-only) on first use, so logins survive a restart.
    """
    from_env = os.environ.get(COOKIE_SECRET_ENV, "")
    if from_env:
        if len(from_env) < 32:
            raise AuthError(f"{COOKIE_SECRET_ENV} must have at least 32 characters")
        return from_env
    path = Path(f"{users_file}{COOKIE_SECRET_SUFFIX}")
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY)
    except FileExistsError:
        pass  # made earlier (or by another process just now)
    except OSError as exc:
        raise AuthError(f"cannot create cookie secret file {path}: {exc.strerror}") from exc
    else:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(secrets.token_urlsafe(48) + "\n")
    check_owner_only(path)
    secret = path.read_text(encoding="utf-8").strip()
    if len(secret) < 32:
        raise AuthError(f"cookie secret file {path} holds fewer than 32 characters; delete it")
    return secret
