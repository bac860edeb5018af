"""The contact import job's work: stream an uploaded CSV into its list, in batches.

`run_contact_import(import_id=...)` is what `jobs.contacts.import_contacts` runs
(and what bench/import_contacts.py measures). Like the placement send job it
manages its own transactions, one per batch of rows, so the page sees
progress while it runs and a big file never holds the database's write lock for
long. The rules it applies are in `services.contacts` (module docstring).

- **Claim.** An import runs once: `pending -> running` is a conditional UPDATE. A
  `running` import whose progress has not moved for STALE_AFTER (its worker died)
  may be claimed again; it starts over, and the rows the dead run wrote are then
  found in the list and updated, not duplicated.
- **Memory.** The file is streamed (`contact_csv`); what grows with the file is
  the set of addresses already seen (about 150 bytes each), needed to report a
  duplicate row with the line of its first occurrence.
- **Checks** run on batches of CHECK_ROWS rows a column at a time
  (`checked_batches`), with the results of the row-by-row checks they replaced
  (tests/unit/test_contact_import_batches.py keeps those as the oracle).
- **Writes, SQLite** (`_StagedWriter`): the reading thread stages rows in a
  scratch SQLite file; a writer thread moves each STAGED_BATCH_ROWS rows into
  the list with one `INSERT ... SELECT ... ORDER BY email ON CONFLICT DO UPDATE`
  in a transaction with the progress, while the next rows are read. In address
  order the unique (list_id, email) index is walked once per batch instead of
  being written at random row by row, which is what made imports slow.
- **Writes, PostgreSQL**: one driver-level `executemany` per BATCH_ROWS rows
  (SQLAlchemy's per-row type processing cost 3-4 times the insert itself);
  addresses already in the list are looked up per batch (skipped while the list
  was empty when the import began) and updated.
- **Updates** are the same on both: an address already in the list keeps its
  contact; non-empty values replace stored ones, empty cells keep them, and new
  custom fields are added after the stored ones.
- **Rejected rows** are counted, the first ERRORS_KEPT kept on the import row for
  the page, and every one written to a report CSV (safe to open in a spreadsheet).
"""

from __future__ import annotations

import contextlib
import csv
import heapq
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain, compress, islice, repeat
from json.encoder import encode_basestring
from operator import attrgetter, eq, itemgetter
from pathlib import Path
from typing import Any, NamedTuple

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
# SQLite: rows per staging file, moved into the list in one transaction while the
# next ones are read (about a second of the database's write lock at a million rows:
# each batch rewrites the pages of the index it touches, so fewer, bigger batches
# write less).
STAGED_BATCH_ROWS = 200_000
# While an import writes on SQLite: a checkpoint (two fsyncs) every this many WAL
# pages instead of SQLite's 1000, and a page cache (KiB) that holds the index pages a
# batch touches instead of SQLite's 2 MB.
SQLITE_CHECKPOINT_PAGES = 16_384
SQLITE_CACHE_KIB = 32_768
# The staged writer's cache: it walks the index in order, so a smaller one does (it
# also bounds the memory SQLite sorts a batch in).
STAGED_CACHE_KIB = 8_192
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


# Rows checked together: few enough to stay in the CPU caches, and for their
# objects to be gone before the garbage collector's next look at young objects.
CHECK_ROWS = 300
_LINE = attrgetter("line")
_FIRST, _SECOND = itemgetter(0), itemgetter(1)


class CheckedBatch(NamedTuple):
    """Consecutive rows of a file, checked: the kept rows as parallel lists (line,
    address, first name, last name, custom fields as JSON text) and the rows skipped,
    in line order."""

    lines: list[int]
    emails: list[str]
    first_names: list[str]
    last_names: list[str]
    fields: list[str]
    errors: list[RowError]

    @property
    def rows(self) -> Iterator[tuple[str, str, str, str]]:
        """(address, first name, last name, fields) of each kept row."""
        return zip(self.emails, self.first_names, self.last_names, self.fields, strict=True)


