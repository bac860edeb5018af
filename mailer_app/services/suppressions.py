"""The suppression list: addresses that must never be sent to.

An address is on it at most once per workspace (lowercased, like contacts), with a
reason: `unsubscribe`, `hard_bounce`, `complaint` or `manual`, and an optional
note. Adding an address that is already there updates its reason (the latest
event wins) and keeps its note unless a new one is given.

Suppressed addresses stay in their contact lists; they are left out of every
campaign (`contacts.iter_recipients`) and checked again just before sending
(`is_suppressed`, `suppressed_among`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from mailer_app.db import get_engine, session_scope
from mailer_app.models import Role, Source, Suppression, SuppressionReason, utcnow
from mailer_app.services import InvalidInput, NotFoundError, audit
from mailer_app.services.contact_csv import RowError, open_contact_csv
from mailer_app.services.contacts import column_key, normalize_contact_email

# Roles that may add, remove and import suppressions (owners always may).
SUPPRESSION_MANAGER_ROLES = (Role.ADMIN, Role.EDITOR, Role.SENDER)
REASONS = tuple(r.value for r in SuppressionReason)
REASON_LABELS = {
    "unsubscribe": "Unsubscribed",
    "hard_bounce": "Hard bounce",
    "complaint": "Spam complaint",
    "manual": "Added by hand",
}
NOTE_MAX_LENGTH = 500
PAGE_SIZE = 50
IMPORT_BATCH = 5000
IMPORT_ERRORS_KEPT = 100
LOOKUP_CHUNK = 1000
_EMAIL_HEADERS = {"email", "emailaddress", "mail", "e-mail", "address"}


class SuppressionNotFound(NotFoundError):
    """No suppression with this id in this workspace."""


@dataclass(frozen=True)
class SuppressionRow:
    id: int
    email: str
    reason: str
    note: str
    created_at: datetime


@dataclass(frozen=True)
class SuppressionPage:
    rows: list[SuppressionRow]
    total: int  # matching the search, over all pages
    page: int  # 1-based
    pages: int


def _reason(value: object) -> str:
    reason = str(value or "").strip().lower().replace("-", "_").replace(" ", "_")
    if reason not in REASONS:
        raise InvalidInput(
            "Choose a reason: unsubscribe, hard bounce, complaint or manual.", field="reason"
        )
    return reason


def _note(value: object) -> str | None:
    text = " ".join(str(value or "").split())
    if len(text) > NOTE_MAX_LENGTH:
        raise InvalidInput(f"Keep the note under {NOTE_MAX_LENGTH} characters.", field="note")
    return text or None


def add_suppression(
    *,
    session: Session,
    workspace_id: int,
    email: str,
    reason: str,
    note: str | None = None,
    user_id: int | None = None,
    source: Source | str = Source.UI,
) -> Suppression:
    """Suppress an address (or update the reason of one already suppressed)."""
    address = normalize_contact_email(email)
    reason, note = _reason(reason), _note(note)
    row = session.exec(
        select(Suppression).where(
            Suppression.workspace_id == workspace_id, Suppression.email == address
        )
    ).first()
    action = "suppression.update" if row is not None else "suppression.add"
    if row is None:
        row = Suppression(
            workspace_id=workspace_id,
            email=address,
            reason=reason,
            note=note,
            created_by_id=user_id,
            source=str(source),
        )
    else:
        row.reason = reason
        row.note = note or row.note
    session.add(row)
    session.flush()
    audit.record(
        session=session,
        action=action,
        source=source,
        workspace_id=workspace_id,
        user_id=user_id,
        target_type="suppression",
        target_id=row.id,
        details={"email": address, "reason": reason},
    )
    return row


def remove_suppression(
    *,
    session: Session,
    workspace_id: int,
    suppression_id: int,
    user_id: int | None = None,
    source: Source | str = Source.UI,
) -> str:
    """Take an address off the list (it can be sent to again); returns the address."""
    row = session.exec(
        select(Suppression).where(
            Suppression.workspace_id == workspace_id, Suppression.id == suppression_id
        )
    ).first()
    if row is None:
        raise SuppressionNotFound("This address is not on the suppression list anymore.")
    audit.record(
        session=session,
        action="suppression.remove",
        source=source,
        workspace_id=workspace_id,
        user_id=user_id,
        target_type="suppression",
        target_id=row.id,
        details={"email": row.email, "reason": row.reason},
    )
    session.delete(row)
    session.flush()
    return row.email


def list_suppressions(
    *,
    session: Session,
    workspace_id: int,
    search: str = "",
    reason: str | None = None,
    page: int = 1,
    page_size: int = PAGE_SIZE,
) -> SuppressionPage:
    """A page of suppressed addresses, newest first; `search` matches part of the address."""
    conditions = [Suppression.workspace_id == workspace_id]
    text = search.strip().lower()
    if text:
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(Suppression.email.like(f"%{escaped}%", escape="\\"))
    if reason:
        conditions.append(Suppression.reason == _reason(reason))
    total = session.exec(select(sa.func.count()).select_from(Suppression).where(*conditions)).one()
    pages = max(1, -(-total // page_size))
    page = min(max(1, page), pages)
    rows = session.exec(
        select(Suppression)
        .where(*conditions)
        .order_by(Suppression.id.desc())
        .offset((page - 1) * page_size)
        .limit(page_size)
    ).all()
    return SuppressionPage(
        rows=[
            SuppressionRow(
                id=r.id, email=r.email, reason=r.reason, note=r.note or "", created_at=r.created_at
            )
            for r in rows
        ],
        total=total,
        page=page,
        pages=pages,
    )


def is_suppressed(*, session: Session, workspace_id: int, email: str) -> bool:
    """Whether this address (any case) is on the workspace's suppression list."""
    address = (email or "").strip().lower()
    return (
        session.exec(
            select(Suppression.id).where(
                Suppression.workspace_id == workspace_id, Suppression.email == address
            )
        ).first()
        is not None
    )


