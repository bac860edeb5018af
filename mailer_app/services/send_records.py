"""Send records: the queue of record for sending a campaign.

Queueing an approved campaign (`queue_campaign`) creates one `CampaignRun` for its
published version and one `SendRecord` per message that may go out (ready, warning,
or needs_review a person approved; never blocked, excluded, inactive or excluded by
a person), in one INSERT ... SELECT from the built messages. Queueing again returns
the same run.

A record moves only forward, through `mark`:

    queued  -> sending                      (claimed by a worker: `claim_batch`)
    sending -> sent | failed | unknown      (the SMTP answer, or no answer)
    sending -> queued                       (retry later, at `next_attempt_at`)

Workers claim records in batches with one conditional UPDATE (FOR UPDATE SKIP LOCKED
on PostgreSQL, BEGIN IMMEDIATE on SQLite), so two workers never claim the same row.
Suppressions (unsubscribes included) are checked again at claim time: a suppressed
record fails with "suppressed before sending" and is never sent.

Redis and RQ only wake workers up; the database is the truth. `reconcile` turns
records left in `sending` by a crashed worker into `unknown` (they may have been
sent: never re-sent automatically) and names the runs with due queued records, so
the scheduler can enqueue a job for the ones no job covers.

Every SMTP attempt is kept (`record_attempt`): code, enhanced status, reply,
duration, worker and outcome.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, select

from mailer_app.mail.seed_copy import SeedContent, seed_message_id
from mailer_app.models import (
    AppendStatus,
    BuiltMessage,
    Campaign,
    CampaignRun,
    CampaignStatus,
    CampaignVersion,
    PlacementResult,
    ReviewDecision,
    ReviewStatus,
    RunKind,
    SeedAccount,
    SeedListMember,
    SeedStatus,
    SendAttempt,
    SenderAccount,
    SendRecord,
    SendStatus,
    Source,
    Suppression,
    utcnow,
)
from mailer_app.services import (
    InvalidInput,
    NotFoundError,
    audit,
    campaign_status,
    campaigns,
    placement,
)

SUPPRESSED_BEFORE_SENDING = "suppressed before sending"
RESENT_BY_A_PERSON = "Queued again by a person after an unknown outcome."
STUCK_IN_SENDING = (
    "The worker sending this message stopped before it knew the answer: it may or may "
    "not have been delivered, so it is not sent again automatically."
)
# Campaign statuses in which queued records are due to be sent.
ACTIVE_CAMPAIGN = (CampaignStatus.QUEUED, CampaignStatus.SENDING)
# Campaign statuses in which queueing again returns the run already made.
_ALREADY_QUEUED = (
    CampaignStatus.QUEUED,
    CampaignStatus.SENDING,
    CampaignStatus.PAUSED,
    CampaignStatus.COMPLETED,
)

_S = SendStatus
MOVES: dict[str, frozenset[str]] = {
    _S.QUEUED: frozenset({_S.SENDING}),
    _S.SENDING: frozenset({_S.SENT, _S.FAILED, _S.UNKNOWN, _S.QUEUED}),
    _S.SENT: frozenset(),
    _S.FAILED: frozenset(),
    _S.UNKNOWN: frozenset(),
}
_LABEL = {
    _S.QUEUED: "queued",
    _S.SENDING: "being sent",
    _S.SENT: "sent",
    _S.FAILED: "failed",
    _S.UNKNOWN: "of unknown outcome",
}
_TARGET = {
    _S.QUEUED: "queued again",
    _S.SENDING: "sending",
    _S.SENT: "sent",
    _S.FAILED: "failed",
    _S.UNKNOWN: "unknown",
}
_OUTCOMES = ("sent", "retry", "failed", "unknown")

_records = SendRecord.__table__
_built = BuiltMessage.__table__
_suppressions = Suppression.__table__


class SendRecordNotFound(NotFoundError):
    """No send record with this id (in this workspace)."""


class IllegalSendTransition(InvalidInput):
    """A send record cannot move from `from_status` to `to_status`."""

    def __init__(self, message: str, *, from_status: str, to_status: str) -> None:
        super().__init__(message, field="status")
        self.from_status = from_status
        self.to_status = to_status


@dataclass(frozen=True)
class RunCounters:
    sent: int
    failed: int
    unknown: int
    queued: int
    sending: int
    total: int

    @property
    def remaining(self) -> int:
        return self.queued + self.sending


@dataclass(frozen=True)
class ReconcileResult:
    unknown_ids: list[int]  # handed to a server, no answer recorded: now `unknown`
    wake_run_ids: list[int]  # runs with due queued records and no job covering them
    requeued_ids: list[int] = field(default_factory=list)  # claimed, never handed over


@dataclass(frozen=True)
class Result:
    """What one SMTP attempt (or the lack of one) did to a record (see `record_results`)."""

    record_id: int
    status: str  # sent | failed | unknown | queued (try again at next_attempt_at)
    outcome: str  # the attempt's outcome: sent | retry | failed | unknown
    started_at: datetime
    duration_ms: int = 0
    smtp_code: int | None = None
    enhanced_status: str | None = None
    reply: str | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None
    sent_at: datetime | None = None


# --- queueing -----------------------------------------------------------------------------------


def _sendable():
    """Built messages that may go out (the same rule as review.review_counts)."""
    col = _built.c
    not_excluded = sa.or_(col.decision.is_(None), col.decision != ReviewDecision.EXCLUDED)
    return sa.or_(
        sa.and_(col.review_status.in_([ReviewStatus.READY, ReviewStatus.WARNING]), not_excluded),
        sa.and_(
            col.review_status == ReviewStatus.NEEDS_REVIEW,
            col.decision == ReviewDecision.APPROVED,
        ),
    )


def _latest_run(session: Session, workspace_id: int, campaign_id: int) -> CampaignRun | None:
    return session.exec(
        select(CampaignRun)
        .where(
            CampaignRun.workspace_id == workspace_id,
            CampaignRun.campaign_id == campaign_id,
            CampaignRun.kind == RunKind.SEND,
        )
        .order_by(CampaignRun.id.desc())
    ).first()


def _insert_records(
    session: Session,
    *,
    run: CampaignRun,
    append_status: str,
    user_id: int | None,
    source: str,
    seeds: Sequence[tuple[str, str]] = (),
) -> int:
    """One queued record per sendable built message of the new run's version, by
    INSERT ... SELECT (an anti-join against send_record here would rescan the rows
    being inserted: quadratic on PostgreSQL), and one per seed (address, Message-ID).

    Workers claim records in id order, so the seeds are spread through the send: a
    third before the first message, a third in the middle, the rest after the last.
    Returns the run's record count."""
    col = _built.c
    total = session.execute(
        sa.select(sa.func.count()).where(
            col.workspace_id == run.workspace_id, col.version_id == run.version_id, _sendable()
        )
    ).scalar_one()
    first_message = session.execute(
        sa.select(sa.func.min(col.id)).where(
            col.workspace_id == run.workspace_id, col.version_id == run.version_id, _sendable()
        )
    ).scalar_one()
    seeds = [s for s in seeds if first_message is not None]
    groups = [seeds[i::3] for i in range(3)] if len(seeds) >= 3 else [seeds[:1], [], seeds[1:]]
    half = total // 2
    args = {"run": run, "append_status": append_status, "user_id": user_id, "source": source}
    _insert_seeds(session, groups[0], built_id=first_message, **args)
    _insert_messages(session, limit=half, offset=0, **args)
    _insert_seeds(session, groups[1], built_id=first_message, **args)
    _insert_messages(session, limit=None, offset=half, **args)
    _insert_seeds(session, groups[2], built_id=first_message, **args)
    return session.execute(
        sa.select(sa.func.count()).select_from(_records).where(_records.c.run_id == run.id)
    ).scalar_one()