def checked_rows(
    reader: Iterable[tuple[int, list[str]] | RowError], mapping: CheckedMapping
) -> Iterator[tuple[int, str, str, str, str] | RowError]:
    """Each row as (line, email, first name, last name, custom fields as JSON), or the
    RowError that says why it is skipped: the reader's own, a bad address, or an
    address an earlier row already had (compared lowercased). In file order.

    The import itself takes them in batches (`checked_batches`), which this unrolls.
    """
    for batch in checked_batches(reader, mapping):
        kept = zip(
            batch.lines, batch.emails, batch.first_names, batch.last_names, batch.fields,
            strict=True,
        )  # fmt: skip
        yield from heapq.merge(kept, batch.errors, key=_line_of)


def _line_of(item: tuple | RowError) -> int:
    return item.line if type(item) is RowError else item[0]


def checked_batches(
    reader: Iterable[tuple[int, list[str]] | RowError],
    mapping: CheckedMapping,
    size: int = CHECK_ROWS,
) -> Iterator[CheckedBatch]:
    """The reader's rows checked as `checked_rows` says, `size` rows at a time.

    The hot loop of an import, so the common case is done a column at a time by
    C-level string and map operations instead of Python code per row:

    - Addresses: a batch whose addresses all pass the fast check unchanged (no
      spaces to strip, FAST_EMAIL, not too long, no special-use domain) is taken
      as is; otherwise every address of the batch goes through the check of one
      row (fast check of the stripped, lowercased address, else email-validator),
      exactly as `contacts.normalize_contact_email` does.
    - Duplicates: one dict maps each address to the line it was first seen on.
    - Names and custom fields are stripped only in columns where a value may need
      it, and the fields' JSON text is built by hand, quoting a column's values
      as they are when none of them needs escaping (else with json's escaping).
    """
    email_at, first_at, last_at = mapping.email, mapping.first_name, mapping.last_name
    custom = [(encode_basestring(name) + ":", index) for index, name in mapping.custom]
    seen: dict[str, int] = {}  # address -> the line it was first seen on
    first_seen = seen.setdefault
    used = {email_at, first_at, last_at, *(index for index, _ in mapping.custom)}
    fast_match = FAST_EMAIL.fullmatch
    items_of = iter(reader)
    while True:
        items = list(islice(items_of, size))
        if not items:
            return
        errors: list[RowError] = []
        if RowError in set(map(type, items)):
            errors = [item for item in items if type(item) is RowError]
            items = [item for item in items if type(item) is not RowError]
            if not items:
                yield CheckedBatch([], [], [], [], [], errors)
                continue
        lines = list(map(_FIRST, items))
        rows = list(map(_SECOND, items))
        del items
        columns: list[Any] = list(zip(*rows, strict=True))  # rows have the header's width
        del rows
        raws = columns[email_at]
        # NUL never reaches here (the reader skips rows with one), so it separates.
        lowered = "\x00".join(raws).lower()
        emails = lowered.split("\x00")
        keep: list[bool] | None = None
        if (
            len(emails) != len(raws)
            or not all(map(fast_match, emails))
            or max(map(len, emails)) > FAST_EMAIL_MAX
            or any((end + "\x00") in lowered or lowered.endswith(end) for end in SPECIAL_DOMAINS)
        ):
            checked, bad = _check_emails(lines, raws)
            if bad:
                errors += bad
                keep = [email is not None for email in checked]
                lines = list(compress(lines, keep))
                emails = list(compress(checked, keep))
            else:
                emails = checked
        del raws, lowered
        firsts = list(map(first_seen, emails, lines))
        if firsts != lines:
            unique = list(map(eq, firsts, lines))
            errors += [
                RowError(
                    line,
                    f"The same address as line {first} (addresses are compared ignoring case).",
                    email,
                )
                for line, first, email, kept in zip(lines, firsts, emails, unique, strict=True)
                if not kept
            ]
            lines = list(compress(lines, unique))
            emails = list(compress(emails, unique))
            if keep is None:
                keep = unique
            else:  # `unique` is over the rows `keep` kept
                kept = iter(unique)
                keep = [was and next(kept) for was in keep]
        if errors:
            errors.sort(key=_LINE)
        if keep is not None:
            columns = [
                list(compress(column, keep)) if index in used else None
                for index, column in enumerate(columns)
            ]
        count = len(lines)
        yield CheckedBatch(
            lines,
            emails,
            _names(columns, first_at, count),
            _names(columns, last_at, count),
            _fields_json(columns, custom, count),
            errors,
        )


