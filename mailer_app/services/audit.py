"""The audit log: who did what, when, through which door."""

from __future__ import annotations

import re
from typing import Any

from sqlmodel import Session

from mailer_app.logs import MASK, redact
from mailer_app.models import AuditEntry, Source

# A detail under one of these keys is dropped whatever it looks like: the audit log
# is shown in the UI and exported, so it must never carry a credential.
_SENSITIVE_KEY = re.compile(r"(?i)password|passwd|pwd|secret|token|api[_-]?key|credential(?!_ref)")


def record(
    *,
    session: Session,
    action: str,
    source: Source | str,
    workspace_id: int | None = None,
    user_id: int | None = None,
    target_type: str | None = None,
    target_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Add an audit entry to the caller's transaction (flushed, not committed).

    String details pass through `redact`, and values under credential-like keys are
    replaced by a mask, so a careless caller cannot write a secret here.
    """
    entry = AuditEntry(
        workspace_id=workspace_id,
        user_id=user_id,
        action=action,
        target_type=target_type,
        target_id=target_id,
        details=_clean(details or {}),
        source=str(source),
    )
    session.add(entry)
    session.flush()
    return entry


def _clean(value: Any, key: str | None = None) -> Any:
    if key is not None and _SENSITIVE_KEY.search(key):
        return MASK
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {str(k): _clean(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    # Anything else (dates, enums, ids) is stored as its redacted text: JSON-safe.
    return redact(str(value))
