"""Alert events: raised once per condition, listed until acknowledged.

Placement rules (thresholds per workspace): inbox rate below
`alert_min_inbox_rate`, or missing rate above `alert_max_missing_rate`, for a run
overall and for each canonical ESP in it. Rates are PRODUCT.md's: terminal results
only (`placement_results.summarize_placement`). Each condition has a dedupe key
(kind, run, ESP), so checking again (every new result, two workers at once) never
duplicates an event: the first crossing, early or final, is the one recorded.

When the rules run:
- when a run completes (`evaluate_placement_alerts`, from placement._complete_if_done);
- after an early check (`evaluate_early_alerts`, from placement.check_run): the checks
  `early_check_indexes` names (+3 and +5 minutes with the default offsets
  1, 3, 5, 10), once at least EARLY_MIN_CHECKED seeds (overall, or at that ESP) have
  a terminal result. Only found copies are terminal this early (`missing` is decided
  by the final check), so early alerts are in practice low-inbox alerts.

Auto-pause (workspace switch `auto_pause_enabled`): an early crossing of either rule
*overall* pauses the run's campaign if it is queued or sending, with the reason on
its send page; at most once per placement run (a person who resumes is not
overruled by the next check). Per-ESP crossings raise alerts but never pause: a
single seed at one ESP should not stop a whole campaign.

New alerts are e-mailed to the workspace's `alert_emails` (a job after the commit)
through its first active sender account.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from mailer_app.db import after_commit
from mailer_app.models import (
    AlertEvent,
    AlertKind,
    AuditEntry,
    Campaign,
    CampaignStatus,
    Membership,
    PlacementRun,
    Role,
    SenderAccount,
    Source,
    Workspace,
    utcnow,
)
from mailer_app.services import InvalidInput, NotFoundError, ServiceError, audit
from mailer_app.services.auth import PermissionDenied
from mailer_app.services.placement_results import PlacementCounts, summarize_placement

log = logging.getLogger(__name__)

ALL_ESPS = "all"
STATUS_NEW = "new"
STATUS_ACKNOWLEDGED = "acknowledged"
# Early checks judge only once this many seeds (in the scope judged) have landed.
EARLY_MIN_CHECKED = 3
MAX_ALERT_EMAILS = 20
SETTINGS_ROLES = frozenset({Role.OWNER, Role.ADMIN})
# Viewers watch; everyone else in the workspace may acknowledge.
ACKNOWLEDGE_ROLES = frozenset({Role.OWNER, Role.ADMIN, Role.EDITOR, Role.SENDER})
AUTO_PAUSE_ACTION = "campaign.auto_pause"
EMAIL_ACTION = "alert.email"

KIND_LABELS = {
    AlertKind.LOW_INBOX_RATE: "Low inbox rate",
    AlertKind.HIGH_MISSING_RATE: "High missing rate",
    AlertKind.SEED_AUTH_EXPIRED: "Seed login refused",
    AlertKind.SENDER_AUTH_FAILED: "Sender login refused",
}


def raise_alert(
    *,
    session: Session,
    workspace_id: int,
    kind: str,
    message: str,
    dedupe_key: str,
    source: str = Source.JOB,
    campaign_id: int | None = None,
    seed_id: int | None = None,
    esp: str | None = None,
    value: float | None = None,
    threshold: float | None = None,
) -> AlertEvent | None:
    """Record an alert unless one with the same dedupe key exists; the new one or None.

    A new alert is e-mailed (job queued after the commit) when the workspace lists
    alert addresses."""
    existing = session.exec(
        select(AlertEvent.id).where(
            AlertEvent.workspace_id == workspace_id, AlertEvent.dedupe_key == dedupe_key
        )
    ).first()
    if existing is not None:
        return None
    event = AlertEvent(
        workspace_id=workspace_id,
        kind=kind,
        message=message,
        dedupe_key=dedupe_key,
        source=source,
        campaign_id=campaign_id,
        seed_id=seed_id,
        esp=esp,
        value=value,
        threshold=threshold,
    )
    # A savepoint: losing a race to another worker must not undo the caller's work.
    try:
        with session.begin_nested():
            session.add(event)
    except IntegrityError:
        return None
    workspace = session.get(Workspace, workspace_id)
    if workspace is not None and workspace.alert_emails:
        alert_id = event.id
        after_commit(session, lambda: _queue_email_safely(alert_id))
    return event


def _percent(rate: float) -> str:
    return f"{rate * 100:.0f}%"


# --- the placement rules -------------------------------------------------------------


@dataclass(frozen=True)
class Crossing:
    """One rule crossed in one scope (overall = ALL_ESPS, or a canonical ESP)."""

    kind: str
    esp: str
    value: float
    threshold: float
    checked: int


def placement_crossings(
    *,
    workspace: Workspace,
    counts_by_scope: Iterable[tuple[str, PlacementCounts]],
    min_checked: int,
) -> list[Crossing]:
    """The rules each scope crosses; scopes with fewer than `min_checked` terminal results
    are not judged (a rate over one or two seeds says little)."""
    crossed = []
    for esp, counts in counts_by_scope:
        if counts.total_checked < max(1, min_checked):
            continue
        inbox_rate, missing_rate = counts.rate("inbox"), counts.rate("missing")
        if inbox_rate is not None and inbox_rate < workspace.alert_min_inbox_rate:
            crossed.append(
                Crossing(
                    AlertKind.LOW_INBOX_RATE, esp, inbox_rate, workspace.alert_min_inbox_rate,
                    counts.total_checked,
                )
            )  # fmt: skip
        if missing_rate is not None and missing_rate > workspace.alert_max_missing_rate:
            crossed.append(
                Crossing(
                    AlertKind.HIGH_MISSING_RATE, esp, missing_rate,
                    workspace.alert_max_missing_rate, counts.total_checked,
                )
            )  # fmt: skip
    return crossed


def _crossing_message(crossing: Crossing, run: PlacementRun, when: str) -> str:
    where = "overall" if crossing.esp == ALL_ESPS else f"at {crossing.esp}"
    what = f"campaign {run.campaign_id}" if run.campaign_id else "pre-flight test"
    if crossing.kind == AlertKind.LOW_INBOX_RATE:
        rule = f"Inbox rate {where} is {_percent(crossing.value)}, below the"
    else:
        rule = f"Missing rate {where} is {_percent(crossing.value)}, above the"
    return (
        f"{rule} {_percent(crossing.threshold)} threshold ({what}, run {run.id}, "
        f"{crossing.checked} seeds checked{when})."
    )


def _raise_crossings(
    session: Session, run: PlacementRun, crossings: Sequence[Crossing], when: str = ""
) -> list[AlertEvent]:
    raised = []
    for crossing in crossings:
        event = raise_alert(
            session=session,
            workspace_id=run.workspace_id,
            kind=crossing.kind,
            message=_crossing_message(crossing, run, when),
            dedupe_key=f"{crossing.kind}:run-{run.id}:{crossing.esp}",
            campaign_id=run.campaign_id,
            esp=None if crossing.esp == ALL_ESPS else crossing.esp,
            value=crossing.value,
            threshold=crossing.threshold,
        )
        if event is not None:
            raised.append(event)
    return raised


def _scopes(session: Session, run: PlacementRun) -> list[tuple[str, PlacementCounts]]:
    summary = summarize_placement(session=session, workspace_id=run.workspace_id, run_id=run.id)
    return [(ALL_ESPS, summary.overall), *sorted(summary.by_esp.items())]


def evaluate_placement_alerts(
    *, session: Session, workspace_id: int, run_id: int, min_checked: int = 1
) -> list[AlertEvent]:
    """Raise the low-inbox and high-missing alerts a run's results call for."""
    workspace = session.get(Workspace, workspace_id)
    run = session.get(PlacementRun, run_id)
    if workspace is None or run is None or run.workspace_id != workspace_id:
        return []
    crossings = placement_crossings(
        workspace=workspace, counts_by_scope=_scopes(session, run), min_checked=min_checked
    )
    return _raise_crossings(session, run, crossings)