def _check_emails(lines: list[int], raws: Iterable[str]) -> tuple[list[Any], list[RowError]]:
    """Each address checked on its own (`contacts.normalize_contact_email`), None for
    a bad one, and the RowErrors of the bad ones."""
    fast_match, fast_max, special = FAST_EMAIL.fullmatch, FAST_EMAIL_MAX, SPECIAL_DOMAINS
    emails: list[str | None] = []
    bad: list[RowError] = []
    for line, raw in zip(lines, raws, strict=True):
        email = raw.strip().lower()
        if not (len(email) <= fast_max and fast_match(email)) or email.endswith(special):
            try:
                email = full_email_check(raw)
            except InvalidInput as exc:
                bad.append(RowError(line, str(exc), raw.strip()[:320]))
                email = None
        emails.append(email)
    return emails, bad


# The bytes of UTF-8 text that json's encode_basestring escapes: ", \\ and controls.
_ESCAPED = bytes([*range(0x20), ord('"'), ord("\\")])


def _stripped(column: Sequence[str]) -> tuple[Sequence[str], bool]:
    """A column's values stripped of surrounding whitespace, and whether none of them
    has a character that JSON escapes."""
    # Joined by "|" to look at them all at once (a value with "| " or " |" in it
    # only makes the column look like one that needs stripping).
    encoded = "|".join(column).encode("utf-8", "surrogatepass")
    plain = len(encoded.translate(None, _ESCAPED)) == len(encoded)
    # Without controls, and ASCII, the only whitespace str.strip removes is " ".
    if (
        plain
        and encoded.isascii()
        and not (
            encoded.startswith(b" ")
            or encoded.endswith(b" ")
            or b" |" in encoded
            or b"| " in encoded
        )
    ):
        return column, plain
    return list(map(str.strip, column)), plain


def _names(columns: list[Any], index: int | None, count: int) -> list[str]:
    """A name column: stripped, cut to NAME_MAX_LENGTH ("" without the column)."""
    if index is None:
        return [""] * count
    names = _stripped(columns[index])[0]
    if max(map(len, names), default=0) > NAME_MAX_LENGTH:
        return [name[:NAME_MAX_LENGTH] for name in names]
    return list(names)


def _fields_json(columns: list[Any], custom: list[tuple[str, int]], count: int) -> list[str]:
    """The custom fields of each row as JSON text, empty cells left out (so templates
    see those fields as missing): what json.dumps(ensure_ascii=False) writes without
    spaces. Each row's text is one join of constant pieces and its values."""
    if not custom or not count:
        return ["{}"] * count
    pieces: list[Iterable[str]] = []
    pending = "{"  # constant text before the next piece
    # A value's leading comma is left out while no earlier column is sure to have
    # one; after a column with empty cells, rows are mended at the end.
    comma, mend = "", False
    for key, index in custom:
        column, plain = _stripped(columns[index])
        if plain and "" not in column:
            # Every row has a value, nothing to escape (encode_basestring escapes
            # only ", \\ and control characters): quoted as is.
            pieces += [repeat(pending + comma + key + '"'), column]
            pending, comma = '"', ","
            continue
        if pending:
            pieces.append(repeat(pending))
            pending = ""
        prefix = comma + key
        if plain:
            pieces.append([prefix + '"' + v + '"' if v else "" for v in column])
        else:
            pieces.append([prefix + encode_basestring(v) if v else "" for v in column])
        if not comma:
            comma, mend = ",", True
    pieces.append(repeat(pending + "}"))
    texts = list(map("".join, zip(*pieces, strict=False)))  # constants repeat forever
    if mend:  # rows whose first column was empty start with "{,"
        texts = ["{" + t[2:] if t.startswith("{,") else t for t in texts]
    return texts


