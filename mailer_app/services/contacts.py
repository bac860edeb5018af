"""Contact lists, their CSV imports, and the recipients campaigns send to.

- **Lists** have a name unique in the workspace (any case) and `field_names`: the
  custom fields their imports brought, which templates use as merge fields.
- **Imports** (PRODUCT.md, Contacts): the person uploads a CSV (kept under
  `settings.contact_uploads_dir(workspace)`, at most CONTACTS_MAX_UPLOAD_MB),
  sees its first rows (`preview_csv`), maps its columns to email / first name /
  last name / custom fields (`suggest_mapping`, `check_mapping`), and
  `start_contact_import` queues the job that streams the file into the list
  (`services.contact_import`). `import_progress` is what the page shows.
- **Addresses** are checked for syntax only (no DNS) and lowercased: the
  lowercased address is the deduplication key, within a file and within a list.
  An address already in the list is **updated** by a new import (its non-empty
  values replace the stored ones; empty cells keep them); the second and later
  rows of one address in the same file are reported as duplicates.
- **Recipients** (`iter_recipients`, `count_recipients`): the active contacts of
  some lists, each address once, minus suppressed addresses (PRODUCT.md: they are
  excluded at build time). `iter_recipients_flagged` yields the suppressed ones
  too, with their reason, for the build's `excluded` report.
"""

from __future__ import annotations

import keyword
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from sqlmodel import Session, select

from mailer_app.db import after_commit
from mailer_app.models import (
    BuiltMessage,
    Campaign,
    CampaignVersion,
    Contact,
    ContactImport,
    ContactList,
    Role,
    Source,
    Suppression,
    utcnow,
)
from mailer_app.services import InvalidInput, NotFoundError, audit, templating
from mailer_app.services.contact_csv import (
    CsvFileError,
    FileTooLarge,
    RowError,
    file_size_text,
    open_contact_csv,
)
from mailer_app.services.naming import ensure_name_free
from mailer_app.settings import get_settings

# Roles that may change lists and import contacts (owners always may).
CONTACT_MANAGER_ROLES = (Role.ADMIN, Role.EDITOR, Role.SENDER)

LIST_NAME_MAX_LENGTH = 200
NAME_MAX_LENGTH = 200  # first and last names (longer values are cut)
EMAIL_MAX_LENGTH = 320
MAX_CUSTOM_FIELDS = 50
FIELD_NAME_MAX_LENGTH = 64
UPLOAD_KEEP_SECONDS = 7 * 24 * 3600  # uploads no import uses are deleted after this

STANDARD_TARGETS = ("email", "first_name", "last_name")
TARGET_LABELS = {"email": "Email address", "first_name": "First name", "last_name": "Last name"}
# Header names recognised when suggesting a mapping (compared lowercased, without
# spaces, dashes, dots and underscores).
_ALIASES = {
    "email": {"email", "emailaddress", "mail", "e-mail", "emailadresse", "correo", "courriel"},
    "first_name": {"firstname", "first", "givenname", "forename", "vorname", "prenom"},
    "last_name": {"lastname", "last", "surname", "familyname", "nachname", "nom"},
}
_JINJA_WORDS = {"true", "false", "none", "loop", "self", "super", "caller", "varargs", "kwargs"}


class ContactListNotFound(NotFoundError):
    """No contact list with this id in this workspace."""


class ContactImportNotFound(NotFoundError):
    """No contact import with this id in this workspace."""


# --- addresses -----------------------------------------------------------------------

# A conservative subset of what email-validator accepts (lowercase ASCII dot-atom,
# hostname labels without "--", a letters-only top-level domain, 64 characters at
# most so no label or part can be too long). Addresses outside it get the full
# check; tests/unit/test_contact_csv.py proves the subset agrees with it. The full
# check costs about 40 µs, which would make a million-row import crawl.
FAST_EMAIL = re.compile(
    r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[a-z0-9]+(?:-[a-z0-9]+)*\.)+[a-z]+"
)
FAST_EMAIL_MAX = 64
SPECIAL_DOMAINS = tuple("." + d for d in SPECIAL_USE_DOMAIN_NAMES if d != "test")


