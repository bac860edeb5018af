"""Sender accounts: the mailboxes campaigns and pre-flight tests go out from.

Every rule about sender accounts lives here; the sender accounts page, the HTTP
API, the wizard and the sending engine call these functions. Passwords (SMTP and
the optional IMAP one) go to the encrypted secret store: a sender row keeps only
`credential_ref` / `imap_credential_ref`, and nothing returned for display
(`SenderRow`, `SenderChoice`) carries a password or a ref.

Header values (the from name, addresses) are refused at input when they hold a
line break or another control character: they end up in message headers, where a
line break would let someone add headers of their own.

Status changes go through `change_sender_status`:

    active ──► paused | auth_failed
    paused ──► active
    auth_failed ──► active | paused | auth_failed

Deleting a sender that a campaign or a placement run refers to is refused with a
message that says which (their history must keep pointing at a real sender).
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import asdict, dataclass

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from sqlmodel import Session, SQLModel, select

from mailer_app.logs import register_secret
from mailer_app.mail.dkim import (
    DkimKeyError,
    DkimSigner,
    check_domain,
    check_selector,
    load_private_key,
    split_txt,
)
from mailer_app.mail.imap import ImapEndpoint, ProbeResult, probe_mailbox
from mailer_app.mail.smtp import SmtpEndpoint, SmtpProbe, probe_smtp
from mailer_app.models import (
    Campaign,
    CampaignVersion,
    PlacementRun,
    Role,
    SenderAccount,
    Source,
)
from mailer_app.services import InvalidInput, NotFoundError, ServiceError, audit
from mailer_app.services import secrets as secret_store
from mailer_app.services.naming import ensure_name_free
from mailer_app.settings import Settings, get_settings

# Roles that may add, change, test and delete sender accounts (owners always may).
SENDER_MANAGER_ROLES = (Role.ADMIN, Role.EDITOR, Role.SENDER)
SECURITY_CHOICES = ("plain", "starttls", "tls")
_SECURITY_ALIASES = {"ssl": "tls", "ssl/tls": "tls", "none": "plain", "": ""}
DEFAULT_SMTP_PORTS = {"tls": 465, "starttls": 587, "plain": 25}
DEFAULT_IMAP_PORTS = {"tls": 993, "starttls": 143, "plain": 143}
ACTIVE, PAUSED, AUTH_FAILED = "active", "paused", "auth_failed"
_ALLOWED_MOVES = {
    ACTIVE: {PAUSED, AUTH_FAILED},
    PAUSED: {ACTIVE},
    AUTH_FAILED: {ACTIVE, PAUSED, AUTH_FAILED},
}
NAME_MAX_LENGTH = 200
EMAIL_MAX_LENGTH = 320
HOST_MAX_LENGTH = 255
PASSWORD_MAX_LENGTH = 1024
PROBE_TIMEOUT = 15.0  # seconds per step of a connection test
# Upper bounds catch typos and keep values inside the integer columns.
MAX_RATE = {"rate_per_second": 10_000, "rate_per_minute": 1_000_000, "rate_per_hour": 100_000_000}
_HOST_RE = re.compile(r"^[A-Za-z0-9._:\[\]-]+$")
_LINE_BREAKS = ("\r", "\n", "\x85", "\u2028", "\u2029")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SenderNotFound(NotFoundError):
    """No sender account with this id in this workspace."""


# --- views ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SenderChoice:
    id: int
    name: str
    from_email: str
    status: str


@dataclass(frozen=True)
class SenderRow:
    """What the sender accounts page shows about one sender (never a password or ref)."""

    id: int
    name: str
    from_name: str
    from_email: str
    reply_to: str
    smtp_host: str
    smtp_port: int
    smtp_security: str
    smtp_username: str
    has_password: bool
    imap_host: str
    imap_port: int | None
    imap_security: str
    imap_username: str
    has_imap_password: bool
    rate_per_second: float | None
    rate_per_minute: int | None
    rate_per_hour: int | None
    status: str
    status_reason: str


@dataclass(frozen=True)
class ProviderPreset:
    """Server settings of a well-known provider, to prefill the form (still editable)."""

    key: str
    label: str
    smtp_host: str
    smtp_port: int
    smtp_security: str
    imap_host: str
    imap_port: int
    imap_security: str
    hint: str


PROVIDER_PRESETS = (
    ProviderPreset(
        "gmail", "Gmail / Google Workspace", "smtp.gmail.com", 587, "starttls",
        "imap.gmail.com", 993, "tls",
        "Use an app password (Google Account → Security → 2-Step Verification → App "
        "passwords); Google refuses your normal password here. The user name is your "
        "full Gmail address.",
    ),
    ProviderPreset(
        "outlook", "Outlook / Microsoft 365", "smtp.office365.com", 587, "starttls",
        "outlook.office365.com", 993, "tls",
        "The user name is your full address. For Microsoft 365, an administrator may "
        "have to allow sending with a password (SMTP AUTH) for this mailbox.",
    ),
    ProviderPreset(
        "yahoo", "Yahoo Mail", "smtp.mail.yahoo.com", 465, "tls",
        "imap.mail.yahoo.com", 993, "tls",
        "Use an app password (Yahoo Account security → Generate app password). The "
        "user name is your full Yahoo address.",
    ),
    ProviderPreset(
        "custom", "Another provider", "", 587, "starttls", "", 993, "tls",
        "Your provider's help pages list its SMTP server (“outgoing mail server”), "
        "its port and the kind of encryption.",
    ),
)  # fmt: skip


def provider_presets(settings: Settings | None = None) -> list[ProviderPreset]:
    """The presets offered in the form; in development with the lab, the lab too."""
    settings = settings or get_settings()
    presets = list(PROVIDER_PRESETS)
    if settings.is_dev and settings.lab_enabled:
        presets.insert(
            -1,
            ProviderPreset(
                "lab", "Local mail lab (development)", "127.0.0.1", settings.lab_smtp_port,
                "plain", "", 993, "tls",
                "The lab on this computer accepts any user name and password (or none).",
            ),
        )  # fmt: skip
    return presets


# --- checking values ----------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionFields:
    """Checked server settings (SMTP, and IMAP when `imap_host` is set)."""

    smtp_host: str
    smtp_port: int
    smtp_security: str
    smtp_username: str | None
    imap_host: str | None
    imap_port: int | None
    imap_security: str | None
    imap_username: str | None


@dataclass(frozen=True)
class SenderFields:
    """Every checked, normalized setting of a sender account except its passwords."""

    name: str
    from_name: str
    from_email: str
    reply_to: str | None
    rate_per_second: float | None
    rate_per_minute: int | None
    rate_per_hour: int | None
    connection: ConnectionFields

    def columns(self) -> dict[str, object]:
        values = {k: v for k, v in asdict(self).items() if k != "connection"}
        return {**values, **asdict(self.connection)}


def _text(value: object, *, field: str, label: str, max_length: int) -> str:
    """`value` as stripped text; refuses line breaks and control characters."""
    text = "" if value is None else str(value)
    if any(ch in text for ch in _LINE_BREAKS):
        raise InvalidInput(f"The {label} cannot contain line breaks.", field=field)
    if _CONTROL.search(text):
        raise InvalidInput(f"The {label} cannot contain control characters.", field=field)
    text = text.strip()
    if len(text) > max_length:
        raise InvalidInput(
            f"The {label} is too long (at most {max_length} characters).", field=field
        )
    return text


def _address(value: object, *, field: str, label: str, required: bool) -> str | None:
    text = _text(value, field=field, label=label, max_length=EMAIL_MAX_LENGTH)
    if not text:
        if required:
            raise InvalidInput(f"Enter the {label}.", field=field)
        return None
    try:
        # Syntax only (no DNS); test_environment accepts reserved test domains.
        checked = validate_email(text, check_deliverability=False, test_environment=True)
    except EmailNotValidError:
        raise InvalidInput(f"Enter a valid {label}, like news@example.com.", field=field) from None
    return checked.normalized


def _security(value: object, *, field: str, default: str) -> str:
    text = _text(value, field=field, label="security", max_length=16).lower()
    text = _SECURITY_ALIASES.get(text, text) or default
    if text not in SECURITY_CHOICES:
        raise InvalidInput("Choose the encryption: TLS, STARTTLS or none.", field=field)
    return text


def _port(value: object, *, field: str, default: int) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    text = _text(value, field=field, label="port", max_length=10)
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise InvalidInput("Enter a port number between 1 and 65535.", field=field)
    return port


def _host(value: object, *, field: str, label: str, required: bool) -> str | None:
    host = _text(value, field=field, label="server name", max_length=HOST_MAX_LENGTH)
    if host and not _HOST_RE.match(host):
        raise InvalidInput(f"Enter the {label}'s name, like smtp.example.com.", field=field)
    if not host and required:
        raise InvalidInput(f"Enter the {label}'s name, like smtp.example.com.", field=field)
    return host.lower() or None


def _rate(value: object, *, field: str, whole: bool) -> float | int | None:
    """A sending limit: empty for none, else a number above 0 (whole per minute/hour)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = _text(value, field=field, label="limit", max_length=20)
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise InvalidInput("Enter a number above 0, or leave it empty for no limit.", field=field)
    if whole:
        if number != int(number):
            raise InvalidInput("Enter a whole number, or leave it empty for no limit.", field=field)
        number = int(number)
    if number > MAX_RATE[field]:
        raise InvalidInput(f"Enter at most {MAX_RATE[field]:,}.", field=field)
    return number


