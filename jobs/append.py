"""Append-to-Sent jobs: copies of a run's sent messages in the sender's Sent folder.

Thin over services.sent_copies, which holds every rule. The sender queues the job
after each batch that sent messages needing a copy (`enqueue_append`); the
maintenance sweep queues it for `sent_copies.pending_runs()` so nothing is left
behind when Redis loses a job.

Job ids: `append-sent-<run>` and `append-sent-<run>-next`. `enqueue_append` does
nothing while either is waiting (queued, scheduled for a retry, deferred): it will
see every record pending by the time it runs. Otherwise it enqueues under an id that
is not running, so a running job is never overwritten, and a job that leaves more
to do (`left`) can queue its successor from inside. A Redis lock per run keeps two
jobs from appending the same messages at once.

Retries: when the mailbox cannot be used (unreachable, password refused, no Sent
folder) the records stay pending and the job raises `AppendDeferred`, so RQ tries
again after APPEND_RETRY's intervals. On its last try (APPEND_MAX_TRIES in all) the
job gives up: the run's pending sent records become failed, saying why.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict

from rq import Retry, get_current_job

from jobs.connection import QUEUE_DEFAULT, get_queue, get_redis
from mailer_app.services import sent_copies

log = logging.getLogger(__name__)

APPEND_MAX_TRIES = 5  # the first try and four retries, over about an hour
APPEND_RETRY = Retry(max=APPEND_MAX_TRIES - 1, interval=[60, 300, 900, 2400])
APPEND_TIMEOUT = 30 * 60  # 200 copies over a slow line; only stops a stuck job
LOCK_PREFIX = "mailer:append-sent-lock"
LOCK_TTL = APPEND_TIMEOUT + 60
_WAITING = ("queued", "scheduled", "deferred")
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class AppendDeferred(RuntimeError):
    """The mailbox could not be used this time; RQ retries the job later."""


def append_job_ids(run_id: int) -> tuple[str, str]:
    return f"append-sent-{run_id}", f"append-sent-{run_id}-next"


def enqueue_append(run_id: int) -> str | None:
    """Queue the run's append job unless one is already waiting; the id used, or None."""
    queue = get_queue(QUEUE_DEFAULT)
    free = None
    for job_id in append_job_ids(run_id):
        job = queue.fetch_job(job_id)
        status = job.get_status(refresh=False) if job is not None else None
        if status in _WAITING:
            return None
        if status != "started" and free is None:
            free = job_id
    if free is None:  # both running: the one holding the lock queues a successor
        return None
    queue.enqueue(
        append_sent,
        run_id,
        job_id=free,
        retry=APPEND_RETRY,
        job_timeout=APPEND_TIMEOUT,
        result_ttl=600,
        failure_ttl=7 * 24 * 3600,
        description=f"copy sent messages of campaign run {run_id} to the Sent folder",
    )
    return free


def append_sent(run_id: int) -> dict:
    """Append the run's pending copies (one IMAP session), then queue the rest."""
    redis = get_redis()
    key, token = f"{LOCK_PREFIX}:{run_id}", uuid.uuid4().hex
    if not redis.set(key, token, nx=True, ex=LOCK_TTL):
        # Another job is appending this run; it counts what is left when it is done.
        return {"run_id": run_id, "busy": True}
    job = get_current_job()
    last_try = job is not None and not job.retries_left
    try:
        outcome = sent_copies.append_pending(run_id=run_id, give_up=last_try)
    finally:
        redis.eval(_RELEASE, 1, key, token)
    log.info(
        "append-to-Sent run %s: %s appended, %s failed, %s left%s",
        run_id, outcome.appended, outcome.failed, outcome.left,
        f" ({outcome.error})" if outcome.error else "",
    )  # fmt: skip
    if outcome.error and not last_try:
        raise AppendDeferred(outcome.error)
    if outcome.left and not outcome.error:
        enqueue_append(run_id)
    return {"run_id": run_id, **asdict(outcome)}