def early_check_indexes(offsets: Sequence[float]) -> frozenset[int]:
    """Which check numbers (0-based) of a run count as early.

    Every check but the final one (which completes the run), and not the first when
    a later non-final check exists (too few copies have landed at +1 minute):
    [1, 3, 5, 10] -> {1, 2} (the +3 and +5 minute checks); [1, 5, 10] -> {1};
    [1, 10] -> {0}; [10] -> none (the completion evaluation is the only one)."""
    early = set(range(len(offsets) - 1))
    if len(early) > 1:
        early.discard(0)
    return frozenset(early)


@dataclass(frozen=True)
class EarlyOutcome:
    raised: list[AlertEvent]
    paused_campaign_id: int | None = None


def evaluate_early_alerts(
    *, session: Session, run_id: int, check_index: int, min_checked: int = EARLY_MIN_CHECKED
) -> EarlyOutcome:
    """After check `check_index` of an active run: raise what its terminal results so far
    call for and, with auto-pause on, pause its campaign on an overall crossing."""
    run = session.get(PlacementRun, run_id)
    if run is None or run.status != "active":
        return EarlyOutcome([])  # a completed run was judged by its completion
    offsets = run.check_offsets_min or [1.0]
    if check_index not in early_check_indexes(offsets):
        return EarlyOutcome([])
    workspace = session.get(Workspace, run.workspace_id)
    if workspace is None:
        return EarlyOutcome([])
    session.flush()
    crossings = placement_crossings(
        workspace=workspace, counts_by_scope=_scopes(session, run), min_checked=min_checked
    )
    when = f", after the +{offsets[check_index]:g} minute check"
    raised = _raise_crossings(session, run, crossings, when)
    overall = [c for c in crossings if c.esp == ALL_ESPS]
    paused = None
    if workspace.auto_pause_enabled and overall and run.campaign_id is not None:
        reason = (
            "Paused automatically: "
            + _crossing_message(overall[0], run, when)
            + " Check the placement results, then resume or cancel."
        )
        try:
            with session.begin_nested():  # a lost race (completed meanwhile) undoes only this
                if auto_pause_campaign(session=session, run=run, reason=reason):
                    paused = run.campaign_id
        except ServiceError as exc:
            log.warning("Auto-pause of campaign %s skipped: %s", run.campaign_id, exc)
    return EarlyOutcome(raised, paused)


