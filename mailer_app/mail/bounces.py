"""Bounces: read a delivery report and say who bounced, how badly, and for which message.

`parse_bounce(raw)` takes one message from a sender account's bounce mailbox and returns
a `Bounce`, or None when the message is not a delivery report (an out-of-office reply,
a person's answer, a read receipt, a report that only says "delivered"). It only reads:
attributing the bounce to a send record and suppressing addresses is the service
layer's work.

How a report is read, most trustworthy first:
1. RFC 3464 delivery status notifications (a `message/delivery-status` part; Postfix,
   Sendmail, Exchange / Office 365, Gmail, most modern MTAs): each per-recipient block
   gives the address, the Action (failed / delayed), the RFC 3463 Status code and the
   remote server's reply (Diagnostic-Code).
2. Anything else that comes from a mail system (`X-Failed-Recipients`, or sent by
   MAILER-DAEMON / postmaster: Exim, qmail, old Exchange...): flufl.bounce's detectors
   name the addresses and whether the failure was temporary or permanent; the status
   code and reply are then taken from the report's text next to each address. When the
   text has no RFC 3463 code the status is "5.0.0" (or "4.0.0"), which counts as a soft
   bounce unless the reply says plainly that the mailbox does not exist (see
   `classify_status`): heuristics never suppress an address on a guess.
Messages from anyone else are never scanned with heuristics, so an auto-reply that
happens to mention an address is not a bounce.

Which message bounced: the Message-ID of the returned message (`message/rfc822` or
`text/rfc822-headers` part, or the copy quoted in the text), else the report's
In-Reply-To / References. Which send: the VERP token of the return path the report was
sent to (`bounces+TOKEN@example.com`, see `verp_address`).
"""

from __future__ import annotations

import email
import email.parser
import email.policy
import logging
import re
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses, parseaddr

from flufl.bounce import all_failures

log = logging.getLogger(__name__)

HARD, SOFT = "hard", "soft"
FAILED, DELAYED = "failed", "delayed"
DSN, HEURISTIC = "dsn", "heuristic"

_DIAGNOSTIC_MAX = 1000  # characters kept of a remote server's reply


@dataclass(frozen=True)
class BouncedRecipient:
    """One recipient a delivery report is about."""

    email: str  # the address as we sent it (Original-Recipient when given)
    status: str  # RFC 3463 enhanced status code, e.g. "5.1.1"
    action: str  # FAILED (given up) or DELAYED (still being retried)
    diagnostic: str  # the remote server's reply or the MTA's explanation, one line
    kind: str  # HARD (the address is bad: suppress) or SOFT (count it)
    reason: str  # what the status code means, in plain words
    final_recipient: str = ""  # Final-Recipient when it differs (alias, forwarding)

    @property
    def is_hard(self) -> bool:
        return self.kind == HARD


@dataclass(frozen=True)
class Bounce:
    """A delivery report: who bounced and which message it was."""

    recipients: list[BouncedRecipient] = field(default_factory=list)
    original_message_id: str | None = None  # "<...@domain>", as in the Message-ID header
    verp_token: str | None = None
    reporting_mta: str | None = None  # the mail system that wrote the report
    source: str = DSN  # DSN (RFC 3464 fields) or HEURISTIC (flufl.bounce + text)


# ---------------------------------------------------------------------------
# Hard or soft (RFC 3463 status codes: class.subject.detail)

