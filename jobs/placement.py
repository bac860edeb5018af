"""Placement jobs: send a run's seed copies, then check the seeds at each offset.

Thin wrappers over mailer_app.services.placement, which holds every rule. Job ids
are deterministic, so a duplicated trigger or a second scheduler moving the same
check enqueues one job, and the service's claims make even a duplicate harmless.
Checks run best on a `--simple` worker on the placement queue: it keeps the seed
mailboxes logged in between checks (a forking worker would log in every time).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import datetime

from rq import Retry

from jobs.connection import QUEUE_PLACEMENT, get_queue, get_scheduler
from mailer_app.services import placement

log = logging.getLogger(__name__)

SEND_TIMEOUT = 15 * 60  # a few hundred seed copies over a slow SMTP server
# A check retries inside its window (up to 2 minutes at the final one) across
# many seeds: give it room, but never let a stuck job hold a worker forever.
CHECK_TIMEOUT = 10 * 60
# SenderUnavailable: the SMTP server could not be reached; try again a little later.
SEND_RETRY = Retry(max=3, interval=[10, 30, 60])


def send_job_id(run_id: int) -> str:
    return f"placement-{run_id}-send"


def check_job_id(run_id: int, check_index: int, group: str | None = None) -> str:
    if group:
        return f"placement-{run_id}-{group}-check-{check_index}"
    return f"placement-{run_id}-check-{check_index}"


def enqueue_send(run_id: int) -> None:
    get_queue(QUEUE_PLACEMENT).enqueue(
        send_seed_copies,
        run_id,
        job_id=send_job_id(run_id),
        job_timeout=SEND_TIMEOUT,
        retry=SEND_RETRY,
        description=f"send the seed copies of placement run {run_id}",
    )


def schedule_checks(run_id: int, due: list[tuple[int, datetime]], group: str | None = None) -> None:
    """Schedule a run's checks. A `group` (the seeds one campaign batch delivered) gets
    its own job ids and checks only copies already due, so the groups of one run never
    take each other's attempts."""
    scheduler = get_scheduler(QUEUE_PLACEMENT)
    for check_index, when in due:
        scheduler.enqueue_at(
            when,
            check_seeds,
            run_id,
            check_index,
            bool(group),
            job_id=check_job_id(run_id, check_index, group),
            timeout=CHECK_TIMEOUT,
            job_description=f"check {check_index + 1} of placement run {run_id}",
        )


def send_seed_copies(run_id: int) -> dict:
    outcome = placement.send_run_copies(run_id=run_id)
    log.info("placement run %s: %s sent, %s failed", run_id, outcome.sent, outcome.failed)
    return {"sent": outcome.sent, "failed": outcome.failed}


def check_seeds(run_id: int, check_index: int, due_only: bool = False) -> dict:
    outcome = placement.check_run(run_id=run_id, check_index=check_index, due_only=due_only)
    log.info(
        "placement run %s check %s: looked %s, decided %s",
        run_id,
        check_index + 1,
        outcome.looked,
        outcome.decided,
    )
    return asdict(outcome)
