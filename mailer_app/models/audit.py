"""Who did what, when."""

from __future__ import annotations

from typing import Any

from sqlmodel import JSON, Column, Field

from mailer_app.models.base import TrackedRow


class AuditEntry(TrackedRow, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    # Nullable: sign-in failures and first-run setup happen outside any workspace.
    workspace_id: int | None = Field(default=None, foreign_key="workspace.id", index=True)
    user_id: int | None = Field(default=None, foreign_key="user.id")
    action: str = Field(max_length=64, index=True)  # e.g. "user.sign_in", "secret.create"
    target_type: str | None = Field(default=None, max_length=32)
    target_id: int | None = None
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
