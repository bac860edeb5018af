"""A new workspace owner imports a CSV with a custom column through the browser, maps
it, watches the import finish, sees the bad rows, and suppresses an address.

Real everything: the app (AppHarness) and an RQ worker on the test Redis, which
runs the import job the page queues.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlmodel import select

from mailer_app.db import make_engine, session_scope
from mailer_app.models import ContactList, Membership, User
from mailer_app.services import contacts
from mailer_app.settings import get_settings
from tests.e2e.conftest import screenshot
from tests.e2e.helpers import FIRST_LOAD_MS, new_workspace_owner, sign_in

pytestmark = pytest.mark.e2e

ACTION_MS = 20_000
IMPORT_MS = 60_000  # a worker process starts, then imports five rows

CSV_TEXT = (
    "Email;First name;Customer ID;Internal note\n"
    "Ann@Example.com;Ann;C-100;vip\n"
    "bob@example.com;Bob;C-200;\n"
    "not-an-address;Nobody;C-300;\n"
    "ANN@example.com;Ann again;C-400;\n"
    "carl@example.com;Carl;C-500;late payer\n"
)


def test_import_map_watch_and_suppress(
    app_harness, e2e_database_url, page, spawn, tmp_path, monkeypatch
):
    spawn("jobs.worker", "build", env={"DATABASE_URL": e2e_database_url})
    base = app_harness.frontend_url.rstrip("/")
    owner = new_workspace_owner(e2e_database_url)
    sign_in(page, base, owner)

    page.click("a[href='/contacts']")
    expect(page).to_have_url(re.compile(r"/contacts$"), timeout=FIRST_LOAD_MS)
    expect(page.locator("#contact-import")).to_be_visible(timeout=FIRST_LOAD_MS)
    expect(page.locator("#no-lists")).to_be_visible()

    csv_file = tmp_path / "customers.csv"
    csv_file.write_text(CSV_TEXT)
    page.locator("#contacts-upload input[type=file]").set_input_files(str(csv_file))

    # The mapping step: a guess for every column, and the first rows of the file.
    expect(page.locator("#column-mapping")).to_be_visible(timeout=ACTION_MS)
    expect(page.locator("#import-filename")).to_have_text("customers.csv")
    expect(page.locator("#contact-import")).to_contain_text("UTF-8, semicolon-separated, 4 columns")
    expect(page.locator("#map-target-0")).to_contain_text("Email address")
    expect(page.locator("#map-target-1")).to_contain_text("First name")
    expect(page.locator("#map-field-2")).to_have_value("customer_id")
    preview = page.locator("#csv-preview")
    expect(preview).to_contain_text("Ann@Example.com")
    expect(preview).to_contain_text("C-200")
    expect(page.locator("#preview-problems")).to_have_count(0)  # syntax is fine in the first rows

    # Leave the internal note out; call the customer number what templates will say.
    page.click("#map-target-3")
    page.get_by_role("option", name="Do not import").click()
    expect(page.locator("#map-field-3")).to_have_count(0)
    page.fill("#map-field-2", "customer_number")
    page.fill("#import-new-list", "Customers")
    screenshot(page, "contacts-mapping")
    page.click("#start-import")

    # The worker imports it; the page follows until the end, without reloading.
    summary = page.locator("#import-summary")
    expect(summary).to_contain_text("Imported 3 contacts into Customers.", timeout=IMPORT_MS)
    expect(summary).to_contain_text("2 rows skipped")
    expect(page.locator("#import-progress")).to_have_attribute("data-state", "complete")
    errors = page.locator("#import-errors")
    expect(errors.locator("tr", has_text="not-an-address")).to_contain_text(
        "not a valid email address"
    )
    expect(errors.locator("tr", has_text="ann@example.com")).to_contain_text(
        "The same address as line 2"
    )
    expect(page.locator("#import-report")).to_have_attribute(
        "href", re.compile(r"/exports/contact-imports/\d+/rejected\.csv$")
    )
    row = page.locator("#contact-lists tr", has_text="Customers")
    expect(row).to_contain_text("3 contacts", timeout=ACTION_MS)
    expect(row).to_contain_text("customer_number")
    expect(page.locator("#recent-imports")).to_contain_text("3 imported, 2 skipped")
    screenshot(page, "contacts-import-done")

    # A file over the size cap is stopped while it uploads, with a clear message.
    monkeypatch.setenv("CONTACTS_MAX_UPLOAD_MB", "0.02")  # the app runs in this process
    get_settings.cache_clear()
    page.click("#import-another")
    big = tmp_path / "big.csv"
    big.write_text("email\n" + "".join(f"person{i}@example.com\n" for i in range(3000)))
    page.locator("#contacts-upload input[type=file]").set_input_files(str(big))
    expect(page.locator("#contact-import")).to_contain_text(
        "This file is larger than 20 KB, the most that can be imported.", timeout=ACTION_MS
    )
    monkeypatch.delenv("CONTACTS_MAX_UPLOAD_MB")
    get_settings.cache_clear()

    # Suppress one of them by hand.
    page.click("a[href='/suppressions']")
    expect(page).to_have_url(re.compile(r"/suppressions$"), timeout=FIRST_LOAD_MS)
    expect(page.locator("#sup-add")).to_be_visible(timeout=FIRST_LOAD_MS)
    expect(page.locator("#no-suppressions")).to_be_visible()
    page.fill("#sup-email", "not an address")
    page.click("#sup-add")
    expect(page.get_by_role("alert")).to_contain_text(
        "not a valid email address", timeout=ACTION_MS
    )
    page.fill("#sup-email", "Bob@Example.com")
    page.fill("#sup-note", "asked by phone")
    page.click("#sup-add")
    table = page.locator("#suppression-table")
    expect(table.locator("tr", has_text="bob@example.com")).to_contain_text(
        "Added by hand", timeout=ACTION_MS
    )
    expect(table).to_contain_text("asked by phone")
    expect(page.locator("#sup-total")).to_have_text("1 suppressed")
    expect(page.locator("#sup-email")).to_have_value("")
    screenshot(page, "suppressions")

    # What a campaign to the list would now reach: Ann and Carl, not Bob.
    engine = make_engine(e2e_database_url)
    try:
        with session_scope(engine) as session:
            contact_list = session.exec(
                select(ContactList)
                .join(Membership, Membership.workspace_id == ContactList.workspace_id)
                .join(User, User.id == Membership.user_id)
                .where(User.email == owner, ContactList.name == "Customers")
            ).one()
            recipients = contacts.iter_recipients(
                session=session,
                workspace_id=contact_list.workspace_id,
                list_ids=[contact_list.id],
            )
            assert [(c.email, c.fields) for c in recipients] == [
                ("ann@example.com", {"customer_number": "C-100"}),
                ("carl@example.com", {"customer_number": "C-500"}),
            ]
    finally:
        engine.dispose()