def suppressed_among(
    *, session: Session, workspace_id: int, emails: Iterable[str]
) -> dict[str, str]:
    """{address: reason} for the suppressed ones among `emails` (lowercased), looked
    up in chunks: the last check before a batch of messages is sent."""
    wanted = sorted({(e or "").strip().lower() for e in emails} - {""})
    found: dict[str, str] = {}
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        found.update(
            session.exec(
                select(Suppression.email, Suppression.reason).where(
                    Suppression.workspace_id == workspace_id,
                    Suppression.email.in_(wanted[start : start + LOOKUP_CHUNK]),
                )
            ).all()
        )
    return found


# --- import from CSV --------------------------------------------------------------------


@dataclass
class SuppressionImport:
    added: int = 0
    updated: int = 0  # already suppressed: reason updated
    rejected: int = 0
    errors: list[RowError] = field(default_factory=list)  # the first ones

    def summary(self) -> str:
        parts = [f"Suppressed {self.added} new address{'es' if self.added != 1 else ''}."]
        if self.updated:
            parts.append(f"{self.updated} already on the list got the new reason.")
        if self.rejected:
            parts.append(f"{self.rejected} row{'s' if self.rejected != 1 else ''} skipped.")
        return " ".join(parts)


def import_suppressions(
    *,
    path: str | os.PathLike[str],
    workspace_id: int,
    reason: str,
    user_id: int | None = None,
    source: Source | str = Source.IMPORT,
    engine: Engine | None = None,
) -> SuppressionImport:
    """Suppress every address in a CSV file, streamed, one transaction per batch.

    The address column is the one named like "email" (or the first column). A
    first row that is itself an address is read as data (a file of bare
    addresses). A `reason` column, when present and valid, wins over `reason`; a
    `note` column is kept as the note. Bad rows are skipped and reported.
    """
    default_reason = _reason(reason)
    outcome = SuppressionImport()
    with open_contact_csv(Path(path)) as reader:
        header = reader.header
        keys = [column_key(name) for name in header]
        email_at = next((i for i, k in enumerate(keys) if k in _EMAIL_HEADERS), 0)
        reason_at = keys.index("reason") if "reason" in keys else None
        note_at = keys.index("note") if "note" in keys else None
        rows: Iterable = reader
        try:
            normalize_contact_email(header[email_at])
            # No header: the first row is an address; read it as data.
            rows = _chain([(reader.header_line, list(header))], reader)
        except InvalidInput:
            pass
        batch: dict[str, tuple[str, str | None]] = {}
        for item in rows:
            if isinstance(item, RowError):
                _reject(outcome, item)
                continue
            line, values = item
            try:
                address = normalize_contact_email(values[email_at])
                row_reason = default_reason
                if reason_at is not None and values[reason_at].strip():
                    row_reason = _reason(values[reason_at])
                note = _note(values[note_at]) if note_at is not None else None
            except InvalidInput as exc:
                _reject(outcome, RowError(line, str(exc), values[email_at].strip()[:320]))
                continue
            batch[address] = (row_reason, note)
            if len(batch) >= IMPORT_BATCH:
                _write_batch(engine, workspace_id, user_id, source, batch, outcome)
                batch = {}
        _write_batch(engine, workspace_id, user_id, source, batch, outcome)
    with session_scope(engine or get_engine()) as session:
        audit.record(
            session=session,
            action="suppression.import",
            source=source,
            workspace_id=workspace_id,
            user_id=user_id,
            details={
                "added": outcome.added,
                "updated": outcome.updated,
                "rejected": outcome.rejected,
                "reason": default_reason,
            },
        )
    return outcome


def _chain(first: list, rest: Iterable) -> Iterable:
    yield from first
    yield from rest


def _reject(outcome: SuppressionImport, error: RowError) -> None:
    outcome.rejected += 1
    if len(outcome.errors) < IMPORT_ERRORS_KEPT:
        outcome.errors.append(error)


def _write_batch(engine, workspace_id, user_id, source, batch, outcome) -> None:
    if not batch:
        return
    with session_scope(engine or get_engine()) as session:
        existing = {
            row.email: row
            for row in session.exec(
                select(Suppression).where(
                    Suppression.workspace_id == workspace_id,
                    Suppression.email.in_(list(batch)),
                )
            )
        }
        now = utcnow()
        new = []
        for address, (reason, note) in batch.items():
            row = existing.get(address)
            if row is None:
                new.append(
                    {
                        "workspace_id": workspace_id,
                        "email": address,
                        "reason": reason,
                        "note": note,
                        "created_by_id": user_id,
                        "source": str(source),
                        "created_at": now,
                        "updated_at": now,
                    }
                )
            else:
                row.reason, row.note = reason, note or row.note
                session.add(row)
        if new:
            session.execute(sa.insert(Suppression.__table__), new)
        outcome.added += len(new)
        outcome.updated += len(existing)
