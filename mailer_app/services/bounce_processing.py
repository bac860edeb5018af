"""Bounce processing: read delivery reports from a sender account's mailbox, tie each to
the send record it is about, and keep bad addresses off future sends.

`poll_sender` signs in to the sender account's IMAP mailbox (its `bounce_folder`, else
INBOX), reads the messages that arrived since the last poll (UID above
`bounce_last_uid`; all of them again when the folder's UIDVALIDITY changed), at most
`limit` per call, and reads each with `mail.bounces.parse_bounce`. It never changes the
mailbox: the folder is opened read-only and bodies are fetched with BODY.PEEK (only the
first MAX_MESSAGE_BYTES: the report's own parts come before the returned message).

Each bounced recipient is attributed to a send record of the sender's workspace, most
trustworthy first:
1. the VERP token of the return path the report came back to (`return_path` makes it:
   the record id with an HMAC, so a forged or stray token attributes nothing);
2. the Message-ID of the returned message (`SendRecord.message_id`);
3. the address alone, among this sender's records sent in the last RECENT_SEND_WINDOW.
A record found by token or Message-ID must be for the reported address, unless the
report names one recipient only (the address was forwarded or aliased).

One `BounceEvent` is written per (report, recipient), keyed by the report's own
Message-ID (else `uidvalidity:uid`) and the address, so reading a message twice never
counts it twice. A hard bounce marks the record (`bounce_kind`, `bounced_at`) and puts
the address on the suppression list (reason hard_bounce, the status and the server's
reply as the note), also when no record is found: the address is dead either way. A
soft bounce marks a record that had no bounce yet; an address with
SOFT_BOUNCE_THRESHOLD soft-bounced messages within SOFT_BOUNCE_WINDOW is suppressed too
(reason manual: the list has no reason of its own for that). Addresses already on the
list keep their reason. "Delayed" notices (the server is still trying)
are counted and otherwise ignored.

An IMAP sign-in refusal, an unreachable server or a missing folder comes back as
`BouncePoll.error` in plain words (never the password), and nothing is advanced.
"""

from __future__ import annotations

import email.parser
import email.policy
import functools
import hashlib
import hmac
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from mailer_app.db import get_engine, session_scope
from mailer_app.mail.bounces import DELAYED, Bounce, BouncedRecipient, parse_bounce, verp_address
from mailer_app.mail.imap import ImapEndpoint, MailboxError, SeedMailbox
from mailer_app.models import (
    BounceEvent,
    BounceKind,
    CampaignRun,
    CampaignVersion,
    SenderAccount,
    SendRecord,
    SendStatus,
    Source,
    SuppressionReason,
    utcnow,
)
from mailer_app.services import InvalidInput, NotFoundError, ServiceError, suppressions
from mailer_app.services import secrets as secret_store
from mailer_app.services.contacts import normalize_contact_email
from mailer_app.settings import get_settings

log = logging.getLogger(__name__)

SOFT_BOUNCE_THRESHOLD = 3  # soft-bounced messages to one address...
SOFT_BOUNCE_WINDOW = timedelta(days=30)  # ...within this long suppress it
RECENT_SEND_WINDOW = timedelta(days=30)  # how far back an address alone attributes a bounce
POLL_LIMIT = 500  # messages read per poll: a big mailbox is read over several polls
FETCH_CHUNK = 25  # messages per FETCH (memory stays under 25 x MAX_MESSAGE_BYTES)
MAX_MESSAGE_BYTES = 256 * 1024
IMAP_TIMEOUT = 30.0  # seconds, for the connect and every read
DUE_EVERY = timedelta(minutes=5)
DUE_MAX_ACCOUNTS = 200  # sender accounts polled by one poll_due call
_MID_MAX = 200  # characters of a report's Message-ID kept in its dedupe key


class SenderNotFound(NotFoundError):
    """No sender account with this id (in this workspace)."""


