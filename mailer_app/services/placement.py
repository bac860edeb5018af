"""Placement runs: send each seed its own copy, look for it later, record where it landed.

The life of a run (PRODUCT.md, "placement run"):

1. `trigger_placement_run` creates the run and one pending result per seed (each
   with its own token), once per idempotency key, and queues the send job after
   the transaction commits.
2. `send_run_copies` (the send job) claims each unsent result (`sent_at IS NULL`
   -> now, so a retried or duplicated job never sends a copy twice), submits the
   copies over one SMTP connection and schedules the checks with rq-scheduler at
   the run's offsets from the last `sent_at`.
3. `check_run` (a check job, one per offset) claims attempt N of each pending
   result (`attempts < N` -> N) so two workers running the same check look once,
   searches the seed's mailbox and moves the result from pending to a terminal
   placement with a conditional UPDATE: exactly one terminal value per (run, seed),
   whatever races. Not found stays pending until the final check, which records
   `missing`. A refused login marks the seed `auth_expired`, raises an alert and
   ends that seed's pending results as `error`.
4. When nothing is pending the run completes and the alert rules are evaluated.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from mailer_app.db import after_commit, session_scope
from mailer_app.mail.imap import (
    FolderMap,
    FoundMessage,
    ImapEndpoint,
    MailboxAuthError,
    MailboxPool,
    MailboxUnavailable,
)
from mailer_app.mail.seed_copy import SeedContent, build_seed_copy, seed_message_id
from mailer_app.mail.smtp import OutgoingMessage, SmtpAuthError, SmtpEndpoint, submit_messages
from mailer_app.models import (
    AlertKind,
    Placement,
    PlacementCheck,
    PlacementResult,
    PlacementRun,
    PlacementRunKind,
    SeedAccount,
    SeedList,
    SeedListMember,
    SeedStatus,
    SenderAccount,
    Source,
    utcnow,
)
from mailer_app.services import InvalidInput, NotFoundError, audit
from mailer_app.services import secrets as secret_store
from mailer_app.services.alerts import (
    evaluate_early_alerts,
    evaluate_placement_alerts,
    raise_alert,
)
from mailer_app.services.esp import canonical_esp
from mailer_app.services.seeds import endpoint_for_seed
from mailer_app.settings import get_settings

log = logging.getLogger(__name__)

RUN_ACTIVE = "active"
RUN_COMPLETED = "completed"

# How many seed mailboxes one check job looks into at once. IMAP round trips are
# mostly waiting, so a few threads multiply throughput; more would only open more
# connections per provider than providers like.
CHECK_CONCURRENCY = 8
# Retries of one look inside a check's window: exponential backoff with full jitter.
RETRY_BASE_SECONDS = 0.5
RETRY_CAP_SECONDS = 15.0
RETRY_MAX_TRIES = 6
# The window the final check may spend retrying (there is no next check to wait for).
FINAL_RETRY_WINDOW_SECONDS = 120.0
# A due-only check also takes copies sent this much after its own due time (clock
# rounding between the database and this process).
DUE_SLACK = timedelta(seconds=1)

# --- creating a run ------------------------------------------------------------


def trigger_placement_run(
    *,
    session: Session,
    workspace_id: int,
    seed_ids: Sequence[int],
    content: SeedContent,
    sender_account_id: int,
    idempotency_key: str,
    campaign_id: int | None = None,
    campaign_run_id: int | None = None,
    kind: str = PlacementRunKind.SEND,
    check_offsets_min: Sequence[float] | None = None,
    user_id: int | None = None,
    source: str = Source.SYSTEM,
    send_copies: bool = True,
) -> PlacementRun:
    """Create a run sending `content` to each seed and checking where it lands.

    The same `idempotency_key` twice (in the workspace) returns the first run and
    sends nothing more. Only active seeds are included; the send job is queued
    when the caller's transaction commits. With `send_copies=False` nothing is sent
    here: a campaign's send delivers the seed copies among its own messages and
    records each one's `sent_at` (`seed_copies_sent`).
    """
    key = (idempotency_key or "").strip()
    if not key or len(key) > 128:
        raise InvalidInput("An idempotency key of 1 to 128 characters is required.", field="key")
    existing = _run_by_key(session, workspace_id, key)
    if existing is not None:
        return existing

    _validate_content(content)
    sender = session.get(SenderAccount, sender_account_id)
    if sender is None or sender.workspace_id != workspace_id:
        raise NotFoundError("That sender account does not exist.")
    seeds = _active_seeds(session, workspace_id, seed_ids)
    offsets = _valid_offsets(check_offsets_min)

    run = PlacementRun(
        workspace_id=workspace_id,
        campaign_id=campaign_id,
        campaign_run_id=campaign_run_id,
        sender_account_id=sender.id,
        kind=kind,
        status=RUN_ACTIVE,
        idempotency_key=key,
        check_offsets_min=offsets,
        subject=content.subject,
        html_body=content.html_body,
        text_body=content.text_body,
        created_by_id=user_id,
        source=source,
    )
    try:
        # A savepoint: if another request inserted the same key in the meantime, the
        # unique constraint refuses ours and that run is the answer.
        with session.begin_nested():
            session.add(run)
            session.flush()
    except IntegrityError:
        existing = _run_by_key(session, workspace_id, key)
        if existing is None:
            raise
        return existing

    for seed in seeds:
        session.add(
            PlacementResult(
                workspace_id=workspace_id,
                run_id=run.id,
                seed_id=seed.id,
                esp=canonical_esp(seed.email),
                token=secrets.token_hex(16),
                created_by_id=user_id,
                source=source,
            )
        )
    session.flush()
    audit.record(
        session=session,
        workspace_id=workspace_id,
        user_id=user_id,
        action="placement_run.create",
        target_type="placement_run",
        target_id=run.id,
        details={"kind": kind, "seeds": len(seeds), "campaign_id": campaign_id},
        source=source,
    )
    run_id = run.id
    if send_copies:
        after_commit(session, lambda: queue_send(run_id))
    return run


def start_preflight(
    *,
    session: Session,
    workspace_id: int,
    user_id: int | None,
    sender_account_id: int,
    seed_list_id: int | None,
    subject: str,
    html_body: str = "",
    text_body: str = "",
    campaign_id: int | None = None,
    idempotency_key: str | None = None,
    source: str = Source.UI,
) -> PlacementRun:
    """A pre-flight test: the content goes to the seeds only, from the chosen sender.

    `seed_list_id` None means every active seed of the workspace.
    """
    return trigger_placement_run(
        session=session,
        workspace_id=workspace_id,
        seed_ids=preflight_seed_ids(
            session=session, workspace_id=workspace_id, seed_list_id=seed_list_id
        ),
        content=SeedContent(subject=subject, html_body=html_body, text_body=text_body),
        sender_account_id=sender_account_id,
        idempotency_key=idempotency_key or f"preflight:{secrets.token_hex(8)}",
        campaign_id=campaign_id,
        kind=PlacementRunKind.PREFLIGHT,
        user_id=user_id,
        source=source,
    )


def preflight_seed_ids(
    *, session: Session, workspace_id: int, seed_list_id: int | None
) -> list[int]:
    """The active seeds of a seed list, or of the whole workspace."""
    query = select(SeedAccount.id).where(
        SeedAccount.workspace_id == workspace_id, SeedAccount.status == SeedStatus.ACTIVE
    )
    if seed_list_id is not None:
        seed_list = session.get(SeedList, seed_list_id)
        if seed_list is None or seed_list.workspace_id != workspace_id:
            raise NotFoundError("That seed list does not exist.")
        query = query.join(SeedListMember, SeedListMember.seed_id == SeedAccount.id).where(
            SeedListMember.seed_list_id == seed_list_id
        )
    seed_ids = list(session.exec(query.order_by(SeedAccount.id)))
    if not seed_ids:
        raise InvalidInput(
            "There is no active seed mailbox to test with: add one, or resume a paused one.",
            field="seeds",
        )
    return seed_ids


def _run_by_key(session: Session, workspace_id: int, key: str) -> PlacementRun | None:
    return session.exec(
        select(PlacementRun).where(
            PlacementRun.workspace_id == workspace_id, PlacementRun.idempotency_key == key
        )
    ).first()


def _validate_content(content: SeedContent) -> None:
    if not content.subject.strip():
        raise InvalidInput("Write a subject line.", field="subject")
    if "\r" in content.subject or "\n" in content.subject:
        raise InvalidInput("The subject must be a single line.", field="subject")
    if len(content.subject) > 998:
        raise InvalidInput("The subject is too long (998 characters at most).", field="subject")
    if not (content.html_body.strip() or content.text_body.strip()):
        raise InvalidInput("Write the message body.", field="body")


def _active_seeds(
    session: Session, workspace_id: int, seed_ids: Sequence[int]
) -> list[SeedAccount]:
    wanted = sorted(set(seed_ids))
    if not wanted:
        raise InvalidInput("Choose at least one seed mailbox.", field="seeds")
    seeds = list(
        session.exec(
            select(SeedAccount)
            .where(SeedAccount.workspace_id == workspace_id, SeedAccount.id.in_(wanted))
            .order_by(SeedAccount.id)
        )
    )
    if len(seeds) != len(wanted):
        raise NotFoundError("Some of those seed mailboxes do not exist.")
    active = [s for s in seeds if s.status == SeedStatus.ACTIVE]
    if not active:
        raise InvalidInput(
            "None of the chosen seed mailboxes is active (paused or needing a new password).",
            field="seeds",
        )
    return active


def _valid_offsets(offsets: Sequence[float] | None) -> list[float]:
    chosen = list(offsets) if offsets else list(get_settings().placement_check_offsets)
    if not chosen or any(o <= 0 for o in chosen) or chosen != sorted(set(chosen)):
        raise InvalidInput("Check offsets must be increasing positive minutes.", field="offsets")
    return [float(o) for o in chosen]


# --- job plumbing (set by jobs.placement; tests may replace) ---------------------


def queue_send(run_id: int) -> None:
    from jobs.placement import enqueue_send

    enqueue_send(run_id)


def schedule_checks(
    run_id: int, due: Sequence[tuple[int, datetime]], *, group: str | None = None
) -> None:
    from jobs.placement import schedule_checks as schedule

    schedule(run_id, due, group=group)


def seed_copies_sent(
    *, session: Session, run_id: int, sent: Sequence[tuple[str, str, datetime]]
) -> list[tuple[int, datetime]]:
    """Record seed copies a campaign's send delivered: (token, Message-ID, sent_at) each.
    Returns the checks due for them (offsets from the last of these `sent_at`), which
    the caller schedules with `schedule_checks(..., group=...)` once this commits."""
    if not sent:
        return []
    run = session.get(PlacementRun, run_id)
    for token, message_id, sent_at in sent:
        session.exec(
            sa.update(PlacementResult)
            .where(
                PlacementResult.run_id == run_id,
                PlacementResult.token == token,
                PlacementResult.sent_at.is_(None),
            )
            .values(sent_at=sent_at, message_id=message_id)
        )
    last = max(at for _, _, at in sent)
    return [(i, last + timedelta(minutes=o)) for i, o in enumerate(run.check_offsets_min or [1.0])]


def seed_copies_failed(*, session: Session, run_id: int, failed: Sequence[tuple[str, str]]) -> None:
    """Seed copies a campaign's send could not deliver: (token, why) each -> error."""
    for token, why in failed:
        result = session.exec(
            select(PlacementResult).where(
                PlacementResult.run_id == run_id, PlacementResult.token == token
            )
        ).first()
        if result is not None:
            _decide(session, result.id, Placement.ERROR, error=why)
    _complete_if_done(session, run_id)


