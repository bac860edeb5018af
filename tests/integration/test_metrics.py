"""The Prometheus metrics, on SQLite and PostgreSQL: the service's exposition parsed
back with prometheus_client's own parser (every named series, with values known from
the rows made here), queue depths from a real Redis, and who may read GET /metrics.
"""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import select
from starlette.applications import Starlette
from starlette.routing import Route

import mailer_app.models  # noqa: F401  (every table in SQLModel.metadata)
from mailer_app import routes
from mailer_app.api import metrics as metrics_api
from mailer_app.models import (
    AlertKind,
    PlacementCheck,
    PlacementResult,
    SendAttempt,
    SendRecord,
    Source,
    utcnow,
)
from mailer_app.services import alerts, metrics
from tests.integration.test_alerts import make_run
from tests.sending_fixtures import make_campaign
from tests.smtp_fixtures import smtp_auth_server_fixture, smtp_server_fixture  # noqa: F401


def samples(text: bytes) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest.fixture
def populated(session, engine, smtp_server, monkeypatch) -> dict:
    """3 sent and 1 failed messages with attempts of known durations, placement checks
    by outcome, and two alerts (one acknowledged)."""
    monkeypatch.setattr(alerts, "queue_alert_email", lambda alert_id: None)
    made = make_campaign(session, engine, port=smtp_server.port, count=5)
    records = session.exec(
        select(SendRecord).where(SendRecord.run_id == made.run_id).order_by(SendRecord.id)
    ).all()
    statuses = ["sent", "sent", "sent", "failed", "queued"]
    durations_ms = [40, 200, 1200, 7000]
    for record, status in zip(records, statuses, strict=True):
        record.status = status
        session.add(record)
    for record, ms in zip(records, durations_ms, strict=False):
        session.add(
            SendAttempt(
                workspace_id=made.workspace_id,
                send_record_id=record.id,
                started_at=utcnow(),
                duration_ms=ms,
                outcome="sent",
                source=Source.JOB,
            )  # fmt: skip
        )
    session.commit()
    run_id = make_run(session, made.workspace_id, {"gmail": ["inbox", "spam", "missing"]})
    results = session.exec(select(PlacementResult).where(PlacementResult.run_id == run_id)).all()
    for attempt, (result, outcome) in enumerate(
        zip(results, ["inbox", "not_found", "not_found"], strict=True), start=1
    ):
        session.add(
            PlacementCheck(
                workspace_id=made.workspace_id,
                result_id=result.id,
                attempt=attempt,
                outcome=outcome,
                source=Source.JOB,
            )  # fmt: skip
        )
    for key in ("a", "b"):
        alerts.raise_alert(
            session=session, workspace_id=made.workspace_id, kind=AlertKind.LOW_INBOX_RATE,
            message="low", dedupe_key=key,
        )  # fmt: skip
    session.commit()
    session.exec(sa.update(mailer_app.models.AlertEvent).where(
        mailer_app.models.AlertEvent.dedupe_key == "a").values(status="acknowledged"))  # fmt: skip
    session.commit()
    return {"sender": str(made.sender_id)}


def test_every_named_series_with_known_values(populated, engine):
    text = metrics.render_metrics(lambda: engine, lambda: {"send": 4, "placement": 0})
    got = samples(text)
    sender = (("sender_account", populated["sender"]), ("sender_email", "news@example.com"))
    assert got[("mailer_messages_sent_total", sender)] == 3
    assert got[("mailer_messages_failed_total", sender)] == 1
    assert got[("mailer_send_records_queued", ())] == 1
    # Latency: 0.04 s, 0.2 s, 1.2 s, 7 s.
    assert got[("mailer_send_latency_seconds_count", ())] == 4
    assert got[("mailer_send_latency_seconds_sum", ())] == pytest.approx(8.44)
    assert got[("mailer_send_latency_seconds_bucket", (("le", "0.05"),))] == 1
    assert got[("mailer_send_latency_seconds_bucket", (("le", "0.25"),))] == 2
    assert got[("mailer_send_latency_seconds_bucket", (("le", "2.5"),))] == 3
    assert got[("mailer_send_latency_seconds_bucket", (("le", "5.0"),))] == 3
    assert got[("mailer_send_latency_seconds_bucket", (("le", "+Inf"),))] == 4
    assert got[("mailer_queue_depth", (("queue", "send"),))] == 4
    assert got[("mailer_queue_depth", (("queue", "placement"),))] == 0
    assert got[("mailer_placement_checks_total", (("outcome", "inbox"),))] == 1
    assert got[("mailer_placement_checks_total", (("outcome", "not_found"),))] == 2
    kind = ("kind", "low_inbox_rate")
    assert got[("mailer_alerts", (kind, ("status", "new")))] == 1
    assert got[("mailer_alerts", (kind, ("status", "acknowledged")))] == 1
    assert got[("mailer_metrics_source_up", (("source", "database"),))] == 1
    assert got[("mailer_metrics_source_up", (("source", "redis"),))] == 1


def test_queue_depth_from_a_real_redis_and_a_source_down(engine, redis_url):
    from jobs.connection import QUEUE_BUILD, get_queue

    get_queue(QUEUE_BUILD).enqueue("builtins.print", "x")
    got = samples(metrics.render_metrics(lambda: engine))
    assert got[("mailer_queue_depth", (("queue", "build"),))] == 1
    assert got[("mailer_queue_depth", (("queue", "send"),))] == 0
    assert not any(name == "mailer_messages_sent_total" for name, _ in got)  # no rows yet

    def down() -> dict[str, int]:
        raise ConnectionError("redis is gone")

    got = samples(metrics.render_metrics(lambda: engine, down))
    assert got[("mailer_metrics_source_up", (("source", "redis"),))] == 0
    assert not any(name == "mailer_queue_depth" for name, _ in got)
    assert got[("mailer_metrics_source_up", (("source", "database"),))] == 1


def _client(client_host: str) -> httpx.AsyncClient:
    app = Starlette(routes=[Route(routes.API_METRICS, metrics_api.metrics, methods=["GET"])])
    transport = httpx.ASGITransport(app=app, client=(client_host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://mailer")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_route_loopback_only_without_a_token(engine, monkeypatch, anyio_backend):
    monkeypatch.setattr(metrics_api, "metrics_token", lambda: "")
    monkeypatch.setattr(metrics, "rq_queue_depths", lambda: {"send": 0})
    async with _client("127.0.0.1") as client:
        ok = await client.get(routes.API_METRICS)
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("text/plain; version=")
    assert "mailer_send_latency_seconds_bucket" in ok.text
    async with _client("203.0.113.9") as client:
        refused = await client.get(routes.API_METRICS)
    assert refused.status_code == 403


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_route_with_a_token(engine, monkeypatch, anyio_backend):
    monkeypatch.setattr(metrics_api, "metrics_token", lambda: "s3cret-token")
    monkeypatch.setattr(metrics, "rq_queue_depths", lambda: {})
    async with _client("203.0.113.9") as client:
        assert (await client.get(routes.API_METRICS)).status_code == 403
        wrong = {"Authorization": "Bearer nope"}
        assert (await client.get(routes.API_METRICS, headers=wrong)).status_code == 403
        good = {"Authorization": "Bearer s3cret-token"}
        assert (await client.get(routes.API_METRICS, headers=good)).status_code == 200
    async with _client("127.0.0.1") as client:  # a token, once set, is needed from loopback too
        assert (await client.get(routes.API_METRICS)).status_code == 403
