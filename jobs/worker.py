"""`python -m jobs.worker [QUEUE ...]`: an RQ worker on the app's queues.

SIGTERM or Ctrl+C asks for a warm shutdown (the current job finishes, then the
worker exits 0); a second signal stops it at once. Scale by running more of them.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import socket
import sys
import time
from collections.abc import Sequence

import redis
from redis import Redis
from rq import SimpleWorker, Worker
from rq.exceptions import StopRequested

from jobs.connection import ALL_QUEUES, get_redis
from mailer_app.runtime.logsetup import setup_process_logging

log = logging.getLogger(__name__)

# rq's defaults (ttl 420 s) mean an idle worker heartbeats every 405 s, too rarely
# for /health to tell a dead worker from an idle one. With these, an idle worker
# heartbeats every WORKER_TTL - 15 = 10 s and a busy one every 10 s, so a heartbeat
# older than WORKER_STALE_AFTER means the worker is gone.
WORKER_TTL = 25
JOB_MONITORING_INTERVAL = 10
WORKER_STALE_AFTER = 30.0


def worker_name() -> str:
    """host.pid.random: readable in the job monitor, unique across container restarts."""
    return f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(2)}"


def build_worker(
    queues: Sequence[str] = ALL_QUEUES,
    *,
    connection: Redis | None = None,
    name: str | None = None,
    simple: bool = False,
) -> Worker:
    """A worker listening on `queues` in priority order (see jobs.connection)."""
    cls = SimpleWorker if simple else Worker
    return cls(
        list(queues),
        name=name or worker_name(),
        connection=connection or get_redis(),
        worker_ttl=WORKER_TTL,
        job_monitoring_interval=JOB_MONITORING_INTERVAL,
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.worker", description=__doc__)
    parser.add_argument(
        "queues",
        nargs="*",
        metavar="QUEUE",
        help=f"queues to listen on, in priority order (default: {' '.join(ALL_QUEUES)})",
    )
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    parser.add_argument("--name", help="worker name (default: host.pid.random)")
    parser.add_argument(
        "--simple",
        action="store_true",
        help="run jobs in the worker process instead of a fork per job (faster, less isolated)",
    )
    parser.add_argument(
        "--without-rq-scheduler",
        action="store_true",
        help="do not run rq's own scheduler, which Retry(interval=...) and "
        "Queue.enqueue_in need (one worker holds its lock at a time)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    unknown = [q for q in args.queues if q not in ALL_QUEUES]
    if unknown:
        parser.error(f"unknown queue(s) {', '.join(unknown)}; choose from {', '.join(ALL_QUEUES)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    setup_process_logging("worker", level)
    queues = args.queues or list(ALL_QUEUES)
    preload_job_modules()
    for _ in range(MAX_RESTARTS):
        worker = build_worker(queues, name=args.name, simple=args.simple)
        log.info("worker %s starting on %s", worker.name, ", ".join(queues))
        try:
            worker.work(
                burst=args.burst,
                logging_level=logging.getLevelName(level),
                with_scheduler=not args.without_rq_scheduler,
            )
        except redis.exceptions.ConnectionError as exc:  # raised while tearing down
            log.warning("worker %s lost Redis: %s", worker.name, exc)
        except StopRequested:  # a stop signal that arrived during teardown
            break
        # RQ's work loop quits on any error (Redis gone, restarted, wiped) as it does on
        # a stop request; only the latter (or a finished burst) ends this process.
        # (`_shutdown_requested_date` is set by RQ's SIGTERM/SIGINT handler, busy or idle.)
        if args.burst or worker._shutdown_requested_date is not None or worker._stop_requested:
            break
        log.warning(
            "worker %s stopped unexpectedly; starting again once Redis answers", worker.name
        )
        wait_for_redis()
    log.info("worker stopped")
    return 0


def preload_job_modules() -> None:
    """Import the job modules (and the app they use) once, before any job forks: a
    forking worker's job then starts without importing the app again (~1.5 s per job).
    Importing opens no connection (clients are made on first use)."""
    import jobs.alerts
    import jobs.append
    import jobs.bounces
    import jobs.build
    import jobs.contacts
    import jobs.health
    import jobs.maintenance
    import jobs.placement
    import jobs.send
    import jobs.system  # noqa: F401


MAX_RESTARTS = 100_000  # a worker restarts after each Redis outage; bounded all the same
REDIS_WAIT_CAP = 10.0


def wait_for_redis(max_seconds: float = 3600.0) -> bool:
    """Wait (backing off up to REDIS_WAIT_CAP seconds) until Redis answers a PING."""
    delay, deadline = 0.5, time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        try:
            if get_redis().ping():
                return True
        except redis.exceptions.RedisError:
            pass
        time.sleep(delay)
        delay = min(REDIS_WAIT_CAP, delay * 2)
    return False


if __name__ == "__main__":
    sys.exit(main())