# --- sending the copies ----------------------------------------------------------


@dataclass(frozen=True)
class SendOutcome:
    run_id: int
    sent: int
    failed: int
    checks_due: list[tuple[int, datetime]] = field(default_factory=list)


class SenderUnavailable(Exception):
    """The sender's SMTP server could not be reached; the send job retries later."""


def send_run_copies(*, run_id: int, schedule: bool = True) -> SendOutcome:
    """Send every unsent seed copy of a run, then schedule its checks.

    Safe to run twice (a retried job, two workers): each copy is claimed before it
    is sent, so no seed gets two. Raises SenderUnavailable when the SMTP server
    cannot be reached (the claims are released first, so a retry sends them).
    """
    with session_scope() as session:
        run = session.get(PlacementRun, run_id)
        if run is None:
            raise NotFoundError(f"placement run {run_id} does not exist")
        sender = session.get(SenderAccount, run.sender_account_id)
        if sender is None:
            _end_pending(session, run_id, "The sender account was deleted before sending.")
            return SendOutcome(run_id, 0, 0)
        claimed_at = utcnow()
        claimed = list(
            session.exec(
                select(PlacementResult, SeedAccount)
                .join(SeedAccount, SeedAccount.id == PlacementResult.seed_id)
                .where(
                    PlacementResult.run_id == run_id,
                    PlacementResult.sent_at.is_(None),
                    PlacementResult.placement == Placement.PENDING,
                )
                .order_by(PlacementResult.id)
            )
        )
        claimed = [
            (result, seed)
            for result, seed in claimed
            if _claim_send(
                session, result.id, claimed_at, seed_message_id(result.token, sender.from_email)
            )
        ]
        password = (
            secret_store.reveal_secret(
                session=session, workspace_id=run.workspace_id, ref=sender.credential_ref
            )
            if sender.credential_ref
            else None
        )
        endpoint = SmtpEndpoint(
            host=sender.smtp_host,
            port=sender.smtp_port,
            security=sender.smtp_security,
            username=sender.smtp_username,
            password=password,
        )
        content = SeedContent(
            subject=run.subject or "", html_body=run.html_body or "", text_body=run.text_body or ""
        )
        messages = [
            OutgoingMessage(
                envelope_from=sender.from_email,
                recipients=(seed.email,),
                data=build_seed_copy(
                    content=content,
                    from_name=sender.from_name,
                    from_email=sender.from_email,
                    to_email=seed.email,
                    token=result.token,
                    reply_to=sender.reply_to,
                ),
            )
            for result, seed in claimed
        ]
        workspace_id, sender_id, offsets = run.workspace_id, sender.id, run.check_offsets_min
    # The claims are committed before anything leaves: a crash from here on can lose
    # a copy (it ends as missing), but can never send one twice.

    if not claimed:
        return SendOutcome(run_id, 0, 0)
    started = utcnow()
    try:
        results = submit_messages(endpoint, messages)
    except SmtpAuthError as exc:
        with session_scope() as session:
            _sender_auth_failed(session, workspace_id, sender_id, str(exc))
            for result, _ in claimed:
                _decide(session, result.id, Placement.ERROR, error=str(exc))
            _complete_if_done(session, run_id)
        return SendOutcome(run_id, 0, len(claimed))
    except Exception as exc:  # the connection itself: release the claims, retry later
        with session_scope() as session:
            session.exec(
                sa.update(PlacementResult)
                .where(PlacementResult.id.in_([r.id for r, _ in claimed]))
                .values(sent_at=None, message_id=None)
            )
        raise SenderUnavailable(f"Could not send through {endpoint.host}: {exc}") from exc

    sent = failed = 0
    elapsed_ms = 0
    with session_scope() as session:
        for (result, seed), outcome in zip(claimed, results, strict=True):
            elapsed_ms += outcome.duration_ms
            if outcome.ok:
                sent += 1
                session.exec(
                    sa.update(PlacementResult)
                    .where(PlacementResult.id == result.id)
                    .values(sent_at=started + timedelta(milliseconds=elapsed_ms))
                )
            else:
                failed += 1
                reason = outcome.refused.get(seed.email, (outcome.code, outcome.reply))
                _decide(
                    session,
                    result.id,
                    Placement.ERROR,
                    error=f"The sender's server refused the copy: {reason[0]} {reason[1]}".strip(),
                )
        _complete_if_done(session, run_id)
    last_sent = started + timedelta(milliseconds=elapsed_ms)
    due = [(index, last_sent + timedelta(minutes=o)) for index, o in enumerate(offsets)]
    if sent and schedule:
        schedule_checks(run_id, due)
    return SendOutcome(run_id, sent, failed, due if sent else [])


