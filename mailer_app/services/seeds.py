"""Seed mailboxes: add, edit, pause, test the connection, import from CSV, seed lists.

Every rule about seeds lives here; the seed manager page, the HTTP API and the
placement engine call these functions. Passwords go to the encrypted secret store
(`services.secrets`): a seed row keeps only its `credential_ref`, and nothing this
module returns for display (`SeedRow`, `SeedListRow`) carries either.

Status changes go through `change_seed_status`, which knows the allowed moves:

    active ──► paused | auth_expired | error
    paused ──► active                               (resume)
    auth_expired / error ──► active | paused | auth_expired | error

Deleting a seed that has placement results (or alerts) is refused with a message
that says to pause it instead: those results are the history of past campaigns
and must keep pointing at a real seed. A seed without history is deleted with its
list memberships and its stored password.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from sqlmodel import Session, select

from mailer_app.mail.imap import FolderMap, ImapEndpoint, ProbeResult, probe_mailbox
from mailer_app.models import (
    AlertEvent,
    Campaign,
    PlacementResult,
    Role,
    SeedAccount,
    SeedList,
    SeedListMember,
    SeedStatus,
    Source,
    utcnow,
)
from mailer_app.services import InvalidInput, NotFoundError, audit
from mailer_app.services import secrets as secret_store
from mailer_app.services.esp import canonical_esp, imap_defaults_for
from mailer_app.services.naming import ensure_name_free
from mailer_app.settings import get_settings

# Roles that may add, change, test and delete seeds (owners always may); viewers only look.
SEED_MANAGER_ROLES = (Role.ADMIN, Role.EDITOR, Role.SENDER)

SECURITY_CHOICES = ("plain", "starttls", "tls")
_SECURITY_ALIASES = {"ssl": "tls", "ssl/tls": "tls", "none": "plain", "": ""}
EMAIL_MAX_LENGTH = 320
HOST_MAX_LENGTH = 255
PASSWORD_MAX_LENGTH = 1024
LIST_NAME_MAX_LENGTH = 200
# A host name, an IPv4 address or a bracketed/bare IPv6 address: no spaces, no slashes.
_HOST_RE = re.compile(r"^[A-Za-z0-9._:\[\]-]+$")
_LINE_BREAKS = ("\r", "\n", "\x00")

_ALLOWED_MOVES: dict[str, frozenset[str]] = {
    SeedStatus.ACTIVE: frozenset({SeedStatus.PAUSED, SeedStatus.AUTH_EXPIRED, SeedStatus.ERROR}),
    SeedStatus.PAUSED: frozenset({SeedStatus.ACTIVE}),
    SeedStatus.AUTH_EXPIRED: frozenset(
        {SeedStatus.ACTIVE, SeedStatus.PAUSED, SeedStatus.AUTH_EXPIRED, SeedStatus.ERROR}
    ),
    SeedStatus.ERROR: frozenset(
        {SeedStatus.ACTIVE, SeedStatus.PAUSED, SeedStatus.AUTH_EXPIRED, SeedStatus.ERROR}
    ),
}


class SeedNotFound(NotFoundError):
    """No seed with this id in this workspace."""


class SeedListNotFound(NotFoundError):
    """No seed list with this id in this workspace."""


# --- views ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedRow:
    """What the seed manager shows about one seed (never the password or its ref)."""

    id: int
    email: str
    esp: str
    status: str
    status_reason: str
    imap_host: str
    imap_port: int | None
    imap_security: str
    imap_username: str
    last_checked_at: datetime | None
    last_placement: str
    folder_summary: str


@dataclass(frozen=True)
class SeedListRow:
    id: int
    name: str
    seed_count: int
    seed_ids: tuple[int, ...]


@dataclass(frozen=True)
class SeedFields:
    """Checked, normalized connection settings of a seed (defaults filled in)."""

    email: str
    esp: str
    imap_host: str
    imap_port: int
    imap_security: str
    imap_username: str


# --- checking values -------------------------------------------------------------------


def _text(value: object, *, field: str, label: str, max_length: int) -> str:
    """`value` as stripped text; refuses line breaks (header/protocol injection)."""
    text = "" if value is None else str(value)
    if any(ch in text for ch in _LINE_BREAKS):
        raise InvalidInput(f"The {label} cannot contain line breaks.", field=field)
    text = text.strip()
    if len(text) > max_length:
        raise InvalidInput(
            f"The {label} is too long (at most {max_length} characters).", field=field
        )
    return text


def normalize_seed_email(email: object) -> str:
    """The seed address, syntax-checked (no DNS; lab and test domains allowed), lowercased."""
    text = _text(email, field="email", label="email address", max_length=EMAIL_MAX_LENGTH)
    if not text:
        raise InvalidInput("Enter the seed mailbox's email address.", field="email")
    try:
        # test_environment allows the reserved "test" domain; DNS is never asked.
        checked = validate_email(text, check_deliverability=False, test_environment=True)
    except EmailNotValidError:
        raise InvalidInput(
            "Enter a valid email address, like seed@gmail.com.", field="email"
        ) from None
    return checked.normalized.lower()


def check_password(password: object) -> str:
    """The mailbox password as given (not stripped: spaces can be part of it)."""
    text = "" if password is None else str(password)
    if not text.strip():
        raise InvalidInput("Enter the mailbox's password (or app password).", field="password")
    if any(ch in text for ch in _LINE_BREAKS):
        raise InvalidInput("The password cannot contain line breaks.", field="password")
    if len(text) > PASSWORD_MAX_LENGTH:
        raise InvalidInput("This password is too long.", field="password")
    return text


def _port(value: object) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = _text(value, field="imap_port", label="port", max_length=10)
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise InvalidInput("Enter a port number between 1 and 65535.", field="imap_port")
    return port


def _security(value: object) -> str:
    text = _text(value, field="imap_security", label="security", max_length=16).lower()
    text = _SECURITY_ALIASES.get(text, text)
    if text and text not in SECURITY_CHOICES:
        raise InvalidInput(
            "Choose the connection security: TLS, STARTTLS or plain.", field="imap_security"
        )
    return text


def _host(value: object) -> str:
    host = _text(value, field="imap_host", label="server name", max_length=HOST_MAX_LENGTH)
    if host and not _HOST_RE.match(host):
        raise InvalidInput("Enter the IMAP server name, like imap.example.com.", field="imap_host")
    return host


def imap_suggestion(email: str) -> tuple[str, int, str]:
    """Suggested (host, port, security) for an address, to prefill the form."""
    return imap_defaults_for(email, lab_imap_port=get_settings().lab_imap_port)


def check_seed_fields(
    *,
    email: object,
    imap_host: object = None,
    imap_port: object = None,
    imap_security: object = None,
    imap_username: object = None,
) -> SeedFields:
    """Check and normalize a seed's settings; blanks get the provider's defaults.

    Raises InvalidInput naming the field. Touches no database.
    """
    address = normalize_seed_email(email)
    host, port, security = _host(imap_host), _port(imap_port), _security(imap_security)
    username = _text(
        imap_username, field="imap_username", label="user name", max_length=EMAIL_MAX_LENGTH
    )
    default_host, default_port, default_security = imap_suggestion(address)
    host = host or default_host
    if not host:
        raise InvalidInput("Enter the IMAP server name.", field="imap_host")
    return SeedFields(
        email=address,
        esp=str(canonical_esp(address)),
        imap_host=host,
        imap_port=port or default_port,
        imap_security=security or default_security,
        imap_username=username or address,
    )


# --- seeds ------------------------------------------------------------------------------


def get_seed(*, session: Session, workspace_id: int, seed_id: int) -> SeedAccount:
    """The seed with this id in this workspace, or SeedNotFound."""
    seed = session.exec(
        select(SeedAccount).where(
            SeedAccount.workspace_id == workspace_id, SeedAccount.id == seed_id
        )
    ).first()
    if seed is None:
        raise SeedNotFound("This seed mailbox does not exist (it may have been deleted).")
    return seed


def _email_taken(session: Session, workspace_id: int, email: str) -> bool:
    return (
        session.exec(
            select(SeedAccount.id).where(
                SeedAccount.workspace_id == workspace_id, SeedAccount.email == email
            )
        ).first()
        is not None
    )


def _duplicate_message(email: str) -> str:
    return f"{email} is already a seed mailbox in this workspace."


def create_seed(
    *,
    session: Session,
    workspace_id: int,
    user_id: int | None,
    email: str,
    password: str,
    imap_host: str | None = None,
    imap_port: int | str | None = None,
    imap_security: str | None = None,
    imap_username: str | None = None,
    source: Source | str,
) -> SeedAccount:
    """Add a seed mailbox (IMAP with a password); the password goes to the secret store."""
    fields = check_seed_fields(
        email=email,
        imap_host=imap_host,
        imap_port=imap_port,
        imap_security=imap_security,
        imap_username=imap_username,
    )
    password = check_password(password)
    if _email_taken(session, workspace_id, fields.email):
        raise InvalidInput(_duplicate_message(fields.email), field="email")
    seed = _add_seed(session, workspace_id, user_id, fields, password, source)
    session.flush()
    audit.record(
        session=session,
        action="seed.create",
        source=source,
        workspace_id=workspace_id,
        user_id=user_id,
        target_type="seed_account",
        target_id=seed.id,
        details={"email": seed.email, "esp": seed.esp, "imap_host": seed.imap_host},
    )
    return seed


def _add_seed(
    session: Session,
    workspace_id: int,
    user_id: int | None,
    fields: SeedFields,
    password: str,
    source: Source | str,
) -> SeedAccount:
    """Store the password and add the (checked) seed to the session; no flush, no audit."""
    ref = secret_store.store_secret(
        session=session,
        workspace_id=workspace_id,
        value=password,
        kind="password",
        source=source,
        created_by_id=user_id,
    )
    seed = SeedAccount(
        workspace_id=workspace_id,
        email=fields.email,
        esp=fields.esp,
        imap_host=fields.imap_host,
        imap_port=fields.imap_port,
        imap_security=fields.imap_security,
        imap_username=fields.imap_username,
        credential_ref=ref,
        source=str(source),
        created_by_id=user_id,
    )
    session.add(seed)
    return seed


def update_seed(
    *,
    session: Session,
    workspace_id: int,
    seed_id: int,
    user_id: int | None,
    imap_host: str | None = None,
    imap_port: int | str | None = None,
    imap_security: str | None = None,
    imap_username: str | None = None,
    password: str | None = None,
    source: Source | str = Source.UI,
) -> SeedAccount:
    """Change a seed's connection settings; a new password only when one is given.

    Blank host/port/security/username get the provider's defaults (as when adding).
    Changed connection details forget the discovered folders, and give a seed whose
    login failed (auth_expired/error) another chance: it becomes active again.
    """
    seed = get_seed(session=session, workspace_id=workspace_id, seed_id=seed_id)
    fields = check_seed_fields(
        email=seed.email,
        imap_host=imap_host,
        imap_port=imap_port,
        imap_security=imap_security,
        imap_username=imap_username,
    )
    new_password = check_password(password) if password else None
    changed = [
        name
        for name in ("imap_host", "imap_port", "imap_security", "imap_username")
        if getattr(seed, name) != getattr(fields, name)
    ]
    for name in changed:
        setattr(seed, name, getattr(fields, name))
    if changed:
        seed.folder_map = {}
    if new_password is not None:
        if seed.credential_ref:
            secret_store.replace_secret(
                session=session,
                workspace_id=workspace_id,
                ref=seed.credential_ref,
                value=new_password,
                source=source,
                updated_by_id=user_id,
            )
        else:
            seed.credential_ref = secret_store.store_secret(
                session=session,
                workspace_id=workspace_id,
                value=new_password,
                kind="password",
                source=source,
                created_by_id=user_id,
            )
        changed.append("password")
    if changed and seed.status in (SeedStatus.AUTH_EXPIRED, SeedStatus.ERROR):
        change_seed_status(seed=seed, status=SeedStatus.ACTIVE)
    session.add(seed)
    session.flush()
    audit.record(
        session=session,
        action="seed.update",
        source=source,
        workspace_id=workspace_id,
        user_id=user_id,
        target_type="seed_account",
        target_id=seed.id,
        details={"email": seed.email, "changed": changed},
    )
    return seed


def change_seed_status(
    *, seed: SeedAccount, status: SeedStatus | str, reason: str | None = None
) -> SeedAccount:
    """Move a (loaded) seed to `status` if that move is allowed; the caller flushes.

    The one place seed statuses change. `reason` is shown next to the status
    (cleared when none is given). InvalidInput when the move is not allowed.
    """
    target = SeedStatus(status)
    current = SeedStatus(seed.status)
    if target != current and target not in _ALLOWED_MOVES[current]:
        raise InvalidInput(f"A {current.value} seed mailbox cannot become {target.value}.")
    seed.status = target.value
    seed.status_reason = (reason or "").strip()[:1000] or None
    return seed


def set_seed_paused(
    *,
    session: Session,
    workspace_id: int,
    seed_id: int,
    paused: bool,
    user_id: int | None,
    source: Source | str = Source.UI,
) -> SeedAccount:
    """Pause a seed (left out of new checks), or resume it (back to active).

    Resuming also works from auth_expired and error: the next check tries again.
    """
    seed = get_seed(session=session, workspace_id=workspace_id, seed_id=seed_id)
    before = seed.status
    change_seed_status(seed=seed, status=SeedStatus.PAUSED if paused else SeedStatus.ACTIVE)
    session.add(seed)
    session.flush()
    audit.record(
        session=session,
        action="seed.pause" if paused else "seed.resume",
        source=source,
        workspace_id=workspace_id,
        user_id=user_id,
        target_type="seed_account",
        target_id=seed.id,
        details={"email": seed.email, "from": before},
    )
    return seed


def delete_seed(
    *,
    session: Session,
    workspace_id: int,
    seed_id: int,
    user_id: int | None,
    source: Source | str = Source.UI,
) -> None:
    """Delete a seed without history, with its list memberships and stored password.

    A seed with placement results or alerts is kept (InvalidInput saying to pause it).
    """
    seed = get_seed(session=session, workspace_id=workspace_id, seed_id=seed_id)
    has_history = any(
        session.exec(
            select(model.id).where(model.workspace_id == workspace_id, model.seed_id == seed.id)
        ).first()
        is not None
        for model in (PlacementResult, AlertEvent)
    )
    if has_history:
        raise InvalidInput(
            f"{seed.email} has results from past campaigns, and deleting it would lose "
            "them. Pause it instead: a paused seed mailbox is not checked and its "
            "history stays."
        )
    session.execute(
        sa.delete(SeedListMember).where(
            SeedListMember.workspace_id == workspace_id, SeedListMember.seed_id == seed.id
        )
    )
    email, ref, target_id = seed.email, seed.credential_ref, seed.id
    session.delete(seed)
    session.flush()
    if ref:
        # A password already gone leaves nothing to protect.
        with contextlib.suppress(secret_store.SecretNotFound):
            secret_store.delete_secret(
                session=session,
                workspace_id=workspace_id,
                ref=ref,
                source=source,
                deleted_by_id=user_id,
            )
    audit.record(
        session=session,
        action="seed.delete",
        source=source,
        workspace_id=workspace_id,
        user_id=user_id,
        target_type="seed_account",
        target_id=target_id,
        details={"email": email},
    )


def folder_summary(folder_map: dict | None) -> str:
    """The discovered folders in plain words ('' before the first successful test)."""
    if not folder_map:
        return ""
    folders = FolderMap.from_json(folder_map)
    return folders.describe() if folders is not None else ""


def seed_row(seed: SeedAccount) -> SeedRow:
    return SeedRow(
        id=seed.id,
        email=seed.email,
        esp=seed.esp,
        status=seed.status,
        status_reason=seed.status_reason or "",
        imap_host=seed.imap_host or "",
        imap_port=seed.imap_port,
        imap_security=seed.imap_security or "",
        imap_username=seed.imap_username or "",
        last_checked_at=seed.last_checked_at,
        last_placement=seed.last_placement or "",
        folder_summary=folder_summary(seed.folder_map),
    )


def list_seeds(*, session: Session, workspace_id: int) -> list[SeedRow]:
    """Every seed of the workspace, by address, as display rows."""
    seeds = session.exec(
        select(SeedAccount)
        .where(SeedAccount.workspace_id == workspace_id)
        .order_by(SeedAccount.email)
    ).all()
    return [seed_row(seed) for seed in seeds]


# --- connection tests ----------------------------------------------------------------------


def endpoint_for_seed(*, session: Session, workspace_id: int, seed: SeedAccount) -> ImapEndpoint:
    """The IMAP endpoint of a seed, with its password revealed (keep it in memory only)."""
    if seed.workspace_id != workspace_id:
        raise SeedNotFound("This seed mailbox does not exist (it may have been deleted).")
    if not seed.credential_ref:
        raise InvalidInput("This seed mailbox has no saved password. Edit it to add one.")
    if not seed.imap_host or not seed.imap_port:
        raise InvalidInput("This seed mailbox has no IMAP server. Edit it to add one.")
    password = secret_store.reveal_secret(
        session=session, workspace_id=workspace_id, ref=seed.credential_ref
    )
    return ImapEndpoint(
        host=seed.imap_host,
        port=seed.imap_port,
        security=seed.imap_security or "tls",
        username=seed.imap_username or seed.email,
        password=password,
    )


def record_connection_result(
    *,
    session: Session,
    workspace_id: int,
    seed_id: int,
    result: ProbeResult,
    user_id: int | None = None,
    source: Source | str = Source.UI,
) -> SeedAccount:
    """Keep what a connection test learned about a seed.

    Success stores the folders found and revives an auth_expired/error seed; a
    refused login marks the seed auth_expired with the server's answer in plain
    words (a paused seed stays paused). An unreachable server changes no status.
    """
    seed = get_seed(session=session, workspace_id=workspace_id, seed_id=seed_id)
    seed.last_checked_at = utcnow()
    if result.ok:
        if result.folder_map is not None:
            seed.folder_map = result.folder_map.to_json()
        if seed.status in (SeedStatus.AUTH_EXPIRED, SeedStatus.ERROR):
            change_seed_status(seed=seed, status=SeedStatus.ACTIVE)
    elif result.error_kind == "auth" and seed.status != SeedStatus.PAUSED:
        change_seed_status(seed=seed, status=SeedStatus.AUTH_EXPIRED, reason=result.message)
    session.add(seed)
    session.flush()
    audit.record(
        session=session,
        action="seed.test_connection",
        source=source,
        workspace_id=workspace_id,
        user_id=user_id,
        target_type="seed_account",
        target_id=seed.id,
        details={"ok": result.ok, "error_kind": result.error_kind, "status": seed.status},
    )
    return seed


def test_seed_connection(
    *,
    session: Session,
    workspace_id: int,
    seed_id: int,
    user_id: int | None = None,
    source: Source | str = Source.UI,
) -> ProbeResult:
    """Log in to a saved seed's mailbox, list its folders and keep what was learned.

    This holds the caller's transaction open during the network round trip; the
    web page instead calls `endpoint_for_seed`, probes outside any transaction, then
    `record_connection_result`.
    """
    seed = get_seed(session=session, workspace_id=workspace_id, seed_id=seed_id)
    result = probe_mailbox(endpoint_for_seed(session=session, workspace_id=workspace_id, seed=seed))
    record_connection_result(
        session=session,
        workspace_id=workspace_id,
        seed_id=seed_id,
        result=result,
        user_id=user_id,
        source=source,
    )
    return result


test_seed_connection.__test__ = False  # a service, not a pytest test


def new_connection_endpoint(
    *,
    email: str,
    password: str,
    imap_host: str | None = None,
    imap_port: int | str | None = None,
    imap_security: str | None = None,
    imap_username: str | None = None,
) -> ImapEndpoint:
    """The endpoint for settings typed into the form (checked like create_seed does)."""
    fields = check_seed_fields(
        email=email,
        imap_host=imap_host,
        imap_port=imap_port,
        imap_security=imap_security,
        imap_username=imap_username,
    )
    return ImapEndpoint(
        host=fields.imap_host,
        port=fields.imap_port,
        security=fields.imap_security,
        username=fields.imap_username,
        password=check_password(password),
    )


def edited_connection_endpoint(
    *,
    session: Session,
    workspace_id: int,
    seed_id: int,
    imap_host: str | None = None,
    imap_port: int | str | None = None,
    imap_security: str | None = None,
    imap_username: str | None = None,
    password: str | None = None,
) -> ImapEndpoint:
    """The endpoint for unsaved edits of a seed: an empty password means the saved one."""
    seed = get_seed(session=session, workspace_id=workspace_id, seed_id=seed_id)
    if not password:
        if not seed.credential_ref:
            raise InvalidInput("Enter the mailbox's password.", field="password")
        password = secret_store.reveal_secret(
            session=session, workspace_id=workspace_id, ref=seed.credential_ref
        )
    return new_connection_endpoint(
        email=seed.email,
        password=password,
        imap_host=imap_host,
        imap_port=imap_port,
        imap_security=imap_security,
        imap_username=imap_username,
    )


def test_new_connection(
    *,
    email: str,
    password: str,
    imap_host: str | None = None,
    imap_port: int | str | None = None,
    imap_security: str | None = None,
    imap_username: str | None = None,
) -> ProbeResult:
    """Try settings before saving them (nothing is stored). InvalidInput on bad values."""
    return probe_mailbox(
        new_connection_endpoint(
            email=email,
            password=password,
            imap_host=imap_host,
            imap_port=imap_port,
            imap_security=imap_security,
            imap_username=imap_username,
        )
    )


test_new_connection.__test__ = False


# --- CSV bulk add -----------------------------------------------------------------------------

MAX_CSV_ROWS = 5000
IMPORT_AUDIT_EMAILS = 200  # addresses named in an import's audit entry
MAX_CSV_CHARS = 2_000_000
CSV_COLUMNS = ("email", "password", "imap_host", "imap_port", "imap_security", "imap_username")
_COLUMN_ALIASES = {
    "email": "email",
    "e_mail": "email",
    "email_address": "email",
    "address": "email",
    "password": "password",
    "app_password": "password",
    "imap_host": "imap_host",
    "host": "imap_host",
    "server": "imap_host",
    "imap_server": "imap_host",
    "imap_port": "imap_port",
    "port": "imap_port",
    "imap_security": "imap_security",
    "security": "imap_security",
    "imap_username": "imap_username",
    "imap_user": "imap_username",
    "username": "imap_username",
    "user": "imap_username",
    "login": "imap_username",
}
_COLUMNS_HELP = (
    "The first row must name the columns: email and password, and optionally "
    "imap_host, imap_port, imap_security and imap_username."
)


@dataclass(frozen=True)
class SeedCsvRow:
    """One data row of a seed CSV. `row_number` counts the header as row 1."""

    row_number: int
    email: str
    password: str = field(repr=False)
    imap_host: str = ""
    imap_port: int | None = None
    imap_security: str = ""
    imap_username: str = ""
    error: str | None = None


@dataclass(frozen=True)
class SeedCsvPreview:
    rows: tuple[SeedCsvRow, ...] = ()
    file_error: str | None = None
    ignored_columns: tuple[str, ...] = ()

    @property
    def valid_rows(self) -> list[SeedCsvRow]:
        return [row for row in self.rows if row.error is None]

    @property
    def error_rows(self) -> list[SeedCsvRow]:
        return [row for row in self.rows if row.error is not None]


@dataclass(frozen=True)
class ImportSummary:
    created: int
    skipped_existing: int
    errors: tuple[tuple[int, str], ...]  # (row number, message)


def _header_key(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _delimiter(first_line: str) -> str:
    # Spreadsheets in many countries save "CSV" with semicolons (or tabs).
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def parse_seed_csv(text: str) -> SeedCsvPreview:
    """Read a seed CSV into rows, each either checked or carrying its error.

    Nothing is stored. Blank lines are skipped; an address that appears twice is
    an error on its second row; more than MAX_CSV_ROWS data rows is a file error.
    """
    text = (text or "").lstrip("\ufeff")
    if len(text) > MAX_CSV_CHARS:
        return SeedCsvPreview(file_error="This file is too large. Split it into smaller files.")
    if not text.strip():
        return SeedCsvPreview(file_error="The file is empty. " + _COLUMNS_HELP)
    first_line = text.lstrip("\r\n").splitlines()[0]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(first_line))
    try:
        records = list(reader)
    except csv.Error as exc:
        return SeedCsvPreview(file_error=f"This is not a readable CSV file ({exc}).")
    numbered = [(n, r) for n, r in enumerate(records, start=1) if any(c.strip() for c in r)]
    if not numbered:
        return SeedCsvPreview(file_error="The file is empty. " + _COLUMNS_HELP)
    _, header = numbered[0]
    columns: dict[str, int] = {}
    ignored: list[str] = []
    for index, name in enumerate(header):
        key = _COLUMN_ALIASES.get(_header_key(name))
        if key is None:
            if name.strip():
                ignored.append(name.strip())
            continue
        if key in columns:
            return SeedCsvPreview(file_error=f"The column {key} appears twice in the first row.")
        columns[key] = index
    if "email" not in columns or "password" not in columns:
        return SeedCsvPreview(file_error=_COLUMNS_HELP)
    data = numbered[1:]
    if not data:
        return SeedCsvPreview(file_error="The file has a header row but no seed mailboxes.")
    if len(data) > MAX_CSV_ROWS:
        return SeedCsvPreview(
            file_error=f"This file has {len(data):,} rows; import at most {MAX_CSV_ROWS:,} "
            "at a time (split the file)."
        )
    seen: dict[str, int] = {}
    rows = []
    for number, record in data:
        row = _parse_row(number, record, columns)
        if row.error is None:
            if row.email in seen:
                row = _with_error(row, f"Same address as row {seen[row.email]}.")
            else:
                seen[row.email] = number
        rows.append(row)
    return SeedCsvPreview(rows=tuple(rows), ignored_columns=tuple(ignored))


def _with_error(row: SeedCsvRow, error: str) -> SeedCsvRow:
    return SeedCsvRow(row_number=row.row_number, email=row.email, password="", error=error)


def _parse_row(number: int, record: list[str], columns: dict[str, int]) -> SeedCsvRow:
    def cell(key: str) -> str | None:
        index = columns.get(key)
        return record[index] if index is not None and index < len(record) else None

    raw_email = (cell("email") or "").strip()
    shown_email = re.sub(r"[\r\n\x00]+", " ", raw_email)[:EMAIL_MAX_LENGTH]
    try:
        fields = check_seed_fields(
            email=raw_email,
            imap_host=cell("imap_host"),
            imap_port=cell("imap_port"),
            imap_security=cell("imap_security"),
            imap_username=cell("imap_username"),
        )
        password = check_password(cell("password"))
    except InvalidInput as exc:
        return SeedCsvRow(row_number=number, email=shown_email, password="", error=str(exc))
    return SeedCsvRow(
        row_number=number,
        email=fields.email,
        password=password,
        imap_host=fields.imap_host,
        imap_port=fields.imap_port,
        imap_security=fields.imap_security,
        imap_username=fields.imap_username,
    )


def pack_import_rows(rows: Iterable[SeedCsvRow]) -> str:
    """Checked rows as one encrypted token, to hold between preview and import.

    The page keeps this token (not the passwords) in its state until the person
    confirms the import.
    """
    payload = [
        {
            "row_number": r.row_number,
            "email": r.email,
            "password": r.password,
            "imap_host": r.imap_host,
            "imap_port": r.imap_port,
            "imap_security": r.imap_security,
            "imap_username": r.imap_username,
        }
        for r in rows
        if r.error is None
    ]
    return secret_store.encrypt_value(json.dumps(payload))


def unpack_import_rows(token: str) -> list[SeedCsvRow]:
    """The rows `pack_import_rows` sealed (an empty token gives no rows)."""
    if not token:
        return []
    return [SeedCsvRow(**item) for item in json.loads(secret_store.decrypt_value(token))]


def import_seeds(
    *,
    session: Session,
    workspace_id: int,
    user_id: int | None,
    rows: Sequence[SeedCsvRow],
    seed_list_id: int | None = None,
    source: Source | str = Source.IMPORT,
) -> ImportSummary:
    """Create the seeds of the rows that check out; report the others by row number.

    A row with an error is skipped and reported, an address that is already a seed
    is skipped and counted; every other row is created. With `seed_list_id`, the
    created and the already existing seeds are all put in that list.
    """
    seed_list = (
        _get_list(session=session, workspace_id=workspace_id, seed_list_id=seed_list_id)
        if seed_list_id is not None
        else None
    )
    existing: dict[str, int | None] = dict(
        session.exec(
            select(SeedAccount.email, SeedAccount.id).where(
                SeedAccount.workspace_id == workspace_id
            )
        ).all()
    )
    created: list[SeedAccount] = []
    skipped: list[int] = []
    errors: list[tuple[int, str]] = []
    for row in rows:
        if row.error is not None:
            errors.append((row.row_number, row.error))
            continue
        try:  # checked again: rows may come from anywhere, not only parse_seed_csv
            fields = check_seed_fields(
                email=row.email,
                imap_host=row.imap_host,
                imap_port=row.imap_port,
                imap_security=row.imap_security,
                imap_username=row.imap_username,
            )
            password = check_password(row.password)
        except InvalidInput as exc:
            errors.append((row.row_number, str(exc)))
            continue
        if fields.email in existing:
            if existing[fields.email] is None:  # twice in these rows
                errors.append((row.row_number, "This address appears twice."))
            else:
                skipped.append(existing[fields.email])
            continue
        existing[fields.email] = None
        created.append(_add_seed(session, workspace_id, user_id, fields, password, source))
    session.flush()
    if seed_list is not None:
        _add_members(session, workspace_id, seed_list.id, [s.id for s in created] + skipped, source)
    # One entry for the whole import (a seed.create entry per row would double its cost).
    audit.record(
        session=session,
        action="seed.import",
        source=source,
        workspace_id=workspace_id,
        user_id=user_id,
        details={
            "created": len(created),
            "skipped_existing": len(skipped),
            "errors": len(errors),
            "seed_list_id": seed_list_id,
            "emails": [s.email for s in created[:IMPORT_AUDIT_EMAILS]],
        },
    )
    return ImportSummary(created=len(created), skipped_existing=len(skipped), errors=tuple(errors))


# --- seed lists -------------------------------------------------------------------------------


def _get_list(*, session: Session, workspace_id: int, seed_list_id: int) -> SeedList:
    seed_list = session.exec(
        select(SeedList).where(SeedList.workspace_id == workspace_id, SeedList.id == seed_list_id)
    ).first()
    if seed_list is None:
        raise SeedListNotFound("This seed list does not exist (it may have been deleted).")
    return seed_list


def _list_name(session: Session, workspace_id: int, name: object, *, exclude_id=None) -> str:
    text = _text(name, field="name", label="list name", max_length=LIST_NAME_MAX_LENGTH)
    if not text:
        raise InvalidInput("Give the seed list a name.", field="name")
    ensure_name_free(
        session=session, model=SeedList, workspace_id=workspace_id, name=text,
        what="seed list", exclude_id=exclude_id,
    )  # fmt: skip
    return text


def create_seed_list(
    *,
    session: Session,
    workspace_id: int,
    user_id: int | None,
    name: str,
    source: Source | str = Source.UI,
) -> SeedList:
    """A new, empty seed list with a name unique in the workspace (any case)."""
    seed_list = SeedList(
        workspace_id=workspace_id,
        name=_list_name(session, workspace_id, name),
        source=str(source),
        created_by_id=user_id,
    )
    session.add(seed_list)
    session.flush()
    _audit_list(session, "seed_list.create", seed_list, user_id, source)
    return seed_list


def rename_seed_list(
    *,
    session: Session,
    workspace_id: int,
    seed_list_id: int,
    user_id: int | None,
    name: str,
    source: Source | str = Source.UI,
) -> SeedList:
    seed_list = _get_list(session=session, workspace_id=workspace_id, seed_list_id=seed_list_id)
    seed_list.name = _list_name(session, workspace_id, name, exclude_id=seed_list.id)
    session.add(seed_list)
    session.flush()
    _audit_list(session, "seed_list.rename", seed_list, user_id, source)
    return seed_list


def delete_seed_list(
    *,
    session: Session,
    workspace_id: int,
    seed_list_id: int,
    user_id: int | None,
    source: Source | str = Source.UI,
) -> None:
    """Delete a list (its seeds stay). Refused while a campaign uses it."""
    seed_list = _get_list(session=session, workspace_id=workspace_id, seed_list_id=seed_list_id)
    campaign = session.exec(
        select(Campaign.name).where(
            Campaign.workspace_id == workspace_id, Campaign.seed_list_id == seed_list.id
        )
    ).first()
    if campaign is not None:
        raise InvalidInput(
            f"The campaign {campaign} uses this seed list. Choose another list there first."
        )
    session.execute(
        sa.delete(SeedListMember).where(
            SeedListMember.workspace_id == workspace_id,
            SeedListMember.seed_list_id == seed_list.id,
        )
    )
    _audit_list(session, "seed_list.delete", seed_list, user_id, source)
    session.delete(seed_list)
    session.flush()


def _add_members(session, workspace_id, seed_list_id, seed_ids, source) -> None:
    present = set(
        session.exec(
            select(SeedListMember.seed_id).where(
                SeedListMember.workspace_id == workspace_id,
                SeedListMember.seed_list_id == seed_list_id,
            )
        ).all()
    )
    for seed_id in dict.fromkeys(seed_ids):
        if seed_id not in present:
            session.add(
                SeedListMember(
                    workspace_id=workspace_id,
                    seed_list_id=seed_list_id,
                    seed_id=seed_id,
                    source=str(source),
                )
            )
    session.flush()


def set_seed_list_members(
    *,
    session: Session,
    workspace_id: int,
    seed_list_id: int,
    seed_ids: Iterable[int],
    user_id: int | None,
    source: Source | str = Source.UI,
) -> SeedList:
    """Make the list hold exactly these seeds (SeedNotFound for another workspace's id)."""
    seed_list = _get_list(session=session, workspace_id=workspace_id, seed_list_id=seed_list_id)
    wanted = list(dict.fromkeys(int(i) for i in seed_ids))
    if wanted:
        found = set(
            session.exec(
                select(SeedAccount.id).where(
                    SeedAccount.workspace_id == workspace_id, SeedAccount.id.in_(wanted)
                )
            ).all()
        )
        if len(found) != len(wanted):
            raise SeedNotFound("One of the chosen seed mailboxes does not exist anymore.")
    session.execute(
        sa.delete(SeedListMember).where(
            SeedListMember.workspace_id == workspace_id,
            SeedListMember.seed_list_id == seed_list.id,
            SeedListMember.seed_id.not_in(wanted) if wanted else sa.true(),
        )
    )
    _add_members(session, workspace_id, seed_list.id, wanted, source)
    _audit_list(session, "seed_list.set_members", seed_list, user_id, source, count=len(wanted))
    return seed_list


def list_seed_lists(*, session: Session, workspace_id: int) -> list[SeedListRow]:
    """Every seed list of the workspace, by name, with its members' ids."""
    lists = session.exec(
        select(SeedList).where(SeedList.workspace_id == workspace_id).order_by(SeedList.name)
    ).all()
    members: dict[int, list[int]] = {}
    for seed_list_id, seed_id in session.exec(
        select(SeedListMember.seed_list_id, SeedListMember.seed_id)
        .where(SeedListMember.workspace_id == workspace_id)
        .order_by(SeedListMember.seed_id)
    ).all():
        members.setdefault(seed_list_id, []).append(seed_id)
    return [
        SeedListRow(
            id=sl.id,
            name=sl.name,
            seed_count=len(members.get(sl.id, [])),
            seed_ids=tuple(members.get(sl.id, [])),
        )
        for sl in lists
    ]


def _audit_list(session, action, seed_list, user_id, source, **extra) -> None:
    audit.record(
        session=session,
        action=action,
        source=source,
        workspace_id=seed_list.workspace_id,
        user_id=user_id,
        target_type="seed_list",
        target_id=seed_list.id,
        details={"name": seed_list.name, **extra},
    )
