"""Sending a queued campaign run over SMTP: the rules one send job follows.

A send job (jobs/send.py, one per "lane" of a run) calls `send_run`, which loops:

1. re-read the campaign's status: anything but `sending` (paused, cancelled) stops
   the job at once; a `queued` campaign moves to `sending` on the first job;
2. claim a batch of due records (send_records.claim_batch: one conditional UPDATE,
   so two jobs never share a record; suppressions checked again there);
3. for each record: wait for the rate limits in Redis (per sender account, per
   destination ESP or domain; a long wait puts the record back for later instead
   of holding the worker), make its bytes (services/outgoing.py, DKIM-signed when
   the sender account has a key), stamp it `submitted_at` and COMMIT, then submit
   it (mail/smtp_transport.py) and record how it ended. The campaign status is
   read again every second within a batch, so pause and cancel act within seconds.

How an attempt ends (PRODUCT.md, Guarantees):

    250 after the final "."                -> sent
    connection lost before the final "."   -> queued again soon (nothing was submitted)
    connection lost after the final "."    -> unknown (never re-sent automatically)
    421, or a throttling 4xx               -> the sender account (421) or destination
                                              backs off in Redis; queued again
    other 4xx                              -> queued again with exponential back-off
                                              and jitter until `send_retry_max_hours`,
                                              then failed
    5xx                                    -> failed; a 5.1.x (bad mailbox) also
                                              suppresses the address
    535 at login                           -> campaign paused with the reason, one
                                              alert, the batch given back untouched

A worker killed at any point leaves records `sending`; the reconciler (send_records.
reconcile) turns those stamped `submitted_at` into `unknown` and gives the others back
to the queue. At most the message in flight on each connection can become unknown.

Seeds: a run of a campaign with a seed list has a placement run; seed records are
sent like any other (spread through the send) and, as each batch's seeds go out,
that group's placement checks are scheduled from their `sent_at`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from mailer_app import db
from mailer_app.mail import throttle as throttling
from mailer_app.mail.smtp import SmtpAuthError
from mailer_app.mail.smtp_transport import Delivery, SmtpConnectFailed, SmtpConnection
from mailer_app.models import (
    AlertKind,
    AppendStatus,
    BuiltMessage,
    Campaign,
    CampaignRun,
    CampaignStatus,
    PlacementRun,
    SenderAccount,
    SendRecord,
    SendStatus,
    Source,
    SuppressionReason,
    utcnow,
)
from mailer_app.services import (
    ServiceError,
    bounce_processing,
    campaign_status,
    send_records,
    senders,
    suppressions,
)
from mailer_app.services import placement as placements
from mailer_app.services.alerts import raise_alert
from mailer_app.services.outgoing import RunMessages
from mailer_app.settings import get_settings

log = logging.getLogger(__name__)

SEND_TIMEOUT = 60.0  # seconds for any one SMTP reply (RFC 5321 suggests minutes; be firm)
MAX_INLINE_WAIT = 2.0  # a rate-limit wait longer than this gives the record back for later
STATUS_RECHECK = 1.0  # seconds between reads of the campaign status inside a batch
IDLE_WAIT = 5.0  # a job with nothing due waits this long at most for a retry due soon
LOST_RETRY = timedelta(seconds=5)  # a connection lost before the "." is retried this soon
RATE_MARGIN = 0.1  # rate limits are kept 10% under the configured rate (see _with_margin)
BACKOFF_RECHECK = 1.0  # seconds between reads of a back-off when no rate limit applies
HEARTBEAT_EVERY = 5.0  # seconds between heartbeats inside a long batch
MAX_ROUNDS = 1_000_000  # bounds every loop; far beyond any real send

_THROTTLING = re.compile(r"rate|throttl|too many|try again later|slow down", re.IGNORECASE)
_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*([smh])\s*$")

NOT_SUBMITTED = (
    "The connection was lost before the message was handed over; it will be tried again."
)
BODY_SENT_NO_ANSWER = (
    "The connection ended after the whole message was handed to the server, before the "
    "server confirmed it: it may have been delivered, so it is not sent again automatically."
)


@dataclass
class SendOutcome:
    """What one call of `send_run` did, and why it stopped."""

    run_id: int
    sent: int = 0
    failed: int = 0
    retried: int = 0
    unknown: int = 0
    released: int = 0  # given back unsent (rate limits, pause, an unreachable server)
    stopped: str = ""  # completed, budget, paused, cancelled, waiting, idle, auth_failed, ...
    next_due: datetime | None = None  # when queued records become due (stopped=waiting)

    @property
    def more(self) -> bool:
        """The job stopped with work left that a new job should carry on now."""
        return self.stopped == "budget"


@dataclass
class _Pending:
    """Results held until the next commit (with the next record's submission stamp)."""

    results: list[send_records.Result] = field(default_factory=list)
    hard_failures: list[tuple[str, str]] = field(default_factory=list)  # (email, why)
    seeds_sent: list[tuple[str, str, datetime]] = field(default_factory=list)
    seeds_failed: list[tuple[str, str]] = field(default_factory=list)
    appends: bool = False


def send_run(
    *,
    run_id: int,
    worker: str,
    engine: Engine | None = None,
    throttle: throttling.Throttle | None = None,
    budget_seconds: float | None = None,
    batch_size: int | None = None,
    heartbeat: Callable[[], None] | None = None,
) -> SendOutcome:
    """Send due records of a run for up to `budget_seconds` (see the module docstring).

    `worker` names this process in claims and attempt logs. `throttle` None means no
    Redis throttling at all (tests and tools only). `heartbeat` is called after every
    batch (the job layer renews its lease there)."""
    settings = get_settings()
    sender = _RunSender(
        run_id=run_id,
        worker=worker,
        engine=engine or db.get_engine(),
        throttle=throttle,
        budget=budget_seconds if budget_seconds is not None else settings.send_job_seconds,
        batch_size=batch_size or settings.send_batch_size,
        heartbeat=heartbeat or (lambda: None),
    )
    return asyncio.run(sender.run())


class _RunSender:
    def __init__(
        self,
        *,
        run_id: int,
        worker: str,
        engine: Engine,
        throttle: throttling.Throttle | None,
        budget: float,
        batch_size: int,
        heartbeat: Callable[[], None],
    ) -> None:
        self.run_id = run_id
        self.worker = worker[:128]
        self.engine = engine
        self.throttle = throttle
        self.deadline = time.monotonic() + budget
        self.batch_size = batch_size
        self.heartbeat = heartbeat
        self.outcome = SendOutcome(run_id=run_id)
        self.settings = get_settings()
        self.connection: SmtpConnection | None = None
        self.random = random.Random()
        self.status_read_at = 0.0
        self.appends_due = False
        self.beat_at = time.monotonic()
        self.backoffs: dict[str, tuple[float, float | None]] = {}
        self.checks_due: list[tuple[list[tuple[int, datetime]], str]] = []

    # --- the loop -----------------------------------------------------------------------

    async def run(self) -> SendOutcome:
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                self.session = session
                stop = self._start()
                if stop:
                    self.outcome.stopped = stop
                    return self.outcome
                await self._loop()
        finally:
            if self.connection is not None:
                await self.connection.close()
        return self.outcome

    async def _loop(self) -> None:
        session = self.session
        for _ in range(MAX_ROUNDS):
            if time.monotonic() >= self.deadline:
                self.outcome.stopped = "budget"
                return
            status = self._campaign_status()
            if status != CampaignStatus.SENDING:
                self.outcome.stopped = str(status)
                return
            ids = send_records.claim_batch(
                engine_or_session=session, run_id=self.run_id, worker=self.worker,
                limit=self.batch_size,
            )  # fmt: skip
            session.commit()
            if not ids:
                if self._finish_if_done():
                    self.outcome.stopped = "completed"
                    return
                due = self._next_due()
                if due is None:
                    self.outcome.stopped = "idle"  # the rest is being sent by other jobs
                    return
                wait = (due - utcnow()).total_seconds()
                if wait > min(IDLE_WAIT, self.deadline - time.monotonic()):
                    self.outcome.stopped, self.outcome.next_due = "waiting", due
                    return
                await asyncio.sleep(max(0.05, wait))
                continue
            stop = await self._send_batch(ids)
            self._beat()
            if self.appends_due:
                self.appends_due = False
                queue_appends(self.run_id)
            if stop:
                self.outcome.stopped = stop
                return
        self.outcome.stopped = "budget"

    def _beat(self) -> None:
        self.beat_at = time.monotonic()
        try:
            self.heartbeat()
        except Exception as exc:  # a Redis blink must never stop a send
            log.warning("send run %s: heartbeat failed: %s", self.run_id, exc)

    # --- starting and finishing ---------------------------------------------------------

    def _start(self) -> str | None:
        session = self.session
        run = session.get(CampaignRun, self.run_id)
        if run is None:
            return "missing"
        self.workspace_id = run.workspace_id
        self.campaign_id = run.campaign_id
        campaign = session.get(Campaign, run.campaign_id)
        if campaign.status == CampaignStatus.QUEUED:
            self._move_campaign(
                CampaignStatus.SENDING, "Sending started.", only_from=CampaignStatus.QUEUED
            )
        status = self._campaign_status()
        if status != CampaignStatus.SENDING:
            return str(status)
        if run.started_at is None:
            session.execute(
                sa.update(CampaignRun)
                .where(CampaignRun.id == run.id, CampaignRun.started_at.is_(None))
                .values(started_at=utcnow(), status="sending")
            )
            session.commit()
        try:
            self.messages = RunMessages(session=session, run_id=self.run_id)
        except ServiceError as exc:
            self._pause(f"Paused: the messages cannot be put together: {exc}")
            return "paused"
        sender_id = self.messages.sender_account_id
        sender = session.get(SenderAccount, sender_id) if sender_id is not None else None
        if sender is None:
            self._pause("Paused: the campaign's sender account was deleted.")
            return "paused"
        endpoints = senders.saved_sender_endpoints(
            session=session, workspace_id=self.workspace_id, sender_id=sender.id
        )
        self.sender_id = sender.id
        self.sender = sender
        self.envelope_from = sender.from_email
        self.connection = SmtpConnection(dataclasses.replace(endpoints.smtp, timeout=SEND_TIMEOUT))
        self.sender_limits = _with_margin(
            throttling.sender_limits(
                per_second=sender.rate_per_second,
                per_minute=sender.rate_per_minute,
                per_hour=sender.rate_per_hour,
            )  # fmt: skip
        )
        self.destination_limits = {
            key: _with_margin(limits)
            for key, limits in _destination_limits(self.settings.send_destination_limits).items()
        }
        placement = session.exec(
            select(PlacementRun.id).where(PlacementRun.campaign_run_id == self.run_id)
        ).first()
        self.placement_run_id = placement
        session.commit()
        return None

    def _campaign_status(self) -> str:
        self.status_read_at = time.monotonic()
        return self.session.execute(
            sa.select(Campaign.status).where(Campaign.id == self.campaign_id)
        ).scalar_one()

    def _move_campaign(self, to: str, reason: str, *, only_from: str | None = None) -> bool:
        """Move the campaign (re-read under a lock first: another job may have moved it)."""
        session = self.session
        campaign = session.exec(
            select(Campaign)
            .where(Campaign.id == self.campaign_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one()
        if (only_from is not None and campaign.status != only_from) or to not in (
            campaign_status.allowed_moves(campaign)
        ):
            session.rollback()
            return False
        campaign_status.transition(
            session=session, campaign=campaign, to=to, source=Source.JOB, reason=reason
        )
        session.commit()
        return True

    def _pause(self, reason: str) -> None:
        self._move_campaign(CampaignStatus.PAUSED, reason)

    def _finish_if_done(self) -> bool:
        session = self.session
        counters = send_records.run_counters(
            session=session, workspace_id=self.workspace_id, run_id=self.run_id
        )
        if counters.remaining:
            return False
        won = session.execute(
            sa.update(CampaignRun)
            .where(CampaignRun.id == self.run_id, CampaignRun.status != "completed")
            .values(status="completed", finished_at=utcnow())
        ).rowcount
        if won != 1:
            session.rollback()
            return True
        session.flush()
        reason = (
            f"Sent: {counters.sent} delivered to the server, {counters.failed} failed, "
            f"{counters.unknown} of unknown outcome."
        )
        if not self._move_campaign(
            CampaignStatus.COMPLETED, reason, only_from=CampaignStatus.SENDING
        ):
            session.commit()
        return True

    def _next_due(self) -> datetime | None:
        col = SendRecord.__table__.c
        return self.session.execute(
            sa.select(sa.func.min(sa.func.coalesce(col.next_attempt_at, col.created_at))).where(
                col.run_id == self.run_id, col.status == SendStatus.QUEUED
            )
        ).scalar_one()

    # --- one batch ----------------------------------------------------------------------

    async def _send_batch(self, ids: list[int]) -> str | None:
        session = self.session
        rows = list(
            session.exec(
                select(SendRecord, BuiltMessage)
                .outerjoin(BuiltMessage, BuiltMessage.id == SendRecord.built_message_id)
                .where(SendRecord.id.in_(ids))
                .order_by(SendRecord.id)
            ).all()
        )
        pending = _Pending()
        # A batch never outlives half the claim lease, so the reconciler can never take
        # back a record this job is still about to send.
        batch_deadline = time.monotonic() + self.settings.send_claim_lease_seconds / 2
        for index, (record, row) in enumerate(rows):
            rest = [r.id for r, _ in rows[index:]]
            now = time.monotonic()
            if now - self.status_read_at >= STATUS_RECHECK:
                self._flush(pending)
                status = self._campaign_status()
                if status != CampaignStatus.SENDING:
                    self._release(rest)
                    return str(status)
            if now >= batch_deadline:
                self._flush(pending)
                self._release(rest)
                return None
            wait = self._throttle_wait(record.email)
            if wait > 0:
                self._flush(pending)
                if self._sender_blocked() or wait > IDLE_WAIT:
                    self._release(rest, due_in=wait)
                    return "throttled"
                self._release([record.id], due_in=wait)
                continue
            stop = await self._send_one(record, row, pending, rest)
            if stop:
                return stop
        self._flush(pending)
        return None

    async def _send_one(
        self, record: SendRecord, row: BuiltMessage | None, pending: _Pending, rest: list[int]
    ) -> str | None:
        session = self.session
        when = utcnow().replace(microsecond=0)
        started = utcnow()
        if row is None:
            self._fail_unsent(
                record, "The message's built copy is gone (its list was deleted).", pending
            )
            return None
        try:
            data = self.messages.message(record, row, date=when)
        except ServiceError as exc:
            self._fail_unsent(record, f"The message could not be put together: {exc}", pending)
            return None
        # The stamp is committed before a byte leaves: after a crash it tells a record
        # that may have been sent (unknown) from one that was not (queued again).
        if not send_records.mark_submitted(
            session, record_id=record.id, worker=self.worker, at=when
        ):
            self._flush(pending)
            return None
        self._flush(pending, commit=False)
        session.commit()
        self._follow_up()
        try:
            delivery = await self.connection.send(self._return_path(record), record.email, data)
        except SmtpAuthError as exc:
            self._release(rest)
            self._auth_failed(str(exc))
            return "auth_failed"
        except SmtpConnectFailed as exc:
            until = self._back_off(throttling.sender_key(self.sender_id))
            self._release(rest, due_in=max(1.0, until - time.time()), error=str(exc))
            log.warning("send run %s: %s", self.run_id, exc)
            return "unreachable"
        self._classify(record, delivery, when, started, pending)
        return None

    def _return_path(self, record: SendRecord) -> str:
        if not self.settings.send_verp:
            return self.envelope_from
        return bounce_processing.return_path(sender=self.sender, record_id=record.id)

    def _fail_unsent(self, record: SendRecord, why: str, pending: _Pending) -> None:
        pending.results.append(
            send_records.Result(
                record_id=record.id,
                status=SendStatus.FAILED,
                outcome="",
                started_at=utcnow(),
                error=why,
            )  # fmt: skip
        )
        self.outcome.failed += 1
        if record.is_seed:
            self._seed_failed(record, why, pending)

    # --- what an answer means -----------------------------------------------------------

    def _classify(
        self,
        record: SendRecord,
        d: Delivery,
        when: datetime,
        started: datetime,
        pending: _Pending,
    ) -> None:
        base = {
            "record_id": record.id, "started_at": started, "duration_ms": d.duration_ms,
            "smtp_code": d.code, "enhanced_status": d.enhanced, "reply": d.reply or None,
        }  # fmt: skip
        answer = f"{d.code} {d.reply}".strip() if d.code is not None else ""
        if d.accepted:
            pending.results.append(
                send_records.Result(status=SendStatus.SENT, outcome="sent", sent_at=when, **base)
            )
            self.outcome.sent += 1
            if record.is_seed:
                token = self.messages.seed_token(record.email)
                if token and record.message_id:
                    pending.seeds_sent.append((token, record.message_id, when))
            elif record.append_status == AppendStatus.PENDING:
                pending.appends = True
            return
        if d.code is None and d.body_sent:
            pending.results.append(
                send_records.Result(
                    status=SendStatus.UNKNOWN, outcome="unknown", error=BODY_SENT_NO_ANSWER, **base
                )
            )
            self.outcome.unknown += 1
            if record.is_seed:
                self._seed_failed(record, BODY_SENT_NO_ANSWER, pending)
            return
        if d.code is None:
            self._retry(record, base, NOT_SUBMITTED, pending, delay=LOST_RETRY)
            return
        if 400 <= d.code < 500:
            if d.code == 421:
                self._back_off(throttling.sender_key(self.sender_id))
            elif (d.enhanced or "").startswith("4.7.") or _THROTTLING.search(d.reply or ""):
                self._back_off(throttling.destination_key(record.email))
            self._retry(record, base, f"Temporarily refused: {answer}", pending)
            return
        why = f"Refused by the mail server: {answer}"
        pending.results.append(
            send_records.Result(status=SendStatus.FAILED, outcome="failed", error=why, **base)
        )
        self.outcome.failed += 1
        if (d.enhanced or "").startswith("5.1.") and not record.is_seed:
            pending.hard_failures.append((record.email, answer))
        if record.is_seed:
            self._seed_failed(record, why, pending)

    def _retry(
        self,
        record: SendRecord,
        base: dict,
        why: str,
        pending: _Pending,
        *,
        delay: timedelta | None = None,
    ) -> None:
        now = utcnow()
        if delay is None:
            ceiling = min(
                self.settings.send_retry_cap_seconds,
                self.settings.send_retry_base_seconds * 2 ** min(record.attempt_count, 30),
            )
            delay = timedelta(seconds=ceiling * (0.5 + self.random.random() / 2))
        give_up_at = record.created_at + timedelta(hours=self.settings.send_retry_max_hours)
        if now + delay > give_up_at:
            tries = record.attempt_count + 1
            over = _age(now - record.created_at)
            error = f"Gave up after {tries} attempts over {over}. Last answer: {why}"
            pending.results.append(
                send_records.Result(status=SendStatus.FAILED, outcome="failed", error=error, **base)
            )
            self.outcome.failed += 1
            if record.is_seed:
                self._seed_failed(record, error, pending)
            return
        pending.results.append(
            send_records.Result(
                status=SendStatus.QUEUED,
                outcome="retry",
                error=why,
                next_attempt_at=now + delay,
                **base,
            )  # fmt: skip
        )
        self.outcome.retried += 1

    def _seed_failed(self, record: SendRecord, why: str, pending: _Pending) -> None:
        token = self.messages.seed_token(record.email)
        if token:
            pending.seeds_failed.append((token, why))

    # --- writing ------------------------------------------------------------------------

    def _flush(self, pending: _Pending, *, commit: bool = True) -> None:
        session = self.session
        due: list[tuple[int, datetime]] = []
        if pending.results:
            send_records.record_results(
                session, workspace_id=self.workspace_id, worker=self.worker,
                results=pending.results,
            )  # fmt: skip
        for email, answer in pending.hard_failures:
            suppressions.add_suppression(
                session=session, workspace_id=self.workspace_id, email=email,
                reason=SuppressionReason.HARD_BOUNCE,
                note=f"Refused while sending: {answer}"[:500], source=Source.JOB,
            )  # fmt: skip
        if self.placement_run_id is not None:
            if pending.seeds_sent:
                due = placements.seed_copies_sent(
                    session=session, run_id=self.placement_run_id, sent=pending.seeds_sent
                )
            if pending.seeds_failed:
                placements.seed_copies_failed(
                    session=session, run_id=self.placement_run_id, failed=pending.seeds_failed
                )
        group = pending.results[0].record_id if pending.seeds_sent else None
        self.appends_due = self.appends_due or pending.appends
        pending.results, pending.hard_failures = [], []
        pending.seeds_sent, pending.seeds_failed, pending.appends = [], [], False
        if commit:
            session.commit()
        if time.monotonic() - self.beat_at >= HEARTBEAT_EVERY:
            self._beat()
        # Scheduling after the commit at the latest (the caller commits at once when
        # commit=False): a check must never look for copies not yet recorded as sent.
        if due and self.placement_run_id is not None:
            self.checks_due.append((due, f"g{group}"))
        if commit:
            self._follow_up()

    def _follow_up(self) -> None:
        for due, group in self.checks_due:
            try:
                placements.schedule_checks(self.placement_run_id, due, group=group)
            except Exception as exc:
                log.warning("send run %s: could not schedule seed checks: %s", self.run_id, exc)
        self.checks_due = []

    def _release(self, ids: list[int], *, due_in: float = 0.0, error: str | None = None) -> None:
        session = self.session
        at = utcnow() + timedelta(seconds=due_in)
        self.outcome.released += send_records.release(
            session, record_ids=ids, worker=self.worker, next_attempt_at=at, error=error
        )
        session.commit()

    # --- Redis: limits and back-offs ----------------------------------------------------

    def _throttle_wait(self, email: str) -> float:
        if self.throttle is None:
            return 0.0
        sender_key = throttling.sender_key(self.sender_id)
        destination_key = throttling.destination_key(email)
        destination_limits = self._limits_for(email)
        if not self.sender_limits and not destination_limits:
            # No rate to count: only back-offs matter, and those are read at most once a
            # second per key (one Redis round trip per message would cost ~1 ms each).
            return max(self._blocked_for(sender_key), self._blocked_for(destination_key))
        checks = [(sender_key, self.sender_limits), (destination_key, destination_limits)]
        return self.throttle.acquire_within(checks, max_wait=MAX_INLINE_WAIT)

    def _blocked_for(self, key: str) -> float:
        """Seconds `key` is still backed off (0 when it is not), read from Redis at
        most every BACKOFF_RECHECK seconds."""
        now = time.monotonic()
        read_at, until = self.backoffs.get(key, (float("-inf"), None))
        if now - read_at >= BACKOFF_RECHECK:
            try:
                until = self.throttle.blocked_until(key)
            except Exception:  # Redis unreachable: wait a little, as the throttle does
                until = time.time() + throttling.UNAVAILABLE_WAIT
            self.backoffs[key] = (now, until)
        return max(0.0, until - time.time()) if until else 0.0

    def _limits_for(self, email: str) -> tuple[throttling.Limit, ...]:
        key = throttling.destination_key(email)  # esp:gmail or domain:example.org
        return self.destination_limits.get(key.split(":", 1)[1], ())

    def _sender_blocked(self) -> bool:
        if self.throttle is None:
            return False
        try:
            return self.throttle.blocked_until(throttling.sender_key(self.sender_id)) is not None
        except Exception:
            return True

    def _back_off(self, key: str) -> float:
        if self.throttle is None:
            return time.time() + 1.0
        until = self.throttle.back_off(key)
        self.backoffs[key] = (time.monotonic(), until)
        return until

    # --- refused credentials ------------------------------------------------------------

    def _auth_failed(self, why: str) -> None:
        session = self.session
        reason = f"Paused: {why} Correct the password on the Sender accounts page, then resume."
        self._move_campaign(CampaignStatus.PAUSED, reason)
        session.execute(
            sa.update(SenderAccount)
            .where(SenderAccount.id == self.sender_id)
            .values(status="auth_failed", status_reason=why)
        )
        raise_alert(
            session=session, workspace_id=self.workspace_id, kind=AlertKind.SENDER_AUTH_FAILED,
            message=f"A campaign was paused: {why}", campaign_id=self.campaign_id,
            dedupe_key=f"{AlertKind.SENDER_AUTH_FAILED}:sender-{self.sender_id}:run-{self.run_id}",
        )  # fmt: skip
        session.commit()


def _destination_limits(config: dict[str, str]) -> dict[str, tuple[throttling.Limit, ...]]:
    """{"gmail": "20/s"} -> {"gmail": (Limit(20, 1.0),)}; bad entries are logged, skipped."""
    periods = {"s": 1.0, "m": 60.0, "h": 3600.0}
    limits: dict[str, tuple[throttling.Limit, ...]] = {}
    for name, text in (config or {}).items():
        found = _LIMIT.match(str(text))
        if not found or int(found.group(1)) < 1:
            log.warning("SEND_DESTINATION_LIMITS: %r=%r is not like '20/s'; ignored", name, text)
            continue
        key = str(name).strip().lower()
        limits[key] = (throttling.Limit(int(found.group(1)), periods[found.group(2)]),)
    return limits


def _with_margin(limits: tuple[throttling.Limit, ...]) -> tuple[throttling.Limit, ...]:
    """The limits with their periods stretched by RATE_MARGIN: a grant is counted when
    Redis gives it, the server counts the message when it arrives a few milliseconds
    later, and that jitter must never add up to more than the rate at the server."""
    return tuple(throttling.Limit(x.count, x.period * (1 + RATE_MARGIN)) for x in limits)


def _age(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} minutes"
    return f"{minutes // 60} hours"


# --- job plumbing (set by jobs.send; tests may replace) --------------------------------------


def wake_run(run_id: int, *, lanes: int | None = None) -> None:
    """Enqueue the run's send jobs (one per lane, deduplicated): call after commit."""
    from jobs.send import wake_run as wake

    wake(run_id, lanes=lanes)


def queue_appends(run_id: int) -> None:
    """Queue the append-to-Sent job of a run (best effort: a sweep catches up)."""
    try:
        from jobs.append import enqueue_append
    except ImportError:
        return
    try:
        enqueue_append(run_id)
    except Exception as exc:
        log.warning("send run %s: could not queue append-to-Sent: %s", run_id, exc)
