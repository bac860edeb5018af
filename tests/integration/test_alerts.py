"""Alert rules, early evaluation, auto-pause, acknowledging, thresholds and alert
e-mails, on SQLite and PostgreSQL.

Runs are built from rows (seeds, a run, results in chosen placements), so each rate is
computed by hand in the test; the early hook is driven through the real
`placement.check_run` (its copies are not yet sent, so it looks into no mailbox).
Alert e-mails go to a real aiosmtpd server.
"""

from __future__ import annotations

import secrets
from email import message_from_bytes

import pytest
from sqlmodel import select

import mailer_app.models  # noqa: F401  (every table in SQLModel.metadata)
from mailer_app.models import (
    AlertEvent,
    AlertKind,
    AuditEntry,
    Campaign,
    CampaignStatus,
    PlacementResult,
    PlacementRun,
    SeedAccount,
    SenderAccount,
    Source,
    Workspace,
)
from mailer_app.services import InvalidInput, alerts, auth, campaign_status, placement
from mailer_app.services.auth import PermissionDenied
from mailer_app.services.workspaces import create_workspace
from tests.sending_fixtures import make_campaign
from tests.smtp_fixtures import smtp_auth_server_fixture, smtp_server_fixture  # noqa: F401

OFFSETS = [1.0, 3.0, 5.0, 10.0]


@pytest.fixture
def emailed(monkeypatch) -> list[int]:
    """Alert ids whose e-mail job would be queued (no Redis here)."""
    calls: list[int] = []
    monkeypatch.setattr(alerts, "queue_alert_email", calls.append)
    return calls


def workspace(session, name="Acme", **thresholds) -> int:
    ws = create_workspace(session=session, name=name, source=Source.CLI)
    for key, value in thresholds.items():
        setattr(ws, key, value)
    session.add(ws)
    session.commit()
    return ws.id


def user(session, workspace_id: int, role: str, name: str) -> int:
    made = auth.create_user(
        session=session, workspace_id=workspace_id, email=f"{name.lower()}@example.com",
        password="correct horse battery", role=role, created_by_id=None, display_name=name,
    )  # fmt: skip
    session.commit()
    return made.id


def make_run(
    session,
    workspace_id: int,
    placements: dict[str, list[str]],
    *,
    campaign_id: int | None = None,
    offsets=OFFSETS,
    sent: bool = True,
) -> int:
    """A run with one seed per listed placement, per ESP ({"gmail": ["inbox", ...]})."""
    run = PlacementRun(
        workspace_id=workspace_id, campaign_id=campaign_id, idempotency_key=secrets.token_hex(6),
        check_offsets_min=list(offsets), source=Source.SYSTEM,
    )  # fmt: skip
    session.add(run)
    session.flush()
    for esp, outcomes in placements.items():
        for outcome in outcomes:
            seed = SeedAccount(
                workspace_id=workspace_id, email=f"s-{secrets.token_hex(4)}@{esp}.example",
                esp=esp, source=Source.SYSTEM,
            )  # fmt: skip
            session.add(seed)
            session.flush()
            session.add(
                PlacementResult(
                    workspace_id=workspace_id,
                    run_id=run.id,
                    seed_id=seed.id,
                    esp=esp,
                    token=secrets.token_hex(16),
                    placement=outcome,
                    source=Source.SYSTEM,
                    sent_at=mailer_app.models.utcnow() if sent and outcome != "pending" else None,
                )  # fmt: skip
            )
    session.commit()
    return run.id


def events(session, workspace_id: int) -> dict[str, AlertEvent]:
    session.expire_all()
    found = session.exec(select(AlertEvent).where(AlertEvent.workspace_id == workspace_id)).all()
    return {e.dedupe_key.split(":", 1)[0] + ":" + e.dedupe_key.rsplit(":", 1)[1]: e for e in found}


# --- the rules ------------------------------------------------------------------------


def test_rules_per_run_and_per_esp_with_hand_computed_rates(session, emailed):
    ws = workspace(session, alert_min_inbox_rate=0.7, alert_max_missing_rate=0.2)
    # gmail: 3 inbox, 1 spam of 4 checked = 75% inbox, 0% missing -> nothing
    # outlook: 1 inbox, 1 spam, 2 missing of 4 = 25% inbox, 50% missing -> both
    # overall: 4 inbox of 8 = 50% inbox, 2/8 = 25% missing -> both
    # the error and pending results are outside total_checked (PRODUCT.md, Rates)
    run_id = make_run(
        session, ws,
        {
            "gmail": ["inbox", "inbox", "inbox", "spam", "error"],
            "outlook": ["inbox", "spam", "missing", "missing", "pending"],
        },
    )  # fmt: skip
    raised = alerts.evaluate_placement_alerts(session=session, workspace_id=ws, run_id=run_id)
    session.commit()
    got = events(session, ws)
    assert sorted(got) == [
        "high_missing_rate:all", "high_missing_rate:outlook",
        "low_inbox_rate:all", "low_inbox_rate:outlook",
    ]  # fmt: skip
    assert len(raised) == 4
    assert got["low_inbox_rate:all"].value == pytest.approx(0.5)
    assert got["high_missing_rate:all"].value == pytest.approx(0.25)
    assert got["low_inbox_rate:outlook"].value == pytest.approx(0.25)
    assert got["low_inbox_rate:outlook"].esp == "outlook"
    assert got["high_missing_rate:outlook"].value == pytest.approx(0.5)
    assert got["low_inbox_rate:all"].threshold == pytest.approx(0.7)
    assert "Inbox rate overall is 50%, below the 70% threshold" in got["low_inbox_rate:all"].message
    assert all(e.status == "new" for e in got.values())
    assert emailed == []  # no alert addresses in this workspace


