"""Controls of a campaign's send (start, pause, resume, cancel) and its progress.

Every control is a move of the campaign status through `campaign_status.transition`
(the one writer of Campaign.status), kept with a plain reason ("Paused by Ann at
2024-05-01 14:02 UTC.") in `status_reason`, and in the audit log. Workers read the
campaign status again before every batch, so pausing and cancelling take effect by
moving the status alone; starting and resuming also wake the run's workers once the
transaction commits (best effort: the scheduler's reconciler wakes runs that need
it anyway, so a missing Redis never fails the person's action).

    start_send   in review -> approved (review.approve_campaign) -> queued
                 (send_records.queue_campaign), then wake the run
    pause_send   queued | sending -> paused
    resume_send  paused -> sending, then wake the run (nothing sent is sent again:
                 only records still queued are ever claimed)
    cancel_send  queued | sending | paused -> cancelled; its queued records stay
                 queued and are never sent (reported as "not sent")

People need one of `CONTROL_ROLES` (owners always); without a user (the CLI, the
system) the caller has checked. `send_progress` is what the send page shows.
The caller owns the transaction (nothing is committed here).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from mailer_app.db import after_commit
from mailer_app.models import (
    Campaign,
    CampaignRun,
    CampaignStatus,
    Membership,
    Role,
    SendRecord,
    SendStatus,
    Source,
    User,
    utcnow,
)
from mailer_app.services import (
    InvalidInput,
    audit,
    auth,
    campaign_status,
    campaigns,
    review,
    send_records,
)

log = logging.getLogger(__name__)

# Who may start, pause, resume and cancel a send (owners always): those who approve.
CONTROL_ROLES = review.APPROVER_ROLES
NOT_ALLOWED = "Only an owner, an admin or a sender may start, pause, resume or cancel a send."
# The sending rate is measured over this window (from each record's sent_at)...
RATE_WINDOW = timedelta(seconds=60)
# ...and never over less than this, so the first seconds of a send do not spike.
MIN_RATE_SPAN = timedelta(seconds=5)
TOP_FAILURES = 10
MAX_UNKNOWN = 100
NO_REASON = "No reason was recorded."
S = CampaignStatus
# Statuses in which the run's workers are due to send.
ACTIVE = (S.QUEUED, S.SENDING)
# Statuses from which nothing will change any more.
FINISHED = (S.COMPLETED, S.CANCELLED, S.ARCHIVED)
_QUEUEABLE = (S.IN_REVIEW, S.APPROVED)


@dataclass(frozen=True)
class FailureGroup:
    reason: str  # the records' last_error, in the words the worker wrote
    count: int


@dataclass(frozen=True)
class UnknownRecord:
    """A message whose outcome nobody knows: a person decides what to do about it."""

    id: int
    email: str
    last_error: str | None
    submitted_at: datetime | None


@dataclass(frozen=True)
class SendProgress:
    campaign_id: int
    campaign_name: str
    status: str
    status_reason: str | None
    run_id: int
    started_at: datetime | None
    finished_at: datetime | None
    sent: int
    failed: int
    unknown: int
    queued: int
    sending: int
    total: int
    remaining: int  # still to go: queued + sending (only those in flight once cancelled)
    not_sent: int  # queued records of a cancelled campaign: never sent
    percent: float  # of the total, sent + failed + unknown (0..100)
    rate_per_minute: float  # messages sent per minute, over the last minute
    eta_seconds: int | None  # None when nothing is sending (rate 0, paused, ended)
    seeds_sent: int
    seeds_total: int
    can_pause: bool  # whether the status machine allows the move now
    can_resume: bool
    can_cancel: bool
    failures: list[FailureGroup] = field(default_factory=list)  # most frequent first
    failure_reasons: int = 0  # how many different reasons in all
    unknown_records: list[UnknownRecord] = field(default_factory=list)  # first MAX_UNKNOWN

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.unknown


# --- helpers ------------------------------------------------------------------------------------


def check_role(*, session: Session, workspace_id: int, user_id: int | None) -> None:
    """PermissionDenied unless `user_id` may control sends in this workspace (None: the
    CLI or the system, which checked who called them)."""
    if user_id is None:
        return
    role = session.exec(
        select(Membership.role).where(
            Membership.workspace_id == workspace_id, Membership.user_id == user_id
        )
    ).first()
    if role is None or (role != Role.OWNER and role not in {str(r) for r in CONTROL_ROLES}):
        raise auth.PermissionDenied(NOT_ALLOWED)


def _locked(session: Session, workspace_id: int, campaign_id: int) -> Campaign:
    """The campaign as it is now, locked until the caller commits (PostgreSQL), so a
    worker completing it meanwhile cannot be overwritten."""
    campaign = session.exec(
        select(Campaign)
        .where(Campaign.workspace_id == workspace_id, Campaign.id == campaign_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if campaign is None:
        raise campaigns.CampaignNotFound("This campaign does not exist (it may have been deleted).")
    return campaign


def _who(session: Session, user_id: int | None, source: Source | str) -> str:
    if user_id is not None:
        user = session.get(User, user_id)
        if user is not None:
            return user.display_name or user.email
    return "an operator" if str(source) in (Source.CLI, Source.API) else "the system"


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _wake_after_commit(session: Session, run_id: int) -> None:
    """Wake the run's workers once the transaction commits; a failure is logged, never
    raised (the scheduler's reconciler wakes runs with due records anyway)."""

    def wake() -> None:
        from mailer_app.services import sending  # the engine imports this module's callers

        try:
            sending.wake_run(run_id)
        except Exception as exc:  # Redis down, engine missing: never the person's fault
            log.warning(
                "Could not wake the workers of send run %s (%s: %s); the scheduler will.",
                run_id, type(exc).__name__, exc,
            )  # fmt: skip

    after_commit(session, wake)


def _move(
    session: Session,
    *,
    workspace_id: int,
    campaign_id: int,
    user_id: int | None,
    source: Source | str,
    to: CampaignStatus,
    action: str,
    reason: str | None,
    verb: str,
) -> tuple[Campaign, CampaignRun | None, bool]:
    """Check the role, move the campaign to `to` with a reason and an audit entry.
    Returns (campaign, its latest run, whether it moved)."""
    check_role(session=session, workspace_id=workspace_id, user_id=user_id)
    campaign = _locked(session, workspace_id, campaign_id)
    run = send_records._latest_run(session, workspace_id, campaign_id)
    if campaign.status == to:
        return campaign, run, False
    text = reason or f"{verb} by {_who(session, user_id, source)} at {_stamp(utcnow())}."
    previous = str(campaign.status)
    campaign_status.transition(
        session=session, campaign=campaign, to=to, user_id=user_id, source=source, reason=text
    )
    details: dict = {"from": previous, "reason": text, "run_id": run.id if run else None}
    if run is not None:
        counters = send_records.run_counters(
            session=session, workspace_id=workspace_id, run_id=run.id
        )
        details.update(sent=counters.sent, remaining=counters.remaining)
    audit.record(
        session=session, action=action, source=source, workspace_id=workspace_id,
        user_id=user_id, target_type="campaign", target_id=campaign_id, details=details,
    )  # fmt: skip
    return campaign, run, True


# --- controls -----------------------------------------------------------------------------------


def resend_unknown(
    *,
    session: Session,
    workspace_id: int,
    campaign_id: int,
    user_id: int | None,
    source: Source | str = Source.UI,
    record_ids: list[int] | None = None,
) -> int:
    """A person's decision to send again the messages of unknown outcome of the latest
    send (all, or `record_ids`): some may reach their recipient twice, which is why the
    app never does it by itself. A completed send starts sending again; a paused one
    sends them when resumed. Returns how many were queued again."""
    check_role(session=session, workspace_id=workspace_id, user_id=user_id)
    campaign = _locked(session, workspace_id, campaign_id)
    run = send_records._latest_run(session, workspace_id, campaign_id)
    if run is None or campaign.status not in (S.SENDING, S.PAUSED, S.COMPLETED, S.QUEUED):
        raise InvalidInput("Only the messages of a send that went ahead can be sent again.")
    ids = send_records.requeue_unknown(
        session, workspace_id=workspace_id, run_id=run.id, record_ids=record_ids
    )
    if not ids:
        return 0
    who = _who(session, user_id, source)
    if campaign.status == S.COMPLETED:
        campaign_status.transition(
            session=session, campaign=campaign, to=S.SENDING, user_id=user_id, source=source,
            reason=f"Sending again {len(ids)} messages of unknown outcome, as {who} chose.",
        )  # fmt: skip
        session.execute(
            sa.update(CampaignRun)
            .where(CampaignRun.id == run.id)
            .values(status="sending", finished_at=None)
        )
    audit.record(
        session=session, action="campaign.resend_unknown", source=source,
        workspace_id=workspace_id, user_id=user_id, target_type="campaign",
        target_id=campaign_id, details={"run_id": run.id, "records": ids},
    )  # fmt: skip
    if campaign.status in ACTIVE:
        _wake_after_commit(session, run.id)
    return len(ids)


def start_send(
    *,
    session: Session,
    workspace_id: int,
    campaign_id: int,
    user_id: int | None,
    source: Source | str = Source.UI,
) -> CampaignRun:
    """Send the campaign: approve it if it is still in review (CampaignNotReady with
    every blocker if it may not be), queue one send record per message, and wake the
    workers after the commit.

    A campaign already queued, sending, paused or completed keeps its run (returned,
    nothing added); any other status is refused in plain words.
    """
    check_role(session=session, workspace_id=workspace_id, user_id=user_id)
    campaign = campaigns.get_campaign(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id
    )
    was = str(campaign.status)
    if was == S.IN_REVIEW:
        review.approve_campaign(
            session=session, workspace_id=workspace_id, campaign_id=campaign_id,
            user_id=user_id, source=source,
        )  # fmt: skip
    run = send_records.queue_campaign(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id, user_id=user_id,
        source=source,
    )  # fmt: skip
    if was in _QUEUEABLE:
        counters = send_records.run_counters(
            session=session, workspace_id=workspace_id, run_id=run.id
        )
        audit.record(
            session=session, action="campaign.send", source=source, workspace_id=workspace_id,
            user_id=user_id, target_type="campaign", target_id=campaign_id,
            details={"run_id": run.id, "messages": counters.total, "approved_now":
                     was == S.IN_REVIEW},
        )  # fmt: skip
    if campaign.status in ACTIVE:
        _wake_after_commit(session, run.id)
    return run


def pause_send(
    *,
    session: Session,
    workspace_id: int,
    campaign_id: int,
    user_id: int | None,
    source: Source | str = Source.UI,
    reason: str | None = None,
) -> Campaign:
    """Pause a queued or sending campaign: workers stop before their next batch (the
    batch in hand finishes). `reason` replaces "Paused by <who> at <time>." (for an
    automatic pause, say why). Pausing a paused campaign changes nothing."""
    campaign, _run, _moved = _move(
        session, workspace_id=workspace_id, campaign_id=campaign_id, user_id=user_id,
        source=source, to=S.PAUSED, action="campaign.pause", reason=reason, verb="Paused",
    )  # fmt: skip
    return campaign


def resume_send(
    *,
    session: Session,
    workspace_id: int,
    campaign_id: int,
    user_id: int | None,
    source: Source | str = Source.UI,
) -> Campaign:
    """Resume a paused campaign (paused -> sending) and wake its workers after the
    commit. Only records still queued are sent: nothing is ever sent twice. A campaign
    already queued or sending is only woken again; any other status is refused."""
    check_role(session=session, workspace_id=workspace_id, user_id=user_id)
    current = _locked(session, workspace_id, campaign_id)
    if current.status in ACTIVE:
        run = send_records._latest_run(session, workspace_id, campaign_id)
        if run is not None:
            _wake_after_commit(session, run.id)
        return current
    if current.status != S.PAUSED:
        raise campaign_status.IllegalTransition(
            campaign_status.refusal(current.status, S.SENDING, current),
            from_status=current.status, to_status=S.SENDING,
        )  # fmt: skip
    campaign, run, _moved = _move(
        session, workspace_id=workspace_id, campaign_id=campaign_id, user_id=user_id,
        source=source, to=S.SENDING, action="campaign.resume", reason=None, verb="Resumed",
    )  # fmt: skip
    if run is not None:
        _wake_after_commit(session, run.id)
    return campaign


def cancel_send(
    *,
    session: Session,
    workspace_id: int,
    campaign_id: int,
    user_id: int | None,
    source: Source | str = Source.UI,
    reason: str | None = None,
) -> Campaign:
    """Cancel the send for good: workers stop before their next batch; records still
    queued are never sent (they stay queued and are reported as not sent). It cannot
    be undone. Cancelling a cancelled campaign changes nothing."""
    campaign, _run, _moved = _move(
        session, workspace_id=workspace_id, campaign_id=campaign_id, user_id=user_id,
        source=source, to=S.CANCELLED, action="campaign.cancel", reason=reason,
        verb="Cancelled",
    )  # fmt: skip
    return campaign


# --- progress -----------------------------------------------------------------------------------


def send_progress(*, session: Session, workspace_id: int, campaign_id: int) -> SendProgress | None:
    """Where the campaign's latest send stands (None when it was never queued).

    The rate counts messages sent over the last minute (over less when the first was
    sent more recently, at least MIN_RATE_SPAN); the ETA divides what remains by it.
    """
    campaign = campaigns.get_campaign(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id
    )
    run = send_records._latest_run(session, workspace_id, campaign_id)
    if run is None:
        return None
    counters = send_records.run_counters(session=session, workspace_id=workspace_id, run_id=run.id)
    col = SendRecord.__table__.c
    scope = (col.workspace_id == workspace_id, col.run_id == run.id)
    now = utcnow()
    window_start = now - RATE_WINDOW
    recent, first_sent = session.execute(
        sa.select(
            sa.func.count().filter(col.sent_at >= window_start),
            sa.func.min(col.sent_at),
        ).where(*scope, col.status == SendStatus.SENT)
    ).one()
    rate = 0.0
    if recent and first_sent is not None:
        span = now - max(window_start, first_sent)
        rate = recent * 60 / max(span, MIN_RATE_SPAN).total_seconds()
    seeds_total, seeds_sent = session.execute(
        sa.select(
            sa.func.count(),
            sa.func.count().filter(col.status == SendStatus.SENT),
        ).where(*scope, col.is_seed.is_(True))
    ).one()
    status = str(campaign.status)
    cancelled = status == S.CANCELLED
    remaining = counters.sending if cancelled else counters.remaining
    not_sent = counters.queued if cancelled else 0
    eta: int | None = None
    if status in ACTIVE and rate > 0:
        eta = round(remaining * 60 / rate)
    done = counters.sent + counters.failed + counters.unknown
    moves = campaign_status.allowed_moves(campaign)
    failures, reasons = _failures(session, scope)
    return SendProgress(
        campaign_id=campaign.id,
        campaign_name=campaign.name,
        status=status,
        status_reason=campaign.status_reason,
        run_id=run.id,
        started_at=run.started_at,
        finished_at=run.finished_at,
        sent=counters.sent,
        failed=counters.failed,
        unknown=counters.unknown,
        queued=counters.queued,
        sending=counters.sending,
        total=counters.total,
        remaining=remaining,
        not_sent=not_sent,
        percent=round(100 * done / counters.total, 1) if counters.total else 100.0,
        rate_per_minute=round(rate, 1),
        eta_seconds=eta,
        seeds_sent=seeds_sent,
        seeds_total=seeds_total,
        can_pause=S.PAUSED in moves,
        can_resume=status == S.PAUSED and S.SENDING in moves,
        can_cancel=S.CANCELLED in moves,
        failures=failures,
        failure_reasons=reasons,
        unknown_records=_unknown(session, scope),
    )


def _failures(session: Session, scope) -> tuple[list[FailureGroup], int]:
    col = SendRecord.__table__.c
    count = sa.func.count().label("n")
    rows = session.execute(
        sa.select(col.last_error, count)
        .where(*scope, col.status == SendStatus.FAILED)
        .group_by(col.last_error)
        .order_by(count.desc(), sa.func.coalesce(col.last_error, ""))
    ).all()
    groups = [FailureGroup(reason=error or NO_REASON, count=n) for error, n in rows]
    return groups[:TOP_FAILURES], len(groups)


def _unknown(session: Session, scope) -> list[UnknownRecord]:
    col = SendRecord.__table__.c
    rows = session.execute(
        sa.select(col.id, col.email, col.last_error, col.submitted_at)
        .where(*scope, col.status == SendStatus.UNKNOWN)
        .order_by(col.id)
        .limit(MAX_UNKNOWN)
    ).all()
    return [UnknownRecord(id=i, email=e, last_error=err, submitted_at=at) for i, e, err, at in rows]