@contextlib.contextmanager
def _bulk_writes(conn: Connection, cache_kib: int = SQLITE_CACHE_KIB) -> Iterator[None]:
    """On SQLite, checkpoint less often and cache more pages on this connection while
    it imports (both are per-connection settings, put back afterwards)."""
    if conn.dialect.name != "sqlite":
        yield
        return
    cache = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint={SQLITE_CHECKPOINT_PAGES}")
    conn.exec_driver_sql(f"PRAGMA cache_size=-{int(cache_kib)}")
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
            batches = checked_batches(reader, mapping, CHECK_ROWS)
            if self.engine.dialect.name == "sqlite":
                with _StagedWriter(self) as writer:
                    self._read_staged(reader, batches, writer)
            else:
                with self.engine.connect() as conn, _bulk_writes(conn):
                    self._conn = conn
                    self._read(reader, batches)
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

    def _read(self, reader: ContactCsv, batches: Iterable[CheckedBatch]) -> None:
        """PostgreSQL: each batch of BATCH_ROWS rows written in one transaction."""
        batch: list[tuple[int, str, str, str, str]] = []
        reject = self._reject
        counted = 0
        for checked in batches:
            counted += len(checked.lines) + len(checked.errors)
            for error in checked.errors:
                reject(error)
            batch += zip(
                checked.lines, checked.emails, checked.first_names, checked.last_names,
                checked.fields, strict=True,
            )  # fmt: skip
            if counted >= BATCH_ROWS:
                self._flush(batch, reader.bytes_read, counted)
                batch.clear()
                counted = 0
        self._flush(batch, reader.bytes_read, counted)

    def _read_staged(
        self, reader: ContactCsv, batches: Iterable[CheckedBatch], writer: _StagedWriter
    ) -> None:
        """SQLite: rows go to a staging file; every STAGED_BATCH_ROWS rows the writer
        thread moves the file's rows into the list while the next ones are read."""
        reject = self._reject
        # The first batches are small, so the writer starts early (committing them is
        # cheap while the index is small), then they double up to STAGED_BATCH_ROWS.
        counted, target = 0, STAGED_BATCH_ROWS // 8
        for checked in batches:
            counted += len(checked.lines) + len(checked.errors)
            for error in checked.errors:
                reject(error)
            writer.stage(checked.rows, len(checked.lines))
            if counted >= target:
                writer.hand_over(self._progress_snapshot(reader.bytes_read, counted))
                counted, target = 0, min(2 * target, STAGED_BATCH_ROWS)
        writer.hand_over(self._progress_snapshot(reader.bytes_read, counted))

    def _progress_snapshot(self, bytes_read: int, counted: int) -> dict[str, Any]:
        """What the page is told once the rows read so far are written."""
        self.outcome.rows_total += counted
        self.bytes_read = bytes_read
        if self._report is not None:
            self._report.flush()
        snapshot: dict[str, Any] = {
            "bytes_read": bytes_read,
            "rows_total": self.outcome.rows_total,
            "rows_rejected": self.outcome.rows_rejected,
            "report_name": self.report_name,
        }
        if self._errors_changed:
            snapshot["errors"] = list(self.errors)
            self._errors_changed = False
        return snapshot

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


# -- SQLite: staged writes -----------------------------------------------------------