def auto_pause_campaign(*, session: Session, run: PlacementRun, reason: str) -> bool:
    """Pause the run's campaign with `reason` if it is queued or sending and this run has
    not paused it before. True if it was paused now."""
    from mailer_app.services import send_control  # it imports the placement engine's callers

    campaign = session.get(Campaign, run.campaign_id)
    if campaign is None or campaign.status not in (CampaignStatus.QUEUED, CampaignStatus.SENDING):
        return False
    earlier = session.exec(
        select(AuditEntry.details).where(
            AuditEntry.workspace_id == run.workspace_id,
            AuditEntry.action == AUTO_PAUSE_ACTION,
            AuditEntry.target_type == "campaign",
            AuditEntry.target_id == run.campaign_id,
        )
    ).all()
    if any((details or {}).get("placement_run_id") == run.id for details in earlier):
        return False
    send_control.pause_send(
        session=session, workspace_id=run.workspace_id, campaign_id=run.campaign_id,
        user_id=None, source=Source.SYSTEM, reason=reason,
    )  # fmt: skip
    audit.record(
        session=session, action=AUTO_PAUSE_ACTION, source=Source.SYSTEM,
        workspace_id=run.workspace_id, target_type="campaign", target_id=run.campaign_id,
        details={"placement_run_id": run.id, "reason": reason},
    )  # fmt: skip
    return True


