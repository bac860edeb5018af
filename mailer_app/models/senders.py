"""Sender accounts: the SMTP (and optional IMAP) mailboxes campaigns go out from."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field

from mailer_app.models.base import WorkspaceRow


class TransportSecurity(StrEnum):
    PLAIN = "plain"
    STARTTLS = "starttls"
    TLS = "tls"


class SenderAccount(WorkspaceRow, table=True):
    __tablename__ = "sender_account"
    __table_args__ = (sa.UniqueConstraint("workspace_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    from_name: str = Field(default="", max_length=200)
    from_email: str = Field(max_length=320)
    reply_to: str | None = Field(default=None, max_length=320)
    smtp_host: str = Field(max_length=255)
    smtp_port: int = Field(default=587)
    smtp_security: str = Field(default=TransportSecurity.STARTTLS, max_length=16)
    smtp_username: str | None = Field(default=None, max_length=320)
    credential_ref: str | None = Field(default=None, max_length=64)
    imap_host: str | None = Field(default=None, max_length=255)
    imap_port: int | None = None
    imap_security: str | None = Field(default=None, max_length=16)
    imap_username: str | None = Field(default=None, max_length=320)
    imap_credential_ref: str | None = Field(default=None, max_length=64)
    sent_folder: str | None = Field(default=None, max_length=255)
    rate_per_second: float | None = None
    rate_per_minute: int | None = None
    rate_per_hour: int | None = None
    dkim_domain: str | None = Field(default=None, max_length=255)
    dkim_selector: str | None = Field(default=None, max_length=63)
    dkim_key_ref: str | None = Field(default=None, max_length=64)
    bounce_folder: str | None = Field(default=None, max_length=255)  # default INBOX
    bounce_uidvalidity: int | None = None  # where bounce polling stopped
    bounce_last_uid: int | None = None
    bounce_polled_at: datetime | None = None
    status: str = Field(default="active", max_length=16)  # active, paused, auth_failed
    status_reason: str | None = None
