"""The build: every recipient's message classified, rebuilt incrementally, and its bytes
parsed back with the `email` package; on SQLite and PostgreSQL, and once through a
real RQ worker."""

from __future__ import annotations

import email
import email.policy
import io
import zipfile
from email.headerregistry import Address
from pathlib import Path

import pytest
from sqlmodel import select

import mailer_app.models  # noqa: F401  (every table in SQLModel.metadata)
from mailer_app.models import (
    AuditEntry,
    BuildStatus,
    BuiltMessage,
    Campaign,
    CampaignAttachment,
    CampaignBuild,
    CampaignStatus,
    CampaignVersion,
    Contact,
    ContactList,
    SenderAccount,
    Source,
    Suppression,
    utcnow,
)
from mailer_app.services import (
    InvalidInput,
    NotFoundError,
    attachments,
    build,
    campaigns,
    contacts,
    unsubscribe,
)
from mailer_app.services.workspaces import create_workspace
from mailer_app.settings import get_settings
from tests.conftest import wait_until

SUBJECT = "Your {{ plan }} plan, {{ first_name | default('friend') }}"
HTML = (
    "<html><head><title>x</title></head><body>"
    "<p>Hello {{ first_name | default('there') }}, greetings to {{ city }}.</p>"
    "<p>Ünïcödé ✓ 日本 😀</p></body></html>"
)
TEXT = "Hello {{ first_name | default('there') }}\nVisit number {{ visits + 1 }} from {{ city }}.\n"
PATTERN = "invoices/{{ customer_id }}/*.pdf"

# (email, first, last, fields, active, expected status, expected reason code)
FIXTURE = [
    ("ann@example.com", "Ann", "Lee", {"c": "C1"}, True, "ready", None),
    ("not-an-address", "Bad", "", {"c": "C1"}, True, "blocked", "invalid_address"),
    ("josé@example.com", "José", "", {"c": "C1"}, True, "blocked", "unsupported_address"),
    ("sup@example.com", "Sue", "", {"c": "C1"}, True, "excluded", "suppressed"),
    ("dup@bücher.de", "Dü", "", {"c": "C1"}, True, "ready", None),
    ("dup@xn--bcher-kva.de", "Dup", "", {"c": "C1"}, True, "excluded", "duplicate_recipient"),
    ("ina@example.com", "Ina", "", {"c": "C1"}, False, "inactive", "inactive_contact"),
    ("nov@example.com", "Nov", "", {"c": "C1", "visits": None}, True, "blocked", "missing_field"),
    ("noc@example.com", "Noc", "", {"c": "C1", "city": None}, True, "warning", "blank_field"),
    ("err@example.com", "Err", "", {"c": "C1", "visits": "abc"}, True, "blocked", "render_error"),
    ("eve@example.com", "Eve", "Lee\r\nBcc: evil@x.com", {"c": "C1"}, True, "blocked",
     "unsafe_header"),
    ("nof@example.com", "Nof", "", {"c": "C2"}, True, "blocked", "missing_attachment"),
    ("two@example.com", "Two", "", {"c": "C3"}, True, "needs_review", "ambiguous_attachment"),
    ("big@example.com", "Big", "", {"c": "C4"}, True, "blocked", "attachment_too_large"),
    ("fat@example.com", "Fat", "", {"c": "C5"}, True, "blocked", "message_too_large"),
    ("lon@example.com", "Lon", "", {"c": "C1", "plan": "p" * 160}, True, "warning",
     "long_subject"),
]  # fmt: skip


def _files(root: Path) -> None:
    (root / "invoices" / "C1").mkdir(parents=True)
    (root / "invoices" / "C1" / "facture-été.pdf").write_bytes(b"%PDF-1.4 C1 " + bytes(range(256)))
    (root / "invoices" / "C3").mkdir(parents=True)
    (root / "invoices" / "C3" / "a.pdf").write_bytes(b"%PDF a")
    (root / "invoices" / "C3" / "b.pdf").write_bytes(b"%PDF b")
    (root / "invoices" / "C4").mkdir(parents=True)
    with open(root / "invoices" / "C4" / "huge.pdf", "wb") as fh:
        fh.truncate(attachments.MAX_RECIPIENT_BYTES + 1)  # sparse: instant
    (root / "invoices" / "C5").mkdir(parents=True)
    (root / "invoices" / "C5" / "fat.pdf").write_bytes(b"x" * 300_000)