# --- reading and acknowledging -------------------------------------------------------


@dataclass(frozen=True)
class AlertRow:
    id: int
    kind: str
    kind_label: str
    status: str
    message: str
    created_at: object
    campaign_id: int | None
    campaign_name: str | None
    esp: str | None
    acknowledged_by: str | None
    acknowledged_at: object


def list_alerts(
    *, session: Session, workspace_id: int, status: str | None = None, limit: int | None = None
) -> list[AlertEvent]:
    """The workspace's alerts, newest first (optionally only one status)."""
    query = select(AlertEvent).where(AlertEvent.workspace_id == workspace_id)
    if status:
        query = query.where(AlertEvent.status == status)
    query = query.order_by(AlertEvent.created_at.desc(), AlertEvent.id.desc())
    if limit:
        query = query.limit(limit)
    return list(session.exec(query))


def alert_rows(
    *, session: Session, workspace_id: int, status: str | None = None, limit: int = 200
) -> list[AlertRow]:
    """Alerts with the names a page shows (campaign, who acknowledged), newest first."""
    from mailer_app.models import User

    events = list_alerts(session=session, workspace_id=workspace_id, status=status, limit=limit)
    campaign_ids = {e.campaign_id for e in events if e.campaign_id}
    user_ids = {e.acknowledged_by_id for e in events if e.acknowledged_by_id}
    names = dict(
        session.exec(select(Campaign.id, Campaign.name).where(Campaign.id.in_(campaign_ids)))
    ) if campaign_ids else {}  # fmt: skip
    users = {
        u.id: u.display_name or u.email
        for u in session.exec(select(User).where(User.id.in_(user_ids)))
    } if user_ids else {}  # fmt: skip
    return [
        AlertRow(
            id=e.id,
            kind=e.kind,
            kind_label=KIND_LABELS.get(e.kind, e.kind),
            status=e.status,
            message=e.message,
            created_at=e.created_at,
            campaign_id=e.campaign_id,
            campaign_name=names.get(e.campaign_id),
            esp=e.esp,
            acknowledged_by=users.get(e.acknowledged_by_id),
            acknowledged_at=e.acknowledged_at,
        )  # fmt: skip
        for e in events
    ]


def count_new_alerts(*, session: Session, workspace_id: int) -> int:
    """How many alerts wait for someone (the navigation badge)."""
    return session.exec(
        select(sa.func.count())
        .select_from(AlertEvent)
        .where(AlertEvent.workspace_id == workspace_id, AlertEvent.status == STATUS_NEW)
    ).one()


def _role(session: Session, workspace_id: int, user_id: int) -> str | None:
    return session.exec(
        select(Membership.role).where(
            Membership.workspace_id == workspace_id, Membership.user_id == user_id
        )
    ).first()


def _require(session: Session, workspace_id: int, user_id: int, roles: frozenset) -> None:
    if _role(session, workspace_id, user_id) not in {str(r) for r in roles}:
        raise PermissionDenied("Your role does not allow this. Ask an owner or admin.")


def acknowledge_alerts(
    *,
    session: Session,
    workspace_id: int,
    user_id: int,
    alert_ids: Sequence[int] | None = None,
    source: str = Source.UI,
) -> int:
    """Mark new alerts acknowledged by `user_id` (the given ones, or all when None).
    Returns how many changed; acknowledged ones stay as they were."""
    _require(session, workspace_id, user_id, ACKNOWLEDGE_ROLES)
    query = sa.update(AlertEvent).where(
        AlertEvent.workspace_id == workspace_id, AlertEvent.status == STATUS_NEW
    )
    if alert_ids is not None:
        if not alert_ids:
            return 0
        query = query.where(AlertEvent.id.in_([int(i) for i in alert_ids]))
    changed = session.exec(
        query.values(
            status=STATUS_ACKNOWLEDGED, acknowledged_by_id=user_id, acknowledged_at=utcnow()
        )
    ).rowcount
    if changed:
        audit.record(
            session=session, action="alert.acknowledge", source=source, workspace_id=workspace_id,
            user_id=user_id, target_type="alert_event",
            target_id=alert_ids[0] if alert_ids and len(alert_ids) == 1 else None,
            details={"count": changed, "all": alert_ids is None},
        )  # fmt: skip
    return changed


