"""Imports in many batches, on SQLite (staging files and a writer thread) and on
PostgreSQL (row by row): the same rows, updates and counts as one row at a time."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from mailer_app.models import Contact, ContactImport
from mailer_app.services import contact_import, contacts
from mailer_app.services.contact_import import run_contact_import
from mailer_app.settings import get_settings
from tests.integration.test_contacts import make_list, new_workspace, start, stored_contacts

HEADER = "email,first_name,last_name,customer_id,tier,notes\n"
MAPPING = {
    "email": "email",
    "first_name": "first_name",
    "last_name": "last_name",
    "customer_id": "customer_id",
    "tier": "tier",
    "notes": "notes",
}
EXISTING = {  # already in the list: address -> (first, last, fields)
    "old1@example.com": ("Olga", "Old", {"customer_id": "OLD-1", "since": "2019"}),
    "old2@example.com": ("", "Only-last", {"tier": "silver"}),
    "old3@example.com": ("Otto", "", {}),
}


def file_rows() -> list[tuple[str, str, str, str, str, str]]:
    rows = []
    for i in range(60):
        rows.append((f"New{i}@Example.com", f"First{i}", "" if i % 3 else f"Last{i}",
                     f"C{i}" if i % 4 else "", "gold" if i % 5 == 0 else "",
                     'say "hi"\nbye' if i % 7 == 0 else ""))  # fmt: skip
        if i == 10:
            rows.append(("OLD1@example.com", "", "Newlast", "NEW-1", "", ""))
        if i == 20:
            rows.append(("old2@example.com", "Ola", "", "", "gold", "note"))
        if i == 30:
            rows.append(("old3@example.com", "", "", "", "", ""))
        if i == 40:
            rows.append(("new5@example.com", "Dup", "", "", "", ""))  # a duplicate
        if i == 50:
            rows.append(("not an address", "Bad", "", "", "", ""))
    return rows


def expected_contacts(rows) -> tuple[dict[str, tuple], int, int, int]:
    """What one row at a time makes of `rows`: contacts, imported, updated, rejected."""
    people = {
        email: (first, last, dict(fields)) for email, (first, last, fields) in EXISTING.items()
    }
    seen, imported, updated, rejected = set(), 0, 0, 0
    for email, first, last, customer_id, tier, notes in rows:
        email = email.lower()
        if "@" not in email or email in seen:
            rejected += 1
            continue
        seen.add(email)
        fields = {k: v for k, v in (("customer_id", customer_id), ("tier", tier),
                                    ("notes", notes)) if v}  # fmt: skip
        imported += 1
        if email in people:
            updated += 1
            old_first, old_last, old_fields = people[email]
            people[email] = (first or old_first, last or old_last, {**old_fields, **fields})
        else:
            people[email] = (first, last, fields)
    return people, imported, updated, rejected


def as_csv(rows) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows(rows)
    return HEADER + out.getvalue()


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(contact_import, "CHECK_ROWS", 4)
    monkeypatch.setattr(contact_import, "STAGED_BATCH_ROWS", 9)
    monkeypatch.setattr(contact_import, "BATCH_ROWS", 9)


def test_an_import_in_many_batches_adds_and_updates_like_one_row_at_a_time(
    session, redis_url, small_batches
):
    ws = new_workspace(session)
    list_id = make_list(session, ws)
    for email, (first, last, fields) in EXISTING.items():
        session.add(Contact(workspace_id=ws, list_id=list_id, email=email, first_name=first,
                            last_name=last, fields=fields))  # fmt: skip
    session.commit()
    rows = file_rows()
    outcome = run_contact_import(import_id=start(ws, list_id, as_csv(rows), MAPPING))

    people, imported, updated, rejected = expected_contacts(rows)
    assert (outcome.status, outcome.rows_total) == ("done", len(rows))
    assert (outcome.rows_imported, outcome.rows_updated, outcome.rows_rejected) == (
        imported, updated, rejected,
    )  # fmt: skip
    assert (imported, updated, rejected) == (63, 3, 2)
    stored = stored_contacts(session, list_id)
    got = {c.email: (c.first_name, c.last_name, c.fields) for c in stored.values()}
    assert got == people
    # Key order too: stored fields keep theirs, new ones come after (as dict.update).
    assert list(stored["old1@example.com"].fields) == ["customer_id", "since"]
    assert list(stored["old2@example.com"].fields) == ["tier", "notes"]
    assert list(stored["new0@example.com"].fields) == ["tier", "notes"]
    assert stored["new0@example.com"].fields["notes"] == 'say "hi"\nbye'
    assert all(c.source == "import" and c.is_active for c in stored.values() if "new" in c.email)

    session.expire_all()
    item = session.get(ContactImport, outcome.import_id)
    assert (item.rows_total, item.rows_imported, item.rows_updated, item.rows_rejected) == (
        len(rows), imported, updated, rejected,
    )  # fmt: skip
    # Reported on their physical lines (quoted values run over two), in file order.
    text = as_csv(rows).splitlines(keepends=True)
    lines = [n for n, line in enumerate(text, 1) if line.startswith(("new5@", "not an"))]
    assert [e["line"] for e in item.errors] == lines and len(lines) == 2
    folder = get_settings().contact_uploads_dir(ws)
    assert not list(folder.glob("*-staging-*"))  # SQLite's staging files are gone


def test_sqlite_imports_give_the_pool_back_its_foreign_keys(session, redis_url, small_batches):
    if session.get_bind().dialect.name != "sqlite":
        pytest.skip("SQLite's staged writes only")
    ws = new_workspace(session)
    list_id = make_list(session, ws)
    run_contact_import(import_id=start(ws, list_id, as_csv(file_rows()), MAPPING))
    engine = contact_import.get_engine()
    with engine.connect() as conn:  # whichever connection the pool hands out
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA database_list").all()[-1][1] == "main"


def test_a_failed_write_fails_the_import_with_the_batches_before_it_kept(
    session, redis_url, small_batches, monkeypatch
):
    if session.get_bind().dialect.name != "sqlite":
        pytest.skip("SQLite's staged writes only")
    ws = new_workspace(session)
    list_id = make_list(session, ws)
    import_id = start(ws, list_id, as_csv(file_rows()), MAPPING)
    write = contact_import._StagedWriter._write
    calls = []

    def fail_the_third(writer, path, rows, progress):
        calls.append(rows)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        write(writer, path, rows, progress)

    monkeypatch.setattr(contact_import._StagedWriter, "_write", fail_the_third)
    with pytest.raises(RuntimeError, match="disk full"):
        run_contact_import(import_id=import_id)
    progress = contacts.import_progress(session=session, workspace_id=ws, import_id=import_id)
    assert progress.status == "failed"
    assert "unexpected error" in progress.message
    assert progress.rows_imported == calls[0] + calls[1] == len(stored_contacts(session, list_id))
    folder = get_settings().contact_uploads_dir(ws)
    assert not list(folder.glob("*-staging-*"))


def test_stored_fields_are_json_both_ways(session, redis_url, small_batches):
    """Rows the staged upsert merged read back as the same JSON the ORM writes."""
    ws = new_workspace(session)
    list_id = make_list(session, ws)
    session.add(Contact(workspace_id=ws, list_id=list_id, email="old1@example.com",
                        fields={"a": "1", "é": "ü"}))  # fmt: skip
    session.commit()
    text = "email,b,a\nold1@example.com,2,\nold1@example.net,x,y\n"
    run_contact_import(import_id=start(ws, list_id, text, {"email": "email", "b": "b", "a": "a"}))
    table = Contact.__table__
    raw = dict(
        session.execute(
            sa.select(table.c.email, sa.cast(table.c.fields, sa.Text)).where(
                table.c.list_id == list_id
            )
        ).all()
    )
    assert json.loads(raw["old1@example.com"]) == {"a": "1", "é": "ü", "b": "2"}
    assert json.loads(raw["old1@example.net"]) == {"b": "x", "a": "y"}
