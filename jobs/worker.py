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
from collections.abc import Sequence

from redis import Redis
from rq import SimpleWorker, Worker

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
    worker = build_worker(queues, name=args.name, simple=args.simple)
    log.info("worker %s starting on %s", worker.name, ", ".join(queues))
    worker.work(
        burst=args.burst,
        logging_level=logging.getLevelName(level),
        with_scheduler=not args.without_rq_scheduler,
    )
    log.info("worker %s stopped", worker.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
