"""What the wizard shows before anything is sent: the live preview of a message for a
chosen recipient, the attachments dry run, and the Review step's summary.

Nothing here writes: every function reads the campaign's current version and the
recipients its lists and filters select.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Any

from sqlmodel import Session, select

from mailer_app.models import CampaignVersion, ContactList, SeedList, SenderAccount
from mailer_app.services import attachments, campaigns, contacts, seeds, templating
from mailer_app.services.campaign_steps import (
    BUILT_IN_FIELDS,
    FILTER_OPS,
    merge_field_names,
    step_values,
)

PREVIEW_RECIPIENTS = 20
# The Review step renders this many recipients to count missing merge fields; the
# build (next step of the review gate) renders every one.
REVIEW_RENDER_LIMIT = 2000
DRY_RUN_LIMIT = 500
SAMPLE_KEY = "sample"


@dataclass(frozen=True)
class PreviewRecipient:
    key: str  # "sample" or the contact's position among the first recipients
    label: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Preview:
    subject: str
    html: str  # sanitized (nh3) document with a no-script CSP, for <iframe sandbox srcdoc>
    text: str
    missing: tuple[str, ...]
    error: str


@dataclass(frozen=True)
class ReviewSummary:
    sender: str
    lists: list[str]
    filters: list[str]
    recipient_count: int
    seed_list: str
    seed_count: int
    subject: str
    files: list[str]
    pattern: str
    zip: bool
    missing: list[str]  # "missing field X for N recipients"
    render_errors: int
    rendered: int  # how many recipients were rendered for `missing`


def _recipient_values(version: CampaignVersion) -> tuple[list[int], list[dict]]:
    recipients = version.recipients or {}
    return list(recipients.get("list_ids") or []), list(recipients.get("filters") or [])


def _contact_data(contact) -> dict[str, Any]:
    return templating.merge_data(
        email=contact.email,
        first_name=contact.first_name or "",
        last_name=contact.last_name or "",
        fields=dict(contact.fields or {}),
    )


def sample_recipient(field_names: set[str] | list[str]) -> PreviewRecipient:
    """An invented recipient with every field filled, for lists that are still empty."""
    fields = {name: f"[{name}]" for name in sorted(field_names) if name not in BUILT_IN_FIELDS}
    data = templating.merge_data(
        email="alex@example.com", first_name="Alex", last_name="Sample", fields=fields
    )
    return PreviewRecipient(SAMPLE_KEY, "Sample recipient (invented data)", data)


def preview_recipients(
    *,
    session: Session,
    workspace_id: int,
    version: CampaignVersion,
    limit: int = PREVIEW_RECIPIENTS,
) -> list[PreviewRecipient]:
    """The first recipients the version's lists and filters select, then a sample one."""
    list_ids, filters = _recipient_values(version)
    chosen: list[PreviewRecipient] = []
    if list_ids:
        found = contacts.iter_recipients(
            session=session, workspace_id=workspace_id, list_ids=list_ids, filters=filters or None
        )
        for index, contact in enumerate(islice(found, limit)):
            label = contact.email
            name = f"{contact.first_name or ''} {contact.last_name or ''}".strip()
            if name:
                label = f"{name} <{contact.email}>"
            chosen.append(PreviewRecipient(str(index), label, _contact_data(contact)))
    known = merge_field_names(session=session, workspace_id=workspace_id, list_ids=list_ids)
    return [*chosen, sample_recipient(known)]


def render_preview(*, subject: str, html_body: str, text_body: str, data: dict) -> Preview:
    """The message one recipient would get, with the HTML sanitized for the preview frame."""
    outcome = templating.render_message(
        subject=subject, html_body=html_body, text_body=text_body, data=data
    )
    message = outcome.message
    if message is None:
        return Preview("", "", "", tuple(outcome.missing_fields), outcome.error or "")
    html = templating.preview_document(message.html) if message.html else ""
    return Preview(
        message.subject, html, message.text, tuple(outcome.missing_fields), outcome.error or ""
    )


def attachment_dry_run(
    *, session: Session, workspace_id: int, version: CampaignVersion, limit: int = DRY_RUN_LIMIT
) -> list:
    """What the per-recipient pattern finds for each of the first `limit` recipients."""
    pattern = (version.attachment_rules or {}).get("pattern") or ""
    list_ids, filters = _recipient_values(version)
    if not pattern or not list_ids:
        return []
    found = contacts.iter_recipients(
        session=session, workspace_id=workspace_id, list_ids=list_ids, filters=filters or None
    )
    recipients = [_contact_data(c) for c in islice(found, limit)]
    return attachments.dry_run(
        recipients=recipients,
        pattern=pattern,
        root=attachments.attachments_root(workspace_id=workspace_id),
        max_bytes=attachments.MAX_RECIPIENT_BYTES,
    )


def review_summary(*, session: Session, workspace_id: int, campaign_id: int) -> ReviewSummary:
    """Everything the Review step shows about the campaign's current version."""
    campaign = campaigns.get_campaign(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id
    )
    version = campaigns.current_version(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id
    )
    values = step_values(campaign, version)
    list_ids, filters = values["list_ids"], values["filters"]
    sender = session.exec(
        select(SenderAccount).where(
            SenderAccount.workspace_id == workspace_id,
            SenderAccount.id == (values["sender_account_id"] or 0),
        )
    ).first()
    lists = (
        session.exec(
            select(ContactList.name)
            .where(ContactList.workspace_id == workspace_id, ContactList.id.in_(list_ids))
            .order_by(ContactList.name)
        ).all()
        if list_ids
        else []
    )
    count = (
        contacts.count_recipients(
            session=session, workspace_id=workspace_id, list_ids=list_ids, filters=filters or None
        )
        if list_ids
        else 0
    )
    seed_name, seed_count = "", 0
    if values["seed_list_id"]:
        seed_name = (
            session.exec(
                select(SeedList.name).where(
                    SeedList.workspace_id == workspace_id, SeedList.id == values["seed_list_id"]
                )
            ).first()
            or ""
        )
        for row in seeds.list_seed_lists(session=session, workspace_id=workspace_id):
            if row.id == values["seed_list_id"]:
                seed_count = row.seed_count
    missing, errors, rendered = _missing_fields(session, workspace_id, version, list_ids, filters)
    files = attachments.list_campaign_files(
        session=session, workspace_id=workspace_id, version_id=version.id
    )
    return ReviewSummary(
        sender=f"{sender.name} <{sender.from_email}>" if sender else "",
        lists=list(lists),
        filters=[
            f"{f['field']} {FILTER_OPS.get(f['op'], f['op'])} {f['value']}".strip() for f in filters
        ],
        recipient_count=count,
        seed_list=seed_name,
        seed_count=seed_count,
        subject=values["subject"],
        files=[f.filename for f in files],
        pattern=values["pattern"],
        zip=values["zip"],
        missing=missing,
        render_errors=errors,
        rendered=rendered,
    )


def _missing_fields(session, workspace_id, version, list_ids, filters):
    if not list_ids or not (version.subject or version.html_body or version.text_body):
        return [], 0, 0
    found = contacts.iter_recipients(
        session=session, workspace_id=workspace_id, list_ids=list_ids, filters=filters or None
    )
    outcomes = [
        templating.render_message(
            subject=version.subject,
            html_body=version.html_body,
            text_body=version.text_body,
            data=_contact_data(contact),
        )
        for contact in islice(found, REVIEW_RENDER_LIMIT)
    ]
    errors = sum(1 for o in outcomes if o.error)
    return templating.summarize_missing(outcomes), errors, len(outcomes)
