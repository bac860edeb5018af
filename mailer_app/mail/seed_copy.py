"""The copy of a campaign message that goes to one seed mailbox.

Each seed gets its own message (never CC/BCC) carrying a unique token, in a
header and in the Message-ID, so a check can find exactly that copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from mailer_app.models import utcnow

SEED_TOKEN_HEADER = "X-Mailer-Seed-Token"  # noqa: S105 (a header name)


@dataclass(frozen=True)
class SeedContent:
    subject: str
    html_body: str
    text_body: str


def seed_message_id(token: str, from_email: str) -> str:
    domain = from_email.rpartition("@")[2] or "mailer.local"
    return f"<{token}@{domain}>"


def build_seed_copy(
    *,
    content: SeedContent,
    from_name: str,
    from_email: str,
    to_email: str,
    token: str,
    reply_to: str | None = None,
) -> bytes:
    """RFC 5322 bytes of one seed's copy. Raises ValueError on CR/LF in headers."""
    message = EmailMessage()
    local, _, domain = from_email.partition("@")
    message["From"] = Address(display_name=from_name or "", username=local, domain=domain)
    message["To"] = to_email
    message["Subject"] = content.subject
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = seed_message_id(token, from_email)
    message[SEED_TOKEN_HEADER] = token
    if reply_to:
        message["Reply-To"] = reply_to
    message.set_content(content.text_body or " ")
    if content.html_body:
        message.add_alternative(content.html_body, subtype="html")
    return message.as_bytes()