# Permanent failures that say the ADDRESS is bad: suppress it at once.
_HARD = {
    "5.1.0": "the address was rejected",
    "5.1.1": "the mailbox does not exist",
    "5.1.2": "the domain does not exist or accepts no mail",
    "5.1.3": "the address is not a valid address",
    "5.1.4": "the address is ambiguous at the destination",
    "5.1.6": "the mailbox has moved and left no forwarding address",
    "5.1.10": "the domain accepts no mail (null MX), or the recipient was not found",
    "5.2.1": "the mailbox is disabled and accepts no mail",
    "5.4.4": "the domain has no mail server (unable to route)",
}
# Failures that do not prove the address is bad: the message failed (or is retried),
# the address stays usable and the soft bounce is counted against a threshold.
_SOFT = {
    "5.1.7": "our sender address was refused",
    "5.1.8": "our sender domain was refused",
    "5.2.2": "the mailbox is full",
    "5.2.3": "the message is larger than the mailbox accepts",
    "5.3.4": "the message is too big for the receiving system",
}
_SOFT_BY_SUBJECT = {
    "0": "permanent failure without a specific reason",
    "1": "the address was refused",
    "2": "the mailbox cannot take the message now",
    "3": "the receiving mail system has a problem",
    "4": "a network or routing problem",
    "5": "a mail protocol problem",
    "6": "the message content or format was refused",
    "7": "refused by the receiver's policy (spam filter, authentication or block list)",
}
# Only for X.0.0 / bare SMTP codes: replies that leave no doubt the mailbox is missing.
_NO_SUCH_MAILBOX = re.compile(
    r"user unknown|unknown user|unknown recipient|no such (?:user|mailbox|recipient|account)"
    r"|(?:account|mailbox|address|user|recipient)(?: that you tried to reach)? "
    r"(?:does not|doesn't) exist|recipient ?not ?found|invalid (?:recipient|mailbox)",
    re.IGNORECASE,
)
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def classify_status(status: str, diagnostic: str = "") -> tuple[str, str]:
    """(HARD or SOFT, plain reason) for an RFC 3463 status code and the server's reply.

    - 2.x.x never reaches here (not a failure); 4.x.x (persistent transient failure)
      is always SOFT, also when the MTA finally gave up on it.
    - 5.1.x (bad destination mailbox or domain) is HARD, except 5.1.7/5.1.8 (the
      *sender's* address was refused: our problem, not the recipient's) and 5.1.5/5.1.9
      (not address failures). 5.2.1 (mailbox disabled) and 5.4.4 (no route to the
      domain: it has no mail server) are HARD.
    - 5.2.2 mailbox full, 5.2.3 / 5.3.4 message too big, other 5.2.x / 5.3.x (the
      mailbox or system cannot take it), 5.4.x (network), 5.5.x (protocol), 5.6.x
      (content) and 5.7.x (policy: spam filters, DMARC, block lists) are SOFT: the
      address may be fine and suppressing it would lose a real reader.
    - 5.0.0 (permanent, cause unspecified) is SOFT unless the reply says plainly that
      the mailbox does not exist ("User unknown", "No such user"...): then HARD.
    """
    match = _ENHANCED.search(status or "")
    if not match:
        return SOFT, "unknown delivery status"
    klass, subject, detail = match.groups()
    code = f"{klass}.{subject}.{detail}"
    if klass != "5":
        return SOFT, "temporary failure: " + _SOFT_BY_SUBJECT.get(subject, "unknown reason")
    if code in _HARD:
        return HARD, _HARD[code]
    if code in _SOFT:
        return SOFT, _SOFT[code]
    if subject == "1" and detail not in {"5", "7", "8", "9"}:
        return HARD, "the address was rejected"
    if subject == "0" and _NO_SUCH_MAILBOX.search(diagnostic or ""):
        return HARD, "the mailbox does not exist"
    return SOFT, _SOFT_BY_SUBJECT.get(subject, "permanent failure of an unknown kind")


# ---------------------------------------------------------------------------
# VERP: one return path per send, so a bounce names its send by where it arrives

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,48}")


def verp_address(base_address: str, token: str) -> str:
    """`bounces@example.com` + `tok` -> `bounces+tok@example.com`.

    The token is letters, digits, `-` and `_` (lower case is safest: a few mail
    systems change the case of the address they bounce to). The base address may not
    contain `+`, so the token is everything after the first `+`.
    """
    local, at, domain = (base_address or "").strip().rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"The bounce address {base_address!r} is not an email address.")
    if "+" in local:
        raise ValueError(f"The bounce address {base_address!r} may not contain '+'.")
    if not _TOKEN.fullmatch(token or ""):
        raise ValueError("A bounce token is 1 to 48 letters, digits, '-' or '_'.")
    if len(local) + 1 + len(token) > 64:  # RFC 5321 4.5.3.1.1: local part <= 64 octets
        raise ValueError(f"The bounce address {base_address!r} is too long to carry a token.")
    return f"{local}+{token}@{domain}"