_STAGED_TABLE = "staged_contact"
_STAGED_PER_INSERT = 100
_STAGE_ONE = f"INSERT INTO {_STAGED_TABLE} VALUES (?, ?, ?, ?)"  # noqa: S608  (fixed name)
_STAGE_MANY = f"INSERT INTO {_STAGED_TABLE} VALUES " + ", ".join(  # noqa: S608  (fixed name)
    ["(?, ?, ?, ?)"] * _STAGED_PER_INSERT
)
# Moves a staging file's rows into the list, in address order (each index page is
# then written once per batch, not once per row), and updates the addresses the list
# already has: non-empty values replace stored ones, empty cells keep them, new
# custom fields are added to the stored ones (json_patch, as dict.update would).
_STAGED_UPSERT = f"""
INSERT INTO contact ({", ".join(_CONTACT_COLUMNS)})
SELECT ?, ?, email, first_name, last_name, fields, ?, ?, ?, ?, ?
FROM staged.{_STAGED_TABLE} WHERE true ORDER BY email
ON CONFLICT (list_id, email) DO UPDATE SET
    first_name = CASE WHEN excluded.first_name <> '' THEN excluded.first_name
                      ELSE contact.first_name END,
    last_name = CASE WHEN excluded.last_name <> '' THEN excluded.last_name
                     ELSE contact.last_name END,
    fields = json_patch(contact.fields, excluded.fields)
"""  # noqa: S608  (fixed names only)


_PARENTS_EXIST = """
SELECT EXISTS (SELECT 1 FROM workspace WHERE id = ?1)
   AND EXISTS (SELECT 1 FROM contact_list WHERE id = ?2 AND workspace_id = ?1)
   AND (?3 IS NULL OR EXISTS (SELECT 1 FROM "user" WHERE id = ?3))
"""


