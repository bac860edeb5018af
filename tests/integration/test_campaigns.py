"""Campaigns, the wizard's steps, versions and campaign JSON, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import httpx
import pytest
from sqlmodel import select

import mailer_app.models  # noqa: F401  (every table in SQLModel.metadata)
from mailer_app.models import (
    AuditEntry,
    Campaign,
    CampaignVersion,
    Contact,
    ContactList,
    SeedList,
    SenderAccount,
    Source,
)
from mailer_app.services import (
    InvalidInput,
    NotFoundError,
    ServiceError,
    attachments,
    auth,
    campaign_preview,
    campaigns,
)
from mailer_app.services import campaign_json as cj
from mailer_app.services.workspaces import create_workspace
from tests.conftest import ROOT

HTML = "<p>Hello {{ first_name }}, your plan is {{ plan }}.</p>"


# --- a workspace with a sender, a contact list and a seed list ---------------------------------


def _people(session, workspace_id: int, name: str = "Customers") -> ContactList:
    contact_list = ContactList(workspace_id=workspace_id, name=name, field_names=["plan", "city"])
    session.add(contact_list)
    session.flush()
    for email, first, plan in (
        ("ann@example.com", "Ann", "pro"),
        ("bob@example.com", "Bob", "free"),
        ("cy@example.com", "", "pro"),
    ):
        session.add(
            Contact(
                workspace_id=workspace_id,
                list_id=contact_list.id,
                email=email,
                first_name=first,
                fields={"plan": plan, "city": "Paris"},
            )
        )
    return contact_list


def _workspace(session, name: str) -> dict:
    workspace = create_workspace(session=session, name=name, source=Source.UI)
    user = auth.create_user(
        session=session,
        workspace_id=workspace.id,
        email=f"editor@{workspace.slug}.example.com",
        password="correct horse battery",
        role="editor",
        created_by_id=None,
    )
    sender = SenderAccount(
        workspace_id=workspace.id,
        name="Newsletter",
        from_name="News",
        from_email="news@example.com",
        smtp_host="127.0.0.1",
        smtp_port=2525,
    )
    seed_list = SeedList(workspace_id=workspace.id, name="All seeds")
    session.add_all([sender, seed_list])
    contact_list = _people(session, workspace.id)
    session.commit()
    return {
        "workspace_id": workspace.id,
        "user_id": user.id,
        "sender_id": sender.id,
        "list_id": contact_list.id,
        "seed_list_id": seed_list.id,
    }


@pytest.fixture
def ws(session) -> dict:
    return _workspace(session, "Acme")


@pytest.fixture
def other(session) -> dict:
    return _workspace(session, "Someone Else")


def new_campaign(session, ws, name="March newsletter") -> Campaign:
    campaign = campaigns.create_campaign(
        session=session, workspace_id=ws["workspace_id"], name=name, user_id=ws["user_id"]
    )
    session.commit()
    return campaign


def save(session, ws, campaign_id, step, **values) -> campaigns.StepResult:
    result = campaigns.save_step(
        session=session,
        workspace_id=ws["workspace_id"],
        campaign_id=campaign_id,
        step=step,
        values=values,
        user_id=ws["user_id"],
    )
    session.commit()
    return result


def complete(session, ws, campaign_id) -> None:
    """Fill every step the way a person would in the wizard."""
    assert save(session, ws, campaign_id, "sender", sender_account_id=str(ws["sender_id"])).complete
    assert save(
        session, ws, campaign_id, "recipients",
        list_ids=[str(ws["list_id"])], seed_list_id=str(ws["seed_list_id"]),
    ).complete  # fmt: skip
    assert save(
        session, ws, campaign_id, "content",
        subject="News for {{ first_name | default('you') }}", html_body=HTML, text_body="",
    ).complete  # fmt: skip


def draft_of(session, ws, campaign_id) -> CampaignVersion:
    return campaigns.get_draft(
        session=session, workspace_id=ws["workspace_id"], campaign_id=campaign_id
    )


def actions(session, workspace_id) -> list[str]:
    return list(
        session.exec(
            select(AuditEntry.action)
            .where(AuditEntry.workspace_id == workspace_id)
            .order_by(AuditEntry.id)
        ).all()
    )


# --- creating and the steps ---------------------------------------------------------------------


def test_a_new_campaign_is_a_draft_version_1_on_basics(session, ws):
    campaign = new_campaign(session, ws, "  March newsletter  ")
    assert campaign.name == "March newsletter"
    assert campaign.status == "draft"
    versions = campaigns.list_versions(
        session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id
    )
    assert [(v.number, v.is_draft, v.wizard_step) for v in versions] == [(1, True, "basics")]
    assert "campaign.create" in actions(session, ws["workspace_id"])

    with pytest.raises(InvalidInput, match="Give the campaign a name") as empty:
        campaigns.create_campaign(
            session=session, workspace_id=ws["workspace_id"], name="  ", user_id=None
        )
    assert empty.value.field == "name"
    with pytest.raises(InvalidInput, match="line breaks"):
        campaigns.create_campaign(
            session=session, workspace_id=ws["workspace_id"], name="A\nB", user_id=None
        )


def test_each_step_reports_its_own_problems_next_to_the_field(session, ws):
    campaign = new_campaign(session, ws)
    status = {
        s.step: s.errors
        for s in campaigns.step_status(
            session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id
        )
    }
    assert status["basics"] == {}
    assert status["sender"] == {
        "sender_account_id": "Choose the sender account the campaign goes out from."
    }
    assert status["recipients"] == {"list_ids": "Choose at least one contact list."}
    assert status["content"] == {
        "subject": "Write a subject line.",
        "html_body": "Write the message (HTML, text, or both).",
    }
    assert status["attachments"] == {}

    # Partial validation: saving Content says nothing about Sender or Recipients.
    result = save(session, ws, campaign.id, "content", subject="Hello")
    assert result.saved
    assert result.errors == {"html_body": "Write the message (HTML, text, or both)."}

    # A broken template is kept (it is a draft) and explained.
    result = save(session, ws, campaign.id, "content", html_body="<p>{{ first_name </p>")
    assert result.saved
    assert "html_body" in result.errors and "Line 1" in result.errors["html_body"]
    assert draft_of(session, ws, campaign.id).html_body == "<p>{{ first_name </p>"


def test_line_breaks_in_the_subject_are_refused_and_never_stored(session, ws):
    campaign = new_campaign(session, ws)
    save(session, ws, campaign.id, "content", subject="Spring sale")
    for attack in ("Hi\r\nBcc: victim@example.com", "Hi\nthere", "Hi\u2028there"):
        result = save(session, ws, campaign.id, "content", subject=attack, html_body="<p>x</p>")
        assert not result.saved
        assert result.errors["subject"] == (
            "The subject cannot contain line breaks or control characters."
        )
    draft = draft_of(session, ws, campaign.id)
    assert draft.subject == "Spring sale"
    assert draft.html_body == "<p>x</p>"  # the other field of the same save was kept
    # Names are header-adjacent too.
    result = save(session, ws, campaign.id, "basics", name="Sale\r\nX-Evil: 1")
    assert result.errors == {"name": "The campaign name cannot contain line breaks."}


def test_merge_fields_are_checked_against_the_chosen_lists(session, ws):
    campaign = new_campaign(session, ws)
    save(session, ws, campaign.id, "recipients", list_ids=[ws["list_id"]])
    result = save(
        session, ws, campaign.id, "content",
        subject="Hi {{ first_name }}", html_body="<p>{{ plann }} in {{ city }}</p>",
        text_body="{{ nickname | default('friend') }} {% if vip %}VIP{% endif %}",
    )  # fmt: skip
    # A typo is reported; a field with a default or under an `if` may be absent.
    assert result.errors == {
        "html_body": "The chosen contact lists have no field called plann. Check the "
        'spelling, or give it a default, like {{ plann | default("…") }}.'
    }
    result = save(session, ws, campaign.id, "content", html_body="<p>{{ plan }} in {{ city }}</p>")
    assert result.complete


def test_recipients_refuse_lists_and_senders_of_another_workspace(session, ws, other):
    campaign = new_campaign(session, ws)
    result = save(session, ws, campaign.id, "recipients", list_ids=[other["list_id"]])
    assert not result.saved
    assert result.errors["list_ids"] == "One of the chosen contact lists does not exist any more."
    result = save(session, ws, campaign.id, "sender", sender_account_id=other["sender_id"])
    assert result.errors == {
        "sender_account_id": "This sender account does not exist any more. Choose another one."
    }
    draft = draft_of(session, ws, campaign.id)
    assert draft.sender_account_id is None and not draft.recipients.get("list_ids")


def test_filters_narrow_the_recipients_and_unknown_fields_are_reported(session, ws):
    campaign = new_campaign(session, ws)
    result = save(
        session, ws, campaign.id, "recipients", list_ids=[ws["list_id"]],
        filters=[{"field": "plan", "op": "equals", "value": "pro"}],
    )  # fmt: skip
    assert result.complete
    result = save(
        session, ws, campaign.id, "recipients",
        filters=[{"field": "country", "op": "equals", "value": "FR"}],
    )  # fmt: skip
    assert result.errors == {
        "filters": "No contact in the chosen lists has a field called country."
    }
    result = save(
        session, ws, campaign.id, "recipients",
        filters=[{"field": "plan", "op": "equals", "value": "enterprise"}],
    )  # fmt: skip
    assert result.errors == {
        "filters": "Nobody is left to send to: the chosen lists and filters match no contact."
    }


def test_autosave_keeps_everything_and_the_draft_resumes_on_the_same_step(session, ws):
    campaign = new_campaign(session, ws)
    save(session, ws, campaign.id, "sender", sender_account_id=ws["sender_id"])
    campaigns.set_wizard_step(
        session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id, step="content"
    )
    session.commit()
    save(session, ws, campaign.id, "content", subject="Half a subj")
    # The author closes the tab; a late autosave of the Sender step arrives afterwards.
    save(session, ws, campaign.id, "sender", sender_account_id=ws["sender_id"])

    data = campaigns.load_wizard(
        session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id
    )
    assert data.wizard_step == "content"
    assert data.values["subject"] == "Half a subj"
    assert data.values["sender_account_id"] == ws["sender_id"]
    visited = {s.step for s in data.steps if s.visited}
    assert visited == {"basics", "sender", "content"}
    # Typing pauses write one audit entry per step and window, not one per pause.
    for text in ("Half a subje", "Half a subjec", "Half a subject"):
        save(session, ws, campaign.id, "content", subject=text)
    assert actions(session, ws["workspace_id"]).count("campaign.edit") == 2


# --- versions -------------------------------------------------------------------------------------


def test_publish_refuses_an_unfinished_campaign_and_names_the_steps(session, ws):
    campaign = new_campaign(session, ws)
    save(session, ws, campaign.id, "sender", sender_account_id=ws["sender_id"])
    with pytest.raises(campaigns.CampaignIncomplete) as refused:
        campaigns.publish(
            session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id,
            user_id=ws["user_id"],
        )  # fmt: skip
    session.rollback()
    assert str(refused.value) == "Finish these steps before publishing: Recipients, Content."
    assert set(refused.value.problems) == {"recipients", "content"}
    assert draft_of(session, ws, campaign.id).is_draft


def test_publishing_freezes_the_version_and_makes_it_ready_for_review(session, ws):
    campaign = new_campaign(session, ws)
    complete(session, ws, campaign.id)
    version = campaigns.publish(
        session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id,
        user_id=ws["user_id"],
    )  # fmt: skip
    session.commit()
    assert (version.number, version.is_draft, version.published_by_id) == (1, False, ws["user_id"])
    assert version.published_at is not None
    session.refresh(campaign)
    assert campaign.status == "in_review"
    assert campaign.sender_account_id == ws["sender_id"]
    assert campaign.seed_list_id == ws["seed_list_id"]
    assert draft_of(session, ws, campaign.id) is None
    with pytest.raises(ServiceError, match="already published"):
        campaigns.publish(
            session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id,
            user_id=ws["user_id"],
        )  # fmt: skip
    session.rollback()
    assert "campaign.publish" in actions(session, ws["workspace_id"])
    row = campaigns.list_campaigns(session=session, workspace_id=ws["workspace_id"])[0]
    assert (row.status_label, row.has_draft, row.published_number) == ("Ready for review", False, 1)


def test_editing_a_published_campaign_makes_draft_2_and_leaves_1_as_it_was(session, ws):
    campaign = new_campaign(session, ws)
    complete(session, ws, campaign.id)
    campaigns.publish(
        session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id,
        user_id=ws["user_id"],
    )  # fmt: skip
    session.commit()

    result = save(session, ws, campaign.id, "content", subject="A better subject")
    assert result.complete
    v1, v2 = campaigns.list_versions(
        session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id
    )
    assert (v1.number, v1.is_draft, v2.number, v2.is_draft) == (1, False, 2, True)
    assert v1.subject == "News for {{ first_name | default('you') }}"
    assert v2.subject == "A better subject"
    assert v2.html_body == v1.html_body and v2.recipients == v1.recipients
    assert v2.wizard_step == "content"
    session.refresh(campaign)
    assert campaign.status == "draft"  # nobody approves a version still being changed
    row = campaigns.list_campaigns(session=session, workspace_id=ws["workspace_id"])[0]
    assert (row.version_number, row.has_draft, row.published_number) == (2, True, 1)
    # Publishing again freezes version 2.
    assert (
        campaigns.publish(
            session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id,
            user_id=ws["user_id"],
        ).number
        == 2
    )  # fmt: skip


def test_a_late_autosave_that_changes_nothing_leaves_the_published_campaign_alone(session, ws):
    campaign = new_campaign(session, ws)
    complete(session, ws, campaign.id)
    campaigns.publish(
        session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id,
        user_id=ws["user_id"],
    )  # fmt: skip
    session.commit()
    published = campaigns.latest_published(
        session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id
    )
    result = save(session, ws, campaign.id, "content", subject=published.subject)
    assert result.saved
    versions = campaigns.list_versions(
        session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id
    )
    assert [(v.number, v.is_draft) for v in versions] == [(1, False)]
    session.refresh(campaign)
    assert campaign.status == "in_review"


# --- list, search, duplicate, archive ------------------------------------------------------------


def test_duplicate_copies_the_current_version_into_a_new_draft_campaign(session, ws):
    campaign = new_campaign(session, ws)
    complete(session, ws, campaign.id)
    save(session, ws, campaign.id, "basics", description="Monthly news")
    copy = campaigns.duplicate_campaign(
        session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id,
        user_id=ws["user_id"],
    )  # fmt: skip
    session.commit()
    assert copy.id != campaign.id
    assert (copy.name, copy.description, copy.status) == (
        "Copy of March newsletter", "Monthly news", "draft",
    )  # fmt: skip
    copied = draft_of(session, ws, copy.id)
    original = draft_of(session, ws, campaign.id)
    assert (copied.number, copied.wizard_step) == (1, "basics")
    assert copied.id != original.id
    for name in ("subject", "html_body", "recipients", "sender_account_id", "seed_list_id"):
        assert getattr(copied, name) == getattr(original, name)
    # Changing the copy leaves the original alone.
    save(session, ws, copy.id, "content", subject="Copy subject")
    assert draft_of(session, ws, campaign.id).subject != "Copy subject"


def test_search_archive_and_restore(session, ws):
    march = new_campaign(session, ws, "March newsletter")
    new_campaign(session, ws, "April NEWSLETTER")
    new_campaign(session, ws, "50% off")
    new_campaign(session, ws, "500 reasons")

    def names(**kw):
        rows = campaigns.list_campaigns(session=session, workspace_id=ws["workspace_id"], **kw)
        return sorted(r.name for r in rows)

    assert names(search="newsletter") == ["April NEWSLETTER", "March newsletter"]
    assert names(search="50%") == ["50% off"]  # % is a character, not a wildcard
    assert names(search="  ") == sorted(["March newsletter", "April NEWSLETTER", "50% off",
                                         "500 reasons"])  # fmt: skip

    campaigns.archive_campaign(
        session=session, workspace_id=ws["workspace_id"], campaign_id=march.id,
        user_id=ws["user_id"],
    )  # fmt: skip
    session.commit()
    assert names(search="newsletter") == ["April NEWSLETTER"]
    archived = campaigns.list_campaigns(
        session=session, workspace_id=ws["workspace_id"], search="march", include_archived=True
    )
    assert [(r.name, r.status, r.archived) for r in archived] == [
        ("March newsletter", "archived", True)
    ]
    with pytest.raises(ServiceError, match="archived"):
        save(session, ws, march.id, "basics", name="Changed")
    session.rollback()

    restored = campaigns.restore_campaign(
        session=session, workspace_id=ws["workspace_id"], campaign_id=march.id,
        user_id=ws["user_id"],
    )  # fmt: skip
    session.commit()
    assert (restored.status, restored.archived_at) == ("draft", None)
    assert names(search="newsletter") == ["April NEWSLETTER", "March newsletter"]
    assert {"campaign.archive", "campaign.restore"} <= set(actions(session, ws["workspace_id"]))


def test_every_function_is_scoped_to_the_workspace(session, ws, other):
    campaign = new_campaign(session, ws)
    new_campaign(session, other, "Their campaign")
    assert [r.name for r in campaigns.list_campaigns(
        session=session, workspace_id=other["workspace_id"])] == ["Their campaign"]  # fmt: skip
    calls = [
        lambda: campaigns.get_campaign(
            session=session, workspace_id=other["workspace_id"], campaign_id=campaign.id
        ),
        lambda: save(session, other, campaign.id, "basics", name="Hijacked"),
        lambda: campaigns.duplicate_campaign(
            session=session, workspace_id=other["workspace_id"], campaign_id=campaign.id,
            user_id=other["user_id"],
        ),
        lambda: campaigns.archive_campaign(
            session=session, workspace_id=other["workspace_id"], campaign_id=campaign.id,
            user_id=other["user_id"],
        ),
        lambda: campaigns.publish(
            session=session, workspace_id=other["workspace_id"], campaign_id=campaign.id,
            user_id=other["user_id"],
        ),
        lambda: cj.export_campaign(
            session=session, workspace_id=other["workspace_id"], campaign_id=campaign.id,
            user_id=other["user_id"],
        ),
    ]  # fmt: skip
    for call in calls:
        with pytest.raises(NotFoundError):
            call()
        session.rollback()
    session.refresh(campaign)
    assert campaign.name == "March newsletter" and campaign.archived_at is None


# --- preview, attachments dry run, review summary ----------------------------------------------


def test_the_preview_shows_one_recipient_sanitized_with_missing_fields(session, ws):
    campaign = new_campaign(session, ws)
    complete(session, ws, campaign.id)
    html = '<p onclick="steal()">Hi {{ first_name }}, {{ plan }}</p><script>x()</script>'
    save(session, ws, campaign.id, "content", subject="Hi {{ first_name }}", html_body=html)
    version = draft_of(session, ws, campaign.id)
    people = campaign_preview.preview_recipients(
        session=session, workspace_id=ws["workspace_id"], version=version
    )
    assert [p.label for p in people] == [
        "Ann <ann@example.com>",
        "Bob <bob@example.com>",
        "cy@example.com",
        "Sample recipient (invented data)",
    ]
    cy = campaign_preview.render_preview(
        subject=version.subject, html_body=version.html_body, text_body="", data=people[2].data
    )
    assert cy.missing == ("first_name",)
    assert cy.subject == "Hi"  # blank where the field was (the subject is stripped)
    ann = campaign_preview.render_preview(
        subject=version.subject, html_body=version.html_body, text_body="", data=people[0].data
    )
    assert (ann.subject, ann.missing, ann.error) == ("Hi Ann", (), "")
    assert "<p>Hi Ann, pro</p>" in ann.html
    assert "script" not in ann.html and "onclick" not in ann.html
    assert "Content-Security-Policy" in ann.html
    assert ann.text == "Hi Ann, pro"
    sample = campaign_preview.render_preview(
        subject=version.subject, html_body=version.html_body, text_body="", data=people[3].data
    )
    assert "Hi Alex, [plan]" in sample.html

    summary = campaign_preview.review_summary(
        session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id
    )
    assert summary.missing == ["missing field first_name for 1 recipient"]
    assert (summary.recipient_count, summary.rendered, summary.render_errors) == (3, 3, 0)
    assert summary.sender == "Newsletter <news@example.com>"
    assert (summary.lists, summary.seed_list) == (["Customers"], "All seeds")


def test_the_attachments_dry_run_says_what_each_recipient_gets(session, ws):
    campaign = new_campaign(session, ws)
    complete(session, ws, campaign.id)
    root = attachments.attachments_root(workspace_id=ws["workspace_id"])
    (root / "invoices" / "pro").mkdir(parents=True)
    (root / "invoices" / "pro" / "march.pdf").write_bytes(PDF)
    (root / "secret.pdf").write_bytes(PDF)
    result = save(session, ws, campaign.id, "attachments", pattern="invoices/{{ plan }}/*.pdf")
    assert result.complete

    def run():
        version = draft_of(session, ws, campaign.id)
        return {
            m.email: (m.status, m.files, m.reason)
            for m in campaign_preview.attachment_dry_run(
                session=session, workspace_id=ws["workspace_id"], version=version
            )
        }

    assert run() == {
        "ann@example.com": ("ready", ("invoices/pro/march.pdf",), ""),
        "bob@example.com": ("blocked", (), "No file matches invoices/free/*.pdf."),
        "cy@example.com": ("ready", ("invoices/pro/march.pdf",), ""),
    }
    (root / "invoices" / "pro" / "april.pdf").write_bytes(PDF)
    assert run()["ann@example.com"][0] == "needs_review"
    # A pattern that climbs out of the folder is refused and never stored.
    result = save(session, ws, campaign.id, "attachments", pattern="../{{ plan }}/*.pdf")
    assert not result.saved and "pattern" in result.errors
    assert draft_of(session, ws, campaign.id).attachment_rules["pattern"] == (
        "invoices/{{ plan }}/*.pdf"
    )


def test_files_follow_versions_and_duplicates(session, ws):
    campaign = new_campaign(session, ws)
    complete(session, ws, campaign.id)
    _add_file(session, ws, campaign.id)
    campaigns.publish(
        session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id,
        user_id=ws["user_id"],
    )  # fmt: skip
    session.commit()
    v1 = campaigns.latest_published(
        session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id
    )
    published_file = campaigns.attachments.list_campaign_files(
        session=session, workspace_id=ws["workspace_id"], version_id=v1.id
    )[0]
    # Removing the file from the published campaign makes draft 2 without it; version 1
    # keeps its file.
    campaigns.remove_campaign_file(
        session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id,
        attachment_id=published_file.id, user_id=ws["user_id"],
    )  # fmt: skip
    session.commit()
    assert _files(session, ws, campaign.id) == {}
    assert draft_of(session, ws, campaign.id).number == 2
    assert (
        campaigns.attachments.read_campaign_file(
            session=session, workspace_id=ws["workspace_id"], attachment_id=published_file.id
        )
        == PDF
    )
    copy = campaigns.duplicate_campaign(
        session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id,
        user_id=ws["user_id"],
    )  # fmt: skip
    session.commit()
    assert _files(session, ws, copy.id) == {}
    _add_file(session, ws, campaign.id, "price-list.pdf", b"prices")
    copy = campaigns.duplicate_campaign(
        session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id,
        user_id=ws["user_id"],
    )  # fmt: skip
    session.commit()
    assert _files(session, ws, copy.id) == {"price-list.pdf": b"prices"}


# --- campaign JSON ------------------------------------------------------------------------------

PDF = b"%PDF-1.4 terms and conditions\n"


def _add_file(session, ws, campaign_id, filename="terms.pdf", data=PDF):
    row = campaigns.add_campaign_file(
        session=session, workspace_id=ws["workspace_id"], campaign_id=campaign_id,
        filename=filename, data=data, content_type="application/pdf", user_id=ws["user_id"],
    )  # fmt: skip
    session.commit()
    return row


def _files(session, ws, campaign_id) -> dict[str, bytes]:
    version = campaigns.current_version(
        session=session, workspace_id=ws["workspace_id"], campaign_id=campaign_id
    )
    return {
        row.filename: campaigns.attachments.read_campaign_file(
            session=session, workspace_id=ws["workspace_id"], attachment_id=row.id
        )
        for row in campaigns.attachments.list_campaign_files(
            session=session, workspace_id=ws["workspace_id"], version_id=version.id
        )
    }


def test_export_then_import_into_another_workspace_gives_the_same_campaign(session, ws, other):
    campaign = new_campaign(session, ws)
    complete(session, ws, campaign.id)
    save(session, ws, campaign.id, "basics", description="Monthly news")
    save(session, ws, campaign.id, "recipients",
         filters=[{"field": "plan", "op": "equals", "value": "pro"}])  # fmt: skip
    save(session, ws, campaign.id, "attachments", pattern="invoices/{{ plan }}/*.pdf", zip=True)
    _add_file(session, ws, campaign.id)

    document = cj.export_campaign(
        session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id,
        user_id=ws["user_id"],
    )  # fmt: skip
    session.commit()
    document = json.loads(json.dumps(document))  # what a file on disk would hold
    assert cj.schema_problems(document) == []
    assert document["sender"] == {"name": "Newsletter", "from_email": "news@example.com"}
    assert document["recipients"]["lists"] == ["Customers"]
    assert document["recipients"]["seed_list"] == "All seeds"

    imported = cj.import_campaign(
        session=session, workspace_id=other["workspace_id"], document=document, base_dir=None,
        user_id=other["user_id"],
    )  # fmt: skip
    session.commit()
    assert imported.workspace_id == other["workspace_id"]
    assert (imported.name, imported.description) == ("March newsletter", "Monthly news")
    original = draft_of(session, ws, campaign.id)
    copy = draft_of(session, other, imported.id)
    # Names were matched in the importing workspace: its own sender, list and seed list.
    assert copy.sender_account_id == other["sender_id"]
    assert copy.recipients["list_ids"] == [other["list_id"]]
    assert copy.seed_list_id == other["seed_list_id"]
    for name in ("subject", "html_body", "text_body", "attachment_rules"):
        assert getattr(copy, name) == getattr(original, name)
    assert copy.recipients["filters"] == original.recipients["filters"]
    assert _files(session, other, imported.id) == {"terms.pdf": PDF}
    assert copy.wizard_step == "review"
    assert all(s.complete for s in campaigns.step_status(
        session=session, workspace_id=other["workspace_id"], campaign_id=imported.id))  # fmt: skip
    assert "campaign.import" in actions(session, other["workspace_id"])
    assert "campaign.export" in actions(session, ws["workspace_id"])


def test_names_that_match_nothing_are_reported_and_leave_the_step_unfinished(session, ws):
    document = {
        "format": "mailer_app.campaign/1",
        "name": "Imported",
        "sender": {"name": "Nobody"},
        "recipients": {"lists": ["Customers", "Ghosts"], "seed_list": "Missing seeds"},
        "content": {"subject": "Hi", "text_body": "Hello {{ first_name | default('you') }}"},
    }
    refs = cj.resolve_references(
        session=session, workspace_id=ws["workspace_id"], document=document
    )
    assert refs.notes == [
        "No sender account named Nobody: choose one in Sender.",
        "No contact list named Ghosts: choose lists in Recipients.",
        "No seed list named Missing seeds: choose one in Recipients.",
    ]
    campaign = cj.import_campaign(
        session=session, workspace_id=ws["workspace_id"], document=document, base_dir=None,
        user_id=None,
    )  # fmt: skip
    session.commit()
    unfinished = {
        s.step
        for s in campaigns.step_status(
            session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id
        )
        if not s.complete
    }
    assert unfinished == {"sender"}
    assert draft_of(session, ws, campaign.id).recipients["list_ids"] == [ws["list_id"]]


BAD_DOCUMENTS = [
    ({"format": "mailer_app.campaign/1", "content": {"subject": "x"}},
     ["(the document): 'name' is a required property"]),
    ({"format": "mailer_app.campaign/2", "name": "x", "content": {"subject": "x"}},
     ["format: must be 'mailer_app.campaign/1'"]),
    ({"format": "mailer_app.campaign/1", "name": "x",
      "content": {"subject": "Hi\r\nBcc: victim@example.com"}},
     ["content.subject: must be text on one line (no line breaks)"]),
    ({"format": "mailer_app.campaign/1", "name": "x", "content": {"subject": 3}, "extra": 1},
     ["(the document): Additional properties are not allowed ('extra' was unexpected)",
      "content.subject: 3 is not of type 'string'"]),
    ({"format": "mailer_app.campaign/1", "name": "x", "content": {"subject": "x"},
      "attachments": {"files": [{"filename": "a.pdf", "path": "a.pdf", "content_base64": "QQ=="}]}},
     ["attachments.files[0]: give each file either a path or its content_base64 (exactly one "
      "of them)"]),
    ({"format": "mailer_app.campaign/1", "name": "x", "content": {"subject": "x"},
      "attachments": {"files": [{"filename": "../../etc/passwd", "content_base64": "QQ=="}]}},
     ["attachments.files[0].filename: must be a file name without folders or line breaks"]),
    ({"format": "mailer_app.campaign/1", "name": "x", "content": {"subject": "x"},
      "recipients": {"filters": [{"field": "plan", "op": "like", "value": "p"}]}},
     ["recipients.filters[0].op: must be one of 'equals', 'not_equals', 'contains', "
      "'is_empty', 'is_not_empty'"]),
    ({"format": "mailer_app.campaign/1", "name": "n" * 201, "content": {"subject": "x"}},
     ["name: is too long (at most 200 characters)"]),
    ([], ["(the document): [] is not of type 'object'"]),
]  # fmt: skip


@pytest.mark.parametrize(("document", "problems"), BAD_DOCUMENTS)
def test_the_schema_rejects_bad_documents_with_readable_errors(document, problems):
    assert cj.schema_problems(document) == problems


def test_import_refuses_an_invalid_document_and_writes_nothing(session, ws):
    document = {
        "format": "mailer_app.campaign/1",
        "name": "Attack",
        "content": {"subject": "Hi", "html_body": "{{ ''.__class__.__mro__ }}"},
    }
    with pytest.raises(cj.CampaignDocumentInvalid) as refused:
        cj.import_campaign(
            session=session, workspace_id=ws["workspace_id"], document=document,
            base_dir=None, user_id=None,
        )  # fmt: skip
    session.rollback()
    assert refused.value.problems[0].startswith("content.html_body: ")
    assert campaigns.list_campaigns(session=session, workspace_id=ws["workspace_id"]) == []


def test_relative_file_paths_are_resolved_next_to_the_document(session, ws, tmp_path):
    folder = tmp_path / "export"
    (folder / "files").mkdir(parents=True)
    (folder / "files" / "terms.pdf").write_bytes(PDF)
    (tmp_path / "secret.txt").write_text("not for campaigns")
    document = {
        "format": "mailer_app.campaign/1",
        "name": "With files",
        "content": {"subject": "Hi", "text_body": "Hello"},
        "attachments": {"files": [{"filename": "terms.pdf", "path": "files/terms.pdf"}]},
    }
    campaign = cj.import_campaign(
        session=session, workspace_id=ws["workspace_id"], document=document, base_dir=folder,
        user_id=None,
    )  # fmt: skip
    session.commit()
    assert _files(session, ws, campaign.id) == {"terms.pdf": PDF}

    def problems(path, base_dir=folder):
        doc = {**document, "attachments": {"files": [{"filename": "f.txt", "path": path}]}}
        return cj.check_document(doc, base_dir=base_dir)

    assert problems("../secret.txt") == [
        "attachments.files[0]: ../secret.txt points outside the document's folder."
    ]
    assert problems("files/../../secret.txt") == [
        "attachments.files[0]: files/../../secret.txt points outside the document's folder."
    ]
    assert problems(str(tmp_path / "secret.txt")) == [
        f"attachments.files[0]: {tmp_path / 'secret.txt'} is an absolute path; give it "
        "relative to the document."
    ]
    assert problems("files/nope.pdf") == [
        "attachments.files[0]: files/nope.pdf was not found next to the document."
    ]
    assert problems("files/terms.pdf", base_dir=None) == [
        "attachments.files[0]: files/terms.pdf is relative, but the document's folder is not "
        "known (import the document from a file)."
    ]
    # A symlink inside the folder that points out of it is an escape too.
    (folder / "files" / "link.txt").symlink_to(tmp_path / "secret.txt")
    assert problems("files/link.txt") == [
        "attachments.files[0]: files/link.txt points outside the document's folder."
    ]
    with pytest.raises(cj.CampaignDocumentInvalid):
        cj.import_campaign(
            session=session, workspace_id=ws["workspace_id"],
            document={**document, "attachments": {"files": [{"filename": "s.txt",
                                                             "path": "../secret.txt"}]}},
            base_dir=folder, user_id=None,
        )  # fmt: skip
    session.rollback()


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "mailer_app", "campaign", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_cli_validates_and_imports_a_document(session, ws, tmp_path):
    (tmp_path / "terms.pdf").write_bytes(PDF)
    good = {
        "format": "mailer_app.campaign/1",
        "name": "From the command line",
        "sender": {"name": "Newsletter"},
        "recipients": {"lists": ["Customers"]},
        "content": {"subject": "Hi {{ first_name | default('there') }}", "html_body": HTML},
        "attachments": {"files": [{"filename": "terms.pdf", "path": "terms.pdf"}]},
    }
    path = tmp_path / "campaign.json"
    path.write_text(json.dumps(good))
    result = _cli("validate", str(path))
    assert (result.returncode, result.stdout.strip()) == (0, f"{path} is a valid campaign document")

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**good, "content": {"subject": "Hi\nthere"}, "name": ""}))
    result = _cli("validate", str(bad))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{bad}: content.subject: must be text on one line (no line breaks)",
        f"{bad}: name: must not be empty",
    ]
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": ')
    result = _cli("validate", str(broken))
    assert result.returncode == 1
    assert "is not JSON: line 1 column 10" in result.stderr

    result = _cli("import", str(path), "--workspace", str(ws["workspace_id"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("imported campaign 'From the command line' as campaign ")
    session.expire_all()
    rows = campaigns.list_campaigns(session=session, workspace_id=ws["workspace_id"])
    assert [r.name for r in rows] == ["From the command line"]
    draft = draft_of(session, ws, rows[0].id)
    assert draft.sender_account_id == ws["sender_id"]
    assert draft.source == "cli"
    assert _files(session, ws, rows[0].id) == {"terms.pdf": PDF}

    result = _cli("import", str(bad), "--workspace", str(ws["workspace_id"]))
    assert result.returncode == 1 and "must not be empty" in result.stderr
    session.expire_all()
    assert len(campaigns.list_campaigns(session=session, workspace_id=ws["workspace_id"])) == 1

    result = _cli("import", str(path), "--workspace", "999999")
    assert (result.returncode, result.stderr) == (1, "error: This workspace does not exist.\n")

    # Export prints a document the schema accepts, carrying the file itself.
    result = _cli("export", str(rows[0].id), "--workspace", str(ws["workspace_id"]))
    assert result.returncode == 0, result.stderr
    exported = json.loads(result.stdout)
    assert cj.schema_problems(exported) == []
    assert exported["content"]["html_body"] == HTML
    assert exported["attachments"]["files"][0]["filename"] == "terms.pdf"
    result = _cli("export", str(rows[0].id), "--workspace", str(ws["workspace_id"] + 999))
    assert result.returncode == 1 and "does not exist" in result.stderr


def test_the_app_serves_the_schema_kept_in_the_repository():
    from mailer_app.api import build_api

    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=build_api())
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.get("/schemas/campaign.schema.json")

    response = asyncio.run(fetch())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/schema+json")
    served = response.json()
    assert served == json.loads((ROOT / "mailer_app/schemas/campaign.schema.json").read_text())
    assert served["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    # A document export writes is valid against what is served.
    assert (
        cj.schema_problems(
            {"format": "mailer_app.campaign/1", "name": "x", "content": {"subject": "x"}}
        )
        == []
    )
