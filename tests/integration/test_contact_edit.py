"""Fixing a recipient from the review page, on SQLite and PostgreSQL: `update_contact`
(scoped to the workspace, header-safe names, checked field values, audited) and
`review.recipient_for_message`; then build -> fix the contact -> rebuild changes that
message only, and it becomes ready.

The campaign and contacts are test_build.py's fixture (`make_workspace`)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

import mailer_app.models  # noqa: F401  (every table in SQLModel.metadata)
from mailer_app.models import AuditEntry, BuildStatus, Contact, ContactList, Source, utcnow
from mailer_app.services import (
    InvalidInput,
    NotFoundError,
    attachments,
    build,
    campaigns,
    contacts,
    review,
)
from mailer_app.settings import get_settings
from tests.integration.test_build import _files, do_build, make_workspace, rows

FIELDS = ["plan", "city", "visits", "customer_id"]  # the columns the list's import brought


@pytest.fixture
def ws(session, monkeypatch) -> dict:
    monkeypatch.setattr(build, "queue_build", lambda build_id: None)
    monkeypatch.setenv("MESSAGE_MAX_MB", "0.3")
    get_settings.cache_clear()
    info = make_workspace(session, "Acme")
    _files(attachments.attachments_root(workspace_id=info["workspace_id"]))
    people = session.get(ContactList, info["list_id"])
    people.field_names = FIELDS
    session.add(people)
    session.commit()
    return info


def contact_of(session, ws, address: str) -> Contact:
    return session.exec(
        select(Contact).where(Contact.workspace_id == ws["workspace_id"], Contact.email == address)
    ).one()


def update(session, ws, contact_id: int, *, first="Ann", last="Lee", fields=None) -> Contact:
    return contacts.update_contact(
        session=session, workspace_id=ws["workspace_id"], contact_id=contact_id,
        first_name=first, last_name=last, fields=fields or {}, user_id=None, source=Source.UI,
    )  # fmt: skip


def audit_entries(session, ws) -> list[AuditEntry]:
    return session.exec(
        select(AuditEntry).where(
            AuditEntry.workspace_id == ws["workspace_id"], AuditEntry.action == "contact.update"
        )
    ).all()


def test_update_contact_saves_names_and_fields_and_is_audited(session, ws):
    ann = contact_of(session, ws, "ann@example.com")
    ann.updated_at = long_ago = utcnow() - timedelta(days=30)
    session.add(ann)
    session.commit()
    update(session, ws, ann.id, first="  Annie ", last="Lee-Smith",
           fields={"city": "  Lyon ", "plan": "", "visits": "3"})  # fmt: skip
    session.commit()
    session.expire_all()
    ann = contact_of(session, ws, "ann@example.com")
    assert (ann.first_name, ann.last_name) == ("Annie", "Lee-Smith")
    assert ann.email == "ann@example.com"
    # Stripped; an emptied field is left out (templates see it missing); the same text
    # as a stored number keeps the number; fields not sent keep their values.
    assert ann.fields == {"city": "Lyon", "visits": 3, "customer_id": "C1"}
    assert ann.updated_at > long_ago + timedelta(days=29) and ann.source == "ui"
    [entry] = audit_entries(session, ws)
    assert entry.target_type == "contact" and entry.target_id == ann.id
    assert entry.details["changed"] == ["first_name", "last_name", "city", "plan"]
    assert "Lyon" not in str(entry.details)  # names of fields, not their values

    # Saving the same values again changes nothing and writes no entry.
    update(session, ws, ann.id, first="Annie", last="Lee-Smith", fields={"city": "Lyon"})
    session.commit()
    assert len(audit_entries(session, ws)) == 1


@pytest.mark.parametrize(
    ("first", "last", "field"),
    [
        ("Ann\r\nBcc: evil@example.net", "Lee", "first_name"),
        ("Ann", "Lee\nBcc: evil@example.net", "last_name"),
        ("Ann\x00", "Lee", "first_name"),
        ("Ann", "Lee\u2028x", "last_name"),
        ("A" * 201, "Lee", "first_name"),
    ],
)
def test_update_contact_refuses_line_breaks_and_control_characters_in_names(
    session, ws, first, last, field
):
    ann = contact_of(session, ws, "ann@example.com")
    with pytest.raises(InvalidInput) as refused:
        update(session, ws, ann.id, first=first, last=last)
    assert refused.value.field == field
    session.rollback()
    session.expire_all()
    ann = contact_of(session, ws, "ann@example.com")
    assert (ann.first_name, ann.last_name) == ("Ann", "Lee")
    assert audit_entries(session, ws) == []


def test_update_contact_checks_field_names_and_values(session, ws):
    ann = contact_of(session, ws, "ann@example.com")
    with pytest.raises(InvalidInput, match="no field called nickname") as refused:
        update(session, ws, ann.id, fields={"nickname": "Annie"})
    assert refused.value.field == "field-nickname"
    with pytest.raises(InvalidInput, match="too long"):
        update(session, ws, ann.id, fields={"city": "x" * 1001})
    update(session, ws, ann.id, fields={"city": "x" * 1000})  # the limit itself is fine
    session.commit()
    assert len(contact_of(session, ws, "ann@example.com").fields["city"]) == 1000


def test_update_contact_and_recipient_are_scoped_to_the_workspace(session, engine, ws):
    other = make_workspace(session, "Other", with_fixture=False)
    ann = contact_of(session, ws, "ann@example.com")
    with pytest.raises(NotFoundError):
        contacts.update_contact(
            session=session, workspace_id=other["workspace_id"], contact_id=ann.id,
            first_name="Mallory", last_name="", fields={}, user_id=None,
        )  # fmt: skip
    with pytest.raises(NotFoundError):
        contacts.get_contact(session=session, workspace_id=other["workspace_id"],
                             contact_id=ann.id)  # fmt: skip
    do_build(session, engine, ws)
    message_id = rows(session, ws)["ann@example.com"].id
    with pytest.raises(NotFoundError):
        review.recipient_for_message(
            session=session, workspace_id=other["workspace_id"], message_id=message_id
        )
    session.expire_all()
    assert contact_of(session, ws, "ann@example.com").first_name == "Ann"


def test_fixing_the_recipient_with_a_missing_field_then_rebuilding_changes_only_it(
    session, engine, ws
):
    first = do_build(session, engine, ws)
    assert first.status == BuildStatus.DONE
    before = {e: (r.id, r.updated_at, r.message_id_header, r.input_digest, r.review_status)
              for e, r in rows(session, ws).items()}  # fmt: skip
    noc = rows(session, ws)["noc@example.com"]
    assert (noc.review_status, [r["code"] for r in noc.reasons]) == ("warning", ["blank_field"])

    # What the form shows: the editable values, the missing field pointed out.
    recipient = review.recipient_for_message(
        session=session, workspace_id=ws["workspace_id"], message_id=noc.id
    )
    preview = review.message_preview(
        session=session, workspace_id=ws["workspace_id"], message_id=noc.id
    )
    assert preview.contact_id == recipient.contact_id
    assert (recipient.email, recipient.first_name, recipient.missing) == (
        "noc@example.com", "Noc", ("city",),
    )  # fmt: skip
    assert recipient.fields == [("plan", "pro"), ("city", ""), ("visits", "3"),
                                ("customer_id", "C1")]  # fmt: skip

    # The form sends every value back as text, with the city filled in.
    values = dict(recipient.fields) | {"city": "Lyon"}
    update(session, ws, recipient.contact_id, first="Noc", last="", fields=values)
    session.commit()

    again = do_build(session, engine, ws)
    assert again.status == BuildStatus.DONE and again.changed == 1
    after = rows(session, ws)
    for address, values in before.items():
        row = after[address]
        if address == "noc@example.com":
            assert row.id == values[0] and row.input_digest != values[3]
            assert row.review_status == "ready" and row.reasons == []
            assert row.merge_data["city"] == "Lyon"
        else:
            now = (row.id, row.updated_at, row.message_id_header, row.input_digest,
                   row.review_status)  # fmt: skip
            assert now == values, address
    text = review.message_preview(
        session=session, workspace_id=ws["workspace_id"], message_id=noc.id
    ).text
    assert "from Lyon." in text


def test_a_message_whose_list_was_deleted_has_no_recipient_to_edit(session, engine, ws):
    do_build(session, engine, ws)
    message_id = rows(session, ws)["ann@example.com"].id
    assert (
        review.recipient_for_message(
            session=session, workspace_id=ws["workspace_id"], message_id=message_id
        ).contact_id
        == contact_of(session, ws, "ann@example.com").id
    )
    campaigns.archive_campaign(session=session, workspace_id=ws["workspace_id"],
                               campaign_id=ws["campaign_id"], user_id=None)  # fmt: skip
    contacts.delete_contact_list(session=session, workspace_id=ws["workspace_id"],
                                 list_id=ws["list_id"], user_id=None)  # fmt: skip
    session.commit()
    session.expire_all()
    assert (
        review.recipient_for_message(
            session=session, workspace_id=ws["workspace_id"], message_id=message_id
        )
        is None
    )
    preview = review.message_preview(
        session=session, workspace_id=ws["workspace_id"], message_id=message_id
    )
    assert preview.contact_id is None
