"""Where a message lands at each simulated mailbox provider: the lab's filter.

The filter is a pure, deterministic function of the message and the recipient, so a
developer can predict (and a test can assert) the folder of every copy, and every
decision carries the reasons that led to it. The rules, in the order they apply
(docs/LAB.md has the same table):

1. `X-Lab-Placement: inbox|spam|promotions|drop` header: that placement.
2. Subject token `[lab:inbox]`, `[lab:spam]`, `[lab:promo]` or `[lab:drop]`.
3. yahoo.lab: no Message-ID or no Date header: spam.
4. Spam score (one point per distinct spam phrase in subject or body, plus one
   point at outlook.lab when there is no DKIM-Signature) at or above the
   provider's threshold: spam.
5. List-Unsubscribe header plus a promotional phrase: promotions.
6. Otherwise: inbox.

"promotions" exists only at gmail.lab; elsewhere (also when forced) it becomes
inbox, and the reasons say so. The lab does not verify DKIM signatures
cryptographically: a DKIM-Signature header counts as dkim=pass.
"""

from __future__ import annotations

import email
import email.policy
import html
import ipaddress
import re
from dataclasses import dataclass, field
from email.message import Message
from email.utils import parseaddr

INBOX, SPAM, PROMOTIONS, DROP = "inbox", "spam", "promotions", "drop"
PLACEMENTS = (INBOX, SPAM, PROMOTIONS, DROP)

PLACEMENT_HEADER = "X-Lab-Placement"
SUBJECT_TOKENS = {
    "[lab:inbox]": INBOX,
    "[lab:spam]": SPAM,
    "[lab:promo]": PROMOTIONS,
    "[lab:drop]": DROP,
}

# Phrases a 2000s-era content filter would score. Matched case-insensitively as whole
# words in the subject and the text of the body; each distinct phrase counts once.
SPAM_PHRASES = (
    "viagra",
    "casino",
    "lottery",
    "jackpot",
    "you have won",
    "winner",
    "free money",
    "100% free",
    "act now",
    "click here",
    "risk-free",
    "no credit check",
    "miracle cure",
    "crypto giveaway",
    "wire transfer",
)

# What makes bulk mail look like marketing to gmail.lab (with List-Unsubscribe).
PROMO_PATTERNS = (
    ("sale", r"\bsale\b"),
    ("% off", r"\d+\s*%\s*off\b"),
    ("discount", r"\bdiscount"),
    ("coupon", r"\bcoupon"),
    ("promo code", r"\bpromo code\b"),
    ("deal", r"\bdeals?\b"),
    ("limited time", r"\blimited[- ]time\b"),
    ("shop now", r"\bshop now\b"),
    ("free shipping", r"\bfree shipping\b"),
)

# The filter reads at most this much of a message: enough for any real body text,
# and a 50 MB attachment does not make filing slow.
SCAN_BYTES = 2 * 1024 * 1024
SCAN_TEXT_CHARS = 256 * 1024


@dataclass(frozen=True)
class EspProfile:
    """One simulated mailbox provider: its folders and how strict its filter is."""

    name: str  # "gmail", "outlook", ... (the lab's own name for the provider)
    domain: str  # the lab domain its mailboxes live at
    canonical_esp: str  # the product's canonical ESP (SeedAccount.esp)
    inbox: str
    spam: str
    spam_special_use: bool  # does LIST flag the spam folder \Junk?
    sent: str | None
    promotions: str | None  # only gmail.lab has a promotions folder (the Gmail tab)
    spam_threshold: int
    no_dkim_points: int = 0
    requires_message_id_and_date: bool = False

    def folder(self, placement: str) -> str:
        """The folder a placement is filed into at this provider ("" for drop)."""
        if placement == DROP:
            return ""
        if placement == SPAM:
            return self.spam
        if placement == PROMOTIONS and self.promotions:
            return self.promotions
        return self.inbox

    @property
    def folders(self) -> list[str]:
        """Every folder a new mailbox at this provider has, INBOX first."""
        names = [self.inbox, self.spam, self.sent, self.promotions]
        return [n for n in names if n]

    @property
    def special_use(self) -> dict[str, str]:
        """Folder name -> special-use flag, as the provider's LIST reports them."""
        flags = {}
        if self.spam_special_use:
            flags[self.spam] = "\\Junk"
        if self.sent:
            flags[self.sent] = "\\Sent"
        return flags