def _claim_send(session: Session, result_id: int, now: datetime, message_id: str) -> bool:
    claimed = session.exec(
        sa.update(PlacementResult)
        .where(PlacementResult.id == result_id, PlacementResult.sent_at.is_(None))
        .values(sent_at=now, message_id=message_id)
    )
    return claimed.rowcount == 1


def _sender_auth_failed(session: Session, workspace_id: int, sender_id: int, reason: str) -> None:
    session.exec(
        sa.update(SenderAccount)
        .where(SenderAccount.id == sender_id)
        .values(status="auth_failed", status_reason=reason)
    )
    raise_alert(
        session=session,
        workspace_id=workspace_id,
        kind=AlertKind.SENDER_AUTH_FAILED,
        message=f"The sender account's mail server refused its login: {reason}",
        dedupe_key=f"{AlertKind.SENDER_AUTH_FAILED}:sender-{sender_id}",
    )


# --- checking the seeds ----------------------------------------------------------


@dataclass(frozen=True)
class CheckOutcome:
    run_id: int
    check_index: int
    looked: int  # results this call claimed and looked for
    decided: dict[str, int]  # terminal placements recorded by this call
    skipped: int  # already decided, or claimed by another worker


@dataclass(frozen=True)
class _SeedTarget:
    result_id: int
    token: str
    message_id: str | None
    sent_at: datetime
    seed_id: int
    seed_email: str
    pool_key: str
    endpoint: ImapEndpoint
    folder_map: FolderMap | None