def _contact(ws_id: int, list_id: int, email_: str, first: str, last: str, extra: dict, active):
    fields = {"plan": "pro", "city": "Paris", "visits": 3, "customer_id": extra["c"]}
    for key, value in extra.items():
        if key == "c":
            continue
        if value is None:
            fields.pop(key)
        else:
            fields[key] = value
    return Contact(
        workspace_id=ws_id, list_id=list_id, email=email_, first_name=first, last_name=last,
        fields=fields, is_active=active,
    )  # fmt: skip


def make_workspace(session, name: str, *, with_fixture: bool = True) -> dict:
    workspace = create_workspace(session=session, name=name, source=Source.UI)
    sender = SenderAccount(
        workspace_id=workspace.id, name="News", from_name="Équipe Nouvelles",
        from_email="news@example.com", reply_to="help@example.com", smtp_host="127.0.0.1",
    )  # fmt: skip
    people = ContactList(workspace_id=workspace.id, name="People", field_names=["plan"])
    session.add_all([sender, people])
    session.flush()
    if with_fixture:
        for email_, first, last, extra, active, _, _ in FIXTURE:
            session.add(_contact(workspace.id, people.id, email_, first, last, extra, active))
        session.add(Suppression(workspace_id=workspace.id, email="sup@example.com",
                                reason="unsubscribe"))  # fmt: skip
    campaign = Campaign(workspace_id=workspace.id, name="Spring", status=CampaignStatus.IN_REVIEW)
    session.add(campaign)
    session.flush()
    version = CampaignVersion(
        workspace_id=workspace.id, campaign_id=campaign.id, number=1, is_draft=False,
        published_at=utcnow(), sender_account_id=sender.id, subject=SUBJECT, html_body=HTML,
        text_body=TEXT, recipients={"list_ids": [people.id], "filters": []},
        attachment_rules={"pattern": PATTERN, "zip": False},
    )  # fmt: skip
    session.add(version)
    session.commit()
    return {
        "workspace_id": workspace.id,
        "campaign_id": campaign.id,
        "version_id": version.id,
        "list_id": people.id,
        "sender_id": sender.id,
    }


@pytest.fixture
def ws(session, monkeypatch, request) -> dict:
    if "spawn" not in request.fixturenames:
        monkeypatch.setattr(build, "queue_build", lambda build_id: None)
    monkeypatch.setenv("MESSAGE_MAX_MB", "0.3")
    monkeypatch.setenv("PUBLIC_URL", "https://mail.example.org/")
    get_settings.cache_clear()
    info = make_workspace(session, "Acme")
    _files(attachments.attachments_root(workspace_id=info["workspace_id"]))
    return info


def do_build(session, engine, ws) -> CampaignBuild:
    """Start a build as the page would, and run its job here (the `ws` fixture keeps
    jobs from being enqueued; one test runs the real worker)."""
    queued = build.start_build(
        session=session, workspace_id=ws["workspace_id"], campaign_id=ws["campaign_id"],
        user_id=None, source=Source.CLI,
    )  # fmt: skip
    session.commit()
    done = build.run_build(build_id=queued.id, engine=engine)
    session.expire_all()
    return done


def rows(session, ws) -> dict[str, BuiltMessage]:
    found = session.exec(
        select(BuiltMessage).where(BuiltMessage.version_id == ws["version_id"])
    ).all()
    return {row.email: row for row in found}


def parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


# --- every reason ----------------------------------------------------------------------------