GMAIL = EspProfile(
    name="gmail", domain="gmail.lab", canonical_esp="gmail", inbox="INBOX",
    spam="[Gmail]/Spam", spam_special_use=True, sent="[Gmail]/Sent Mail",
    promotions="Promotions", spam_threshold=4,
)  # fmt: skip
OUTLOOK = EspProfile(
    name="outlook", domain="outlook.lab", canonical_esp="outlook", inbox="INBOX",
    spam="Junk Email", spam_special_use=True, sent="Sent Items", promotions=None,
    spam_threshold=2, no_dkim_points=1,
)  # fmt: skip
YAHOO = EspProfile(
    name="yahoo", domain="yahoo.lab", canonical_esp="yahoo", inbox="INBOX",
    spam="Bulk", spam_special_use=True, sent="Sent", promotions=None,
    spam_threshold=3, requires_message_id_and_date=True,
)  # fmt: skip
# A provider whose junk folder carries no special-use flag: found only by its name.
LEGACY = EspProfile(
    name="legacy", domain="legacy.lab", canonical_esp="other", inbox="INBOX",
    spam="Spam", spam_special_use=False, sent=None, promotions=None, spam_threshold=3,
)  # fmt: skip
# Any other domain (including the catch-all mailbox): a plain, lenient provider.
OTHER = EspProfile(
    name="other", domain="", canonical_esp="other", inbox="INBOX",
    spam="Junk", spam_special_use=True, sent=None, promotions=None, spam_threshold=4,
)  # fmt: skip

LAB_ESPS = {p.domain: p for p in (GMAIL, OUTLOOK, YAHOO, LEGACY)}
ALL_PROFILES = (GMAIL, OUTLOOK, YAHOO, LEGACY, OTHER)


def esp_for_address(address: str) -> EspProfile:
    """The simulated provider of an address (by its domain); OTHER when not a lab one."""
    domain = address.rpartition("@")[2].strip().strip(">").lower()
    return LAB_ESPS.get(domain, OTHER)


@dataclass(frozen=True)
class Decision:
    """Where one copy lands, and why (reasons in the order the rules were checked)."""

    placement: str  # inbox | spam | promotions | drop
    folder: str  # provider folder name; "" for drop
    esp: str  # EspProfile.name
    reasons: list[str] = field(default_factory=list)
    spam_score: int = 0


def decide(message: bytes | Message, recipient: str) -> Decision:
    """Decide the placement of `message` in `recipient`'s mailbox (pure, deterministic)."""
    msg = parse_message(message)
    profile = esp_for_address(recipient)
    reasons: list[str] = []

    def done(placement: str, score: int = 0) -> Decision:
        if placement == PROMOTIONS and not profile.promotions:
            reasons.append(f"{_where(profile)} has no promotions folder: inbox")
            placement = INBOX
        return Decision(placement, profile.folder(placement), profile.name, reasons, score)

    forced = _override(msg, reasons)
    if forced:
        return done(forced)

    if profile.requires_message_id_and_date:
        missing = [h for h in ("Message-ID", "Date") if not _header(msg, h)]
        if missing:
            absent = " and no ".join(missing)
            reasons.append(f"no {absent} header: {_where(profile)} files it as spam")
            return done(SPAM)

    text = message_text(msg)
    score = 0
    hits = [p for p in SPAM_PHRASES if _has_phrase(text, p)]
    if hits:
        score += len(hits)
        reasons.append(f"spam phrases {', '.join(repr(h) for h in hits)} (+{len(hits)})")
    if profile.no_dkim_points and not _header(msg, "DKIM-Signature"):
        score += profile.no_dkim_points
        reasons.append(f"no DKIM-Signature (+{profile.no_dkim_points} at {_where(profile)})")
    verdict = ">=" if score >= profile.spam_threshold else "<"
    threshold = f"{_where(profile)} threshold {profile.spam_threshold}"
    reasons.append(f"spam score {score} {verdict} {threshold}")
    if score >= profile.spam_threshold:
        return done(SPAM, score)

    if _header(msg, "List-Unsubscribe"):
        promo = [label for label, pattern in PROMO_PATTERNS if re.search(pattern, text)]
        if promo:
            reasons.append(
                "bulk marketing: List-Unsubscribe and " + ", ".join(repr(p) for p in promo)
            )
            return done(PROMOTIONS, score)

    reasons.append("no rule moved it: inbox")
    return done(INBOX, score)


