"""Prometheus metrics, read from the database and Redis at scrape time.

One custom collector on its own registry (never the process-global one), so what a
scrape shows is the state of record, the same for every web worker, and nothing
needs counting in memory by the workers: the database already keeps every send
record, attempt, check and alert.

Series (all across workspaces; the endpoint is for operators):
- mailer_messages_sent_total{sender_account, sender_email}    send records sent
- mailer_messages_failed_total{sender_account, sender_email}  send records failed
- mailer_send_latency_seconds (histogram)                     SMTP attempt durations
- mailer_queue_depth{queue}                                   RQ jobs waiting per queue
- mailer_send_records_queued                                  the database queue of record
- mailer_placement_checks_total{outcome}                      looks into seed mailboxes
- mailer_alerts{kind, status}                                 alert events
- mailer_metrics_source_up{source}                            1 if database/redis answered

A source that fails is reported as down and its series are left out: a scrape
never fails because Redis does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from mailer_app.models import (
    AlertEvent,
    CampaignRun,
    CampaignVersion,
    PlacementCheck,
    SendAttempt,
    SenderAccount,
    SendRecord,
    SendStatus,
)

log = logging.getLogger(__name__)

# Seconds: an SMTP transaction takes tens of milliseconds on a LAN, seconds on a
# slow or throttling server; 30 s is past most client timeouts.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class MailerCollector(Collector):
    """Reads the database (and Redis's queue lengths) each time it is collected."""

    def __init__(
        self,
        engine: Callable[[], Engine],
        queue_depths: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        self._engine = engine
        self._queue_depths = queue_depths or rq_queue_depths

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "mailer_metrics_source_up",
            "Whether a source of these metrics answered this scrape (1) or not (0).",
            labels=["source"],
        )
        try:
            with Session(self._engine()) as session:
                found = list(_database_metrics(session))
            up.add_metric(["database"], 1)
        except Exception as exc:  # a scrape must still answer: report the source down
            log.warning("metrics: database unavailable (%s: %s)", type(exc).__name__, exc)
            found = []
            up.add_metric(["database"], 0)
        yield from found
        try:
            depths = self._queue_depths()
            depth = GaugeMetricFamily(
                "mailer_queue_depth", "Jobs waiting in each RQ queue.", labels=["queue"]
            )
            for name, count in sorted(depths.items()):
                depth.add_metric([name], count)
            yield depth
            up.add_metric(["redis"], 1)
        except Exception as exc:
            log.warning("metrics: Redis unavailable (%s: %s)", type(exc).__name__, exc)
            up.add_metric(["redis"], 0)
        yield up


def rq_queue_depths() -> dict[str, int]:
    """Jobs waiting in each of the app's RQ queues."""
    from jobs.connection import ALL_QUEUES, get_queue

    return {name: get_queue(name).count for name in ALL_QUEUES}


def _database_metrics(session: Session) -> Iterator[Metric]:
    labels = ["sender_account", "sender_email"]
    sent = CounterMetricFamily(
        "mailer_messages_sent", "Campaign messages the SMTP server accepted.", labels=labels
    )
    failed = CounterMetricFamily(
        "mailer_messages_failed", "Campaign messages that failed for good.", labels=labels
    )
    rows = session.exec(
        select(SenderAccount.id, SenderAccount.from_email, SendRecord.status, sa.func.count())
        .select_from(SendRecord)
        .join(CampaignRun, CampaignRun.id == SendRecord.run_id)
        .join(CampaignVersion, CampaignVersion.id == CampaignRun.version_id)
        .join(SenderAccount, SenderAccount.id == CampaignVersion.sender_account_id)
        .where(SendRecord.status.in_([SendStatus.SENT, SendStatus.FAILED]))
        .group_by(SenderAccount.id, SenderAccount.from_email, SendRecord.status)
        .order_by(SenderAccount.id)
    )
    for sender_id, email, status, count in rows:
        family = sent if status == SendStatus.SENT else failed
        family.add_metric([str(sender_id), email], count)
    yield sent
    yield failed
    yield _latency(session)

    queued = session.exec(
        select(sa.func.count())
        .select_from(SendRecord)
        .where(SendRecord.status == SendStatus.QUEUED)
    ).one()
    yield GaugeMetricFamily(
        "mailer_send_records_queued",
        "Send records waiting to be sent (the database is the queue of record).",
        value=queued,
    )

    checks = CounterMetricFamily(
        "mailer_placement_checks",
        "Looks into seed mailboxes, by what each found (a placement, not_found, error).",
        labels=["outcome"],
    )
    for outcome, count in session.exec(
        select(PlacementCheck.outcome, sa.func.count())
        .group_by(PlacementCheck.outcome)
        .order_by(PlacementCheck.outcome)
    ):
        checks.add_metric([outcome], count)
    yield checks

    alerts = GaugeMetricFamily(
        "mailer_alerts", "Alert events by kind and status (new, acknowledged).",
        labels=["kind", "status"],
    )  # fmt: skip
    for kind, status, count in session.exec(
        select(AlertEvent.kind, AlertEvent.status, sa.func.count())
        .group_by(AlertEvent.kind, AlertEvent.status)
        .order_by(AlertEvent.kind, AlertEvent.status)
    ):
        alerts.add_metric([kind, status], count)
    yield alerts


def _latency(session: Session) -> HistogramMetricFamily:
    """SMTP attempt durations as a cumulative histogram, counted in one SQL pass."""
    limits_ms = [int(b * 1000) for b in LATENCY_BUCKETS]
    columns = [
        sa.func.coalesce(sa.func.sum(sa.case((SendAttempt.duration_ms <= ms, 1), else_=0)), 0)
        for ms in limits_ms
    ]
    row = session.exec(
        select(
            sa.func.count(), sa.func.coalesce(sa.func.sum(SendAttempt.duration_ms), 0), *columns
        ).select_from(SendAttempt)
    ).one()
    total, sum_ms, *cumulative = row
    pairs = zip(LATENCY_BUCKETS, cumulative, strict=True)
    buckets = [(floatToGoString(b), int(n)) for b, n in pairs]
    buckets.append(("+Inf", int(total)))
    return HistogramMetricFamily(
        "mailer_send_latency_seconds",
        "Duration of each SMTP submission attempt of a campaign message.",
        buckets=buckets,
        sum_value=int(sum_ms) / 1000,
    )


def render_metrics(
    engine: Callable[[], Engine] | None = None,
    queue_depths: Callable[[], dict[str, int]] | None = None,
) -> bytes:
    """The exposition text of every series, read now."""
    if engine is None:
        from mailer_app import db

        engine = db.get_engine
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MailerCollector(engine, queue_depths))
    return generate_latest(registry)