@dataclass
class BouncePoll:
    """What one poll of a sender account's bounce mailbox did."""

    sender_account_id: int
    read: int = 0  # messages read from the mailbox
    hard: int = 0  # new hard-bounce events (one per report and recipient)
    soft: int = 0  # new soft-bounce events
    delayed: int = 0  # recipients of "delayed" notices (not bounces: nothing recorded)
    unattributed: int = 0  # new events tied to no send record
    ignored: int = 0  # messages that are not delivery reports
    duplicates: int = 0  # report recipients already recorded by an earlier poll
    suppressed: list[str] = field(default_factory=list)  # addresses newly suppressed
    more: bool = False  # messages are left for the next poll (`limit` reached)
    error: str | None = None  # why the mailbox could not be read, in plain words


# --- return paths (VERP) ------------------------------------------------------------------------

_TOKEN_LABEL = b"mailer_app bounce return path v1"
_TOKEN = re.compile(r"r(\d{1,18})-([0-9a-f]{12})")  # lower case: some MTAs change case


@functools.lru_cache(maxsize=8)
def _token_key(master_key: str) -> bytes:
    return hmac.new(master_key.encode(), _TOKEN_LABEL, hashlib.sha256).digest()


def _signature(key: bytes, workspace_id: int, record_id: int) -> str:
    return hmac.new(key, f"{workspace_id}:{record_id}".encode(), hashlib.sha256).hexdigest()[:12]


def bounce_token(*, workspace_id: int, record_id: int) -> str:
    """The VERP token naming one send record: `r<id>-<12 hex of an HMAC>`."""
    key = _token_key(get_settings().master_keys()[0])
    return f"r{int(record_id)}-{_signature(key, workspace_id, record_id)}"


def record_id_from_token(token: str | None, *, workspace_id: int) -> int | None:
    """The send record id a token names, when it was made for this workspace by this
    app (under any configured master key); else None."""
    match = _TOKEN.fullmatch((token or "").lower())
    if match is None:
        return None
    record_id, signature = int(match.group(1)), match.group(2)
    for master_key in get_settings().master_keys():
        if hmac.compare_digest(
            signature, _signature(_token_key(master_key), workspace_id, record_id)
        ):
            return record_id
    return None


def return_path(*, sender: SenderAccount, record_id: int) -> str:
    """The envelope sender (SMTP MAIL FROM) for one send record: the sender's address
    with the record's bounce token (`news+r12-…@example.com`), so its bounce names it.
    An address that cannot carry a token ('+' in it, too long) is used as it is."""
    token = bounce_token(workspace_id=sender.workspace_id, record_id=record_id)
    try:
        return verp_address(sender.from_email, token)
    except ValueError:
        return sender.from_email


# --- polling ------------------------------------------------------------------------------------


def due_sender_ids(
    *, session: Session, every: timedelta = DUE_EVERY, workspace_id: int | None = None
) -> list[int]:
    """Sender accounts with a mailbox (IMAP server and password) not polled for `every`,
    least recently polled first (all workspaces unless `workspace_id`)."""
    col = SenderAccount.__table__.c
    scope = [col.workspace_id == workspace_id] if workspace_id is not None else []
    return list(
        session.execute(
            sa.select(col.id)
            .where(
                *scope,
                col.imap_host.is_not(None),
                col.imap_host != "",
                col.imap_credential_ref.is_not(None),
                sa.or_(col.bounce_polled_at.is_(None), col.bounce_polled_at < utcnow() - every),
            )
            .order_by(col.bounce_polled_at.is_not(None), col.bounce_polled_at, col.id)
            .limit(DUE_MAX_ACCOUNTS)
        ).scalars()
    )


