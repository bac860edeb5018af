"""Columns every table shares: timestamps, where a write came from, and the tenant.

Times are naive UTC everywhere (SQLite keeps no zone, and mixing aware and naive
values between SQLite and PostgreSQL is a classic source of bugs).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Source(StrEnum):
    """Which door a write came through (kept on every row, and in the audit log)."""

    UI = "ui"
    API = "api"
    CLI = "cli"
    JOB = "job"
    IMPORT = "import"
    LAB = "lab"
    SYSTEM = "system"


class TrackedRow(SQLModel):
    created_at: datetime = Field(default_factory=utcnow, nullable=False)
    updated_at: datetime = Field(
        default_factory=utcnow, nullable=False, sa_column_kwargs={"onupdate": utcnow}
    )
    source: str = Field(default=Source.SYSTEM, max_length=16, nullable=False)


class WorkspaceRow(TrackedRow):
    """A row owned by one workspace; every query filters on workspace_id."""

    workspace_id: int = Field(foreign_key="workspace.id", index=True, nullable=False)
    created_by_id: int | None = Field(default=None, foreign_key="user.id")