def _insert_seeds(
    session: Session,
    seeds: Sequence[tuple[str, str]],
    *,
    built_id: int | None,
    run: CampaignRun,
    append_status: str,
    user_id: int | None,
    source: str,
) -> None:
    if not seeds:
        return
    now = utcnow()
    session.execute(
        sa.insert(_records),
        [
            {
                "workspace_id": run.workspace_id,
                "created_at": now,
                "updated_at": now,
                "source": source,
                "created_by_id": user_id,
                "run_id": run.id,
                "built_message_id": built_id,
                "email": email,
                "is_seed": True,
                "status": str(SendStatus.QUEUED),
                "message_id": message_id,
                "attempt_count": 0,
                "append_status": str(AppendStatus.NOT_NEEDED),
            }  # fmt: skip
            for email, message_id in seeds
        ],
    )


def _insert_messages(
    session: Session,
    *,
    limit: int | None,
    offset: int,
    run: CampaignRun,
    append_status: str,
    user_id: int | None,
    source: str,
) -> None:
    if limit == 0:
        return
    now = utcnow()
    col = _built.c
    created = _records.c.created_at.type
    rows = sa.select(
        col.workspace_id,
        sa.literal(now, created),
        sa.literal(now, created),
        sa.literal(source, _records.c.source.type),
        sa.literal(user_id, sa.Integer) if user_id is not None else sa.null(),
        sa.literal(run.id, sa.Integer),
        col.id,
        col.email,
        sa.false(),
        sa.literal(str(SendStatus.QUEUED), _records.c.status.type),
        sa.func.nullif(col.message_id_header, ""),
        sa.literal(0, sa.Integer),
        sa.literal(append_status, _records.c.append_status.type),
    ).where(
        col.workspace_id == run.workspace_id,
        col.version_id == run.version_id,
        _sendable(),
    )
    if limit is not None or offset:
        rows = rows.order_by(col.id).limit(limit).offset(offset)
    else:
        rows = rows.order_by(col.id)
    names = [
        "workspace_id", "created_at", "updated_at", "source", "created_by_id", "run_id",
        "built_message_id", "email", "is_seed", "status", "message_id", "attempt_count",
        "append_status",
    ]  # fmt: skip
    session.execute(sa.insert(_records).from_select(names, rows))