# --- thresholds and addresses ----------------------------------------------------------


@dataclass(frozen=True)
class AlertSettings:
    min_inbox_rate: float
    max_missing_rate: float
    auto_pause_enabled: bool
    alert_emails: list[str]


def alert_settings(*, session: Session, workspace_id: int) -> AlertSettings:
    workspace = session.get(Workspace, workspace_id)
    if workspace is None:
        raise NotFoundError("That workspace does not exist.")
    return AlertSettings(
        workspace.alert_min_inbox_rate,
        workspace.alert_max_missing_rate,
        workspace.auto_pause_enabled,
        list(workspace.alert_emails or []),
    )


def parse_alert_emails(text: str | Sequence[str]) -> list[str]:
    """Addresses from a comma/space/line separated text: checked, lower-cased, deduplicated."""
    parts = text.replace(",", " ").replace(";", " ").split() if isinstance(text, str) else text
    emails: list[str] = []
    for part in parts:
        part = part.strip()
        if not part:
            continue
        try:
            email = validate_email(part, check_deliverability=False).normalized.lower()
        except EmailNotValidError:
            raise InvalidInput(f"{part} is not an e-mail address.", field="alert_emails") from None
        if email not in emails:
            emails.append(email)
    if len(emails) > MAX_ALERT_EMAILS:
        raise InvalidInput(
            f"At most {MAX_ALERT_EMAILS} addresses; a mailing list address can reach more.",
            field="alert_emails",
        )
    return emails


def _rate(value: float, field: str, label: str) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"The {label} must be a number.", field=field) from None
    if not 0.0 <= rate <= 1.0 or rate != rate:
        raise InvalidInput(f"The {label} must be between 0% and 100%.", field=field)
    return rate


def update_alert_settings(
    *,
    session: Session,
    workspace_id: int,
    user_id: int,
    min_inbox_rate: float,
    max_missing_rate: float,
    auto_pause_enabled: bool,
    alert_emails: str | Sequence[str],
    source: str = Source.UI,
) -> AlertSettings:
    """Change the workspace's thresholds (rates 0..1), auto-pause and alert addresses.
    Owners and admins only; every value is checked before anything changes."""
    _require(session, workspace_id, user_id, SETTINGS_ROLES)
    inbox = _rate(min_inbox_rate, "min_inbox_rate", "lowest inbox rate")
    missing = _rate(max_missing_rate, "max_missing_rate", "highest missing rate")
    emails = parse_alert_emails(alert_emails)
    workspace = session.get(Workspace, workspace_id)
    before = alert_settings(session=session, workspace_id=workspace_id)
    workspace.alert_min_inbox_rate = inbox
    workspace.alert_max_missing_rate = missing
    workspace.auto_pause_enabled = bool(auto_pause_enabled)
    workspace.alert_emails = emails
    session.add(workspace)
    after = AlertSettings(inbox, missing, bool(auto_pause_enabled), emails)
    audit.record(
        session=session, action="workspace.alert_settings", source=source,
        workspace_id=workspace_id, user_id=user_id, target_type="workspace",
        target_id=workspace_id, details={"before": before.__dict__, "after": after.__dict__},
    )  # fmt: skip
    session.flush()
    return after


# --- e-mailing an alert ------------------------------------------------------------------


def alert_sender(*, session: Session, workspace_id: int) -> SenderAccount | None:
    """The sender account alert e-mails go out through: the workspace's first active one."""
    return session.exec(
        select(SenderAccount)
        .where(SenderAccount.workspace_id == workspace_id, SenderAccount.status == "active")
        .order_by(SenderAccount.id)
    ).first()


