"""Campaigns and their versions: create, list, duplicate, archive, the wizard's
autosave, and publishing.

A campaign has at most one editable **draft** version and any number of
**published** ones, which are frozen: nothing here ever changes a published
version. Saving any wizard step of a campaign whose latest version is published
first makes a new draft (number + 1), copied from that version.

Publishing checks every step (`campaign_steps.step_problems`) and freezes the
draft. The campaign is then *ready for the review gate*: its status becomes
`in_review` (the gate, built in the next issue, renders every message of the
published version and lets a person approve it). Editing it again makes a new
draft and puts the status back to `draft`, so nobody approves a version its author
is still changing.

Status changes go through `change_status`, which knows the moves this module
makes; the review gate and the sending engine extend the table.

Every query filters on `workspace_id`; callers check the role
(`CAMPAIGN_EDITOR_ROLES`) and own the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from mailer_app.models import (
    AuditEntry,
    Campaign,
    CampaignAttachment,
    CampaignStatus,
    CampaignVersion,
    Role,
    Source,
    utcnow,
)
from mailer_app.services import (
    InvalidInput,
    NotFoundError,
    ServiceError,
    attachments,
    audit,
    campaign_status,
)
from mailer_app.services.campaign_steps import (
    STEP_LABELS,
    STEPS,
    apply_changes,
    check_step,
    step_problems,
    step_values,
)

# Roles that build campaigns (owners always may); senders and viewers only look.
CAMPAIGN_EDITOR_ROLES = (Role.ADMIN, Role.EDITOR)
STATUS_LABELS = {
    CampaignStatus.DRAFT: "Draft",
    CampaignStatus.BUILT: "Built",
    CampaignStatus.IN_REVIEW: "Ready for review",
    CampaignStatus.APPROVED: "Approved",
    CampaignStatus.QUEUED: "Queued",
    CampaignStatus.SENDING: "Sending",
    CampaignStatus.PAUSED: "Paused",
    CampaignStatus.COMPLETED: "Completed",
    CampaignStatus.CANCELLED: "Cancelled",
    CampaignStatus.ARCHIVED: "Archived",
}
# Autosave writes one audit entry per person, campaign and step per this window.
EDIT_AUDIT_WINDOW = timedelta(minutes=10)
# While the campaign waits at (or passed) the review gate, a new draft sends it back.
_BACK_TO_DRAFT = {CampaignStatus.IN_REVIEW, CampaignStatus.BUILT, CampaignStatus.APPROVED}
_ARCHIVABLE = {
    CampaignStatus.DRAFT,
    CampaignStatus.IN_REVIEW,
    CampaignStatus.BUILT,
    CampaignStatus.APPROVED,
    CampaignStatus.COMPLETED,
    CampaignStatus.CANCELLED,
}
# The status machine's table (campaign_status.MOVES), kept under its old name.
_ALLOWED_MOVES: dict[str, frozenset[str]] = campaign_status.MOVES


class CampaignNotFound(NotFoundError):
    """No campaign with this id in this workspace."""


class CampaignIncomplete(InvalidInput):
    """Publishing refused: `problems` maps each unfinished step to {field: message}."""

    def __init__(self, problems: dict[str, dict[str, str]]) -> None:
        steps = ", ".join(STEP_LABELS[s] for s in problems)
        super().__init__(f"Finish these steps before publishing: {steps}.", field="review")
        self.problems = problems


# --- views ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignRow:
    """One line of the campaign list."""

    id: int
    name: str
    description: str
    status: str
    status_label: str
    version_number: int  # the newest version (the draft when there is one)
    has_draft: bool
    published_number: int | None  # the newest published version
    wizard_step: str
    updated_at: datetime
    archived: bool


@dataclass(frozen=True)
class StepResult:
    """What autosaving one step did: `saved` is False when a value was refused (and
    not stored); `errors` are every message to show next to its field."""

    saved: bool
    errors: dict[str, str]

    @property
    def complete(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class StepStatus:
    step: str
    label: str
    visited: bool  # saved at least once
    errors: dict[str, str]  # what blocks publishing

    @property
    def complete(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class WizardData:
    """Everything the wizard shows of a campaign's current version."""

    campaign_id: int
    name: str
    status: str
    status_label: str
    archived: bool
    version_id: int
    version_number: int
    is_draft: bool
    published_number: int | None
    wizard_step: str
    values: dict[str, Any]
    steps: list[StepStatus]


