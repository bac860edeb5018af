"""A signed-in user adds a lab seed mailbox, tests it, saves it and pauses it."""

from __future__ import annotations

import re
import secrets

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import screenshot
from tests.e2e.helpers import FIRST_LOAD_MS, ensure_user, sign_in
from tests.lab_fixtures import mail_lab_fixture  # noqa: F401

pytestmark = pytest.mark.e2e

ACTION_MS = 20_000  # an IMAP sign-in on loopback takes well under a second


def test_add_test_save_and_pause_a_seed(app_harness, e2e_database_url, page, mail_lab):
    base = app_harness.frontend_url.rstrip("/")
    sign_in(page, base, ensure_user(e2e_database_url))
    box = mail_lab.add_account("gmail.lab")

    page.click("a[href='/seeds']")
    expect(page).to_have_url(re.compile(r"/seeds$"), timeout=FIRST_LOAD_MS)
    expect(page.locator("#add-seed")).to_be_visible(timeout=FIRST_LOAD_MS)

    page.click("#add-seed")
    page.fill("#seed-email", box.email)
    page.locator("#seed-email").blur()
    # Leaving the email field fills in the provider's server (the lab, for .lab addresses).
    expect(page.locator("#seed-imap_host")).to_have_value("127.0.0.1", timeout=ACTION_MS)
    expect(page.locator("#seed-provider")).to_contain_text("Gmail")
    page.fill("#seed-imap_port", str(mail_lab.imap_port))
    expect(page.locator("#seed-imap_port")).to_have_value(str(mail_lab.imap_port))

    # A wrong password: the test says so in plain words, nothing is saved.
    page.fill("#seed-password", "not-the-password")
    page.click("#seed-form-test")
    result = page.locator("#seed-form-test-result")
    expect(result).to_contain_text("refused the password", timeout=ACTION_MS)

    page.fill("#seed-password", box.password)
    page.click("#seed-form-test")
    expect(result).to_contain_text("Spam: [Gmail]/Spam", timeout=ACTION_MS)
    expect(result).to_contain_text("Signed in")
    screenshot(page, "seed-form-tested")

    page.click("#seed-form-save")
    expect(page.locator("#seed-form")).to_be_hidden(timeout=ACTION_MS)
    row = page.locator("#seed-table tr", has_text=box.email)
    expect(row).to_have_count(1, timeout=ACTION_MS)
    expect(row.locator("[id^='seed-status-']")).to_have_text("Active")
    expect(row).to_contain_text("Gmail")

    # The saved seed's own test reports the folders it found.
    row.locator("[id^='seed-test-']").click()
    expect(page.locator("#row-test-result")).to_contain_text(
        "Spam: [Gmail]/Spam", timeout=ACTION_MS
    )
    expect(row).to_contain_text("[Gmail]/Spam")

    # Editing shows the saved settings but never the saved password; an empty
    # password field tests (and keeps) the saved one.
    row.locator("[id^='seed-edit-']").click()
    expect(page.locator("#seed-imap_port")).to_have_value(str(mail_lab.imap_port))
    expect(page.locator("#seed-password")).to_have_value("")
    page.click("#seed-form-test")
    expect(result).to_contain_text("Spam: [Gmail]/Spam", timeout=ACTION_MS)
    page.click("#seed-form-save")
    expect(page.locator("#seed-form")).to_be_hidden(timeout=ACTION_MS)

    row.locator("[id^='seed-pause-']").click()
    expect(row.locator("[id^='seed-status-']")).to_have_text("Paused", timeout=ACTION_MS)
    expect(row.locator("[id^='seed-resume-']")).to_be_visible()
    screenshot(page, "seed-manager-paused")

    # The password never reaches the page.
    assert box.password not in page.content()


