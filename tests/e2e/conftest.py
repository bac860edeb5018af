"""The real app (AppHarness: real backend, compiled frontend) driven by Chromium.

One app per test session (compiling the frontend is the slow part); each test gets
a fresh browser context. Screenshots go to test-artifacts/ (kept by CI as output).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def e2e_database_url(tmp_path_factory) -> str:
    from mailer_app.db import upgrade_to_head

    url = f"sqlite:///{tmp_path_factory.mktemp('e2e') / 'e2e.db'}"
    upgrade_to_head(url)
    return url


@pytest.fixture(scope="session")
def app_harness(e2e_database_url, redis_server, tmp_path_factory) -> Iterator[object]:
    from cryptography.fernet import Fernet
    from reflex.testing import AppHarness

    from mailer_app.settings import get_settings

    env = {
        "DATABASE_URL": e2e_database_url,
        "DATA_DIR": str(tmp_path_factory.mktemp("e2e-data")),
        "MAILER_ENV": "dev",
        "MAILER_SUPERVISE": "0",
        "MAILER_LAB": "0",
        # The test's private Redis: jobs the app queues run on workers a test starts.
        "REDIS_URL": redis_server,
        "MASTER_KEY": Fernet.generate_key().decode(),
        "REFLEX_TELEMETRY_ENABLED": "false",
        "REFLEX_USE_SYSTEM_BUN": "1",
        "REFLEX_CHECK_LATEST_VERSION": "false",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        with AppHarness.create(root=ROOT, app_name="mailer_app") as harness:
            yield harness
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-final.png"), full_page=True)
    context.close()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
