"""Contact lists, imports through the real job function, recipients and suppressions,
on SQLite and PostgreSQL (the `session` fixture runs each test on both)."""

from __future__ import annotations

import csv
import time
from datetime import timedelta

import pytest
from redis import Redis
from sqlmodel import Session, select

from jobs import connection
from jobs.contacts import import_contacts, import_job_id
from mailer_app.db import session_scope
from mailer_app.models import (
    AuditEntry,
    Campaign,
    CampaignVersion,
    Contact,
    ContactImport,
    ContactList,
    Source,
    Workspace,
    utcnow,
)
from mailer_app.services import InvalidInput, contacts, suppressions
from mailer_app.services.contact_import import run_contact_import
from mailer_app.settings import get_settings
from tests.conftest import wait_until

CSV_TEXT = (
    "Email,First Name,Last Name,Customer ID,Internal\n"
    "Ann@Example.com,Ann,Lee,C-1,x\n"
    "bob@example.com,Bob,,C-2,x\n"
    "not-an-address,Nobody,,C-3,x\n"
    "ANN@example.com,Ann again,,C-4,x\n"
    'carl@example.com,"=HYPERLINK(""http://evil"")",,C-5,x\n'
    "dora@example.com,Dora,Diaz,,x\n"
)
MAPPING = {
    "Email": "email",
    "First Name": "first_name",
    "Last Name": "last_name",
    "Customer ID": "customer_id",
    "Internal": "",  # not imported
}


@pytest.fixture(autouse=True)
def _fresh_clients():
    connection.close_redis()
    yield
    connection.close_redis()


def new_workspace(session: Session, name: str = "Contacts") -> int:
    workspace = Workspace(name=name, slug=f"{name.lower()}-{time.monotonic_ns()}")
    session.add(workspace)
    session.commit()
    return workspace.id


def upload(workspace_id: int, text: str | bytes, chunk: int = 7) -> str:
    """Store a file the way the page does: chunk by chunk through UploadWriter."""
    data = text.encode() if isinstance(text, str) else text
    writer = contacts.UploadWriter(workspace_id)
    for start in range(0, len(data), chunk):
        writer.write(data[start : start + chunk])
    return writer.finish()


def start(workspace_id: int, list_id: int, text: str, mapping=None) -> int:
    stored = upload(workspace_id, text)
    with session_scope() as tx:
        item = contacts.start_contact_import(
            session=tx,
            workspace_id=workspace_id,
            user_id=None,
            list_id=list_id,
            stored_name=stored,
            filename="people.csv",
            mapping=mapping or MAPPING,
        )
        return item.id


def make_list(session: Session, workspace_id: int, name: str = "Customers") -> int:
    contact_list = contacts.create_contact_list(
        session=session, workspace_id=workspace_id, user_id=None, name=name
    )
    session.commit()
    return contact_list.id


def stored_contacts(session: Session, list_id: int) -> dict[str, Contact]:
    session.expire_all()
    rows = session.exec(select(Contact).where(Contact.list_id == list_id)).all()
    return {c.email: c for c in rows}


# --- imports ------------------------------------------------------------------------------