def check_password(password: object, *, field: str = "password") -> str:
    """A password as given (not stripped: spaces can be part of it)."""
    text = "" if password is None else str(password)
    if not text.strip():
        raise InvalidInput("Enter the password (or app password).", field=field)
    if any(ch in text for ch in (*_LINE_BREAKS, "\x00")):
        raise InvalidInput("The password cannot contain line breaks.", field=field)
    if len(text) > PASSWORD_MAX_LENGTH:
        raise InvalidInput("This password is too long.", field=field)
    return text


def check_connection_fields(
    *, smtp_host: object, smtp_port: object = None, smtp_security: object = None,
    smtp_username: object = None, imap_host: object = None, imap_port: object = None,
    imap_security: object = None, imap_username: object = None,
    default_imap_username: str | None = None,
) -> ConnectionFields:  # fmt: skip
    """Check the server settings. IMAP is on when a server name, port or user name is
    given; its user name defaults to the SMTP one. InvalidInput names the field."""
    security = _security(smtp_security, field="smtp_security", default="starttls")
    username = _text(
        smtp_username, field="smtp_username", label="user name", max_length=EMAIL_MAX_LENGTH
    )
    smtp = {
        "smtp_host": _host(smtp_host, field="smtp_host", label="mail server", required=True),
        "smtp_port": _port(smtp_port, field="smtp_port", default=DEFAULT_SMTP_PORTS[security]),
        "smtp_security": security,
        "smtp_username": username or None,
    }
    host = _host(imap_host, field="imap_host", label="IMAP server", required=False)
    port_text = "" if imap_port is None else str(imap_port).strip()
    imap_user = _text(
        imap_username, field="imap_username", label="IMAP user name", max_length=EMAIL_MAX_LENGTH
    )
    if not (host or port_text or imap_user):
        return ConnectionFields(**smtp, imap_host=None, imap_port=None, imap_security=None,
                                imap_username=None)  # fmt: skip
    if not host:
        raise InvalidInput(
            "Enter the IMAP server's name, like imap.example.com.", field="imap_host"
        )
    imap_security = _security(imap_security, field="imap_security", default="tls")
    imap_user = imap_user or username or (default_imap_username or "")
    if not imap_user:
        raise InvalidInput("Enter the IMAP user name.", field="imap_username")
    return ConnectionFields(
        **smtp,
        imap_host=host,
        imap_port=_port(imap_port, field="imap_port", default=DEFAULT_IMAP_PORTS[imap_security]),
        imap_security=imap_security,
        imap_username=imap_user,
    )