def parse_verp(address: str, *, base_address: str | None = None) -> str | None:
    """The token of a VERP address (`bounces+tok@example.com` -> `tok`), else None.

    With `base_address`, only an address made from that base counts (the part before
    `+` and the domain compared without regard to case).
    """
    addr = parseaddr(address or "")[1].strip().strip("<>")
    local, at, domain = addr.rpartition("@")
    base_local, plus, token = local.partition("+")
    if not at or not plus or not base_local or not _TOKEN.fullmatch(token):
        return None
    if base_address is not None:
        want_local, _, want_domain = base_address.strip().rpartition("@")
        if (base_local.casefold(), domain.casefold()) != (
            want_local.casefold(),
            want_domain.casefold(),
        ):
            return None
    return token


# ---------------------------------------------------------------------------
# Reading a report


def parse_bounce(raw: bytes, *, verp_base: str | None = None) -> Bounce | None:
    """The delivery report in `raw`, or None when it is not one (see the module doc).

    `verp_base` (the sender account's bounce address) limits VERP tokens to addresses
    made from it. Never raises on malformed input: a message that cannot be read as a
    report is not a bounce.
    """
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    reports = [p for p in _top_parts(msg) if p.get_content_type() in _STATUS_TYPES]
    if reports:
        blocks = [b for part in reports for b in _status_blocks(part)]
        recipients = [r for b in blocks if (r := _dsn_recipient(b)) is not None]
        mtas = [_field_value(_get(b, "Reporting-MTA")) for b in blocks]
        reporting_mta = next((mta for mta in mtas if mta), None)
        source = DSN
    elif _from_mail_system(msg):
        recipients = _heuristic_recipients(msg)
        reporting_mta = _received_by(msg)
        source = HEURISTIC
    else:
        return None
    if not recipients:
        return None  # e.g. a "delivered" / "relayed" notice, or nothing recognisable
    return Bounce(
        recipients=recipients,
        original_message_id=_original_message_id(msg, reports),
        verp_token=_verp_token(msg, reports, verp_base),
        reporting_mta=reporting_mta,
        source=source,
    )


_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
_MAIL_SYSTEM_SENDERS = {
    "mailer-daemon",
    "mailer_daemon",
    "mailerdaemon",
    "mail-daemon",
    "maildaemon",
    "postmaster",
    "mdaemon",
}


def _top_parts(msg: Message):
    """Every part of the report itself, not descending into the returned message."""
    yield msg
    if msg.get_content_maintype() == "multipart" and isinstance(msg.get_payload(), list):
        for part in msg.get_payload():
            yield from _top_parts(part)


def _status_blocks(part: Message) -> list[Message]:
    """The header blocks of a delivery-status part (per-message, then per-recipient)."""
    payload = part.get_payload()
    if isinstance(payload, list) and part.get_content_type() == "message/delivery-status":
        return [b for b in payload if isinstance(b, Message)]
    if isinstance(payload, list) and payload:
        # message/global-delivery-status is parsed like message/rfc822: the first block
        # became the headers, the other blocks its body.
        first = payload[0]
        return [first, *_blocks_from_text(_decoded_text(first, charset="utf-8"))]
    return _blocks_from_text(_decoded_text(part))  # a transfer-encoded part


def _blocks_from_text(text: str) -> list[Message]:
    parser = email.parser.HeaderParser(policy=email.policy.compat32)
    chunks = re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n"))
    return [parser.parsestr(chunk.strip("\n") + "\n") for chunk in chunks if chunk.strip()]


def _get_all(msg: Message, name: str) -> list[str]:
    """Raw header values, UTF-8 decoded (RFC 6532 reports put UTF-8 in headers)."""
    wanted = name.lower()
    return [
        value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        for key, value in msg.raw_items()
        if key.lower() == wanted and isinstance(value, str)
    ]


def _get(msg: Message, name: str) -> str:
    values = _get_all(msg, name)
    return values[0] if values else ""


def _one_line(value) -> str:
    return " ".join(str(value or "").split())


def _field_value(value) -> str:
    """`dns; mail.example.com` -> `mail.example.com` (RFC 3464 typed fields)."""
    text = _one_line(value)
    kind, semi, rest = text.partition(";")
    return (rest if semi and " " not in kind.strip() else text).strip()


def _address_field(value) -> str:
    address = _field_value(value).strip().strip("<>").strip()
    return address if "@" in address else ""


