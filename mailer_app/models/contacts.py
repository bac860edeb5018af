"""Contact lists, contacts with custom fields, imports and the suppression list."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import JSON, Column, Field

from mailer_app.models.base import WorkspaceRow


class ContactList(WorkspaceRow, table=True):
    __tablename__ = "contact_list"
    __table_args__ = (sa.UniqueConstraint("workspace_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    # Custom field names seen in imports, usable as merge fields.
    field_names: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class Contact(WorkspaceRow, table=True):
    __table_args__ = (sa.UniqueConstraint("list_id", "email"),)

    id: int | None = Field(default=None, primary_key=True)
    list_id: int = Field(foreign_key="contact_list.id", index=True)
    email: str = Field(max_length=320)  # lowercased: the deduplication key
    first_name: str = Field(default="", max_length=200)
    last_name: str = Field(default="", max_length=200)
    fields: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    is_active: bool = Field(default=True)


class ContactImport(WorkspaceRow, table=True):
    __tablename__ = "contact_import"

    id: int | None = Field(default=None, primary_key=True)
    list_id: int = Field(foreign_key="contact_list.id", index=True)
    filename: str = Field(max_length=255)
    status: str = Field(default="pending", max_length=16)  # pending, running, done, failed
    column_mapping: dict[str, str] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    rows_total: int = 0
    rows_imported: int = 0
    rows_rejected: int = 0
    # [{"line": 12, "reason": "..."}], capped; the full report is a file.
    errors: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    finished_at: datetime | None = None


class SuppressionReason(StrEnum):
    UNSUBSCRIBE = "unsubscribe"
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    MANUAL = "manual"


class Suppression(WorkspaceRow, table=True):
    __table_args__ = (sa.UniqueConstraint("workspace_id", "email"),)

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320)
    reason: str = Field(max_length=16)
    note: str | None = None