def queue_campaign(
    *,
    session: Session,
    workspace_id: int,
    campaign_id: int,
    user_id: int | None,
    source: Source | str = Source.UI,
) -> CampaignRun:
    """Queue an approved campaign: approved -> queued, a run for its published version,
    one queued send record per message that may go out.

    Queueing a campaign already queued, sending, paused or completed returns its run
    (nothing is added). Any other status is refused with the status machine's plain
    reason. The caller commits.
    """
    campaign = session.exec(
        select(Campaign)
        .where(Campaign.workspace_id == workspace_id, Campaign.id == campaign_id)
        .with_for_update()
    ).first()
    if campaign is None:
        raise campaigns.CampaignNotFound("This campaign does not exist.")
    existing = _latest_run(session, workspace_id, campaign_id)
    if existing is not None and campaign.status in _ALREADY_QUEUED:
        return existing
    version = campaigns.latest_published(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id
    )
    if version is None:
        raise InvalidInput("Publish and approve the campaign first: it has no version to send.")
    campaign_status.transition(
        session=session, campaign=campaign, to=CampaignStatus.QUEUED, user_id=user_id,
        source=source, reason="Queued for sending.",
    )  # fmt: skip
    run = CampaignRun(
        workspace_id=workspace_id, campaign_id=campaign_id, version_id=version.id,
        kind=RunKind.SEND, status="queued", created_by_id=user_id, source=str(source),
    )  # fmt: skip
    session.add(run)
    session.flush()
    seeds = _seed_copies(session, version=version, run=run, user_id=user_id)
    added = _insert_records(
        session, run=run, append_status=_append_status(session, version), user_id=user_id,
        source=str(source), seeds=seeds,
    )  # fmt: skip
    audit.record(
        session=session, action="campaign.queue", source=source, workspace_id=workspace_id,
        user_id=user_id, target_type="campaign", target_id=campaign_id,
        details={"run_id": run.id, "version_id": version.id, "messages": added},
    )  # fmt: skip
    return run