def test_each_recipient_gets_the_status_and_reason_of_its_problem(session, engine, ws):
    result = do_build(session, engine, ws)
    assert result.status == BuildStatus.DONE, result.message
    built = rows(session, ws)
    assert set(built) == {item[0] for item in FIXTURE}
    for email_, *_, status, code in FIXTURE:
        row = built[email_]
        codes = [r["code"] for r in row.reasons]
        assert row.review_status == status, (email_, row.reasons)
        if code is None:
            assert codes == [], (email_, row.reasons)
        else:
            assert code in codes, (email_, row.reasons)
            assert all(c in build.REASONS for c in codes)
    assert built["sup@example.com"].reasons[0] == {"code": "suppressed", "detail": "unsubscribe"}
    assert {"code": "missing_field", "detail": "visits"} in built["nov@example.com"].reasons
    assert {"code": "blank_field", "detail": "city"} in built["noc@example.com"].reasons
    assert {"code": "ambiguous_attachment", "detail": 2} in built["two@example.com"].reasons
    # The counts and the progress are on the build.
    expected = {s: 0 for s in ("ready", "warning", "needs_review", "blocked", "excluded",
                               "inactive")}  # fmt: skip
    for *_, status, _ in FIXTURE:
        expected[status] += 1
    assert result.counts == expected
    assert result.done == result.total == len(FIXTURE)
    assert result.changed == len(FIXTURE)
    assert result.finished_at is not None
    # What a row keeps: rendered subject, merge data, files, size, Message-ID.
    ann = built["ann@example.com"]
    assert ann.subject == "Your pro plan, Ann"
    assert ann.merge_data["customer_id"] == "C1"
    assert ann.attachments == [
        {"path": "invoices/C1/facture-été.pdf", "filename": "facture-été.pdf", "size": 268}
    ]
    assert ann.message_id_header.endswith("@example.com>")
    assert ann.size_bytes > 1000
    assert len(ann.input_digest) == 64
    assert ann.contact_id is not None and ann.built_at is not None
    for email_ in ("fat@example.com",):
        assert built[email_].size_bytes > 300_000
    # Every reason has a plain explanation.
    for code, (status, text) in build.REASONS.items():
        assert status in set(mailer_app.models.ReviewStatus) and text.endswith("."), code
    actions = session.exec(select(AuditEntry.action)).all()
    assert "campaign.build" in actions and "campaign.build_done" in actions


def test_the_built_message_parses_back_exactly(session, engine, ws):
    do_build(session, engine, ws)
    built = rows(session, ws)
    ann = built["ann@example.com"]
    data = build.message_bytes(session=session, workspace_id=ws["workspace_id"], message_id=ann.id)
    assert len(data) == ann.size_bytes  # the bytes the build measured, made again
    assert data == build.message_bytes(
        session=session, workspace_id=ws["workspace_id"], message_id=ann.id
    )
    assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF only
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    # Headers fold at 78; only the unsubscribe link, one unbreakable URL, is longer.
    assert [line for line in head if len(line) > 78] == [
        line for line in head if line.startswith(b"List-Unsubscribe: <https://")
    ]
    message = parse(data)
    assert message.defects == []
    assert message["Subject"] == "Your pro plan, Ann"
    assert message["From"].addresses[0] == Address("Équipe Nouvelles", "news", "example.com")
    assert message["To"].addresses[0] == Address("Ann Lee", "ann", "example.com")
    assert message["Reply-To"].addresses[0].addr_spec == "help@example.com"
    assert message["Message-ID"] == ann.message_id_header
    assert message["MIME-Version"] == "1.0"
    assert message["Date"].datetime.timestamp() == int(ann.built_at.timestamp())
    token = unsubscribe.unsubscribe_token(ws["workspace_id"], "ann@example.com")
    assert message["List-Unsubscribe"] == f"<https://mail.example.org/unsubscribe/{token}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    target = unsubscribe.verify_unsubscribe_token(token)
    assert (target.workspace_id, target.email) == (ws["workspace_id"], "ann@example.com")
    assert message.get_content_type() == "multipart/mixed"
    alternative, pdf = message.iter_parts()
    text, html = alternative.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    assert text.get_content_type() == "text/plain"
    assert text.get_payload(decode=True) == (
        b"Hello Ann\r\nVisit number 4 from Paris.\r\n"
    )  # fmt: skip
    assert html.get_content_charset() == "utf-8"
    assert html.get_payload(decode=True).decode() == (
        HTML.replace("{{ first_name | default('there') }}", "Ann").replace("{{ city }}", "Paris")
    )
    assert pdf.get_filename() == "facture-été.pdf"
    assert pdf.get_content_type() == "application/pdf"
    assert pdf.get_payload(decode=True) == b"%PDF-1.4 C1 " + bytes(range(256))
    # The IDN recipient is written in IDNA form, its name encoded.
    du = built["dup@bücher.de"]
    message = parse(build.message_bytes(session=session, workspace_id=ws["workspace_id"],
                                        message_id=du.id))  # fmt: skip
    assert message["To"].addresses[0] == Address("Dü", "dup", "xn--bcher-kva.de")


