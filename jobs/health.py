"""Are workers and the scheduler alive? Read from Redis, for /health and the job monitor.

Each function takes the Redis client to use (short timeouts are the caller's
choice) and only reads, except `ping_worker`, which runs a real job.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from datetime import UTC, datetime

from redis import Redis
from rq import Worker
from rq.job import Job, JobStatus

from jobs.connection import QUEUE_DEFAULT, get_queue
from jobs.scheduler import SCHEDULER_INTERVAL
from jobs.worker import WORKER_STALE_AFTER

SCHEDULER_INSTANCE_PREFIX = "rq:scheduler_instance:"
# A scheduler beats every SCHEDULER_INTERVAL; allow a slow loop (many due jobs).
SCHEDULER_STALE_AFTER = max(10 * SCHEDULER_INTERVAL, 5.0)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def describe_workers(redis: Redis, *, max_age: float = WORKER_STALE_AFTER) -> list[dict]:
    """Every registered RQ worker, with `alive` false when its heartbeat is stale.

    Keys: name, state, queues, pid, hostname, last_heartbeat (ISO 8601 UTC),
    heartbeat_age (seconds), current_job (id or None), successful_jobs,
    failed_jobs, alive.
    """
    # Worker() raises the pool's socket_timeout to its blocking-dequeue time (over
    # 400 s) on the connection it is given, even for a read-only lookup; put the
    # caller's timeout back so a health check stays short.
    kwargs = redis.connection_pool.connection_kwargs
    saved_timeout = kwargs.get("socket_timeout")
    try:
        workers = Worker.all(connection=redis)
        now = datetime.now(UTC)
        result = []
        for worker in workers:
            beat = worker.last_heartbeat
            age = (now - beat).total_seconds() if beat else None
            result.append(
                {
                    "name": worker.name,
                    "state": worker.get_state(),
                    "queues": worker.queue_names(),
                    "pid": worker.pid,
                    "hostname": worker.hostname,
                    "last_heartbeat": beat.isoformat() if beat else None,
                    "heartbeat_age": round(age, 1) if age is not None else None,
                    "current_job": worker.get_current_job_id(),
                    "successful_jobs": worker.successful_job_count,
                    "failed_jobs": worker.failed_job_count,
                    "alive": age is not None and age <= max_age,
                }
            )
        return sorted(result, key=lambda w: w["name"])
    finally:
        kwargs["socket_timeout"] = saved_timeout


def workers_alive(redis: Redis, *, max_age: float = WORKER_STALE_AFTER) -> list[dict]:
    """The workers whose heartbeat is fresh (see describe_workers for the keys)."""
    return [w for w in describe_workers(redis, max_age=max_age) if w["alive"]]


def describe_schedulers(redis: Redis, *, max_age: float = SCHEDULER_STALE_AFTER) -> list[dict]:
    """Every rq-scheduler instance registered in Redis, with `alive`.

    Alive: the instance hash exists (its TTL lapses 10 s after the last loop), has
    no `death` field, and, when it records one (jobs.scheduler does), a heartbeat
    younger than `max_age`.
    """
    result = []
    for key in redis.scan_iter(match=SCHEDULER_INSTANCE_PREFIX + "*", count=100):
        data = {_text(k): _text(v) for k, v in redis.hgetall(key).items()}
        if not data:
            continue  # expired between SCAN and HGETALL
        beat = float(data["heartbeat"]) if "heartbeat" in data else None
        age = time.time() - beat if beat is not None else None
        dead = "death" in data or (age is not None and age > max_age)
        result.append(
            {
                "name": _text(key)[len(SCHEDULER_INSTANCE_PREFIX) :],
                "pid": int(data["pid"]) if data.get("pid") else None,
                "hostname": data.get("hostname"),
                "heartbeat_age": round(age, 1) if age is not None else None,
                "alive": not dead,
            }
        )
    return sorted(result, key=lambda s: s["name"])


def scheduler_alive(redis: Redis, *, max_age: float = SCHEDULER_STALE_AFTER) -> bool:
    """True when at least one rq-scheduler instance is running."""
    return any(s["alive"] for s in describe_schedulers(redis, max_age=max_age))


def ping_worker(redis: Redis, *, queue: str = QUEUE_DEFAULT, timeout: float = 5.0) -> float | None:
    """Run jobs.system.ping through a worker; the round trip in seconds, or None.

    The deep health check: proves a worker takes jobs from `queue`, not only that
    one is registered. The ping goes to the front of the queue and is removed if
    no worker ran it in time, so failed checks leave nothing behind.
    """
    token = secrets.token_hex(8)
    started = time.monotonic()
    job = get_queue(queue, connection=redis).enqueue(
        "jobs.system.ping",
        token,
        at_front=True,
        ttl=max(int(timeout), 1),
        result_ttl=60,
        failure_ttl=60,
        description="health ping",
    )
    deadline = started + timeout
    try:
        while time.monotonic() < deadline:
            status = job.get_status(refresh=True)
            if status == JobStatus.FINISHED:
                return round(time.monotonic() - started, 3) if job.return_value() == token else None
            if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                return None
            time.sleep(0.05)
        return None
    finally:
        _discard_if_queued(job)


def _discard_if_queued(job: Job) -> None:
    # A ping no worker took must not run later; one being run is left to finish
    # (its short result_ttl cleans it up).
    with contextlib.suppress(Exception):  # gone already, or Redis went away
        if job.get_status(refresh=True) in (JobStatus.QUEUED, None):
            job.delete(remove_from_queue=True)
