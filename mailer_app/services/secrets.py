"""The encrypted secret store: SMTP/IMAP passwords, OAuth tokens, DKIM keys.

Values are encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under MASTER_KEY and
only a random `ref` leaves this module; other tables keep that `ref` in their
`credential_ref` column. Values are never logged: every value stored or revealed in
this process is registered with the log redaction filter, so a later log line that
contains it (an SMTP error quoting it, a careless debug line) is masked.

MASTER_KEY is a comma-separated list, newest first. To rotate: put the new key in
front ("NEW,OLD"), run `rotate_secrets`, then remove OLD.
"""

from __future__ import annotations

import functools
import secrets as random
from datetime import datetime

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlmodel import Session, select

from mailer_app.logs import register_secret
from mailer_app.models import Secret, Source, utcnow
from mailer_app.services import InvalidInput, NotFoundError, audit
from mailer_app.settings import ConfigurationError, get_settings

REF_PREFIX = "sec_"
# 32 random bytes: unguessable, and "sec_" + 43 characters fits the 64-wide column.
REF_RANDOM_BYTES = 32
MAX_VALUE_BYTES = 64 * 1024  # DKIM private keys are the largest thing kept here
ROTATE_BATCH = 500

KEY_MISMATCH_MESSAGE = (
    "MASTER_KEY does not match the key these secrets were encrypted with. Set MASTER_KEY "
    "to the key used when they were saved (to change keys, list the new key first and "
    "keep the old one after a comma: NEW,OLD, then run key rotation)."
)


class SecretNotFound(NotFoundError):
    """No secret with this ref in this workspace."""


class SecretDecryptionError(ConfigurationError):
    """A stored secret cannot be decrypted with any configured MASTER_KEY."""


@functools.lru_cache(maxsize=4)
def _fernets_for(keys: tuple[str, ...]) -> tuple[MultiFernet, Fernet]:
    try:
        fernets = [Fernet(key.encode()) for key in keys]
    except (ValueError, TypeError):
        raise ConfigurationError(
            "MASTER_KEY is not a valid key: each key must be 32 url-safe base64-encoded "
            "bytes. Generate one with `python -m mailer_app generate-key`."
        ) from None
    return MultiFernet(fernets), fernets[0]


def _fernets() -> tuple[MultiFernet, Fernet]:
    """(all keys for decrypting, the newest key alone)."""
    # Read the keys on every call (cached per key list): tests and key rotation
    # change MASTER_KEY without restarting the process.
    keys = tuple(get_settings().master_keys())
    if not keys:
        raise ConfigurationError("MASTER_KEY is empty.")
    return _fernets_for(keys)


def _fernet() -> MultiFernet:
    return _fernets()[0]


def encrypt_value(value: str) -> str:
    """The Fernet token for `value` under the newest MASTER_KEY (no database)."""
    return _fernet().encrypt(value.encode("utf-8")).decode("ascii")


def decrypt_value(token: str) -> str:
    """The value inside a Fernet token, trying every configured key (no database)."""
    try:
        return _fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError):
        raise SecretDecryptionError(KEY_MISMATCH_MESSAGE) from None


def _check_value(value: str) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidInput("Enter the password or key; it cannot be empty.", field="value")
    if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
        raise InvalidInput("This value is too long to store.", field="value")


def _get(*, session: Session, workspace_id: int, ref: str) -> Secret:
    secret = session.exec(
        select(Secret).where(Secret.workspace_id == workspace_id, Secret.ref == ref)
    ).first()
    if secret is None:
        # Same answer for "no such ref" and "another workspace's ref".
        raise SecretNotFound("This stored password or key no longer exists.")
    return secret