def _seed_copies(
    session: Session, *, version: CampaignVersion, run: CampaignRun, user_id: int | None
) -> list[tuple[str, str]]:
    """When the version has a seed list: the run's placement run (its checks start as
    the seed copies go out) and each active seed's (address, Message-ID)."""
    if version.seed_list_id is None or version.sender_account_id is None:
        return []
    seed_ids = list(
        session.exec(
            select(SeedListMember.seed_id)
            .join(SeedAccount, SeedAccount.id == SeedListMember.seed_id)
            .where(
                SeedListMember.seed_list_id == version.seed_list_id,
                SeedAccount.workspace_id == run.workspace_id,
                SeedAccount.status == SeedStatus.ACTIVE,
            )
        )
    )
    if not seed_ids:
        return []
    recipients = set(
        session.exec(
            select(BuiltMessage.email).where(
                BuiltMessage.workspace_id == run.workspace_id,
                BuiltMessage.version_id == version.id,
            )
        )
    )
    placement_run = placement.trigger_placement_run(
        session=session, workspace_id=run.workspace_id, seed_ids=seed_ids,
        content=SeedContent(
            subject=version.subject or "(no subject)", html_body=version.html_body or "",
            text_body=version.text_body or "",
        ),
        sender_account_id=version.sender_account_id,
        idempotency_key=f"campaign-run-{run.id}", campaign_id=run.campaign_id,
        campaign_run_id=run.id, user_id=user_id, source=Source.JOB, send_copies=False,
    )  # fmt: skip
    sender = session.get(SenderAccount, version.sender_account_id)
    found = session.exec(
        select(SeedAccount.email, PlacementResult.token)
        .join(PlacementResult, PlacementResult.seed_id == SeedAccount.id)
        .where(PlacementResult.run_id == placement_run.id)
        .order_by(PlacementResult.id)
    ).all()
    return [
        (email.lower(), seed_message_id(token, sender.from_email))
        for email, token in found
        if email.lower() not in recipients
    ]


def _append_status(session: Session, version: CampaignVersion) -> str:
    """Pending when the version's sender account can append to a Sent folder (IMAP)."""
    if version.sender_account_id is None:
        return AppendStatus.NOT_NEEDED
    account = session.get(SenderAccount, version.sender_account_id)
    if account is not None and account.imap_host:
        return AppendStatus.PENDING
    return AppendStatus.NOT_NEEDED


# --- claiming -----------------------------------------------------------------------------------


def claim_batch(
    *, engine_or_session: Engine | Session, run_id: int, worker: str, limit: int
) -> list[int]:
    """Claim up to `limit` due queued records of a run for `worker` (queued -> sending)
    and return their ids, oldest first.

    One conditional UPDATE claims them, so two workers never get the same record.
    Claimed records whose address is suppressed now fail at once ("suppressed before
    sending") and are not returned. Given an Engine, the claim is committed here;
    given a Session, it is part of the caller's transaction (the caller commits).
    """
    if limit <= 0:
        return []
    if isinstance(engine_or_session, Session):
        conn = engine_or_session.connection()
        return _claim(conn, run_id=run_id, worker=worker, limit=limit)
    with engine_or_session.connect() as conn:
        claimed = _claim(conn, run_id=run_id, worker=worker, limit=limit)
        conn.commit()
    return claimed


