"""Unsubscribe links: a token per (workspace, address) that only this app can make.

The token is an HMAC-SHA256 over the workspace id and the address, keyed with a key
derived from MASTER_KEY under a fixed label (so the key protecting secrets is never
used directly). The link carries the workspace and the address themselves, so the
unsubscribe page needs no lookup table and the token cannot be enumerated:

    {PUBLIC_URL}/unsubscribe/{token}     token = <payload>.<signature>, urlsafe base64

A token made under any of the configured master keys is accepted, so rotating
MASTER_KEY ("NEW,OLD") keeps links in messages already sent working.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from dataclasses import dataclass

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
