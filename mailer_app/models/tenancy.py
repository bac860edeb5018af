"""Workspaces (tenants), users, their roles, login sessions and API keys."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import JSON, Column, Field

from mailer_app.models.base import TrackedRow, WorkspaceRow


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    EDITOR = "editor"  # builds campaigns
    SENDER = "sender"  # may approve and send
    VIEWER = "viewer"  # dashboards only


class Workspace(TrackedRow, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    slug: str = Field(max_length=80, unique=True)
    # Alert thresholds (rates are 0..1).
    alert_min_inbox_rate: float = Field(default=0.7)
    alert_max_missing_rate: float = Field(default=0.2)
    auto_pause_enabled: bool = Field(default=False)
    alert_emails: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class User(TrackedRow, table=True):
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True)  # stored lowercased
    display_name: str = Field(default="", max_length=200)
    password_hash: str = Field(max_length=255)
    is_active: bool = Field(default=True)
    last_login_at: datetime | None = None


class Membership(TrackedRow, table=True):
    __table_args__ = (sa.UniqueConstraint("workspace_id", "user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspace.id", index=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    role: str = Field(default=Role.VIEWER, max_length=16)


class UserSession(TrackedRow, table=True):
    """A signed-in browser. Only a hash of the cookie token is stored."""

    __tablename__ = "user_session"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    workspace_id: int = Field(foreign_key="workspace.id", index=True)
    expires_at: datetime
    revoked_at: datetime | None = None


class ApiKey(WorkspaceRow, table=True):
    __tablename__ = "api_key"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    prefix: str = Field(max_length=16, unique=True)  # shown in lists, e.g. "mk_3fa9c2"
    key_hash: str = Field(max_length=64)
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