def normalize_contact_email(value: object) -> str:
    """The address, syntax-checked (no DNS), lowercased; InvalidInput(field="email") if not."""
    text = "" if value is None else str(value)
    email = text.strip().lower()
    fast = len(email) <= FAST_EMAIL_MAX and FAST_EMAIL.fullmatch(email)
    if fast and not email.endswith(SPECIAL_DOMAINS):
        return email
    return full_email_check(text)


def full_email_check(text: str) -> str:
    """email-validator's syntax check of `text` (no DNS), lowercased; InvalidInput if bad."""
    text = text.strip()
    if not text:
        raise InvalidInput("There is no email address.", field="email")
    shown = re.sub(r"[\x00-\x1f\x7f]+", " ", text)[:80]
    if len(text) > EMAIL_MAX_LENGTH:
        raise InvalidInput(f"“{shown}…” is too long to be an email address.", field="email")
    try:
        # test_environment allows the reserved "test" domain; DNS is never asked.
        checked = validate_email(text, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise InvalidInput(
            f"“{shown}” is not a valid email address: {exc}", field="email"
        ) from None
    return checked.normalized.lower()


# --- lists -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContactListRow:
    id: int
    name: str
    contact_count: int
    field_names: list[str]


def get_contact_list(*, session: Session, workspace_id: int, list_id: int) -> ContactList:
    """The list with this id in this workspace, or ContactListNotFound."""
    contact_list = session.exec(
        select(ContactList).where(
            ContactList.workspace_id == workspace_id, ContactList.id == list_id
        )
    ).first()
    if contact_list is None:
        raise ContactListNotFound("This contact list does not exist (it may have been deleted).")
    return contact_list


def _list_name(session: Session, workspace_id: int, name: object, *, exclude_id=None) -> str:
    text = " ".join(("" if name is None else str(name)).split())
    if not text:
        raise InvalidInput("Give the list a name.", field="name")
    if len(text) > LIST_NAME_MAX_LENGTH:
        raise InvalidInput(
            f"The list name is too long (at most {LIST_NAME_MAX_LENGTH} characters).",
            field="name",
        )
    ensure_name_free(
        session=session, model=ContactList, workspace_id=workspace_id, name=text, what="list",
        exclude_id=exclude_id,
    )  # fmt: skip
    return text


def create_contact_list(
    *,
    session: Session,
    workspace_id: int,
    user_id: int | None,
    name: str,
    source: Source | str = Source.UI,
) -> ContactList:
    """A new, empty list with a name unique in the workspace (any case)."""
    contact_list = ContactList(
        workspace_id=workspace_id,
        name=_list_name(session, workspace_id, name),
        source=str(source),
        created_by_id=user_id,
    )
    session.add(contact_list)
    session.flush()
    _audit_list(session, "contact_list.create", contact_list, user_id, source)
    return contact_list


def rename_contact_list(
    *,
    session: Session,
    workspace_id: int,
    list_id: int,
    user_id: int | None,
    name: str,
    source: Source | str = Source.UI,
) -> ContactList:
    contact_list = get_contact_list(session=session, workspace_id=workspace_id, list_id=list_id)
    contact_list.name = _list_name(session, workspace_id, name, exclude_id=contact_list.id)
    session.add(contact_list)
    session.flush()
    _audit_list(session, "contact_list.rename", contact_list, user_id, source)
    return contact_list


def delete_contact_list(
    *,
    session: Session,
    workspace_id: int,
    list_id: int,
    user_id: int | None,
    source: Source | str = Source.UI,
) -> None:
    """Delete a list with its contacts and imports (and their files).

    Refused while an import into it runs, or while a campaign's recipients use it.
    """
    contact_list = get_contact_list(session=session, workspace_id=workspace_id, list_id=list_id)
    if _active_import(session, workspace_id, list_id) is not None:
        raise InvalidInput("An import into this list is still running; wait until it ends.")
    for campaign, recipients in session.exec(
        select(Campaign.name, CampaignVersion.recipients)
        .join(Campaign, Campaign.id == CampaignVersion.campaign_id)
        .where(CampaignVersion.workspace_id == workspace_id, Campaign.archived_at.is_(None))
    ).all():
        if list_id in _ids((recipients or {}).get("list_ids")):
            raise InvalidInput(
                f"The campaign {campaign} sends to this list. Choose other recipients there "
                "first (or archive the campaign)."
            )
    imports = session.exec(
        select(ContactImport).where(
            ContactImport.workspace_id == workspace_id, ContactImport.list_id == list_id
        )
    ).all()
    folder = get_settings().contact_uploads_dir(workspace_id)
    count = session.exec(
        select(sa.func.count())
        .select_from(Contact)
        .where(Contact.workspace_id == workspace_id, Contact.list_id == list_id)
    ).one()
    in_list = select(Contact.id).where(
        Contact.workspace_id == workspace_id, Contact.list_id == list_id
    )
    # Built messages keep their own copy of the recipient's data: they stay (an archived
    # campaign's review still shows them) but no longer point at a contact.
    session.execute(
        sa.update(BuiltMessage)
        .where(BuiltMessage.workspace_id == workspace_id, BuiltMessage.contact_id.in_(in_list))
        .values(contact_id=None)
    )
    session.execute(
        sa.delete(Contact).where(Contact.workspace_id == workspace_id, Contact.list_id == list_id)
    )
    for item in imports:
        for name in (item.stored_name, item.report_name):
            if name:
                (folder / name).unlink(missing_ok=True)
        session.delete(item)
    _audit_list(session, "contact_list.delete", contact_list, user_id, source, contacts=count)
    session.delete(contact_list)
    session.flush()


def _ids(value: object) -> set[int]:
    found = set()
    for item in value if isinstance(value, list | tuple) else []:
        try:
            found.add(int(item))
        except (TypeError, ValueError):
            continue
    return found


def list_contact_lists(*, session: Session, workspace_id: int) -> list[ContactListRow]:
    """Every list of the workspace, by name, with its number of contacts."""
    list_ids = select(ContactList.id).where(ContactList.workspace_id == workspace_id)
    counts = dict(
        session.exec(
            select(Contact.list_id, sa.func.count())
            .where(Contact.workspace_id == workspace_id, Contact.list_id.in_(list_ids))
            .group_by(Contact.list_id)
        ).all()
    )
    lists = session.exec(
        select(ContactList)
        .where(ContactList.workspace_id == workspace_id)
        .order_by(sa.func.lower(ContactList.name))
    ).all()
    return [
        ContactListRow(
            id=cl.id,
            name=cl.name,
            contact_count=counts.get(cl.id, 0),
            field_names=list(cl.field_names or []),
        )
        for cl in lists
    ]


def _audit_list(session, action, contact_list, user_id, source, **extra) -> None:
    audit.record(
        session=session,
        action=action,
        source=source,
        workspace_id=contact_list.workspace_id,
        user_id=user_id,
        target_type="contact_list",
        target_id=contact_list.id,
        details={"name": contact_list.name, **extra},
    )


# --- one contact ---------------------------------------------------------------------------

FIELD_VALUE_MAX_LENGTH = 1000


class ContactNotFound(NotFoundError):
    """No contact with this id in this workspace."""


def get_contact(*, session: Session, workspace_id: int, contact_id: int) -> Contact:
    """The contact with this id in this workspace, or ContactNotFound."""
    contact = session.exec(
        select(Contact).where(Contact.workspace_id == workspace_id, Contact.id == contact_id)
    ).first()
    if contact is None:
        raise ContactNotFound("This contact does not exist (its list may have been deleted).")
    return contact


def editable_field_names(*, session: Session, contact: Contact) -> list[str]:
    """The custom fields a person may edit on this contact: its list's fields, in the
    list's order, then any other field the contact has (by name)."""
    contact_list = session.get(ContactList, contact.list_id)
    names = list((contact_list.field_names if contact_list is not None else None) or [])
    names += sorted(set(contact.fields or {}) - set(names))
    return names


def _as_text(value: Any) -> str:
    return "" if value is None else str(value)


def update_contact(
    *,
    session: Session,
    workspace_id: int,
    contact_id: int,
    first_name: str,
    last_name: str,
    fields: Mapping[str, str],
    user_id: int | None,
    source: Source | str = Source.UI,
) -> Contact:
    """Change a contact's names and custom field values (not its address, the key it is
    deduplicated and suppressed by).

    The same rules as an import: names may not hold line breaks or control
    characters (they go into the To header); field values are stripped, at most
    FIELD_VALUE_MAX_LENGTH characters, and an empty one is left out (templates see
    the field as missing). Only fields of the contact's list, or that the contact
    already has, may be set; fields not given keep their values. InvalidInput names
    the form field at fault; ContactNotFound outside the workspace. A change is
    recorded in the audit log (the names of the fields changed, not their values).
    """
    contact = get_contact(session=session, workspace_id=workspace_id, contact_id=contact_id)
    first = templating.check_header_value(
        first_name or "", field="first_name", max_length=NAME_MAX_LENGTH
    )
    last = templating.check_header_value(
        last_name or "", field="last_name", max_length=NAME_MAX_LENGTH
    )
    allowed = set(editable_field_names(session=session, contact=contact))
    current = dict(contact.fields or {})
    updated = dict(current)
    for name, raw in fields.items():
        if name not in allowed:
            raise InvalidInput(
                f"This contact has no field called {name}; import it into the list first.",
                field=f"field-{name}",
            )
        if raw is not None and not isinstance(raw, str):
            raise InvalidInput(f"The value of {name} must be text.", field=f"field-{name}")
        value = (raw or "").strip()
        if "\x00" in value:
            raise InvalidInput(
                f"The value of {name} cannot contain a NUL character.", field=f"field-{name}"
            )
        if len(value) > FIELD_VALUE_MAX_LENGTH:
            raise InvalidInput(
                f"The value of {name} is too long (at most {FIELD_VALUE_MAX_LENGTH} characters).",
                field=f"field-{name}",
            )
        if not value:
            updated.pop(name, None)
        elif value != _as_text(current.get(name)).strip():
            updated[name] = value
        # else: unchanged text keeps the stored value as it is (a number stays a number)
    changed = [
        name
        for name, before, after in (
            ("first_name", contact.first_name, first),
            ("last_name", contact.last_name, last),
        )
        if before != after
    ]
    changed += sorted(n for n in set(current) | set(updated) if current.get(n) != updated.get(n))
    if not changed:
        return contact
    contact.first_name, contact.last_name, contact.fields = first, last, updated
    contact.updated_at = utcnow()
    contact.source = str(source)
    session.add(contact)
    session.flush()
    audit.record(
        session=session,
        action="contact.update",
        source=source,
        workspace_id=workspace_id,
        user_id=user_id,
        target_type="contact",
        target_id=contact.id,
        details={"email": contact.email, "list_id": contact.list_id, "changed": changed},
    )
    return contact


# --- column mapping ----------------------------------------------------------------------


def custom_field_name(column: object) -> str:
    """The merge field name a column becomes: "Customer ID" -> "customer_id" ('' if none)."""
    text = re.sub(r"\W+", "_", str(column or "").strip().lower(), flags=re.ASCII).strip("_")
    if not text:
        return ""
    if not text[0].isalpha():
        text = "f_" + text
    text = text[:FIELD_NAME_MAX_LENGTH]
    if keyword.iskeyword(text) or text in _JINJA_WORDS:
        text += "_"
    return text


def column_key(column: str) -> str:
    """A header name as compared with known names: lowercase, no spaces, dashes, dots, _."""
    return re.sub(r"[\s\-_.]+", "", column.strip().lower())


def suggest_mapping(columns: Sequence[str]) -> dict[str, str]:
    """A first guess at the mapping: known header names become email / first name /
    last name, every other column a custom field named after it."""
    mapping: dict[str, str] = {}
    taken: set[str] = set()
    for column in columns:
        key = column_key(column)
        target = next(
            (t for t, names in _ALIASES.items() if key in names or key.replace("-", "") in names),
            None,
        )
        if target is None and "email" not in taken and "email" in key:
            target = "email"
        if target is not None and target not in taken:
            mapping[column] = target
            taken.add(target)
            continue
        name = custom_field_name(column)
        if name in STANDARD_TARGETS:
            name += "_2"
        while name and name in taken:
            name += "_"
        mapping[column] = name
        if name:
            taken.add(name)
    return mapping


@dataclass(frozen=True)
class CheckedMapping:
    """Column positions in the file: where the email, names and custom fields are."""

    email: int
    first_name: int | None
    last_name: int | None
    custom: tuple[tuple[int, str], ...]  # (position, custom field name)
    as_dict: dict[str, str]  # column name -> target, skipped columns left out

    @property
    def field_names(self) -> list[str]:
        return [name for _, name in self.custom]


def check_mapping(columns: Sequence[str], mapping: Mapping[str, object]) -> CheckedMapping:
    """Check a column mapping against the file's columns.

    `mapping` maps a column name to "email", "first_name", "last_name", a custom
    field name, or "" (not imported). InvalidInput(field="mapping") says what is
    wrong in plain words.
    """
    positions = {name: index for index, name in enumerate(columns)}
    chosen: dict[str, int] = {}
    custom: list[tuple[int, str]] = []
    as_dict: dict[str, str] = {}
    for column, raw_target in mapping.items():
        if column not in positions:
            raise InvalidInput(f"The file has no column called {column}.", field="mapping")
        target = str(raw_target or "").strip()
        if not target:
            continue
        index = positions[column]
        if target in STANDARD_TARGETS:
            if target in chosen:
                raise InvalidInput(
                    f"Only one column can be the {TARGET_LABELS[target].lower()}.",
                    field="mapping",
                )
            chosen[target] = index
            as_dict[column] = target
            continue
        name = custom_field_name(target)
        if not name:
            raise InvalidInput(
                f"Give the column {column} a field name made of letters, digits and _.",
                field="mapping",
            )
        if name in STANDARD_TARGETS or name in {n for _, n in custom}:
            raise InvalidInput(
                f"Two columns would both become the field {name}; rename one of them.",
                field="mapping",
            )
        custom.append((index, name))
        as_dict[column] = name
    if "email" not in chosen:
        raise InvalidInput("Choose the column that holds the email addresses.", field="mapping")
    if len(custom) > MAX_CUSTOM_FIELDS:
        raise InvalidInput(
            f"Import at most {MAX_CUSTOM_FIELDS} custom fields; leave the others out.",
            field="mapping",
        )
    return CheckedMapping(
        email=chosen["email"],
        first_name=chosen.get("first_name"),
        last_name=chosen.get("last_name"),
        custom=tuple(sorted(custom)),
        as_dict=as_dict,
    )


# --- uploads -------------------------------------------------------------------------------

_SAFE_NAME = re.compile(r"^[0-9a-f]{24}\.csv$")


def upload_folder(workspace_id: int) -> Path:
    folder = get_settings().contact_uploads_dir(workspace_id)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def upload_path(*, workspace_id: int, stored_name: str) -> Path:
    """The path of an uploaded file by its stored name (never outside the folder)."""
    if not _SAFE_NAME.match(stored_name or ""):
        raise CsvFileError("The uploaded file is gone; upload it again.")
    return get_settings().contact_uploads_dir(workspace_id) / stored_name


class UploadWriter:
    """Writes an upload to the workspace's folder chunk by chunk, within the size cap.

    `write` raises FileTooLarge as soon as the cap is passed (the partial file is
    deleted); `finish` returns the stored name to give to `preview_csv` and
    `start_contact_import`.
    """

    def __init__(self, workspace_id: int, *, max_bytes: int | None = None) -> None:
        self.workspace_id = workspace_id
        self.max_bytes = max_bytes or get_settings().contacts_max_upload_bytes
        self.stored_name = f"{secrets.token_hex(12)}.csv"
        folder = upload_folder(workspace_id)
        _prune_uploads(folder)
        self.path = folder / self.stored_name
        self._fh = open(self.path, "xb")  # noqa: SIM115  (closed by finish/abort)
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            self.abort()
            raise FileTooLarge(
                f"This file is larger than {file_size_text(self.max_bytes)}, the most that "
                "can be imported. Split it into smaller files and import them one after "
                "the other."
            )
        self._fh.write(data)

    def finish(self) -> str:
        self._fh.close()
        if self.size == 0:
            self.path.unlink(missing_ok=True)
            raise CsvFileError("The file is empty.")
        return self.stored_name

    def abort(self) -> None:
        self._fh.close()
        self.path.unlink(missing_ok=True)


def _prune_uploads(folder: Path) -> None:
    """Delete uploads (not reports) nobody imported within UPLOAD_KEEP_SECONDS."""
    cutoff = time.time() - UPLOAD_KEEP_SECONDS
    for path in folder.glob("*.csv"):
        try:
            if _SAFE_NAME.match(path.name) and path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            continue


@dataclass(frozen=True)
class CsvPreview:
    columns: list[str]
    rows: list[list[str]]  # the first rows, as many values as columns
    delimiter: str  # "comma", "semicolon" or "tab"
    encoding: str  # "UTF-8", "UTF-16", "Windows-1252", ...
    errors: list[RowError]  # problems among the rows read for the preview
    lines: list[int]  # the line each row of `rows` starts on


def preview_csv(path: str | Path, limit: int = 5) -> CsvPreview:
    """The file's columns and first `limit` rows (CsvFileError if it cannot be read)."""
    rows: list[list[str]] = []
    lines: list[int] = []
    errors: list[RowError] = []
    with open_contact_csv(path) as reader:
        for item in reader:
            if isinstance(item, RowError):
                errors.append(item)
            else:
                lines.append(item[0])
                rows.append([value[:200] for value in item[1]])
            if len(rows) >= limit or len(errors) >= limit:
                break
        return CsvPreview(
            columns=list(reader.header),
            rows=rows,
            delimiter=reader.format.delimiter_label,
            encoding=reader.format.encoding_label,
            errors=errors,
            lines=lines,
        )


# --- imports --------------------------------------------------------------------------------

IMPORT_PENDING = "pending"
IMPORT_RUNNING = "running"
IMPORT_DONE = "done"
IMPORT_FAILED = "failed"
ACTIVE_IMPORT = (IMPORT_PENDING, IMPORT_RUNNING)


def _active_import(session: Session, workspace_id: int, list_id: int) -> ContactImport | None:
    return session.exec(
        select(ContactImport).where(
            ContactImport.workspace_id == workspace_id,
            ContactImport.list_id == list_id,
            ContactImport.status.in_(ACTIVE_IMPORT),
        )
    ).first()


def start_contact_import(
    *,
    session: Session,
    workspace_id: int,
    user_id: int | None,
    list_id: int,
    stored_name: str,
    filename: str,
    mapping: Mapping[str, object],
    source: Source | str = Source.UI,
) -> ContactImport:
    """Check the mapping against the uploaded file and queue its import into the list.

    One import per list at a time. The job is queued when the caller commits.
    """
    contact_list = get_contact_list(session=session, workspace_id=workspace_id, list_id=list_id)
    if _active_import(session, workspace_id, list_id) is not None:
        raise InvalidInput(
            "An import into this list is already running; wait until it ends.", field="list"
        )
    path = upload_path(workspace_id=workspace_id, stored_name=stored_name)
    with open_contact_csv(path) as reader:
        checked = check_mapping(reader.header, mapping)
        size = reader.size
    contact_import = ContactImport(
        workspace_id=workspace_id,
        list_id=contact_list.id,
        filename=(" ".join(str(filename or "").split()) or "contacts.csv")[:255],
        column_mapping=checked.as_dict,
        stored_name=stored_name,
        file_size=size,
        status=IMPORT_PENDING,
        created_by_id=user_id,
        source=str(source),
    )
    session.add(contact_import)
    session.flush()
    audit.record(
        session=session,
        action="contact_import.start",
        source=source,
        workspace_id=workspace_id,
        user_id=user_id,
        target_type="contact_import",
        target_id=contact_import.id,
        details={
            "list_id": contact_list.id,
            "list": contact_list.name,
            "filename": contact_import.filename,
            "bytes": size,
            "fields": checked.field_names,
        },
    )
    import_id = contact_import.id
    after_commit(session, lambda: queue_import(import_id))
    return contact_import


def queue_import(import_id: int) -> None:
    from jobs.contacts import enqueue_import

    enqueue_import(import_id)


@dataclass(frozen=True)
class ImportProgress:
    id: int
    list_id: int
    list_name: str
    filename: str
    status: str  # pending, running, done, failed
    percent: int  # through the file, 0-100
    rows_total: int
    rows_imported: int
    rows_updated: int
    rows_rejected: int
    errors: list[dict[str, Any]]  # the first rejected rows: line, email, reason
    has_report: bool  # a file lists every rejected row
    message: str
    created_at: datetime
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status in (IMPORT_DONE, IMPORT_FAILED)

    @property
    def rows_added(self) -> int:
        return self.rows_imported - self.rows_updated


def _progress(item: ContactImport, list_name: str) -> ImportProgress:
    if item.status == IMPORT_DONE:
        percent = 100
    elif item.file_size:
        percent = min(99, int(item.bytes_read * 100 / item.file_size))
    else:
        percent = 0
    return ImportProgress(
        id=item.id,
        list_id=item.list_id,
        list_name=list_name,
        filename=item.filename,
        status=item.status,
        percent=percent,
        rows_total=item.rows_total,
        rows_imported=item.rows_imported,
        rows_updated=item.rows_updated,
        rows_rejected=item.rows_rejected,
        errors=list(item.errors or []),
        has_report=bool(item.report_name),
        message=item.message or "",
        created_at=item.created_at,
        finished_at=item.finished_at,
    )


def import_progress(*, session: Session, workspace_id: int, import_id: int) -> ImportProgress:
    """Where an import stands (ContactImportNotFound for another workspace's import)."""
    found = session.exec(
        select(ContactImport, ContactList.name)
        .join(ContactList, ContactList.id == ContactImport.list_id)
        .where(ContactImport.workspace_id == workspace_id, ContactImport.id == import_id)
    ).first()
    if found is None:
        raise ContactImportNotFound("This import does not exist (its list may have been deleted).")
    return _progress(*found)


def recent_imports(*, session: Session, workspace_id: int, limit: int = 10) -> list[ImportProgress]:
    """The workspace's latest imports, newest first."""
    found = session.exec(
        select(ContactImport, ContactList.name)
        .join(ContactList, ContactList.id == ContactImport.list_id)
        .where(ContactImport.workspace_id == workspace_id)
        .order_by(ContactImport.id.desc())
        .limit(limit)
    ).all()
    return [_progress(item, name) for item, name in found]


def import_report_path(*, session: Session, workspace_id: int, import_id: int) -> Path:
    """The CSV listing every rejected row of an import (NotFoundError if there is none)."""
    item = session.exec(
        select(ContactImport).where(
            ContactImport.workspace_id == workspace_id, ContactImport.id == import_id
        )
    ).first()
    if item is None or not item.report_name:
        raise ContactImportNotFound("This import has no report of rejected rows.")
    path = get_settings().contact_uploads_dir(workspace_id) / item.report_name
    if not path.is_file():
        raise ContactImportNotFound("The report of this import is gone.")
    return path


# --- recipients -------------------------------------------------------------------------------

FILTER_OPS = ("equals", "not_equals", "contains", "is_empty", "is_not_empty")
RECIPIENT_BATCH = 1000


def _field_value(contact: Contact, field: str) -> str:
    if field in STANDARD_TARGETS:
        value = getattr(contact, field)
    else:
        value = (contact.fields or {}).get(field)
    return "" if value is None else str(value).strip()


def recipient_filter(filters: Iterable[Mapping[str, Any]] | None) -> Callable[[Contact], bool]:
    """A predicate for filters like {"field": "city", "op": "equals", "value": "Berlin"}.

    Comparisons ignore case and surrounding spaces; every filter must match.
    """
    checks: list[tuple[str, str, str]] = []
    for item in filters or []:
        field = str(item.get("field") or "").strip()
        op = str(item.get("op") or "equals")
        value = str(item.get("value") or "").strip().casefold()
        if not field:
            continue
        if op not in FILTER_OPS:
            raise InvalidInput(f"Unknown filter comparison {op}.", field="filters")
        checks.append((field, op, value))

    def matches(contact: Contact) -> bool:
        for field, op, value in checks:
            have = _field_value(contact, field).casefold()
            if op == "equals" and have != value:
                return False
            if op == "not_equals" and have == value:
                return False
            if op == "contains" and value not in have:
                return False
            if op == "is_empty" and have:
                return False
            if op == "is_not_empty" and not have:
                return False
        return True

    return matches


def iter_recipients_flagged(
    *,
    session: Session,
    workspace_id: int,
    list_ids: Iterable[int],
    filters: Iterable[Mapping[str, Any]] | None = None,
) -> Iterator[tuple[Contact, str | None]]:
    """Every active contact of the lists that passes the filters, once per address
    (the lowest contact id wins), by address, with the reason its address is
    suppressed (None when it is not). Streamed from the database."""
    ids = sorted(_ids(list(list_ids)))
    if not ids:
        return
    matches = recipient_filter(filters)
    query = (
        select(Contact, Suppression.reason)
        .outerjoin(
            Suppression,
            sa.and_(
                Suppression.workspace_id == Contact.workspace_id,
                Suppression.email == Contact.email,
            ),
        )
        .where(
            Contact.workspace_id == workspace_id,
            Contact.list_id.in_(ids),
            Contact.is_active.is_(True),
        )
        .order_by(Contact.email, Contact.id)
        .execution_options(yield_per=RECIPIENT_BATCH)
    )
    last = None
    for contact, reason in session.exec(query):
        if contact.email == last:
            continue
        last = contact.email
        if matches(contact):
            yield contact, reason


def iter_recipients(
    *,
    session: Session,
    workspace_id: int,
    list_ids: Iterable[int],
    filters: Iterable[Mapping[str, Any]] | None = None,
) -> Iterator[Contact]:
    """The contacts a campaign to these lists sends to: active, each address once,
    passing the filters, suppressed addresses left out. Streamed, by address."""
    for contact, reason in iter_recipients_flagged(
        session=session, workspace_id=workspace_id, list_ids=list_ids, filters=filters
    ):
        if reason is None:
            yield contact


def count_recipients(
    *,
    session: Session,
    workspace_id: int,
    list_ids: Iterable[int],
    filters: Iterable[Mapping[str, Any]] | None = None,
) -> int:
    """How many recipients `iter_recipients` yields (counted in SQL without filters)."""
    ids = sorted(_ids(list(list_ids)))
    if not ids:
        return 0
    if any(str(f.get("field") or "").strip() for f in filters or []):
        return sum(
            1
            for _ in iter_recipients(
                session=session, workspace_id=workspace_id, list_ids=ids, filters=filters
            )
        )
    suppressed = (
        select(Suppression.id)
        .where(
            Suppression.workspace_id == Contact.workspace_id,
            Suppression.email == Contact.email,
        )
        .exists()
    )
    return session.exec(
        select(sa.func.count(sa.distinct(Contact.email))).where(
            Contact.workspace_id == workspace_id,
            Contact.list_id.in_(ids),
            Contact.is_active.is_(True),
            ~suppressed,
        )
    ).one()


__all__ = [
    "CONTACT_MANAGER_ROLES",
    "CheckedMapping",
    "ContactImportNotFound",
    "ContactListNotFound",
    "ContactListRow",
    "ContactNotFound",
    "CsvFileError",
    "CsvPreview",
    "FileTooLarge",
    "ImportProgress",
    "UploadWriter",
    "check_mapping",
    "count_recipients",
    "create_contact_list",
    "custom_field_name",
    "delete_contact_list",
    "editable_field_names",
    "get_contact",
    "get_contact_list",
    "import_progress",
    "import_report_path",
    "iter_recipients",
    "iter_recipients_flagged",
    "list_contact_lists",
    "normalize_contact_email",
    "preview_csv",
    "recent_imports",
    "rename_contact_list",
    "start_contact_import",
    "suggest_mapping",
    "update_contact",
    "upload_path",
]
