"""The maintenance tick: what keeps sending honest when processes or Redis are lost.

The scheduler process (jobs/scheduler.py) enqueues `tick` every MAINTENANCE_INTERVAL
seconds (one job id, so ticks never pile up). A tick:
- reconciles send records (services.send_records.reconcile): records a dead worker
  handed to a server become `unknown`, records it only claimed go back to the queue;
- wakes every run that has due queued records and no live lane (jobs/send.py);
- queues the append-to-Sent job of runs with sent messages still to append, and a
  bounce poll for sender accounts that are due one (when those modules exist);
- folds the hours of placement results that changed into the dashboard's hourly
  rollup (services/placement_rollup.py; readers are exact without it, only slower).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from jobs.bounces import enqueue_due
from jobs.connection import QUEUE_DEFAULT, get_queue
from jobs.send import covered_run_ids, wake_run
from mailer_app.db import session_scope
from mailer_app.services import send_records
from mailer_app.settings import get_settings

log = logging.getLogger(__name__)

MAINTENANCE_INTERVAL = 10.0
TICK_JOB_ID = "maintenance-tick"
# 5,000 marks a round: a tick folds up to 200,000 result changes, the rest next tick.
ROLLUP_MAX_ROUNDS = 40


def enqueue_tick() -> None:
    queue = get_queue(QUEUE_DEFAULT)
    job = queue.fetch_job(TICK_JOB_ID)
    if job is not None and job.get_status(refresh=False) in ("queued", "started", "scheduled"):
        return
    queue.enqueue(tick, job_id=TICK_JOB_ID, job_timeout=120, result_ttl=60, failure_ttl=3600,
                  description="maintenance: reconcile sends, wake runs")  # fmt: skip


def tick() -> dict:
    settings = get_settings()
    covered = covered_run_ids()
    with session_scope() as session:
        result = send_records.reconcile(
            session=session,
            stuck_after=timedelta(seconds=settings.send_unknown_after_seconds),
            requeue_after=timedelta(seconds=settings.send_claim_lease_seconds),
            covered_run_ids=covered,
        )
    for run_id in result.wake_run_ids:
        wake_run(run_id)
    bounce_polls = _quietly("bounce polls", enqueue_due)
    appends = _quietly("append-to-Sent", _enqueue_appends)
    folded = _quietly("placement rollup", _fold_rollup)
    if result.unknown_ids or result.requeued_ids or result.wake_run_ids:
        log.info(
            "maintenance: %s unknown, %s queued again, woke runs %s",
            len(result.unknown_ids), len(result.requeued_ids), result.wake_run_ids,
        )  # fmt: skip
    return {
        "unknown": len(result.unknown_ids),
        "requeued": len(result.requeued_ids),
        "woken": result.wake_run_ids,
        "bounce_polls": bounce_polls or [],
        "appends": appends or [],
        "rollup_marks_folded": folded or 0,
    }


def _enqueue_appends() -> list[int]:
    from jobs.append import enqueue_append
    from mailer_app.services.sent_copies import pending_runs

    runs = pending_runs()
    for run_id in runs:
        enqueue_append(run_id)
    return runs


def _fold_rollup() -> int:
    from mailer_app.services.placement_rollup import fold_all

    return fold_all(session_factory=session_scope, max_rounds=ROLLUP_MAX_ROUNDS)


def _quietly(what: str, action):
    """One part of the tick failing must not stop the others (or the next tick)."""
    try:
        return action()
    except Exception as exc:
        log.warning("maintenance: %s failed: %s", what, exc)
        return None
