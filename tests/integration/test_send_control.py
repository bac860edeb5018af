"""Controls and progress of a send, on SQLite and PostgreSQL: start (from review and
from approved), pause, resume (never re-sends), cancel (queued records stay unsent),
refusals in plain words, roles, audit entries, and the numbers the send page shows
(counters, rate, ETA, seeds, failures by reason, the records of unknown outcome).

Workers are simulated with `send_records.claim_batch` and `mark`; `sending.wake_run`
is replaced by a recorder (one test keeps the real one, which may fail: the person's
action must not).
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import select

import mailer_app.models  # noqa: F401  (every table in SQLModel.metadata)
from mailer_app.models import (
    AuditEntry,
    Campaign,
    CampaignRun,
    CampaignStatus,
    SendRecord,
    SendStatus,
    Source,
    utcnow,
)
from mailer_app.services import (
    InvalidInput,
    auth,
    build,
    campaigns,
    review,
    send_control,
    send_records,
    sending,
)
from mailer_app.services.campaign_status import IllegalTransition
from mailer_app.services.workspaces import create_workspace
from tests.integration.test_review import _workspace, run_build
from tests.integration.test_send_records import synthetic
from tests.smtp_fixtures import smtp_auth_server_fixture, smtp_server_fixture  # noqa: F401

S = CampaignStatus


@pytest.fixture
def woken(monkeypatch) -> list[int]:
    """The run ids `sending.wake_run` was called with (no Redis, no engine)."""
    calls: list[int] = []
    monkeypatch.setattr(sending, "wake_run", lambda run_id, **_: calls.append(run_id))
    return calls


def add_user(session, workspace_id: int, role: str, name: str) -> int:
    user = auth.create_user(
        session=session, workspace_id=workspace_id, email=f"{name.lower()}-{role}@example.com",
        password="correct horse battery", role=role, created_by_id=None, display_name=name,
    )  # fmt: skip
    session.commit()
    return user.id


@pytest.fixture
def reviewed(session, smtp_server, monkeypatch) -> dict:
    """The review tests' campaign, built, in review; Eve's message still needs a decision."""
    monkeypatch.setattr(build, "queue_build", lambda build_id: None)
    info = _workspace(session, "Acme", smtp_server)
    run_build(session, info)
    info["ids"] = dict(
        session.exec(
            select(mailer_app.models.BuiltMessage.email, mailer_app.models.BuiltMessage.id).where(
                mailer_app.models.BuiltMessage.campaign_id == info["campaign_id"]
            )
        ).all()
    )
    return info


@pytest.fixture
def bulk(session) -> dict:
    """An approved campaign with 20 ready messages and a sender (role) user, Ann."""
    info = synthetic(session, 20)
    info["user_id"] = add_user(session, info["workspace_id"], "sender", "Ann")
    return info


def scope(info: dict, user_id: int | None | str = "default") -> dict:
    return {
        "workspace_id": info["workspace_id"],
        "campaign_id": info["campaign_id"],
        "user_id": info["user_id"] if user_id == "default" else user_id,
    }


def start(session, info, **kw):
    run = send_control.start_send(session=session, **{**scope(info), **kw})
    session.commit()
    return run


def control(session, info, what: str, **kw) -> Campaign:
    fn = getattr(send_control, f"{what}_send")
    campaign = fn(session=session, **{**scope(info), **kw})
    session.commit()
    return campaign


def progress(session, info) -> send_control.SendProgress:
    session.expire_all()
    found = send_control.send_progress(
        session=session, workspace_id=info["workspace_id"], campaign_id=info["campaign_id"]
    )
    assert found is not None
    return found


def status_of(session, info) -> tuple[str, str | None]:
    session.expire_all()
    campaign = session.get(Campaign, info["campaign_id"])
    return campaign.status, campaign.status_reason


def audit_actions(session, info) -> list[AuditEntry]:
    return list(
        session.exec(
            select(AuditEntry)
            .where(AuditEntry.workspace_id == info["workspace_id"])
            .order_by(AuditEntry.id)
        ).all()
    )


def claim(engine, run, n: int) -> list[int]:
    return send_records.claim_batch(engine_or_session=engine, run_id=run.id, worker="w", limit=n)


def settle(session, ids, to: str, *, error: str | None = None, sent_ago: float | None = None):
    for record_id in ids:
        sent_at = utcnow() - timedelta(seconds=sent_ago) if sent_ago is not None else None
        send_records.mark(session=session, record_id=record_id, to=to, error=error,
                          sent_at=sent_at)  # fmt: skip
    session.commit()


# --- start --------------------------------------------------------------------------------------


def test_start_from_review_approves_queues_and_wakes_after_commit(session, reviewed, woken):
    review.approve_messages(
        session=session, **scope(reviewed), message_ids=[reviewed["ids"]["eve@example.com"]]
    )
    session.commit()
    run = send_control.start_send(session=session, **scope(reviewed), source=Source.UI)
    assert woken == []  # not before the commit: a fast worker would find nothing
    session.commit()
    assert woken == [run.id]
    assert status_of(session, reviewed)[0] == S.QUEUED
    counters = send_records.run_counters(
        session=session, workspace_id=reviewed["workspace_id"], run_id=run.id
    )
    assert (counters.total, counters.queued) == (4, 4)  # ann, bob (warning), eve, gus
    done = [e.action for e in audit_actions(session, reviewed)]
    assert (
        done.index("campaign.approve") < done.index("campaign.queue") < done.index("campaign.send")
    )
    [sent] = [e for e in audit_actions(session, reviewed) if e.action == "campaign.send"]
    assert sent.user_id == reviewed["user_id"]
    assert sent.details == {"run_id": run.id, "messages": 4, "approved_now": True}


def test_start_refuses_with_every_blocker_and_changes_nothing(session, reviewed, woken):
    with pytest.raises(review.CampaignNotReady) as refused:
        send_control.start_send(session=session, **scope(reviewed))
    session.rollback()
    assert refused.value.blockers == ["1 message needs a decision: approve or exclude it."]
    assert status_of(session, reviewed)[0] == S.IN_REVIEW
    assert session.exec(select(CampaignRun)).all() == []
    session.commit()
    assert woken == []


def test_start_from_approved_queues_and_again_returns_the_same_run(session, bulk, woken):
    run = start(session, bulk)
    assert status_of(session, bulk) == (S.QUEUED, "Queued for sending.")
    again = start(session, bulk)
    assert again.id == run.id and woken == [run.id, run.id]  # a second press only wakes
    assert progress(session, bulk).total == 20
    assert len([e for e in audit_actions(session, bulk) if e.action == "campaign.send"]) == 1


def test_a_draft_or_cancelled_campaign_cannot_be_started(session, bulk, woken):
    start(session, bulk)
    control(session, bulk, "cancel")
    with pytest.raises(IllegalTransition, match="A cancelled campaign cannot be queued."):
        send_control.start_send(session=session, **scope(bulk))
    session.rollback()
    draft = campaigns.create_campaign(
        session=session, workspace_id=bulk["workspace_id"], name="Draft", user_id=None
    )
    session.commit()
    with pytest.raises(InvalidInput, match="Publish and approve the campaign first"):
        send_control.start_send(session=session, **{**scope(bulk), "campaign_id": draft.id})
    session.rollback()
    assert len(woken) == 1


def test_a_failing_wake_is_logged_and_the_send_still_starts(session, bulk, caplog, monkeypatch):
    def down(run_id, **_):
        raise ConnectionError("Redis is not running")

    monkeypatch.setattr(sending, "wake_run", down)
    with caplog.at_level(logging.WARNING, logger="mailer_app.services.send_control"):
        run = start(session, bulk)  # the commit runs the wake: it must not raise
    assert status_of(session, bulk)[0] == S.QUEUED
    assert f"send run {run.id}" in caplog.text and "Redis is not running" in caplog.text
    with caplog.at_level(logging.WARNING, logger="mailer_app.services.send_control"):
        control(session, bulk, "pause")
        control(session, bulk, "resume")
    assert status_of(session, bulk)[0] == S.SENDING


# --- pause, resume, cancel ----------------------------------------------------------------------


def test_pause_resume_cancel_move_the_status_with_reasons_and_audit(session, bulk, woken):
    run = start(session, bulk)
    assert progress(session, bulk).can_pause and progress(session, bulk).can_cancel
    assert not progress(session, bulk).can_resume

    campaign = control(session, bulk, "pause")
    status, reason = status_of(session, bulk)
    assert status == S.PAUSED and campaign.status == S.PAUSED
    assert reason.startswith("Paused by Ann at ") and reason.endswith(" UTC.")
    shown = progress(session, bulk)
    assert (shown.can_pause, shown.can_resume, shown.can_cancel) == (False, True, True)
    control(session, bulk, "pause")  # a second press changes nothing
    assert len([e for e in audit_actions(session, bulk) if e.action == "campaign.pause"]) == 1

    woken.clear()
    control(session, bulk, "resume")
    status, reason = status_of(session, bulk)
    assert status == S.SENDING and reason.startswith("Resumed by Ann at ")
    assert woken == [run.id]

    control(session, bulk, "cancel")
    status, reason = status_of(session, bulk)
    assert status == S.CANCELLED and reason.startswith("Cancelled by Ann at ")
    shown = progress(session, bulk)
    assert (shown.can_pause, shown.can_resume, shown.can_cancel) == (False, False, False)
    entries = {e.action: e for e in audit_actions(session, bulk)}
    for action in ("campaign.pause", "campaign.resume", "campaign.cancel"):
        assert entries[action].user_id == bulk["user_id"]
        assert entries[action].details["run_id"] == run.id
    assert entries["campaign.cancel"].details["remaining"] == 20
    moves = [
        (e.details["from"], e.details["to"])
        for e in audit_actions(session, bulk)
        if e.action == "campaign.status"
    ]
    assert moves[-4:] == [
        ("approved", "queued"), ("queued", "paused"), ("paused", "sending"),
        ("sending", "cancelled"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "words"),
    [
        ("resume", "A cancelled campaign cannot be sent."),
        ("pause", "A cancelled campaign cannot be paused."),
    ],
)
def test_a_cancelled_campaign_cannot_be_resumed_or_paused(session, bulk, woken, what, words):
    start(session, bulk)
    control(session, bulk, "cancel")
    woken.clear()
    with pytest.raises(IllegalTransition, match=words):
        control(session, bulk, what)
    session.rollback()
    assert status_of(session, bulk)[0] == S.CANCELLED
    assert woken == []


def test_a_completed_campaign_cannot_be_paused_resumed_or_cancelled(session, bulk, woken):
    start(session, bulk)
    campaign = session.get(Campaign, bulk["campaign_id"])
    for to in (S.SENDING, S.COMPLETED):
        mailer_app.services.campaign_status.transition(session=session, campaign=campaign, to=to)
    session.commit()
    for what, words in (
        ("pause", "A completed campaign cannot be paused."),
        ("resume", "A completed campaign cannot be sent."),
        ("cancel", "A completed campaign cannot be cancelled."),
    ):
        with pytest.raises(IllegalTransition, match=words):
            control(session, bulk, what)
        session.rollback()
    assert status_of(session, bulk)[0] == S.COMPLETED


def test_resume_never_sends_a_message_again(session, engine, bulk, woken):
    run = start(session, bulk)
    first = claim(engine, run, 5)
    settle(session, first[:3], "sent")
    settle(session, first[3:4], "failed", error="550 no such user")
    settle(session, first[4:], "unknown", error="connection lost after DATA")
    control(session, bulk, "pause")
    before = {
        r.id: (r.status, r.sent_at, r.attempt_count)
        for r in session.exec(select(SendRecord).where(SendRecord.run_id == run.id)).all()
    }
    control(session, bulk, "resume")
    session.expire_all()
    after = {
        r.id: (r.status, r.sent_at, r.attempt_count)
        for r in session.exec(select(SendRecord).where(SendRecord.run_id == run.id)).all()
    }
    assert after == before
    # What a worker claims next is only what was never tried.
    rest = claim(engine, run, 100)
    assert len(rest) == 15 and not set(rest) & set(first)


def test_a_pause_during_a_batch_lets_the_batch_finish(session, engine, bulk, woken):
    run = start(session, bulk)
    in_hand = claim(engine, run, 4)
    control(session, bulk, "pause")
    settle(session, in_hand, "sent")  # the worker finishes what it holds
    shown = progress(session, bulk)
    assert (shown.status, shown.sent, shown.queued, shown.remaining) == (S.PAUSED, 4, 16, 16)
    assert shown.eta_seconds is None  # paused: no estimate, whatever the rate


# --- roles --------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["editor", "viewer"])
def test_only_owners_admins_and_senders_control_a_send(session, bulk, woken, role):
    someone = add_user(session, bulk["workspace_id"], role, "Ed")
    for what in ("start", "pause", "resume", "cancel"):
        with pytest.raises(auth.PermissionDenied, match="owner, an admin or a sender"):
            getattr(send_control, f"{what}_send")(session=session, **scope(bulk, someone))
        session.rollback()
    assert status_of(session, bulk)[0] == S.APPROVED
    for allowed in ("owner", "admin"):
        user_id = add_user(session, bulk["workspace_id"], allowed, allowed.title())
        start(session, bulk, user_id=user_id)
    control(session, bulk, "pause", user_id=user_id)
    assert status_of(session, bulk)[1].startswith("Paused by Admin at ")


def test_people_of_another_workspace_can_neither_see_nor_control(session, bulk, woken):
    start(session, bulk)
    other = create_workspace(session=session, name="Other", source=Source.CLI)
    session.commit()
    stranger = add_user(session, other.id, "owner", "Zed")
    with pytest.raises(auth.PermissionDenied):
        send_control.pause_send(session=session, **scope(bulk, stranger))
    session.rollback()
    elsewhere = {**scope(bulk, None), "workspace_id": other.id}
    with pytest.raises(campaigns.CampaignNotFound):
        send_control.pause_send(session=session, **elsewhere)
    session.rollback()
    with pytest.raises(campaigns.CampaignNotFound):
        send_control.send_progress(
            session=session, workspace_id=other.id, campaign_id=bulk["campaign_id"]
        )
    assert status_of(session, bulk)[0] == S.QUEUED


def test_without_a_person_the_reason_names_the_door(session, bulk, woken):
    start(session, bulk)
    control(session, bulk, "pause", user_id=None, source=Source.CLI)
    assert status_of(session, bulk)[1].startswith("Paused by an operator at ")
    control(session, bulk, "resume", user_id=None, source=Source.CLI)
    control(
        session, bulk, "pause", user_id=None, source=Source.SYSTEM,
        reason="Paused automatically: only 40% of seeds reached the inbox.",
    )  # fmt: skip
    assert status_of(session, bulk)[1] == (
        "Paused automatically: only 40% of seeds reached the inbox."
    )


# --- progress -----------------------------------------------------------------------------------


def test_no_progress_before_the_campaign_is_queued(session, bulk):
    assert (
        send_control.send_progress(
            session=session, workspace_id=bulk["workspace_id"], campaign_id=bulk["campaign_id"]
        )
        is None
    )


def test_progress_counts_percent_rate_and_eta(session, engine, bulk, woken):
    run = start(session, bulk)
    shown = progress(session, bulk)
    assert (shown.run_id, shown.status, shown.total, shown.queued, shown.remaining) == (
        run.id, S.QUEUED, 20, 20, 20,
    )  # fmt: skip
    assert (shown.percent, shown.rate_per_minute, shown.eta_seconds) == (0.0, 0.0, None)
    assert shown.campaign_name == "Bulk"

    batch = claim(engine, run, 10)
    settle(session, batch[:2], "sent", sent_ago=120)  # outside the last minute
    settle(session, batch[2:8], "sent", sent_ago=20)  # 6 in the last minute
    settle(session, batch[8:9], "failed", error="550 5.1.1 no such user")
    shown = progress(session, bulk)
    assert (shown.sent, shown.failed, shown.unknown, shown.sending, shown.queued) == (
        8, 1, 0, 1, 10,
    )  # fmt: skip
    assert (shown.remaining, shown.done, shown.percent) == (11, 9, 45.0)
    assert shown.rate_per_minute == pytest.approx(6.0, abs=0.05)
    assert shown.eta_seconds == pytest.approx(11 * 60 / 6, abs=2)


def test_the_rate_of_a_send_that_just_began_is_not_diluted(session, engine, bulk, woken):
    run = start(session, bulk)
    settle(session, claim(engine, run, 5), "sent", sent_ago=10)
    shown = progress(session, bulk)
    # Five in (about) the ten seconds since the first: 30 a minute, not 5.
    assert shown.rate_per_minute == pytest.approx(30.0, rel=0.05)
    assert shown.eta_seconds == pytest.approx(15 * 60 / 30, abs=2)
    settle(session, claim(engine, run, 2), "sent", sent_ago=0)
    # Never measured over less than MIN_RATE_SPAN.
    assert progress(session, bulk).rate_per_minute <= 7 * 60 / 5 + 0.1


def test_seeds_are_counted_apart(session, engine, bulk, woken):
    run = start(session, bulk)
    ids = claim(engine, run, 4)
    session.execute(sa.update(SendRecord).where(SendRecord.id.in_(ids[:3])).values(is_seed=True))
    session.commit()
    settle(session, ids[:2], "sent")
    shown = progress(session, bulk)
    assert (shown.seeds_sent, shown.seeds_total) == (2, 3)


def test_failures_are_grouped_by_reason_most_frequent_first(session, engine, bulk, woken):
    run = start(session, bulk)
    ids = claim(engine, run, 20)
    settle(session, ids[:4], "failed", error="550 5.1.1 no such user")
    settle(session, ids[4:6], "failed", error="552 mailbox full")
    settle(session, ids[6:7], "failed")  # no reason recorded
    for n, record_id in enumerate(ids[7:18]):
        settle(session, [record_id], "failed", error=f"554 rejected ({n:02d})")
    shown = progress(session, bulk)
    assert shown.failed == 18 and shown.failure_reasons == 14
    assert len(shown.failures) == send_control.TOP_FAILURES
    assert [(g.reason, g.count) for g in shown.failures[:2]] == [
        ("550 5.1.1 no such user", 4), ("552 mailbox full", 2),
    ]  # fmt: skip
    assert all(g.count == 1 for g in shown.failures[2:])
    assert send_control.NO_REASON in [g.reason for g in shown.failures]


def test_records_of_unknown_outcome_are_listed_for_a_person(
    session, engine, bulk, woken, monkeypatch
):
    run = start(session, bulk)
    ids = claim(engine, run, 4)
    submitted = utcnow() - timedelta(minutes=3)
    session.execute(
        sa.update(SendRecord).where(SendRecord.id.in_(ids)).values(submitted_at=submitted)
    )
    session.commit()
    settle(session, ids[:3], "unknown", error=send_records.STUCK_IN_SENDING)
    settle(session, ids[3:], "sent")
    shown = progress(session, bulk)
    assert shown.unknown == 3
    assert [u.id for u in shown.unknown_records] == ids[:3]
    first = shown.unknown_records[0]
    emails = dict(session.exec(select(SendRecord.id, SendRecord.email)).all())
    assert first.email == emails[ids[0]]
    assert first.last_error == send_records.STUCK_IN_SENDING
    assert abs((first.submitted_at - submitted).total_seconds()) < 1
    monkeypatch.setattr(send_control, "MAX_UNKNOWN", 2)
    shown = progress(session, bulk)
    assert len(shown.unknown_records) == 2 and shown.unknown == 3


def test_cancel_leaves_queued_records_unsent_and_reports_them(session, engine, bulk, woken):
    run = start(session, bulk)
    batch = claim(engine, run, 5)
    settle(session, batch[:4], "sent")  # one still in a worker's hands
    control(session, bulk, "cancel")
    shown = progress(session, bulk)
    assert (shown.status, shown.sent, shown.sending, shown.queued) == (S.CANCELLED, 4, 1, 15)
    assert (shown.not_sent, shown.remaining, shown.eta_seconds) == (15, 1, None)
    # The reconciler never wakes a cancelled run, so its queued records are never sent.
    result = send_records.reconcile(session=session, stuck_after=timedelta(hours=1))
    session.commit()
    assert run.id not in result.wake_run_ids
    session.expire_all()
    statuses = [r.status for r in session.exec(select(SendRecord)).all()]
    assert statuses.count(SendStatus.QUEUED) == 15
    [entry] = [e for e in audit_actions(session, bulk) if e.action == "campaign.cancel"]
    assert (entry.details["sent"], entry.details["remaining"]) == (4, 16)
