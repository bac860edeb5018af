"""Shared fixtures: real SQLite, real PostgreSQL, real Redis, on loopback only.

- `db_url` is parametrized over SQLite and PostgreSQL: a test that takes it (or
  `engine`/`session`) runs on both. PostgreSQL is the machine's server
  (TEST_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/test); each test
  session creates and later drops its own database there. Under CI a missing
  PostgreSQL is an error, never a silent skip.
- `redis_url` is a private redis-server started for the session on a free port and
  flushed before each test, so tests may flush, kill and restart it freely.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Tests must never touch the developer's data folder or start the dev supervisor.
os.environ.setdefault("MAILER_SUPERVISE", "0")

from mailer_app.db import make_engine, upgrade_to_head  # noqa: E402

# The local mail lab fixture (`mail_lab`): real Dovecot + SMTP intake on loopback.
pytest_plugins = ["tests.lab_fixtures"]

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def pytest_collection_modifyitems(config, items) -> None:
    """Browser tests last: they are the slowest, and Playwright's sync API keeps an
    event loop running on the main thread until the session ends. Among them, the
    ones that need the shared app's database still empty come first."""

    def order(item) -> tuple[bool, bool]:
        is_browser = "/tests/e2e/" in str(item.path)
        return is_browser, item.get_closest_marker("empty_database") is None

    items.sort(key=order)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path_factory, monkeypatch):
    """Each test gets its own data folder and a fixed master key (no dev files)."""
    from cryptography.fernet import Fernet

    from mailer_app.settings import get_settings

    data_dir = tmp_path_factory.mktemp("data")
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("MASTER_KEY", os.environ.get("TEST_MASTER_KEY") or _session_key(Fernet))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


_KEY: list[str] = []


def _session_key(fernet) -> str:
    if not _KEY:
        _KEY.append(fernet.generate_key().decode())
    return _KEY[0]


# --- databases --------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    import psycopg

    admin = PG_ADMIN_URL
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI and is not reachable at {admin}: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {admin}: {exc}")
    name = f"mailer_test_{secrets.token_hex(4)}"
    conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    url = f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield url
    finally:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture(scope="session")
def migrated_postgres_url(postgres_url) -> str:
    upgrade_to_head(postgres_url)
    return postgres_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    """A migrated, empty database: SQLite file, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
        upgrade_to_head(url)
        return url
    url = request.getfixturevalue("migrated_postgres_url")
    _truncate_all(url)
    return url


def _truncate_all(url: str) -> None:
    from sqlmodel import SQLModel

    engine = make_engine(url)
    names = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def engine(db_url, monkeypatch) -> Iterator[sa.Engine]:
    """Engine on `db_url`, also made the app's default engine for the test."""
    from mailer_app.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", db_url)
    get_settings.cache_clear()
    eng = make_engine(db_url)
    import mailer_app.db as db

    monkeypatch.setattr(db, "get_engine", lambda: eng)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as s:
        yield s


# --- redis ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[str]:
    """A private redis-server on a free loopback port (no persistence)."""
    exe = shutil.which("redis-server")
    if not exe:
        pytest.fail("redis-server is not installed (the test command installs it)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            exe,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def redis_url(redis_server, monkeypatch) -> str:
    """The private Redis, flushed, and set as REDIS_URL for the test."""
    import redis

    from mailer_app.settings import get_settings

    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    monkeypatch.setenv("REDIS_URL", redis_server)
    get_settings.cache_clear()
    return redis_server


def wait_until(predicate, timeout: float, what: str):
    """Poll `predicate` until it returns something truthy; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def spawn(redis_url, tmp_path) -> Iterator:
    """Start `python -m MODULE ARGS` on the test Redis (and the test's settings from
    the environment); every one is stopped at the end and its log printed."""
    procs: list[tuple[subprocess.Popen, Path]] = []

    def start(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = tmp_path / f"{module}.{len(procs)}.log"
        full_env = dict(os.environ, REDIS_URL=redis_url, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        full_env.update(env or {})
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        procs.append((proc, log))
        return proc

    yield start
    for proc, log in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        print(f"--- {log.name}\n{log.read_text()[-3000:]}")  # shown when a test fails
