"""Encrypted secrets. Other tables hold only `credential_ref`, never the value."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field

from mailer_app.models.base import WorkspaceRow


class Secret(WorkspaceRow, table=True):
    id: int | None = Field(default=None, primary_key=True)
    ref: str = Field(max_length=64, unique=True)  # what credential_ref columns hold
    kind: str = Field(max_length=32)  # password, oauth_token, dkim_key, ...
    ciphertext: str  # Fernet token (authenticated encryption)
    rotated_at: datetime | None = None
