"""The users file of the app's login: user names with salted scrypt password hashes.

A JSON file written by ``kpisheet users add NAME --auth FILE``, readable by its owner only::

    {"version": 1, "users": {"anna": "scrypt$16384$8$1$<salt>$<hash>"}}

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
from collections.abc import Mapping
from pathlib import Path

from kpisheet.errors import AuthError

USERS_FILE_VERSION = 1
#: scrypt cost parameters (n, r, p): about 16 MiB and some tens of milliseconds per check.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES = 16
HASH_BYTES = 32
SCHEME = "scrypt"
MIN_PASSWORD_LENGTH = 8
USER_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}"
#: Environment variable holding the cookie secret (else a generated file is used).
COOKIE_SECRET_ENV = "KPISHEET_COOKIE_SECRET"
COOKIE_SECRET_SUFFIX = ".cookie-secret"
OWNER_ONLY = 0o600


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


def load_users(path: str | Path) -> dict[str, str]:
    """The users of a users file, name → hash.

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
    if (
        not isinstance(data, dict)
        or data.get("version") != USERS_FILE_VERSION
        or not isinstance(users, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in users.items())
    ):
        raise AuthError(
            f'users file {path} is not a kpisheet users file (expected {{"version": '
            f'{USERS_FILE_VERSION}, "users": {{name: hash}}}}); write it with `kpisheet users add`'
        )
    return dict(users)


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


def add_user(path: str | Path, name: str, password: str) -> bool:
    """Add a user to the users file (created if missing), or set a new password.

    :returns: True when the user was new.
    :raises AuthError: for an invalid name, a short password or an unusable file.
    """
    path = Path(path)
    if not re.fullmatch(USER_NAME_PATTERN, name):
        raise AuthError(
            f"user name {name!r} is not allowed: use letters, digits and . _ @ -, "
            "starting with a letter or digit, at most 64 characters"
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AuthError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    users = load_users(path) if path.exists() else {}
    new = name not in users
    users[name] = hash_password(password)
    text = json.dumps({"version": USERS_FILE_VERSION, "users": users}, indent=2, sort_keys=True)
    write_owner_only(path, text + "\n")
    return new


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