def test_a_blocked_message_that_cannot_be_rendered_says_why(session, engine, ws):
    do_build(session, engine, ws)
    row = rows(session, ws)["nov@example.com"]
    with pytest.raises(InvalidInput, match="visits"):
        build.message_bytes(session=session, workspace_id=ws["workspace_id"], message_id=row.id)
    row = rows(session, ws)["eve@example.com"]
    with pytest.raises(InvalidInput, match="line breaks"):
        build.message_bytes(session=session, workspace_id=ws["workspace_id"], message_id=row.id)


def test_test_to_replaces_the_recipient_and_marks_the_test(session, engine, ws):
    do_build(session, engine, ws)
    ann = rows(session, ws)["ann@example.com"]
    before = (ann.updated_at, ann.message_id_header, ann.review_status, ann.size_bytes)
    data = build.message_bytes(
        session=session, workspace_id=ws["workspace_id"], message_id=ann.id,
        test_to="Tester@Example.net",
    )  # fmt: skip
    message = parse(data)
    assert [a.addr_spec for a in message["To"].addresses] == ["tester@example.net"]
    assert b"ann@example.com" not in data
    assert message["Subject"] == "[TEST] Your pro plan, Ann"
    assert message["X-Mailer-App-Test"] == "yes"
    assert message["Message-ID"] != ann.message_id_header
    assert build.TEST_BANNER in message.get_body(("plain",)).get_content()
    assert build.TEST_BANNER in message.get_body(("html",)).get_content()
    token = unsubscribe.unsubscribe_token(ws["workspace_id"], "tester@example.net")
    assert token in message["List-Unsubscribe"]
    session.expire_all()
    ann = rows(session, ws)["ann@example.com"]
    assert (ann.updated_at, ann.message_id_header, ann.review_status, ann.size_bytes) == before
    with pytest.raises(InvalidInput):
        build.message_bytes(session=session, workspace_id=ws["workspace_id"], message_id=ann.id,
                            test_to="x@y\r\nBcc: z@w.com")  # fmt: skip


# --- rebuilds ----------------------------------------------------------------------------------


def test_a_rebuild_after_fixing_one_contact_changes_only_that_row(session, engine, ws):
    do_build(session, engine, ws)
    # A person approved the warning of noc@ before the fix.
    noc = rows(session, ws)["noc@example.com"]
    noc.decision, noc.approved_at = "approved", utcnow()
    session.add(noc)
    session.commit()
    first = {e: (r.id, r.updated_at, r.message_id_header, r.input_digest, r.built_at)
             for e, r in rows(session, ws).items()}  # fmt: skip
    contact = session.exec(select(Contact).where(Contact.email == "nov@example.com")).one()
    contact.fields = {**contact.fields, "visits": 7}
    session.add(contact)
    session.commit()

    again = do_build(session, engine, ws)
    assert again.status == BuildStatus.DONE
    assert again.changed == 1
    after = rows(session, ws)
    for email_, values in first.items():
        row = after[email_]
        if email_ == "nov@example.com":
            assert row.id == values[0]
            assert row.review_status == "ready"
            assert row.input_digest != values[3]
            assert row.message_id_header != values[2]
        else:
            assert (row.id, row.updated_at, row.message_id_header, row.input_digest,
                    row.built_at) == values, email_  # fmt: skip
    assert after["noc@example.com"].decision == "approved"  # unchanged: the decision stays
    assert again.counts["ready"] == 3 and again.counts["blocked"] == 7

    # A change to an approved message clears its decision.
    contact = session.exec(select(Contact).where(Contact.email == "noc@example.com")).one()
    contact.fields = {**contact.fields, "city": "Lyon"}
    session.add(contact)
    session.commit()
    third = do_build(session, engine, ws)
    assert third.changed == 1
    noc = rows(session, ws)["noc@example.com"]
    assert noc.decision is None and noc.review_status == "ready"


def test_recipients_no_longer_selected_are_deleted_and_new_ones_added(session, engine, ws):
    do_build(session, engine, ws)
    # two@ moves to a list the campaign does not send to.
    elsewhere = ContactList(workspace_id=ws["workspace_id"], name="Elsewhere")
    session.add(elsewhere)
    session.flush()
    gone = session.exec(select(Contact).where(Contact.email == "two@example.com")).one()
    gone.list_id = elsewhere.id
    session.add(gone)
    new = _contact(ws["workspace_id"], ws["list_id"], "new@example.com", "New", "", {"c": "C1"}, 1)
    session.add(new)
    session.commit()
    result = do_build(session, engine, ws)
    built = rows(session, ws)
    assert "two@example.com" not in built
    assert built["new@example.com"].review_status == "ready"
    assert result.changed == 1
    assert result.done == len(FIXTURE)


