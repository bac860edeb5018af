"""Bounce polling jobs: read sender accounts' bounce mailboxes (the rules live in
mailer_app.services.bounce_processing).

- `enqueue_due` is for the maintenance tick: one poll job per sender account whose
  mailbox is due, so slow mail servers never hold the tick up. A poll that ended less
  than DUE_EVERY ago is not queued again, so a mailbox that cannot be read (its polls
  advance nothing) is retried every DUE_EVERY, not at every tick.
- `enqueue_poll` queues one account's poll (a "check bounces now" button) under a job
  id derived from the account, so a poll already waiting or running is not queued twice.
- `poll_due` polls every due account here, one after another (a CLI or a test).
Polling twice is harmless anyway: a report is never counted twice.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import UTC, timedelta

from rq.job import JobStatus

from jobs.connection import QUEUE_DEFAULT, get_queue
from mailer_app.db import session_scope
from mailer_app.models import utcnow
from mailer_app.services import bounce_processing

log = logging.getLogger(__name__)

# One poll reads at most POLL_LIMIT messages with IMAP_TIMEOUT on every read; never let
# a stuck server hold a worker forever.
POLL_TIMEOUT = 10 * 60
DUE_EVERY = bounce_processing.DUE_EVERY
# Ended jobs are kept at least DUE_EVERY: enqueue_due reads when the last poll ended.
RESULT_TTL = FAILURE_TTL = int(DUE_EVERY.total_seconds()) * 2
_WAITING = (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED)


def poll_job_id(sender_account_id: int) -> str:
    return f"bounce-poll-{sender_account_id}"


def enqueue_poll(sender_account_id: int, *, not_within: timedelta | None = None) -> bool:
    """Queue a poll of one sender account's bounce mailbox. False when one is already
    waiting or running, or (with `not_within`) when the last one ended that recently."""
    queue = get_queue(QUEUE_DEFAULT)
    job_id = poll_job_id(sender_account_id)
    existing = queue.fetch_job(job_id)
    if existing is not None:
        if existing.get_status(refresh=False) in _WAITING:
            return False
        ended = existing.ended_at
        if not_within is not None and ended is not None:
            ended = ended if ended.tzinfo else ended.replace(tzinfo=UTC)
            if utcnow() - ended < not_within:
                return False
    queue.enqueue(
        poll_bounces,
        sender_account_id,
        job_id=job_id,
        job_timeout=POLL_TIMEOUT,
        result_ttl=RESULT_TTL,
        failure_ttl=FAILURE_TTL,
        description=f"read the bounce mailbox of sender account {sender_account_id}",
    )
    return True


def enqueue_due(every: timedelta = DUE_EVERY) -> list[int]:
    """Queue a poll for every sender account due one; returns the accounts queued."""
    with session_scope() as session:
        due = bounce_processing.due_sender_ids(session=session, every=every)
    return [sender_id for sender_id in due if enqueue_poll(sender_id, not_within=every)]


def poll_bounces(sender_account_id: int) -> dict:
    try:
        poll = bounce_processing.poll_sender(sender_account_id=sender_account_id)
    except bounce_processing.SenderNotFound as exc:  # deleted since the job was queued
        poll = bounce_processing.BouncePoll(sender_account_id, error=str(exc))
    _log(poll)
    return asdict(poll)


def poll_due() -> list[dict]:
    polls = bounce_processing.poll_due()
    for poll in polls:
        _log(poll)
    return [asdict(poll) for poll in polls]


def _log(poll: bounce_processing.BouncePoll) -> None:
    if poll.error:
        log.warning("bounces of sender account %s: %s", poll.sender_account_id, poll.error)
        return
    log.info(
        "bounces of sender account %s: read %s, hard %s, soft %s, unattributed %s, "
        "ignored %s, suppressed %s%s",
        poll.sender_account_id,
        poll.read,
        poll.hard,
        poll.soft,
        poll.unattributed,
        poll.ignored,
        len(poll.suppressed),
        ", more to read" if poll.more else "",
    )
