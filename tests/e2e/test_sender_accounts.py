"""A new owner adds a sender account against a real SMTP server, tests it, saves,
edits and deletes it; a viewer sees the accounts but cannot change them."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlmodel import select

from tests.e2e.conftest import screenshot
from tests.e2e.helpers import FIRST_LOAD_MS, PASSWORD, new_workspace_owner, sign_in
from tests.smtp_fixtures import smtp_auth_server_fixture  # noqa: F401

pytestmark = pytest.mark.e2e

ACTION_MS = 20_000  # an SMTP sign-in on loopback takes well under a second


def choose(page, trigger: str, option: str) -> None:
    """Pick an option of a select (Radix renders its options in a popup)."""
    page.click(trigger)
    page.get_by_role("option", name=option).click()


def test_add_test_edit_and_delete_a_sender_account(
    app_harness, e2e_database_url, page, smtp_auth_server
):
    server = smtp_auth_server
    server.reset()
    base = app_harness.frontend_url.rstrip("/")
    sign_in(page, base, new_workspace_owner(e2e_database_url))

    page.click("a[href='/senders']")
    expect(page).to_have_url(re.compile(r"/senders$"), timeout=FIRST_LOAD_MS)
    expect(page.locator("#add-sender")).to_be_visible(timeout=FIRST_LOAD_MS)
    expect(page.locator("#no-senders")).to_be_visible()

    page.click("#add-sender")
    page.fill("#sender-name", "Newsletter")
    page.fill("#sender-from_name", "Example News")
    page.fill("#sender-from_email", "news@example.com")
    # A provider preset fills in its server and says what kind of password it needs.
    choose(page, "#sender-preset", "Gmail / Google Workspace")
    expect(page.locator("#sender-smtp_host")).to_have_value("smtp.gmail.com")
    expect(page.locator("#sender-smtp_port")).to_have_value("587")
    expect(page.locator("#sender-preset-hint")).to_contain_text("Use an app password")
    expect(page.locator("#sender-smtp_username")).to_have_value("news@example.com")

    # This test's own server: no encryption on loopback, a known user and password.
    choose(page, "#sender-preset", "Another provider")
    page.fill("#sender-smtp_host", "127.0.0.1")
    choose(page, "#sender-smtp_security", "None (only for a server on this computer)")
    page.fill("#sender-smtp_port", str(server.port))
    page.fill("#sender-smtp_username", server.username)

    result = page.locator("#sender-form-test-result")
    page.fill("#sender-password", "not-the-password")
    page.click("#sender-form-test")
    expect(result).to_contain_text(
        f"The server refused the password for {server.username}", timeout=ACTION_MS
    )
    page.fill("#sender-password", server.password)
    page.click("#sender-form-test")
    expect(result).to_contain_text(
        f"Connected to 127.0.0.1:{server.port}, no encryption, signed in as {server.username}. "
        "Nothing was sent.",
        timeout=ACTION_MS,
    )
    assert server.recorder.successful_logins == [server.username]
    assert server.recorder.mail_from == [] and server.recorder.messages == []
    screenshot(page, "sender-form-tested")

    # A bad value is refused next to its field, and nothing is saved.
    page.fill("#sender-from_email", "news at example.com")
    page.click("#sender-form-save")
    expect(page.get_by_role("alert")).to_contain_text(
        "Enter a valid from address", timeout=ACTION_MS
    )
    expect(page.locator("#sender-form")).to_be_visible()
    page.fill("#sender-from_email", "news@example.com")
    page.fill("#sender-password", server.password)
    page.click("#sender-form-save")
    expect(page.locator("#sender-form")).to_be_hidden(timeout=ACTION_MS)

    row = page.locator("#sender-table tr", has_text="Newsletter")
    expect(row).to_have_count(1, timeout=ACTION_MS)
    expect(row).to_contain_text("Example News <news@example.com>")
    expect(row).to_contain_text(f"127.0.0.1:{server.port}, no encryption")
    expect(row).to_contain_text(f"Signs in as {server.username}")
    expect(row.locator("[id^='sender-status-']")).to_have_text("Active")

    # The saved account's own test uses the saved password.
    row.locator("[id^='sender-test-']").click()
    expect(page.locator("#sender-row-test-result")).to_contain_text(
        f"signed in as {server.username}", timeout=ACTION_MS
    )
    screenshot(page, "sender-accounts-table")

    # Editing shows the saved settings but never the saved password.
    row.locator("[id^='sender-edit-']").click()
    expect(page.locator("#sender-name")).to_have_value("Newsletter")
    expect(page.locator("#sender-smtp_port")).to_have_value(str(server.port))
    expect(page.locator("#sender-password")).to_have_value("")
    expect(page.locator("#sender-password")).to_have_attribute(
        "placeholder", "Leave empty to keep the saved password"
    )
    page.click("#sender-form-test")  # an empty password field tests the saved one
    expect(result).to_contain_text(f"signed in as {server.username}", timeout=ACTION_MS)
    page.fill("#sender-from_name", "Example Weekly")
    page.click("#sender-form-save")
    expect(page.locator("#sender-form")).to_be_hidden(timeout=ACTION_MS)
    expect(row).to_contain_text("Example Weekly <news@example.com>", timeout=ACTION_MS)
    assert server.password not in page.content()

    # Deleting asks first; Cancel keeps the account.
    row.locator("[id^='sender-delete-']").click()
    dialog = page.get_by_role("alertdialog")
    expect(dialog).to_contain_text("Delete the sender account Newsletter?")
    page.click("#cancel-delete")
    expect(dialog).to_be_hidden()
    expect(row).to_have_count(1)
    row.locator("[id^='sender-delete-']").click()
    expect(page.locator("#confirm-delete-sender")).to_be_visible()
    screenshot(page, "sender-delete-confirmation")
    page.click("#confirm-delete-sender")
    expect(page.locator("#sender-table tr", has_text="Newsletter")).to_have_count(
        0, timeout=ACTION_MS
    )
    expect(page.locator("#no-senders")).to_be_visible()
    expect(page.locator("#senders-notice")).to_contain_text(
        "Deleted the sender account Newsletter."
    )
    screenshot(page, "sender-accounts-deleted")


def test_a_viewer_sees_sender_accounts_but_cannot_change_them(app_harness, e2e_database_url, page):
    from mailer_app.db import make_engine, session_scope
    from mailer_app.models import Membership, Role, SenderAccount, User
    from mailer_app.services import auth

    # A workspace with one sender account ("Lab sender"), and a viewer in it.
    owner_email = new_workspace_owner(e2e_database_url, sender_smtp_port=2525)
    viewer_email = "viewer-" + owner_email
    engine = make_engine(e2e_database_url)
    try:
        with session_scope(engine) as session:
            owner_id = session.exec(select(User.id).where(User.email == owner_email)).one()
            workspace_id = session.exec(
                select(Membership.workspace_id).where(Membership.user_id == owner_id)
            ).one()
            auth.create_user(
                session=session, workspace_id=workspace_id, email=viewer_email,
                password=PASSWORD, role=Role.VIEWER, created_by_id=owner_id,
                display_name="Viewer",
            )  # fmt: skip
            sender_id = session.exec(
                select(SenderAccount.id).where(SenderAccount.workspace_id == workspace_id)
            ).one()
    finally:
        engine.dispose()

    base = app_harness.frontend_url.rstrip("/")
    sign_in(page, base, viewer_email)
    page.goto(base + "/senders")
    row = page.locator(f"#sender-row-{sender_id}")
    expect(row).to_be_visible(timeout=FIRST_LOAD_MS)
    expect(row).to_contain_text("Lab sender")
    expect(row).to_contain_text("Lab News <news@sender.lab>")
    expect(row.locator(f"#sender-status-{sender_id}")).to_have_text("Active")
    expect(page.locator("#add-sender")).to_have_count(0)
    expect(page.locator(f"#sender-test-{sender_id}")).to_have_count(0)
    expect(page.locator(f"#sender-edit-{sender_id}")).to_have_count(0)
    expect(page.locator(f"#sender-delete-{sender_id}")).to_have_count(0)
