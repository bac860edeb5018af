"""A campaign's report: what its latest send did, and where its seed copies landed.

One `campaign_report` gathers the numbers the report page, the JSON document and
the emailed summary show: counts by send status (send_control.send_progress), by
review status (review.review_counts), failures grouped by reason, and the
placement of each of the campaign's placement runs with its rates
(placement_results.summarize_placement). Per-recipient records are never held in
memory: `recipient_rows` reads them in batches for the CSV and JSON streams, and
every CSV cell goes through csv_safety (no spreadsheet formulas).

`email_report` sends the summary with the CSV attached, through a sender account
of the workspace, to the addresses a person typed. Services never commit.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid

import aiosmtplib
import sqlalchemy as sa
from sqlmodel import Session, select

from mailer_app.mail.smtp import OutgoingMessage, SmtpAuthError, submit_messages
from mailer_app.models import (
    BuiltMessage,
    CampaignVersion,
    Contact,
    Membership,
    PlacementRun,
    ReviewDecision,
    ReviewStatus,
    Role,
    SendRecord,
    Source,
    utcnow,
)
from mailer_app.services import (
    InvalidInput,
    ServiceError,
    audit,
    auth,
    campaigns,
    review,
    send_control,
    send_records,
    senders,
)
from mailer_app.services.csv_safety import safe_row
from mailer_app.services.placement_results import PlacementSummary, summarize_placement

# Who may email the report (owners always): everyone but viewers, who only look.
EMAIL_ROLES = (Role.ADMIN, Role.EDITOR, Role.SENDER)
MAX_EMAIL_ADDRESSES = 10
# A CSV bigger than this is attached zipped (CSV compresses about tenfold).
ZIP_OVER_BYTES = 2 * 1024 * 1024
ROW_BATCH = 1000
MAX_PLACEMENT_RUNS = 20
CSV_COLUMNS = (
    "email", "first_name", "last_name", "kind", "review_status", "review_decision",
    "review_reasons", "send_status", "attempts", "submitted_at", "sent_at", "last_error",
    "bounce", "bounced_at", "message_id",
)  # fmt: skip
NOT_QUEUED = "not_queued"  # a built message that never got a send record (blocked, excluded…)


@dataclass(frozen=True)
class PlacementRunReport:
    run_id: int
    kind: str
    status: str
    created_at: datetime | None
    finished_at: datetime | None
    summary: PlacementSummary


@dataclass(frozen=True)
class CampaignReport:
    campaign_id: int
    campaign_name: str
    status: str
    status_reason: str | None
    generated_at: datetime
    progress: send_control.SendProgress | None  # None: never sent
    review: review.ReviewCounts
    placement: list[PlacementRunReport] = field(default_factory=list)  # newest first

    @property
    def send_counts(self) -> dict[str, int]:
        p = self.progress
        if p is None:
            return {"total": 0, "sent": 0, "failed": 0, "unknown": 0, "queued": 0,
                    "sending": 0, "not_sent": 0}  # fmt: skip
        return {"total": p.total, "sent": p.sent, "failed": p.failed, "unknown": p.unknown,
                "queued": p.queued, "sending": p.sending, "not_sent": p.not_sent}  # fmt: skip


class ReportEmailFailed(ServiceError):
    """The report could not be handed to the mail server (plain words, no secrets)."""


# --- the numbers --------------------------------------------------------------------------------


def campaign_report(*, session: Session, workspace_id: int, campaign_id: int) -> CampaignReport:
    """Everything the report shows except the per-recipient rows (NotFound if the
    campaign is not in this workspace)."""
    campaign = campaigns.get_campaign(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id
    )
    progress = send_control.send_progress(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id
    )
    counts = review.review_counts(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id
    )
    runs = session.exec(
        select(PlacementRun)
        .where(PlacementRun.workspace_id == workspace_id, PlacementRun.campaign_id == campaign_id)
        .order_by(PlacementRun.id.desc())
        .limit(MAX_PLACEMENT_RUNS)
    ).all()
    placement = [
        PlacementRunReport(
            run_id=run.id,
            kind=str(run.kind),
            status=str(run.status),
            created_at=run.created_at,
            finished_at=run.finished_at,
            summary=summarize_placement(session=session, workspace_id=workspace_id, run_id=run.id),
        )  # fmt: skip
        for run in runs
    ]
    return CampaignReport(
        campaign_id=campaign.id,
        campaign_name=campaign.name or "(untitled)",
        status=str(campaign.status),
        status_reason=campaign.status_reason,
        generated_at=utcnow(),
        progress=progress,
        review=counts,
        placement=placement,
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def report_document(report: CampaignReport) -> dict:
    """The report as plain JSON values (without the per-recipient rows)."""
    p = report.progress
    return {
        "campaign": {"id": report.campaign_id, "name": report.campaign_name,
                     "status": report.status, "status_reason": report.status_reason},
        "generated_at": _iso(report.generated_at),
        "send": None if p is None else {
            "run_id": p.run_id, "started_at": _iso(p.started_at),
            "finished_at": _iso(p.finished_at), "percent": p.percent,
            "rate_per_minute": p.rate_per_minute, "seeds_sent": p.seeds_sent,
            "seeds_total": p.seeds_total, "counts": report.send_counts,
            "failures": [{"reason": g.reason, "count": g.count} for g in p.failures],
            "failure_reasons": p.failure_reasons,
            "unknown": [{"id": u.id, "email": u.email, "last_error": u.last_error,
                         "submitted_at": _iso(u.submitted_at)} for u in p.unknown_records],
        },
        "review": {
            "by_status": report.review.by_status, "total": report.review.total,
            "awaiting_decision": report.review.awaiting_decision,
            "approved": report.review.approved, "sendable": report.review.sendable,
            "excluded_by_person": report.review.excluded_by_person,
            "by_reason": [{"status": r.status, "code": r.code, "explanation": r.explanation,
                           "count": r.count} for r in report.review.by_reason],
        },
        "placement": [
            {"run_id": r.run_id, "kind": r.kind, "status": r.status,
             "created_at": _iso(r.created_at), "finished_at": _iso(r.finished_at),
             **r.summary.as_dict()}
            for r in report.placement
        ],
    }  # fmt: skip


# --- per-recipient rows -------------------------------------------------------------------------


def _reasons_text(reasons) -> str:
    return "; ".join(review.reason_text(r) for r in reasons or [] if isinstance(r, dict))


def recipient_rows(*, session: Session, workspace_id: int, campaign_id: int) -> Iterator[dict]:
    """One dict per recipient of the latest send (or of the published version when it
    was never sent), seeds after recipients, keys CSV_COLUMNS; read in batches."""
    campaigns.get_campaign(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    run = send_records._latest_run(session, workspace_id, campaign_id)
    if run is not None:
        version_id = run.version_id
    else:
        version = campaigns.latest_published(
            session=session, workspace_id=workspace_id, campaign_id=campaign_id
        )
        version_id = version.id if version else None
    bm, sr, ct = BuiltMessage.__table__.c, SendRecord.__table__.c, Contact.__table__.c
    record_cols = (sr.status, sr.attempt_count, sr.submitted_at, sr.sent_at, sr.last_error,
                   sr.bounce_kind, sr.bounced_at, sr.message_id)  # fmt: skip
    if version_id is not None:
        joined = sa.outerjoin(BuiltMessage.__table__, Contact.__table__, ct.id == bm.contact_id)
        joined = joined.outerjoin(
            SendRecord.__table__,
            sa.and_(sr.run_id == (run.id if run else -1), sr.workspace_id == workspace_id,
                    sr.email == bm.email),
        )  # fmt: skip
        query = (
            sa.select(bm.email, ct.first_name, ct.last_name, bm.review_status, bm.decision,
                      bm.reasons, *record_cols)
            .select_from(joined)
            .where(bm.workspace_id == workspace_id, bm.version_id == version_id)
            .order_by(bm.id)
            .execution_options(yield_per=ROW_BATCH)
        )  # fmt: skip
        for row in session.execute(query):
            email, first, last, status, decision, reasons, *record = row
            shown = ReviewStatus.EXCLUDED if decision == ReviewDecision.EXCLUDED else status
            yield _row(email, first, last, "recipient", str(shown), decision or "",
                       _reasons_text(review._reasons_of(reasons)), record)  # fmt: skip
    if run is None:
        return
    seeds = (
        sa.select(sr.email, *record_cols)
        .where(sr.workspace_id == workspace_id, sr.run_id == run.id, sr.is_seed.is_(True))
        .order_by(sr.id)
        .execution_options(yield_per=ROW_BATCH)
    )
    for email, *record in session.execute(seeds):
        yield _row(email, "", "", "seed", "", "", "", record)


def _row(email, first, last, kind, status, decision, reasons, record) -> dict:
    send_status, attempts, submitted, sent, error, bounce, bounced, message_id = record
    return {
        "email": email, "first_name": first or "", "last_name": last or "", "kind": kind,
        "review_status": status, "review_decision": decision, "review_reasons": reasons,
        "send_status": send_status or NOT_QUEUED, "attempts": attempts or 0,
        "submitted_at": _iso(submitted) or "", "sent_at": _iso(sent) or "",
        "last_error": error or "", "bounce": bounce or "", "bounced_at": _iso(bounced) or "",
        "message_id": message_id or "",
    }  # fmt: skip


def csv_chunks(rows: Iterator[dict], *, rows_per_chunk: int = 500) -> Iterator[str]:
    """The CSV text in chunks (header first); every cell spreadsheet-safe."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for n, row in enumerate(rows, start=1):
        writer.writerow(safe_row(row[c] for c in CSV_COLUMNS))
        if n % rows_per_chunk == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def json_chunks(document: dict, rows: Iterator[dict]) -> Iterator[str]:
    """The JSON document with its `recipients` array streamed row by row."""
    head = json.dumps({**document, "recipients": []}, ensure_ascii=False)
    yield head[: head.rindex("[") + 1]
    for n, row in enumerate(rows):
        yield ("," if n else "") + json.dumps(row, ensure_ascii=False)
    yield "]}"