def _claim(conn: Connection, *, run_id: int, worker: str, limit: int) -> list[int]:
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:
        raw = conn.connection.dbapi_connection
        if not raw.in_transaction:
            # Take the write lock before reading, so the read and the update see the
            # same rows whatever other workers do (a deferred transaction could fail
            # to upgrade its lock instead of waiting).
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    now = utcnow()
    col = _records.c
    due = (
        sa.select(col.id)
        .where(
            col.run_id == run_id,
            col.status == SendStatus.QUEUED,
            sa.or_(col.next_attempt_at.is_(None), col.next_attempt_at <= now),
        )
        .order_by(col.id)
        .limit(limit)
    )
    if sqlite:
        # The write lock is held: the subquery sees what the update changes.
        chosen = col.id.in_(due.scalar_subquery())
    else:
        # A CTE with FOR UPDATE is evaluated once (an IN subquery may be rescanned and,
        # skipping the rows it just locked, hand out more than `limit`).
        due_cte = due.with_for_update(skip_locked=True).cte("due")
        chosen = col.id == due_cte.c.id
    claimed = conn.execute(
        sa.update(_records)
        .where(chosen, col.status == SendStatus.QUEUED)
        .values(status=SendStatus.SENDING, claimed_by=worker, claimed_at=now, updated_at=now)
        .returning(col.id)
    ).scalars()
    ids = sorted(claimed)
    if not ids:
        return []
    suppressed = sa.exists(
        sa.select(sa.literal(1))
        .select_from(_suppressions)
        .where(
            _suppressions.c.workspace_id == col.workspace_id,
            _suppressions.c.email == col.email,
        )
    )
    failed = set(
        conn.execute(
            sa.update(_records)
            .where(col.id.in_(ids), col.status == SendStatus.SENDING, suppressed)
            .values(status=SendStatus.FAILED, last_error=SUPPRESSED_BEFORE_SENDING, updated_at=now)
            .returning(col.id)
        ).scalars()
    )
    return [i for i in ids if i not in failed]


# --- moves and attempts -------------------------------------------------------------------------


def refusal(from_status: str, to_status: str) -> str:
    who = _LABEL.get(from_status, from_status)
    what = _TARGET.get(to_status, to_status)
    return f"A message that is {who} cannot be marked {what}."


def _record(session: Session, record_id: int, workspace_id: int | None) -> SendRecord:
    # Always the row as it is now (another worker may have moved it since it was read).
    query = (
        select(SendRecord)
        .where(SendRecord.id == record_id)
        .execution_options(populate_existing=True)
    )
    if workspace_id is not None:
        query = query.where(SendRecord.workspace_id == workspace_id)
    record = session.exec(query).first()
    if record is None:
        raise SendRecordNotFound("This message is not in the send queue.")
    return record


def mark(
    *,
    session: Session,
    record_id: int,
    to: SendStatus | str,
    workspace_id: int | None = None,
    worker: str | None = None,
    error: str | None = None,
    next_attempt_at: datetime | None = None,
    sent_at: datetime | None = None,
) -> SendRecord:
    """Move a record forward (IllegalSendTransition for any other move).

    queued -> sending (with `worker`); sending -> sent (at `sent_at`, default now),
    failed or unknown (with `error`), or back to queued to be tried again at
    `next_attempt_at` (default now). The move is a conditional UPDATE on the status
    read, so a record another worker moved meanwhile is refused, not overwritten.
    The caller commits.
    """
    try:
        target = SendStatus(to)
    except ValueError:
        raise InvalidInput(f"There is no send status called {to!r}.", field="status") from None
    record = _record(session, record_id, workspace_id)
    current = record.status
    if target not in MOVES.get(current, frozenset()):
        raise IllegalSendTransition(refusal(current, target), from_status=current, to_status=target)
    now = utcnow()
    values: dict = {"status": target, "updated_at": now}
    if target == _S.SENDING:
        values.update(claimed_by=worker, claimed_at=now)
    elif target == _S.SENT:
        values.update(sent_at=sent_at or now, last_error=None, next_attempt_at=None)
    elif target in (_S.FAILED, _S.UNKNOWN):
        values.update(last_error=error)
    elif target == _S.QUEUED:
        values.update(
            next_attempt_at=next_attempt_at or now, last_error=error, claimed_by=None,
            claimed_at=None,
        )  # fmt: skip
    col = _records.c
    result = session.execute(
        sa.update(_records).where(col.id == record.id, col.status == current).values(**values)
    )
    if result.rowcount != 1:
        session.refresh(record)
        raise IllegalSendTransition(
            refusal(record.status, target), from_status=record.status, to_status=target
        )
    session.refresh(record)
    return record


