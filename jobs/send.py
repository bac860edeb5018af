"""Send jobs: the lanes of a campaign run (services.sending holds every rule).

A run is sent by `SEND_LANES` jobs at once ("lanes"), each claiming its own batches
from the database, so two workers share a campaign. A lane is marked in Redis by a
short-lived key its job renews after every batch; `wake_run` enqueues a job only for
lanes without a key. Redis only wakes workers: if the keys are lost (Redis wiped, a
worker killed), the maintenance tick (jobs/maintenance.py) finds due queued records
with no lane covering their run and wakes it again. A second job on the same lane
is harmless: claims in the database never give one record to two jobs.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid

from rq import get_current_job

from jobs.connection import QUEUE_SEND, get_queue, get_redis
from mailer_app.mail.throttle import Throttle
from mailer_app.services import sending
from mailer_app.settings import get_settings

log = logging.getLogger(__name__)

LANE_TTL = 30  # seconds a lane key lives without a renewal (renewed every few seconds)
# A job sends for SEND_JOB_SECONDS and then hands over; this only stops a stuck one.
SEND_JOB_TIMEOUT = 30 * 60
LANE_PREFIX = "mailer:send-lane"


def lane_key(run_id: int, lane: int) -> str:
    return f"{LANE_PREFIX}:{run_id}:{lane}"


def covered_run_ids() -> set[int]:
    """Runs with at least one live lane key."""
    runs: set[int] = set()
    for key in get_redis().scan_iter(match=f"{LANE_PREFIX}:*", count=500):
        parts = key.decode().split(":")
        if len(parts) == 4 and parts[2].isdigit():
            runs.add(int(parts[2]))
    return runs


def wake_run(run_id: int, *, lanes: int | None = None) -> int:
    """Enqueue a send job for each lane of the run that has none; how many were queued."""
    count = lanes or get_settings().send_lanes
    redis = get_redis()
    queued = 0
    for lane in range(count):
        if redis.set(lane_key(run_id, lane), "queued", nx=True, ex=LANE_TTL):
            _enqueue(run_id, lane)
            queued += 1
    return queued


def _enqueue(run_id: int, lane: int) -> None:
    get_queue(QUEUE_SEND).enqueue(
        send_lane,
        run_id,
        lane,
        job_id=f"campaign-send-{run_id}-{lane}-{uuid.uuid4().hex[:8]}",
        job_timeout=SEND_JOB_TIMEOUT,
        description=f"send campaign run {run_id} (lane {lane + 1})",
        result_ttl=600,
        failure_ttl=7 * 24 * 3600,
    )


def worker_id() -> str:
    """The RQ worker's name (one per worker process, not per forked job), else host.pid."""
    job = get_current_job()
    if job is not None and job.worker_name:
        return job.worker_name
    return f"{socket.gethostname()}.{os.getpid()}"


def send_lane(run_id: int, lane: int) -> dict:
    redis = get_redis()
    key = lane_key(run_id, lane)
    me = worker_id()

    def renew() -> None:
        redis.set(key, me, ex=LANE_TTL)

    try:
        renew()
    except Exception as exc:  # Redis blinked: the send goes on, the tick re-covers it
        log.warning("send lane %s/%s: could not mark the lane: %s", run_id, lane, exc)
    try:
        outcome = sending.send_run(
            run_id=run_id, worker=me, throttle=Throttle(redis), heartbeat=renew
        )
    finally:
        try:
            redis.delete(key)
        except Exception as exc:
            log.warning("send lane %s/%s: could not clear the lane: %s", run_id, lane, exc)
    log.info(
        "send run %s lane %s: %s sent, %s failed, %s retried, %s unknown, %s given back; %s",
        run_id, lane, outcome.sent, outcome.failed, outcome.retried, outcome.unknown,
        outcome.released, outcome.stopped,
    )  # fmt: skip
    if outcome.more:
        wake_run(run_id, lanes=lane + 1)  # this lane again (lower ones are skipped if live)
    return {
        "sent": outcome.sent, "failed": outcome.failed, "retried": outcome.retried,
        "unknown": outcome.unknown, "released": outcome.released, "stopped": outcome.stopped,
    }  # fmt: skip
