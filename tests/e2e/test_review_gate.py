"""A sender reviews a published campaign with mixed statuses in the browser: builds
it, watches the build finish, reads the counts, approves the group that needs a
review, excludes one message, downloads one as .eml, test-sends one, fixes one
recipient's missing field and rebuilds, and sends (confirmed, it lands on the send page).

Real everything: the app (AppHarness), Chromium, an RQ worker on the test Redis for
the build job, and an SMTP server (aiosmtpd) behind the sender account for the test
send. Screenshots land in test-artifacts/ (review-gate-*.png).
"""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect
from sqlmodel import select

from tests.conftest import wait_until
from tests.e2e.conftest import ARTIFACTS, screenshot
from tests.e2e.helpers import FIRST_LOAD_MS, new_workspace_owner, sign_in
from tests.smtp_fixtures import smtp_auth_server_fixture, smtp_server_fixture  # noqa: F401

pytestmark = pytest.mark.e2e

ACTION_MS = 20_000
BUILD_MS = 60_000  # a worker process starts, then builds six messages
HTML = "<h1>Hello {{ first_name }}</h1><p>Your {{ plan }} plan: 20% off.</p>"
TEXT = "Hello {{ first_name }}, your {{ plan }} plan: 20% off."
# (email, first name, fields): what each recipient will come to.
PEOPLE = [
    ("ann@example.com", "Ann", {"plan": "pro", "customer_id": "C-1"}),  # ready
    ("bob@example.com", "Bob", {"plan": "free", "customer_id": "C-2"}),  # two files: ambiguous
    ("cy@example.com", "Cy", {"customer_id": "C-3"}),  # no plan: printed blank, a warning
    ("dee@example.com", "Dee", {"plan": "pro", "customer_id": "C-4"}),  # suppressed
    ("not-an-address", "Nobody", {"plan": "pro", "customer_id": "C-5"}),  # invalid address
    ("eve@example.com", "Eve", {"plan": "pro", "customer_id": "C-6"}),  # ready
]
FILES = ["C-1.pdf", "C-2.pdf", "C-2-old.pdf", "C-3.pdf", "C-4.pdf", "C-5.pdf", "C-6.pdf"]


def _engine(database_url):
    from mailer_app.db import make_engine

    return make_engine(database_url)


def published_campaign(database_url: str, owner_email: str) -> tuple[int, int]:
    """Through the services: contacts, a suppression, per-recipient files, and a
    published campaign over them. Returns (workspace id, campaign id)."""
    from mailer_app.db import session_scope
    from mailer_app.models import Contact, ContactList, Membership, SenderAccount, Source, User
    from mailer_app.services import attachments, campaigns, suppressions

    engine = _engine(database_url)
    try:
        with session_scope(engine) as session:
            user = session.exec(select(User).where(User.email == owner_email)).one()
            workspace_id = session.exec(
                select(Membership.workspace_id).where(Membership.user_id == user.id)
            ).one()
            sender_id = session.exec(
                select(SenderAccount.id).where(SenderAccount.workspace_id == workspace_id)
            ).one()
            people = ContactList(
                workspace_id=workspace_id, name="Customers", field_names=["plan", "customer_id"]
            )
            session.add(people)
            session.flush()
            for address, first, fields in PEOPLE:
                session.add(
                    Contact(workspace_id=workspace_id, list_id=people.id, email=address,
                            first_name=first, fields=fields)
                )  # fmt: skip
            suppressions.add_suppression(
                session=session, workspace_id=workspace_id, email="dee@example.com",
                reason="unsubscribe", user_id=user.id, source=Source.UI,
            )  # fmt: skip
            root = attachments.attachments_root(workspace_id=workspace_id)
            (root / "invoices").mkdir(parents=True, exist_ok=True)
            for name in FILES:
                (root / "invoices" / name).write_bytes(b"%PDF-1.4 invoice " + name.encode())
            campaign = campaigns.create_campaign(
                session=session, workspace_id=workspace_id, name="Spring invoices",
                user_id=user.id,
            )  # fmt: skip
            for step, values in (
                ("basics", {"name": "Spring invoices"}),
                ("sender", {"sender_account_id": sender_id}),
                ("recipients", {"list_ids": [people.id], "filters": []}),
                ("content", {"subject": "Your invoice, {{ first_name }}", "html_body": HTML,
                             "text_body": TEXT}),
                ("attachments", {"pattern": "invoices/{{ customer_id }}*.pdf", "zip": False}),
            ):  # fmt: skip
                result = campaigns.save_step(
                    session=session, workspace_id=workspace_id, campaign_id=campaign.id,
                    step=step, values=values, user_id=user.id, source=Source.UI,
                )  # fmt: skip
                assert result.saved, (step, result.errors)
            campaigns.publish(
                session=session, workspace_id=workspace_id, campaign_id=campaign.id,
                user_id=user.id, source=Source.UI,
            )  # fmt: skip
            return workspace_id, campaign.id
    finally:
        engine.dispose()