def _dsn_recipient(block: Message) -> BouncedRecipient | None:
    final = _address_field(_get(block, "Final-Recipient"))
    original = _address_field(
        _get(block, "Original-Recipient") or _get(block, "X-Actual-Recipient")
    )
    address = original or final
    if not address:
        return None  # the per-message block, or a recipient block we cannot name
    diagnostic = _smtp_reply(_field_value(_get(block, "Diagnostic-Code")))
    status = _status_code(_one_line(_get(block, "Status")), diagnostic)
    action = _one_line(_get(block, "Action")).lower()
    if action.startswith(("fail", "error")):  # OpenSMTPD writes "error"
        action = FAILED
    elif action.startswith("delay"):
        action = DELAYED
    elif action:
        return None  # delivered, relayed, expanded: not a failure
    elif status:
        action = FAILED if status.startswith("5") else DELAYED
    else:
        return None
    return _recipient(address, status, action, diagnostic, final=final)


def _recipient(
    address: str, status: str, action: str, diagnostic: str, *, final: str = ""
) -> BouncedRecipient:
    status = status or ("5.0.0" if action == FAILED else "4.0.0")
    kind, reason = classify_status(status, diagnostic)
    if action == DELAYED:
        kind = SOFT  # still being retried: it may yet be delivered
    return BouncedRecipient(
        email=address,
        status=status,
        action=action,
        diagnostic=diagnostic,
        kind=kind,
        reason=reason,
        final_recipient=final if final and final.lower() != address.lower() else "",
    )


def _status_code(status_field: str, diagnostic: str) -> str:
    """The Status field's code; a more specific code in the reply wins over X.0.0."""
    field_match = _ENHANCED.search(status_field)
    reply_match = _ENHANCED.search(diagnostic)
    if field_match and (
        field_match.group(2, 3) != ("0", "0")
        or not reply_match
        or reply_match.group(1) != field_match.group(1)
    ):
        return ".".join(field_match.groups())
    if reply_match:
        return ".".join(reply_match.groups())
    basic = re.match(r"\s*([45])\d\d\b", diagnostic)
    return f"{basic.group(1)}.0.0" if basic else ""


def _smtp_reply(text: str) -> str:
    """One line from a (possibly multi-line) SMTP reply: `550-5.1.1 a 550-5.1.1 b` -> `550
    5.1.1 a b`."""
    text = _one_line(text)
    start = re.match(r"(\d{3})[ -](?:(\d\.\d{1,3}\.\d{1,3})\s+)?", text)
    if start:
        code, enhanced = start.groups()
        repeat = rf"\s{code}[ -](?:{re.escape(enhanced)}\s+)?" if enhanced else rf"\s{code}-"
        rest = re.sub(repeat, " ", text[start.end() :])
        text = " ".join(filter(None, [code, enhanced, " ".join(rest.split())]))
    return text[:_DIAGNOSTIC_MAX]


# ---------------------------------------------------------------------------
# Reports that are not RFC 3464


def _from_mail_system(msg: Message) -> bool:
    """Sent by a mail system rather than a person (the only messages scanned with
    heuristics)."""
    if _get(msg, "X-Failed-Recipients"):
        return True
    local = parseaddr(_get(msg, "From"))[1].rpartition("@")[0] or ""
    return local.lower() in _MAIL_SYSTEM_SENDERS


_COPY_MARKER = re.compile(
    r"^[ \t]*-{2,}[ \t]*(?:This is a copy of the message|Below this line is a copy"
    r"|Original message follows|Returned message|Original message|Undelivered message)",
    re.IGNORECASE | re.MULTILINE,
)
_SMTP_LINE = re.compile(r"(?<![\d.])([45]\d\d)[ -](?:[245]\.\d{1,3}\.\d{1,3}\b)?[^\n]*")


def _heuristic_recipients(msg: Message) -> list[BouncedRecipient]:
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # a detector tripped over odd input: not a bounce we can read
        log.warning("flufl.bounce could not read a report", exc_info=True)
        return []
    text = _COPY_MARKER.split(_text_of(msg), maxsplit=1)[0]
    found = [(a.decode("ascii"), FAILED) for a in sorted(permanent)]
    found += [(a.decode("ascii"), DELAYED) for a in sorted(temporary - permanent)]
    addresses = [a for a, _ in found]
    out = []
    for address, action in found:
        reply = _reply_near(text, address, addresses)
        out.append(_recipient(address, _status_code("", reply), action, reply))
    return out