_default_pool: MailboxPool | None = None
_default_pool_lock = threading.Lock()


def default_pool() -> MailboxPool:
    """The process's kept-open mailboxes (a placement worker reuses them across checks)."""
    global _default_pool
    with _default_pool_lock:
        if _default_pool is None:
            _default_pool = MailboxPool()
        return _default_pool


def check_run(
    *,
    run_id: int,
    check_index: int,
    pool: MailboxPool | None = None,
    concurrency: int = CHECK_CONCURRENCY,
    retry_window_seconds: float | None = None,
    due_only: bool = False,
) -> CheckOutcome:
    """Look for every pending seed copy of a run (check number `check_index`).

    With `due_only`, only copies sent at least this check's offset ago are looked at:
    a campaign's seeds go out through the whole send, and a check scheduled for the
    first ones must not spend a later seed's attempts early."""
    pool = pool or default_pool()
    with session_scope() as session:
        run = session.get(PlacementRun, run_id)
        if run is None:
            raise NotFoundError(f"placement run {run_id} does not exist")
        offsets = run.check_offsets_min or [1.0]
        if not 0 <= check_index < len(offsets):
            raise ValueError(f"run {run_id} has no check number {check_index}")
        final = check_index == len(offsets) - 1
        window = retry_window_seconds
        if window is None:
            window = _retry_window(offsets, check_index)
        sent_before = None
        if due_only:
            sent_before = utcnow() - timedelta(minutes=offsets[check_index]) + DUE_SLACK
        targets = _targets(session, run, sent_before=sent_before)

    attempt = check_index + 1
    decided: dict[str, int] = {}
    looked = skipped = 0
    lock = threading.Lock()

    def check_one(target: _SeedTarget) -> None:
        nonlocal looked, skipped
        placement = _check_seed(target, attempt=attempt, final=final, pool=pool, window=window)
        with lock:
            if placement is _NOT_CLAIMED:
                skipped += 1
                return
            looked += 1
            if placement is not None:
                decided[placement] = decided.get(placement, 0) + 1

    workers = max(1, min(concurrency, len(targets)))
    if workers == 1:
        for target in targets:
            check_one(target)
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="seed-check") as executor:
            list(executor.map(check_one, targets))

    with session_scope() as session:
        if not _complete_if_done(session, run_id):
            evaluate_early_alerts(session=session, run_id=run_id, check_index=check_index)
    return CheckOutcome(run_id, check_index, looked, decided, skipped)


