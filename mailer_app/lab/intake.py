"""The lab's SMTP intake: accepts mail on 127.0.0.1 and files each recipient's copy.

For every recipient the filter decides the placement; the copy (with the trace
headers a receiving provider adds) is written into that lab mailbox's folder. A
recipient that is not a provisioned lab mailbox gets its copy in the catch-all
mailbox's INBOX, so a developer can still read everything that was sent. "drop"
copies are logged and never stored anywhere.

Like a real provider's MX, the intake answers 250 for every recipient and once the
message is filed; AUTH PLAIN/LOGIN is offered and any credentials are accepted, so
a sender account configured with a username still works against the lab.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from mailer_app.lab.accounts import has_lab_account
from mailer_app.lab.filter import (
    DROP,
    Decision,
    authentication_results,
    decide,
    esp_for_address,
    parse_message,
)
from mailer_app.lab.maildir import (
    INBOX,
    deliver,
    ensure_folders,
    maildir_path,
    normalize_address,
)

log = logging.getLogger(__name__)

CATCHALL_ADDRESS = "catchall@lab"
DATA_SIZE_LIMIT = 50 * 1024 * 1024
SERVER_NAME = "lab.mailer.local"
_FOLD_AT = 78


@dataclass(frozen=True)
class Filed:
    """What happened to one recipient's copy."""

    recipient: str
    decision: Decision
    mailbox: str | None  # the lab mailbox it was stored in; None when dropped
    folder: str | None
    path: Path | None


class LabIntakeHandler:
    """aiosmtpd handler: runs the filter and files each recipient's copy."""

    def __init__(self, lab_dir: Path, catchall: str = CATCHALL_ADDRESS):
        self.lab_dir = Path(lab_dir)
        self.catchall = catchall

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.content if isinstance(envelope.content, bytes) else b""
        client_ip = session.peer[0] if isinstance(session.peer, tuple) else ""
        queue_id = secrets.token_hex(6).upper()
        try:
            # Parsing and fsync are blocking: keep them off the event loop.
            await asyncio.to_thread(
                self.file_message,
                data,
                list(envelope.rcpt_tos),
                mail_from=envelope.mail_from or "",
                client_ip=client_ip,
                helo=session.host_name or "unknown",
                queue_id=queue_id,
            )
        except Exception:
            log.exception("lab intake: could not file message %s", queue_id)
            return "451 4.3.0 The lab could not store the message; try again"
        return f"250 2.0.0 OK: queued as {queue_id}"

    def file_message(
        self,
        data: bytes,
        recipients: list[str],
        *,
        mail_from: str = "",
        client_ip: str = "127.0.0.1",
        helo: str = "localhost",
        queue_id: str | None = None,
    ) -> list[Filed]:
        """Filter and store one message for each recipient (usable without SMTP)."""
        queue_id = queue_id or secrets.token_hex(6).upper()
        msg = parse_message(data)
        filed = []
        for rcpt in recipients:
            decision = decide(msg, rcpt)
            if decision.placement == DROP:
                log.info(
                    "lab %s: %s -> %s dropped (%s)",
                    queue_id, mail_from, rcpt, "; ".join(decision.reasons),
                )  # fmt: skip
                filed.append(Filed(rcpt, decision, None, None, None))
                continue
            if has_lab_account(self.lab_dir, rcpt):
                mailbox, folder = normalize_address(rcpt), decision.folder
            else:
                # Not a lab mailbox: keep the copy where a developer can read it.
                mailbox, folder = self.catchall, INBOX
            headers = trace_headers(
                recipient=rcpt,
                mailbox=mailbox,
                decision=decision,
                auth_results=authentication_results(msg, rcpt, client_ip),
                mail_from=mail_from,
                client_ip=client_ip,
                helo=helo,
                queue_id=queue_id,
            )
            path = self._store(mailbox, folder, headers + data)
            log.info(
                "lab %s: %s -> %s filed in %s %r (%s)",
                queue_id, mail_from, rcpt, mailbox, folder, "; ".join(decision.reasons),
            )  # fmt: skip
            filed.append(Filed(rcpt, decision, mailbox, folder, path))
        return filed

    def _store(self, mailbox: str, folder: str, data: bytes) -> Path:
        maildir = maildir_path(self.lab_dir, mailbox)
        try:
            return deliver(maildir, folder, data)
        except FileNotFoundError:
            # The account exists but its folders were removed: recreate, like a
            # provider would, rather than refuse the mail.
            ensure_folders(maildir, esp_for_address(mailbox).folders)
            return deliver(maildir, folder, data)


def trace_headers(
    *,
    recipient: str,
    mailbox: str,
    decision: Decision,
    auth_results: str,
    mail_from: str,
    client_ip: str,
    helo: str,
    queue_id: str,
    now: datetime | None = None,
) -> bytes:
    """The headers the lab prepends to its stored copy, newest first, as a provider does."""
    profile = esp_for_address(recipient)
    server = f"lab.{profile.name}"
    date = format_datetime(now or datetime.now(UTC))
    rcpt = recipient.strip("<>")
    filter_value = "; ".join(
        [decision.placement, f"esp={profile.domain or 'other'}", f"folder={decision.folder}"]
        + decision.reasons
    )
    lines = [
        _header("Return-Path", f"<{mail_from}>"),
        _header("Delivered-To", mailbox),
    ]
    if mailbox != rcpt.lower():
        lines.append(_header("X-Original-To", rcpt))
    lines += [
        _header("X-Lab-Filter", filter_value),
        _header("Authentication-Results", auth_results),
        _header(
            "Received",
            f"from {helo} ([{client_ip}]) by {server} (mailer_app lab) with ESMTP "
            f"id {queue_id} for <{rcpt}>; {date}",
        ),
    ]
    return b"".join(lines)


def _header(name: str, value: str) -> bytes:
    # Values may echo sender-controlled text: one line of printable ASCII, folded at
    # "; " so long filter explanations stay readable in a mail client.
    clean = "".join(c if 32 <= ord(c) < 127 else "?" for c in value)
    out, line = [], f"{name}: "
    for i, piece in enumerate(clean.split("; ")):
        chunk = piece if i == 0 else "; " + piece
        if i and len(line) + len(chunk) > _FOLD_AT:
            out.append(line + ";")
            line = "\t" + piece
        else:
            line += chunk
    out.append(line)
    return ("\r\n".join(out) + "\r\n").encode("ascii")


def _accept_any_login(server, session, envelope, mechanism, auth_data) -> AuthResult:
    # The lab is loopback-only and has no sender accounts of its own.
    return AuthResult(success=True)


class _HideLoginDataWarning(logging.Filter):
    # aiosmtpd 1.4 warns on every successful AUTH about its own deprecated
    # attribute; it says nothing about the lab or the sender.
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Session.login_data is deprecated")


def make_controller(lab_dir: Path, port: int, catchall: str = CATCHALL_ADDRESS) -> Controller:
    """An aiosmtpd Controller (own thread) for the intake on 127.0.0.1:port; call start()."""
    aiosmtpd_log = logging.getLogger("mail.log")
    if not any(isinstance(f, _HideLoginDataWarning) for f in aiosmtpd_log.filters):
        aiosmtpd_log.addFilter(_HideLoginDataWarning())
    return Controller(
        LabIntakeHandler(lab_dir, catchall),
        hostname="127.0.0.1",
        port=port,
        ready_timeout=5.0,
        server_hostname=SERVER_NAME,
        data_size_limit=DATA_SIZE_LIMIT,
        authenticator=_accept_any_login,
        auth_require_tls=False,
        timeout=60,
    )