def _reply_near(text: str, address: str, addresses: list[str]) -> str:
    """The SMTP reply quoted after `address` and before the next failed address."""
    start = _find_address(text, address, 0)
    if start < 0:
        return ""
    end = min(
        [start + 800, len(text)]
        + [
            p
            for other in addresses
            if other.lower() != address.lower()
            and (p := _find_address(text, other, start + len(address))) >= 0
        ]
    )
    match = _SMTP_LINE.search(text, start, end)
    return _smtp_reply(match.group(0)) if match else ""


def _find_address(text: str, address: str, start: int) -> int:
    """Where `address` appears as a whole address (`ann@` does not match `jo.ann@`)."""
    pattern = rf"(?<![\w.+-]){re.escape(address)}(?![\w.-])"
    match = re.compile(pattern, re.IGNORECASE).search(text, start)
    return match.start() if match else -1


def _text_of(msg: Message) -> str:
    chunks = []
    for part in _top_parts(msg):
        if part.get_content_type() == "text/plain":
            chunks.append(_decoded_text(part))
    return "\n".join(chunks).replace("\r\n", "\n")


def _decoded_text(part: Message, *, charset: str | None = None) -> str:
    """A leaf part's text, transfer encoding undone; unknown charsets read as UTF-8."""
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    try:
        return data.decode(charset or part.get_content_charset() or "utf-8", "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _received_by(msg: Message) -> str | None:
    """The host that wrote the report: the top Received header's `by`, else From's domain."""
    match = re.search(r"\bby\s+([A-Za-z0-9.-]+\.[A-Za-z]{2,})", _one_line(_get(msg, "Received")))
    if match:
        return match.group(1)
    return parseaddr(_get(msg, "From"))[1].rpartition("@")[2] or None


# ---------------------------------------------------------------------------
# Which message and which send


def _returned_headers(msg: Message) -> Message | None:
    """The headers of the returned message, when the report carries them."""
    for part in _top_parts(msg):
        kind = part.get_content_type()
        if kind == "message/rfc822" and isinstance(part.get_payload(), list):
            return part.get_payload()[0]
        if kind == "text/rfc822-headers":
            text = _decoded_text(part)
            return email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text)
    quoted = _COPY_MARKER.split(_text_of(msg), maxsplit=1)
    if len(quoted) == 2:  # the copy quoted in the text (Exim, qmail)
        copy = quoted[1].split("\n", 1)[-1].lstrip("\n")
        return email.parser.HeaderParser(policy=email.policy.compat32).parsestr(copy)
    return None


def _message_id(value) -> str | None:
    ids = re.findall(r"<[^<>\s]+>", str(value or ""))
    if ids:
        return ids[-1]
    bare = _one_line(value)
    return f"<{bare}>" if "@" in bare and " " not in bare else None


def _original_message_id(msg: Message, reports: list[Message]) -> str | None:
    returned = _returned_headers(msg)
    if returned is not None and (mid := _message_id(_get(returned, "Message-ID"))):
        return mid
    for block in (b for part in reports for b in _status_blocks(part)):
        if mid := _message_id(_get(block, "X-Original-Message-ID")):
            return mid
    in_reply_to = re.findall(r"<[^<>\s]+>", _get(msg, "In-Reply-To"))
    if in_reply_to:
        return in_reply_to[0]
    return _message_id(_get(msg, "References"))  # the last one is the message answered


def _verp_token(msg: Message, reports: list[Message], verp_base: str | None) -> str | None:
    """The token of the return path the report went back to, most direct evidence first:
    the sender the MTA recorded, the returned message's Return-Path, then the report's
    own delivery headers and To."""
    candidates: list[str] = []
    for block in (b for part in reports for b in _status_blocks(part)):
        candidates.append(_field_value(_get(block, "X-Postfix-Sender")))
    returned = _returned_headers(msg)
    if returned is not None:
        candidates.append(_get(returned, "Return-Path"))
    for name in ("X-Original-To", "Delivered-To", "Envelope-To", "To"):
        values = _get_all(msg, name)
        candidates += [address for _, address in getaddresses(values)]
    for candidate in candidates:
        if candidate and (token := parse_verp(candidate, base_address=verp_base)):
            return token
    return None
