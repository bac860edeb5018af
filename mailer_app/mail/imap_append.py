"""Copying sent messages into the sender account's Sent folder over IMAP (APPEND).

Mail sent through SMTP does not appear in the sender's mail client unless it is
also stored in the Sent folder. `append_sent` signs in once, finds that folder and
appends each message with the \\Seen flag and its Date header as the internal date,
so the client sorts it where it belongs and shows it as read.

The Sent folder is found by its RFC 6154 special-use flag (\\Sent in LIST) first,
then by the name configured on the sender account, then by the names mail servers
and clients commonly use (in several languages).

Errors: `MailboxAuthError` (the server refused the login: do not retry with the same
password), `MailboxUnavailable` (network, timeout, hang-up: retry later; when it
happens midway, `AppendInterrupted` says which messages were already stored) and
`SentFolderMissing` (a MailboxError: no folder to append to; retrying cannot help
until someone creates or names one). A message the server refuses (too big, over
quota) is reported in its own AppendResult and the others still go in.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import imaplib
import re
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from imapclient import IMAPClient
from imapclient.imap_utf7 import decode as decode_utf7

from mailer_app.mail.imap import (
    ImapEndpoint,
    MailboxAuthError,
    MailboxError,
    MailboxUnavailable,
    SeedMailbox,
)

__all__ = [
    "COMMON_SENT_NAMES",
    "AppendInterrupted",
    "AppendResult",
    "MailboxAuthError",
    "MailboxError",
    "MailboxUnavailable",
    "SentFolderMissing",
    "append_sent",
    "choose_sent_folder",
    "find_sent_folder",
    "message_date",
]

SENT_FLAG = b"\\sent"  # compared lower-cased
SEEN = b"\\Seen"
# Full paths and last segments (under INBOX or [Gmail]) that usually mean "Sent",
# most common first. Compared after NFC normalisation and casefold.
COMMON_SENT_NAMES = (
    "sent", "sent items", "sent messages", "sent mail", "[gmail]/sent mail",
    "[google mail]/sent mail", "gesendet", "gesendete objekte", "gesendete elemente",
    "[google mail]/gesendet", "envoyés", "éléments envoyés", "messages envoyés",
    "enviados", "elementos enviados", "itens enviados", "mensagens enviadas",
    "posta inviata", "inviata", "inviati", "verzonden items", "verzonden",
    "odeslaná pošta", "odeslané", "wysłane", "elementy wysłane", "skickat",
    "skickade objekt", "sendt", "sendte elementer", "sendte", "lähetetyt",
    "отправленные", "gönderilenler", "gönderilmiş öğeler", "送信済み", "送信済みメール",
    "已发送", "已傳送", "보낸편지함",
)  # fmt: skip
_PARENTS = {"inbox", "[gmail]", "[google mail]"}
_NOT_SELECTABLE = {b"\\noselect", b"\\nonexistent"}


class SentFolderMissing(MailboxError):
    """No Sent folder: none is flagged \\Sent, configured or has a usual name."""


@dataclass(frozen=True)
class AppendResult:
    """What happened to one message, in the order the messages were given."""

    ok: bool
    folder: str
    error: str | None = None  # the server's refusal, in plain words, when not ok
    uid: int | None = None  # the new message's UID, when the server says (UIDPLUS)


class AppendInterrupted(MailboxUnavailable):
    """The connection failed midway: `results` holds the messages already handled.

    The message being sent when it failed (`results` has one entry fewer than the
    messages given) may or may not be stored: the server never said.
    """

    def __init__(self, message: str, results: list[AppendResult]):
        super().__init__(message)
        self.results = results


# ---------------------------------------------------------------------------
# Finding the Sent folder


@dataclass(frozen=True)
class _Listed:
    index: int
    name: str
    flags: frozenset[bytes]
    path: str  # normalised full name, "/" as the separator
    last: str  # normalised last segment
    parent: str  # normalised first segment when nested, else ""


def choose_sent_folder(listing, configured: str | None = None) -> str:
    """The Sent folder among imapclient's list_folders() entries, or SentFolderMissing.

    Order: the \\Sent special-use flag (the configured name wins when several carry
    it), then the configured name, then the common names.
    """
    folders = [f for f in (_listed(i, entry) for i, entry in enumerate(listing)) if f]
    wanted = _normalise(configured) if configured and configured.strip() else None
    flagged = [f for f in folders if SENT_FLAG in f.flags]
    if flagged:
        return next((f.name for f in flagged if _same(f, configured, wanted)), flagged[0].name)
    if wanted is not None:
        exact = [f for f in folders if _same(f, configured, wanted)]
        if exact:
            return exact[0].name
    rank = {name: i for i, name in enumerate(COMMON_SENT_NAMES)}
    matches = []
    for f in folders:
        if f.path in rank:
            matches.append((rank[f.path], 0, f.index, f.name))
        elif f.parent in _PARENTS and f.last in rank:
            matches.append((rank[f.last], 1, f.index, f.name))
    if matches:
        return min(matches)[3]
    if wanted is not None:
        raise SentFolderMissing(
            f'The Sent folder "{configured.strip()}" set for this account does not exist, '
            "no folder is marked as Sent by the server and none has a usual Sent name. "
            "Check the folder name in the sender account's settings."
        )
    raise SentFolderMissing(
        "No Sent folder found: the server marks no folder as Sent and none has a usual "
        'name like "Sent" or "Sent Items". Create one in your mail client or enter its '
        "name in the sender account's settings."
    )


def find_sent_folder(client: IMAPClient, configured: str | None = None) -> str:
    """List the folders of a logged-in client and choose the Sent folder (see above)."""
    return choose_sent_folder(client.list_folders(), configured)


def _listed(index: int, entry) -> _Listed | None:
    raw_flags, delimiter, name = entry
    flags = frozenset(bytes(f).lower() for f in raw_flags or ())
    if flags & _NOT_SELECTABLE:
        return None
    if isinstance(name, bytes):
        name = decode_utf7(name)  # a client with folder_encode off
    name = str(name)
    if isinstance(delimiter, bytes):
        delimiter = delimiter.decode("ascii", "replace")
    segments = [_normalise(p) for p in (name.split(delimiter) if delimiter else [name])]
    return _Listed(
        index=index,
        name=name,
        flags=flags,
        path="/".join(segments),
        last=segments[-1],
        parent=segments[0] if len(segments) > 1 else "",
    )


def _same(folder: _Listed, configured: str | None, wanted: str | None) -> bool:
    if wanted is None or configured is None:
        return False
    return folder.name == configured.strip() or _normalise(folder.name) == wanted


def _normalise(name: str) -> str:
    # macOS clients create decomposed (NFD) names: "Envoyés" with a combining accent.
    return " ".join(unicodedata.normalize("NFC", name).casefold().split())


# ---------------------------------------------------------------------------
# Appending


def append_sent(
    endpoint: ImapEndpoint,
    password: str | None,
    messages: Sequence[bytes],
    configured_folder: str | None = None,
) -> list[AppendResult]:
    """Store `messages` in the Sent folder of `endpoint`'s mailbox with one login.

    `password` replaces the endpoint's when given. Each message goes in with \\Seen
    and its Date header as the internal date (the server's clock when it has none).
    Raises MailboxAuthError, MailboxUnavailable (AppendInterrupted when some were
    already stored) or SentFolderMissing; per-message refusals are in the results.
    """
    if password is not None:
        endpoint = replace(endpoint, password=password)
    messages = list(messages)
    if not messages:
        return []
    with _SentMailbox(endpoint) as mailbox:
        folder = mailbox.sent_folder(configured_folder)
        return mailbox.append_all(folder, messages)


def message_date(message: bytes) -> datetime | None:
    """The Date header of `message` as an aware datetime; None when absent or unreadable."""
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(message)
    value = headers.get("Date")
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    # "-0000" (no zone known) parses naive: the moment is UTC.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class _SentMailbox(SeedMailbox):
    """The adapter's session handling (timeouts, error mapping, password scrubbing)."""

    def sent_folder(self, configured: str | None) -> str:
        listing = self._call("listing folders", lambda c: c.list_folders())
        try:
            return choose_sent_folder(listing, configured)
        except SentFolderMissing as exc:
            raise SentFolderMissing(f"{self.endpoint.username}: {exc}") from None

    def append_all(self, folder: str, messages: list[bytes]) -> list[AppendResult]:
        results: list[AppendResult] = []
        for message in messages:
            try:
                reply = self._client.append(
                    folder, message, flags=(SEEN,), msg_time=message_date(message)
                )
            except (OSError, imaplib.IMAP4.abort) as exc:
                text = self._scrub(self._failed("storing a message in Sent", exc, self._client))
                self._fail(MailboxUnavailable(text))
                done = len(results)
                raise AppendInterrupted(
                    f"{text} {done} of {len(messages)} messages were stored before that.",
                    results,
                ) from exc
            except imaplib.IMAP4.error as exc:
                # A NO or BAD for this message (too big, over quota, bad date): the
                # session is fine, the next message may go in.
                results.append(AppendResult(False, folder, _refusal(exc, self._scrub)))
                continue
            results.append(AppendResult(True, folder, None, _append_uid(reply)))
            self.last_used = time.monotonic()
        return results


def _refusal(exc: BaseException, scrub) -> str:
    text = str(exc)
    text = re.sub(r"""b(['"])(.*?)\1""", r"\2", text)
    text = re.sub(r"^(append failed: |command: \S+ => )", "", text, flags=re.I).strip()
    return scrub(f"The server refused the message: {text or type(exc).__name__}")


def _append_uid(reply) -> int | None:
    if isinstance(reply, bytes):
        reply = reply.decode("ascii", "replace")
    match = re.search(r"\[APPENDUID \d+ (\d+)\]", str(reply or ""), re.I)
    return int(match.group(1)) if match else None