def report_filename(report: CampaignReport, extension: str) -> str:
    return f"campaign-{report.campaign_id}-report.{extension}"


# --- emailed on demand --------------------------------------------------------------------------


@dataclass(frozen=True)
class EmailedReport:
    recipients: tuple[str, ...]
    sender_name: str
    attachment: str  # the file name attached
    detail: str  # plain words


def check_addresses(value: str | list[str]) -> tuple[str, ...]:
    """The typed addresses (comma, semicolon, space or line separated), checked."""
    parts = value if isinstance(value, list) else str(value or "").replace(";", ",").split(",")
    found: list[str] = []
    for part in parts:
        for item in str(part).split():
            checked = review.check_test_address(item)
            if checked not in found:
                found.append(checked)
    if not found:
        raise InvalidInput("Type at least one address to send the report to.", field="to")
    if len(found) > MAX_EMAIL_ADDRESSES:
        raise InvalidInput(
            f"Send the report to at most {MAX_EMAIL_ADDRESSES} addresses at a time.", field="to"
        )
    return tuple(found)


def _check_email_role(session: Session, workspace_id: int, user_id: int | None) -> None:
    if user_id is None:
        return
    role = session.exec(
        select(Membership.role).where(
            Membership.workspace_id == workspace_id, Membership.user_id == user_id
        )
    ).first()
    if role is None or (role != Role.OWNER and role not in {str(r) for r in EMAIL_ROLES}):
        raise auth.PermissionDenied("Viewers may read the report but not email it.")


