"""Seed mailboxes at mailbox providers, and named lists of them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import JSON, Column, Field

from mailer_app.models.base import WorkspaceRow


class Esp(StrEnum):
    GMAIL = "gmail"
    OUTLOOK = "outlook"
    YAHOO = "yahoo"
    ICLOUD = "icloud"
    AOL = "aol"
    GMX = "gmx"
    ZOHO = "zoho"
    OTHER = "other"


class SeedProvider(StrEnum):
    IMAP = "imap"
    GMAIL_API = "gmail_api"
    MS_GRAPH = "ms_graph"


class SeedAuthMethod(StrEnum):
    IMAP_SECRET = "imap_secret"  # noqa: S105 (a method name, not a secret)
    OAUTH2 = "oauth2"


class SeedStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    AUTH_EXPIRED = "auth_expired"
    ERROR = "error"


class SeedAccount(WorkspaceRow, table=True):
    __tablename__ = "seed_account"
    __table_args__ = (sa.UniqueConstraint("workspace_id", "email"),)

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320)
    esp: str = Field(default=Esp.OTHER, max_length=16, index=True)
    provider: str = Field(default=SeedProvider.IMAP, max_length=16)
    auth_method: str = Field(default=SeedAuthMethod.IMAP_SECRET, max_length=16)
    status: str = Field(default=SeedStatus.ACTIVE, max_length=16)
    status_reason: str | None = None
    imap_host: str | None = Field(default=None, max_length=255)
    imap_port: int | None = None
    imap_security: str | None = Field(default=None, max_length=16)
    imap_username: str | None = Field(default=None, max_length=320)
    credential_ref: str | None = Field(default=None, max_length=64)
    # Discovered from the server: {"inbox": "INBOX", "spam": "[Gmail]/Spam", ...}
    folder_map: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    last_checked_at: datetime | None = None
    last_placement: str | None = Field(default=None, max_length=16)


class SeedList(WorkspaceRow, table=True):
    __tablename__ = "seed_list"
    __table_args__ = (sa.UniqueConstraint("workspace_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)


class SeedListMember(WorkspaceRow, table=True):
    __tablename__ = "seed_list_member"
    __table_args__ = (sa.UniqueConstraint("seed_list_id", "seed_id"),)

    id: int | None = Field(default=None, primary_key=True)
    seed_list_id: int = Field(foreign_key="seed_list.id", index=True)
    seed_id: int = Field(foreign_key="seed_account.id", index=True)
