"""Counts for the home page, scoped to one workspace."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session, select

from mailer_app.models import Campaign, Contact, SeedAccount, SenderAccount


def workspace_counts(*, session: Session, workspace_id: int) -> dict[str, int]:
    def count(model) -> int:
        query = select(sa.func.count()).select_from(model).where(model.workspace_id == workspace_id)
        return int(session.exec(query).one())

    return {
        "campaigns": count(Campaign),
        "seeds": count(SeedAccount),
        "senders": count(SenderAccount),
        "contacts": count(Contact),
    }
