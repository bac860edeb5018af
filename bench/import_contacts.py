"""Contact import rows per second: the import job beside Python's bare csv reader.

Setup (not timed): a generated CSV of --rows rows and 10 columns (email, first
and last name, 7 custom fields; mixed-case addresses, some quoted values with
commas and quotes) in a temporary folder, and a fresh, migrated SQLite database
there with one workspace and one empty contact list.

Measured in the same run, on the same file:
- import: `run_contact_import`, the function the RQ job calls (no Redis here: the
  import is created with `start_contact_import` and run directly), with
  everything a real import does: streaming and checking the CSV, checking every
  address, deduplication, batched writes, progress and the audit entry.
- reference: `csv.reader` over the same file, counting rows (best of two runs,
  one before and one after the import, so the ratio is never flattered).

Peak memory is the process's peak resident set size (`resource.getrusage`
ru_maxrss): everything this process held at any time, Python itself included.

Prints:
    INFO import_contacts_peak_memory=<MB>MB target=<300MB
    INFO sqlite_insert_floor=<rows/s>rows/s ratio=<r>
    INFO sqlite_staged_floor=<rows/s>rows/s ratio=<r>
    RESULT import_contacts=<rows/s>rows/s reference=<rows/s>rows/s ratio=<r> target=0.25

The floor lines (skip them with --no-floor) measure the database writes alone, on
the same kind of rows built beforehand, into a fresh database with the same schema:
- sqlite_insert_floor: row by row in file order, by the sqlite3 driver in batches
  of BATCH_ROWS (what imports did before the staged writes; PostgreSQL's path);
- sqlite_staged_floor: the import's staged writes (`_StagedWriter`: rows staged in
  scratch files, moved into the list by its writer thread with one sorted upsert
  per STAGED_BATCH_ROWS rows). It bounds what the import can reach here.

    .venv/bin/python bench/import_contacts.py [--rows 1000000] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_RATIO = 0.25
TARGET_MEMORY_MB = 300
COLUMNS = [
    "Email",
    "First name",
    "Last name",
    "Customer ID",
    "City",
    "Country",
    "Plan",
    "Signup date",
    "Score",
    "Notes",
]
CITIES = ("Berlin", "Paris", "Lyon", "Madrid", "Rome", "Oslo", "Lisbon", "Vienna", "São Paulo")


def generate(path: Path, rows: int) -> None:
    rng = random.Random(4)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for i in range(rows):
            first, last = f"Ann{i % 5000}", f"Lee{i // 5000}"
            email = f"{first}.{last}.{i}@Example{i % 997}.com"
            writer.writerow(
                [
                    email if i % 3 else email.upper(),
                    first,
                    last,
                    f"C{i:08d}",
                    CITIES[i % len(CITIES)],
                    "DE" if i % 4 else "FR",
                    ("free", "pro", "team")[i % 3],
                    f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}",
                    str(rng.randint(0, 100)),
                    'Said "hi", then left' if i % 10 == 0 else "",
                ]
            )


def bare_reader(path: Path) -> float:
    start = time.perf_counter()
    count = 0
    with open(path, newline="", encoding="utf-8") as fh:
        for _row in csv.reader(fh):
            count += 1
    return (count - 1) / (time.perf_counter() - start)


def sqlite_floor(workdir: Path, rows: int, batch: int) -> float:
    """Rows/s of the database writes alone: the same kind of rows, built beforehand,
    inserted with the import's SQL and batch size by the sqlite3 driver directly, into a
    fresh database with the same schema. No import can be faster than this."""
    from mailer_app.db import make_engine, session_scope, upgrade_to_head
    from mailer_app.models import Source
    from mailer_app.services import contacts, workspaces
    from mailer_app.services.contact_import import _bulk_writes, _insert_sql

    url = f"sqlite:///{workdir / 'floor.db'}"
    upgrade_to_head(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        ws = workspaces.create_workspace(session=session, name="Floor", source=Source.CLI).id
        list_id = contacts.create_contact_list(
            session=session, workspace_id=ws, user_id=None, name="Floor"
        ).id
    sql, now = _insert_sql(engine), "2025-01-01 00:00:00.000000"
    fields = (
        '{"customer_id":"C00000001","city":"Berlin","country":"DE","plan":"pro",'
        '"signup_date":"2024-01-01","score":"42"}'
    )
    spent = 0.0
    try:
        with engine.connect() as conn, _bulk_writes(conn):
            for start in range(0, rows, batch):
                values = [
                    (ws, list_id, f"ann{i % 5000}.lee{i // 5000}.{i}@example{i % 997}.com",
                     f"Ann{i % 5000}", f"Lee{i // 5000}", fields, True, "import", None, now, now)
                    for i in range(start, min(rows, start + batch))
                ]  # fmt: skip
                began = time.perf_counter()
                with conn.begin():
                    conn.exec_driver_sql(sql, values)
                spent += time.perf_counter() - began
    finally:
        engine.dispose()
    return rows / spent


def sqlite_staged_floor(workdir: Path, rows: int) -> float:
    """Rows/s of the import's staged writes alone (`_StagedWriter`, as the import uses
    it) on rows built beforehand, into a fresh database with the same schema."""
    from types import SimpleNamespace

    from mailer_app.db import make_engine, session_scope, upgrade_to_head
    from mailer_app.models import Source
    from mailer_app.services import contacts, workspaces
    from mailer_app.services.contact_import import (
        CHECK_ROWS,
        STAGED_BATCH_ROWS,
        ImportOutcome,
        _Claim,
        _StagedWriter,
    )

    url = f"sqlite:///{workdir / 'staged-floor.db'}"
    upgrade_to_head(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        ws = workspaces.create_workspace(session=session, name="Floor", source=Source.CLI).id
        list_id = contacts.create_contact_list(
            session=session, workspace_id=ws, user_id=None, name="Floor"
        ).id
    fields = (
        '{"customer_id":"C00000001","city":"Berlin","country":"DE","plan":"pro",'
        '"signup_date":"2024-01-01","score":"42"}'
    )
    chunks = [
        [(f"ann{i % 5000}.lee{i // 5000}.{i}@example{i % 997}.com", f"Ann{i % 5000}",
          f"Lee{i // 5000}", fields) for i in range(start, min(rows, start + CHECK_ROWS))]
        for start in range(0, rows, CHECK_ROWS)
    ]  # fmt: skip
    claim = _Claim(import_id=0, workspace_id=ws, list_id=list_id, user_id=None,
                   stored_name="floor.csv", column_mapping={})  # fmt: skip
    run = SimpleNamespace(
        engine=engine, claim=claim, folder=workdir, outcome=ImportOutcome(0, "running")
    )
    try:
        began = time.perf_counter()
        with _StagedWriter(run) as writer:  # type: ignore[arg-type]
            staged = 0
            for chunk in chunks:
                writer.stage(chunk, len(chunk))
                staged += len(chunk)
                if staged >= STAGED_BATCH_ROWS:
                    writer.hand_over({})
                    staged = 0
            writer.hand_over({})
        spent = time.perf_counter() - began
    finally:
        engine.dispose()
    if run.outcome.rows_imported != rows:
        raise RuntimeError(f"staged floor wrote {run.outcome.rows_imported:,} rows of {rows:,}")
    return rows / spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dir", default=None, help="where the CSV and database go")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--no-floor",
        dest="floor",
        action="store_false",
        help="skip measuring the database writes alone (an INFO line)",
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-contacts-", dir=args.dir))
    from cryptography.fernet import Fernet

    os.environ.update(
        DATA_DIR=str(workdir / "data"),
        DATABASE_URL=f"sqlite:///{workdir / 'bench.db'}",
        MASTER_KEY=Fernet.generate_key().decode(),
        MAILER_SUPERVISE="0",
        MAILER_LAB="0",
        CONTACTS_MAX_UPLOAD_MB="10000",
    )
    from mailer_app.db import get_engine, session_scope, upgrade_to_head
    from mailer_app.models import Contact, Source
    from mailer_app.services import contacts, workspaces
    from mailer_app.services.contact_import import run_contact_import

    try:
        upgrade_to_head()
        with session_scope() as session:
            workspace = workspaces.create_workspace(
                session=session, name="Bench", source=Source.CLI
            )
            contact_list = contacts.create_contact_list(
                session=session, workspace_id=workspace.id, user_id=None, name="Everyone"
            )
            workspace_id, list_id = workspace.id, contact_list.id

        writer = contacts.UploadWriter(workspace_id)  # where an upload would be stored
        writer.abort()
        print(f"generating {args.rows:,} rows in {workdir} ...", flush=True)
        path = writer.path
        generate(path, args.rows)
        size_mb = path.stat().st_size / 1e6
        print(f"  {size_mb:.1f} MB", flush=True)

        reference = [bare_reader(path)]
        contacts.queue_import = lambda _import_id: None  # no Redis: run the job's function here
        with session_scope() as session:
            preview = contacts.preview_csv(path)
            item = contacts.start_contact_import(
                session=session,
                workspace_id=workspace_id,
                user_id=None,
                list_id=list_id,
                stored_name=writer.stored_name,
                filename="bench.csv",
                mapping=contacts.suggest_mapping(preview.columns),
                source=Source.CLI,
            )
            import_id = item.id
        start = time.perf_counter()
        outcome = run_contact_import(import_id=import_id)
        elapsed = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        reference.append(bare_reader(path) if path.exists() else 0.0)

        with session_scope() as session:
            from sqlmodel import func, select

            stored = session.exec(select(func.count()).select_from(Contact)).one()
        if outcome.status != "done" or stored != args.rows or outcome.rows_rejected:
            print(f"FAILED: {outcome} ({stored:,} contacts stored)")
            return 1
        ours = outcome.rows_total / elapsed
        bare = max(reference)
        print(
            f"  import: {outcome.rows_total:,} rows in {elapsed:.1f} s; "
            f"csv.reader: {bare:,.0f} rows/s; database {get_engine().url.database}"
        )
        print(f"INFO import_contacts_peak_memory={peak_mb:.0f}MB target=<{TARGET_MEMORY_MB}MB")
        if args.floor:
            from mailer_app.services.contact_import import BATCH_ROWS

            floor = sqlite_floor(workdir, args.rows, BATCH_ROWS)
            print(
                f"INFO sqlite_insert_floor={floor:.0f}rows/s ratio={floor / bare:.3f} "
                "(row-by-row writes alone, rows built beforehand)"
            )
            staged = sqlite_staged_floor(workdir, args.rows)
            print(
                f"INFO sqlite_staged_floor={staged:.0f}rows/s ratio={staged / bare:.3f} "
                "(the import's staged writes alone, rows built beforehand)"
            )
        print(
            f"RESULT import_contacts={ours:.0f}rows/s reference={bare:.0f}rows/s "
            f"ratio={ours / bare:.3f} target={TARGET_RATIO}"
        )
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