def queue_alert_email(alert_id: int) -> None:
    """Queue the e-mail job of one alert (tests may replace this)."""
    from jobs.alerts import enqueue_alert_email

    enqueue_alert_email(alert_id)


def _queue_email_safely(alert_id: int) -> None:
    try:
        queue_alert_email(alert_id)
    except Exception as exc:  # Redis down: the alert is on the page all the same
        log.warning("Could not queue the e-mail of alert %s (%s: %s)", alert_id,
                    type(exc).__name__, exc)  # fmt: skip


def _alert_message(event: AlertEvent, workspace: Workspace, sender: SenderAccount) -> bytes:
    label = KIND_LABELS.get(event.kind, event.kind)
    msg = EmailMessage()
    msg["From"] = formataddr((sender.from_name or "mailer", sender.from_email))
    msg["To"] = ", ".join(workspace.alert_emails)
    msg["Subject"] = f"[mailer alert] {label} in {workspace.name}"
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain=sender.from_email.rsplit("@", 1)[-1])
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to this
    msg.set_content(
        f"{label}\n\n{event.message}\n\n"
        f"Raised {event.created_at:%Y-%m-%d %H:%M} UTC in workspace {workspace.name}.\n"
        "Open Alerts in mailer to acknowledge it.\n\n"
        "You get this because your address is on the workspace's alert list."
    )
    return msg.as_bytes()


@dataclass(frozen=True)
class EmailOutcome:
    sent: bool
    reason: str


def email_alert(*, alert_id: int) -> EmailOutcome:
    """Send one alert to the workspace's alert addresses (the job). Safe to run again:
    an alert already e-mailed (audit entry) is not sent twice."""
    from mailer_app.db import session_scope
    from mailer_app.mail.smtp import OutgoingMessage, SmtpEndpoint, submit_messages
    from mailer_app.services import secrets as secret_store

    with session_scope() as session:
        event = session.get(AlertEvent, alert_id)
        if event is None:
            return EmailOutcome(False, "The alert no longer exists.")
        workspace = session.get(Workspace, event.workspace_id)
        if not workspace.alert_emails:
            return EmailOutcome(False, "No alert addresses are set.")
        done = session.exec(
            select(AuditEntry.id).where(
                AuditEntry.workspace_id == event.workspace_id,
                AuditEntry.action == EMAIL_ACTION,
                AuditEntry.target_id == alert_id,
            )
        ).first()
        if done is not None:
            return EmailOutcome(False, "Already e-mailed.")
        sender = alert_sender(session=session, workspace_id=event.workspace_id)
        if sender is None:
            return EmailOutcome(False, "The workspace has no active sender account to send from.")
        password = (
            secret_store.reveal_secret(
                session=session, workspace_id=event.workspace_id, ref=sender.credential_ref
            )
            if sender.credential_ref
            else None
        )
        endpoint = SmtpEndpoint(
            host=sender.smtp_host, port=sender.smtp_port, security=sender.smtp_security,
            username=sender.smtp_username, password=password,
        )  # fmt: skip
        recipients = tuple(workspace.alert_emails)
        message = OutgoingMessage(
            envelope_from=sender.from_email,
            recipients=recipients,
            data=_alert_message(event, workspace, sender),
        )
        workspace_id, sender_id = event.workspace_id, sender.id
    result = submit_messages(endpoint, [message])[0]  # a connection error: RQ retries the job
    with session_scope() as session:
        audit.record(
            session=session, action=EMAIL_ACTION, source=Source.JOB, workspace_id=workspace_id,
            target_type="alert_event", target_id=alert_id,
            details={"ok": result.ok, "code": result.code, "recipients": len(recipients),
                     "sender_account_id": sender_id},
        )  # fmt: skip
    if not result.ok:
        return EmailOutcome(False, f"The mail server refused it: {result.code} {result.reply}")
    return EmailOutcome(True, f"Sent to {len(recipients)} addresses.")
