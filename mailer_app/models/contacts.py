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
    # Every query of contacts names their list, so the unique (list_id, email) index
    # serves them all; the workspace and list indexes other tables have would only
    # slow down big imports (each index is written for every row).
    __table_args__ = (sa.UniqueConstraint("list_id", "email"),)

    id: int | None = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspace.id", nullable=False)
    list_id: int = Field(foreign_key="contact_list.id")
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
    # The uploaded file, relative to the workspace's contact uploads folder.
    stored_name: str = Field(default="", max_length=255)
    file_size: int = 0
    bytes_read: int = 0  # progress through the file
    rows_total: int = 0  # rows read so far (all of them once done)
    rows_imported: int = 0  # new contacts plus updated ones
    rows_updated: int = 0  # of rows_imported, contacts that were already in the list
    rows_rejected: int = 0
    # [{"line": 12, "reason": "..."}], capped; the full report is a file.
    errors: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    # The report of every rejected row (a CSV next to the upload), once there is one.
    report_name: str | None = Field(default=None, max_length=255)
    # Why a failed import stopped (plain words, shown on the page).
    message: str | None = Field(default=None, max_length=1000)
    started_at: datetime | None = None
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