def _default_sender_id(session: Session, workspace_id: int, campaign_id: int) -> int | None:
    run = send_records._latest_run(session, workspace_id, campaign_id)
    version = session.get(CampaignVersion, run.version_id) if run else None
    if version is None:
        version = campaigns.latest_published(
            session=session, workspace_id=workspace_id, campaign_id=campaign_id
        )
    campaign = campaigns.get_campaign(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id
    )
    return (version.sender_account_id if version else None) or campaign.sender_account_id


def summary_text(report: CampaignReport) -> str:
    """The report in a few plain lines (the emailed message's body)."""
    c = report.send_counts
    lines = [f"Report of the campaign “{report.campaign_name}” ({report.status}),",
             f"made {report.generated_at:%Y-%m-%d %H:%M} UTC.", ""]  # fmt: skip
    if report.progress is None:
        lines.append("It has not been sent yet.")
    else:
        lines.append(
            f"Messages: {c['total']:,} — sent {c['sent']:,}, failed {c['failed']:,}, "
            f"unknown {c['unknown']:,}, still queued {c['queued'] + c['sending']:,}."
        )
        for group in report.progress.failures:
            lines.append(f"  {group.count:,} failed: {group.reason}")
    statuses = ", ".join(f"{k} {v:,}" for k, v in report.review.by_status.items() if v)
    lines.append(f"Review: {statuses or 'nothing built yet'}.")
    for run in report.placement:
        o = run.summary.overall
        rates = ", ".join(
            f"{p} {o.rate(p):.0%}" for p in ("inbox", "spam", "promotions", "missing")
            if o.rate(p) is not None
        )  # fmt: skip
        lines.append(
            f"Placement run {run.run_id} ({run.status}): {o.total_checked} seeds checked"
            + (f" — {rates}" if rates else "") + (f", {o.pending} pending" if o.pending else "")
        )  # fmt: skip
    lines += ["", "Every recipient's record is in the attached CSV file."]
    return "\n".join(lines)


