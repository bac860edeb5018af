"""`python -m jobs.scheduler`: rq-scheduler, moving due scheduled jobs onto queues.

Placement checks are scheduled with `get_scheduler().enqueue_in(...)`; this process
moves each to its queue when due (checked every second). Run one or more: an
rq-scheduler lock in Redis lets only one of them move jobs at a time.

How rq-scheduler 0.14 registers itself (what jobs.health reads):
- `rq:scheduler_instance:<name>` hash with `birth`; its TTL is renewed to
  interval + 10 s on every loop; `death` is written on a clean stop.
- `rq:scheduler_lock` (SET NX, TTL interval + 10 s) while one moves jobs.
- `rq:scheduler:scheduled_jobs` sorted set of job ids by due time.
This subclass adds `heartbeat` (unix time), `interval`, `pid` and `hostname` to
the instance hash so a killed scheduler shows as stale within seconds, not 11 s.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence

import redis
from rq_scheduler import Scheduler

from jobs.connection import QUEUE_DEFAULT, get_redis
from jobs.maintenance import MAINTENANCE_INTERVAL, enqueue_tick
from jobs.worker import wait_for_redis
from mailer_app.runtime.logsetup import setup_process_logging

log = logging.getLogger(__name__)

SCHEDULER_INTERVAL = 1.0


class AppScheduler(Scheduler):
    """rq-scheduler's Scheduler that also records when it last looked at the clock."""

    def _key_ttl(self) -> int:
        return int(self._interval) + 10  # the same TTL rq-scheduler gives its key

    def register_birth(self) -> None:
        super().register_birth()
        self._beat(pid=os.getpid(), hostname=socket.gethostname(), interval=self._interval)

    def heartbeat(self) -> None:
        super().heartbeat()
        self._beat()

    def enqueue_jobs(self):
        """Move due jobs (only the instance holding the lock gets here), and every
        MAINTENANCE_INTERVAL enqueue the maintenance tick, which lives in this process,
        not in Redis, so it survives Redis losing its data."""
        jobs = super().enqueue_jobs()
        now = time.monotonic()
        if now - getattr(self, "_tick_at", float("-inf")) >= MAINTENANCE_INTERVAL:
            self._tick_at = now
            try:
                enqueue_tick()
            except Exception as exc:  # never let a Redis blink stop the scheduler
                log.warning("could not enqueue the maintenance tick: %s", exc)
        return jobs

    def _beat(self, **fields) -> None:
        # HSET and EXPIRE together: a bare HSET on an expired key would recreate it
        # without a TTL and leave a scheduler that looks alive forever.
        with self.connection.pipeline() as pipe:
            pipe.hset(self.key, mapping={"heartbeat": time.time(), **fields})
            pipe.expire(self.key, self._key_ttl())
            pipe.execute()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.scheduler",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=SCHEDULER_INTERVAL,
        help="seconds between looks for due jobs (default 1)",
    )
    parser.add_argument("--burst", action="store_true", help="move due jobs once and exit")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_process_logging("scheduler", logging.DEBUG if args.verbose else logging.INFO)
    for _ in range(MAX_RESTARTS):
        scheduler = AppScheduler(
            queue_name=QUEUE_DEFAULT, connection=get_redis(), interval=args.interval
        )
        log.info("scheduler %s starting (every %.1f s)", scheduler.name, args.interval)
        # rq-scheduler installs its own SIGTERM/SIGINT handlers: they record its death
        # and drop its lock, then raise SystemExit, which here means a clean stop.
        try:
            with contextlib.suppress(SystemExit):
                scheduler.run(burst=args.burst)
            break
        except redis.exceptions.RedisError as exc:
            # Redis went away (or came back empty): wait for it and start again, so
            # the maintenance tick can put back what Redis forgot.
            log.warning(
                "scheduler %s lost Redis (%s); starting again once it answers", scheduler.name, exc
            )
            wait_for_redis()
    log.info("scheduler stopped")
    return 0


MAX_RESTARTS = 100_000  # one restart per Redis outage; bounded all the same


if __name__ == "__main__":
    sys.exit(main())
