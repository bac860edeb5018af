"""The review gate: what a build made of each recipient, a person's decisions on it,
and what still keeps the campaign from being approved for sending.

The messages reviewed are the built messages of the campaign's newest published
version (services/build.py makes them). A person may approve a `warning` or
`needs_review` message (one, or all with the same reason), exclude any message that
could go out, or put an excluded one back. An excluded message counts as excluded
whatever the build said. Decisions are kept on the row with who made them and when,
and in the audit log; a rebuild that changes a message clears its decision. A
recipient's data can be fixed from here too (`recipient_for_message` for the form,
`contacts.update_contact` to save); the next rebuild changes that message only.

The Send button is `approve_campaign`: it refuses while `send_blockers` says why
(build missing, running or failed; messages needing review; the version does not
validate; nothing to send; the campaign not in review). Changing a decision after
approval sends the campaign back to review, so an approval always covers the
messages as they are.

A test send assembles one message exactly as it will go out, with the recipient
replaced by the typed address and marked as a test (`build.message_bytes`), and
submits it through the campaign's sender account; nothing in the campaign changes.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiosmtplib
import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from sqlmodel import Session, select

from mailer_app.mail.smtp import OutgoingMessage, SmtpAuthError, submit_messages
from mailer_app.models import (
    AuditEntry,
    BuildStatus,
    BuiltMessage,
    Campaign,
    CampaignBuild,
    CampaignStatus,
    CampaignVersion,
    ReviewDecision,
    ReviewStatus,
    Role,
    Source,
    User,
    utcnow,
)
from mailer_app.services import (
    InvalidInput,
    NotFoundError,
    ServiceError,
    audit,
    build,
    campaign_status,
    campaigns,
    contacts,
    senders,
    templating,
)
from mailer_app.services.campaign_steps import STEP_LABELS, STEPS, step_problems

# The statuses a person decides on (approve), and those a person may exclude.
DECIDABLE = (ReviewStatus.WARNING, ReviewStatus.NEEDS_REVIEW)
EXCLUDABLE = (
    ReviewStatus.READY,
    ReviewStatus.WARNING,
    ReviewStatus.NEEDS_REVIEW,
    ReviewStatus.BLOCKED,
)
# The reason shown for messages a person excluded (not a build reason).
EXCLUDED_BY_PERSON = "excluded_by_person"
EXCLUDED_BY_PERSON_TEXT = "Excluded by a person during review: it will not be sent."
# Decisions may change while the campaign waits at the gate (approved goes back to review).
_DECISIONS_OPEN = {
    CampaignStatus.DRAFT,
    CampaignStatus.BUILT,
    CampaignStatus.IN_REVIEW,
    CampaignStatus.APPROVED,
}
MAX_PAGE = 500

# Who may build, look into and decide on messages, and test-send them (owners always).
REVIEWER_ROLES = (Role.ADMIN, Role.EDITOR, Role.SENDER)
# Who may approve the campaign for sending (PRODUCT.md: "sender (may approve and send)").
APPROVER_ROLES = (Role.ADMIN, Role.SENDER)


class MessageNotFound(NotFoundError):
    """No built message with this id in this workspace."""


class CampaignNotReady(ServiceError):
    """Approval refused: `blockers` are the reasons, in plain words."""

    def __init__(self, blockers: list[str]) -> None:
        super().__init__("The campaign cannot be approved yet: " + " ".join(blockers))
        self.blockers = blockers


# --- views --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReasonCount:
    status: str  # the build's status for these messages
    code: str
    explanation: str  # plain words
    count: int
    approved: int = 0  # of them, approved by a person
    details: tuple[str, ...] = ()  # e.g. the missing fields (a few)


@dataclass(frozen=True)
class ReviewCounts:
    by_status: dict[str, int]  # every ReviewStatus, zeros included; person-excluded count
    by_reason: list[ReasonCount]
    total: int = 0
    awaiting_decision: int = 0  # needs_review without a decision
    approved: int = 0  # approved by a person
    excluded_by_person: int = 0
    sendable: int = 0  # would go out: ready, warning, approved needs_review
    version_id: int | None = None


@dataclass(frozen=True)
class MessageRow:
    id: int
    email: str
    subject: str
    review_status: str  # what the build said
    reasons: list[str]  # plain words
    decision: str | None  # approved | excluded | None
    size_bytes: int
    reason_codes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MessagePage:
    rows: list[MessageRow]
    total: int


@dataclass(frozen=True)
class MessagePreview:
    headers: list[tuple[str, str]]
    html_document: str  # sanitized, for <iframe sandbox srcdoc>
    text: str
    attachments: list[tuple[str, int]]  # (filename, size in bytes)
    review_status: str
    reasons: list[str]
    decision: str | None = None
    email: str = ""
    size_bytes: int = 0
    problem: str | None = None  # why the message cannot be assembled (blocked ones)
    contact_id: int | None = None  # the recipient's contact (None once its list is deleted)


@dataclass(frozen=True)
class EditableRecipient:
    """What a person may change about a message's recipient from the review page."""

    contact_id: int
    email: str  # shown, not editable
    first_name: str
    last_name: str
    fields: list[tuple[str, str]]  # (custom field name, value as text), the list's order
    missing: tuple[str, ...] = ()  # fields the message lacks (missing or printed blank)