def record_attempt(
    *,
    session: Session,
    record_id: int,
    outcome: str,
    started_at: datetime,
    duration_ms: int = 0,
    smtp_code: int | None = None,
    enhanced_status: str | None = None,
    reply: str | None = None,
    worker: str | None = None,
    workspace_id: int | None = None,
) -> SendAttempt:
    """Log one SMTP attempt for a record (outcome: sent, retry, failed or unknown) and
    count it on the record. The caller commits."""
    if outcome not in _OUTCOMES:
        raise InvalidInput(f"An attempt's outcome is one of {', '.join(_OUTCOMES)}.")
    record = _record(session, record_id, workspace_id)
    attempt = SendAttempt(
        workspace_id=record.workspace_id, send_record_id=record.id, started_at=started_at,
        duration_ms=max(0, int(duration_ms)), smtp_code=smtp_code,
        enhanced_status=(enhanced_status or None) and enhanced_status[:16],
        reply=reply, outcome=outcome, worker=worker and worker[:128], source=Source.JOB,
    )  # fmt: skip
    session.add(attempt)
    session.execute(
        sa.update(_records)
        .where(_records.c.id == record.id)
        .values(attempt_count=_records.c.attempt_count + 1)
    )
    session.flush()
    return attempt


def attempts(*, session: Session, workspace_id: int, record_id: int) -> list[SendAttempt]:
    """A record's attempts, oldest first."""
    return list(
        session.exec(
            select(SendAttempt)
            .where(
                SendAttempt.workspace_id == workspace_id,
                SendAttempt.send_record_id == record_id,
            )
            .order_by(SendAttempt.id)
        ).all()
    )


# --- the sender's bulk moves --------------------------------------------------------------------


# The sender's hot path runs these once per message: built once here, with bind
# parameters, and executed on the session's connection (no ORM work per call).
_c = _records.c
_STAMP = (
    sa.update(_records)
    .where(
        _c.id == sa.bindparam("rid"),
        _c.status == SendStatus.SENDING,
        _c.claimed_by == sa.bindparam("worker"),
        _c.submitted_at.is_(None),
    )
    .values(submitted_at=sa.bindparam("at"), updated_at=sa.bindparam("at"))
)
_MINE = (
    _c.id == sa.bindparam("rid"),
    _c.status == SendStatus.SENDING,
    _c.claimed_by == sa.bindparam("worker"),
)
_COMMON = {
    "status": sa.bindparam("new_status"),
    "attempt_count": _c.attempt_count + 1,
    "last_error": sa.bindparam("new_error"),
    "updated_at": sa.bindparam("now"),
}
_TO_SENT = (
    sa.update(_records)
    .where(*_MINE)
    .values(**_COMMON, sent_at=sa.bindparam("new_sent_at"), next_attempt_at=None)
)
_TO_QUEUED = (
    sa.update(_records)
    .where(*_MINE)
    .values(
        **_COMMON,
        next_attempt_at=sa.bindparam("new_next"),
        claimed_by=None,
        claimed_at=None,
        submitted_at=None,
    )  # fmt: skip
)
_TO_ENDED = sa.update(_records).where(*_MINE).values(**_COMMON)  # failed, unknown
_ADD_ATTEMPTS = sa.insert(SendAttempt.__table__)