def test_a_changed_file_changes_only_the_messages_using_it(session, engine, ws):
    do_build(session, engine, ws)
    root = attachments.attachments_root(workspace_id=ws["workspace_id"])
    (root / "invoices" / "C3" / "b.pdf").unlink()
    result = do_build(session, engine, ws)
    assert result.changed == 1
    assert rows(session, ws)["two@example.com"].review_status == "ready"


def test_a_new_version_keeps_unchanged_messages_and_their_decisions(session, engine, ws):
    do_build(session, engine, ws)
    noc = rows(session, ws)["noc@example.com"]
    noc.decision = "approved"
    session.add(noc)
    old = {e: r.message_id_header for e, r in rows(session, ws).items()}
    version = session.get(CampaignVersion, ws["version_id"])
    # Version 2: the same content, one recipient filtered out.
    v2 = CampaignVersion(
        workspace_id=ws["workspace_id"], campaign_id=ws["campaign_id"], number=2,
        is_draft=False, published_at=utcnow(), sender_account_id=version.sender_account_id,
        subject=version.subject, html_body=version.html_body, text_body=version.text_body,
        recipients={"list_ids": [ws["list_id"]],
                    "filters": [{"field": "first_name", "op": "not_equals", "value": "Ann"}]},
        attachment_rules=dict(version.attachment_rules),
    )  # fmt: skip
    session.add(v2)
    session.commit()
    ws2 = {**ws, "version_id": v2.id}
    result = do_build(session, engine, ws2)
    assert result.version_id == v2.id
    assert result.changed == 0
    built = rows(session, ws2)
    assert "ann@example.com" not in built
    assert all(built[e].message_id_header == old[e] for e in built)
    assert built["noc@example.com"].decision == "approved"
    # The first version's rows are untouched.
    assert len(rows(session, ws)) == len(FIXTURE)


# --- starting, failing, scoping --------------------------------------------------------------


def test_start_build_refuses_unpublished_and_reuses_an_active_build(session, ws):
    first = build.start_build(session=session, workspace_id=ws["workspace_id"],
                              campaign_id=ws["campaign_id"], user_id=None)  # fmt: skip
    second = build.start_build(session=session, workspace_id=ws["workspace_id"],
                               campaign_id=ws["campaign_id"], user_id=None)  # fmt: skip
    assert first.id == second.id and first.status == BuildStatus.QUEUED
    session.rollback()
    draft_only = Campaign(workspace_id=ws["workspace_id"], name="Draft")
    session.add(draft_only)
    session.flush()
    session.add(CampaignVersion(workspace_id=ws["workspace_id"], campaign_id=draft_only.id,
                                number=1, is_draft=True))  # fmt: skip
    session.flush()
    with pytest.raises(InvalidInput, match="Publish the campaign"):
        build.start_build(session=session, workspace_id=ws["workspace_id"],
                          campaign_id=draft_only.id, user_id=None)  # fmt: skip


def test_a_build_whose_sender_is_unusable_fails_with_a_plain_message(session, engine, ws):
    sender = session.get(SenderAccount, ws["sender_id"])
    sender.from_name = "News\r\nBcc: evil@example.com"
    session.add(sender)
    session.commit()
    result = do_build(session, engine, ws)
    assert result.status == BuildStatus.FAILED
    assert "sender" in result.message and "line breaks" in result.message
    assert rows(session, ws) == {}
    # Running a finished build again changes nothing.
    assert build.run_build(build_id=result.id, engine=engine).status == BuildStatus.FAILED