def built_ids(database_url: str, campaign_id: int) -> dict[str, int]:
    """{email: built message id} of the campaign."""
    from mailer_app.db import session_scope
    from mailer_app.models import BuiltMessage

    engine = _engine(database_url)
    try:
        with session_scope(engine) as session:
            rows = session.exec(
                select(BuiltMessage.email, BuiltMessage.id).where(
                    BuiltMessage.campaign_id == campaign_id
                )
            ).all()
            return dict(rows)
    finally:
        engine.dispose()


def campaign_status(database_url: str, campaign_id: int) -> str:
    from mailer_app.db import session_scope
    from mailer_app.models import Campaign

    engine = _engine(database_url)
    try:
        with session_scope(engine) as session:
            return str(session.get(Campaign, campaign_id).status)
    finally:
        engine.dispose()


def approver_of(database_url: str, campaign_id: int) -> str:
    """The name of whoever approved the campaign (its audit entry)."""
    from mailer_app.db import session_scope
    from mailer_app.models import AuditEntry, User

    engine = _engine(database_url)
    try:
        with session_scope(engine) as session:
            user = session.exec(
                select(User)
                .join(AuditEntry, AuditEntry.user_id == User.id)
                .where(AuditEntry.action == "campaign.approve", AuditEntry.target_id == campaign_id)
            ).one()
            return user.display_name
    finally:
        engine.dispose()


def count_of(page, status: str):
    return page.locator(f"#status-count-{status} .count")