def test_thresholds_are_per_workspace_and_checks_are_deduplicated(session, emailed):
    strict = workspace(session, "Strict", alert_min_inbox_rate=0.9)
    relaxed = workspace(session, "Relaxed", alert_min_inbox_rate=0.5)
    # 4 inbox of 5 = 80% inbox: below 90%, above 50%; 1/5 = 20% missing = not above 20%
    mix = {"gmail": ["inbox", "inbox", "inbox", "inbox", "missing"]}
    strict_run, relaxed_run = make_run(session, strict, mix), make_run(session, relaxed, mix)
    for ws, run in ((strict, strict_run), (relaxed, relaxed_run)):
        alerts.evaluate_placement_alerts(session=session, workspace_id=ws, run_id=run)
    session.commit()
    assert sorted(events(session, strict)) == ["low_inbox_rate:all", "low_inbox_rate:gmail"]
    assert events(session, relaxed) == {}
    # Evaluating again (another result, a second worker) adds nothing.
    again = alerts.evaluate_placement_alerts(
        session=session, workspace_id=strict, run_id=strict_run
    )
    session.commit()
    assert again == [] and len(events(session, strict)) == 2
    # Another workspace's run id is refused.
    assert (
        alerts.evaluate_placement_alerts(session=session, workspace_id=relaxed, run_id=strict_run)
        == []
    )


def test_early_check_indexes():
    assert alerts.early_check_indexes([1, 3, 5, 10]) == {1, 2}
    assert alerts.early_check_indexes([1, 5, 10]) == {1}
    assert alerts.early_check_indexes([1, 10]) == {0}
    assert alerts.early_check_indexes([10]) == set()


# --- early evaluation and auto-pause -------------------------------------------------------


@pytest.fixture
def sending_campaign(session, engine, smtp_server, monkeypatch):
    """A campaign in `sending` whose workspace pauses automatically."""
    from mailer_app.services import sending

    monkeypatch.setattr(sending, "wake_run", lambda run_id, **_: None)
    made = make_campaign(session, engine, port=smtp_server.port, count=2)
    campaign = session.get(Campaign, made.campaign_id)
    campaign_status.transition(session=session, campaign=campaign, to=CampaignStatus.SENDING)
    ws = session.get(Workspace, made.workspace_id)
    ws.auto_pause_enabled, ws.alert_min_inbox_rate = True, 0.7
    session.add(ws)
    session.commit()
    return made


def early_mix() -> dict[str, list[str]]:
    # Found so far: 1 inbox, 3 spam (25% inbox of 4 terminal); 2 copies not yet sent.
    return {"gmail": ["inbox", "spam", "pending"], "yahoo": ["spam", "spam", "pending"]}


def test_auto_pause_after_an_early_check_pauses_the_campaign_with_the_reason(
    session, sending_campaign, emailed
):
    made = sending_campaign
    run_id = make_run(session, made.workspace_id, early_mix(), campaign_id=made.campaign_id)
    # The first check (+1 minute) is not early: nothing is judged yet.
    placement.check_run(run_id=run_id, check_index=0)
    session.expire_all()
    assert events(session, made.workspace_id) == {}
    assert session.get(Campaign, made.campaign_id).status == CampaignStatus.SENDING

    placement.check_run(run_id=run_id, check_index=1)  # +3 minutes: early
    session.expire_all()
    campaign = session.get(Campaign, made.campaign_id)
    assert campaign.status == CampaignStatus.PAUSED
    assert campaign.status_reason.startswith("Paused automatically: Inbox rate overall is 25%")
    assert "after the +3 minute check" in campaign.status_reason
    got = events(session, made.workspace_id)
    # Overall only: each ESP has 2 terminal results, fewer than EARLY_MIN_CHECKED.
    assert sorted(got) == ["low_inbox_rate:all"]
    assert got["low_inbox_rate:all"].campaign_id == made.campaign_id
    assert session.get(PlacementRun, run_id).status == "active"

    # A person resumes: the +5 minute check does not overrule them.
    campaign_status.transition(session=session, campaign=campaign, to=CampaignStatus.SENDING)
    session.commit()
    placement.check_run(run_id=run_id, check_index=2)
    session.expire_all()
    assert session.get(Campaign, made.campaign_id).status == CampaignStatus.SENDING
    pauses = session.exec(
        select(AuditEntry).where(AuditEntry.action == alerts.AUTO_PAUSE_ACTION)
    ).all()
    assert len(pauses) == 1 and pauses[0].details["placement_run_id"] == run_id