@dataclass(frozen=True)
class TestSendResult:
    __test__ = False  # not a pytest class

    ok: bool
    detail: str  # plain words


# --- helpers ------------------------------------------------------------------------------


def reason_text(reason: dict[str, Any]) -> str:
    """One reason in plain words: its explanation, and its detail when there is one."""
    code = str(reason.get("code") or "")
    detail = reason.get("detail")
    if code == EXCLUDED_BY_PERSON:
        return EXCLUDED_BY_PERSON_TEXT
    explanation = explanation_of(code)
    return f"{explanation} ({detail})" if detail not in (None, "") else explanation


def explanation_of(code: str) -> str:
    """The catalogue's plain explanation of a reason code."""
    if code == EXCLUDED_BY_PERSON:
        return EXCLUDED_BY_PERSON_TEXT
    entry = build.REASONS.get(code)
    if entry is None:
        return code.replace("_", " ").capitalize() + "."
    return entry[1]


def _published(session: Session, workspace_id: int, campaign_id: int) -> CampaignVersion | None:
    return campaigns.latest_published(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id
    )


def _scope(workspace_id: int, campaign_id: int, version_id: int | None):
    return (
        BuiltMessage.workspace_id == workspace_id,
        BuiltMessage.campaign_id == campaign_id,
        BuiltMessage.version_id == (version_id if version_id is not None else -1),
    )


def _not_excluded():
    return sa.or_(BuiltMessage.decision.is_(None), BuiltMessage.decision != ReviewDecision.EXCLUDED)


def _has_reason(session: Session, code: str):
    """SQL: the row's reasons include `code` (JSON arrays differ between databases)."""
    if session.get_bind().dialect.name == "postgresql":
        clause = (
            "EXISTS (SELECT 1 FROM json_array_elements(built_message.reasons) AS r "
            "WHERE r->>'code' = :reason_code)"
        )
    else:
        clause = (
            "EXISTS (SELECT 1 FROM json_each(built_message.reasons) AS r "
            "WHERE json_extract(r.value, '$.code') = :reason_code)"
        )
    return sa.text(clause).bindparams(reason_code=code)


def _status_filter(status: str):
    if status == ReviewStatus.EXCLUDED:
        return sa.or_(
            BuiltMessage.review_status == ReviewStatus.EXCLUDED,
            BuiltMessage.decision == ReviewDecision.EXCLUDED,
        )
    if status == ReviewDecision.APPROVED:
        return BuiltMessage.decision == ReviewDecision.APPROVED
    if status not in set(ReviewStatus):
        raise InvalidInput(f"There is no message status called {status!r}.", field="status")
    return sa.and_(BuiltMessage.review_status == status, _not_excluded())


def _reasons_of(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):  # grouped as text
        value = json.loads(value or "[]")
    return [r for r in value or [] if isinstance(r, dict)]


# --- counts and the list ------------------------------------------------------------------------