def mark_submitted(session: Session, *, record_id: int, worker: str, at: datetime) -> bool:
    """Stamp a claimed record as being handed to the server now (the caller commits
    BEFORE sending). False when it is no longer this worker's claim (the reconciler
    took it back): then it must not be sent."""
    result = session.connection().execute(_STAMP, {"rid": record_id, "worker": worker, "at": at})
    return result.rowcount == 1


def release(
    session: Session,
    *,
    record_ids: Collection[int],
    worker: str,
    next_attempt_at: datetime | None = None,
    error: str | None = None,
) -> int:
    """Give claimed records that were never handed to a server back to the queue (due
    at `next_attempt_at`, default now). Returns how many. The caller commits."""
    if not record_ids:
        return 0
    now = utcnow()
    col = _records.c
    values: dict = {
        "status": SendStatus.QUEUED, "claimed_by": None, "claimed_at": None,
        "submitted_at": None, "next_attempt_at": next_attempt_at or now, "updated_at": now,
    }  # fmt: skip
    if error is not None:
        values["last_error"] = error
    result = session.execute(
        sa.update(_records)
        .where(
            col.id.in_(list(record_ids)), col.status == SendStatus.SENDING, col.claimed_by == worker
        )
        .values(**values)
    )
    return result.rowcount


def record_results(
    session: Session, *, workspace_id: int, worker: str, results: Collection[Result]
) -> None:
    """Write the outcome of several attempts at once: one attempt row each, and each
    record moved from `sending` (claimed by `worker`) to its new status. A record no
    longer in `sending` for this worker (the reconciler took it) keeps its status; its
    attempt is still logged. The caller commits."""
    if not results:
        return
    now = utcnow()
    conn = session.connection()
    attempts = [
        {
            "workspace_id": workspace_id,
            "created_at": now,
            "updated_at": now,
            "source": str(Source.JOB),
            "created_by_id": None,
            "send_record_id": r.record_id,
            "started_at": r.started_at,
            "duration_ms": max(0, int(r.duration_ms)),
            "smtp_code": r.smtp_code,
            "enhanced_status": (r.enhanced_status or None) and r.enhanced_status[:16],
            "reply": r.reply,
            "outcome": r.outcome,
            "worker": worker[:128],
        }  # fmt: skip
        for r in results
        if r.outcome in _OUTCOMES
    ]
    if attempts:
        conn.execute(_ADD_ATTEMPTS, attempts)
    for statement, wanted in (
        (_TO_SENT, (SendStatus.SENT,)),
        (_TO_QUEUED, (SendStatus.QUEUED,)),
        (_TO_ENDED, (SendStatus.FAILED, SendStatus.UNKNOWN)),
    ):
        rows = [
            {
                "rid": r.record_id,
                "worker": worker,
                "new_status": str(r.status),
                "new_error": r.error,
                "now": now,
                "new_sent_at": r.sent_at or now,
                "new_next": r.next_attempt_at or now,
            }  # fmt: skip
            for r in results
            if r.status in wanted
        ]
        if rows:
            conn.execute(statement, rows)


def requeue_unknown(
    session: Session, *, workspace_id: int, run_id: int, record_ids: Collection[int] | None = None
) -> list[int]:
    """Queue again records of unknown outcome (all of the run's, or those listed).

    The one move backwards a record can make, and only on a person's explicit decision
    (send_control.resend_unknown): the app never re-sends an `unknown` record by itself.
    Their attempts stay logged. Returns the ids queued again. The caller commits."""
    now = utcnow()
    col = _records.c
    chosen = [col.id.in_(list(record_ids))] if record_ids is not None else []
    moved = session.execute(
        sa.update(_records)
        .where(
            col.workspace_id == workspace_id, col.run_id == run_id,
            col.status == SendStatus.UNKNOWN, *chosen,
        )
        .values(
            status=SendStatus.QUEUED, claimed_by=None, claimed_at=None, submitted_at=None,
            next_attempt_at=now, last_error=RESENT_BY_A_PERSON, updated_at=now,
        )
        .returning(col.id)
    ).scalars()  # fmt: skip
    return sorted(moved)