def check_sender_fields(
    *, name: object, from_email: object, smtp_host: object, from_name: object = "",
    reply_to: object = None, smtp_port: object = None, smtp_security: object = None,
    smtp_username: object = None, imap_host: object = None, imap_port: object = None,
    imap_security: object = None, imap_username: object = None,
    rate_per_second: object = None, rate_per_minute: object = None,
    rate_per_hour: object = None,
) -> SenderFields:  # fmt: skip
    """Check and normalize every setting (no database). InvalidInput names the field."""
    label = _text(name, field="name", label="name", max_length=NAME_MAX_LENGTH)
    if not label:
        raise InvalidInput("Give the sender account a name, like “Newsletter”.", field="name")
    address = _address(from_email, field="from_email", label="from address", required=True)
    return SenderFields(
        name=label,
        from_name=_text(from_name, field="from_name", label="sender name", max_length=200),
        from_email=address,
        reply_to=_address(reply_to, field="reply_to", label="reply-to address", required=False),
        rate_per_second=_rate(rate_per_second, field="rate_per_second", whole=False),
        rate_per_minute=_rate(rate_per_minute, field="rate_per_minute", whole=True),
        rate_per_hour=_rate(rate_per_hour, field="rate_per_hour", whole=True),
        connection=check_connection_fields(
            smtp_host=smtp_host, smtp_port=smtp_port, smtp_security=smtp_security,
            smtp_username=smtp_username, imap_host=imap_host, imap_port=imap_port,
            imap_security=imap_security, imap_username=imap_username,
            default_imap_username=address,
        ),
    )  # fmt: skip


def _check_name_free(session: Session, workspace_id: int, name: str, exclude_id=None) -> None:
    ensure_name_free(
        session=session, model=SenderAccount, workspace_id=workspace_id, name=name,
        what="sender account", exclude_id=exclude_id,
    )  # fmt: skip


def _optional_password(value: object, field: str) -> str | None:
    return check_password(value, field=field) if value not in (None, "") else None


# --- sender accounts ------------------------------------------------------------------------


def get_sender(*, session: Session, workspace_id: int, sender_id: int) -> SenderAccount:
    """The sender account with this id in this workspace, or SenderNotFound."""
    sender = session.exec(
        select(SenderAccount).where(
            SenderAccount.workspace_id == workspace_id, SenderAccount.id == sender_id
        )
    ).first()
    if sender is None:
        raise SenderNotFound("This sender account does not exist (it may have been deleted).")
    return sender


def sender_row(sender: SenderAccount) -> SenderRow:
    return SenderRow(
        id=sender.id,
        name=sender.name,
        from_name=sender.from_name or "",
        from_email=sender.from_email,
        reply_to=sender.reply_to or "",
        smtp_host=sender.smtp_host,
        smtp_port=sender.smtp_port,
        smtp_security=sender.smtp_security,
        smtp_username=sender.smtp_username or "",
        has_password=bool(sender.credential_ref),
        imap_host=sender.imap_host or "",
        imap_port=sender.imap_port,
        imap_security=sender.imap_security or "",
        imap_username=sender.imap_username or "",
        has_imap_password=bool(sender.imap_credential_ref),
        rate_per_second=sender.rate_per_second,
        rate_per_minute=sender.rate_per_minute,
        rate_per_hour=sender.rate_per_hour,
        status=sender.status,
        status_reason=sender.status_reason or "",
    )


def list_senders(*, session: Session, workspace_id: int) -> list[SenderChoice]:
    """The workspace's sender accounts, by name (no credentials)."""
    rows = session.exec(
        select(SenderAccount)
        .where(SenderAccount.workspace_id == workspace_id)
        .order_by(SenderAccount.name)
    )
    return [SenderChoice(s.id, s.name, s.from_email, s.status) for s in rows]