def review_counts(*, session: Session, workspace_id: int, campaign_id: int) -> ReviewCounts:
    """Messages of the newest published version by status and by reason.

    A message a person excluded counts as `excluded` (and under the reason
    `excluded_by_person`) whatever the build said.
    """
    campaigns.get_campaign(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    version = _published(session, workspace_id, campaign_id)
    version_id = version.id if version else None
    by_status = {str(s): 0 for s in ReviewStatus}
    reasons: dict[tuple[str, str], dict[str, Any]] = {}
    totals = {"total": 0, "awaiting": 0, "approved": 0, "excluded": 0, "sendable": 0}
    reasons_text = sa.cast(BuiltMessage.reasons, sa.Text)
    rows = session.exec(
        select(BuiltMessage.review_status, BuiltMessage.decision, reasons_text, sa.func.count())
        .where(*_scope(workspace_id, campaign_id, version_id))
        .group_by(BuiltMessage.review_status, BuiltMessage.decision, reasons_text)
    ).all()
    for status, decision, text, count in rows:
        totals["total"] += count
        if decision == ReviewDecision.EXCLUDED:
            by_status[ReviewStatus.EXCLUDED] += count
            totals["excluded"] += count
            entry = reasons.setdefault(
                (ReviewStatus.EXCLUDED, EXCLUDED_BY_PERSON), {"count": 0, "approved": 0}
            )
            entry["count"] += count
            continue
        by_status[status] = by_status.get(status, 0) + count
        approved = decision == ReviewDecision.APPROVED
        totals["approved"] += count if approved else 0
        if status == ReviewStatus.NEEDS_REVIEW and not approved:
            totals["awaiting"] += count
        if status in (ReviewStatus.READY, ReviewStatus.WARNING) or (
            status == ReviewStatus.NEEDS_REVIEW and approved
        ):
            totals["sendable"] += count
        seen: set[str] = set()
        for reason in _reasons_of(text):
            code = str(reason.get("code") or "")
            if not code or code in seen:
                continue
            seen.add(code)
            entry = reasons.setdefault((status, code), {"count": 0, "approved": 0, "details": []})
            entry["count"] += count
            entry["approved"] += count if approved else 0
            detail = reason.get("detail")
            shown = entry["details"]
            if detail not in (None, "") and len(shown) < 5 and str(detail) not in shown:
                shown.append(str(detail))
    order = {s: i for i, s in enumerate(ReviewStatus)}
    by_reason = sorted(
        (
            ReasonCount(
                status=status,
                code=code,
                explanation=explanation_of(code),
                count=entry["count"],
                approved=entry["approved"],
                details=tuple(entry.get("details", ())),
            )
            for (status, code), entry in reasons.items()
        ),
        key=lambda r: (order.get(r.status, 99), -r.count, r.code),
    )
    return ReviewCounts(
        by_status=by_status,
        by_reason=by_reason,
        total=totals["total"],
        awaiting_decision=totals["awaiting"],
        approved=totals["approved"],
        excluded_by_person=totals["excluded"],
        sendable=totals["sendable"],
        version_id=version_id,
    )


def list_messages(
    *,
    session: Session,
    workspace_id: int,
    campaign_id: int,
    status: str | None = None,
    reason: str | None = None,
    search: str = "",
    offset: int = 0,
    limit: int = 50,
) -> MessagePage:
    """One page of the newest published version's messages, by address.

    `status` is a ReviewStatus (`excluded` includes messages a person excluded) or
    `approved`; `reason` a reason code (or `excluded_by_person`); `search` matches
    anywhere in the address or the subject, ignoring case.
    """
    campaigns.get_campaign(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    version = _published(session, workspace_id, campaign_id)
    conditions = list(_scope(workspace_id, campaign_id, version.id if version else None))
    if status:
        conditions.append(_status_filter(status))
    if reason == EXCLUDED_BY_PERSON:
        conditions.append(BuiltMessage.decision == ReviewDecision.EXCLUDED)
    elif reason:
        conditions.append(_has_reason(session, reason))
    text = (search or "").strip().lower()
    if text:
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        conditions.append(
            sa.or_(
                sa.func.lower(BuiltMessage.email).like(pattern, escape="\\"),
                sa.func.lower(BuiltMessage.subject).like(pattern, escape="\\"),
            )
        )
    total = session.exec(select(sa.func.count()).select_from(BuiltMessage).where(*conditions)).one()
    limit = max(1, min(int(limit), MAX_PAGE))
    rows = session.exec(
        select(BuiltMessage)
        .where(*conditions)
        .order_by(BuiltMessage.email, BuiltMessage.id)
        .offset(max(0, int(offset)))
        .limit(limit)
    ).all()
    return MessagePage(rows=[_message_row(r) for r in rows], total=total)


def _message_row(row: BuiltMessage) -> MessageRow:
    reasons = _reasons_of(row.reasons)
    words = [reason_text(r) for r in reasons]
    if row.decision == ReviewDecision.EXCLUDED:
        words.insert(0, EXCLUDED_BY_PERSON_TEXT)
    return MessageRow(
        id=row.id,
        email=row.email,
        subject=row.subject,
        review_status=row.review_status,
        reasons=words,
        decision=row.decision,
        size_bytes=row.size_bytes,
        reason_codes=[str(r.get("code")) for r in reasons],
    )


def get_message(*, session: Session, workspace_id: int, message_id: int) -> BuiltMessage:
    """The built message with this id in this workspace, or MessageNotFound."""
    row = session.exec(
        select(BuiltMessage).where(
            BuiltMessage.workspace_id == workspace_id, BuiltMessage.id == message_id
        )
    ).first()
    if row is None:
        raise MessageNotFound("This message does not exist (a newer build may have replaced it).")
    return row


# --- preview and download ---------------------------------------------------------------------


def message_preview(*, session: Session, workspace_id: int, message_id: int) -> MessagePreview:
    """The message exactly as it will be sent: its headers, HTML (sanitized for the
    preview frame), text and attachments, parsed back from the assembled bytes."""
    row = get_message(session=session, workspace_id=workspace_id, message_id=message_id)
    view = _message_row(row)
    try:
        data = build.message_bytes(
            session=session, workspace_id=workspace_id, message_id=message_id
        )
    except NotFoundError:
        raise
    except ServiceError as exc:
        return MessagePreview(
            headers=[], html_document=templating.preview_document(""), text="", attachments=[],
            review_status=row.review_status, reasons=view.reasons, decision=row.decision,
            email=row.email, size_bytes=row.size_bytes, problem=str(exc),
            contact_id=row.contact_id,
        )  # fmt: skip
    parsed = parse_message(data)
    return MessagePreview(
        headers=parsed["headers"],
        html_document=templating.preview_document(parsed["html"]),
        text=parsed["text"],
        attachments=parsed["attachments"],
        review_status=row.review_status,
        reasons=view.reasons,
        decision=row.decision,
        email=row.email,
        size_bytes=len(data),
        contact_id=row.contact_id,
    )


def recipient_for_message(
    *, session: Session, workspace_id: int, message_id: int
) -> EditableRecipient | None:
    """The contact a message was built for, as the edit form shows it (None when the
    message no longer has a contact: its list was deleted)."""
    row = get_message(session=session, workspace_id=workspace_id, message_id=message_id)
    if row.contact_id is None:
        return None
    try:
        contact = contacts.get_contact(
            session=session, workspace_id=workspace_id, contact_id=row.contact_id
        )
    except NotFoundError:
        return None
    stored = contact.fields or {}
    names = contacts.editable_field_names(session=session, contact=contact)
    missing = {
        str(r.get("detail"))
        for r in _reasons_of(row.reasons)
        if r.get("code") in ("missing_field", "blank_field") and r.get("detail")
    }
    return EditableRecipient(
        contact_id=contact.id,
        email=contact.email,
        first_name=contact.first_name or "",
        last_name=contact.last_name or "",
        fields=[(n, "" if stored.get(n) is None else str(stored[n])) for n in names],
        missing=tuple(sorted(missing)),
    )


def parse_message(data: bytes) -> dict[str, Any]:
    """Headers (decoded), the HTML and text parts and the attachments of a message."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    headers = [(name, str(value)) for name, value in message.items()]
    html_part = message.get_body(preferencelist=("html",))
    text_part = message.get_body(preferencelist=("plain",))
    files = []
    for part in message.iter_attachments():
        payload = part.get_payload(decode=True) or b""
        files.append((part.get_filename() or "(unnamed)", len(payload)))
    return {
        "headers": headers,
        "html": html_part.get_content() if html_part is not None else "",
        "text": text_part.get_content() if text_part is not None else "",
        "attachments": files,
    }


def eml_bytes(*, session: Session, workspace_id: int, message_id: int) -> tuple[bytes, str]:
    """(the message's bytes, a file name for them) for the .eml download."""
    row = get_message(session=session, workspace_id=workspace_id, message_id=message_id)
    data = build.message_bytes(session=session, workspace_id=workspace_id, message_id=row.id)
    return data, eml_filename(row)


def eml_filename(row) -> str:
    """`message-12-ann_example.com.eml`: the id and the address, safe as a file name."""
    address = re.sub(r"[^A-Za-z0-9.@_-]+", "_", str(getattr(row, "email", "") or ""))[:80]
    address = address.replace("@", "_at_")
    return f"message-{int(row.id)}-{address}.eml" if address else f"message-{int(row.id)}.eml"


# --- decisions --------------------------------------------------------------------------------


def _open_for_decisions(session: Session, workspace_id: int, campaign_id: int) -> Campaign:
    campaign = campaigns.get_campaign(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id
    )
    if campaign.status not in _DECISIONS_OPEN:
        label = campaigns.STATUS_LABELS.get(campaign.status, campaign.status).lower()
        raise ServiceError(f"The messages of a campaign that is {label} cannot be changed.")
    return campaign


def _decide(
    session: Session,
    campaign: Campaign,
    conditions: Sequence[Any],
    values: dict[str, Any],
    *,
    action: str,
    user_id: int | None,
    source: Source | str,
    details: dict[str, Any],
) -> int:
    ids = list(session.exec(select(BuiltMessage.id).where(*conditions)).all())
    if not ids:
        return 0
    for start in range(0, len(ids), 500):
        session.exec(
            sa.update(BuiltMessage)
            .where(BuiltMessage.id.in_(ids[start : start + 500]))
            .values(**values)
        )
    if campaign.status == CampaignStatus.APPROVED:
        campaign_status.transition(
            session=session, campaign=campaign, to=CampaignStatus.IN_REVIEW, user_id=user_id,
            source=source, reason="A review decision changed after approval.",
        )  # fmt: skip
    audit.record(
        session=session, action=action, source=source, workspace_id=campaign.workspace_id,
        user_id=user_id, target_type="campaign", target_id=campaign.id,
        details={**details, "count": len(ids), "message_ids": ids[:50]},
    )  # fmt: skip
    return len(ids)


def approve_messages(
    *,
    session: Session,
    workspace_id: int,
    campaign_id: int,
    user_id: int | None,
    message_ids: Sequence[int] | None = None,
    reason_code: str | None = None,
    source: Source | str = Source.UI,
) -> int:
    """Let `warning`/`needs_review` messages go: those in `message_ids`, or every one
    with `reason_code` that nobody decided on yet. Returns how many changed."""
    if message_ids is None and not reason_code:
        raise InvalidInput("Choose the messages to approve, or a reason.", field="message_ids")
    campaign = _open_for_decisions(session, workspace_id, campaign_id)
    version = _published(session, workspace_id, campaign_id)
    conditions = [
        *_scope(workspace_id, campaign_id, version.id if version else None),
        BuiltMessage.review_status.in_([str(s) for s in DECIDABLE]),
    ]
    if message_ids is not None:
        conditions.append(BuiltMessage.id.in_([int(i) for i in message_ids] or [-1]))
        conditions.append(
            sa.or_(
                BuiltMessage.decision.is_(None), BuiltMessage.decision != ReviewDecision.APPROVED
            )
        )
    else:
        conditions.append(BuiltMessage.decision.is_(None))  # never overrides an exclusion
    if reason_code:
        conditions.append(_has_reason(session, reason_code))
    values = {"decision": ReviewDecision.APPROVED, "approved_by_id": user_id,
              "approved_at": utcnow()}  # fmt: skip
    return _decide(
        session, campaign, conditions, values, action="review.approve", user_id=user_id,
        source=source, details={"reason_code": reason_code},
    )  # fmt: skip


def exclude_messages(
    *,
    session: Session,
    workspace_id: int,
    campaign_id: int,
    user_id: int | None,
    message_ids: Sequence[int],
    source: Source | str = Source.UI,
) -> int:
    """Take messages out of the campaign (they are kept, reported as excluded)."""
    campaign = _open_for_decisions(session, workspace_id, campaign_id)
    version = _published(session, workspace_id, campaign_id)
    conditions = [
        *_scope(workspace_id, campaign_id, version.id if version else None),
        BuiltMessage.id.in_([int(i) for i in message_ids] or [-1]),
        BuiltMessage.review_status.in_([str(s) for s in EXCLUDABLE]),
        _not_excluded(),
    ]
    values = {"decision": ReviewDecision.EXCLUDED, "approved_by_id": user_id,
              "approved_at": utcnow()}  # fmt: skip
    return _decide(
        session, campaign, conditions, values, action="review.exclude", user_id=user_id,
        source=source, details={},
    )  # fmt: skip


def include_messages(
    *,
    session: Session,
    workspace_id: int,
    campaign_id: int,
    user_id: int | None,
    message_ids: Sequence[int],
    source: Source | str = Source.UI,
) -> int:
    """Undo `exclude_messages`: the messages are back with the build's status."""
    campaign = _open_for_decisions(session, workspace_id, campaign_id)
    version = _published(session, workspace_id, campaign_id)
    conditions = [
        *_scope(workspace_id, campaign_id, version.id if version else None),
        BuiltMessage.id.in_([int(i) for i in message_ids] or [-1]),
        BuiltMessage.decision == ReviewDecision.EXCLUDED,
    ]
    values = {"decision": None, "approved_by_id": None, "approved_at": None}
    return _decide(
        session, campaign, conditions, values, action="review.include", user_id=user_id,
        source=source, details={},
    )  # fmt: skip


# --- the gate ---------------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def send_blockers(*, session: Session, workspace_id: int, campaign_id: int) -> list[str]:
    """Why the Send button is disabled, in plain words ([] when it may be pressed)."""
    campaign = campaigns.get_campaign(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id
    )
    blockers: list[str] = []
    if campaign.status != CampaignStatus.IN_REVIEW:
        label = campaigns.STATUS_LABELS.get(campaign.status, campaign.status).lower()
        if campaign.status == CampaignStatus.APPROVED:
            blockers.append("The campaign is already approved.")
        else:
            blockers.append(
                f"The campaign is {label}: only a campaign ready for review can be approved."
            )
    version = _published(session, workspace_id, campaign_id)
    if version is None:
        blockers.append("Publish the campaign first: there is no version to build.")
        return blockers
    for step in STEPS:
        for problem in step_problems(
            session=session, campaign=campaign, version=version, step=step
        ).values():
            blockers.append(f"{STEP_LABELS[step]}: {problem}")
    latest: CampaignBuild | None = build.latest_build(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id
    )
    if latest is None or latest.version_id != version.id:
        blockers.append(f"Build the messages of version {version.number} first.")
        return blockers
    if latest.status in (BuildStatus.QUEUED, BuildStatus.RUNNING):
        progress = f" ({latest.done:,} of {latest.total:,} done)" if latest.total else ""
        blockers.append(f"The messages are still being built{progress}.")
        return blockers
    if latest.status == BuildStatus.FAILED:
        why = f": {latest.message}" if latest.message else "."
        blockers.append(f"The last build failed{why} Fix it and build again.")
        return blockers
    counts = review_counts(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    if counts.awaiting_decision:
        blockers.append(
            f"{_plural(counts.awaiting_decision, 'message')} need a decision: "
            "approve or exclude each one."
            if counts.awaiting_decision != 1
            else "1 message needs a decision: approve or exclude it."
        )
    if counts.sendable == 0:
        blockers.append("No message can be sent: every one is blocked, excluded or inactive.")
    return blockers


@dataclass(frozen=True)
class Approval:
    """Who approved the campaign for sending, and when."""

    approver: str
    approved_at: datetime


def campaign_approval(*, session: Session, workspace_id: int, campaign_id: int) -> Approval | None:
    """The approval the campaign now stands on (None unless it is approved)."""
    campaign = campaigns.get_campaign(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id
    )
    if campaign.status != CampaignStatus.APPROVED:
        return None
    found = session.exec(
        select(AuditEntry, User)
        .outerjoin(User, User.id == AuditEntry.user_id)
        .where(
            AuditEntry.workspace_id == workspace_id,
            AuditEntry.action == "campaign.approve",
            AuditEntry.target_type == "campaign",
            AuditEntry.target_id == campaign_id,
        )
        .order_by(AuditEntry.id.desc())
    ).first()
    if found is None:
        return None
    entry, user = found
    approver = (user.display_name or user.email) if user is not None else "an operator"
    return Approval(approver=approver, approved_at=entry.created_at)


def approve_campaign(
    *,
    session: Session,
    workspace_id: int,
    campaign_id: int,
    user_id: int | None,
    source: Source | str = Source.UI,
) -> Campaign:
    """Pass the gate: in review -> approved, recorded with who approved and when.

    CampaignNotReady (with every blocker) when `send_blockers` is not empty.
    """
    campaign = campaigns.get_campaign(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id
    )
    blockers = send_blockers(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    if blockers:
        raise CampaignNotReady(blockers)
    counts = review_counts(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    version = _published(session, workspace_id, campaign_id)
    campaign_status.transition(
        session=session, campaign=campaign, to=CampaignStatus.APPROVED, user_id=user_id,
        source=source, reason="Approved at the review gate.",
    )  # fmt: skip
    audit.record(
        session=session, action="campaign.approve", source=source, workspace_id=workspace_id,
        user_id=user_id, target_type="campaign", target_id=campaign.id,
        details={
            "version": version.number, "approved_at": campaign.updated_at.isoformat(),
            "messages": counts.sendable, "by_status": counts.by_status,
        },
    )  # fmt: skip
    return campaign


# --- test send --------------------------------------------------------------------------------


def check_test_address(value: str) -> str:
    """The typed test address, checked (syntax only, no DNS); InvalidInput if bad."""
    text = (value or "").strip()
    if not text:
        raise InvalidInput("Type the address to send the test to.", field="to_address")
    if len(text) > 320 or any(c in text for c in "\r\n\x00"):
        raise InvalidInput("That is not a valid email address.", field="to_address")
    try:
        checked = validate_email(text, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise InvalidInput(
            f"That is not a valid email address: {exc}", field="to_address"
        ) from None
    return checked.normalized


def test_send(
    *,
    session: Session,
    workspace_id: int,
    message_id: int,
    to_address: str,
    user_id: int | None,
    source: Source | str = Source.UI,
) -> TestSendResult:
    """Send one message, marked as a test, to `to_address` through the campaign's
    sender account. The campaign and its messages do not change; the audit log says
    who sent which test where. InvalidInput for a bad address; delivery trouble is
    reported in the result, not raised."""
    address = check_test_address(to_address)
    row = get_message(session=session, workspace_id=workspace_id, message_id=message_id)
    campaign = campaigns.get_campaign(
        session=session, workspace_id=workspace_id, campaign_id=row.campaign_id
    )
    version = session.get(CampaignVersion, row.version_id)
    sender_id = (version.sender_account_id if version else None) or campaign.sender_account_id
    if sender_id is None:
        raise ServiceError("Choose a sender account for the campaign before sending a test.")
    sender = senders.get_sender(session=session, workspace_id=workspace_id, sender_id=sender_id)
    data = build.message_bytes(
        session=session, workspace_id=workspace_id, message_id=row.id, test_to=address
    )
    endpoint = senders.saved_sender_endpoints(
        session=session, workspace_id=workspace_id, sender_id=sender.id
    ).smtp
    outgoing = OutgoingMessage(envelope_from=sender.from_email, recipients=(address,), data=data)
    where = f"{endpoint.host}:{endpoint.port}"
    try:
        result = submit_messages(endpoint, [outgoing])[0]
        if result.ok:
            outcome = TestSendResult(
                True, f"The mail server of {sender.name} ({where}) accepted it: {result.reply}"
            )
        else:
            code, reply = result.refused.get(address, (result.code, result.reply))
            outcome = TestSendResult(
                False, f"The mail server at {where} refused it: {code} {reply}"
            )
    except SmtpAuthError as exc:
        outcome = TestSendResult(False, str(exc))
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        outcome = TestSendResult(False, f"Could not reach the mail server at {where}: {exc}")
    audit.record(
        session=session, action="review.test_send", source=source, workspace_id=workspace_id,
        user_id=user_id, target_type="campaign", target_id=campaign.id,
        details={"message_id": row.id, "to": address, "sender": sender.name, "ok": outcome.ok,
                 "detail": outcome.detail},
    )  # fmt: skip
    return outcome


test_send.__test__ = False  # a service, not a pytest test
