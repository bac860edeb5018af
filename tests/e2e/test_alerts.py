"""The alerts page and the navigation badge, in the real app with Chromium: alerts
listed, the badge's count, acknowledging one and all, saving thresholds; and
GET /metrics on the real backend (from loopback, so no token is needed).
"""

from __future__ import annotations

import urllib.request

import pytest
from playwright.sync_api import expect
from sqlmodel import select

from mailer_app.db import make_engine, session_scope
from mailer_app.models import AlertKind, Workspace
from mailer_app.services import alerts
from tests.e2e.conftest import screenshot
from tests.e2e.helpers import FIRST_LOAD_MS, new_workspace_owner, sign_in

pytestmark = pytest.mark.e2e

ACTION_MS = 20_000


def _raise(database_url: str, owner_email: str, count: int) -> int:
    engine = make_engine(database_url)
    try:
        with session_scope(engine) as session:
            workspace_id = session.exec(
                select(Workspace.id).where(Workspace.name == f"Workspace {owner_email}")
            ).one()
            for i in range(count):
                alerts.raise_alert(
                    session=session, workspace_id=workspace_id, kind=AlertKind.LOW_INBOX_RATE,
                    message=f"Inbox rate at gmail is {40 + i}%, below the 70% threshold.",
                    dedupe_key=f"e2e:{i}", esp="gmail", value=0.4, threshold=0.7,
                )  # fmt: skip
    finally:
        engine.dispose()
    return workspace_id


def _settings(database_url: str, workspace_id: int) -> alerts.AlertSettings:
    engine = make_engine(database_url)
    try:
        with session_scope(engine) as session:
            return alerts.alert_settings(session=session, workspace_id=workspace_id)
    finally:
        engine.dispose()


def test_alerts_listed_badge_and_acknowledge(app_harness, page, e2e_database_url):
    base = app_harness.frontend_url
    owner = new_workspace_owner(e2e_database_url)
    workspace_id = _raise(e2e_database_url, owner, 3)
    sign_in(page, base, owner)
    badge = page.locator("#alerts-badge")
    expect(badge).to_have_text("3", timeout=FIRST_LOAD_MS)

    page.goto(base.rstrip("/") + "/alerts")
    new = page.locator("#alerts-new .alert-card")
    expect(new).to_have_count(3, timeout=FIRST_LOAD_MS)
    expect(page.locator("#alerts-new")).to_contain_text("Low inbox rate")
    expect(page.locator("#alert-sender-note")).to_contain_text("need a sender account")
    screenshot(page, "alerts-page")

    new.first.locator(".alert-ack").click()
    expect(new).to_have_count(2, timeout=ACTION_MS)
    expect(page.locator("#alerts-acknowledged .alert-card")).to_have_count(1)
    expect(page.locator("#alerts-acknowledged")).to_contain_text("Acknowledged by Workspace Owner")
    expect(badge).to_have_text("2", timeout=ACTION_MS)

    page.click("#alerts-ack-all")
    expect(new).to_have_count(0, timeout=ACTION_MS)
    expect(page.locator("#alerts-acknowledged .alert-card")).to_have_count(3)
    expect(badge).to_have_count(0, timeout=ACTION_MS)

    # Thresholds: a bad value is refused next to its field, a good one is saved.
    page.fill("#alert-min-inbox", "150")
    page.click("#alert-settings-save")
    expect(page.locator("#alert-settings")).to_contain_text(
        "between 0% and 100%", timeout=ACTION_MS
    )
    page.fill("#alert-min-inbox", "80")
    page.fill("#alert-emails", "ops@example.com")
    page.locator("#alert-auto-pause button[role=switch]").click()
    page.click("#alert-settings-save")
    expect(page.locator("#alert-settings")).to_contain_text("Saved.", timeout=ACTION_MS)
    saved = _settings(e2e_database_url, workspace_id)
    assert saved.min_inbox_rate == pytest.approx(0.8)
    assert saved.alert_emails == ["ops@example.com"] and saved.auto_pause_enabled is True
    screenshot(page, "alerts-acknowledged")


def test_metrics_endpoint_on_the_real_backend(app_harness):
    from reflex.config import get_config

    url = get_config().api_url.rstrip("/") + "/metrics"
    with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310  (http on loopback)
        body = r.read().decode()
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
    for series in (
        "mailer_send_latency_seconds_bucket", "mailer_alerts", "mailer_metrics_source_up",
        "mailer_messages_sent_total", "mailer_placement_checks_total", "mailer_queue_depth",
    ):  # fmt: skip
        assert series in body