def list_sender_rows(*, session: Session, workspace_id: int) -> list[SenderRow]:
    """Every sender account of the workspace, by name, as display rows."""
    rows = session.exec(
        select(SenderAccount)
        .where(SenderAccount.workspace_id == workspace_id)
        .order_by(sa.func.lower(SenderAccount.name))
    )
    return [sender_row(s) for s in rows]


def create_sender(
    *, session: Session, workspace_id: int, user_id: int | None, name: str,
    from_email: str, smtp_host: str, smtp_port: int | str | None = None,
    smtp_security: str | None = None, smtp_username: str | None = None,
    password: str | None = None, from_name: str | None = "", reply_to: str | None = None,
    imap_host: str | None = None, imap_port: int | str | None = None,
    imap_security: str | None = None, imap_username: str | None = None,
    imap_password: str | None = None, rate_per_second: float | str | None = None,
    rate_per_minute: int | str | None = None, rate_per_hour: int | str | None = None,
    source: Source | str = Source.UI,
) -> SenderAccount:  # fmt: skip
    """Add a sender account; its passwords go to the secret store.

    A password needs a user name and a user name needs a password; IMAP (when set)
    needs its own password.
    """
    fields = check_sender_fields(
        name=name, from_email=from_email, from_name=from_name, reply_to=reply_to,
        smtp_host=smtp_host, smtp_port=smtp_port, smtp_security=smtp_security,
        smtp_username=smtp_username, imap_host=imap_host, imap_port=imap_port,
        imap_security=imap_security, imap_username=imap_username,
        rate_per_second=rate_per_second, rate_per_minute=rate_per_minute,
        rate_per_hour=rate_per_hour,
    )  # fmt: skip
    conn = fields.connection
    smtp_password = _optional_password(password, "password")
    new_imap_password = _optional_password(imap_password, "imap_password")
    _check_passwords(conn, smtp_password, new_imap_password, has_smtp=False, has_imap=False)
    _check_name_free(session, workspace_id, fields.name)
    sender = SenderAccount(
        workspace_id=workspace_id,
        created_by_id=user_id,
        source=str(source),
        **fields.columns(),
    )
    if conn.smtp_username:
        sender.credential_ref = _store(session, workspace_id, smtp_password, user_id, source)
    if conn.imap_host:
        sender.imap_credential_ref = _store(
            session, workspace_id, new_imap_password, user_id, source
        )
    session.add(sender)
    session.flush()
    _audit(session, "sender.create", sender, user_id, source, smtp_host=sender.smtp_host,
           from_email=sender.from_email, imap=bool(sender.imap_host))  # fmt: skip
    return sender


def _check_passwords(
    conn: ConnectionFields,
    password: str | None,
    imap_password: str | None,
    *,
    has_smtp: bool,
    has_imap: bool,
) -> None:
    if password and not conn.smtp_username:
        raise InvalidInput(
            "Enter the user name that goes with this password.", field="smtp_username"
        )
    if conn.smtp_username and not (password or has_smtp):
        raise InvalidInput("Enter the password for this user name.", field="password")
    if conn.imap_host and not (imap_password or has_imap):
        raise InvalidInput(
            "Enter the IMAP password (usually the same as above).", field="imap_password"
        )


def _store(session, workspace_id, value, user_id, source) -> str:
    return secret_store.store_secret(
        session=session,
        workspace_id=workspace_id,
        value=value,
        kind="password",
        source=source,
        created_by_id=user_id,
    )


def _set_secret(session, sender, column, value, user_id, source) -> None:
    """Put `value` behind the sender's ref in `column` (a new ref when it has none)."""
    ref = getattr(sender, column)
    if ref:
        try:
            secret_store.replace_secret(
                session=session, workspace_id=sender.workspace_id, ref=ref, value=value,
                source=source, updated_by_id=user_id,
            )  # fmt: skip
            return
        except secret_store.SecretNotFound:
            pass  # the stored password went missing: store a new one
    setattr(sender, column, _store(session, sender.workspace_id, value, user_id, source))


def _drop_secret(session, sender, column, user_id, source) -> None:
    ref = getattr(sender, column)
    setattr(sender, column, None)
    if ref:
        with contextlib.suppress(secret_store.SecretNotFound):
            secret_store.delete_secret(
                session=session, workspace_id=sender.workspace_id, ref=ref, source=source,
                deleted_by_id=user_id,
            )  # fmt: skip


