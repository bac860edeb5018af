"""Workspaces (tenants): creation with a unique slug, lookup, alert thresholds."""

from __future__ import annotations

import re
import unicodedata

from email_validator import EmailNotValidError, validate_email
from sqlmodel import Session, select

from mailer_app.models import Membership, Source, Workspace
from mailer_app.services import InvalidInput, NotFoundError, audit

SLUG_MAX_LENGTH = 60
NAME_MAX_LENGTH = 200


class WorkspaceNotFound(NotFoundError):
    pass


def slugify(name: str) -> str:
    """A URL-safe slug for `name` ("Acme Mail, Inc." -> "acme-mail-inc")."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return slug[:SLUG_MAX_LENGTH].rstrip("-") or "workspace"


def unique_slug(*, session: Session, name: str) -> str:
    """`slugify(name)`, with "-2", "-3", ... appended when it is taken."""
    base = slugify(name)
    taken = set(
        session.exec(
            select(Workspace.slug).where(
                (Workspace.slug == base) | Workspace.slug.startswith(f"{base}-")
            )
        ).all()
    )
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def create_workspace(*, session: Session, name: str, source: Source | str) -> Workspace:
    """A new workspace named `name` (trimmed, required) with a unique slug."""
    name = (name or "").strip()
    if not name:
        raise InvalidInput("Give your workspace a name.", field="workspace_name")
    if len(name) > NAME_MAX_LENGTH:
        raise InvalidInput(
            f"Use a workspace name of at most {NAME_MAX_LENGTH} characters.",
            field="workspace_name",
        )
    workspace = Workspace(name=name, slug=unique_slug(session=session, name=name), source=source)
    session.add(workspace)
    session.flush()
    return workspace


def get_workspace(*, session: Session, workspace_id: int) -> Workspace:
    """The workspace with this id, or WorkspaceNotFound."""
    workspace = session.get(Workspace, workspace_id)
    if workspace is None:
        raise WorkspaceNotFound("This workspace does not exist.")
    return workspace


def first_workspace(*, session: Session) -> Workspace | None:
    """The oldest workspace (single-team installs have only this one), or None."""
    return session.exec(select(Workspace).order_by(Workspace.id).limit(1)).first()


def workspaces_of_user(*, session: Session, user_id: int) -> list[tuple[Workspace, str]]:
    """(workspace, role) for every workspace the user is a member of, oldest first."""
    rows = session.exec(
        select(Workspace, Membership.role)
        .join(Membership, Membership.workspace_id == Workspace.id)
        .where(Membership.user_id == user_id)
        .order_by(Workspace.id)
    ).all()
    return [(workspace, role) for workspace, role in rows]


def update_alert_settings(
    *,
    session: Session,
    workspace_id: int,
    user_id: int | None,
    source: Source | str,
    min_inbox_rate: float | None = None,
    max_missing_rate: float | None = None,
    auto_pause_enabled: bool | None = None,
    alert_emails: list[str] | None = None,
) -> Workspace:
    """Change the workspace's alert thresholds (rates 0..1); None leaves a value as is."""
    workspace = get_workspace(session=session, workspace_id=workspace_id)
    changes: dict[str, object] = {}
    if min_inbox_rate is not None:
        changes["alert_min_inbox_rate"] = _rate(min_inbox_rate, "min_inbox_rate")
    if max_missing_rate is not None:
        changes["alert_max_missing_rate"] = _rate(max_missing_rate, "max_missing_rate")
    if auto_pause_enabled is not None:
        changes["auto_pause_enabled"] = bool(auto_pause_enabled)
    if alert_emails is not None:
        changes["alert_emails"] = _emails(alert_emails)
    for column, value in changes.items():
        setattr(workspace, column, value)
    session.add(workspace)
    session.flush()
    audit.record(
        session=session,
        action="workspace.alert_settings",
        source=source,
        workspace_id=workspace_id,
        user_id=user_id,
        target_type="workspace",
        target_id=workspace_id,
        details=changes,
    )
    return workspace


def _rate(value: float, field: str) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(
            "Enter a number between 0 and 1 (for example 0.7).", field=field
        ) from None
    if not 0.0 <= rate <= 1.0:  # also rejects NaN
        raise InvalidInput("Enter a rate between 0 and 1 (0.7 means 70%).", field=field)
    return rate


def _emails(addresses: list[str]) -> list[str]:
    cleaned: list[str] = []
    for raw in addresses:
        address = (raw or "").strip()
        if not address:
            continue
        try:
            address = validate_email(address, check_deliverability=False).normalized.lower()
        except EmailNotValidError:
            raise InvalidInput(
                f"“{address}” is not a valid email address.", field="alert_emails"
            ) from None
        if address not in cleaned:
            cleaned.append(address)
    return cleaned