def _retry_window(offsets: Sequence[float], index: int) -> float:
    """Seconds a check may spend retrying: until shortly before the next check."""
    if index + 1 < len(offsets):
        return max(0.0, (offsets[index + 1] - offsets[index]) * 60 * 0.8)
    gap = offsets[index] - offsets[index - 1] if index > 0 else offsets[index]
    return min(FINAL_RETRY_WINDOW_SECONDS, max(0.0, gap * 60 * 0.8))


def _targets(
    session: Session, run: PlacementRun, *, sent_before: datetime | None = None
) -> list[_SeedTarget]:
    due = [PlacementResult.sent_at <= sent_before] if sent_before is not None else []
    rows = session.exec(
        select(PlacementResult, SeedAccount)
        .join(SeedAccount, SeedAccount.id == PlacementResult.seed_id)
        .where(
            PlacementResult.run_id == run.id,
            PlacementResult.placement == Placement.PENDING,
            PlacementResult.sent_at.is_not(None),
            *due,
        )
        .order_by(PlacementResult.id)
    )
    targets = []
    for result, seed in rows:
        if seed.status == SeedStatus.AUTH_EXPIRED:
            _decide(session, result.id, Placement.ERROR, error=_auth_expired_reason(seed))
            continue
        try:
            endpoint = endpoint_for_seed(session=session, workspace_id=seed.workspace_id, seed=seed)
        except (InvalidInput, ValueError) as exc:  # no password or server saved, bad settings
            _decide(session, result.id, Placement.ERROR, error=str(exc))
            continue
        targets.append(
            _SeedTarget(
                result_id=result.id,
                token=result.token,
                message_id=result.message_id,
                sent_at=result.sent_at,
                seed_id=seed.id,
                seed_email=seed.email,
                pool_key=f"{seed.id}:{seed.credential_ref}:{endpoint.host}:{endpoint.port}",
                endpoint=endpoint,
                folder_map=FolderMap.from_json(seed.folder_map),
            )
        )
    return targets