def update_sender(
    *, session: Session, workspace_id: int, sender_id: int, user_id: int | None,
    name: str, from_email: str, smtp_host: str, smtp_port: int | str | None = None,
    smtp_security: str | None = None, smtp_username: str | None = None,
    password: str | None = None, from_name: str | None = "", reply_to: str | None = None,
    imap_host: str | None = None, imap_port: int | str | None = None,
    imap_security: str | None = None, imap_username: str | None = None,
    imap_password: str | None = None, rate_per_second: float | str | None = None,
    rate_per_minute: int | str | None = None, rate_per_hour: int | str | None = None,
    source: Source | str = Source.UI,
) -> SenderAccount:  # fmt: skip
    """Replace a sender's settings; an empty password keeps the saved one.

    An empty user name (or IMAP server) turns sign-in (or IMAP) off and deletes the
    password saved for it. Changed server settings or a new password give a sender
    whose sign-in failed another chance: it becomes active again.
    """
    sender = get_sender(session=session, workspace_id=workspace_id, sender_id=sender_id)
    fields = check_sender_fields(
        name=name, from_email=from_email, from_name=from_name, reply_to=reply_to,
        smtp_host=smtp_host, smtp_port=smtp_port, smtp_security=smtp_security,
        smtp_username=smtp_username, imap_host=imap_host, imap_port=imap_port,
        imap_security=imap_security, imap_username=imap_username,
        rate_per_second=rate_per_second, rate_per_minute=rate_per_minute,
        rate_per_hour=rate_per_hour,
    )  # fmt: skip
    conn = fields.connection
    new_password = _optional_password(password, "password")
    new_imap_password = _optional_password(imap_password, "imap_password")
    _check_passwords(
        conn, new_password, new_imap_password,
        has_smtp=bool(sender.credential_ref), has_imap=bool(sender.imap_credential_ref),
    )  # fmt: skip
    _check_name_free(session, workspace_id, fields.name, exclude_id=sender.id)
    changed = [k for k, v in fields.columns().items() if getattr(sender, k) != v]
    for key in changed:
        setattr(sender, key, fields.columns()[key])
    if not conn.smtp_username:
        if sender.credential_ref:
            changed.append("password")
        _drop_secret(session, sender, "credential_ref", user_id, source)
    elif new_password is not None:
        _set_secret(session, sender, "credential_ref", new_password, user_id, source)
        changed.append("password")
    if not conn.imap_host:
        if sender.imap_credential_ref:
            changed.append("imap_password")
        _drop_secret(session, sender, "imap_credential_ref", user_id, source)
    elif new_imap_password is not None:
        _set_secret(session, sender, "imap_credential_ref", new_imap_password, user_id, source)
        changed.append("imap_password")
    connection_keys = {*asdict(conn), "password"}
    if sender.status == AUTH_FAILED and connection_keys.intersection(changed):
        change_sender_status(sender=sender, status=ACTIVE)
    session.add(sender)
    session.flush()
    _audit(session, "sender.update", sender, user_id, source, changed=changed)
    return sender


def change_sender_status(
    *, sender: SenderAccount, status: str, reason: str | None = None
) -> SenderAccount:
    """Move a (loaded) sender to `status` if allowed; the caller flushes.

    The one place sender statuses change. `reason` is shown next to the status.
    """
    if status not in _ALLOWED_MOVES:
        raise InvalidInput(f"{status} is not a sender account status.")
    current = sender.status if sender.status in _ALLOWED_MOVES else ACTIVE
    if status != current and status not in _ALLOWED_MOVES[current]:
        raise InvalidInput(f"A sender account that is {current} cannot become {status}.")
    sender.status = status
    sender.status_reason = (reason or "").strip()[:1000] or None
    return sender


def _uses(session: Session, workspace_id: int, sender_id: int) -> str | None:
    """Why this sender cannot be deleted (plain words), or None."""
    names = set(
        session.exec(
            select(Campaign.name).where(
                Campaign.workspace_id == workspace_id, Campaign.sender_account_id == sender_id
            )
        ).all()
    )
    version_sender = getattr(CampaignVersion, "sender_account_id", None)
    if version_sender is not None:  # campaign versions carry their own sender
        names.update(
            session.exec(
                select(Campaign.name)
                .join(CampaignVersion, CampaignVersion.campaign_id == Campaign.id)
                .where(Campaign.workspace_id == workspace_id, version_sender == sender_id)
            ).all()
        )
    if names:
        listed = ", ".join(sorted(names)[:3]) + (", …" if len(names) > 3 else "")
        which = f"The campaign {listed} uses" if len(names) == 1 else f"Campaigns {listed} use"
        return f"{which} this sender account. Choose another sender there first."
    runs = session.exec(
        select(sa.func.count(PlacementRun.id)).where(
            PlacementRun.workspace_id == workspace_id, PlacementRun.sender_account_id == sender_id
        )
    ).one()
    if runs:
        tests = "placement test" if runs == 1 else "placement tests"
        return (
            f"This sender account sent {runs} {tests}; their results refer to it, so it "
            "cannot be deleted. You can still edit it."
        )
    known = {"campaign", "campaign_version", "placement_run"}
    for table in SQLModel.metadata.sorted_tables:  # anything added later that refers to it
        for fk in table.foreign_keys:
            if fk.column.table.name == "sender_account" and table.name not in known:
                used = session.execute(
                    sa.select(sa.func.count()).select_from(table).where(fk.parent == sender_id)
                ).scalar_one()
                if used:
                    return f"Other records ({table.name}) refer to this sender account."
    return None


def delete_sender(
    *,
    session: Session,
    workspace_id: int,
    sender_id: int,
    user_id: int | None,
    source: Source | str = Source.UI,
) -> None:
    """Delete a sender account and its saved passwords; refused (InvalidInput saying
    why) while a campaign or a placement run refers to it."""
    sender = get_sender(session=session, workspace_id=workspace_id, sender_id=sender_id)
    why = _uses(session, workspace_id, sender.id)
    if why:
        raise InvalidInput(why)
    _drop_secret(session, sender, "credential_ref", user_id, source)
    _drop_secret(session, sender, "imap_credential_ref", user_id, source)
    _drop_secret(session, sender, "dkim_key_ref", user_id, source)
    _audit(session, "sender.delete", sender, user_id, source)
    session.delete(sender)
    session.flush()


