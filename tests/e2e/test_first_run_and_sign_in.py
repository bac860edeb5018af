"""A new user creates the workspace owner, signs out, signs in, and reaches home."""

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.empty_database]

FIRST_LOAD_MS = 120_000  # the first load of each route compiles it


def test_first_run_creates_owner_then_sign_in_reaches_home(app_harness, page):
    base = app_harness.frontend_url.rstrip("/")

    page.goto(base + "/")
    expect(page).to_have_url(re.compile(r"/setup$"), timeout=FIRST_LOAD_MS)
    page.fill("#workspace_name", "Acme Newsletters")
    page.fill("#display_name", "Ada Owner")
    page.fill("#email", "ada@example.com")
    page.fill("#password", "short")
    page.fill("#password_confirm", "short")
    page.click("#create-workspace")
    expect(page.get_by_role("alert")).to_contain_text("10 characters")
    screenshot(page, "first-run-error")

    page.fill("#password", "correct horse battery")
    page.fill("#password_confirm", "correct horse battery")
    page.click("#create-workspace")
    expect(page.locator("#welcome")).to_contain_text("Ada Owner", timeout=FIRST_LOAD_MS)
    screenshot(page, "home-after-first-run")

    page.click("#sign-out")
    expect(page).to_have_url(re.compile(r"/login$"), timeout=FIRST_LOAD_MS)

    page.fill("#email", "ada@example.com")
    page.fill("#password", "wrong password!")
    page.click("#sign-in")
    expect(page.get_by_role("alert")).to_contain_text("Email or password is incorrect")

    page.fill("#password", "correct horse battery")
    page.click("#sign-in")
    expect(page.locator("#welcome")).to_contain_text("Ada Owner")
    expect(page.locator("#signed-in-user")).to_contain_text("Ada Owner")
    screenshot(page, "home-signed-in")

    # The first-run page is closed once an owner exists.
    page.goto(base + "/setup")
    expect(page).to_have_url(re.compile(r"/login$|/$"))
