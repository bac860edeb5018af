"""Alert events: low inbox rate, high missing rate, expired seed logins, ..."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field

from mailer_app.models.base import WorkspaceRow


class AlertKind(StrEnum):
    LOW_INBOX_RATE = "low_inbox_rate"
    HIGH_MISSING_RATE = "high_missing_rate"
    SEED_AUTH_EXPIRED = "seed_auth_expired"
    SENDER_AUTH_FAILED = "sender_auth_failed"


class AlertEvent(WorkspaceRow, table=True):
    __tablename__ = "alert_event"
    __table_args__ = (sa.UniqueConstraint("workspace_id", "dedupe_key"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    status: str = Field(default="new", max_length=16, index=True)  # new, acknowledged
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id")
    seed_id: int | None = Field(default=None, foreign_key="seed_account.id")
    esp: str | None = Field(default=None, max_length=16)
    value: float | None = None
    threshold: float | None = None
    message: str
    dedupe_key: str = Field(max_length=200)  # one event per condition, not one per check
    acknowledged_by_id: int | None = Field(default=None, foreign_key="user.id")
    acknowledged_at: datetime | None = None