def test_an_import_runs_through_the_job_and_reports_every_rejected_row(session, redis_url):
    ws = new_workspace(session)
    list_id = make_list(session, ws)
    stored = upload(ws, CSV_TEXT)
    preview = contacts.preview_csv(contacts.upload_path(workspace_id=ws, stored_name=stored))
    assert preview.columns == ["Email", "First Name", "Last Name", "Customer ID", "Internal"]
    assert preview.rows[0] == ["Ann@Example.com", "Ann", "Lee", "C-1", "x"]
    with session_scope() as tx:
        import_id = contacts.start_contact_import(
            session=tx, workspace_id=ws, user_id=None, list_id=list_id, stored_name=stored,
            filename="people.csv", mapping=MAPPING,
        ).id  # fmt: skip

    # Queued on commit, for a worker; here the job function runs in the test.
    redis = Redis.from_url(redis_url)
    assert redis.lrange("rq:queue:build", 0, -1) == [import_job_id(import_id).encode()]
    progress = contacts.import_progress(session=session, workspace_id=ws, import_id=import_id)
    assert (progress.status, progress.percent, progress.rows_total) == ("pending", 0, 0)

    result = import_contacts(import_id)
    assert result["status"] == "done"

    progress = contacts.import_progress(session=session, workspace_id=ws, import_id=import_id)
    assert progress.status == "done" and progress.finished and progress.percent == 100
    assert (progress.rows_total, progress.rows_imported, progress.rows_updated) == (6, 4, 0)
    assert progress.rows_rejected == 2
    assert [(e["line"], e["email"]) for e in progress.errors] == [
        (4, "not-an-address"),
        (5, "ann@example.com"),
    ]
    assert "not a valid email address" in progress.errors[0]["reason"]
    assert progress.errors[1]["reason"].startswith("The same address as line 2")

    people = stored_contacts(session, list_id)
    assert sorted(people) == [
        "ann@example.com",
        "bob@example.com",
        "carl@example.com",
        "dora@example.com",
    ]
    ann = people["ann@example.com"]
    assert (ann.first_name, ann.last_name, ann.fields) == ("Ann", "Lee", {"customer_id": "C-1"})
    assert people["dora@example.com"].fields == {}  # empty cells are left out
    assert people["carl@example.com"].first_name == '=HYPERLINK("http://evil")'
    assert ann.source == Source.IMPORT and ann.is_active
    assert ann.created_at.tzinfo is not None and utcnow() - ann.created_at < timedelta(minutes=5)

    session.expire_all()
    assert session.get(ContactList, list_id).field_names == ["customer_id"]
    rows = contacts.list_contact_lists(session=session, workspace_id=ws)
    assert [(r.name, r.contact_count, r.field_names) for r in rows] == [
        ("Customers", 4, ["customer_id"])
    ]

    # The full report is a CSV a spreadsheet opens safely; the upload itself is gone.
    report = contacts.import_report_path(session=session, workspace_id=ws, import_id=import_id)
    with open(report, newline="", encoding="utf-8-sig") as fh:
        assert list(csv.reader(fh))[0] == ["line", "email", "problem"]
    assert not contacts.upload_path(workspace_id=ws, stored_name=stored).exists()
    actions = session.exec(select(AuditEntry.action).where(AuditEntry.workspace_id == ws)).all()
    assert {"contact_import.start", "contact_import.finish"} <= set(actions)


def test_a_second_import_updates_contacts_already_in_the_list(session, redis_url):
    ws = new_workspace(session)
    list_id = make_list(session, ws)
    run_contact_import(import_id=start(ws, list_id, CSV_TEXT))
    again = (
        "email,first_name,last_name,customer_id,tier\n"
        "ann@example.com,Annie,,,gold\n"  # empty cells keep what is stored
        "erin@example.com,Erin,,C-9,\n"
    )
    mapping = {"email": "email", "first_name": "first_name", "last_name": "last_name",
               "customer_id": "customer_id", "tier": "tier"}  # fmt: skip
    outcome = run_contact_import(import_id=start(ws, list_id, again, mapping))
    assert (outcome.status, outcome.rows_imported, outcome.rows_updated) == ("done", 2, 1)
    people = stored_contacts(session, list_id)
    ann = people["ann@example.com"]
    assert (ann.first_name, ann.last_name) == ("Annie", "Lee")
    assert ann.fields == {"customer_id": "C-1", "tier": "gold"}
    assert people["erin@example.com"].fields == {"customer_id": "C-9"}
    assert len(people) == 5
    session.expire_all()
    assert session.get(ContactList, list_id).field_names == ["customer_id", "tier"]


def test_running_an_import_twice_changes_nothing_the_second_time(session, redis_url):
    ws = new_workspace(session)
    list_id = make_list(session, ws)
    import_id = start(ws, list_id, CSV_TEXT)
    first = run_contact_import(import_id=import_id)
    second = run_contact_import(import_id=import_id)
    assert first.status == second.status == "done"
    assert second.rows_imported == first.rows_imported == 4
    assert len(stored_contacts(session, list_id)) == 4


def test_an_import_whose_worker_died_is_taken_over_without_duplicates(session, redis_url):
    ws = new_workspace(session)
    list_id = make_list(session, ws)
    import_id = start(ws, list_id, CSV_TEXT)
    session.add(Contact(workspace_id=ws, list_id=list_id, email="ann@example.com"))
    item = session.get(ContactImport, import_id)
    item.status = "running"  # a run that wrote one row and died
    session.add(item)
    session.commit()
    assert run_contact_import(import_id=import_id).status == "running"  # still fresh: left alone

    old = utcnow() - timedelta(minutes=30)
    session.execute(
        ContactImport.__table__.update()
        .where(ContactImport.__table__.c.id == import_id)
        .values(updated_at=old)
    )
    session.commit()
    outcome = run_contact_import(import_id=import_id)
    assert (outcome.status, outcome.rows_imported, outcome.rows_updated) == ("done", 4, 1)
    assert len(stored_contacts(session, list_id)) == 4