class _StagedWriter:
    """SQLite imports: the reading thread stages rows in a scratch SQLite file (one per
    batch, next to the upload); a writer thread moves each finished file into the
    `contact` table in one transaction with the progress, while the next batch is
    read. SQLite works without holding the GIL, so the two overlap.

    Why: the unique (list_id, email) index is what an import pays for. New addresses
    land all over it, and rows inserted one by one in file order touch (and commit)
    index pages at random; one `INSERT ... SELECT ... ORDER BY email` per batch
    walks the index once, in order. The upsert also makes the race with someone
    adding one of the addresses meanwhile harmless.

    The scratch files are not the database: written without a journal or fsync, and
    deleted once used (or when the import ends, whatever happens).
    """

    def __init__(self, run: _ImportRun) -> None:
        self.run = run
        self.error: BaseException | None = None
        stem = Path(run.claim.stored_name).stem
        self._pattern = f"{stem}-staging-*.sqlite"
        self._name = f"{stem}-staging-{{}}.sqlite"
        self._number = 0
        self._scratch: sqlite3.Connection | None = None
        self._path: Path | None = None
        self._rows = 0
        self._queue: queue.Queue[tuple[Path, int, dict[str, Any]] | None] = queue.Queue(1)
        self._thread = threading.Thread(
            target=self._work, name=f"contact-import-{run.claim.import_id}", daemon=True
        )

    def __enter__(self) -> _StagedWriter:
        self._clean()  # files a dead run left behind
        conn = self.run.engine.connect()
        # Out of the pool: the settings below end with this connection. Foreign keys
        # are checked once per batch instead of once per row (_write): every row
        # refers to the same workspace, list and user.
        conn.detach()
        try:
            conn.exec_driver_sql(f"PRAGMA cache_size=-{STAGED_CACHE_KIB}")
            conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint={SQLITE_CHECKPOINT_PAGES}")
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self._close_scratch()
        finally:
            self._queue.put(None)  # after the batches handed over: they are written first
            self._thread.join()
            self._conn.close()
            self._clean()
        if self.error is not None and exc_info[0] is None:
            raise self.error

    # -- the reading thread

    def stage(self, rows: Iterable[tuple[str, str, str, str]], count: int) -> None:
        if not count:
            return
        if self._scratch is None:
            self._number += 1
            self._path = self.run.folder / self._name.format(self._number)
            self._path.unlink(missing_ok=True)
            self._scratch = sqlite3.connect(self._path, isolation_level=None)
            self._scratch.execute("PRAGMA journal_mode=OFF")
            self._scratch.execute("PRAGMA synchronous=OFF")
            self._scratch.execute(
                f"CREATE TABLE {_STAGED_TABLE} "
                "(email TEXT, first_name TEXT, last_name TEXT, fields TEXT)"
            )
            self._scratch.execute("BEGIN")
        # Many rows per INSERT: binding is the same, the statement runs less often.
        values = list(chain.from_iterable(rows))
        step = 4 * _STAGED_PER_INSERT
        whole = len(values) - len(values) % step
        execute = self._scratch.execute
        for start in range(0, whole, step):
            execute(_STAGE_MANY, values[start : start + step])
        if whole < len(values):
            rest = values[whole:]
            self._scratch.executemany(_STAGE_ONE, zip(*[iter(rest)] * 4, strict=True))
        self._rows += count

    def hand_over(self, progress: dict[str, Any]) -> None:
        """Queue the rows staged so far and `progress` for the writer (waits while it
        still has the batch before the last one); raises what stopped the writer."""
        if self.error is not None:
            raise self.error
        path, rows = self._path, self._rows
        self._close_scratch()
        self._queue.put((path, rows, progress))

    def _close_scratch(self) -> None:
        if self._scratch is not None:
            self._scratch.execute("COMMIT")
            self._scratch.close()
            self._scratch = None
        self._path, self._rows = None, 0

    def _clean(self) -> None:
        for path in self.run.folder.glob(self._pattern):
            path.unlink(missing_ok=True)

    # -- the writer thread

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            path, rows, progress = item
            try:
                if self.error is None:
                    self._write(path, rows, progress)
            except BaseException as exc:
                self.error = exc
            finally:
                if path is not None:
                    path.unlink(missing_ok=True)

    def _write(self, path: Path | None, rows: int, progress: dict[str, Any]) -> None:
        run, conn, claim = self.run, self._conn, self.run.claim
        table = ContactImport.__table__
        if path is not None:
            conn.exec_driver_sql("ATTACH DATABASE ? AS staged", (str(path),))
            conn.commit()
        try:
            with conn.begin():
                # Take the write lock first: what is read below is then what is written.
                conn.execute(
                    sa.update(table)
                    .where(table.c.id == claim.import_id)
                    .values(updated_at=utcnow())
                )
                added = 0
                if path is not None:
                    before = conn.exec_driver_sql("SELECT max(id) FROM contact").scalar()
                    now = _timestamp_param(run.engine, utcnow())
                    conn.exec_driver_sql(
                        _STAGED_UPSERT,
                        (
                            claim.workspace_id, claim.list_id, True, Source.IMPORT.value,
                            claim.user_id, now, now,
                        ),
                    )  # fmt: skip
                    added = conn.exec_driver_sql(
                        "SELECT count(*) FROM contact WHERE id > ?", (before or 0,)
                    ).scalar()
                    # What the foreign keys would have checked on each row: the write
                    # lock is held, so nothing can delete them before the commit.
                    parents = conn.exec_driver_sql(
                        _PARENTS_EXIST, (claim.workspace_id, claim.list_id, claim.user_id)
                    ).scalar()
                    if not parents:
                        raise IntegrityError(
                            "staged contact import", None, sqlite3.IntegrityError(
                                "FOREIGN KEY constraint failed (the list, its workspace or "
                                "the importing user is gone)"
                            ),
                        )  # fmt: skip
                outcome = run.outcome
                imported = outcome.rows_imported + rows
                updated = outcome.rows_updated + rows - added
                conn.execute(
                    sa.update(table)
                    .where(table.c.id == claim.import_id)
                    .values(
                        **progress,
                        rows_imported=imported,
                        rows_updated=updated,
                        updated_at=utcnow(),  # the heartbeat a stale claim is judged by
                    )
                )
            outcome.rows_imported, outcome.rows_updated = imported, updated
        finally:
            if path is not None:
                conn.exec_driver_sql("DETACH DATABASE staged")
                conn.commit()
