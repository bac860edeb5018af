"""A new owner sets up DKIM signing for a sender account in the browser: the dialog
fills in the from domain and a selector, refuses a domain that does not match the
from address and a paste that is not a private key next to their fields, makes an
RSA key, shows the DNS record to publish (name, value, its 255-character pieces,
copyable), never shows the private key, and removes the key again.

Screenshots land in test-artifacts/ (sender-dkim-*.png).
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlmodel import select

from tests.e2e.conftest import screenshot
from tests.e2e.helpers import FIRST_LOAD_MS, new_workspace_owner, sign_in

pytestmark = pytest.mark.e2e

ACTION_MS = 20_000  # an RSA 2048 key is made in well under a second


def lab_sender(database_url: str, owner_email: str):
    """(sender id, workspace id) of the owner's "Lab sender" account."""
    from mailer_app.db import make_engine, session_scope
    from mailer_app.models import Membership, SenderAccount, User

    engine = make_engine(database_url)
    try:
        with session_scope(engine) as session:
            user_id = session.exec(select(User.id).where(User.email == owner_email)).one()
            workspace_id = session.exec(
                select(Membership.workspace_id).where(Membership.user_id == user_id)
            ).one()
            sender_id = session.exec(
                select(SenderAccount.id).where(SenderAccount.workspace_id == workspace_id)
            ).one()
            return sender_id, workspace_id
    finally:
        engine.dispose()


def saved_dkim(database_url: str, workspace_id: int, sender_id: int):
    """(the DNS record the services give, the stored private key's PEM) or (None, None)."""
    from mailer_app.db import make_engine, session_scope
    from mailer_app.services import senders

    engine = make_engine(database_url)
    try:
        with session_scope(engine) as session:
            record = senders.dkim_dns_record(
                session=session, workspace_id=workspace_id, sender_id=sender_id
            )
            signer = senders.dkim_signer_for(
                session=session, workspace_id=workspace_id, sender_id=sender_id
            )
            return record, signer.key.pem if signer else None
    finally:
        engine.dispose()