def test_a_contact_added_while_an_import_runs_is_updated_not_duplicated(
    session, redis_url, monkeypatch
):
    from mailer_app.services import contact_import

    ws = new_workspace(session)
    list_id = make_list(session, ws)
    import_id = start(ws, list_id, CSV_TEXT)
    prepare = contact_import._ImportRun._prepare

    def prepare_then_race(run, mapping):
        prepare(run, mapping)  # the list was empty: no lookups planned
        with session_scope() as tx:
            tx.add(Contact(workspace_id=ws, list_id=list_id, email="bob@example.com"))

    monkeypatch.setattr(contact_import._ImportRun, "_prepare", prepare_then_race)
    outcome = run_contact_import(import_id=import_id)
    assert (outcome.status, outcome.rows_imported, outcome.rows_updated) == ("done", 4, 1)
    people = stored_contacts(session, list_id)
    assert len(people) == 4
    assert people["bob@example.com"].first_name == "Bob"


def test_an_unreadable_file_fails_the_import_with_the_reason(session, redis_url):
    ws = new_workspace(session)
    list_id = make_list(session, ws)
    import_id = start(ws, list_id, "email\nann@example.com\n", {"email": "email"})
    stored_name = session.get(ContactImport, import_id).stored_name
    session.commit()  # end this read transaction: the import writes from elsewhere
    path = contacts.upload_path(workspace_id=ws, stored_name=stored_name)
    path.write_bytes("email\nann@example.com\n".encode("utf-32"))  # replaced meanwhile
    outcome = run_contact_import(import_id=import_id)
    assert outcome.status == "failed"
    progress = contacts.import_progress(session=session, workspace_id=ws, import_id=import_id)
    assert progress.status == "failed"
    assert progress.message.startswith("This file is saved as UTF-32 text")
    assert stored_contacts(session, list_id) == {}


def test_header_only_file_finishes_with_a_message(session, redis_url):
    ws = new_workspace(session)
    list_id = make_list(session, ws)
    outcome = run_contact_import(
        import_id=start(ws, list_id, "email,first_name\n", {"email": "email"})
    )
    assert (outcome.status, outcome.rows_total, outcome.rows_imported) == ("done", 0, 0)
    assert outcome.message == "The file has column names but no rows of contacts."


def test_uploads_over_the_cap_are_stopped_while_they_arrive(session, monkeypatch):
    monkeypatch.setenv("CONTACTS_MAX_UPLOAD_MB", "0.001")
    get_settings.cache_clear()
    writer = contacts.UploadWriter(1)
    writer.write(b"x" * 900)
    with pytest.raises(contacts.FileTooLarge, match="This file is larger than 1 KB, the most"):
        writer.write(b"x" * 200)
    assert not writer.path.exists()


def test_one_import_per_list_at_a_time_and_a_mapping_must_name_the_email(session, redis_url):
    ws = new_workspace(session)
    list_id = make_list(session, ws)
    start(ws, list_id, CSV_TEXT)
    with pytest.raises(InvalidInput, match="already running"):
        start(ws, list_id, CSV_TEXT)
    other = make_list(session, ws, "Other")
    with pytest.raises(InvalidInput, match="Choose the column that holds the email addresses"):
        start(ws, other, CSV_TEXT, {"Email": "", "First Name": "first_name"})


# --- lists and scoping ----------------------------------------------------------------------


def test_list_names_are_unique_in_a_workspace_whatever_the_case(session):
    ws = new_workspace(session)
    list_id = make_list(session, ws, "Customers")
    with pytest.raises(InvalidInput, match="already a list named Customers"):
        contacts.create_contact_list(
            session=session, workspace_id=ws, user_id=None, name="customers"
        )
    session.rollback()
    other_ws = new_workspace(session, "Other")
    make_list(session, other_ws, "Customers")  # another workspace may
    contacts.rename_contact_list(
        session=session, workspace_id=ws, list_id=list_id, user_id=None, name="  VIP   clients "
    )
    session.commit()
    assert [r.name for r in contacts.list_contact_lists(session=session, workspace_id=ws)] == [
        "VIP clients"
    ]


