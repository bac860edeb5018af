"""Campaigns, their versions (draft and published), runs and built messages."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import JSON, Column, Field

from mailer_app.models.base import WorkspaceRow


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    BUILT = "built"
    IN_REVIEW = "in_review"
    APPROVED = "approved"
    QUEUED = "queued"
    SENDING = "sending"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    ARCHIVED = "archived"


class ReviewStatus(StrEnum):
    READY = "ready"
    WARNING = "warning"
    NEEDS_REVIEW = "needs_review"
    BLOCKED = "blocked"
    EXCLUDED = "excluded"
    INACTIVE = "inactive"


class Campaign(WorkspaceRow, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    description: str = Field(default="", max_length=1000)
    status: str = Field(default=CampaignStatus.DRAFT, max_length=16, index=True)
    status_reason: str | None = None
    # The sender and seed list of the latest published version (the draft keeps its own).
    sender_account_id: int | None = Field(default=None, foreign_key="sender_account.id")
    seed_list_id: int | None = Field(default=None, foreign_key="seed_list.id")
    archived_at: datetime | None = None


class CampaignVersion(WorkspaceRow, table=True):
    """The editable draft (one per campaign) or a frozen, published version."""

    __tablename__ = "campaign_version"
    __table_args__ = (sa.UniqueConstraint("campaign_id", "number"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    number: int
    is_draft: bool = Field(default=True)
    wizard_step: str = Field(default="basics", max_length=32)
    # Wizard steps the author has saved at least once (a step is complete when it is
    # in here and its values validate).
    steps_done: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    sender_account_id: int | None = Field(default=None, foreign_key="sender_account.id")
    seed_list_id: int | None = Field(default=None, foreign_key="seed_list.id")
    subject: str = Field(default="")
    html_body: str = Field(default="")
    text_body: str = Field(default="")
    # {"list_ids": [...], "filters": [{"field": ..., "op": ..., "value": ...}]}
    recipients: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # {"pattern": "invoices/{{ customer_id }}/*.pdf", "zip": false}
    attachment_rules: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    published_at: datetime | None = None
    published_by_id: int | None = Field(default=None, foreign_key="user.id")


class CampaignAttachment(WorkspaceRow, table=True):
    """A campaign-wide file, attached to every message of a version."""

    __tablename__ = "campaign_attachment"

    id: int | None = Field(default=None, primary_key=True)
    version_id: int = Field(foreign_key="campaign_version.id", index=True)
    filename: str = Field(max_length=255)
    stored_path: str = Field(max_length=1024)
    content_type: str = Field(default="application/octet-stream", max_length=255)
    size_bytes: int = 0


class ReviewDecision(StrEnum):
    APPROVED = "approved"  # a person let a warning or needs_review message go
    EXCLUDED = "excluded"  # a person took the message out of the campaign


class BuiltMessage(WorkspaceRow, table=True):
    """One recipient's message of a published version: what it was built from, what
    it came to, and its review status. The bytes are not stored: they are assembled
    again, identically, from the version's templates and `merge_data`."""

    __tablename__ = "built_message"
    __table_args__ = (
        sa.UniqueConstraint("version_id", "email"),
        sa.Index("ix_built_message_version_status", "version_id", "review_status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    version_id: int = Field(foreign_key="campaign_version.id", index=True)
    contact_id: int | None = Field(default=None, foreign_key="contact.id")
    email: str = Field(max_length=320)
    review_status: str = Field(max_length=16, index=True)
    # [{"code": "missing_field", "detail": "first_name"}]
    reasons: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    input_digest: str = Field(default="", max_length=64)  # rebuild touches only changed rows
    # The recipient's merge fields as they were at build time (what the message uses).
    merge_data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    subject: str = Field(default="")  # rendered; empty when it could not be rendered
    # The Message-ID header, kept across rebuilds while the message is unchanged.
    message_id_header: str = Field(default="", max_length=255)
    size_bytes: int = 0  # the whole MIME message
    # Per-recipient files: [{"path": relative to the attachments folder, "filename", "size"}]
    attachments: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    # A person's decision on this message (ReviewDecision), cleared when a rebuild
    # changes the message.
    decision: str | None = Field(default=None, max_length=16)
    approved_by_id: int | None = Field(default=None, foreign_key="user.id")  # who decided
    approved_at: datetime | None = None  # when
    built_at: datetime | None = None


class BuildStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class CampaignBuild(WorkspaceRow, table=True):
    """One build of a published version: progress for the page, counts when done."""

    __tablename__ = "campaign_build"

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    version_id: int = Field(foreign_key="campaign_version.id", index=True)
    status: str = Field(default=BuildStatus.QUEUED, max_length=16)
    total: int = 0  # recipients to build (known once counted)
    done: int = 0  # recipients built so far
    changed: int = 0  # messages created or changed by this build
    # {"ready": 10, "blocked": 2, ...} once done
    counts: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    message: str | None = Field(default=None, max_length=1000)  # why it failed, plain words
    started_at: datetime | None = None
    finished_at: datetime | None = None


class RunKind(StrEnum):
    SEND = "send"
    TEST = "test"


class CampaignRun(WorkspaceRow, table=True):
    """One send of a published campaign version."""

    __tablename__ = "campaign_run"

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    version_id: int = Field(foreign_key="campaign_version.id")
    kind: str = Field(default=RunKind.SEND, max_length=16)
    status: str = Field(default="queued", max_length=16)
    started_at: datetime | None = None
    finished_at: datetime | None = None
