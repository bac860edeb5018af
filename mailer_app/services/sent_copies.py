"""Copies of sent campaign messages in the sender account's Sent folder (IMAP APPEND).

A campaign run whose sender account has a mailbox (IMAP) queues its records with
`append_status` pending (send_records.queue_campaign). Once a record is `sent`, the
append job (jobs/append.py) calls `append_pending`, which:

1. reads up to `limit` sent records still pending, oldest first, and makes each
   message's bytes again (services/outgoing.record_message: the bytes it was sent
   with, dated when it was submitted, DKIM-signed when the account has a key);
2. signs in to the account's mailbox ONCE, finds the Sent folder (the \\Sent
   special-use flag, then the account's configured `sent_folder`, then the usual
   names: mail/imap_append.py) and appends each message as read (\\Seen), with its
   Date as the internal date;
3. writes each record's `append_status`: appended, or failed with the server's
   refusal in plain words.

`append_status` moves only from pending, and only here (`_set`, `_give_up`):

    pending -> appended | failed       (pending again, with `append_error`, to retry)

This is a status of its own: it never changes `status` or anything else the send
owns, and a failed append never makes a sent message failed. When the mailbox cannot
be used at all (unreachable, password refused, no Sent folder, password missing),
the records stay pending with `append_error` saying why and the outcome carries the
`error`; the job tries again later, and on its last try passes `give_up=True`, which
makes every pending sent record of the run failed with that reason.

A message whose copy was on its way when the connection broke stays pending (the
server never said whether it stored it): a retry may then store it twice, which is
better than never.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, select

from mailer_app.db import session_scope
from mailer_app.mail.imap import ImapEndpoint, MailboxAuthError, MailboxError
from mailer_app.mail.imap_append import AppendInterrupted, AppendResult, append_sent
from mailer_app.models import (
    AppendStatus,
    CampaignRun,
    CampaignVersion,
    SenderAccount,
    SendRecord,
    SendStatus,
    utcnow,
)
from mailer_app.services import InvalidInput, NotFoundError, ServiceError, outgoing
from mailer_app.services import secrets as secret_store
from mailer_app.services.secrets import SecretDecryptionError

log = logging.getLogger(__name__)

APPEND_BATCH = 200  # messages per IMAP session
# Messages are made in memory before the session starts: stop adding once a batch
# holds this much (at least one message always goes; the rest wait for the next call).
APPEND_BATCH_BYTES = 25 * 1024 * 1024
IMAP_TIMEOUT = 60.0  # seconds per IMAP step (a big APPEND on a slow line)
ERROR_MAX = 1000  # characters of append_error kept

_records = SendRecord.__table__


@dataclass(frozen=True)
class AppendOutcome:
    """What one call did: copies stored, copies refused, sent records still pending
    (for this run, after the call) and, when the mailbox could not be used, why."""

    appended: int = 0
    failed: int = 0
    left: int = 0
    error: str | None = None


@dataclass(frozen=True)
class _Mailbox:
    endpoint: ImapEndpoint  # with the revealed password: keep in memory only, briefly
    sent_folder: str | None


class _Unusable(ServiceError):
    """The mailbox cannot be used for any record (the message says why)."""


def pending_runs() -> list[int]:
    """Runs with sent records whose copy in Sent is still pending (for the sweep)."""
    col = _records.c
    with session_scope() as session:
        found = session.execute(
            sa.select(col.run_id)
            .where(col.status == SendStatus.SENT, col.append_status == AppendStatus.PENDING)
            .group_by(col.run_id)
            .order_by(col.run_id)
        ).scalars()
        return list(found)


def append_pending(
    *, run_id: int, limit: int = APPEND_BATCH, give_up: bool = False
) -> AppendOutcome:
    """Store copies of the run's sent messages still pending in the Sent folder (see
    the module docstring). Safe to run twice; run one at a time per run (the job
    holds a lock) or a copy may be stored twice."""
    messages: list[tuple[int, bytes]] = []
    unbuildable: dict[int, str] = {}
    with session_scope() as session:
        ids = _due(session, run_id, limit)
        if not ids:
            return AppendOutcome(left=0)
        try:
            mailbox = _mailbox(session, run_id)
            size = 0
            maker = None
            for record in _load(session, ids):
                if messages and size >= APPEND_BATCH_BYTES:
                    break
                try:
                    if maker is None:
                        maker = outgoing.RunMessages(session=session, run_id=run_id)
                    data = outgoing.record_message(session=session, record=record, maker=maker)
                except ServiceError as exc:
                    if not isinstance(exc, InvalidInput | NotFoundError):
                        raise _Unusable(str(exc)) from None  # the DKIM key, for all
                    unbuildable[record.id] = (
                        f"No copy was stored in Sent: the message could not be put "
                        f"together again ({exc})"
                    )
                    continue
                messages.append((record.id, data))
                size += len(data)
        except _Unusable as exc:
            return _account_failed(session, run_id, ids, str(exc), give_up)
    results: list[AppendResult] = []
    error = None
    if messages:
        try:
            results = append_sent(
                mailbox.endpoint, None, [data for _, data in messages], mailbox.sent_folder
            )
        except AppendInterrupted as exc:
            results, error = exc.results, _mailbox_words(exc)
        except MailboxError as exc:  # unreachable, password refused, no Sent folder
            error = _mailbox_words(exc)
    with session_scope() as session:
        appended = failed = 0
        for (record_id, _), result in zip(messages, results, strict=False):
            if result.ok:
                appended += _set(session, [record_id], AppendStatus.APPENDED, None)
            else:
                failed += _set(session, [record_id], AppendStatus.FAILED, result.error)
        for record_id, why in unbuildable.items():
            failed += _set(session, [record_id], AppendStatus.FAILED, why)
        if error is not None:
            untried = [record_id for record_id, _ in messages[len(results) :]]
            if give_up:
                failed += _give_up(session, run_id, error)
            else:
                _set(session, untried, AppendStatus.PENDING, error)
        left = _count_pending(session, run_id)
    if error is not None:
        log.warning("append-to-Sent for run %s: %s", run_id, error)
    return AppendOutcome(appended=appended, failed=failed, left=left, error=error)


# --- reading ----------------------------------------------------------------------------------


def _sent_pending(run_id: int):
    col = _records.c
    return (
        col.run_id == run_id,
        col.status == SendStatus.SENT,
        col.append_status == AppendStatus.PENDING,
    )


def _due(session: Session, run_id: int, limit: int) -> list[int]:
    col = _records.c
    return list(
        session.execute(
            sa.select(col.id)
            .where(*_sent_pending(run_id))
            .order_by(col.sent_at, col.id)
            .limit(max(1, int(limit)))
        ).scalars()
    )


def _load(session: Session, ids: list[int]) -> list[SendRecord]:
    found = session.exec(select(SendRecord).where(SendRecord.id.in_(ids))).all()
    by_id = {record.id: record for record in found}
    return [by_id[i] for i in ids if i in by_id]


def _count_pending(session: Session, run_id: int) -> int:
    return session.execute(
        sa.select(sa.func.count()).select_from(_records).where(*_sent_pending(run_id))
    ).scalar_one()


def _mailbox(session: Session, run_id: int) -> _Mailbox:
    """Where the run's copies go; _Unusable when its sender account has no mailbox."""
    run = session.get(CampaignRun, run_id)
    version = session.get(CampaignVersion, run.version_id) if run is not None else None
    sender_id = version.sender_account_id if version is not None else None
    sender = session.get(SenderAccount, sender_id) if sender_id is not None else None
    if sender is None or not (sender.imap_host and sender.imap_port):
        raise _Unusable(
            "The sender account no longer has a mailbox (IMAP) set up, so there is no "
            "Sent folder to store a copy in."
        )
    try:
        if not sender.imap_credential_ref:
            raise secret_store.SecretNotFound("no mailbox password saved")
        # Only the mailbox password: the SMTP one has no business here.
        password = secret_store.reveal_secret(
            session=session, workspace_id=sender.workspace_id, ref=sender.imap_credential_ref
        )
    except (ServiceError, SecretDecryptionError):
        raise _Unusable(
            f"The mailbox password of the sender account “{sender.name}” is missing or "
            "cannot be read. Enter it again on the sender accounts page."
        ) from None
    endpoint = ImapEndpoint(
        host=sender.imap_host,
        port=sender.imap_port,
        security=sender.imap_security or "tls",
        username=sender.imap_username or sender.from_email,  # as senders.saved_sender_endpoints
        password=password,
        timeout=IMAP_TIMEOUT,
    )
    return _Mailbox(endpoint, sender.sent_folder)