def authentication_results(message: bytes | Message, recipient: str, client_ip: str) -> str:
    """The value of the Authentication-Results header the lab adds to its stored copy.

    Deterministic and not cryptographic: spf=pass for loopback submissions (the
    intake listens only there), dkim=pass when a DKIM-Signature header is present,
    dmarc=pass when dkim passed.
    """
    msg = parse_message(message)
    profile = esp_for_address(recipient)
    mail_domain = parseaddr(_header(msg, "From"))[1].rpartition("@")[2].lower() or "unknown"
    spf = "pass" if _is_loopback(client_ip) else "none"
    parts = [f"lab.{profile.name}", f"spf={spf} smtp.client-ip={client_ip or 'unknown'}"]
    signature = _header(msg, "DKIM-Signature")
    if signature:
        match = re.search(r"\bd\s*=\s*([^;\s]+)", signature)
        signer = match.group(1).lower() if match else mail_domain
        parts.append(f"dkim=pass header.d={signer}")
        parts.append(f"dmarc=pass header.from={mail_domain}")
    else:
        parts.append("dkim=none")
        parts.append(f"dmarc=none header.from={mail_domain}")
    return "; ".join(parts)


def parse_message(message: bytes | Message) -> Message:
    """An email Message from bytes (only the first SCAN_BYTES are read) or as given."""
    if isinstance(message, Message):
        return message
    return email.message_from_bytes(bytes(message[:SCAN_BYTES]), policy=email.policy.default)


def message_text(msg: Message) -> str:
    """Subject plus the text of the text/* parts, lower case, HTML tags removed."""
    chunks = [_header(msg, "Subject")]
    size = len(chunks[0])
    for part in msg.walk():
        if part.get_content_maintype() != "text" or part.is_multipart():
            continue
        if part.get_content_disposition() == "attachment":
            continue
        body = _part_text(part)
        if part.get_content_subtype() == "html":
            body = html.unescape(re.sub(r"<[^>]*>", " ", body))
        chunks.append(body)
        size += len(body)
        if size >= SCAN_TEXT_CHARS:
            break
    return " ".join(chunks)[:SCAN_TEXT_CHARS].lower()


def _override(msg: Message, reasons: list[str]) -> str | None:
    value = _header(msg, PLACEMENT_HEADER).strip().lower()
    if value in PLACEMENTS:
        reasons.append(f"forced by {PLACEMENT_HEADER}: {value}")
        return value
    if value:
        allowed = ", ".join(PLACEMENTS)
        reasons.append(f"ignored {PLACEMENT_HEADER}: {_printable(value)!r} (not one of {allowed})")
    subject = _header(msg, "Subject").lower()
    for token, placement in SUBJECT_TOKENS.items():
        if token in subject:
            reasons.append(f"forced by subject token {token}")
            return placement
    return None


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception:  # a malformed header must not stop filing; treat it as absent
        return ""
    return str(value) if value is not None else ""


def _part_text(part: Message) -> str:
    try:
        content = part.get_content()
        return content if isinstance(content, str) else ""
    except Exception:  # unknown charset or broken encoding: read it leniently
        payload = part.get_payload(decode=True) or b""
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def _has_phrase(text: str, phrase: str) -> bool:
    # Word boundaries only where the phrase starts/ends with a word character, so
    # "100% free" and "risk-free" match as written.
    left = r"\b" if phrase[0].isalnum() else ""
    right = r"\b" if phrase[-1].isalnum() else ""
    return re.search(left + re.escape(phrase) + right, text) is not None


def _where(profile: EspProfile) -> str:
    return profile.domain or "non-lab domains"


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def _printable(value: str, limit: int = 40) -> str:
    # Reasons end up in a header of the stored copy: keep them short, one line, ASCII.
    return "".join(c for c in value if 32 <= ord(c) < 127)[:limit]