def test_review_build_decide_download_and_send(
    app_harness, e2e_database_url, page, spawn, smtp_server
):
    spawn("jobs.worker", "build", "send", "default", env={"DATABASE_URL": e2e_database_url})
    base = app_harness.frontend_url.rstrip("/")
    owner = new_workspace_owner(e2e_database_url, sender_smtp_port=smtp_server.port)
    _workspace_id, campaign_id = published_campaign(e2e_database_url, owner)
    sign_in(page, base, owner)

    # From the campaign list to the review page.
    page.click("a[href='/campaigns']")
    expect(page).to_have_url(re.compile(r"/campaigns$"), timeout=FIRST_LOAD_MS)
    page.click(f"#review-{campaign_id}", timeout=FIRST_LOAD_MS)
    expect(page).to_have_url(re.compile(rf"/campaigns/{campaign_id}/review$"))
    expect(page.locator("#build-summary")).to_contain_text(
        "No messages are built yet", timeout=FIRST_LOAD_MS
    )
    expect(page.locator("#send-campaign")).to_be_disabled()
    expect(page.locator("#send-blockers")).not_to_be_empty()
    screenshot(page, "review-gate-1-not-built")

    # Build: the progress follows the worker without a reload, then the counts show.
    page.click("#build-button")
    expect(page.locator("#build-summary")).to_contain_text("Built 6 messages", timeout=BUILD_MS)
    expect(page.locator("#build-progress")).to_have_attribute("data-state", "complete")
    expect(count_of(page, "ready")).to_have_text("2")
    expect(count_of(page, "needs_review")).to_have_text("1")
    expect(count_of(page, "excluded")).to_have_text("1")
    expect(count_of(page, "warning")).to_have_text("1")
    expect(count_of(page, "blocked")).to_have_text("1")
    expect(count_of(page, "inactive")).to_have_text("0")
    reasons = page.locator("#reason-counts")
    for code in ("ambiguous_attachment", "suppressed", "invalid_address", "blank_field"):
        expect(page.locator(f"#reason-{code}")).to_be_visible()
    expect(reasons).to_contain_text("suppressed", ignore_case=True)
    expect(page.locator("#send-blockers")).to_contain_text("1 message needs a decision")
    expect(page.locator("#send-campaign")).to_be_disabled()
    screenshot(page, "review-gate-2-built")
    ids = built_ids(e2e_database_url, campaign_id)
    assert set(ids) == {p[0] for p in PEOPLE}

    # Clicking a reason filters the list to it.
    page.click("#reason-ambiguous_attachment")
    rows = page.locator("#message-table tbody tr")
    expect(rows).to_have_count(1, timeout=ACTION_MS)
    expect(page.locator(f"#message-row-{ids['bob@example.com']}")).to_contain_text("Needs review")
    page.click("#clear-filters")
    expect(rows).to_have_count(6, timeout=ACTION_MS)
    page.click("#status-count-excluded")
    expect(rows).to_have_count(1, timeout=ACTION_MS)
    expect(rows.first).to_contain_text("dee@example.com")
    page.click("#status-count-excluded")  # a second click shows everything again
    expect(rows).to_have_count(6, timeout=ACTION_MS)

    # The preview of Bob's message: headers, HTML in the sandbox, text, both files.
    page.click(f"#open-message-{ids['bob@example.com']}")
    preview = page.locator("#message-preview")
    expect(preview.locator("#preview-headers")).to_contain_text(
        "Your invoice, Bob", timeout=ACTION_MS
    )
    expect(preview.locator("#preview-headers")).to_contain_text("bob@example.com")
    frame = page.locator("#preview-html")
    assert frame.get_attribute("sandbox") == ""
    expect(page.frame_locator("#preview-html").locator("h1")).to_have_text("Hello Bob")
    expect(page.locator("#preview-text")).to_contain_text("your free plan")
    expect(page.locator("#preview-attachments")).to_contain_text("C-2.pdf")
    expect(page.locator("#preview-attachments")).to_contain_text("C-2-old.pdf")

    # A test send of it goes to the typed address only, marked as a test.
    page.fill("#test-send-address", "me@tester.example")
    page.click("#test-send-button")
    expect(page.locator("#test-send-result")).to_contain_text("Test sent", timeout=ACTION_MS)
    wait_until(lambda: smtp_server.recorder.messages, 10, "the test message")
    test_copy = email.message_from_bytes(
        smtp_server.recorder.messages[-1], policy=email.policy.default
    )
    assert test_copy["To"].addresses[0].addr_spec == "me@tester.example"
    assert test_copy["Subject"].startswith("[TEST] ")
    assert "bob@example.com" not in str(test_copy["To"])
    page.locator("#message-preview").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "review-gate-3-preview.png"))

    # Approve the whole needs-review group by its reason; exclude one ready message.
    page.click("#approve-reason-ambiguous_attachment")
    expect(page.locator("#review-notice")).to_contain_text("Approved 1 message", timeout=ACTION_MS)
    expect(page.locator(f"#message-row-{ids['bob@example.com']}")).to_contain_text("Approved")
    page.click(f"#exclude-{ids['eve@example.com']}")
    expect(page.locator("#review-notice")).to_contain_text("Excluded 1 message", timeout=ACTION_MS)
    expect(page.locator(f"#message-row-{ids['eve@example.com']}")).to_contain_text(
        "Excluded by a person"
    )
    expect(page.locator(f"#include-{ids['eve@example.com']}")).to_be_visible()

    # Download Ann's message as .eml and read it back with the email package.
    with page.expect_download(timeout=ACTION_MS) as info:
        page.click(f"#eml-{ids['ann@example.com']}")
    download = info.value
    assert download.suggested_filename.endswith(".eml")
    message = email.message_from_bytes(
        Path(download.path()).read_bytes(), policy=email.policy.default
    )
    assert message["To"].addresses[0].addr_spec == "ann@example.com"
    assert str(message["Subject"]) == "Your invoice, Ann"
    assert message["Message-ID"]
    assert message["List-Unsubscribe"]
    assert "Hello Ann" in message.get_body(("html",)).get_content()
    assert "your pro plan" in message.get_body(("plain",)).get_content()
    assert [part.get_filename() for part in message.iter_attachments()] == ["C-1.pdf"]

    # Fix Cy's missing plan in the recipient form, rebuild: only that warning goes.
    page.click(f"#open-message-{ids['cy@example.com']}")
    expect(page.locator("#preview-status")).to_have_text("Warning", timeout=ACTION_MS)
    page.click("#edit-recipient")
    expect(page.locator("#recipient-first_name")).to_have_value("Cy", timeout=ACTION_MS)
    page.fill("#recipient-field-plan", "pro")
    page.click("#save-recipient")
    expect(page.locator("#recipient-saved")).to_have_text(
        "Saved. Rebuild to update the message.", timeout=ACTION_MS
    )
    page.click("#build-button")
    expect(page.locator("#build-summary")).to_contain_text(
        "1 of them are new or changed", timeout=BUILD_MS
    )
    expect(count_of(page, "warning")).to_have_text("0")
    expect(count_of(page, "ready")).to_have_text("2")  # Ann and Cy (Eve is excluded)
    expect(page.locator(f"#message-row-{ids['cy@example.com']}")).to_contain_text("Ready")
    expect(page.locator("#preview-status")).to_have_text("Ready")
    expect(page.locator("#preview-text")).to_contain_text("your pro plan")
    expect(page.locator(f"#message-row-{ids['bob@example.com']}")).to_contain_text("Approved")

    # Nothing needs a decision any more: Send is on; it asks first, then approves the
    # campaign, queues it and shows its progress page.
    expect(page.locator("#send-blockers")).to_have_count(0, timeout=ACTION_MS)
    expect(page.locator("#send-campaign")).to_be_enabled()
    screenshot(page, "review-gate-4-ready-to-send")
    page.click("#send-campaign")
    # Ann and Cy (ready) and Bob (approved); Eve is excluded.
    expect(page.locator("#confirm-send-title")).to_have_text(
        "Send 3 messages now?", timeout=ACTION_MS
    )
    screenshot(page, "review-gate-5-confirm-send")
    page.click("#confirm-send")
    expect(page).to_have_url(re.compile(rf"/campaigns/{campaign_id}/send$"), timeout=FIRST_LOAD_MS)
    # The worker sends them to the sender's SMTP server; the page follows, no reload.
    expect(page.locator("#send-status")).to_have_text(re.compile("Completed"), timeout=BUILD_MS)
    expect(page.locator("#count-sent .count")).to_have_text("3", timeout=ACTION_MS)
    assert campaign_status(e2e_database_url, campaign_id) == "completed"
    assert approver_of(e2e_database_url, campaign_id) == "Workspace Owner"
    real = [m for m in smtp_server.recorder.messages if b"X-Mailer-App-Test" not in m]
    sent_to = [
        email.message_from_bytes(m, policy=email.policy.default)["To"].addresses[0].addr_spec
        for m in real
    ]
    assert len(sent_to) == 3 == len(set(sent_to))  # each once
    assert set(sent_to) <= {address for address, _, _ in PEOPLE} - {"dee@example.com"}
    screenshot(page, "review-gate-6-sent")

    # Back on the review page, Send is off and the progress is one click away; the
    # wizard's published banner leads back there too.
    page.click("#review-link")
    expect(page).to_have_url(re.compile(rf"/campaigns/{campaign_id}/review$"))
    expect(page.locator("#campaign-sent")).to_contain_text("progress page", timeout=ACTION_MS)
    expect(page.locator("#send-campaign")).to_be_disabled()
    # A sent message can still be previewed, but its recipient is no longer editable here.
    page.click(f"#open-message-{ids['ann@example.com']}", timeout=ACTION_MS)
    expect(page.locator("#preview-eml")).to_be_visible(timeout=ACTION_MS)
    expect(page.locator("#edit-recipient")).to_have_count(0)
    page.click("#edit-campaign")
    expect(page).to_have_url(re.compile(rf"/campaigns/{campaign_id}$"), timeout=FIRST_LOAD_MS)
    page.click("#review-messages-link", timeout=FIRST_LOAD_MS)
    expect(page).to_have_url(re.compile(rf"/campaigns/{campaign_id}/review$"))
    expect(page.locator("#campaign-sent")).to_contain_text("progress page", timeout=ACTION_MS)
    expect(page.locator("#send-campaign")).to_be_disabled()
    page.click("#send-progress-link")
    expect(page).to_have_url(re.compile(rf"/campaigns/{campaign_id}/send$"))
