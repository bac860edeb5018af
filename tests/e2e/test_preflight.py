"""A user adds a lab seed, tests it, runs a pre-flight test and watches results arrive.

Real everything: the app (AppHarness), an RQ worker and rq-scheduler on a private
Redis, the lab's SMTP intake and Dovecot. Check offsets are scaled to seconds.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from mailer_app.settings import get_settings
from tests.conftest import wait_until
from tests.e2e.conftest import screenshot
from tests.e2e.helpers import FIRST_LOAD_MS, new_workspace_owner, sign_in
from tests.e2e.test_send_page import page_mounts, refresh_loop_running
from tests.lab_fixtures import mail_lab_fixture  # noqa: F401

pytestmark = pytest.mark.e2e

ACTION_MS = 20_000
RESULTS_MS = 40_000  # the first check is due 1.2 s after the send


def test_preflight_results_appear_without_reloading(
    app_harness, e2e_database_url, page, mail_lab, spawn, monkeypatch
):
    # The app (in this process) and the workers read the same scaled offsets.
    monkeypatch.setenv("PLACEMENT_CHECK_OFFSETS", "[0.02, 0.04, 0.06]")
    get_settings.cache_clear()
    env = {"DATABASE_URL": e2e_database_url}
    spawn("jobs.worker", "placement", "--simple", env=env)
    spawn("jobs.scheduler", "--interval", "0.2", env=env)

    base = app_harness.frontend_url.rstrip("/")
    sign_in(page, base, new_workspace_owner(e2e_database_url, sender_smtp_port=mail_lab.smtp_port))
    spam_box = mail_lab.add_account("outlook.lab")
    inbox_box = mail_lab.add_account("yahoo.lab")

    page.goto(base + "/seeds")
    expect(page.locator("#add-seed")).to_be_visible(timeout=FIRST_LOAD_MS)
    for box in (spam_box, inbox_box):
        page.click("#add-seed")
        page.fill("#seed-email", box.email)
        page.locator("#seed-email").blur()
        expect(page.locator("#seed-imap_host")).to_have_value("127.0.0.1", timeout=ACTION_MS)
        page.fill("#seed-imap_port", str(mail_lab.imap_port))
        page.fill("#seed-password", box.password)
        page.click("#seed-form-test")
        expect(page.locator("#seed-form-test-result")).to_contain_text(
            "Signed in", timeout=ACTION_MS
        )
        page.click("#seed-form-save")
        expect(page.locator("#seed-form")).to_be_hidden(timeout=ACTION_MS)
        expect(page.locator("#seed-table tr", has_text=box.email)).to_have_count(1)

    page.click("#open-preflight")
    expect(page).to_have_url(re.compile(r"/preflight$"), timeout=FIRST_LOAD_MS)
    expect(page.locator("#preflight-run")).to_be_visible(timeout=FIRST_LOAD_MS)
    expect(page.locator("#preflight-sender")).to_contain_text("Lab sender")

    # An empty subject is refused in plain words; nothing is sent.
    page.fill("#preflight-body", "Hello from the pre-flight test.")
    page.click("#preflight-run")
    expect(page.get_by_role("alert")).to_contain_text("subject", timeout=ACTION_MS)

    # outlook.lab files "click here" + "act now" (and no DKIM) as junk; yahoo.lab
    # needs three points, so the same copy reaches its inbox.
    page.fill("#preflight-subject", "Act now: click here")
    page.click("#preflight-run")
    expect(page.locator("#preflight-summary")).to_contain_text("of 2", timeout=ACTION_MS)
    # A marker on the window survives only if the page is never reloaded.
    page.evaluate("window.__preflightMarker = 'same page'")

    spam_row = page.locator(f"[id='result-{spam_box.email}']")
    inbox_row = page.locator(f"[id='result-{inbox_box.email}']")
    expect(spam_row.locator(".placement")).to_have_text("spam", timeout=RESULTS_MS)
    expect(spam_row).to_contain_text("Junk Email")
    expect(inbox_row.locator(".placement")).to_have_text("inbox", timeout=RESULTS_MS)
    expect(page.locator("#preflight-finished")).to_be_visible(timeout=RESULTS_MS)
    expect(page.locator("#preflight-summary")).to_contain_text("2 of 2")
    expect(spam_row).to_contain_text("spf=pass")
    assert page.evaluate("window.__preflightMarker") == "same page"
    screenshot(page, "preflight-results")
    # Every seed has its result: the refresh loop ends by itself, the page still open.
    wait_until(
        lambda: not refresh_loop_running(app_harness, page, "preflight_state"),
        5,
        "the pre-flight loop to end",
    )
    assert page_mounts(app_harness, page, "preflight_state") == 1