# --- status ----------------------------------------------------------------------------


def change_status(
    campaign: Campaign,
    status: CampaignStatus | str,
    reason: str | None = None,
    *,
    session: Session | None = None,
    user_id: int | None = None,
    source: Source | str = Source.SYSTEM,
) -> Campaign:
    """Move a campaign through the status machine (`campaign_status.transition`, which
    audits the move); IllegalTransition (a ServiceError) when the move is not allowed."""
    from sqlalchemy.orm import object_session

    session = session or object_session(campaign)
    if session is None:
        raise ServiceError("This campaign is not loaded from the database: reload it and retry.")
    return campaign_status.transition(
        session=session, campaign=campaign, to=status, user_id=user_id, source=source,
        reason=reason,
    )  # fmt: skip


# --- campaigns ---------------------------------------------------------------------------


def get_campaign(*, session: Session, workspace_id: int, campaign_id: int) -> Campaign:
    """The campaign with this id in this workspace, or CampaignNotFound."""
    campaign = session.exec(
        select(Campaign).where(Campaign.workspace_id == workspace_id, Campaign.id == campaign_id)
    ).first()
    if campaign is None:
        raise CampaignNotFound("This campaign does not exist (it may have been deleted).")
    return campaign


def create_campaign(
    *,
    session: Session,
    workspace_id: int,
    name: str,
    user_id: int | None,
    source: Source | str = Source.UI,
) -> Campaign:
    """A new campaign with an empty draft version 1, on the Basics step."""
    checked = check_step(
        session=session, workspace_id=workspace_id, step="basics", values={"name": name}
    )
    if checked.refused:
        raise InvalidInput(checked.refused["name"], field="name")
    if not checked.changes["name"]:
        raise InvalidInput("Give the campaign a name.", field="name")
    campaign = Campaign(
        workspace_id=workspace_id,
        name=checked.changes["name"],
        created_by_id=user_id,
        source=str(source),
    )
    session.add(campaign)
    session.flush()
    session.add(
        CampaignVersion(
            workspace_id=workspace_id,
            campaign_id=campaign.id,
            number=1,
            steps_done=["basics"],
            created_by_id=user_id,
            source=str(source),
        )
    )
    session.flush()
    _audit(session, "campaign.create", campaign, user_id, source, name=campaign.name)
    return campaign


def list_campaigns(
    *,
    session: Session,
    workspace_id: int,
    search: str = "",
    status: str | None = None,
    include_archived: bool = False,
) -> list[CampaignRow]:
    """The workspace's campaigns, last edited first; archived ones only when asked.

    `search` matches anywhere in the name, ignoring case.
    """
    query = select(Campaign).where(Campaign.workspace_id == workspace_id)
    if not include_archived:
        query = query.where(Campaign.archived_at.is_(None))
    if status:
        query = query.where(Campaign.status == status)
    text = (search or "").strip().lower()
    if text:
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(sa.func.lower(Campaign.name).like(f"%{escaped}%", escape="\\"))
    campaigns = session.exec(query.order_by(Campaign.updated_at.desc(), Campaign.id.desc())).all()
    versions = _version_summary(session, workspace_id, [c.id for c in campaigns])
    rows = []
    for c in campaigns:
        newest, has_draft, published, step = versions.get(c.id, (0, False, None, "basics"))
        rows.append(
            CampaignRow(
                id=c.id,
                name=c.name,
                description=c.description,
                status=c.status,
                status_label=STATUS_LABELS.get(c.status, c.status),
                version_number=newest,
                has_draft=has_draft,
                published_number=published,
                wizard_step=step,
                updated_at=c.updated_at,
                archived=c.archived_at is not None,
            )
        )
    return rows


