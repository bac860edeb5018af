"""A sender follows a send in the browser: from the campaign list to the send page of
a queued campaign, the counters and the progress bar follow the send records as
they move (moved here, in another session, as workers would) without a reload; then
Pause, Resume, and Cancel (asked twice) change the status, with who did it and when.
Leaving the page stops its refresh loop; coming back starts it again.

No worker runs: the test plays the workers' part with `send_records.claim_batch` and
`mark`, so every number on the page is known. Screenshots land in test-artifacts/
(send-page-*.png).
"""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect
from sqlmodel import select

from tests.conftest import wait_until
from tests.e2e.conftest import screenshot
from tests.e2e.helpers import FIRST_LOAD_MS, new_workspace_owner, sign_in

pytestmark = pytest.mark.e2e

ACTION_MS = 20_000
LIVE_MS = 15_000  # the page reads the progress every second
MESSAGES = 20


def _engine(database_url: str):
    from mailer_app.db import make_engine

    return make_engine(database_url)


def queued_campaign(database_url: str, owner_email: str) -> tuple[int, int]:
    """An approved campaign of MESSAGES ready messages in the owner's workspace, started
    through the service as the review page's Send does. Returns (campaign id, run id)."""
    from mailer_app.db import session_scope
    from mailer_app.models import (
        BuiltMessage,
        Campaign,
        CampaignStatus,
        CampaignVersion,
        Membership,
        Source,
        User,
        utcnow,
    )
    from mailer_app.services import send_control

    engine = _engine(database_url)
    try:
        with session_scope(engine) as session:
            user = session.exec(select(User).where(User.email == owner_email)).one()
            workspace_id = session.exec(
                select(Membership.workspace_id).where(Membership.user_id == user.id)
            ).one()
            campaign = Campaign(
                workspace_id=workspace_id, name="Spring sale", status=CampaignStatus.APPROVED
            )
            session.add(campaign)
            session.flush()
            version = CampaignVersion(
                workspace_id=workspace_id, campaign_id=campaign.id, number=1, is_draft=False,
                published_at=utcnow(), subject="Spring sale", text_body="20% off",
            )  # fmt: skip
            session.add(version)
            session.flush()
            now = utcnow()
            session.execute(
                sa.insert(BuiltMessage.__table__),
                [
                    {
                        "workspace_id": workspace_id, "campaign_id": campaign.id,
                        "version_id": version.id, "email": f"p{i:02d}@example.com",
                        "review_status": "ready", "reasons": [], "input_digest": "",
                        "merge_data": {}, "subject": "Spring sale",
                        "message_id_header": f"<s{i}.{campaign.id}@example.com>",
                        "size_bytes": 100, "attachments": [], "created_at": now,
                        "updated_at": now, "source": "job",
                    }
                    for i in range(MESSAGES)
                ],
            )  # fmt: skip
            # The engine is not running here: the wake fails quietly, as it may in life.
            run = send_control.start_send(
                session=session, workspace_id=workspace_id, campaign_id=campaign.id,
                user_id=user.id, source=Source.UI,
            )  # fmt: skip
            return campaign.id, run.id
    finally:
        engine.dispose()


def move(database_url: str, run_id: int, n: int, to: str, error: str | None = None) -> None:
    """What a worker does: claim `n` queued records and settle them as `to`."""
    from mailer_app.db import session_scope
    from mailer_app.services import send_records

    engine = _engine(database_url)
    try:
        ids = send_records.claim_batch(
            engine_or_session=engine, run_id=run_id, worker="e2e", limit=n
        )
        assert len(ids) == n
        with session_scope(engine) as session:
            for record_id in ids:
                send_records.mark(session=session, record_id=record_id, to=to, error=error)
    finally:
        engine.dispose()


def status_of(database_url: str, campaign_id: int) -> str:
    from mailer_app.db import session_scope
    from mailer_app.models import Campaign

    engine = _engine(database_url)
    try:
        with session_scope(engine) as session:
            return str(session.get(Campaign, campaign_id).status)
    finally:
        engine.dispose()


