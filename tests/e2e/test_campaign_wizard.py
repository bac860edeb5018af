"""A new user builds a whole campaign in the wizard, from a CSV of contacts to a
campaign ready for the review gate, closing the page half-way through.

Real everything: the app (AppHarness), Chromium, and an RQ worker for the contact
import. A screenshot of each step lands in test-artifacts/ (campaign-wizard-*.png).
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlmodel import select

from tests.conftest import wait_until
from tests.e2e.conftest import ARTIFACTS, screenshot
from tests.e2e.helpers import FIRST_LOAD_MS, new_workspace_owner, sign_in

pytestmark = pytest.mark.e2e

ACTION_MS = 20_000
IMPORT_MS = 60_000  # a worker process starts, then imports three rows
CSV = (
    "Email,First name,Last name,Plan,Customer ID\n"
    "ann@example.com,Ann,Archer,pro,C-1\n"
    "bob@example.com,Bob,Baker,free,C-2\n"
    "cy@example.com,Cy,Cole,pro,C-3\n"
)


def _draft(database_url: str, campaign_id: int):
    from mailer_app.db import make_engine, session_scope
    from mailer_app.models import CampaignVersion

    engine = make_engine(database_url)
    try:
        with session_scope(engine) as session:
            return session.exec(
                select(CampaignVersion)
                .where(CampaignVersion.campaign_id == campaign_id)
                .order_by(CampaignVersion.number.desc())
            ).first()
    finally:
        engine.dispose()


def _campaign(database_url: str, campaign_id: int):
    from mailer_app.db import make_engine, session_scope
    from mailer_app.models import Campaign

    engine = make_engine(database_url)
    try:
        with session_scope(engine) as session:
            return session.get(Campaign, campaign_id)
    finally:
        engine.dispose()


def _open_step(page, step: str) -> None:
    expect(page.locator(f"#step-body-{step}")).to_be_visible(timeout=ACTION_MS)
    expect(page.locator(f"#step-{step}")).to_have_attribute("aria-current", "step")


def import_contacts(page, csv_path) -> None:
    """On the contacts page: upload the CSV, keep the suggested mapping, import it
    into a new list, and wait for the worker to finish."""
    expect(page).to_have_url(re.compile(r"/contacts$"), timeout=FIRST_LOAD_MS)
    expect(page.locator("#contact-import")).to_be_visible(timeout=FIRST_LOAD_MS)
    page.locator("#contacts-upload input[type=file]").set_input_files(str(csv_path))
    expect(page.locator("#column-mapping")).to_be_visible(timeout=ACTION_MS)
    expect(page.locator("#map-target-0")).to_contain_text("Email address")
    page.fill("#import-new-list", "Customers")
    page.click("#start-import")
    expect(page.locator("#import-summary")).to_contain_text(
        "Imported 3 contacts into Customers.", timeout=IMPORT_MS
    )


@pytest.fixture
def context(browser):
    """A browser context of our own: the test closes its page and opens another."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    yield context
    context.close()


def new_page(context):
    page = context.new_page()
    page.set_default_timeout(30_000)
    return page


