"""The report page and the job monitor in the browser.

Report: a campaign part-sent (records moved as workers would), its counts live on
the page, a failure reason listed, and the CSV link serves the file to the signed-in
person. Jobs: a failed job appears with its error, Retry puts it back on its queue;
the campaign's unknown records link to its send page. Leaving either page for
another page of the app stops its refresh loop. Screenshots land in
test-artifacts/ (report-page-*.png, jobs-page-*.png).
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import screenshot
from tests.e2e.helpers import FIRST_LOAD_MS, new_workspace_owner, sign_in
from tests.e2e.test_send_page import (
    assert_page_live,
    count,
    move,
    queued_campaign,
    wait_page_left,
)

pytestmark = pytest.mark.e2e

LIVE_MS = 20_000
LOOP_STOP_S = 8  # both pages read again every 3 seconds; a loop stops at its next round


def failed_job(redis_url: str) -> str:
    """A job in the default queue's failed registry, as a worker leaves it."""
    import redis
    from rq import Queue
    from rq.job import JobStatus
    from rq.registry import FailedJobRegistry
    from rq.results import Result

    client = redis.Redis.from_url(redis_url)
    queue = Queue("default", connection=client)
    job = queue.enqueue("jobs.system.ping", "e2e", description="an e2e job that failed")
    queue.remove(job)
    job.set_status(JobStatus.FAILED)
    error = "Traceback...\nRuntimeError: the e2e job broke"
    FailedJobRegistry(queue=queue).add(job, ttl=600, exc_string=error)
    Result.create_failure(job, ttl=600, exc_string=error)  # where a worker keeps it
    return job.id


def job_status(redis_url: str, job_id: str) -> str:
    import redis
    from rq.job import Job

    status = Job.fetch(job_id, connection=redis.Redis.from_url(redis_url)).get_status()
    return getattr(status, "value", status)  # a JobStatus enum member


def test_report_page_and_job_monitor(app_harness, e2e_database_url, redis_server, page):
    base = app_harness.frontend_url.rstrip("/")
    owner = new_workspace_owner(e2e_database_url)
    campaign_id, run_id = queued_campaign(e2e_database_url, owner)
    move(e2e_database_url, run_id, 3, "sent")
    move(e2e_database_url, run_id, 2, "failed", error="550 5.1.1 No such mailbox")
    sign_in(page, base, owner)

    # The send page links to the report.
    page.goto(f"{base}/campaigns/{campaign_id}/send")
    page.click("#report-link", timeout=FIRST_LOAD_MS)
    expect(page).to_have_url(re.compile(rf"/campaigns/{campaign_id}/report$"))
    expect(count(page, "sent")).to_have_text("3", timeout=FIRST_LOAD_MS)
    expect(count(page, "failed")).to_have_text("2")
    expect(page.locator("#failures-table")).to_contain_text("550 5.1.1 No such mailbox")
    expect(page.locator("#review-table")).to_contain_text("ready")
    expect(page.locator("#no-placement")).to_be_visible()
    # Live: more records settle while the page is open.
    move(e2e_database_url, run_id, 4, "sent")
    move(e2e_database_url, run_id, 1, "unknown", error="connection lost after the data")
    expect(count(page, "sent")).to_have_text("7", timeout=LIVE_MS)
    expect(count(page, "unknown")).to_have_text("1", timeout=LIVE_MS)
    screenshot(page, "report-page-1")
    href = page.locator("#report-csv").get_attribute("href")
    assert href.endswith(f"/exports/campaigns/{campaign_id}/report.csv")
    # The harness serves the frontend and the backend on different hosts (localhost and
    # 127.0.0.1): send the browser's own session cookie explicitly.
    [token] = [c["value"] for c in page.context.cookies() if c["name"] == "mailer_session"]
    headers = {"Cookie": f"mailer_session={token}"}
    answer = page.request.get(href, headers=headers)
    assert answer.status == 200, answer.text()
    lines = answer.text().lstrip("\ufeff").splitlines()
    assert lines[0].startswith("email,first_name") and len(lines) == 21
    json_href = page.locator("#report-json").get_attribute("href")
    json_answer = page.request.get(json_href, headers=headers)
    assert json_answer.json()["send"]["counts"]["sent"] == 7
    assert page.request.get(href, headers={"Cookie": "mailer_session=forged"}).status == 403

    # The job monitor: the failed job, Retry, and the unknown record needing a decision.
    job_id = failed_job(redis_server)
    assert_page_live(app_harness, page, "report_page_state")  # the send still moves
    page.click("a[href='/jobs']")
    expect(page).to_have_url(re.compile(r"/jobs$"), timeout=FIRST_LOAD_MS)
    expect(page.locator("#queues-table")).to_be_visible(timeout=FIRST_LOAD_MS)
    wait_page_left(app_harness, page, "report_page_state", LOOP_STOP_S)
    row = page.locator(f"#failed-{job_id}")
    expect(row).to_contain_text("RuntimeError: the e2e job broke", timeout=LIVE_MS)
    expect(page.locator(f"#unknown-{campaign_id}")).to_be_visible()
    screenshot(page, "jobs-page-1")
    page.click(f"#retry-{job_id}")
    expect(page.locator("#jobs-notice")).to_contain_text("back on the default queue")
    expect(row).to_have_count(0, timeout=LIVE_MS)
    assert job_status(redis_server, job_id) == "queued"
    screenshot(page, "jobs-page-2-retried")
    # Another page of the app (the tab stays open): the job monitor's loop stops.
    assert_page_live(app_harness, page, "jobs_state")
    page.click(f"#unknown-{campaign_id}")
    expect(page).to_have_url(re.compile(rf"/campaigns/{campaign_id}/send$"))
    wait_page_left(app_harness, page, "jobs_state", LOOP_STOP_S)