def test_campaign_files_are_attached_to_every_message_and_zip_bundles_them(session, engine, ws):
    data_dir = get_settings().data_dir
    folder = data_dir / "campaign_files" / str(ws["workspace_id"])
    folder.mkdir(parents=True)
    (folder / "abc-terms.txt").write_bytes(b"Terms\n")
    session.add(CampaignAttachment(
        workspace_id=ws["workspace_id"], version_id=ws["version_id"],
        filename="Conditions générales.txt", content_type="text/plain", size_bytes=6,
        stored_path=f"campaign_files/{ws['workspace_id']}/abc-terms.txt",
    ))  # fmt: skip
    session.commit()
    do_build(session, engine, ws)
    ann = rows(session, ws)["ann@example.com"]
    message = parse(build.message_bytes(session=session, workspace_id=ws["workspace_id"],
                                        message_id=ann.id))  # fmt: skip
    files = {p.get_filename(): p.get_payload(decode=True) for p in message.iter_attachments()}
    assert files == {
        "Conditions générales.txt": b"Terms\n",
        "facture-été.pdf": b"%PDF-1.4 C1 " + bytes(range(256)),
    }
    version = session.get(CampaignVersion, ws["version_id"])
    version.attachment_rules = {"pattern": PATTERN, "zip": True}
    session.add(version)
    session.commit()
    result = do_build(session, engine, ws)
    assert result.changed > 0
    two = rows(session, ws)["two@example.com"]
    assert two.review_status == "ready"  # several files are fine in a zip
    message = parse(build.message_bytes(session=session, workspace_id=ws["workspace_id"],
                                        message_id=two.id))  # fmt: skip
    (archive,) = list(message.iter_attachments())
    assert archive.get_filename() == "attachments.zip"
    with zipfile.ZipFile(io.BytesIO(archive.get_payload(decode=True))) as zipped:
        assert sorted(zipped.namelist()) == ["Conditions générales.txt", "a.pdf", "b.pdf"]


def test_builds_and_messages_are_scoped_to_their_workspace(session, engine, ws):
    other = make_workspace(session, "Other", with_fixture=False)
    do_build(session, engine, ws)
    ann = rows(session, ws)["ann@example.com"]
    with pytest.raises(NotFoundError):
        build.message_bytes(session=session, workspace_id=other["workspace_id"], message_id=ann.id)
    with pytest.raises(NotFoundError):
        build.start_build(session=session, workspace_id=other["workspace_id"],
                          campaign_id=ws["campaign_id"], user_id=None)  # fmt: skip
    assert build.latest_build(session=session, workspace_id=other["workspace_id"],
                              campaign_id=ws["campaign_id"]) is None  # fmt: skip
    assert build.latest_build(session=session, workspace_id=ws["workspace_id"],
                              campaign_id=ws["campaign_id"]).status == BuildStatus.DONE  # fmt: skip
    # The other workspace's build sees none of the first one's contacts.
    result = do_build(session, engine, other)
    assert result.status == BuildStatus.DONE and result.done == 0
    assert rows(session, other) == {}


# --- through a real worker -----------------------------------------------------------------------


def test_the_build_job_runs_on_a_real_worker(session, engine, ws, redis_url, spawn):
    queued = build.start_build(session=session, workspace_id=ws["workspace_id"],
                               campaign_id=ws["campaign_id"], user_id=None)  # fmt: skip
    session.commit()  # enqueues the job
    build_id = queued.id
    spawn("jobs.worker", "build", env={"DATABASE_URL": str(engine.url.render_as_string(False))})

    def finished():
        session.expire_all()
        row = session.get(CampaignBuild, build_id)
        return row if row.status in (BuildStatus.DONE, BuildStatus.FAILED) else None

    result = wait_until(finished, 60, "the build job to finish")
    assert result.status == BuildStatus.DONE, result.message
    assert result.done == len(FIXTURE)
    assert rows(session, ws)["ann@example.com"].review_status == "ready"


def test_a_rebuild_of_an_approved_campaign_sends_it_back_to_review(session, engine, ws):
    do_build(session, engine, ws)
    campaign = session.get(Campaign, ws["campaign_id"])
    campaign.status = CampaignStatus.APPROVED  # as approve_campaign leaves it
    session.commit()
    do_build(session, engine, ws)
    campaign = session.get(Campaign, ws["campaign_id"])
    assert campaign.status == CampaignStatus.IN_REVIEW
    assert "review the messages again" in (campaign.status_reason or "")


def test_the_list_of_an_archived_built_campaign_can_be_deleted(session, engine, ws):
    do_build(session, engine, ws)
    built = len(rows(session, ws))
    campaigns.archive_campaign(session=session, workspace_id=ws["workspace_id"],
                               campaign_id=ws["campaign_id"], user_id=None)  # fmt: skip
    contacts.delete_contact_list(session=session, workspace_id=ws["workspace_id"],
                                 list_id=ws["list_id"], user_id=None)  # fmt: skip
    session.commit()
    session.expire_all()
    kept = rows(session, ws)
    assert len(kept) == built  # the review of the archived campaign still has them
    assert all(row.contact_id is None for row in kept.values())
