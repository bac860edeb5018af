"""What the background machinery is doing: the job monitor page's data.

Read from Redis (RQ and rq-scheduler keep everything there): each app queue with
its depth and registries, every worker with its heartbeat and current job
(jobs.health.describe_workers), the scheduled jobs (placement checks, with their
run), and failed jobs with their error, which a person may send back to their
queue (`retry_failed_job`: rq's FailedJobRegistry.requeue). From the database: the
send records of unknown outcome, per campaign, which wait for a person's decision
on each campaign's send page.

Error texts and job descriptions pass through logs.redact (no password or key
reaches the page). Redis is system-wide, so the page is for owners and admins
(`MONITOR_ROLES`); the unknown records are the workspace's own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq_scheduler import Scheduler
from sqlmodel import Session

from jobs.connection import ALL_QUEUES, get_queue
from jobs.health import describe_schedulers, describe_workers
from mailer_app.logs import redact
from mailer_app.models import Campaign, CampaignRun, Role, SendRecord, SendStatus
from mailer_app.services import NotFoundError

MONITOR_ROLES = (Role.ADMIN,)
MAX_FAILED = 50  # per queue, newest first
MAX_SCHEDULED = 200
MAX_UNKNOWN_EMAILS = 5
ERROR_CHARS = 2000  # the end of a traceback says what went wrong
_CHECK_ID = re.compile(r"^placement-(\d+)(?:-(g[\w-]+?))?-check-(\d+)$")


@dataclass(frozen=True)
class QueueInfo:
    name: str
    queued: int  # waiting for a worker
    started: int  # being run now
    failed: int
    scheduled: int  # rq's own delayed jobs (retries with an interval)
    deferred: int  # waiting for another job


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    state: str
    queues: list[str]
    alive: bool
    heartbeat_age: float | None
    current_job_id: str | None
    current_job: str  # its description (redacted), "" when idle
    successful_jobs: int
    failed_jobs: int


@dataclass(frozen=True)
class ScheduledJob:
    job_id: str
    due_at: datetime
    queue: str
    description: str
    run_id: int | None = None  # placement run of a check
    check_number: int | None = None  # 1-based


@dataclass(frozen=True)
class FailedJob:
    job_id: str
    queue: str
    description: str
    failed_at: datetime | None
    error: str  # the end of the traceback, redacted
    summary: str  # its last line


@dataclass(frozen=True)
class UnknownGroup:
    campaign_id: int
    campaign_name: str
    count: int
    emails: list[str] = field(default_factory=list)  # the first few


@dataclass(frozen=True)
class JobOverview:
    queues: list[QueueInfo]
    workers: list[WorkerInfo]
    schedulers_alive: int
    scheduled: list[ScheduledJob]
    failed: list[FailedJob]


class JobNotFailed(NotFoundError):
    """The job is not (or no longer) among the failed ones."""


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _description(job: Job | None) -> str:
    if job is None:
        return ""
    return redact(job.description or job.func_name or job.id)


# --- queues and workers -----------------------------------------------------------------------


def queue_depths(redis: Redis) -> list[QueueInfo]:
    """Every app queue, in priority order, with how many jobs wait, run and failed."""
    result = []
    for name in ALL_QUEUES:
        queue = get_queue(name, connection=redis)
        result.append(
            QueueInfo(
                name=name,
                queued=queue.count,
                started=StartedJobRegistry(queue=queue).count,
                failed=FailedJobRegistry(queue=queue).count,
                scheduled=ScheduledJobRegistry(queue=queue).count,
                deferred=DeferredJobRegistry(queue=queue).count,
            )
        )
    return result


def workers(redis: Redis) -> list[WorkerInfo]:
    """Every registered worker with its heartbeat age and what it runs now."""
    result = []
    for info in describe_workers(redis):
        current = info["current_job"]
        job = None
        if current:
            try:
                job = Job.fetch(current, connection=redis)
            except NoSuchJobError:
                job = None
        result.append(
            WorkerInfo(
                name=info["name"],
                state=str(info["state"]),
                queues=list(info["queues"]),
                alive=bool(info["alive"]),
                heartbeat_age=info["heartbeat_age"],
                current_job_id=current,
                current_job=_description(job) or (current or ""),
                successful_jobs=info["successful_jobs"] or 0,
                failed_jobs=info["failed_jobs"] or 0,
            )  # fmt: skip
        )
    return result


# --- scheduled ----------------------------------------------------------------------------------


def scheduled_jobs(redis: Redis, *, limit: int = MAX_SCHEDULED) -> list[ScheduledJob]:
    """rq-scheduler's jobs by due time (`rq:scheduler:scheduled_jobs`), soonest first;
    placement checks name their run and which check they are."""
    scheduler = Scheduler(connection=redis)
    result = []
    for job, due in scheduler.get_jobs(with_times=True, offset=0, length=limit):
        match = _CHECK_ID.match(job.id)
        result.append(
            ScheduledJob(
                job_id=job.id,
                due_at=_aware(due),
                queue=job.origin or "",
                description=_description(job),
                run_id=int(match.group(1)) if match else None,
                check_number=int(match.group(3)) + 1 if match else None,
            )  # fmt: skip
        )
    return result


# --- failed -------------------------------------------------------------------------------------


def _error_of(job: Job) -> str:
    text = ""
    try:
        result = job.latest_result()
        text = (result.exc_string if result is not None else "") or ""
    except Exception:  # an old or half-written result: fall back to the job's own field
        text = ""
    text = text or job.exc_info or ""
    return redact(text.strip()[-ERROR_CHARS:])


def failed_jobs(redis: Redis, *, per_queue: int = MAX_FAILED) -> list[FailedJob]:
    """The failed jobs of every app queue (newest first), with their redacted error."""
    result = []
    for name in ALL_QUEUES:
        registry = FailedJobRegistry(queue=get_queue(name, connection=redis))
        ids = registry.get_job_ids(0, per_queue - 1, desc=True)
        for job in Job.fetch_many(ids, connection=redis):
            if job is None:
                continue
            error = _error_of(job)
            lines = [line for line in error.splitlines() if line.strip()]
            result.append(
                FailedJob(
                    job_id=job.id,
                    queue=name,
                    description=_description(job),
                    failed_at=_aware(job.ended_at),
                    error=error,
                    summary=lines[-1].strip() if lines else "No error was recorded.",
                )  # fmt: skip
            )
    epoch = datetime.min.replace(tzinfo=UTC)
    return sorted(result, key=lambda j: j.failed_at or epoch, reverse=True)


def retry_failed_job(redis: Redis, job_id: str) -> str:
    """Put a failed job back at the end of its queue; returns the queue's name.
    JobNotFailed when it is not failed (retried already, expired, or never was)."""
    for name in ALL_QUEUES:
        registry = FailedJobRegistry(queue=get_queue(name, connection=redis))
        if job_id in registry:
            registry.requeue(job_id)
            return name
    raise JobNotFailed("That job is no longer among the failed ones (retried already?).")


def overview(redis: Redis) -> JobOverview:
    """Everything the job monitor shows from Redis."""
    return JobOverview(
        queues=queue_depths(redis),
        workers=workers(redis),
        schedulers_alive=sum(1 for s in describe_schedulers(redis) if s["alive"]),
        scheduled=scheduled_jobs(redis),
        failed=failed_jobs(redis),
    )


# --- send records needing a decision ------------------------------------------------------------


def unknown_records(*, session: Session, workspace_id: int) -> list[UnknownGroup]:
    """Per campaign of the workspace, its send records of unknown outcome (the
    campaign's send page is where a person decides)."""
    sr, run, campaign = SendRecord.__table__.c, CampaignRun.__table__.c, Campaign.__table__.c
    rows = session.execute(
        sa.select(campaign.id, campaign.name, sr.email)
        .select_from(
            sa.join(SendRecord.__table__, CampaignRun.__table__, run.id == sr.run_id).join(
                Campaign.__table__, campaign.id == run.campaign_id
            )
        )
        .where(sr.workspace_id == workspace_id, sr.status == SendStatus.UNKNOWN)
        .order_by(campaign.id, sr.id)
    ).all()
    groups: dict[int, dict] = {}
    for campaign_id, name, email in rows:
        group = groups.setdefault(campaign_id, {"name": name or "(untitled)", "emails": []})
        group["emails"].append(email)
    return [
        UnknownGroup(
            campaign_id=cid,
            campaign_name=g["name"],
            count=len(g["emails"]),
            emails=g["emails"][:MAX_UNKNOWN_EMAILS],
        )  # fmt: skip
        for cid, g in groups.items()
    ]