def email_report(
    *,
    session: Session,
    workspace_id: int,
    campaign_id: int,
    to: str | list[str],
    user_id: int | None,
    sender_id: int | None = None,
    source: Source | str = Source.UI,
) -> EmailedReport:
    """Email the report (summary in the body, the per-recipient CSV attached) to `to`
    through a sender account of the workspace (the campaign's when not given).
    InvalidInput for bad addresses; ReportEmailFailed when the server refuses it."""
    _check_email_role(session, workspace_id, user_id)
    addresses = check_addresses(to)
    report = campaign_report(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    sender_id = sender_id or _default_sender_id(session, workspace_id, campaign_id)
    if sender_id is None:
        raise InvalidInput("Choose a sender account to send the report through.", field="sender")
    sender = senders.get_sender(session=session, workspace_id=workspace_id, sender_id=sender_id)
    rows = recipient_rows(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    data = "".join(csv_chunks(rows)).encode("utf-8")
    filename = report_filename(report, "csv")
    message = EmailMessage()
    message["From"] = formataddr((sender.from_name or sender.name, sender.from_email))
    message["To"] = ", ".join(addresses)
    message["Subject"] = f"Campaign report: {report.campaign_name}"
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.from_email.rpartition("@")[2] or None)
    message.set_content(summary_text(report))
    if len(data) > ZIP_OVER_BYTES:
        packed = io.BytesIO()
        with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(filename, data)
        filename = report_filename(report, "csv.zip")
        message.add_attachment(packed.getvalue(), maintype="application", subtype="zip",
                               filename=filename)  # fmt: skip
    else:
        message.add_attachment(data, maintype="text", subtype="csv", filename=filename)
    endpoint = senders.saved_sender_endpoints(
        session=session, workspace_id=workspace_id, sender_id=sender.id
    ).smtp
    outgoing = OutgoingMessage(
        envelope_from=sender.from_email, recipients=addresses, data=message.as_bytes()
    )
    where = f"{endpoint.host}:{endpoint.port}"
    try:
        result = submit_messages(endpoint, [outgoing])[0]
    except SmtpAuthError as exc:
        raise ReportEmailFailed(str(exc)) from None
    except aiosmtplib.SMTPRecipientsRefused as exc:
        refusals = "; ".join(f"{e.recipient}: {e.code} {e.message}" for e in exc.recipients)
        raise ReportEmailFailed(
            f"The mail server at {where} refused every address ({refusals})."
        ) from None
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise ReportEmailFailed(
            f"Could not reach the mail server of {sender.name} at {where}: {type(exc).__name__}."
        ) from None
    if not result.ok:
        raise ReportEmailFailed(f"The mail server at {where} refused the report: "
                                f"{result.code} {result.reply}")  # fmt: skip
    refused = sorted(result.refused)
    accepted = tuple(a for a in addresses if a not in result.refused)
    audit.record(
        session=session, action="campaign.report_email", source=source,
        workspace_id=workspace_id, user_id=user_id, target_type="campaign",
        target_id=campaign_id, details={"to": list(accepted), "refused": refused,
                                        "sender": sender.name},
    )  # fmt: skip
    detail = f"The report went to {', '.join(accepted)} through {sender.name}."
    if refused:
        detail += f" The mail server refused {', '.join(refused)}."
    return EmailedReport(accepted, sender.name, filename, detail)


def record_export(
    *, session: Session, workspace_id: int, campaign_id: int, user_id: int | None, kind: str
) -> None:
    """Audit a download of the report (exports are in the audit log)."""
    audit.record(
        session=session, action="campaign.report_export", source=Source.UI,
        workspace_id=workspace_id, user_id=user_id, target_type="campaign",
        target_id=campaign_id, details={"format": kind},
    )  # fmt: skip