def poll_due(
    *, every: timedelta = DUE_EVERY, workspace_id: int | None = None, engine: Engine | None = None
) -> list[BouncePoll]:
    """Poll every sender account that is due (see `due_sender_ids`), one after another.
    An unexpected failure on one account is logged and reported; the others still run."""
    engine = engine or get_engine()
    with session_scope(engine) as session:
        ids = due_sender_ids(session=session, every=every, workspace_id=workspace_id)
    polls = []
    for sender_id in ids:
        try:
            polls.append(poll_sender(sender_account_id=sender_id, engine=engine))
        except Exception:
            log.exception("bounce poll of sender account %s failed", sender_id)
            polls.append(
                BouncePoll(
                    sender_id, error="The bounce mailbox could not be read (unexpected error)."
                )
            )
    return polls


@dataclass(frozen=True)
class _Mailbox:
    workspace_id: int
    endpoint: ImapEndpoint
    folder: str
    uidvalidity: int | None
    last_uid: int


def poll_sender(
    *,
    sender_account_id: int,
    limit: int = POLL_LIMIT,
    workspace_id: int | None = None,
    engine: Engine | None = None,
) -> BouncePoll:
    """Read the new messages of a sender account's bounce mailbox and record the bounces
    (see the module doc). Commits its own short transactions; the mailbox is read
    outside any transaction. Raises SenderNotFound for an unknown sender (or one of
    another workspace than `workspace_id`)."""
    engine = engine or get_engine()
    poll = BouncePoll(sender_account_id)
    with session_scope(engine) as session:
        try:
            mailbox = _mailbox(session, sender_account_id, workspace_id)
        except SenderNotFound:
            raise
        except (ServiceError, secret_store.SecretDecryptionError) as exc:
            poll.error = str(exc)
            return poll
    try:
        with _BounceMailbox(mailbox.endpoint) as imap:
            batch = imap.read_new(
                mailbox.folder,
                uidvalidity=mailbox.uidvalidity,
                last_uid=mailbox.last_uid,
                limit=max(1, limit),
            )
    except MailboxError as exc:
        poll.error = f"Could not read the bounce mailbox: {exc}"
        log.warning("bounce poll of sender account %s: %s", sender_account_id, poll.error)
        return poll
    poll.read, poll.more = len(batch.messages), batch.more
    with session_scope(engine) as session:
        _record(session, mailbox.workspace_id, sender_account_id, batch, poll)
    return poll


def _mailbox(session: Session, sender_id: int, workspace_id: int | None) -> _Mailbox:
    query = select(SenderAccount).where(SenderAccount.id == sender_id)
    if workspace_id is not None:
        query = query.where(SenderAccount.workspace_id == workspace_id)
    sender = session.exec(query).first()
    if sender is None:
        raise SenderNotFound("This sender account does not exist (it may have been deleted).")
    if not sender.imap_host or not sender.imap_port:
        raise InvalidInput("This sender account has no IMAP server to read bounces from.")
    if not sender.imap_credential_ref:
        raise InvalidInput("This sender account has no saved IMAP password.")
    password = secret_store.reveal_secret(
        session=session, workspace_id=sender.workspace_id, ref=sender.imap_credential_ref
    )
    endpoint = ImapEndpoint(
        host=sender.imap_host,
        port=sender.imap_port,
        security=sender.imap_security or "tls",
        username=sender.imap_username or sender.from_email,
        password=password,
        timeout=IMAP_TIMEOUT,
    )
    return _Mailbox(
        workspace_id=sender.workspace_id,
        endpoint=endpoint,
        folder=(sender.bounce_folder or "").strip() or "INBOX",
        uidvalidity=_unsigned(sender.bounce_uidvalidity),
        last_uid=_unsigned(sender.bounce_last_uid) or 0,
    )


# UIDVALIDITY and UIDs are unsigned 32-bit numbers; the columns are signed 32-bit
# integers on PostgreSQL, so values above 2**31 - 1 are stored as their two's complement.
def _signed(value: int) -> int:
    return value - 2**32 if value >= 2**31 else value


def _unsigned(value: int | None) -> int | None:
    return value + 2**32 if value is not None and value < 0 else value


