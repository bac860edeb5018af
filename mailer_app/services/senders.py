"""Sender accounts: the mailboxes campaigns and pre-flight tests go out from."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, select

from mailer_app.models import SenderAccount


@dataclass(frozen=True)
class SenderChoice:
    id: int
    name: str
    from_email: str
    status: str


def list_senders(*, session: Session, workspace_id: int) -> list[SenderChoice]:
    """The workspace's sender accounts, by name (no credentials)."""
    rows = session.exec(
        select(SenderAccount)
        .where(SenderAccount.workspace_id == workspace_id)
        .order_by(SenderAccount.name)
    )
    return [SenderChoice(s.id, s.name, s.from_email, s.status) for s in rows]