def test_nothing_crosses_workspaces(session, redis_url):
    ws, other = new_workspace(session, "Mine"), new_workspace(session, "Theirs")
    list_id = make_list(session, ws)
    import_id = start(ws, list_id, CSV_TEXT)
    run_contact_import(import_id=import_id)
    assert contacts.list_contact_lists(session=session, workspace_id=other) == []
    with pytest.raises(contacts.ContactListNotFound):
        contacts.get_contact_list(session=session, workspace_id=other, list_id=list_id)
    with pytest.raises(contacts.ContactImportNotFound):
        contacts.import_progress(session=session, workspace_id=other, import_id=import_id)
    with pytest.raises(contacts.ContactImportNotFound):
        contacts.import_report_path(session=session, workspace_id=other, import_id=import_id)
    assert (
        list(contacts.iter_recipients(session=session, workspace_id=other, list_ids=[list_id]))
        == []
    )
    assert contacts.count_recipients(session=session, workspace_id=other, list_ids=[list_id]) == 0
    with pytest.raises(contacts.ContactListNotFound):
        contacts.delete_contact_list(
            session=session, workspace_id=other, list_id=list_id, user_id=None
        )


def test_deleting_a_list_removes_its_contacts_and_files_unless_a_campaign_uses_it(
    session, redis_url
):
    ws = new_workspace(session)
    list_id = make_list(session, ws)
    import_id = start(ws, list_id, CSV_TEXT)
    with pytest.raises(InvalidInput, match="still running"):
        contacts.delete_contact_list(
            session=session, workspace_id=ws, list_id=list_id, user_id=None
        )
    session.rollback()
    run_contact_import(import_id=import_id)
    report = contacts.import_report_path(session=session, workspace_id=ws, import_id=import_id)

    campaign = Campaign(workspace_id=ws, name="Spring sale")
    session.add(campaign)
    session.flush()
    version = CampaignVersion(
        workspace_id=ws, campaign_id=campaign.id, number=1, recipients={"list_ids": [list_id]}
    )
    session.add(version)
    session.commit()
    with pytest.raises(InvalidInput, match="The campaign Spring sale sends to this list"):
        contacts.delete_contact_list(
            session=session, workspace_id=ws, list_id=list_id, user_id=None
        )
    session.rollback()

    version = session.get(CampaignVersion, version.id)
    version.recipients = {"list_ids": []}
    session.add(version)
    session.commit()
    contacts.delete_contact_list(session=session, workspace_id=ws, list_id=list_id, user_id=None)
    session.commit()
    assert stored_contacts(session, list_id) == {}
    assert session.exec(select(ContactImport).where(ContactImport.list_id == list_id)).all() == []
    assert not report.exists()


# --- recipients -----------------------------------------------------------------------------


def _recipients_fixture(session: Session) -> tuple[int, int, int]:
    ws = new_workspace(session)
    a, b = make_list(session, ws, "A"), make_list(session, ws, "B")
    for list_id, email, city in [
        (a, "ann@example.com", "Berlin"),
        (a, "bob@example.com", "Paris"),
        (a, "gone@example.com", "Berlin"),
        (b, "ann@example.com", "Berlin"),  # in both lists: one message
        (b, "carl@example.com", "berlin "),
        (b, "dora@example.com", ""),
    ]:
        session.add(
            Contact(
                workspace_id=ws, list_id=list_id, email=email, fields={"city": city} if city else {}
            )
        )
    session.add(Contact(workspace_id=ws, list_id=b, email="off@example.com", is_active=False))
    session.commit()
    suppressions.add_suppression(
        session=session, workspace_id=ws, email="Gone@Example.com", reason="unsubscribe"
    )
    session.commit()
    return ws, a, b