def test_set_up_dkim_see_the_dns_record_and_remove_the_key(app_harness, e2e_database_url, page):
    base = app_harness.frontend_url.rstrip("/")
    owner_email = new_workspace_owner(e2e_database_url, sender_smtp_port=2525)
    sender_id, workspace_id = lab_sender(e2e_database_url, owner_email)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    sign_in(page, base, owner_email)

    page.click("a[href='/senders']")
    expect(page).to_have_url(re.compile(r"/senders$"), timeout=FIRST_LOAD_MS)
    row = page.locator(f"#sender-row-{sender_id}")
    expect(row).to_contain_text("Not signed (no DKIM key)", timeout=FIRST_LOAD_MS)

    page.click(f"#sender-dkim-{sender_id}")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Signing (DKIM): Lab sender", timeout=ACTION_MS)
    expect(page.locator("#dkim-status")).to_contain_text("Off")
    # Defaults: the from address's domain, a selector, a new RSA key.
    expect(page.locator("#dkim_domain")).to_have_value("sender.lab")
    expect(page.locator("#dkim_selector")).to_have_value("mailer")
    expect(page.locator("#dkim-key-rsa")).to_be_checked()
    expect(page.locator("#dkim-key-keep")).to_have_count(0)  # no saved key to keep
    expect(page.locator("#dkim-remove")).to_have_count(0)
    screenshot(page, "sender-dkim-empty")

    # A domain that does not match the from address is refused next to the field.
    page.fill("#dkim_domain", "example.org")
    page.click("#dkim-save")
    expect(dialog.get_by_role("alert")).to_contain_text(
        "The DKIM domain must be sender.lab", timeout=ACTION_MS
    )
    expect(dialog.get_by_role("alert")).to_contain_text("DMARC")
    page.fill("#dkim_domain", "sender.lab")
    expect(dialog.get_by_role("alert")).to_have_count(0)

    # A paste that is not a private key is refused next to the key.
    page.click("#dkim-key-paste")
    expect(page.locator("#dkim_private_key")).to_be_visible()
    page.fill("#dkim_private_key", "ssh-rsa AAAAB3NzaC1yc2E me@laptop")
    page.click("#dkim-save")
    expect(dialog.get_by_role("alert")).to_contain_text(
        "This is not a private key in PEM format", timeout=ACTION_MS
    )
    screenshot(page, "sender-dkim-refused")
    assert saved_dkim(e2e_database_url, workspace_id, sender_id) == (None, None)

    # Let the app make the key.
    page.click("#dkim-key-rsa")
    expect(page.locator("#dkim_private_key")).to_have_count(0)
    expect(page.locator("#dkim-save")).to_have_text("Make the key and save")
    page.click("#dkim-save")
    expect(page.locator("#dkim-status")).to_contain_text(
        "signed for sender.lab with an RSA key (2048 bits), selector “mailer”", timeout=ACTION_MS
    )
    expect(page.locator("#dkim-notice")).to_contain_text("Publish the DNS record")
    record, pem = saved_dkim(e2e_database_url, workspace_id, sender_id)
    assert record.name == "mailer._domainkey.sender.lab" and pem
    expect(page.locator("#dkim-record-type")).to_have_text("TXT")
    expect(page.locator("#dkim-record-name")).to_have_text(record.name)
    expect(page.locator("#dkim-record-host")).to_have_text("mailer._domainkey")
    expect(page.locator("#dkim-record-value")).to_have_text(record.value)
    assert record.value.startswith("v=DKIM1; k=rsa; p=")
    # Longer than one TXT string: the pieces, in order, as the DNS needs them.
    pieces = page.locator("#dkim-record-pieces")
    expect(pieces).to_contain_text("split in 2 pieces")
    for i, piece in enumerate(record.strings):
        expect(page.locator(f"#dkim-record-piece-{i}")).to_have_text(piece)
    expect(page.locator("#dkim-key-keep")).to_be_checked()

    # Copy buttons put exactly the record's parts on the clipboard.
    for part, expected in (
        ("name", record.name),
        ("value", record.value),
        ("pieces", " ".join(f'"{s}"' for s in record.strings)),
    ):
        page.click(f"#dkim-copy-{part}")
        expect(page.locator(f"#dkim-copy-{part}")).to_have_text(re.compile("Copied"))
        assert page.evaluate("navigator.clipboard.readText()") == expected
    screenshot(page, "sender-dkim-record")

    # The private key is nowhere in the page.
    html = page.content()
    assert "PRIVATE KEY" not in html
    for line in pem.splitlines():
        if "-----" not in line:
            assert line not in html

    page.click("#dkim-close")
    expect(dialog).to_be_hidden()
    expect(row).to_contain_text("Signed (DKIM) as sender.lab", timeout=ACTION_MS)
    screenshot(page, "sender-dkim-table")

    # Remove the key: asked first, then signing is off and the key is deleted.
    page.click(f"#sender-dkim-{sender_id}")
    expect(page.locator("#dkim-record-value")).to_have_text(record.value, timeout=ACTION_MS)
    page.click("#dkim-remove")
    expect(page.locator("#dkim-remove-confirmation")).to_contain_text("no longer be signed")
    page.click("#dkim-cancel-remove")
    expect(page.locator("#dkim-remove-confirmation")).to_have_count(0)
    page.click("#dkim-remove")
    screenshot(page, "sender-dkim-remove-confirmation")
    page.click("#dkim-confirm-remove")
    expect(page.locator("#dkim-status")).to_contain_text("Off", timeout=ACTION_MS)
    expect(page.locator("#dkim-notice")).to_contain_text("no longer signed")
    expect(page.locator("#dkim-record")).to_have_count(0)
    expect(page.locator("#dkim-key-rsa")).to_be_checked()
    assert saved_dkim(e2e_database_url, workspace_id, sender_id) == (None, None)
    page.click("#dkim-close")
    expect(row).to_contain_text("Not signed (no DKIM key)", timeout=ACTION_MS)
    screenshot(page, "sender-dkim-removed")