def _mailbox_words(exc: MailboxError) -> str:
    if isinstance(exc, AppendInterrupted):
        return (
            f"{exc} Copies not stored yet are tried again later (the one on its way when "
            "the connection broke may end up in Sent twice)."
        )
    if isinstance(exc, MailboxAuthError):
        return (
            f"The mailbox refused the sign-in: {exc} Check the IMAP password of the "
            "sender account; copies are tried again later."
        )
    return f"{exc}"


# --- writing ----------------------------------------------------------------------------------


def _set(session: Session, ids: list[int], to: str, error: str | None) -> int:
    """Move sent records still pending to `to`; never anything the send owns."""
    if not ids:
        return 0
    col = _records.c
    result = session.execute(
        sa.update(_records)
        .where(
            col.id.in_(ids),
            col.status == SendStatus.SENT,
            col.append_status == AppendStatus.PENDING,
        )
        .values(
            append_status=to,
            append_error=error[:ERROR_MAX] if error else None,
            updated_at=utcnow(),
        )
    )
    return result.rowcount


def _give_up(session: Session, run_id: int, error: str) -> int:
    """Every sent record of the run still pending becomes failed, saying why."""
    why = f"No copy was stored in Sent, after several tries: {error}"
    result = session.execute(
        sa.update(_records)
        .where(*_sent_pending(run_id))
        .values(append_status=AppendStatus.FAILED, append_error=why[:ERROR_MAX],
                updated_at=utcnow())
    )  # fmt: skip
    return result.rowcount


def _account_failed(
    session: Session, run_id: int, ids: list[int], error: str, give_up: bool
) -> AppendOutcome:
    if give_up:
        failed = _give_up(session, run_id, error)
    else:
        failed = 0
        _set(session, ids, AppendStatus.PENDING, error)
    left = _count_pending(session, run_id)
    log.warning("append-to-Sent for run %s: %s", run_id, error)
    return AppendOutcome(failed=failed, left=left, error=error)