def test_recipients_are_each_address_once_without_suppressed_or_inactive(session):
    ws, a, b = _recipients_fixture(session)
    emails = [
        c.email for c in contacts.iter_recipients(session=session, workspace_id=ws, list_ids=[a, b])
    ]
    assert emails == ["ann@example.com", "bob@example.com", "carl@example.com", "dora@example.com"]
    assert contacts.count_recipients(session=session, workspace_id=ws, list_ids=[a, b]) == 4
    flagged = contacts.iter_recipients_flagged(session=session, workspace_id=ws, list_ids=[a])
    assert [(c.email, reason) for c, reason in flagged] == [
        ("ann@example.com", None),
        ("bob@example.com", None),
        ("gone@example.com", "unsubscribe"),
    ]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([{"field": "city", "op": "equals", "value": "BERLIN"}], ["ann", "carl"]),
        ([{"field": "city", "op": "not_equals", "value": "berlin"}], ["bob", "dora"]),
        ([{"field": "city", "op": "contains", "value": "ar"}], ["bob"]),
        ([{"field": "city", "op": "is_empty", "value": ""}], ["dora"]),
        ([{"field": "email", "op": "contains", "value": "D"}], ["dora"]),
        (
            [
                {"field": "city", "op": "is_not_empty", "value": ""},
                {"field": "email", "op": "not_equals", "value": "ann@example.com"},
            ],
            ["bob", "carl"],
        ),
    ],
)
def test_recipient_filters(session, filters, expected):
    ws, a, b = _recipients_fixture(session)
    found = contacts.iter_recipients(
        session=session, workspace_id=ws, list_ids=[a, b], filters=filters
    )
    assert [c.email.split("@")[0] for c in found] == expected
    assert contacts.count_recipients(
        session=session, workspace_id=ws, list_ids=[a, b], filters=filters
    ) == len(expected)


# --- suppressions ----------------------------------------------------------------------------


def test_suppressions_add_update_search_page_and_remove(session):
    ws = new_workspace(session)
    first = suppressions.add_suppression(
        session=session,
        workspace_id=ws,
        email=" Ann@Example.com ",
        reason="manual",
        note="asked by phone",
    )
    again = suppressions.add_suppression(
        session=session, workspace_id=ws, email="ann@example.com", reason="complaint"
    )
    assert again.id == first.id and (again.reason, again.note) == ("complaint", "asked by phone")
    for i in range(60):
        suppressions.add_suppression(
            session=session, workspace_id=ws, email=f"bulk{i:02d}@example.org", reason="hard_bounce"
        )
    session.commit()
    with pytest.raises(InvalidInput, match="Choose a reason") as caught:
        suppressions.add_suppression(
            session=session, workspace_id=ws, email="x@example.com", reason="spam"
        )
    assert caught.value.field == "reason"
    with pytest.raises(InvalidInput, match="not a valid email address"):
        suppressions.add_suppression(
            session=session, workspace_id=ws, email="nope", reason="manual"
        )

    page = suppressions.list_suppressions(session=session, workspace_id=ws, page=2)
    assert (page.total, page.pages, page.page, len(page.rows)) == (61, 2, 2, 11)
    found = suppressions.list_suppressions(session=session, workspace_id=ws, search="BULK0")
    assert found.total == 10
    assert suppressions.list_suppressions(session=session, workspace_id=ws, search="%").total == 0
    assert (
        suppressions.list_suppressions(session=session, workspace_id=ws, reason="complaint").total
        == 1
    )

    assert suppressions.is_suppressed(session=session, workspace_id=ws, email="ANN@example.com")
    assert suppressions.suppressed_among(
        session=session,
        workspace_id=ws,
        emails=["Ann@example.com", "new@example.com", "bulk07@example.org"],
    ) == {"ann@example.com": "complaint", "bulk07@example.org": "hard_bounce"}
    other = new_workspace(session, "Other")
    assert not suppressions.is_suppressed(
        session=session, workspace_id=other, email="ann@example.com"
    )

    assert (
        suppressions.remove_suppression(session=session, workspace_id=ws, suppression_id=first.id)
        == "ann@example.com"
    )
    session.commit()
    assert not suppressions.is_suppressed(session=session, workspace_id=ws, email="ann@example.com")
    with pytest.raises(suppressions.SuppressionNotFound):
        suppressions.remove_suppression(session=session, workspace_id=ws, suppression_id=first.id)


