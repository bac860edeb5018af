"""The job monitor (services/job_monitor.py) on a real Redis with real worker
processes: queue depths, a worker with its current job, scheduled placement checks,
a failed job listed with its (redacted) error, Retry requeues it and a worker runs
it; and the send records of unknown outcome per campaign."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rq.job import JobStatus

from jobs import connection
from jobs.connection import QUEUE_BUILD, QUEUE_DEFAULT, QUEUE_PLACEMENT, get_queue, get_redis
from jobs.placement import schedule_checks
from mailer_app.models import SenderAccount, SendRecord, SendStatus
from mailer_app.services import job_monitor
from tests.conftest import wait_until
from tests.sending_fixtures import make_campaign
from tests.smtp_script import smtp_script_fixture  # noqa: F401

FLAKY_KEY = "test:job-monitor:flaky"
LEAKED = "redis://admin:hunter2-very-secret@db.example:6379/0"


def flaky() -> str:
    """Fails the first time (with a credential in its error), works once retried."""
    if get_redis().incr(FLAKY_KEY) == 1:
        raise RuntimeError(f"could not reach {LEAKED}")
    return "done at last"


@pytest.fixture(autouse=True)
def _fresh_clients():
    connection.close_redis()
    yield
    connection.close_redis()


def test_queue_depths_count_waiting_jobs_per_queue(redis_url):
    redis = get_redis()
    for _ in range(3):
        get_queue(QUEUE_BUILD).enqueue("jobs.system.ping", 1)
    get_queue(QUEUE_DEFAULT).enqueue("jobs.system.ping", 2)
    depths = {q.name: q for q in job_monitor.queue_depths(redis)}
    assert list(depths) == list(connection.ALL_QUEUES)
    assert depths[QUEUE_BUILD].queued == 3
    assert depths[QUEUE_DEFAULT].queued == 1
    assert depths[QUEUE_PLACEMENT].queued == 0
    assert depths[QUEUE_BUILD].failed == 0


def test_a_failed_job_is_listed_redacted_and_retry_runs_it_again(redis_url, spawn):
    redis = get_redis()
    job = get_queue(QUEUE_DEFAULT).enqueue(flaky, description="a flaky job")
    worker = spawn("jobs.worker", "--burst")
    assert worker.wait(timeout=60) == 0
    assert job.get_status(refresh=True) == JobStatus.FAILED
    [failed] = job_monitor.failed_jobs(redis)
    assert (failed.job_id, failed.queue, failed.description) == (
        job.id,
        QUEUE_DEFAULT,
        "a flaky job",
    )
    assert "RuntimeError: could not reach" in failed.error
    assert "hunter2-very-secret" not in failed.error
    assert failed.summary.startswith("RuntimeError") and failed.failed_at is not None
    assert {q.name: q.failed for q in job_monitor.queue_depths(redis)}[QUEUE_DEFAULT] == 1

    assert job_monitor.retry_failed_job(redis, job.id) == QUEUE_DEFAULT
    assert job_monitor.failed_jobs(redis) == []
    assert {q.name: q.queued for q in job_monitor.queue_depths(redis)}[QUEUE_DEFAULT] == 1
    with pytest.raises(job_monitor.JobNotFailed):
        job_monitor.retry_failed_job(redis, job.id)
    worker = spawn("jobs.worker", "--burst")
    assert worker.wait(timeout=60) == 0
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert job.return_value() == "done at last"
    with pytest.raises(job_monitor.JobNotFailed):
        job_monitor.retry_failed_job(redis, "no-such-job")


def test_a_worker_is_listed_with_its_heartbeat_and_current_job(redis_url, spawn):
    redis = get_redis()
    process = spawn("jobs.worker")
    job = get_queue(QUEUE_DEFAULT).enqueue("time.sleep", 8, description="a long nap")

    def busy():
        found = [w for w in job_monitor.workers(redis) if w.current_job_id == job.id]
        return found[0] if found else None

    info = wait_until(busy, 20, "the worker to take the job")
    assert info.alive and info.heartbeat_age is not None and info.heartbeat_age < 10
    assert info.current_job == "a long nap"
    assert process.pid and info.state == "busy"
    assert {q.name: q.started for q in job_monitor.queue_depths(redis)}[QUEUE_DEFAULT] == 1


def test_scheduled_placement_checks_are_listed_with_their_run(redis_url):
    redis = get_redis()
    now = datetime.now(UTC)
    schedule_checks(41, [(0, now + timedelta(minutes=1)), (1, now + timedelta(minutes=3))])
    schedule_checks(42, [(2, now + timedelta(minutes=2))], group="g1")
    scheduled = job_monitor.scheduled_jobs(redis)
    assert [(s.run_id, s.check_number) for s in scheduled] == [(41, 1), (42, 3), (41, 2)]
    first = scheduled[0]
    assert first.queue == QUEUE_PLACEMENT
    assert abs((first.due_at - (now + timedelta(minutes=1))).total_seconds()) < 2
    assert "placement run 41" in first.description
    overview = job_monitor.overview(redis)
    assert len(overview.scheduled) == 3 and overview.failed == []


def test_unknown_send_records_are_grouped_per_campaign(session, engine, smtp_script):
    one = make_campaign(session, engine, port=smtp_script.port, count=7)
    session.get(SenderAccount, one.sender_id).name = "News 1"  # the next one is "News" too
    session.commit()
    two = make_campaign(
        session, engine, port=smtp_script.port, count=2, workspace_id=one.workspace_id
    )
    other = make_campaign(session, engine, port=smtp_script.port, count=2, name="Other")
    for made, how_many in ((one, 6), (two, 1), (other, 2)):
        records = session.query(SendRecord).filter(SendRecord.run_id == made.run_id)
        for record in records.order_by(SendRecord.id).limit(how_many):
            record.status = SendStatus.UNKNOWN
            session.add(record)
    session.commit()
    groups = job_monitor.unknown_records(session=session, workspace_id=one.workspace_id)
    assert [(g.campaign_id, g.count) for g in groups] == [
        (one.campaign_id, 6),
        (two.campaign_id, 1),
    ]
    assert len(groups[0].emails) == job_monitor.MAX_UNKNOWN_EMAILS
    assert (
        job_monitor.unknown_records(session=session, workspace_id=other.workspace_id)[0].count == 2
    )


def test_nothing_breaks_on_an_empty_redis(redis_url):
    overview = job_monitor.overview(get_redis())
    assert overview.workers == [] and overview.scheduled == [] and overview.failed == []
    assert all(q.queued == 0 for q in overview.queues)
