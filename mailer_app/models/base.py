"""Columns every table shares: timestamps, where a write came from, and the tenant.

Times are timezone-aware UTC everywhere: sqlmodel stores datetimes with its
UTCDateTime type, which keeps UTC on SQLite and PostgreSQL alike and refuses naive
values (mixing naive and aware times is a classic source of bugs).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


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
