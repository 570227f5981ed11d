"""Shared test configuration: hypothesis profiles (``HYPOTHESIS_PROFILE=dev|ci``, default ``dev``)
and a real PostgreSQL server for the store and warehouse tests."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=30, deadline=2000)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# The demo store that kpisheet.open() builds lives in a cache directory of this test run (also
# for subprocesses, which inherit the environment), never in the user's own cache.
os.environ.setdefault("KPISHEET_CACHE_DIR", tempfile.mkdtemp(prefix="kpisheet-test-cache-"))


# -- PostgreSQL --------------------------------------------------------------------------------
# A throwaway server from Debian's binaries, started once per test run. KPISHEET_TEST_POSTGRES_URL
# points the tests at an existing server instead; KPISHEET_REQUIRE_POSTGRES=1 (set by .ci/run)
# turns "no PostgreSQL here" from a skip into a failure.


def _postgres_missing(reason: str) -> None:
    if os.environ.get("KPISHEET_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required (KPISHEET_REQUIRE_POSTGRES=1): {reason}")
    pytest.skip(reason)


def _postgres_bindir() -> Path | None:
    """The bin directory of the newest PostgreSQL under /usr/lib/postgresql."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")]

    def version(bindir: Path) -> list[int]:
        return [int(part) for part in bindir.parent.name.split(".") if part.isdigit()]

    return max(found, key=version) if found else None


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of the maintenance database of a PostgreSQL server that runs for the test session."""
    existing = os.environ.get("KPISHEET_TEST_POSTGRES_URL")
    if existing:
        yield existing
        return
    bindir = _postgres_bindir()
    if bindir is None:
        _postgres_missing("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin")
    as_root = os.geteuid() == 0
    if as_root and shutil.which("runuser") is None:
        _postgres_missing("running as root, but runuser is missing to start PostgreSQL as postgres")
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    base = Path(tempfile.mkdtemp(prefix="kpisheet-pg-"))
    if as_root:
        shutil.chown(base, user="postgres", group="postgres")
    data, log = base / "data", base / "server.log"
    port = _free_port()

    def pg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*run_as, *args], capture_output=True, text=True, check=False, timeout=120
        )

    init = pg(
        str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"
    )
    if init.returncode != 0:
        pytest.fail(f"initdb failed:\n{init.stdout}{init.stderr}")
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = pg(
        str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"
    )
    if start.returncode != 0:
        text = log.read_text() if log.exists() else ""
        pytest.fail(f"PostgreSQL did not start:\n{start.stdout}{start.stderr}{text}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[str]:
    """URL of a new, empty database on the test server, dropped after the test."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"kpisheet_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
