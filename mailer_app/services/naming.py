"""Names people give to things in a workspace (lists, seed lists, sender accounts)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session, select

from mailer_app.services import InvalidInput


def ensure_name_free(
    *,
    session: Session,
    model: type,
    workspace_id: int,
    name: str,
    what: str,
    exclude_id: int | None = None,
) -> None:
    """InvalidInput(field="name") when another `model` row of the workspace already has
    this name, whatever the case; `what` names the thing ("list", "seed list")."""
    query = select(model.name).where(
        model.workspace_id == workspace_id, sa.func.lower(model.name) == name.lower()
    )
    if exclude_id is not None:
        query = query.where(model.id != exclude_id)
    taken = session.exec(query).first()
    if taken is not None:  # named as it is spelled, which may differ from what was typed
        raise InvalidInput(f"There is already a {what} named {taken}.", field="name")