def test_no_auto_pause_when_disabled_or_below_the_sample(session, sending_campaign, emailed):
    made = sending_campaign
    ws = session.get(Workspace, made.workspace_id)
    ws.auto_pause_enabled = False
    session.add(ws)
    session.commit()
    run_id = make_run(session, made.workspace_id, early_mix(), campaign_id=made.campaign_id)
    placement.check_run(run_id=run_id, check_index=1)
    session.expire_all()
    assert session.get(Campaign, made.campaign_id).status == CampaignStatus.SENDING
    assert sorted(events(session, made.workspace_id)) == ["low_inbox_rate:all"]  # still alerted

    # Switched on, but only 2 seeds have landed in a new run: too few to judge.
    ws = session.get(Workspace, made.workspace_id)
    ws.auto_pause_enabled = True
    session.add(ws)
    session.commit()
    few = make_run(
        session, made.workspace_id, {"gmail": ["spam", "spam", "pending"]},
        campaign_id=made.campaign_id,
    )  # fmt: skip
    outcome = alerts.evaluate_early_alerts(session=session, run_id=few, check_index=1)
    session.commit()
    assert outcome.raised == [] and outcome.paused_campaign_id is None
    assert session.get(Campaign, made.campaign_id).status == CampaignStatus.SENDING


def test_completed_run_is_judged_at_completion_not_early(session, emailed):
    ws = workspace(session, auto_pause_enabled=True)
    run_id = make_run(session, ws, {"gmail": ["spam", "spam", "spam", "missing"]})
    # Every result is terminal: the check completes the run, and completion judges it.
    placement.check_run(run_id=run_id, check_index=1)
    session.expire_all()
    assert session.get(PlacementRun, run_id).status == "completed"
    got = events(session, ws)
    assert sorted(got) == [
        "high_missing_rate:all", "high_missing_rate:gmail", "low_inbox_rate:all",
        "low_inbox_rate:gmail",
    ]  # fmt: skip
    assert "after the" not in got["low_inbox_rate:all"].message


# --- acknowledging, listing, counting ------------------------------------------------------


def test_acknowledge_one_and_all_with_roles(session, emailed):
    ws = workspace(session)
    lead = user(session, ws, "sender", "Lea")
    viewer = user(session, ws, "viewer", "Vic")
    run_id = make_run(session, ws, {"gmail": ["spam", "missing"], "aol": ["spam"]})
    alerts.evaluate_placement_alerts(session=session, workspace_id=ws, run_id=run_id)
    session.commit()
    total = len(events(session, ws))
    assert alerts.count_new_alerts(session=session, workspace_id=ws) == total == 5

    with pytest.raises(PermissionDenied):
        alerts.acknowledge_alerts(session=session, workspace_id=ws, user_id=viewer, alert_ids=[1])
    newest = alerts.list_alerts(session=session, workspace_id=ws)[0]
    assert (
        alerts.acknowledge_alerts(
            session=session, workspace_id=ws, user_id=lead, alert_ids=[newest.id]
        )
        == 1
    )
    session.commit()
    assert alerts.count_new_alerts(session=session, workspace_id=ws) == total - 1
    rows = alerts.alert_rows(session=session, workspace_id=ws, status="acknowledged")
    assert [r.id for r in rows] == [newest.id] and rows[0].acknowledged_by == "Lea"
    # Acknowledging again changes nothing; "all" takes the rest.
    assert (
        alerts.acknowledge_alerts(
            session=session, workspace_id=ws, user_id=lead, alert_ids=[newest.id]
        )
        == 0
    )
    assert alerts.acknowledge_alerts(session=session, workspace_id=ws, user_id=lead) == total - 1
    session.commit()
    assert alerts.count_new_alerts(session=session, workspace_id=ws) == 0
    # Another workspace's user cannot acknowledge here.
    other = workspace(session, "Other")
    stranger = user(session, other, "admin", "Sam")
    with pytest.raises(PermissionDenied):
        alerts.acknowledge_alerts(session=session, workspace_id=ws, user_id=stranger)