def _version_summary(session: Session, workspace_id: int, campaign_ids: list[int]) -> dict:
    """campaign id -> (newest number, has a draft, newest published number, draft's step)."""
    summary: dict[int, tuple[int, bool, int | None, str]] = {}
    if not campaign_ids:
        return summary
    rows = session.exec(
        select(
            CampaignVersion.campaign_id,
            CampaignVersion.number,
            CampaignVersion.is_draft,
            CampaignVersion.wizard_step,
        )
        .where(
            CampaignVersion.workspace_id == workspace_id,
            CampaignVersion.campaign_id.in_(campaign_ids),
        )
        .order_by(CampaignVersion.number)
    ).all()
    by_campaign: dict[int, list[tuple[int, bool, str]]] = {}
    for campaign_id, number, is_draft, step in rows:
        by_campaign.setdefault(campaign_id, []).append((number, is_draft, step))
    for campaign_id, versions in by_campaign.items():
        drafts = [v for v in versions if v[1]]
        published = [v[0] for v in versions if not v[1]]
        newest = versions[-1]
        summary[campaign_id] = (
            newest[0],
            bool(drafts),
            published[-1] if published else None,
            (drafts[-1] if drafts else newest)[2],
        )
    return summary


def duplicate_campaign(
    *,
    session: Session,
    workspace_id: int,
    campaign_id: int,
    user_id: int | None,
    source: Source | str = Source.UI,
) -> Campaign:
    """A new draft campaign ("Copy of …") with a copy of the current version and its files."""
    original = get_campaign(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    version = current_version(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    copy = Campaign(
        workspace_id=workspace_id,
        name=f"Copy of {original.name}"[:200],
        description=original.description,
        created_by_id=user_id,
        source=str(source),
    )
    session.add(copy)
    session.flush()
    new_version = _copy_version(
        session, version, campaign_id=copy.id, number=1, user_id=user_id, source=source
    )
    new_version.wizard_step = "basics"
    session.flush()
    _audit(
        session,
        "campaign.duplicate",
        copy,
        user_id,
        source,
        name=copy.name,
        copied_from=original.id,
    )
    return copy


def archive_campaign(
    *,
    session: Session,
    workspace_id: int,
    campaign_id: int,
    user_id: int | None,
    source: Source | str = Source.UI,
) -> Campaign:
    """Hide a campaign from the list (nothing is deleted); `restore_campaign` undoes it."""
    campaign = get_campaign(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    if campaign.archived_at is not None:
        return campaign
    if campaign.status not in _ARCHIVABLE:
        raise ServiceError("A campaign that is queued or sending cannot be archived.")
    previous = campaign.status
    # While archived, status_reason keeps the status to return to.
    change_status(
        campaign,
        CampaignStatus.ARCHIVED,
        reason=previous,
        session=session,
        user_id=user_id,
        source=source,
    )
    campaign.archived_at = utcnow()
    session.add(campaign)
    session.flush()
    _audit(session, "campaign.archive", campaign, user_id, source, name=campaign.name)
    return campaign


def restore_campaign(
    *,
    session: Session,
    workspace_id: int,
    campaign_id: int,
    user_id: int | None,
    source: Source | str = Source.UI,
) -> Campaign:
    """Bring an archived campaign back to the list, with the status it had."""
    campaign = get_campaign(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    if campaign.archived_at is None:
        return campaign
    previous = campaign.status_reason or CampaignStatus.DRAFT
    if previous not in _ARCHIVABLE:
        previous = CampaignStatus.DRAFT
    change_status(campaign, previous, session=session, user_id=user_id, source=source)
    campaign.archived_at = None
    session.add(campaign)
    session.flush()
    _audit(session, "campaign.restore", campaign, user_id, source, name=campaign.name)
    return campaign


# --- versions ------------------------------------------------------------------------------


def get_draft(*, session: Session, workspace_id: int, campaign_id: int) -> CampaignVersion | None:
    """The campaign's editable draft version, or None when every version is published."""
    return session.exec(
        select(CampaignVersion).where(
            CampaignVersion.workspace_id == workspace_id,
            CampaignVersion.campaign_id == campaign_id,
            CampaignVersion.is_draft.is_(True),
        )
    ).first()


def latest_published(
    *, session: Session, workspace_id: int, campaign_id: int
) -> CampaignVersion | None:
    """The newest published (frozen) version, or None."""
    return session.exec(
        select(CampaignVersion)
        .where(
            CampaignVersion.workspace_id == workspace_id,
            CampaignVersion.campaign_id == campaign_id,
            CampaignVersion.is_draft.is_(False),
        )
        .order_by(CampaignVersion.number.desc())
    ).first()


def current_version(*, session: Session, workspace_id: int, campaign_id: int) -> CampaignVersion:
    """The draft when there is one, else the newest published version."""
    version = get_draft(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id
    ) or latest_published(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    if version is None:
        raise CampaignNotFound("This campaign has no versions.")
    return version


def list_versions(*, session: Session, workspace_id: int, campaign_id: int):
    """Every version of the campaign, oldest first."""
    return session.exec(
        select(CampaignVersion)
        .where(
            CampaignVersion.workspace_id == workspace_id,
            CampaignVersion.campaign_id == campaign_id,
        )
        .order_by(CampaignVersion.number)
    ).all()


def editable_draft(
    *,
    session: Session,
    workspace_id: int,
    campaign_id: int,
    user_id: int | None,
    source: Source | str = Source.UI,
    step: str | None = None,
) -> tuple[Campaign, CampaignVersion]:
    """The campaign and its draft; a new draft copied from the newest published version
    when there is none (opening on `step`). Archived campaigns are refused."""
    campaign = get_campaign(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    if campaign.archived_at is not None:
        raise ServiceError("This campaign is archived. Restore it to change it.")
    draft = get_draft(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    if draft is not None:
        return campaign, draft
    published = latest_published(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id
    )
    if published is None:
        raise CampaignNotFound("This campaign has no versions.")
    draft = _copy_version(
        session,
        published,
        campaign_id=campaign.id,
        number=published.number + 1,
        user_id=user_id,
        source=source,
    )
    draft.steps_done = [s for s in published.steps_done if s != "review"]
    draft.wizard_step = step if step in STEPS else "basics"
    if campaign.status in _BACK_TO_DRAFT:
        change_status(
            campaign, CampaignStatus.DRAFT, session=session, user_id=user_id, source=source
        )
        session.add(campaign)
    session.flush()
    _audit(
        session,
        "campaign.new_draft",
        campaign,
        user_id,
        source,
        version=draft.number,
        copied_from_version=published.number,
    )
    return campaign, draft


def _copy_version(
    session: Session,
    version: CampaignVersion,
    *,
    campaign_id: int,
    number: int,
    user_id: int | None,
    source: Source | str,
) -> CampaignVersion:
    copy = CampaignVersion(
        workspace_id=version.workspace_id,
        campaign_id=campaign_id,
        number=number,
        is_draft=True,
        wizard_step=version.wizard_step,
        steps_done=list(version.steps_done or []),
        sender_account_id=version.sender_account_id,
        seed_list_id=version.seed_list_id,
        subject=version.subject,
        html_body=version.html_body,
        text_body=version.text_body,
        recipients=dict(version.recipients or {}),
        attachment_rules=dict(version.attachment_rules or {}),
        created_by_id=user_id,
        source=str(source),
    )
    session.add(copy)
    session.flush()
    for row in attachments.list_campaign_files(
        session=session, workspace_id=version.workspace_id, version_id=version.id
    ):
        attachments.copy_campaign_file(
            session=session,
            workspace_id=version.workspace_id,
            attachment_id=row.id,
            version_id=copy.id,
            user_id=user_id,
            source=source,
        )
    return copy


def publish(
    *,
    session: Session,
    workspace_id: int,
    campaign_id: int,
    user_id: int | None,
    source: Source | str = Source.UI,
) -> CampaignVersion:
    """Freeze the draft into a published version; the campaign is then ready for review.

    Raises CampaignIncomplete (with every step's problems) when a step is unfinished.
    """
    campaign = get_campaign(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    if campaign.archived_at is not None:
        raise ServiceError("This campaign is archived. Restore it to publish it.")
    draft = get_draft(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    if draft is None:
        raise ServiceError("There are no changes to publish: this version is already published.")
    problems = {
        step: errors
        for step in STEPS
        if (errors := step_problems(session=session, campaign=campaign, version=draft, step=step))
    }
    if problems:
        raise CampaignIncomplete(problems)
    draft.is_draft = False
    draft.published_at = utcnow()
    draft.published_by_id = user_id
    draft.wizard_step = "review"
    draft.steps_done = [*STEPS]
    campaign.sender_account_id = draft.sender_account_id
    campaign.seed_list_id = draft.seed_list_id
    change_status(
        campaign, CampaignStatus.IN_REVIEW, session=session, user_id=user_id, source=source
    )
    session.add_all([draft, campaign])
    session.flush()
    _audit(session, "campaign.publish", campaign, user_id, source, version=draft.number)
    return draft


# --- the wizard ------------------------------------------------------------------------------


def save_step(
    *,
    session: Session,
    workspace_id: int,
    campaign_id: int,
    step: str,
    values: Mapping[str, Any],
    user_id: int | None,
    source: Source | str = Source.UI,
) -> StepResult:
    """Autosave one wizard step: store what may be stored, report every problem.

    Only the fields present in `values` change; `step` counts as visited. A published
    campaign gets a new draft first, unless nothing in `values` differs from it. (The
    step to resume at is `set_wizard_step`'s: a late autosave of a step the author just
    left must not send them back to it.)
    """
    checked = check_step(session=session, workspace_id=workspace_id, step=step, values=values)
    if get_draft(session=session, workspace_id=workspace_id, campaign_id=campaign_id) is None:
        campaign = get_campaign(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
        published = latest_published(
            session=session, workspace_id=workspace_id, campaign_id=campaign_id
        )
        if published is not None and not checked.refused:
            current = step_values(campaign, published)
            if all(current.get(k) == v for k, v in checked.changes.items()):
                # Nothing differs from the published version (a late autosave arriving
                # after Publish, say): no new draft, the campaign stays where it is.
                errors = step_problems(
                    session=session, campaign=campaign, version=published, step=step
                )
                return StepResult(saved=True, errors=errors)
    campaign, draft = editable_draft(
        session=session,
        workspace_id=workspace_id,
        campaign_id=campaign_id,
        user_id=user_id,
        source=source,
        step=step,
    )
    before = step_values(campaign, draft)
    apply_changes(campaign, draft, checked.changes)
    changed = sorted(k for k, v in checked.changes.items() if before.get(k) != v)
    if step not in (draft.steps_done or []):
        draft.steps_done = [*(draft.steps_done or []), step]
    campaign.updated_at = utcnow()
    session.add_all([campaign, draft])
    session.flush()
    if changed:
        _audit_edit(session, campaign, draft, step, changed, user_id, source)
    errors = step_problems(session=session, campaign=campaign, version=draft, step=step)
    errors.update(checked.refused)  # a refused value's message wins
    return StepResult(saved=not checked.refused, errors=errors)


def set_wizard_step(*, session: Session, workspace_id: int, campaign_id: int, step: str) -> str:
    """Remember the step the author is on (only a draft changes; returns the step)."""
    if step not in STEPS:
        raise InvalidInput(f"There is no wizard step called {step!r}.", field="step")
    get_campaign(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    draft = get_draft(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    if draft is not None and draft.wizard_step != step:
        draft.wizard_step = step
        session.add(draft)
        session.flush()
    return step


def step_status(*, session: Session, workspace_id: int, campaign_id: int) -> list[StepStatus]:
    """Each step of the current version: visited or not, and what blocks publishing."""
    campaign = get_campaign(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    version = current_version(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    return _step_status(session, campaign, version)


def _step_status(session: Session, campaign: Campaign, version: CampaignVersion):
    done = set(version.steps_done or [])
    result = []
    for step in STEPS:
        errors = step_problems(session=session, campaign=campaign, version=version, step=step)
        if step == "review" and version.is_draft:
            visited = "review" in done
        else:
            visited = step in done or not version.is_draft
        result.append(StepStatus(step, STEP_LABELS[step], visited, errors))
    return result


def load_wizard(*, session: Session, workspace_id: int, campaign_id: int) -> WizardData:
    """The campaign's current version as the wizard shows it, with each step's status."""
    campaign = get_campaign(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    version = current_version(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    published = latest_published(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id
    )
    return WizardData(
        campaign_id=campaign.id,
        name=campaign.name,
        status=campaign.status,
        status_label=STATUS_LABELS.get(campaign.status, campaign.status),
        archived=campaign.archived_at is not None,
        version_id=version.id,
        version_number=version.number,
        is_draft=version.is_draft,
        published_number=published.number if published else None,
        wizard_step=version.wizard_step if version.wizard_step in STEPS else "basics",
        values=step_values(campaign, version),
        steps=_step_status(session, campaign, version),
    )


# --- campaign-wide files -------------------------------------------------------------------


def add_campaign_file(
    *,
    session: Session,
    workspace_id: int,
    campaign_id: int,
    filename: str,
    data: bytes,
    content_type: str,
    user_id: int | None,
    source: Source | str = Source.UI,
) -> CampaignAttachment:
    """Attach a file to every message of the campaign (stored with the draft)."""
    campaign, draft = editable_draft(
        session=session,
        workspace_id=workspace_id,
        campaign_id=campaign_id,
        user_id=user_id,
        source=source,
        step="attachments",
    )
    row = attachments.store_campaign_file(
        session=session,
        workspace_id=workspace_id,
        version_id=draft.id,
        filename=filename,
        data=data,
        content_type=content_type,
        user_id=user_id,
    )
    _mark_attachments_edited(session, campaign, draft)
    _audit(
        session,
        "campaign.file_add",
        campaign,
        user_id,
        source,
        version=draft.number,
        filename=row.filename,
        size_bytes=row.size_bytes,
    )
    return row


def remove_campaign_file(
    *,
    session: Session,
    workspace_id: int,
    campaign_id: int,
    attachment_id: int,
    user_id: int | None,
    source: Source | str = Source.UI,
) -> None:
    """Take a campaign-wide file off the draft (published versions keep theirs)."""
    campaign = get_campaign(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    draft_before = get_draft(session=session, workspace_id=workspace_id, campaign_id=campaign_id)
    source_version = draft_before or current_version(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id
    )
    row = session.exec(
        select(CampaignAttachment).where(
            CampaignAttachment.workspace_id == workspace_id,
            CampaignAttachment.id == attachment_id,
            CampaignAttachment.version_id == source_version.id,
        )
    ).first()
    if row is None:
        raise NotFoundError("This file is not attached to the campaign any more.")
    filename = row.filename
    campaign, draft = editable_draft(
        session=session,
        workspace_id=workspace_id,
        campaign_id=campaign_id,
        user_id=user_id,
        source=source,
        step="attachments",
    )
    if draft.id != source_version.id:  # a new draft was copied: remove the copy's file
        row = session.exec(
            select(CampaignAttachment)
            .where(
                CampaignAttachment.workspace_id == workspace_id,
                CampaignAttachment.version_id == draft.id,
                CampaignAttachment.filename == filename,
            )
            .order_by(CampaignAttachment.id)
        ).first()
    if row is not None:
        attachments.remove_campaign_file(
            session=session, workspace_id=workspace_id, attachment_id=row.id, user_id=user_id
        )
    _mark_attachments_edited(session, campaign, draft)
    _audit(
        session,
        "campaign.file_remove",
        campaign,
        user_id,
        source,
        version=draft.number,
        filename=filename,
    )


def _mark_attachments_edited(session: Session, campaign: Campaign, draft: CampaignVersion):
    if "attachments" not in (draft.steps_done or []):
        draft.steps_done = [*(draft.steps_done or []), "attachments"]
    campaign.updated_at = utcnow()
    session.add_all([campaign, draft])
    session.flush()


# --- audit -------------------------------------------------------------------------------------


def _audit(session, action, campaign, user_id, source, **details) -> None:
    audit.record(
        session=session,
        action=action,
        source=source,
        workspace_id=campaign.workspace_id,
        user_id=user_id,
        target_type="campaign",
        target_id=campaign.id,
        details=details,
    )


def _audit_edit(session, campaign, draft, step, changed, user_id, source) -> None:
    """One entry per person, campaign and step per window: autosave saves every pause in
    typing, and an entry per keystroke pause would drown the log."""
    last = session.exec(
        select(AuditEntry)
        .where(
            AuditEntry.workspace_id == campaign.workspace_id,
            AuditEntry.target_type == "campaign",
            AuditEntry.target_id == campaign.id,
        )
        .order_by(AuditEntry.id.desc())
    ).first()
    if (
        last is not None
        and last.action == "campaign.edit"
        and last.user_id == user_id
        and (last.details or {}).get("step") == step
        and (last.details or {}).get("version") == draft.number
        and utcnow() - last.created_at < EDIT_AUDIT_WINDOW
    ):
        return
    _audit(
        session,
        "campaign.edit",
        campaign,
        user_id,
        source,
        step=step,
        version=draft.number,
        fields=changed,
    )