_NOT_CLAIMED = object()


def _check_seed(
    target: _SeedTarget, *, attempt: int, final: bool, pool: MailboxPool, window: float
) -> str | None | object:
    """One look for one seed's copy; returns the terminal placement it recorded, if any."""
    with session_scope() as session:
        claimed = session.exec(
            sa.update(PlacementResult)
            .where(
                PlacementResult.id == target.result_id,
                PlacementResult.placement == Placement.PENDING,
                PlacementResult.attempts < attempt,
            )
            .values(attempts=attempt)
        )
        if claimed.rowcount != 1:
            return _NOT_CLAIMED

    started = time.monotonic()
    found: FoundMessage | None = None
    failure: str | None = None
    auth_refused: str | None = None
    discovered: FolderMap | None = None
    tries = 0
    deadline = started + window
    while True:
        tries += 1
        try:
            mailbox = pool.mailbox(target.pool_key, target.endpoint)
            folder_map = target.folder_map
            if folder_map is None:
                folder_map = discovered = mailbox.discover_folders()
            found = mailbox.find(target.token, folder_map=folder_map, message_id=target.message_id)
            # A stored map naming a deleted folder was looked up again: keep the new one.
            discovered = mailbox.rediscovered or discovered
            failure = None
            break
        except MailboxAuthError as exc:
            pool.discard(target.pool_key)
            auth_refused = str(exc)
            break
        except MailboxUnavailable as exc:
            pool.discard(target.pool_key)
            failure = str(exc)
            pause = random.uniform(0, min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2 ** (tries - 1)))
            if tries >= RETRY_MAX_TRIES or time.monotonic() + pause > deadline:
                break
            time.sleep(pause)
    duration_ms = int((time.monotonic() - started) * 1000)
    now = utcnow()

    with session_scope() as session:
        if discovered is not None:
            session.exec(
                sa.update(SeedAccount)
                .where(SeedAccount.id == target.seed_id)
                .values(folder_map=discovered.to_json())
            )
        if auth_refused is not None:
            _seed_auth_expired(session, target.seed_id, auth_refused)
            _log_check(session, target, attempt, "error", None, {"auth": auth_refused}, duration_ms)
            return Placement.ERROR
        if found is not None:
            received = found.received_at or now
            recorded = _decide(
                session,
                target.result_id,
                found.placement,
                folder=found.folder,
                seconds_to_land=max(0.0, (received - target.sent_at).total_seconds()),
                spf=found.spf,
                dkim=found.dkim,
                dmarc=found.dmarc,
                now=now,
            )
            detail = {"tries": tries}
            _log_check(session, target, attempt, found.placement, found.folder, detail, duration_ms)
            _touch_seed(session, target.seed_id, now, found.placement if recorded else None)
            return found.placement if recorded else None
        if failure is not None:
            detail = {"error": failure, "tries": tries}
            _log_check(session, target, attempt, "error", None, detail, duration_ms)
            _touch_seed(session, target.seed_id, now, None)
            if final:
                _decide(
                    session,
                    target.result_id,
                    Placement.ERROR,
                    error=f"The mailbox could not be checked: {failure}",
                    now=now,
                )
                return Placement.ERROR
            return None
        _log_check(session, target, attempt, "not_found", None, {"tries": tries}, duration_ms)
        if final:
            recorded = _decide(session, target.result_id, Placement.MISSING, now=now)
            _touch_seed(session, target.seed_id, now, Placement.MISSING if recorded else None)
            return Placement.MISSING if recorded else None
        _touch_seed(session, target.seed_id, now, None)
        return None