def _audit(session, action, sender, user_id, source, **details) -> None:
    audit.record(
        session=session,
        action=action,
        source=source,
        workspace_id=sender.workspace_id,
        user_id=user_id,
        target_type="sender_account",
        target_id=sender.id,
        details={"name": sender.name, **details},
    )


# --- connection tests ------------------------------------------------------------------------


@dataclass(frozen=True)
class SenderEndpoints:
    """Where to connect, with revealed passwords: keep in memory only, briefly."""

    smtp: SmtpEndpoint
    imap: ImapEndpoint | None


@dataclass(frozen=True)
class SenderTestResult:
    ok: bool
    smtp: SmtpProbe
    imap: ProbeResult | None
    message: str  # both parts in plain words

    @property
    def error_kind(self) -> str | None:
        if not self.smtp.ok:
            return self.smtp.error_kind
        if self.imap is not None and not self.imap.ok:
            return f"imap_{self.imap.error_kind}"
        return None


def _endpoints(conn: ConnectionFields, password: str | None, imap_password: str | None):
    smtp = SmtpEndpoint(
        host=conn.smtp_host,
        port=conn.smtp_port,
        security=conn.smtp_security,
        username=conn.smtp_username,
        password=password if conn.smtp_username else None,
        timeout=PROBE_TIMEOUT,
    )
    imap = None
    if conn.imap_host:
        imap = ImapEndpoint(
            host=conn.imap_host,
            port=conn.imap_port,
            security=conn.imap_security,
            username=conn.imap_username,
            password=imap_password or "",
            timeout=PROBE_TIMEOUT,
        )
    return SenderEndpoints(smtp, imap)


def edited_sender_endpoints(
    *, session: Session, workspace_id: int, sender_id: int,
    smtp_host: str, smtp_port: int | str | None = None, smtp_security: str | None = None,
    smtp_username: str | None = None, password: str | None = None,
    imap_host: str | None = None, imap_port: int | str | None = None,
    imap_security: str | None = None, imap_username: str | None = None,
    imap_password: str | None = None, from_email: str | None = None,
) -> SenderEndpoints:  # fmt: skip
    """Endpoints for unsaved edits of a sender: an empty password means the saved one."""
    sender = get_sender(session=session, workspace_id=workspace_id, sender_id=sender_id)
    conn = check_connection_fields(
        smtp_host=smtp_host, smtp_port=smtp_port, smtp_security=smtp_security,
        smtp_username=smtp_username, imap_host=imap_host, imap_port=imap_port,
        imap_security=imap_security, imap_username=imap_username,
        default_imap_username=(from_email or "").strip() or sender.from_email,
    )  # fmt: skip
    smtp_password = _optional_password(password, "password")
    new_imap_password = _optional_password(imap_password, "imap_password")
    _check_passwords(
        conn, smtp_password, new_imap_password,
        has_smtp=bool(sender.credential_ref), has_imap=bool(sender.imap_credential_ref),
    )  # fmt: skip
    if conn.smtp_username and smtp_password is None:
        smtp_password = _reveal(session, sender.workspace_id, sender.credential_ref)
    if conn.imap_host and new_imap_password is None:
        new_imap_password = _reveal(session, sender.workspace_id, sender.imap_credential_ref)
    return _endpoints(conn, smtp_password, new_imap_password)


def saved_sender_endpoints(
    *, session: Session, workspace_id: int, sender_id: int
) -> SenderEndpoints:
    """Endpoints of a saved sender, with its passwords revealed."""
    sender = get_sender(session=session, workspace_id=workspace_id, sender_id=sender_id)
    smtp = SmtpEndpoint(
        host=sender.smtp_host,
        port=sender.smtp_port,
        security=sender.smtp_security,
        username=sender.smtp_username or None,
        password=_reveal(session, workspace_id, sender.credential_ref),
        timeout=PROBE_TIMEOUT,
    )
    imap = None
    if sender.imap_host and sender.imap_port:
        imap = ImapEndpoint(
            host=sender.imap_host,
            port=sender.imap_port,
            security=sender.imap_security or "tls",
            username=sender.imap_username or sender.from_email,
            password=_reveal(session, workspace_id, sender.imap_credential_ref) or "",
            timeout=PROBE_TIMEOUT,
        )
    return SenderEndpoints(smtp, imap)


def _reveal(session: Session, workspace_id: int, ref: str | None) -> str | None:
    if not ref:
        return None
    return secret_store.reveal_secret(session=session, workspace_id=workspace_id, ref=ref)


def probe_sender(endpoints: SenderEndpoints) -> SenderTestResult:
    """Connect to the SMTP server (and IMAP, when set) and sign in; sends nothing."""
    smtp = probe_smtp(endpoints.smtp)
    imap = probe_mailbox(endpoints.imap) if endpoints.imap is not None else None
    parts = [smtp.message if smtp.ok or imap is None else f"Sending: {smtp.message}"]
    if imap is not None:
        where = f"{endpoints.imap.host}:{endpoints.imap.port}"
        parts.append(
            f"Mailbox (IMAP) at {where}: signed in as {endpoints.imap.username}."
            if imap.ok
            else f"Mailbox (IMAP): {imap.message}"
        )
    ok = smtp.ok and (imap is None or imap.ok)
    return SenderTestResult(ok=ok, smtp=smtp, imap=imap, message=" ".join(parts))