# --- reading the mailbox ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fetched:
    uid: int
    raw: bytes
    received_at: datetime | None


@dataclass(frozen=True)
class _Batch:
    uidvalidity: int
    messages: list[_Fetched]  # oldest first
    last_uid: int | None  # the last UID looked at (a message expunged meanwhile included)
    more: bool  # messages are left after these


class _BounceMailbox(SeedMailbox):
    """The IMAP adapter's session handling (timeouts, error mapping, password scrubbing),
    reading one folder read-only."""

    def read_new(
        self, folder: str, *, uidvalidity: int | None, last_uid: int, limit: int
    ) -> _Batch:
        """Up to `limit` messages after `last_uid`, oldest first; all messages count as
        new when the folder's UIDVALIDITY is not `uidvalidity`."""
        if not self._call("looking for the bounce folder", lambda c: c.folder_exists(folder)):
            raise MailboxError(
                f'The folder "{folder}" does not exist in {self.endpoint.username}\'s mailbox. '
                "Check the bounce folder in the sender account's settings."
            )
        info = self._call(f"opening {folder}", lambda c: c.select_folder(folder, readonly=True))
        current = int(info[b"UIDVALIDITY"])
        after = last_uid if current == uidvalidity else 0
        # "N:*" always includes the newest message, even when its UID is below N.
        found = self._call("searching", lambda c: c.search(["UID", f"{after + 1}:*"]))
        uids = sorted(uid for uid in found if uid > after)
        chosen = uids[:limit]
        items = ["INTERNALDATE", f"BODY.PEEK[]<0.{MAX_MESSAGE_BYTES}>"]
        messages: list[_Fetched] = []
        for start in range(0, len(chosen), FETCH_CHUNK):
            chunk = chosen[start : start + FETCH_CHUNK]
            data = self._call("reading messages", lambda c, chunk=chunk: c.fetch(chunk, items))
            for uid in chunk:
                item = data.get(uid)
                if item is None:
                    continue  # expunged meanwhile
                raw = item.get(b"BODY[]<0>") or item.get(b"BODY[]") or b""
                messages.append(_Fetched(uid, raw, _utc(item.get(b"INTERNALDATE"))))
        return _Batch(current, messages, chosen[-1] if chosen else None, len(uids) > limit)


def _utc(value) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=value.tzinfo or UTC).astimezone(UTC)


# --- recording ----------------------------------------------------------------------------------