def test_a_new_user_builds_a_campaign_ready_for_review(
    app_harness, e2e_database_url, context, spawn, tmp_path
):
    # Contact imports run as jobs: a worker on the test Redis, on the e2e database.
    spawn("jobs.worker", "build", "default", env={"DATABASE_URL": e2e_database_url})
    base = app_harness.frontend_url.rstrip("/")
    page = new_page(context)
    sign_in(page, base, new_workspace_owner(e2e_database_url, sender_smtp_port=2525))

    # The campaign list starts empty; a new campaign opens the wizard on Basics.
    page.click("a[href='/campaigns']")
    expect(page).to_have_url(re.compile(r"/campaigns$"), timeout=FIRST_LOAD_MS)
    expect(page.locator("#no-campaigns")).to_be_visible(timeout=FIRST_LOAD_MS)
    page.click("#new-campaign")
    page.fill("#new-campaign-name", "Spring newsletter")
    page.click("#create-campaign")
    expect(page).to_have_url(re.compile(r"/campaigns/\d+$"), timeout=FIRST_LOAD_MS)
    campaign_id = int(page.url.rstrip("/").rsplit("/", 1)[-1])
    wizard_url = page.url
    _open_step(page, "basics")
    expect(page.locator("#field-name")).to_have_value("Spring newsletter")
    page.fill("#field-description", "Our spring offers, for every customer")
    screenshot(page, "campaign-wizard-1-basics")
    page.click("#wizard-next")

    # Sender: Next without choosing says what is missing, next to the field.
    _open_step(page, "sender")
    page.click("#wizard-next")
    expect(page.locator("#error-sender_account_id")).to_contain_text(
        "Choose the sender account", timeout=ACTION_MS
    )
    page.click("#field-sender_account_id")
    page.get_by_role("option", name=re.compile("Lab sender")).click()
    expect(page.locator("#error-sender_account_id")).to_be_empty(timeout=ACTION_MS)
    screenshot(page, "campaign-wizard-2-sender")
    page.click("#wizard-next")

    # Recipients: no lists yet. The link leads to the contacts import; coming back
    # opens the wizard on the same step.
    _open_step(page, "recipients")
    expect(page.locator("#no-contact-lists")).to_be_visible()
    csv_path = tmp_path / "customers.csv"
    csv_path.write_text(CSV)
    page.click("#import-contacts-link")
    import_contacts(page, csv_path)
    page.go_back()
    expect(page).to_have_url(wizard_url, timeout=FIRST_LOAD_MS)
    _open_step(page, "recipients")
    option = page.locator(".contact-list-option", has_text="Customers")
    expect(option).to_contain_text("3 contacts")
    option.locator("button[role='checkbox']").click()
    expect(page.locator("#recipient-count")).to_have_text("3 recipients", timeout=ACTION_MS)
    screenshot(page, "campaign-wizard-3-recipients")
    page.click("#wizard-next")

    # Content: the preview follows the typing, for the first recipient (by address).
    _open_step(page, "content")
    preview = page.frame_locator("#preview-html")
    page.fill("#field-subject", "Spring offers for {{ first_name }}")
    expect(page.locator("#preview-subject")).to_contain_text(
        "Spring offers for Ann", timeout=ACTION_MS
    )
    page.fill(
        "#field-html_body",
        "<h1>Hello {{ first_name }}</h1><p>Your {{ plan }} plan: 20% off.</p>"
        "<script>document.body.innerHTML = 'hacked'</script>",
    )
    expect(preview.locator("h1")).to_have_text("Hello Ann", timeout=ACTION_MS)
    expect(preview.locator("body")).to_contain_text("Your pro plan: 20% off.")
    expect(page.locator("#preview-text")).to_contain_text("Hello Ann", timeout=ACTION_MS)
    # The frame runs nothing and is not same-origin; the script never reached it.
    frame = page.locator("#preview-html")
    assert frame.get_attribute("sandbox") == ""
    assert "<script" not in (frame.get_attribute("srcdoc") or "")
    # A typo in a merge field is pointed out next to the message, and in the preview.
    page.fill("#field-html_body", "<h1>Hello {{ first_name }}</h1><p>{{ plann }}</p>")
    expect(page.locator("#error-html_body")).to_contain_text(
        "no field called plann", timeout=ACTION_MS
    )
    expect(page.locator("#preview-missing")).to_contain_text("plann")
    page.fill("#field-html_body", "<h1>Hello {{ first_name }}</h1><p>Your {{ plan }} plan.</p>")
    expect(page.locator("#error-html_body")).to_be_empty(timeout=ACTION_MS)
    page.click("#preview-recipient")
    page.get_by_role("option", name=re.compile("bob@example.com")).click()
    expect(preview.locator("h1")).to_have_text("Hello Bob", timeout=ACTION_MS)
    expect(preview.locator("body")).to_contain_text("Your free plan.")
    screenshot(page, "campaign-wizard-4-content")
    # Full-page captures leave the sandboxed (out-of-process) frame blank: this one
    # shows the preview as the user sees it.
    page.locator("#content-preview").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "campaign-wizard-4-content-preview.png"))

    # Half-way: the tab is closed and opened again. Nothing is lost and the wizard
    # opens on the same step.
    page.fill("#field-subject", "Spring offers for {{ first_name }}")
    page.locator("#field-subject").blur()
    wait_until(
        lambda: _draft(e2e_database_url, campaign_id).html_body.endswith("plan.</p>"),
        ACTION_MS / 1000,
        "the content to be saved",
    )
    page.close()
    page = new_page(context)
    page.goto(wizard_url)
    _open_step(page, "content")
    expect(page.locator("#field-subject")).to_have_value("Spring offers for {{ first_name }}")
    expect(page.locator("#field-html_body")).to_have_value(
        "<h1>Hello {{ first_name }}</h1><p>Your {{ plan }} plan.</p>"
    )
    expect(page.frame_locator("#preview-html").locator("h1")).to_have_text(
        "Hello Ann", timeout=ACTION_MS
    )
    for step in ("basics", "sender", "recipients"):
        expect(page.locator(f"#step-{step}")).to_have_class(re.compile(r"\bdone\b"))
    page.click("#wizard-next")

    # Attachments: a file for everyone; a pattern that leaves the folder is refused.
    _open_step(page, "attachments")
    terms = tmp_path / "terms.pdf"
    terms.write_bytes(b"%PDF-1.4 spring terms\n")
    page.set_input_files("#campaign-files input[type=file]", str(terms))
    expect(page.locator(".campaign-file")).to_contain_text("terms.pdf", timeout=ACTION_MS)
    page.fill("#field-pattern", "../../etc/*.conf")
    page.locator("#field-pattern").blur()
    expect(page.locator("#error-pattern")).not_to_be_empty(timeout=ACTION_MS)
    page.fill("#field-pattern", "")
    page.locator("#field-pattern").blur()
    expect(page.locator("#error-pattern")).to_be_empty(timeout=ACTION_MS)
    screenshot(page, "campaign-wizard-5-attachments")
    page.click("#wizard-next")

    # Review: everything in one place; publishing makes it ready for the review gate.
    _open_step(page, "review")
    summary = page.locator("#review-summary")
    expect(summary).to_contain_text("Lab sender <news@sender.lab>", timeout=ACTION_MS)
    expect(summary).to_contain_text("Customers")
    expect(page.locator("#summary-recipients-recipients")).to_have_text("3")
    expect(summary).to_contain_text("Spring offers for {{ first_name }}")
    expect(summary).to_contain_text("terms.pdf")
    expect(page.locator("#review-problems")).to_have_count(0)
    screenshot(page, "campaign-wizard-6-review")
    page.click("#publish")
    expect(page.locator("#published-message")).to_contain_text(
        "ready for review", timeout=ACTION_MS
    )
    expect(page.locator("#wizard-status")).to_have_text("Ready for review")
    expect(page.locator("#published-banner")).to_be_visible()
    screenshot(page, "campaign-wizard-7-published")

    campaign = _campaign(e2e_database_url, campaign_id)
    assert campaign.status == "in_review"
    version = _draft(e2e_database_url, campaign_id)
    assert (version.number, version.is_draft) == (1, False)
    assert version.subject == "Spring offers for {{ first_name }}"

    page.click("#back-to-list")
    row = page.locator(f"#campaign-row-{campaign_id}")
    expect(row.locator(".campaign-status")).to_have_text("Ready for review", timeout=ACTION_MS)
    expect(row).to_contain_text("v1 published")
    screenshot(page, "campaign-wizard-8-list")

    # The list: duplicate, search, archive, and archived campaigns on request.
    page.click(f"#duplicate-{campaign_id}")
    expect(page.locator("#campaign-notice")).to_contain_text(
        "Made a copy: Copy of Spring newsletter", timeout=ACTION_MS
    )
    copy_row = page.locator("#campaign-table tr", has_text="Copy of Spring newsletter")
    expect(copy_row.locator(".campaign-status")).to_have_text("Draft")
    page.fill("#campaign-search", "COPY of")
    expect(page.locator("#campaign-table tbody tr")).to_have_count(1, timeout=ACTION_MS)
    copy_row.locator("[id^='archive-']").click()
    expect(page.locator("#no-campaigns")).to_be_visible(timeout=ACTION_MS)
    page.click("#show-archived")
    expect(copy_row.locator(".campaign-status")).to_have_text("Archived", timeout=ACTION_MS)
    expect(copy_row.locator("[id^='restore-']")).to_be_visible()
