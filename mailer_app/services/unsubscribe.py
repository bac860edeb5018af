"""Unsubscribe links: a token per (workspace, address) that only this app can make.

The token is an HMAC-SHA256 over the workspace id and the address, keyed with a key
derived from MASTER_KEY under a fixed label (so the key protecting secrets is never
used directly). The link carries the workspace and the address themselves, so the
unsubscribe page needs no lookup table and the token cannot be enumerated:

    {PUBLIC_URL}/unsubscribe/{token}     token = <payload>.<signature>, urlsafe base64

A token made under any of the configured master keys is accepted, so rotating
MASTER_KEY ("NEW,OLD") keeps links in messages already sent working.

The page (mailer_app/api/unsubscribe.py) calls `check_unsubscribe` to show what a
link would do (opening it changes nothing) and `unsubscribe` on the POST, which puts
the address on the workspace's suppression list.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from dataclasses import dataclass, replace

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from mailer_app.models import Source, Suppression, SuppressionReason, Workspace
from mailer_app.services import InvalidInput, suppressions
from mailer_app.services.contacts import normalize_contact_email
from mailer_app.settings import get_settings

_LABEL = b"mailer_app unsubscribe link v1"
_SIGNATURE_BYTES = 16  # 128 bits: far beyond guessing, and a short link


@dataclass(frozen=True)
class UnsubscribeTarget:
    workspace_id: int
    email: str


@functools.lru_cache(maxsize=8)
def _key(master_key: str) -> bytes:
    return hmac.new(master_key.encode(), _LABEL, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _payload(workspace_id: int, email: str) -> bytes:
    return f"{int(workspace_id)}:{email.strip().lower()}".encode()


def _sign(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]


def unsubscribe_token(workspace_id: int, email: str) -> str:
    """The token of the unsubscribe link for this address in this workspace."""
    payload = _payload(workspace_id, email)
    key = _key(get_settings().master_keys()[0])
    return f"{_b64(payload)}.{_b64(_sign(key, payload))}"


def verify_unsubscribe_token(token: str) -> UnsubscribeTarget | None:
    """The workspace and address a token was made for, or None when it is not genuine."""
    if not isinstance(token, str) or len(token) > 1000 or token.count(".") != 1:
        return None
    payload_text, signature_text = token.split(".")
    try:
        payload, signature = _unb64(payload_text), _unb64(signature_text)
        workspace_text, _, email = payload.decode().partition(":")
        workspace_id = int(workspace_text)
    except (ValueError, UnicodeDecodeError):
        return None
    if not email or len(signature) != _SIGNATURE_BYTES:
        return None
    for master_key in get_settings().master_keys():
        if hmac.compare_digest(_sign(_key(master_key), payload), signature):
            return UnsubscribeTarget(workspace_id=workspace_id, email=email)
    return None


def unsubscribe_url(workspace_id: int, email: str) -> str:
    """The full link put in List-Unsubscribe and offered to templates."""
    base = get_settings().public_url.rstrip("/")
    return f"{base}/unsubscribe/{unsubscribe_token(workspace_id, email)}"


# --- the unsubscribe page ---------------------------------------------------------------

INVALID_LINK = (
    "This unsubscribe link is not valid: it may have been cut short or changed on the way. "
    "Open the whole link from the email again, or reply to the email to be removed."
)
LINK_NOTE = "Unsubscribed with the link in an email."


@dataclass(frozen=True)
class UnsubscribeRequest:
    """What a genuine link asks: remove `email` from the mail of `workspace_name`."""

    workspace_id: int
    workspace_name: str
    email: str
    already_unsubscribed: bool


def check_unsubscribe(*, session: Session, token: str) -> UnsubscribeRequest:
    """What the link would do, changing nothing (the confirmation page: mail scanners
    follow links, so opening one must never unsubscribe). InvalidInput if not genuine."""
    target = verify_unsubscribe_token(token)
    workspace = session.get(Workspace, target.workspace_id) if target is not None else None
    if workspace is None:
        raise InvalidInput(INVALID_LINK, field="token")
    try:
        address = normalize_contact_email(target.email)
    except InvalidInput:
        raise InvalidInput(INVALID_LINK, field="token") from None
    existing = _suppression(session, workspace.id, address)
    return UnsubscribeRequest(
        workspace_id=workspace.id,
        workspace_name=workspace.name,
        email=address,
        already_unsubscribed=existing is not None
        and existing.reason == SuppressionReason.UNSUBSCRIBE,
    )


def unsubscribe(
    *, session: Session, token: str, source: Source | str = Source.API
) -> UnsubscribeRequest:
    """Put the link's address on its workspace's suppression list for `unsubscribe`.

    Idempotent: an address already unsubscribed is left as it is (no new audit entry);
    one suppressed for another reason gets `unsubscribe` (the latest event wins, as
    everywhere on the list). A link that is not genuine changes nothing and raises
    InvalidInput. Returns the request as it was before (`already_unsubscribed`).
    """
    request = check_unsubscribe(session=session, token=token)
    if request.already_unsubscribed:
        return request
    existing = _suppression(session, request.workspace_id, request.email)
    try:
        # A savepoint: two clicks at once both see no row; the unique constraint
        # refuses the second insert, and that address is then unsubscribed anyway.
        with session.begin_nested():
            suppressions.add_suppression(
                session=session,
                workspace_id=request.workspace_id,
                email=request.email,
                reason=SuppressionReason.UNSUBSCRIBE.value,
                note=None if existing is not None else LINK_NOTE,
                source=source,
            )
    except IntegrityError:
        if _suppression(session, request.workspace_id, request.email) is None:
            raise
        return replace(request, already_unsubscribed=True)
    return request


def _suppression(session: Session, workspace_id: int, address: str) -> Suppression | None:
    return session.exec(
        select(Suppression).where(
            Suppression.workspace_id == workspace_id, Suppression.email == address
        )
    ).first()