def _record(
    session: Session,
    workspace_id: int,
    sender_id: int,
    batch: _Batch,
    poll: BouncePoll,
) -> None:
    _write_lock(session)
    sender = session.exec(
        select(SenderAccount)
        .where(SenderAccount.workspace_id == workspace_id, SenderAccount.id == sender_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if sender is None:
        raise SenderNotFound("This sender account was deleted while its bounces were read.")
    for message in batch.messages:
        bounce = parse_bounce(message.raw, verp_base=sender.from_email)
        if bounce is None:
            poll.ignored += 1
            continue
        report_key = _report_id(message.raw) or f"{batch.uidvalidity}:{message.uid}"
        for recipient in bounce.recipients:
            if recipient.action == DELAYED:
                poll.delayed += 1
                continue
            _record_recipient(session, sender, bounce, recipient, report_key, message, poll)
    # Another poll may have moved on meanwhile (the reports it read are not counted
    # twice: their keys are taken); never move back.
    same_folder = _unsigned(sender.bounce_uidvalidity) == batch.uidvalidity
    floor = (_unsigned(sender.bounce_last_uid) or 0) if same_folder else 0
    last = max(floor, batch.last_uid or 0)
    sender.bounce_uidvalidity = _signed(batch.uidvalidity)
    sender.bounce_last_uid = _signed(last)
    sender.bounce_polled_at = utcnow()
    session.add(sender)
    session.flush()


def _write_lock(session: Session) -> None:
    """Take the write lock first on SQLite (two polls of one mailbox then run one after
    the other); on PostgreSQL the sender row is locked FOR UPDATE instead."""
    conn = session.connection()
    if conn.dialect.name == "sqlite" and not conn.connection.dbapi_connection.in_transaction:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _report_id(raw: bytes) -> str | None:
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    value = " ".join(str(headers.get("Message-ID") or "").split())
    return value[:_MID_MAX] or None


def _dsn_key(report_key: str, address: str) -> str:
    key = f"{report_key} {address}"
    if len(key) <= 255:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def _address(value: str) -> str:
    """An address as contacts and send records keep it (lowercased, IDNA decoded)."""
    try:
        return normalize_contact_email(value)
    except InvalidInput:
        return (value or "").strip().lower()


def _record_recipient(
    session: Session,
    sender: SenderAccount,
    bounce: Bounce,
    recipient: BouncedRecipient,
    report_key: str,
    message: _Fetched,
    poll: BouncePoll,
) -> None:
    workspace_id = sender.workspace_id
    key = _dsn_key(report_key, _address(recipient.email))
    exists = session.exec(
        select(BounceEvent.id).where(
            BounceEvent.workspace_id == workspace_id,
            BounceEvent.sender_account_id == sender.id,
            BounceEvent.dsn_key == key,
        )
    ).first()
    if exists is not None:
        poll.duplicates += 1
        return
    record = _attribute(session, sender, bounce, recipient)
    address = record.email if record is not None else _address(recipient.email)
    kind = BounceKind.HARD if recipient.is_hard else BounceKind.SOFT
    when = message.received_at or utcnow()
    session.add(
        BounceEvent(
            workspace_id=workspace_id, sender_account_id=sender.id,
            send_record_id=record.id if record is not None else None, email=address[:320],
            kind=kind, status_code=recipient.status[:16] or None,
            diagnostic=recipient.diagnostic or None, dsn_key=key, received_at=when,
            source=Source.JOB,
        )
    )  # fmt: skip
    session.flush()
    if record is None:
        poll.unattributed += 1
    if kind == BounceKind.HARD:
        poll.hard += 1
        if record is not None:
            _mark_record(session, record, kind, when)
        note = f"Hard bounce {recipient.status}: {recipient.diagnostic or recipient.reason}"
        _suppress(session, workspace_id, address, SuppressionReason.HARD_BOUNCE, note, poll)
        return
    poll.soft += 1
    if record is not None:
        _mark_record(session, record, kind, when)
    count = _soft_bounced_messages(session, workspace_id, address)
    if count >= SOFT_BOUNCE_THRESHOLD:
        days = SOFT_BOUNCE_WINDOW.days
        note = (
            f"{count} soft bounces in {days} days (the last: {recipient.status}, "
            f"{recipient.reason})"
        )
        _suppress(session, workspace_id, address, SuppressionReason.MANUAL, note, poll)


def _mark_record(session: Session, record: SendRecord, kind: str, when: datetime) -> None:
    """Hard wins over soft; a soft bounce marks only a record with no bounce yet."""
    col = SendRecord.__table__.c
    unmarked = col.bounce_kind.is_(None)
    if kind == BounceKind.HARD:
        unmarked = sa.or_(unmarked, col.bounce_kind != BounceKind.HARD)
    session.execute(
        sa.update(SendRecord.__table__)
        .where(col.workspace_id == record.workspace_id, col.id == record.id, unmarked)
        .values(bounce_kind=str(kind), bounced_at=when, updated_at=utcnow())
    )


def _soft_bounced_messages(session: Session, workspace_id: int, address: str) -> int:
    """Soft-bounced messages to `address` within the window: distinct send records (a
    delayed and a final report of one message count once), plus unattributed reports."""
    col = BounceEvent.__table__.c
    since = utcnow() - SOFT_BOUNCE_WINDOW
    records, unattributed = session.execute(
        sa.select(
            sa.func.count(sa.distinct(col.send_record_id)),
            sa.func.count().filter(col.send_record_id.is_(None)),
        ).where(
            col.workspace_id == workspace_id,
            col.email == address,
            col.kind == BounceKind.SOFT,
            sa.func.coalesce(col.received_at, col.created_at) >= since,
        )
    ).one()
    return records + unattributed


def _suppress(
    session: Session,
    workspace_id: int,
    address: str,
    reason: SuppressionReason,
    note: str,
    poll: BouncePoll,
) -> None:
    """Suppress `address` unless it already is (an unsubscribe stays an unsubscribe)."""
    if address in poll.suppressed or suppressions.is_suppressed(
        session=session, workspace_id=workspace_id, email=address
    ):
        return
    note = " ".join(note.split())[: suppressions.NOTE_MAX_LENGTH]
    try:
        suppressions.add_suppression(
            session=session, workspace_id=workspace_id, email=address, reason=reason,
            note=note, source=Source.JOB,
        )  # fmt: skip
    except InvalidInput:
        # Not an address the list can hold (a report naming something odd): keep the event.
        log.warning("bounce for %r not suppressed: not a valid address", address)
        return
    poll.suppressed.append(address)


# --- attribution --------------------------------------------------------------------------------


def _attribute(
    session: Session, sender: SenderAccount, bounce: Bounce, recipient: BouncedRecipient
) -> SendRecord | None:
    """The send record a reported recipient is about (see the module doc), or None."""
    workspace_id = sender.workspace_id
    addresses = {_address(recipient.email)}
    if recipient.final_recipient:
        addresses.add(_address(recipient.final_recipient))
    only_one = len(bounce.recipients) == 1
    record_id = record_id_from_token(bounce.verp_token, workspace_id=workspace_id)
    if record_id is not None:
        record = session.exec(
            select(SendRecord).where(
                SendRecord.workspace_id == workspace_id, SendRecord.id == record_id
            )
        ).first()
        if record is not None and (only_one or record.email in addresses):
            return record
    if bounce.original_message_id:
        found = session.exec(
            select(SendRecord)
            .where(
                SendRecord.workspace_id == workspace_id,
                SendRecord.message_id == bounce.original_message_id[:255],
            )
            .order_by(_submitted_first(), SendRecord.id.desc())
            .limit(50)
        ).all()
        matching = [r for r in found if r.email in addresses]
        if matching or (only_one and found):
            return (matching or found)[0]
    return _recent_record(session, sender, addresses)


def _submitted_first():
    """Records that went out before those still waiting (a Message-ID is kept across
    runs of a campaign)."""
    return sa.case((SendRecord.status.in_([SendStatus.SENT, SendStatus.UNKNOWN]), 0), else_=1)


def _recent_record(
    session: Session, sender: SenderAccount, addresses: set[str]
) -> SendRecord | None:
    """The latest record this sender sent to one of `addresses` in RECENT_SEND_WINDOW."""
    when = sa.func.coalesce(SendRecord.sent_at, SendRecord.submitted_at, SendRecord.created_at)
    return session.exec(
        select(SendRecord)
        .join(CampaignRun, CampaignRun.id == SendRecord.run_id)
        .join(CampaignVersion, CampaignVersion.id == CampaignRun.version_id)
        .where(
            SendRecord.workspace_id == sender.workspace_id,
            CampaignRun.workspace_id == sender.workspace_id,
            CampaignVersion.workspace_id == sender.workspace_id,
            CampaignVersion.sender_account_id == sender.id,
            SendRecord.email.in_(sorted(addresses)),
            SendRecord.status.in_([SendStatus.SENT, SendStatus.UNKNOWN]),
            when >= utcnow() - RECENT_SEND_WINDOW,
        )
        .order_by(SendRecord.id.desc())
        .limit(1)
    ).first()