def test_threshold_settings_are_validated_and_limited_to_admins(session):
    ws = workspace(session)
    admin = user(session, ws, "admin", "Ada")
    editor = user(session, ws, "editor", "Eddie")
    args = dict(min_inbox_rate=0.8, max_missing_rate=0.1, auto_pause_enabled=True)
    with pytest.raises(PermissionDenied):
        alerts.update_alert_settings(
            session=session, workspace_id=ws, user_id=editor, alert_emails="", **args
        )
    saved = alerts.update_alert_settings(
        session=session, workspace_id=ws, user_id=admin,
        alert_emails="Ops@Example.com, lead@example.com\nops@example.com", **args,
    )  # fmt: skip
    session.commit()
    assert saved.alert_emails == ["ops@example.com", "lead@example.com"]
    session.expire_all()
    stored = session.get(Workspace, ws)
    assert (stored.alert_min_inbox_rate, stored.alert_max_missing_rate) == (0.8, 0.1)
    assert stored.auto_pause_enabled is True
    for bad, field in (
        (dict(args, min_inbox_rate=1.5), "min_inbox_rate"),
        (dict(args, max_missing_rate=-0.1), "max_missing_rate"),
        (dict(args, min_inbox_rate="lots"), "min_inbox_rate"),
    ):
        with pytest.raises(InvalidInput) as caught:
            alerts.update_alert_settings(
                session=session, workspace_id=ws, user_id=admin, alert_emails="", **bad
            )
        assert caught.value.field == field
    with pytest.raises(InvalidInput) as caught:
        alerts.update_alert_settings(
            session=session, workspace_id=ws, user_id=admin, alert_emails="not-an-address", **args
        )
    assert caught.value.field == "alert_emails"
    session.rollback()
    session.expire_all()
    assert session.get(Workspace, ws).alert_emails == ["ops@example.com", "lead@example.com"]


# --- e-mail --------------------------------------------------------------------------------


def test_new_alert_is_emailed_through_the_workspace_sender(session, engine, smtp_server, emailed):
    ws = workspace(session, alert_emails=["ops@example.com", "lead@example.com"])
    run_id = make_run(session, ws, {"gmail": ["spam", "spam", "inbox"]})
    # No sender account yet: the job says so and sends nothing.
    raised = alerts.evaluate_placement_alerts(session=session, workspace_id=ws, run_id=run_id)
    session.commit()
    assert sorted(emailed) == sorted(e.id for e in raised) and len(raised) == 2
    first = raised[0].id
    outcome = alerts.email_alert(alert_id=first)
    assert not outcome.sent and "no active sender account" in outcome.reason
    assert smtp_server.recorder.messages == []

    session.add(
        SenderAccount(
            workspace_id=ws,
            name="Alerts",
            from_name="Acme alerts",
            from_email="alerts@example.com",
            smtp_host="127.0.0.1",
            smtp_port=smtp_server.port,
            smtp_security="plain",
        )  # fmt: skip
    )
    session.commit()
    outcome = alerts.email_alert(alert_id=first)
    assert outcome.sent, outcome.reason
    assert len(smtp_server.recorder.messages) == 1
    message = message_from_bytes(smtp_server.recorder.messages[0])
    assert message["To"] == "ops@example.com, lead@example.com"
    assert message["Subject"].startswith("[mailer alert] ")
    assert message["Auto-Submitted"] == "auto-generated"
    body = message.get_payload(decode=True).decode()
    assert session.get(AlertEvent, first).message in body
    # The job run again (RQ retry, duplicate) does not send a second copy.
    assert not alerts.email_alert(alert_id=first).sent
    assert len(smtp_server.recorder.messages) == 1


def test_the_alert_email_job_runs_through_a_real_queue(session, engine, smtp_server, redis_url):
    """The job function as a worker calls it (enqueued on a real Redis, run in process)."""
    from rq import SimpleWorker

    from jobs.alerts import email_job_id, enqueue_alert_email
    from jobs.connection import QUEUE_DEFAULT, get_queue

    ws = workspace(session, alert_emails=["ops@example.com"])
    session.add(
        SenderAccount(
            workspace_id=ws,
            name="Alerts",
            from_email="alerts@example.com",
            smtp_host="127.0.0.1",
            smtp_port=smtp_server.port,
            smtp_security="plain",
        )  # fmt: skip
    )
    session.commit()
    alerts.raise_alert(
        session=session, workspace_id=ws, kind=AlertKind.SENDER_AUTH_FAILED,
        message="The sender's server refused its login.", dedupe_key="t:1",
    )  # fmt: skip
    session.commit()  # the after-commit hook queues the job
    queue = get_queue(QUEUE_DEFAULT)
    alert_id = session.exec(select(AlertEvent.id)).one()
    assert queue.job_ids == [email_job_id(alert_id)]
    enqueue_alert_email(alert_id)  # a duplicate trigger: the job must not e-mail twice
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    assert len(smtp_server.recorder.messages) == 1