def live_state(app_harness, page, state: str):
    """A live page's state (by its snake-case class name) for this tab: the app's
    backend runs in this process and its state manager holds the tab's state."""
    token = page.evaluate("window.sessionStorage.getItem('token')")
    states = app_harness.app_instance.state_manager.states
    root = next(value for key, value in states.items() if token in str(key))
    [live] = [s for name, s in root.substates.items() if name.endswith("____" + state)]
    return live


def refresh_loop_running(app_harness, page, state: str = "send_page_state") -> bool:
    """Whether the page's refresh loop runs for this tab (state/live.LivePage clears
    `_watching` when the loop ends, however it ends)."""
    return bool(live_state(app_harness, page, state)._watching)


def page_mounts(app_harness, page, state: str = "send_page_state") -> int:
    """How many times the page counts itself mounted (its on_mount adds one, its
    on_unmount takes one away); 0 after the page was left, which stops its loop."""
    return live_state(app_harness, page, state)._mounted


def assert_page_live(app_harness, page, state: str = "send_page_state") -> None:
    """The page is mounted once (however often strict mode mounted it) and its loop runs."""
    wait_until(
        lambda: (
            page_mounts(app_harness, page, state) == 1
            and refresh_loop_running(app_harness, page, state)
        ),
        5,
        f"{state}: the page mounted and its loop running",
    )


def wait_page_left(app_harness, page, state: str = "send_page_state", timeout: float = 5):
    """After going to another page of the app: the page counts itself left and its loop
    has stopped (within a round of the loop)."""
    wait_until(
        lambda: (
            page_mounts(app_harness, page, state) == 0
            and not refresh_loop_running(app_harness, page, state)
        ),
        timeout,
        f"{state}: the page left and its loop stopped",
    )


def count(page, name: str):
    return page.locator(f"#count-{name} .count")