def test_import_csv_lists_and_delete(app_harness, e2e_database_url, page, browser, tmp_path):
    base = app_harness.frontend_url.rstrip("/")
    sign_in(page, base, ensure_user(e2e_database_url))
    page.goto(base + "/seeds")
    expect(page.locator("#import-csv")).to_be_visible(timeout=FIRST_LOAD_MS)

    # Pasted CSV: a preview with per-row errors, then the import of the good rows.
    page.click("#import-csv")
    page.fill(
        "#seed-csv-text",
        "Email,Password\nimport-a@yahoo.lab,pw-a\nnot-an-address,pw-b\nimport-c@outlook.lab,\n",
    )
    page.click("#seed-csv-preview")
    expect(page.locator("#seed-csv-summary")).to_have_text(
        "1 ready to add, 2 with errors.", timeout=ACTION_MS
    )
    errors = page.locator("#seed-csv-errors")
    expect(errors).to_contain_text("valid email address")
    expect(errors.locator("tr", has_text="import-c@outlook.lab")).to_contain_text("password")
    page.click("#seed-csv-import")
    expect(page.locator("#seed-csv-result")).to_contain_text(
        "Added 1 seed mailbox.", timeout=ACTION_MS
    )

    # An uploaded file goes through the same preview.
    csv_file = tmp_path / "seeds.csv"
    csv_file.write_text("email;password\nimport-b@gmail.lab;pw-b\nimport-a@yahoo.lab;pw-a\n")
    page.locator("#seed-csv-upload input[type=file]").set_input_files(str(csv_file))
    expect(page.locator("#seed-csv-summary")).to_have_text(
        "2 ready to add, 0 with errors.", timeout=ACTION_MS
    )
    page.click("#seed-csv-import")
    expect(page.locator("#seed-csv-result")).to_contain_text(
        "Added 1 seed mailbox. 1 already existed", timeout=ACTION_MS
    )
    screenshot(page, "seed-import-done")
    page.keyboard.press("Escape")
    table = page.locator("#seed-table")
    expect(table).to_contain_text("import-a@yahoo.lab")
    expect(table).to_contain_text("import-b@gmail.lab")

    # A seed list: create, choose its mailboxes, rename, delete.
    name = f"Weekly {secrets.token_hex(3)}"
    # The import dialog is gone before typing (a closing modal still holds the focus).
    expect(page.get_by_role("dialog")).to_have_count(0, timeout=ACTION_MS)
    page.fill("#new-list-name", name)
    expect(page.locator("#new-list-name")).to_have_value(name)
    page.click("#create-list")
    card = page.locator("[id^='seed-list-']", has_text=name)
    expect(card).to_contain_text("0 seed mailboxes", timeout=ACTION_MS)
    card.locator("[id^='list-members-']").click()
    page.get_by_role("checkbox", name=re.compile("import-a@yahoo.lab")).click()
    page.get_by_role("checkbox", name=re.compile("import-b@gmail.lab")).click()
    page.click("#members-save")
    expect(card).to_contain_text("2 seed mailboxes", timeout=ACTION_MS)
    card.locator("[id^='list-rename-']").click()
    page.fill("#rename-list-name", name + " renamed")
    page.click("#rename-list-save")
    expect(card).to_contain_text(name + " renamed", timeout=ACTION_MS)
    screenshot(page, "seed-lists")
    card.locator("[id^='list-delete-']").click()
    page.click("#confirm-delete-list")
    expect(page.locator("[id^='seed-list-']", has_text=name)).to_have_count(0, timeout=ACTION_MS)

    # Deleting a seed asks first.
    row = page.locator("#seed-table tr", has_text="import-b@gmail.lab")
    row.locator("[id^='seed-delete-']").click()
    page.click("#confirm-delete")
    expect(row).to_have_count(0, timeout=ACTION_MS)
    expect(table).to_contain_text("import-a@yahoo.lab")

    # A viewer sees the seeds but no way to change them.
    viewer = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        viewer_page = viewer.new_page()
        sign_in(viewer_page, base, ensure_user(e2e_database_url, role="viewer"))
        viewer_page.goto(base + "/seeds")
        expect(viewer_page.locator("#seed-table")).to_contain_text(
            "import-a@yahoo.lab", timeout=FIRST_LOAD_MS
        )
        expect(viewer_page.locator("#add-seed")).to_have_count(0)
        expect(viewer_page.locator("[id^='seed-delete-']")).to_have_count(0)
    finally:
        viewer.close()