def store_secret(
    *,
    session: Session,
    workspace_id: int,
    value: str,
    kind: str,
    source: Source | str,
    created_by_id: int | None = None,
) -> str:
    """Encrypt and store `value`; returns its new ref ("sec_...") for a credential_ref."""
    _check_value(value)
    register_secret(value)
    secret = Secret(
        workspace_id=workspace_id,
        ref=REF_PREFIX + random.token_urlsafe(REF_RANDOM_BYTES),
        kind=kind,
        ciphertext=encrypt_value(value),
        source=str(source),
        created_by_id=created_by_id,
    )
    session.add(secret)
    session.flush()
    audit.record(
        session=session,
        action="secret.create",
        source=source,
        workspace_id=workspace_id,
        user_id=created_by_id,
        target_type="secret",
        target_id=secret.id,
        details={"kind": kind},
    )
    return secret.ref


def reveal_secret(*, session: Session, workspace_id: int, ref: str) -> str:
    """The plain value behind `ref` in this workspace (for the worker that logs in).

    Raises SecretNotFound (also for another workspace's ref) or SecretDecryptionError.
    """
    value = decrypt_value(_get(session=session, workspace_id=workspace_id, ref=ref).ciphertext)
    register_secret(value)
    return value


def replace_secret(
    *,
    session: Session,
    workspace_id: int,
    ref: str,
    value: str,
    source: Source | str,
    updated_by_id: int | None = None,
) -> None:
    """Put a new value behind an existing ref (a changed password keeps its ref)."""
    _check_value(value)
    secret = _get(session=session, workspace_id=workspace_id, ref=ref)
    register_secret(value)
    secret.ciphertext = encrypt_value(value)
    session.add(secret)
    session.flush()
    audit.record(
        session=session,
        action="secret.replace",
        source=source,
        workspace_id=workspace_id,
        user_id=updated_by_id,
        target_type="secret",
        target_id=secret.id,
        details={"kind": secret.kind},
    )


def delete_secret(
    *,
    session: Session,
    workspace_id: int,
    ref: str,
    source: Source | str,
    deleted_by_id: int | None = None,
) -> None:
    """Delete the secret behind `ref` in this workspace (SecretNotFound if absent)."""
    secret = _get(session=session, workspace_id=workspace_id, ref=ref)
    secret_id, kind = secret.id, secret.kind
    session.delete(secret)
    session.flush()
    audit.record(
        session=session,
        action="secret.delete",
        source=source,
        workspace_id=workspace_id,
        user_id=deleted_by_id,
        target_type="secret",
        target_id=secret_id,
        details={"kind": kind},
    )


def rotate_secrets(*, session: Session, source: Source | str = Source.CLI) -> int:
    """Re-encrypt, under the newest MASTER_KEY, every secret not already under it.

    Covers all workspaces (an operator task). Returns how many were re-encrypted.
    If any secret cannot be decrypted with the configured keys, raises
    SecretDecryptionError naming it and changes nothing the caller commits: the
    caller's rollback undoes the batches already done.
    """
    fernet, newest = _fernets()
    rotated = 0
    last_id = 0
    now: datetime = utcnow()
    while True:
        batch = session.exec(
            select(Secret).where(Secret.id > last_id).order_by(Secret.id).limit(ROTATE_BATCH)
        ).all()
        if not batch:
            break
        for secret in batch:
            last_id = secret.id
            token = secret.ciphertext.encode("ascii")
            try:
                newest.decrypt(token)
                continue  # already under the newest key
            except InvalidToken:
                pass
            try:
                secret.ciphertext = fernet.rotate(token).decode("ascii")
            except InvalidToken:
                raise SecretDecryptionError(
                    f"Secret {secret.ref} (workspace {secret.workspace_id}) cannot be "
                    f"decrypted. {KEY_MISMATCH_MESSAGE}"
                ) from None
            secret.rotated_at = now
            session.add(secret)
            rotated += 1
        session.flush()
    audit.record(
        session=session, action="secret.rotate_all", source=source, details={"rotated": rotated}
    )
    return rotated


def verify_master_key(*, session: Session) -> None:
    """Raise SecretDecryptionError now if the newest stored secret cannot be decrypted.

    For start-up checks: a wrong MASTER_KEY should stop the process with its
    message, not surface later as failed sends.
    """
    secret = session.exec(select(Secret).order_by(Secret.id.desc()).limit(1)).first()
    if secret is not None:
        decrypt_value(secret.ciphertext)
