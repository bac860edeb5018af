"""The contact import job's work: stream an uploaded CSV into its list, in batches.

`run_contact_import(import_id=...)` is what `jobs.contacts.import_contacts` runs
(and what bench/import_contacts.py measures). Like the placement send job it
manages its own transactions, one per batch of BATCH_ROWS rows, so the page sees
progress while it runs and a big file never holds the database's write lock for
long. The rules it applies are in `services.contacts` (module docstring).

- **Claim.** An import runs once: `pending -> running` is a conditional UPDATE. A
  `running` import whose progress has not moved for STALE_AFTER (its worker died)
  may be claimed again; it starts over, and the rows the dead run wrote are then
  found in the list and updated, not duplicated.
- **Memory.** The file is streamed (`contact_csv`); what grows with the file is
  the set of addresses already seen (about 150 bytes each), needed to report a
  duplicate row with the line of its first occurrence.
- **Writes.** New contacts go in with one driver-level `executemany` per batch:
  SQLAlchemy's per-row type processing cost 3-4 times the insert itself here
  (bench/import_contacts.py). Addresses already in the list are looked up per
  batch (skipped while the list was empty when the import began) and updated.
- **Rejected rows** are counted, the first ERRORS_KEPT kept on the import row for
  the page, and every one written to a report CSV (safe to open in a spreadsheet).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from mailer_app.db import get_engine, session_scope
from mailer_app.models import Contact, ContactImport, ContactList, Source, utcnow
from mailer_app.services import InvalidInput, ServiceError, audit
from mailer_app.services.contact_csv import ContactCsv, RowError, open_contact_csv
from mailer_app.services.contacts import (
    FAST_EMAIL,
    FAST_EMAIL_MAX,
    IMPORT_DONE,
    IMPORT_FAILED,
    IMPORT_PENDING,
    IMPORT_RUNNING,
    NAME_MAX_LENGTH,
    SPECIAL_DOMAINS,
    CheckedMapping,
    check_mapping,
    full_email_check,
    upload_path,
)
from mailer_app.services.csv_safety import spreadsheet_safe
from mailer_app.settings import get_settings

log = logging.getLogger(__name__)

# Rows per transaction, and a progress step. Each commit writes every index page the
# batch touched, and new addresses land all over the (list, email) index: fewer,
# bigger batches write far less (bench/import_contacts.py).
BATCH_ROWS = 25_000
# While an import writes on SQLite: a checkpoint (two fsyncs) every this many WAL
# pages instead of SQLite's 1000, and a page cache (KiB) that holds the index pages a
# batch touches instead of SQLite's 2 MB.
SQLITE_CHECKPOINT_PAGES = 16_384
SQLITE_CACHE_KIB = 32_768
ERRORS_KEPT = 100
LOOKUP_CHUNK = 5000  # addresses per "already in the list?" query (SQLite's bound-value limit)
STALE_AFTER = timedelta(minutes=5)
REPORT_COLUMNS = ("line", "email", "problem")

_CONTACT_COLUMNS = (
    "workspace_id",
    "list_id",
    "email",
    "first_name",
    "last_name",
    "fields",
    "is_active",
    "source",
    "created_by_id",
    "created_at",
    "updated_at",
)


@dataclass
class ImportOutcome:
    import_id: int
    status: str
    rows_total: int = 0
    rows_imported: int = 0
    rows_updated: int = 0
    rows_rejected: int = 0
    message: str = ""


@dataclass
class _Claim:
    import_id: int
    workspace_id: int
    list_id: int
    user_id: int | None
    stored_name: str
    column_mapping: dict[str, str]


def run_contact_import(*, import_id: int, engine: Engine | None = None) -> ImportOutcome:
    """Import the file of a pending import into its list; safe to run twice.

    Returns the outcome; an import another run holds (or one already finished) is
    left alone and reported as it stands.
    """
    engine = engine or get_engine()
    claim = _claim(engine, import_id)
    if claim is None:
        return _current(engine, import_id)
    run = _ImportRun(engine, claim)
    try:
        run.run()
    except ServiceError as exc:
        run.finish(IMPORT_FAILED, str(exc))
    except Exception:
        log.exception("contact import %s failed", import_id)
        try:
            run.finish(
                IMPORT_FAILED,
                "The import stopped because of an unexpected error; the rows counted above "
                "were imported. Try again, and tell your administrator if it happens again.",
            )
        except Exception:
            log.exception("contact import %s: recording the failure failed too", import_id)
        raise
    return run.outcome


def _claim(engine: Engine, import_id: int) -> _Claim | None:
    now = utcnow()
    table = ContactImport.__table__
    with session_scope(engine) as session:
        claimed = session.execute(
            sa.update(table)
            .where(
                table.c.id == import_id,
                sa.or_(
                    table.c.status == IMPORT_PENDING,
                    sa.and_(
                        table.c.status == IMPORT_RUNNING, table.c.updated_at < now - STALE_AFTER
                    ),
                ),
            )
            .values(
                status=IMPORT_RUNNING,
                started_at=now,
                updated_at=now,
                bytes_read=0,
                rows_total=0,
                rows_imported=0,
                rows_updated=0,
                rows_rejected=0,
                errors=[],
                message=None,
            )
        ).rowcount
        if claimed != 1:
            return None
        item = session.exec(select(ContactImport).where(ContactImport.id == import_id)).one()
        return _Claim(
            import_id=item.id,
            workspace_id=item.workspace_id,
            list_id=item.list_id,
            user_id=item.created_by_id,
            stored_name=item.stored_name,
            column_mapping=dict(item.column_mapping or {}),
        )


def _current(engine: Engine, import_id: int) -> ImportOutcome:
    with session_scope(engine) as session:
        item = session.get(ContactImport, import_id)
        if item is None:
            return ImportOutcome(import_id=import_id, status="missing")
        return ImportOutcome(
            import_id=import_id,
            status=item.status,
            rows_total=item.rows_total,
            rows_imported=item.rows_imported,
            rows_updated=item.rows_updated,
            rows_rejected=item.rows_rejected,
            message=item.message or "",
        )


def _timestamp_param(engine: Engine, when: datetime) -> Any:
    """`when` as the driver stores it (what SQLAlchemy's UTCDateTime would send)."""
    when = when.astimezone(UTC)
    if engine.dialect.name == "sqlite":
        return when.strftime("%Y-%m-%d %H:%M:%S.%f")
    return when


def _insert_sql(engine: Engine) -> str:
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    marks = [mark] * len(_CONTACT_COLUMNS)
    if engine.dialect.name == "postgresql":
        marks[_CONTACT_COLUMNS.index("fields")] = f"CAST({mark} AS JSON)"
    return f"INSERT INTO contact ({', '.join(_CONTACT_COLUMNS)}) VALUES ({', '.join(marks)})"  # noqa: S608  (fixed column names and placeholders only)


def checked_rows(
    reader: Iterable[tuple[int, list[str]] | RowError], mapping: CheckedMapping
) -> Iterator[tuple[int, str, str, str, str] | RowError]:
    """Each row as (line, email, first name, last name, custom fields as JSON), or the
    RowError that says why it is skipped: the reader's own, a bad address, or an
    address an earlier row already had (compared lowercased).

    The hot loop of an import (a million rows here take a few seconds), so it is
    kept tight: an address gets the full email-validator check only when the fast
    one does not accept it, and the JSON is built by hand.
    """
    email_at, first_at, last_at = mapping.email, mapping.first_name, mapping.last_name
    custom = [(encode_basestring(name) + ":", index) for index, name in mapping.custom]
    fast_match, fast_max, special = FAST_EMAIL.fullmatch, FAST_EMAIL_MAX, SPECIAL_DOMAINS
    encode = encode_basestring
    seen: dict[str, int] = {}  # address -> the line it was first seen on
    first_seen = seen.setdefault
    for item in reader:
        if type(item) is RowError:
            yield item
            continue
        line, values = item
        raw = values[email_at]
        email = raw.strip().lower()
        if not (len(email) <= fast_max and fast_match(email)) or email.endswith(special):
            try:
                email = full_email_check(raw)
            except InvalidInput as exc:
                yield RowError(line, str(exc), raw.strip()[:320])
                continue
        first_line = first_seen(email, line)
        if first_line != line:
            yield RowError(
                line,
                f"The same address as line {first_line} (addresses are compared ignoring case).",
                email,
            )
            continue
        first = values[first_at].strip()[:NAME_MAX_LENGTH] if first_at is not None else ""
        last = values[last_at].strip()[:NAME_MAX_LENGTH] if last_at is not None else ""
        # Empty cells are left out, so templates see those fields as missing.
        parts = [key + encode(v) for key, i in custom if (v := values[i].strip())]
        yield line, email, first, last, "{" + ",".join(parts) + "}"


@contextlib.contextmanager
def _bulk_writes(conn: Connection) -> Iterator[None]:
    """On SQLite, checkpoint less often and cache more pages on this connection while
    it imports (both are per-connection settings, put back afterwards)."""
    if conn.dialect.name != "sqlite":
        yield
        return
    cache = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint={SQLITE_CHECKPOINT_PAGES}")
    conn.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    conn.commit()
    try:
        yield
    finally:
        conn.rollback()  # nothing is pending here unless a batch failed midway
        conn.exec_driver_sql("PRAGMA wal_autocheckpoint=1000")
        conn.exec_driver_sql(f"PRAGMA cache_size={int(cache)}")
        conn.commit()


@dataclass
class _ImportRun:
    engine: Engine
    claim: _Claim
    outcome: ImportOutcome = field(init=False)
    errors: list[dict[str, Any]] = field(default_factory=list)
    report_name: str | None = None
    bytes_read: int = 0
    _report: Any = None
    _report_writer: Any = None
    _errors_changed: bool = False
    _check_existing: bool = True
    _conn: Any = None

    def __post_init__(self) -> None:
        self.outcome = ImportOutcome(import_id=self.claim.import_id, status=IMPORT_RUNNING)
        self.folder = get_settings().contact_uploads_dir(self.claim.workspace_id)

    # -- the work

    def run(self) -> None:
        claim = self.claim
        path = upload_path(workspace_id=claim.workspace_id, stored_name=claim.stored_name)
        with open_contact_csv(path) as reader:
            try:
                mapping = check_mapping(reader.header, claim.column_mapping)
            except InvalidInput as exc:
                raise InvalidInput(f"The file does not match its column mapping: {exc}") from None
            self._prepare(mapping)
            with self.engine.connect() as conn, _bulk_writes(conn):
                self._conn = conn
                self._read(reader, mapping)
        outcome = self.outcome
        message = ""
        if outcome.rows_total == 0:
            message = "The file has column names but no rows of contacts."
        self.finish(IMPORT_DONE, message)

    def _prepare(self, mapping: CheckedMapping) -> None:
        """Add the mapping's custom fields to the list; learn whether it is empty."""
        with session_scope(self.engine) as session:
            contact_list = session.get(ContactList, self.claim.list_id)
            names = list(contact_list.field_names or [])
            added = [n for n in mapping.field_names if n not in names]
            if added:
                contact_list.field_names = names + added
                session.add(contact_list)
            self._check_existing = (
                session.exec(
                    select(Contact.id).where(Contact.list_id == self.claim.list_id).limit(1)
                ).first()
                is not None
            )
        self._insert_sql = _insert_sql(self.engine)

    def _read(self, reader: ContactCsv, mapping: CheckedMapping) -> None:
        batch: list[tuple[int, str, str, str, str]] = []
        add, reject = batch.append, self._reject
        counted = 0
        for item in checked_rows(reader, mapping):
            counted += 1
            if type(item) is RowError:
                reject(item)
            else:
                add(item)
            if counted >= BATCH_ROWS:
                self._flush(batch, reader.bytes_read, counted)
                batch.clear()
                counted = 0
        self._flush(batch, reader.bytes_read, counted)

    # -- rejected rows

    def _reject(self, error: RowError) -> None:
        self.outcome.rows_rejected += 1
        if len(self.errors) < ERRORS_KEPT:
            self.errors.append({"line": error.line, "email": error.email, "reason": error.reason})
            self._errors_changed = True
        if self._report_writer is None:
            self.report_name = Path(self.claim.stored_name).stem + "-rejected.csv"
            self._report = open(  # noqa: SIM115  (closed by finish)
                self.folder / self.report_name, "w", newline="", encoding="utf-8-sig"
            )
            self._report_writer = csv.writer(self._report)
            self._report_writer.writerow(REPORT_COLUMNS)
        self._report_writer.writerow(
            [error.line, spreadsheet_safe(error.email), spreadsheet_safe(error.reason)]
        )

    # -- writing

    def _flush(self, batch: list[tuple], bytes_read: int, counted: int) -> None:
        """Write a batch and the progress in one transaction."""
        self.outcome.rows_total += counted
        self.bytes_read = bytes_read
        if self._report is not None:
            self._report.flush()
        conn, outcome = self._conn, self.outcome
        counts = (outcome.rows_imported, outcome.rows_updated)
        while True:
            try:
                with conn.begin():
                    self._write(conn, batch)
                    self._save_progress(conn)
                return
            except IntegrityError:
                outcome.rows_imported, outcome.rows_updated = counts  # rolled back
                if self._check_existing:
                    raise
                # Someone added one of these addresses to the list meanwhile: look first.
                self._check_existing = True
            except BaseException:
                outcome.rows_imported, outcome.rows_updated = counts
                raise

    def _write(self, conn: Connection, batch: list[tuple]) -> None:
        if not batch:
            return
        claim = self.claim
        existing: dict[str, tuple] = {}
        if self._check_existing:
            table = Contact.__table__
            emails = [r[1] for r in batch]
            for start in range(0, len(emails), LOOKUP_CHUNK):
                for row in conn.execute(
                    sa.select(
                        table.c.email, table.c.id, table.c.first_name, table.c.last_name,
                        table.c.fields,
                    ).where(
                        table.c.workspace_id == claim.workspace_id,
                        table.c.list_id == claim.list_id,
                        table.c.email.in_(emails[start : start + LOOKUP_CHUNK]),
                    )
                ):  # fmt: skip
                    existing[row[0]] = row[1:]
        now = _timestamp_param(self.engine, utcnow())
        fixed = (claim.workspace_id, claim.list_id)
        tail = (True, Source.IMPORT.value, claim.user_id, now, now)
        new_rows = [
            (*fixed, email, first, last, fields, *tail)
            for _, email, first, last, fields in batch
            if email not in existing
        ]
        if new_rows:
            conn.exec_driver_sql(self._insert_sql, new_rows)
        if existing:
            self._update(conn, batch, existing)
        self.outcome.rows_imported += len(batch)
        self.outcome.rows_updated += len(batch) - len(new_rows)

    @staticmethod
    def _update(conn: Connection, batch: list[tuple], existing: dict[str, tuple]) -> None:
        """New non-empty values replace stored ones; empty cells keep them."""
        table = Contact.__table__
        changes = []
        for _, email, first, last, fields in batch:
            if email not in existing:
                continue
            contact_id, old_first, old_last, old_fields = existing[email]
            merged = dict(old_fields or {})
            merged.update(json.loads(fields))
            changes.append(
                {
                    "b_id": contact_id,
                    "b_first": first or old_first,
                    "b_last": last or old_last,
                    "b_fields": merged,
                }
            )
        conn.execute(
            sa.update(table)
            .where(table.c.id == sa.bindparam("b_id"))
            .values(
                first_name=sa.bindparam("b_first"),
                last_name=sa.bindparam("b_last"),
                fields=sa.bindparam("b_fields", type_=table.c.fields.type),
            ),
            changes,
        )

    def _save_progress(self, conn: Connection, **extra: Any) -> None:
        outcome = self.outcome
        values: dict[str, Any] = {
            "bytes_read": self.bytes_read,
            "rows_total": outcome.rows_total,
            "rows_imported": outcome.rows_imported,
            "rows_updated": outcome.rows_updated,
            "rows_rejected": outcome.rows_rejected,
            "report_name": self.report_name,
            "updated_at": utcnow(),  # the heartbeat a stale claim is judged by
            **extra,
        }
        if self._errors_changed:
            values["errors"] = list(self.errors)
            self._errors_changed = False
        table = ContactImport.__table__
        conn.execute(sa.update(table).where(table.c.id == self.claim.import_id).values(**values))

    # -- the end

    def finish(self, status: str, message: str) -> None:
        """Record the outcome, write the audit entry, delete the uploaded file."""
        if self._report is not None:
            self._report.close()
        outcome = self.outcome
        outcome.status, outcome.message = status, message
        claim = self.claim
        with session_scope(self.engine) as session:
            self._errors_changed = True
            self._save_progress(
                session.connection(),
                status=status,
                message=message[:1000] or None,
                finished_at=utcnow(),
            )
            audit.record(
                session=session,
                action="contact_import.finish",
                source=Source.JOB,
                workspace_id=claim.workspace_id,
                user_id=claim.user_id,
                target_type="contact_import",
                target_id=claim.import_id,
                details={
                    "status": status,
                    "list_id": claim.list_id,
                    "rows": outcome.rows_total,
                    "imported": outcome.rows_imported,
                    "updated": outcome.rows_updated,
                    "rejected": outcome.rows_rejected,
                    "message": message,
                },
            )
        (self.folder / claim.stored_name).unlink(missing_ok=True)