def record_sender_test(
    *,
    session: Session,
    workspace_id: int,
    sender_id: int,
    result: SenderTestResult,
    user_id: int | None = None,
    source: Source | str = Source.UI,
) -> SenderAccount:
    """Keep what a test of a saved sender learned: a refused SMTP sign-in marks it
    auth_failed with the server's answer (a paused one stays paused); a successful
    sign-in revives an auth_failed one. Unreachable servers change nothing."""
    sender = get_sender(session=session, workspace_id=workspace_id, sender_id=sender_id)
    if result.smtp.ok and sender.status == AUTH_FAILED:
        change_sender_status(sender=sender, status=ACTIVE)
    elif result.smtp.error_kind == "auth" and sender.status != PAUSED:
        change_sender_status(sender=sender, status=AUTH_FAILED, reason=result.smtp.message)
    session.add(sender)
    session.flush()
    _audit(session, "sender.test_connection", sender, user_id, source, ok=result.ok,
           error_kind=result.error_kind, status=sender.status)  # fmt: skip
    return sender


def test_sender_connection(
    *,
    session: Session,
    workspace_id: int,
    sender_id: int,
    user_id: int | None = None,
    source: Source | str = Source.UI,
) -> SenderTestResult:
    """Test a saved sender and keep the result (see record_sender_test).

    This holds the caller's transaction open during the network round trips; the
    web page instead calls saved_sender_endpoints, probes outside any transaction,
    then record_sender_test.
    """
    endpoints = saved_sender_endpoints(
        session=session, workspace_id=workspace_id, sender_id=sender_id
    )
    result = probe_sender(endpoints)
    record_sender_test(
        session=session, workspace_id=workspace_id, sender_id=sender_id, result=result,
        user_id=user_id, source=source,
    )  # fmt: skip
    return result


test_sender_connection.__test__ = False  # a service, not a pytest test


def test_new_sender_connection(
    *,
    smtp_host: str, smtp_port: int | str | None = None, smtp_security: str | None = None,
    smtp_username: str | None = None, password: str | None = None,
    imap_host: str | None = None, imap_port: int | str | None = None,
    imap_security: str | None = None, imap_username: str | None = None,
    imap_password: str | None = None, from_email: str | None = None,
) -> SenderTestResult:  # fmt: skip
    """Try settings before saving them (nothing is stored). InvalidInput on bad values.

    `from_email` is the IMAP user name when neither user name is given.
    """
    conn = check_connection_fields(
        smtp_host=smtp_host, smtp_port=smtp_port, smtp_security=smtp_security,
        smtp_username=smtp_username, imap_host=imap_host, imap_port=imap_port,
        imap_security=imap_security, imap_username=imap_username,
        default_imap_username=(from_email or "").strip() or None,
    )  # fmt: skip
    smtp_password = _optional_password(password, "password")
    new_imap_password = _optional_password(imap_password, "imap_password")
    _check_passwords(conn, smtp_password, new_imap_password, has_smtp=False, has_imap=False)
    return probe_sender(_endpoints(conn, smtp_password, new_imap_password))


test_new_sender_connection.__test__ = False


# --- DKIM ------------------------------------------------------------------------------------
#
# A sender account may sign its messages with DKIM: a domain (d=), a selector (s=) and
# a private key, which goes to the secret store (kind "dkim_key"); the row keeps only
# `dkim_key_ref`. The domain must be the from address's domain or a domain it belongs
# to, so the signature counts for DMARC (relaxed alignment).


@dataclass(frozen=True)
class DkimDnsRecord:
    """The TXT record a sender's DKIM key needs in DNS (no private material)."""

    name: str  # "<selector>._domainkey.<domain>"
    value: str  # "v=DKIM1; k=rsa; p=..."
    strings: tuple[str, ...]  # `value` in pieces of at most 255 characters
    domain: str
    selector: str
    algorithm: str  # rsa | ed25519
    bits: int
    advice: tuple[str, ...]  # plain-language notes (a short key, Ed25519 support)
    type: str = "TXT"


def _from_domain(sender: SenderAccount) -> str:
    return check_domain(sender.from_email.rpartition("@")[2])


def _dkim_checked(check, value, field):
    try:
        return check(value)
    except DkimKeyError as exc:
        raise InvalidInput(str(exc), field=field) from None


def _check_aligned(sender: SenderAccount, domain: str) -> None:
    from_domain = _from_domain(sender)
    if domain == from_domain or from_domain.endswith("." + domain):
        return
    parent = from_domain.split(".", 1)[1] if from_domain.count(".") > 1 else None
    choices = f"{from_domain} or {parent}" if parent else from_domain
    raise InvalidInput(
        f"The DKIM domain must be {choices}: the domain of the from address "
        f"({sender.from_email}) or a domain it belongs to. Receivers only count a DKIM "
        "signature for DMARC when its domain matches the from address.",
        field="dkim_domain",
    )