def _decide(
    session: Session, result_id: int, placement: str, *, now: datetime | None = None, **values
) -> bool:
    """Move a result from pending to `placement`; False if it was already terminal."""
    changed = session.exec(
        sa.update(PlacementResult)
        .where(PlacementResult.id == result_id, PlacementResult.placement == Placement.PENDING)
        .values(placement=placement, decided_at=now or utcnow(), **values)
    )
    return changed.rowcount == 1


def _log_check(
    session: Session,
    target: _SeedTarget,
    attempt: int,
    outcome: str,
    folder: str | None,
    detail: dict,
    duration_ms: int,
) -> None:
    workspace_id = session.exec(
        select(PlacementResult.workspace_id).where(PlacementResult.id == target.result_id)
    ).one()
    session.add(
        PlacementCheck(
            workspace_id=workspace_id,
            result_id=target.result_id,
            attempt=attempt,
            outcome=outcome,
            folder=folder,
            detail=detail,
            duration_ms=duration_ms,
            source=Source.JOB,
        )
    )


def _touch_seed(session: Session, seed_id: int, now: datetime, placement: str | None) -> None:
    values: dict = {"last_checked_at": now}
    if placement is not None:
        values["last_placement"] = placement
    session.exec(sa.update(SeedAccount).where(SeedAccount.id == seed_id).values(**values))


def _auth_expired_reason(seed: SeedAccount) -> str:
    return f"The seed mailbox refused its login ({seed.status_reason or 'password expired'})."


def _seed_auth_expired(session: Session, seed_id: int, reason: str) -> None:
    """Stop using a seed whose login was refused: status, alert, its pending results."""
    seed = session.get(SeedAccount, seed_id)
    if seed is None:
        return
    session.exec(
        sa.update(SeedAccount)
        .where(SeedAccount.id == seed_id, SeedAccount.status != SeedStatus.AUTH_EXPIRED)
        .values(status=SeedStatus.AUTH_EXPIRED, status_reason=reason)
    )
    raise_alert(
        session=session,
        workspace_id=seed.workspace_id,
        kind=AlertKind.SEED_AUTH_EXPIRED,
        message=(
            f"The seed mailbox {seed.email} refused its login; its checks are stopped until "
            f"the password is updated. ({reason})"
        ),
        dedupe_key=f"{AlertKind.SEED_AUTH_EXPIRED}:seed-{seed_id}:{seed.credential_ref}",
        seed_id=seed_id,
        esp=seed.esp,
    )
    session.exec(
        sa.update(PlacementResult)
        .where(PlacementResult.seed_id == seed_id, PlacementResult.placement == Placement.PENDING)
        .values(
            placement=Placement.ERROR,
            decided_at=utcnow(),
            error=f"The seed mailbox refused its login: {reason}",
        )
    )