def test_send_page_follows_the_send_live_and_pauses_resumes_and_cancels(
    app_harness, e2e_database_url, page
):
    base = app_harness.frontend_url.rstrip("/")
    owner = new_workspace_owner(e2e_database_url)
    campaign_id, run_id = queued_campaign(e2e_database_url, owner)
    sign_in(page, base, owner)

    # The campaign list leads to the send page of a queued campaign.
    page.click("a[href='/campaigns']")
    expect(page).to_have_url(re.compile(r"/campaigns$"), timeout=FIRST_LOAD_MS)
    page.click(f"#progress-{campaign_id}", timeout=FIRST_LOAD_MS)
    expect(page).to_have_url(re.compile(rf"/campaigns/{campaign_id}/send$"))
    expect(page.locator("#send-status")).to_have_text("Queued", timeout=FIRST_LOAD_MS)
    expect(count(page, "remaining")).to_have_text(str(MESSAGES))
    expect(count(page, "sent")).to_have_text("0")
    expect(page.locator("#send-percent")).to_have_text("0%")
    expect(page.locator("#send-summary")).to_contain_text("Waiting for a worker")
    expect(page.locator("#send-eta")).to_have_text("waiting for the first messages")
    expect(page.locator("#resume-send")).to_be_disabled()
    expect(page.locator("#pause-send")).to_be_enabled()
    screenshot(page, "send-page-1-queued")
    # A marker on the window survives only if the page is never reloaded.
    page.evaluate("window.__sendMarker = 'same page'")

    # Workers send five, two fail and one ends unknown: the page follows by itself.
    move(e2e_database_url, run_id, 5, "sent")
    move(e2e_database_url, run_id, 2, "failed", error="550 5.1.1 No such user here")
    move(e2e_database_url, run_id, 1, "unknown", error="The connection ended after the message.")
    expect(count(page, "sent")).to_have_text("5", timeout=LIVE_MS)
    expect(count(page, "failed")).to_have_text("2", timeout=LIVE_MS)
    expect(count(page, "unknown")).to_have_text("1", timeout=LIVE_MS)
    expect(count(page, "remaining")).to_have_text("12", timeout=LIVE_MS)
    expect(page.locator("#send-percent")).to_have_text("40%")
    expect(page.locator("#send-progress")).to_have_attribute("data-value", "40")
    expect(page.locator("#send-rate")).to_have_text(re.compile(r"a minute$"))
    expect(page.locator("#send-eta")).to_have_text(re.compile(r"minute"))
    expect(page.locator("#failures-table")).to_contain_text("550 5.1.1 No such user here")
    expect(page.locator("#unknown-panel")).to_contain_text("will not be sent again")
    expect(page.locator("#unknown-table tbody tr")).to_have_count(1)
    expect(page.locator("#unknown-table")).to_contain_text("The connection ended")
    move(e2e_database_url, run_id, 4, "sent")
    expect(count(page, "sent")).to_have_text("9", timeout=LIVE_MS)
    expect(page.locator("#send-percent")).to_have_text("60%", timeout=LIVE_MS)
    expect(page.locator("#send-progress")).to_have_attribute("data-value", "60")
    assert page.evaluate("window.__sendMarker") == "same page"
    screenshot(page, "send-page-2-live")

    # Pause: the status says so, with who and when; nothing else changes.
    page.click("#pause-send")
    expect(page.locator("#send-status")).to_have_text("Paused", timeout=ACTION_MS)
    expect(page.locator("#send-status-reason")).to_contain_text("Paused by Workspace Owner at")
    expect(page.locator("#send-notice")).to_contain_text("Paused.")
    expect(page.locator("#send-eta")).to_have_text("paused: no estimate")
    expect(page.locator("#pause-send")).to_be_disabled()
    expect(page.locator("#resume-send")).to_be_enabled()
    assert status_of(e2e_database_url, campaign_id) == "paused"
    screenshot(page, "send-page-3-paused")

    # Resume: sending again, and the counts are what they were.
    page.click("#resume-send")
    expect(page.locator("#send-status")).to_have_text("Sending", timeout=ACTION_MS)
    expect(page.locator("#send-status-reason")).to_contain_text("Resumed by Workspace Owner")
    expect(count(page, "sent")).to_have_text("9")
    assert status_of(e2e_database_url, campaign_id) == "sending"

    # Leaving the page stops its refresh loop; coming back starts it again.
    assert_page_live(app_harness, page)
    page.click("#back-to-list")
    expect(page).to_have_url(re.compile(r"/campaigns$"))
    wait_page_left(app_harness, page)
    page.go_back()
    expect(page).to_have_url(re.compile(rf"/campaigns/{campaign_id}/send$"))
    move(e2e_database_url, run_id, 1, "sent")
    expect(count(page, "sent")).to_have_text("10", timeout=LIVE_MS)
    expect(count(page, "remaining")).to_have_text("7", timeout=LIVE_MS)
    assert_page_live(app_harness, page)

    # Cancel asks first; "Keep sending" changes nothing.
    page.click("#cancel-send")
    expect(page.get_by_role("alertdialog")).to_contain_text("7 messages not sent yet")
    page.click("#keep-sending")
    expect(page.get_by_role("alertdialog")).to_have_count(0)
    assert status_of(e2e_database_url, campaign_id) == "sending"
    page.click("#cancel-send")
    screenshot(page, "send-page-4-cancel-confirm")
    page.click("#confirm-cancel-send")
    expect(page.locator("#send-status")).to_have_text("Cancelled", timeout=ACTION_MS)
    expect(page.locator("#send-status-reason")).to_contain_text("Cancelled by Workspace Owner")
    expect(count(page, "not-sent")).to_have_text("7")
    expect(page.locator("#send-summary")).to_contain_text("7 messages not sent")
    for button in ("#pause-send", "#resume-send", "#cancel-send"):
        expect(page.locator(button)).to_be_disabled()
    assert status_of(e2e_database_url, campaign_id) == "cancelled"
    # Nothing more can change: the loop ends by itself.
    wait_until(lambda: not refresh_loop_running(app_harness, page), 5, "the loop to end")
    screenshot(page, "send-page-5-cancelled")
