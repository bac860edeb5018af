"""Alert jobs: e-mail a new alert to the workspace's alert addresses.

Thin: the rules (who gets it, which sender account, never twice) are in
mailer_app.services.alerts. The job id is deterministic, so a second enqueue of the
same alert while the first is queued adds nothing.
"""

from __future__ import annotations

from dataclasses import asdict

from rq import Retry

from jobs.connection import QUEUE_DEFAULT, get_queue
from mailer_app.services import alerts

EMAIL_TIMEOUT = 2 * 60
# The sender's SMTP server could not be reached: try a little later.
EMAIL_RETRY = Retry(max=3, interval=[30, 120, 600])


def email_job_id(alert_id: int) -> str:
    return f"alert-{alert_id}-email"


def enqueue_alert_email(alert_id: int) -> None:
    get_queue(QUEUE_DEFAULT).enqueue(
        email_alert,
        alert_id,
        job_id=email_job_id(alert_id),
        job_timeout=EMAIL_TIMEOUT,
        retry=EMAIL_RETRY,
        description=f"e-mail alert {alert_id}",
    )


def email_alert(alert_id: int) -> dict:
    """The job: send alert `alert_id` by e-mail (safe to run twice)."""
    return asdict(alerts.email_alert(alert_id=alert_id))