def _end_pending(session: Session, run_id: int, reason: str) -> None:
    session.exec(
        sa.update(PlacementResult)
        .where(PlacementResult.run_id == run_id, PlacementResult.placement == Placement.PENDING)
        .values(placement=Placement.ERROR, decided_at=utcnow(), error=reason)
    )
    _complete_if_done(session, run_id)


def _complete_if_done(session: Session, run_id: int) -> bool:
    """Complete the run when no result is pending, and evaluate the alert rules once."""
    session.flush()
    pending = session.exec(
        select(sa.func.count())
        .select_from(PlacementResult)
        .where(PlacementResult.run_id == run_id, PlacementResult.placement == Placement.PENDING)
    ).one()
    if pending:
        return False
    completed = session.exec(
        sa.update(PlacementRun)
        .where(PlacementRun.id == run_id, PlacementRun.status == RUN_ACTIVE)
        .values(status=RUN_COMPLETED, finished_at=utcnow())
    )
    if completed.rowcount != 1:
        return False
    run = session.get(PlacementRun, run_id)
    session.refresh(run)
    evaluate_placement_alerts(session=session, workspace_id=run.workspace_id, run_id=run_id)
    return True


# --- reading progress --------------------------------------------------------------


@dataclass(frozen=True)
class SeedResultRow:
    result_id: int
    seed_email: str
    esp: str
    placement: str
    folder: str | None
    attempts: int
    seconds_to_land: float | None
    spf: str | None
    dkim: str | None
    dmarc: str | None
    error: str | None


@dataclass(frozen=True)
class RunProgress:
    run_id: int
    kind: str
    status: str
    created_at: datetime
    total: int
    pending: int
    counts: dict[str, int]
    results: list[SeedResultRow]

    @property
    def done(self) -> bool:
        return self.status == RUN_COMPLETED


def run_progress(*, session: Session, workspace_id: int, run_id: int) -> RunProgress:
    """Where each seed's copy of a run stands now (for the live pre-flight panel)."""
    run = session.get(PlacementRun, run_id)
    if run is None or run.workspace_id != workspace_id:
        raise NotFoundError("That placement run does not exist.")
    rows = session.exec(
        select(PlacementResult, SeedAccount.email)
        .join(SeedAccount, SeedAccount.id == PlacementResult.seed_id)
        .where(PlacementResult.run_id == run_id, PlacementResult.workspace_id == workspace_id)
        .order_by(PlacementResult.esp, SeedAccount.email)
    )
    results = [
        SeedResultRow(
            result_id=result.id,
            seed_email=email,
            esp=result.esp,
            placement=result.placement,
            folder=result.folder,
            attempts=result.attempts,
            seconds_to_land=result.seconds_to_land,
            spf=result.spf,
            dkim=result.dkim,
            dmarc=result.dmarc,
            error=result.error,
        )
        for result, email in rows
    ]
    counts: dict[str, int] = {}
    for row in results:
        counts[row.placement] = counts.get(row.placement, 0) + 1
    return RunProgress(
        run_id=run.id,
        kind=run.kind,
        status=run.status,
        created_at=run.created_at,
        total=len(results),
        pending=counts.get(Placement.PENDING, 0),
        counts=counts,
        results=results,
    )


def latest_runs(
    *, session: Session, workspace_id: int, kind: str | None = None, limit: int = 10
) -> list[PlacementRun]:
    query = select(PlacementRun).where(PlacementRun.workspace_id == workspace_id)
    if kind:
        query = query.where(PlacementRun.kind == kind)
    return list(session.exec(query.order_by(PlacementRun.id.desc()).limit(limit)))
