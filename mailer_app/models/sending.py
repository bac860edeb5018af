"""Send records (the queue of record) and every SMTP attempt made for them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field

from mailer_app.models.base import WorkspaceRow


class SendStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"  # body sent, no answer: never retried silently


class AppendStatus(StrEnum):
    NOT_NEEDED = "not_needed"
    PENDING = "pending"
    APPENDED = "appended"
    FAILED = "failed"


class SendRecord(WorkspaceRow, table=True):
    __tablename__ = "send_record"
    __table_args__ = (
        sa.UniqueConstraint("run_id", "email"),
        sa.Index("ix_send_record_run_status", "run_id", "status"),
        # Bounces name the Message-ID of the message they return.
        sa.Index("ix_send_record_ws_message_id", "workspace_id", "message_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="campaign_run.id")
    built_message_id: int | None = Field(default=None, foreign_key="built_message.id")
    email: str = Field(max_length=320)
    is_seed: bool = Field(default=False)
    status: str = Field(default=SendStatus.QUEUED, max_length=16)
    message_id: str | None = Field(default=None, max_length=255)
    attempt_count: int = 0
    next_attempt_at: datetime | None = None
    claimed_by: str | None = Field(default=None, max_length=128)
    claimed_at: datetime | None = None
    # Set (and committed) just before the message goes to the SMTP server: a record in
    # `sending` without it was never submitted, so it is safe to queue again.
    submitted_at: datetime | None = None
    sent_at: datetime | None = None
    last_error: str | None = None
    append_status: str = Field(default=AppendStatus.NOT_NEEDED, max_length=16)
    append_error: str | None = None
    bounce_kind: str | None = Field(default=None, max_length=8)  # hard | soft
    bounced_at: datetime | None = None


class SendAttempt(WorkspaceRow, table=True):
    __tablename__ = "send_attempt"

    id: int | None = Field(default=None, primary_key=True)
    send_record_id: int = Field(foreign_key="send_record.id", index=True)
    started_at: datetime
    duration_ms: int = 0
    smtp_code: int | None = None
    enhanced_status: str | None = Field(default=None, max_length=16)
    reply: str | None = None
    outcome: str = Field(max_length=16)  # sent, retry, failed, unknown
    worker: str | None = Field(default=None, max_length=128)


class BounceKind(StrEnum):
    HARD = "hard"
    SOFT = "soft"


class BounceEvent(WorkspaceRow, table=True):
    """One delivery status notification read from a sender account's mailbox."""

    __tablename__ = "bounce_event"
    __table_args__ = (sa.UniqueConstraint("sender_account_id", "dsn_key"),)

    id: int | None = Field(default=None, primary_key=True)
    sender_account_id: int = Field(foreign_key="sender_account.id", index=True)
    send_record_id: int | None = Field(default=None, foreign_key="send_record.id", index=True)
    email: str = Field(max_length=320, index=True)
    kind: str = Field(max_length=8)  # hard | soft
    status_code: str | None = Field(default=None, max_length=16)  # 5.1.1
    diagnostic: str | None = None
    # What makes one DSN unique in its mailbox (its Message-ID, else UIDVALIDITY:UID),
    # so polling twice never counts a bounce twice.
    dsn_key: str = Field(max_length=255)
    received_at: datetime | None = None