def test_suppressions_import_from_csv_with_and_without_a_header(session, tmp_path):
    ws = new_workspace(session)
    suppressions.add_suppression(
        session=session, workspace_id=ws, email="old@example.com", reason="manual"
    )
    session.commit()
    with_header = tmp_path / "with.csv"
    with_header.write_text(
        "Name;E-mail;Reason;Note\n"
        "Ann;ann@example.com;;from the old tool\n"
        "Old;OLD@example.com;complaint;\n"
        "Bad;not-an-address;;\n"
        "Bob;bob@example.com;whatever;\n"
    )
    outcome = suppressions.import_suppressions(
        path=with_header, workspace_id=ws, reason="unsubscribe"
    )
    assert (outcome.added, outcome.updated, outcome.rejected) == (1, 1, 2)
    assert [e.line for e in outcome.errors] == [4, 5]
    assert "Choose a reason" in outcome.errors[1].reason
    assert outcome.summary() == (
        "Suppressed 1 new address. 1 already on the list got the new reason. 2 rows skipped."
    )
    rows = {
        r.email: r for r in suppressions.list_suppressions(session=session, workspace_id=ws).rows
    }
    assert (rows["ann@example.com"].reason, rows["ann@example.com"].note) == (
        "unsubscribe",
        "from the old tool",
    )
    assert rows["old@example.com"].reason == "complaint"

    bare = tmp_path / "bare.csv"
    bare.write_text("first@example.com\nsecond@example.com\n")
    outcome = suppressions.import_suppressions(path=bare, workspace_id=ws, reason="hard_bounce")
    assert (outcome.added, outcome.rejected) == (2, 0)
    assert suppressions.is_suppressed(session=session, workspace_id=ws, email="first@example.com")


# --- a real worker ---------------------------------------------------------------------------


def test_a_real_worker_imports_a_queued_file(session, spawn, db_url):
    ws = new_workspace(session)
    list_id = make_list(session, ws)
    rows = "".join(f"person{i}@example.com,P{i}\n" for i in range(2500))
    import_id = start(ws, list_id, "email,first_name\n" + rows + "broken\n",
                      {"email": "email", "first_name": "first_name"})  # fmt: skip
    spawn("jobs.worker", "build", env={"DATABASE_URL": db_url})

    def finished():
        session.expire_all()
        return session.get(ContactImport, import_id).status in ("done", "failed")

    wait_until(finished, 60, "the worker to finish the import")
    progress = contacts.import_progress(session=session, workspace_id=ws, import_id=import_id)
    assert (progress.status, progress.rows_imported, progress.rows_rejected) == ("done", 2500, 1)
    assert progress.errors[0]["line"] == 2502
    assert contacts.count_recipients(session=session, workspace_id=ws, list_ids=[list_id]) == 2500


# --- the report download --------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_report_downloads_only_for_people_of_the_workspace(session, redis_url):
    import httpx

    from mailer_app import routes
    from mailer_app.api import build_api
    from mailer_app.models import Role
    from mailer_app.services import auth

    ws, other = new_workspace(session, "Mine"), new_workspace(session, "Theirs")
    list_id = make_list(session, ws)
    import_id = start(ws, list_id, CSV_TEXT)
    run_contact_import(import_id=import_id)
    tokens = {}
    for name, workspace_id, role in [
        ("editor", ws, Role.EDITOR),
        ("viewer", ws, Role.VIEWER),
        ("stranger", other, Role.OWNER),
    ]:
        user = auth.create_user(
            session=session, workspace_id=workspace_id, email=f"{name}@example.com",
            password="correct horse battery", role=role, created_by_id=None,
        )  # fmt: skip
        tokens[name] = auth.start_session(session=session, user=user)
    session.commit()

    url = routes.contact_import_report(import_id)
    transport = httpx.ASGITransport(app=build_api())
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        answer = await client.get(url, cookies={"mailer_session": tokens["editor"]})
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/csv")
        assert "attachment" in answer.headers["content-disposition"]
        rows = list(csv.reader(answer.content.decode("utf-8-sig").splitlines()))
        assert rows[0] == ["line", "email", "problem"]
        assert [r[:2] for r in rows[1:]] == [["4", "not-an-address"], ["5", "ann@example.com"]]
        assert (await client.get(url)).status_code == 403
        viewer = await client.get(url, cookies={"mailer_session": tokens["viewer"]})
        assert viewer.status_code == 403
        stranger = await client.get(url, cookies={"mailer_session": tokens["stranger"]})
        assert stranger.status_code == 404


def test_report_cells_that_look_like_formulas_are_neutralised(session, redis_url):
    ws = new_workspace(session)
    list_id = make_list(session, ws)
    text = "email,first_name\n=cmd|' /C calc'!A0,x\n@SUM(1+1),y\n"
    import_id = start(ws, list_id, text, {"email": "email", "first_name": "first_name"})
    run_contact_import(import_id=import_id)
    report = contacts.import_report_path(session=session, workspace_id=ws, import_id=import_id)
    with open(report, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))[1:]
    assert [r[1] for r in rows] == ["'=cmd|' /C calc'!A0", "'@SUM(1+1)"]
    assert all(not cell.startswith(("=", "+", "-", "@")) for r in rows for cell in r)