def set_dkim_key(
    *,
    session: Session,
    workspace_id: int,
    sender_id: int,
    domain: str,
    selector: str,
    private_key_pem: str | None,
    user_id: int | None,
    source: Source | str = Source.UI,
) -> SenderAccount:
    """Sign this sender's messages with DKIM under `domain` and `selector`.

    The key is a PEM private key (RSA of 1024-4096 bits, 2048 recommended, or
    Ed25519), stored encrypted. An empty key keeps the saved one (to change only the
    domain or selector). InvalidInput, naming the field, in plain words otherwise.
    """
    sender = get_sender(session=session, workspace_id=workspace_id, sender_id=sender_id)
    dkim_domain = _dkim_checked(check_domain, domain, "dkim_domain")
    _check_aligned(sender, dkim_domain)
    dkim_selector = _dkim_checked(check_selector, selector, "dkim_selector")
    new_key = None
    if private_key_pem is not None and str(private_key_pem).strip():
        register_secret(str(private_key_pem).strip())  # as pasted: masked in any log line
        new_key = _dkim_checked(load_private_key, private_key_pem, "dkim_private_key")
        pem = new_key.pem
    elif sender.dkim_key_ref:
        pem = _reveal_dkim_key(session, sender)
    else:
        raise InvalidInput(
            "Paste the private key (the text starting with -----BEGIN).",
            field="dkim_private_key",
        )
    # The signer checks what the key alone cannot (Ed25519 needs PyNaCl here).
    signer = _dkim_checked(
        lambda key: DkimSigner(dkim_domain, dkim_selector, key), pem, "dkim_private_key"
    )
    if new_key is not None:
        _store_dkim_key(session, sender, new_key.pem, user_id, source)
    sender.dkim_domain = dkim_domain
    sender.dkim_selector = dkim_selector
    session.add(sender)
    session.flush()
    _audit(session, "sender.dkim_set", sender, user_id, source, domain=dkim_domain,
           selector=dkim_selector, algorithm=signer.key.algorithm, bits=signer.key.bits,
           new_key=new_key is not None)  # fmt: skip
    return sender


def _store_dkim_key(session, sender, pem, user_id, source) -> None:
    if sender.dkim_key_ref:
        try:
            secret_store.replace_secret(
                session=session, workspace_id=sender.workspace_id, ref=sender.dkim_key_ref,
                value=pem, source=source, updated_by_id=user_id,
            )  # fmt: skip
            return
        except secret_store.SecretNotFound:
            pass  # the stored key went missing: store a new one
    sender.dkim_key_ref = secret_store.store_secret(
        session=session, workspace_id=sender.workspace_id, value=pem, kind="dkim_key",
        source=source, created_by_id=user_id,
    )  # fmt: skip


def _reveal_dkim_key(session: Session, sender: SenderAccount) -> str:
    try:
        return secret_store.reveal_secret(
            session=session, workspace_id=sender.workspace_id, ref=sender.dkim_key_ref
        )
    except secret_store.SecretNotFound:
        raise ServiceError(
            f"The DKIM key of the sender account “{sender.name}” is missing. Add the key "
            "again on the sender accounts page, or turn DKIM off there."
        ) from None


def clear_dkim_key(
    *,
    session: Session,
    workspace_id: int,
    sender_id: int,
    user_id: int | None,
    source: Source | str = Source.UI,
) -> SenderAccount:
    """Stop signing this sender's messages; its stored key is deleted."""
    sender = get_sender(session=session, workspace_id=workspace_id, sender_id=sender_id)
    had = bool(sender.dkim_key_ref or sender.dkim_domain or sender.dkim_selector)
    _drop_secret(session, sender, "dkim_key_ref", user_id, source)
    sender.dkim_domain = None
    sender.dkim_selector = None
    session.add(sender)
    session.flush()
    if had:
        _audit(session, "sender.dkim_clear", sender, user_id, source)
    return sender


def dkim_dns_record(*, session: Session, workspace_id: int, sender_id: int) -> DkimDnsRecord | None:
    """The DNS record to publish for this sender's DKIM key, or None without a key."""
    signer = dkim_signer_for(session=session, workspace_id=workspace_id, sender_id=sender_id)
    if signer is None:
        return None
    value = signer.public_dns_record()
    return DkimDnsRecord(
        name=signer.dns_name,
        value=value,
        strings=tuple(split_txt(value)),
        domain=signer.domain,
        selector=signer.selector,
        algorithm=signer.key.algorithm,
        bits=signer.key.bits,
        advice=tuple(signer.key.advice),
    )


def dkim_signer_for(*, session: Session, workspace_id: int, sender_id: int) -> DkimSigner | None:
    """The signer for this sender's messages, or None when it has no DKIM key.

    ServiceError (plain words) when the saved key is missing or no longer usable:
    the caller should not send unsigned what the user asked to sign.
    """
    sender = get_sender(session=session, workspace_id=workspace_id, sender_id=sender_id)
    if not (sender.dkim_key_ref and sender.dkim_domain and sender.dkim_selector):
        return None
    pem = _reveal_dkim_key(session, sender)
    try:
        return DkimSigner(sender.dkim_domain, sender.dkim_selector, pem)
    except DkimKeyError as exc:
        raise ServiceError(
            f"The DKIM settings of the sender account “{sender.name}” cannot be used: {exc}"
        ) from None