# --- reconciling and counting -------------------------------------------------------------------


def reconcile(
    *,
    session: Session,
    stuck_after: timedelta,
    requeue_after: timedelta | None = None,
    covered_run_ids: Collection[int] = (),
    workspace_id: int | None = None,
) -> ReconcileResult:
    """Put right what crashed workers left in `sending`, and name the runs to wake.

    A record handed to the server (`submitted_at`) more than `stuck_after` ago with no
    answer recorded becomes `unknown` (it may have been delivered: never re-sent
    automatically). A record claimed more than `requeue_after` (default `stuck_after`)
    ago but never handed over goes back to the queue: it cannot have been sent.
    Returns them, and the runs of queued or sending campaigns that have due queued
    records and are not in `covered_run_ids` (the runs a job is known to cover), which
    need a worker woken up. The caller commits."""
    now = utcnow()
    col = _records.c
    scope = [col.workspace_id == workspace_id] if workspace_id is not None else []
    stuck = session.execute(
        sa.update(_records)
        .where(
            *scope,
            col.status == SendStatus.SENDING,
            col.submitted_at.is_not(None),
            col.submitted_at < now - stuck_after,
        )
        .values(status=SendStatus.UNKNOWN, last_error=STUCK_IN_SENDING, updated_at=now)
        .returning(col.id)
    ).scalars()
    unknown_ids = sorted(stuck)
    requeued = session.execute(
        sa.update(_records)
        .where(
            *scope,
            col.status == SendStatus.SENDING,
            col.submitted_at.is_(None),
            col.claimed_at < now - (requeue_after if requeue_after is not None else stuck_after),
        )
        .values(
            status=SendStatus.QUEUED,
            claimed_by=None,
            claimed_at=None,
            next_attempt_at=now,
            updated_at=now,
        )  # fmt: skip
        .returning(col.id)
    ).scalars()
    requeued_ids = sorted(requeued)
    runs = CampaignRun.__table__
    waiting = session.execute(
        sa.select(col.run_id)
        .distinct()
        .join(runs, runs.c.id == col.run_id)
        .join(Campaign.__table__, Campaign.__table__.c.id == runs.c.campaign_id)
        .where(
            *scope,
            col.status == SendStatus.QUEUED,
            sa.or_(col.next_attempt_at.is_(None), col.next_attempt_at <= now),
            Campaign.__table__.c.status.in_(ACTIVE_CAMPAIGN),
        )
    ).scalars()
    covered = set(covered_run_ids)
    wake = sorted(r for r in waiting if r not in covered)
    return ReconcileResult(unknown_ids=unknown_ids, wake_run_ids=wake, requeued_ids=requeued_ids)


def run_counters(*, session: Session, workspace_id: int, run_id: int) -> RunCounters:
    """How many records of a run are in each status, and in all."""
    col = _records.c
    counts = {str(s): 0 for s in SendStatus}
    for status, count in session.execute(
        sa.select(col.status, sa.func.count())
        .where(col.workspace_id == workspace_id, col.run_id == run_id)
        .group_by(col.status)
    ).all():
        counts[status] = count
    return RunCounters(
        sent=counts[_S.SENT],
        failed=counts[_S.FAILED],
        unknown=counts[_S.UNKNOWN],
        queued=counts[_S.QUEUED],
        sending=counts[_S.SENDING],
        total=sum(counts.values()),
    )


def get_run(*, session: Session, workspace_id: int, run_id: int) -> CampaignRun:
    run = session.exec(
        select(CampaignRun).where(
            CampaignRun.workspace_id == workspace_id, CampaignRun.id == run_id
        )
    ).first()
    if run is None:
        raise NotFoundError("This send does not exist.")
    return run
