"""The review gate on SQLite and PostgreSQL: counts, the message list, decisions, what
blocks Send, approval, previews, .eml downloads and test sends through a real SMTP
server, and the build / review / test-send commands.

Most tests build a real fixture campaign with `build.run_build`; the decision and
blocker tests also insert rows directly to set up exact situations cheaply.
"""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
import sys

import httpx
import pytest
from sqlmodel import select

import mailer_app.models  # noqa: F401  (every table in SQLModel.metadata)
from mailer_app.models import (
    AuditEntry,
    BuildStatus,
    BuiltMessage,
    Campaign,
    CampaignBuild,
    Contact,
    ContactList,
    ReviewStatus,
    SenderAccount,
    Source,
    utcnow,
)
from mailer_app.services import (
    InvalidInput,
    NotFoundError,
    ServiceError,
    attachments,
    auth,
    build,
    campaigns,
    review,
    senders,
    suppressions,
)
from mailer_app.services.campaign_status import IllegalTransition
from mailer_app.services.workspaces import create_workspace
from tests.conftest import ROOT, free_port
from tests.smtp_fixtures import smtp_auth_server_fixture, smtp_server_fixture  # noqa: F401

PDF = b"%PDF-1.4 invoice\n"
SUBJECT = "Your invoice, {{ first_name }}"
HTML = "<p>Hello {{ first_name }}, here is invoice {{ customer_id }}.</p><script>x()</script>"
TEXT = "Hello {{ first_name }}, here is invoice {{ customer_id }}."
# email -> (first name, customer id, active): what the build should make of each.
PEOPLE = {
    "ann@example.com": ("Ann", "C-1", True),  # ready: one invoice
    "bob@example.com": ("", "C-2", True),  # warning: "Hello ," (blank_field)
    "cy@example.com": ("Cy", "C-3", True),  # excluded: suppressed
    "dee@example.com": ("Dee", "C-4", False),  # inactive
    "eve@example.com": ("Eve", "C-5", True),  # needs_review: two invoices
    "fay@example.com": ("Fay", "C-6", True),  # blocked: no invoice
    "gus@example.com": ("Gus", "C-7", True),  # ready: one invoice
}
EXPECTED = {
    "ann@example.com": ("ready", []),
    "bob@example.com": ("warning", ["blank_field"]),
    "cy@example.com": ("excluded", ["suppressed"]),
    "dee@example.com": ("inactive", ["inactive_contact"]),
    "eve@example.com": ("needs_review", ["ambiguous_attachment"]),
    "fay@example.com": ("blocked", ["missing_attachment"]),
    "gus@example.com": ("ready", []),
}


# --- fixtures ---------------------------------------------------------------------------------


def _workspace(session, name: str, smtp) -> dict:
    workspace = create_workspace(session=session, name=name, source=Source.UI)
    users = {
        role: auth.create_user(
            session=session,
            workspace_id=workspace.id,
            email=f"{role}@{workspace.slug}.example.com",
            password="correct horse battery",
            role=role,
            created_by_id=None,
        )  # fmt: skip
        for role in ("editor", "sender", "viewer")
    }
    sender = senders.create_sender(
        session=session, workspace_id=workspace.id, user_id=None, name="Billing",
        from_email="billing@example.com", from_name="Acme Billing", smtp_host=smtp.host,
        smtp_port=smtp.port, smtp_security="plain", smtp_username=smtp.username,
        password=smtp.password,
    )  # fmt: skip
    people = ContactList(workspace_id=workspace.id, name="Customers", field_names=["customer_id"])
    session.add(people)
    session.flush()
    for address, (first, customer, active) in PEOPLE.items():
        session.add(
            Contact(
                workspace_id=workspace.id, list_id=people.id, email=address, first_name=first,
                fields={"customer_id": customer}, is_active=active,
            )
        )  # fmt: skip
    suppressions.add_suppression(
        session=session, workspace_id=workspace.id, email="cy@example.com", reason="unsubscribe"
    )
    root = attachments.attachments_root(workspace_id=workspace.id)
    (root / "invoices").mkdir(parents=True, exist_ok=True)
    for name in ("C-1.pdf", "C-2.pdf", "C-3.pdf", "C-4.pdf", "C-5.pdf", "C-5-b.pdf", "C-7.pdf"):
        (root / "invoices" / name).write_bytes(PDF)
    session.commit()
    ws = {
        "workspace_id": workspace.id,
        "user_id": users["sender"].id,
        "editor_id": users["editor"].id,
        "users": users,
        "sender_id": sender.id,
        "list_id": people.id,
    }
    campaign = campaigns.create_campaign(
        session=session, workspace_id=workspace.id, name="Invoices", user_id=ws["editor_id"]
    )
    for step, values in [
        ("sender", {"sender_account_id": str(sender.id)}),
        ("recipients", {"list_ids": [str(people.id)]}),
        ("content", {"subject": SUBJECT, "html_body": HTML, "text_body": TEXT}),
        ("attachments", {"pattern": "invoices/{{ customer_id }}*.pdf"}),
    ]:
        result = campaigns.save_step(
            session=session, workspace_id=workspace.id, campaign_id=campaign.id, step=step,
            values=values, user_id=ws["editor_id"],
        )  # fmt: skip
        assert result.complete, (step, result.errors)
    campaigns.publish(
        session=session, workspace_id=workspace.id, campaign_id=campaign.id,
        user_id=ws["editor_id"],
    )  # fmt: skip
    session.commit()
    ws["campaign_id"] = campaign.id
    return ws


def run_build(session, ws) -> CampaignBuild:
    """Queue a build as the page does, then do the job's work here."""
    row = build.start_build(
        session=session, workspace_id=ws["workspace_id"], campaign_id=ws["campaign_id"],
        user_id=ws["editor_id"], source=Source.UI,
    )  # fmt: skip
    build_id = row.id
    session.commit()
    done = build.run_build(build_id=build_id)
    session.expire_all()
    assert done.status == BuildStatus.DONE, done.message
    return done


@pytest.fixture
def ws(session, smtp_server, redis_url) -> dict:
    return _workspace(session, "Acme", smtp_server)


@pytest.fixture
def built(session, ws) -> dict:
    run_build(session, ws)
    ws["ids"] = {
        row.email: row.id
        for row in session.exec(
            select(BuiltMessage).where(BuiltMessage.campaign_id == ws["campaign_id"])
        ).all()
    }
    return ws


def counts(session, ws) -> review.ReviewCounts:
    return review.review_counts(
        session=session, workspace_id=ws["workspace_id"], campaign_id=ws["campaign_id"]
    )


def blockers(session, ws) -> list[str]:
    return review.send_blockers(
        session=session, workspace_id=ws["workspace_id"], campaign_id=ws["campaign_id"]
    )


def listed(session, ws, **filters) -> list[str]:
    page = review.list_messages(
        session=session, workspace_id=ws["workspace_id"], campaign_id=ws["campaign_id"], **filters
    )
    return [row.email for row in page.rows]


def approve(session, ws, **how) -> int:
    count = review.approve_messages(
        session=session, workspace_id=ws["workspace_id"], campaign_id=ws["campaign_id"],
        user_id=ws["user_id"], source=Source.UI, **how,
    )  # fmt: skip
    session.commit()
    return count


def exclude(session, ws, ids) -> int:
    count = review.exclude_messages(
        session=session, workspace_id=ws["workspace_id"], campaign_id=ws["campaign_id"],
        user_id=ws["user_id"], message_ids=ids, source=Source.UI,
    )  # fmt: skip
    session.commit()
    return count


def actions(session, ws) -> list[AuditEntry]:
    return list(
        session.exec(
            select(AuditEntry)
            .where(AuditEntry.workspace_id == ws["workspace_id"])
            .order_by(AuditEntry.id)
        ).all()
    )


def snapshot(session, ws) -> tuple:
    """The campaign row and every built row, as stored."""
    session.expire_all()
    campaign = session.get(Campaign, ws["campaign_id"])
    rows = session.exec(
        select(BuiltMessage)
        .where(BuiltMessage.campaign_id == ws["campaign_id"])
        .order_by(BuiltMessage.id)
    ).all()
    return (
        (campaign.status, campaign.status_reason, campaign.updated_at),
        [r.model_dump() for r in rows],
    )


# --- counts and the list -----------------------------------------------------------------------


def test_counts_by_status_and_reason_with_zeros(session, built):
    result = counts(session, built)
    assert result.by_status == {
        "ready": 2, "warning": 1, "needs_review": 1, "blocked": 1, "excluded": 1, "inactive": 1,
    }  # fmt: skip
    assert (result.total, result.awaiting_decision, result.sendable) == (7, 1, 3)
    reasons = {(r.status, r.code): r for r in result.by_reason}
    assert {key: r.count for key, r in reasons.items()} == {
        ("warning", "blank_field"): 1,
        ("needs_review", "ambiguous_attachment"): 1,
        ("blocked", "missing_attachment"): 1,
        ("excluded", "suppressed"): 1,
        ("inactive", "inactive_contact"): 1,
    }
    assert reasons[("excluded", "suppressed")].explanation == build.REASONS["suppressed"][1]
    assert reasons[("excluded", "suppressed")].details == ("unsubscribe",)
    # Before any build every status is listed, with 0.
    campaigns.save_step(
        session=session, workspace_id=built["workspace_id"], campaign_id=built["campaign_id"],
        step="basics", values={"name": "Invoices 2"}, user_id=built["editor_id"],
    )  # fmt: skip
    campaigns.publish(
        session=session, workspace_id=built["workspace_id"], campaign_id=built["campaign_id"],
        user_id=built["editor_id"],
    )  # fmt: skip
    session.commit()
    fresh = counts(session, built)
    assert fresh.by_status == {str(s): 0 for s in ReviewStatus}
    assert (fresh.total, fresh.by_reason) == (0, [])


def test_every_built_row_has_the_status_its_reasons_say(session, built):
    rows = session.exec(
        select(BuiltMessage).where(BuiltMessage.campaign_id == built["campaign_id"])
    ).all()
    assert {r.email: (r.review_status, [x["code"] for x in r.reasons]) for r in rows} == EXPECTED


def test_the_list_filters_by_status_reason_and_search_and_pages(session, built):
    assert listed(session, built) == list(PEOPLE)  # by address
    assert listed(session, built, status="ready") == ["ann@example.com", "gus@example.com"]
    assert listed(session, built, reason="ambiguous_attachment") == ["eve@example.com"]
    assert listed(session, built, reason="missing_attachment", status="blocked") == [
        "fay@example.com"
    ]
    assert listed(session, built, search="EVE@") == ["eve@example.com"]
    assert listed(session, built, search="invoice, ann") == ["ann@example.com"]  # the subject
    assert listed(session, built, search="%") == []  # a character, not a wildcard
    page = review.list_messages(
        session=session, workspace_id=built["workspace_id"], campaign_id=built["campaign_id"],
        offset=2, limit=2,
    )  # fmt: skip
    assert (page.total, [r.email for r in page.rows]) == (7, ["cy@example.com", "dee@example.com"])
    [row] = review.list_messages(
        session=session, workspace_id=built["workspace_id"], campaign_id=built["campaign_id"],
        reason="suppressed",
    ).rows  # fmt: skip
    assert row.reasons == [f"{build.REASONS['suppressed'][1]} (unsubscribe)"]
    with pytest.raises(InvalidInput, match="no message status"):
        listed(session, built, status="sent")


# --- decisions ---------------------------------------------------------------------------------


def test_approving_a_group_records_who_and_when_and_only_touches_that_group(session, built):
    before = utcnow()
    assert approve(session, built, reason_code="ambiguous_attachment") == 1
    assert approve(session, built, reason_code="ambiguous_attachment") == 0  # already decided
    # Only warning / needs_review messages can be approved.
    assert approve(session, built, message_ids=[built["ids"]["fay@example.com"]]) == 0
    assert approve(session, built, message_ids=[built["ids"]["ann@example.com"]]) == 0
    assert approve(session, built, message_ids=[built["ids"]["bob@example.com"]]) == 1
    session.expire_all()
    eve = session.get(BuiltMessage, built["ids"]["eve@example.com"])
    assert (eve.decision, eve.approved_by_id) == ("approved", built["user_id"])
    assert eve.approved_at >= before.replace(tzinfo=eve.approved_at.tzinfo)
    result = counts(session, built)
    assert (result.awaiting_decision, result.approved, result.sendable) == (0, 2, 4)
    assert result.by_status["needs_review"] == 1  # still what the build said
    entries = [e for e in actions(session, built) if e.action == "review.approve"]
    assert [(e.user_id, e.details["count"], e.details["reason_code"]) for e in entries] == [
        (built["user_id"], 1, "ambiguous_attachment"),
        (built["user_id"], 1, None),
    ]
    with pytest.raises(InvalidInput, match="Choose the messages"):
        approve(session, built)


def test_excluded_messages_count_as_excluded_and_can_be_put_back(session, built):
    ann, fay = built["ids"]["ann@example.com"], built["ids"]["fay@example.com"]
    assert exclude(session, built, [ann]) == 1
    assert exclude(session, built, [ann]) == 0
    result = counts(session, built)
    assert (result.by_status["ready"], result.by_status["excluded"]) == (1, 2)
    assert result.excluded_by_person == 1
    assert ("excluded", review.EXCLUDED_BY_PERSON) in {(r.status, r.code) for r in result.by_reason}
    assert listed(session, built, status="excluded") == ["ann@example.com", "cy@example.com"]
    assert listed(session, built, status="ready") == ["gus@example.com"]
    assert listed(session, built, reason=review.EXCLUDED_BY_PERSON) == ["ann@example.com"]
    # A group approval never overrides a person's exclusion.
    assert exclude(session, built, [built["ids"]["eve@example.com"]]) == 1
    assert approve(session, built, reason_code="ambiguous_attachment") == 0
    assert exclude(session, built, [fay]) == 1  # blocked ones may be excluded too
    count = review.include_messages(
        session=session, workspace_id=built["workspace_id"], campaign_id=built["campaign_id"],
        user_id=built["user_id"], message_ids=[ann], source=Source.UI,
    )  # fmt: skip
    session.commit()
    assert count == 1
    session.expire_all()
    row = session.get(BuiltMessage, ann)
    assert (row.decision, row.approved_by_id, row.review_status) == (None, None, "ready")
    assert [e.action for e in actions(session, built)][-4:] == [
        "review.exclude", "review.exclude", "review.exclude", "review.include",
    ]  # fmt: skip


def test_other_workspaces_see_and_change_nothing(session, built, smtp_server):
    other = _workspace(session, "Other", smtp_server)
    eve = built["ids"]["eve@example.com"]
    with pytest.raises(NotFoundError):
        review.review_counts(
            session=session, workspace_id=other["workspace_id"], campaign_id=built["campaign_id"]
        )
    count = review.approve_messages(
        session=session, workspace_id=other["workspace_id"], campaign_id=other["campaign_id"],
        user_id=other["user_id"], message_ids=[eve],
    )  # fmt: skip
    assert count == 0
    with pytest.raises(NotFoundError):
        review.message_preview(session=session, workspace_id=other["workspace_id"], message_id=eve)


# --- the gate ------------------------------------------------------------------------------------


def test_blockers_clear_only_when_the_build_is_done_and_nothing_needs_review(session, ws):
    assert blockers(session, ws) == ["Build the messages of version 1 first."]
    row = build.start_build(
        session=session, workspace_id=ws["workspace_id"], campaign_id=ws["campaign_id"],
        user_id=ws["editor_id"],
    )  # fmt: skip
    session.commit()
    assert blockers(session, ws) == ["The messages are still being built."]
    row.status, row.total, row.done = BuildStatus.RUNNING, 7, 3
    session.add(row)
    session.commit()
    assert blockers(session, ws) == ["The messages are still being built (3 of 7 done)."]
    row.status, row.message = BuildStatus.FAILED, "The database went away."
    session.add(row)
    session.commit()
    assert blockers(session, ws) == [
        "The last build failed: The database went away. Fix it and build again."
    ]
    run_build(session, ws)
    assert blockers(session, ws) == ["1 message needs a decision: approve or exclude it."]
    ids = {r.email: r.id for r in session.exec(select(BuiltMessage)).all()}
    exclude(session, ws, [ids["eve@example.com"]])
    assert blockers(session, ws) == []
    # Strict validation of the version: a paused sender blocks Send.
    sender = session.get(SenderAccount, ws["sender_id"])
    sender.status = "paused"
    session.add(sender)
    session.commit()
    [problem] = blockers(session, ws)
    assert problem.startswith("Sender: The sender account Billing is paused")


def test_nothing_to_send_blocks_and_so_does_a_campaign_not_in_review(session, ws):
    run_build(session, ws)
    ids = {r.email: r.id for r in session.exec(select(BuiltMessage)).all()}
    exclude(session, ws, [ids[a] for a in ("ann@example.com", "bob@example.com",
                                             "eve@example.com", "gus@example.com")])  # fmt: skip
    assert blockers(session, ws) == [
        "No message can be sent: every one is blocked, excluded or inactive."
    ]
    campaigns.save_step(
        session=session, workspace_id=ws["workspace_id"], campaign_id=ws["campaign_id"],
        step="basics", values={"name": "Invoices (edited)"}, user_id=ws["editor_id"],
    )  # fmt: skip
    session.commit()
    assert blockers(session, ws)[0] == (
        "The campaign is draft: only a campaign ready for review can be approved."
    )


def test_approve_campaign_refuses_with_blockers_then_records_the_approver(session, built):
    with pytest.raises(review.CampaignNotReady) as refused:
        review.approve_campaign(
            session=session, workspace_id=built["workspace_id"],
            campaign_id=built["campaign_id"], user_id=built["user_id"],
        )  # fmt: skip
    assert refused.value.blockers == ["1 message needs a decision: approve or exclude it."]
    assert "approve or exclude it" in str(refused.value)
    session.rollback()
    session.expire_all()
    assert session.get(Campaign, built["campaign_id"]).status == "in_review"

    approve(session, built, reason_code="ambiguous_attachment")
    campaign = review.approve_campaign(
        session=session, workspace_id=built["workspace_id"], campaign_id=built["campaign_id"],
        user_id=built["user_id"], source=Source.UI,
    )  # fmt: skip
    session.commit()
    assert campaign.status == "approved"
    [approval] = [e for e in actions(session, built) if e.action == "campaign.approve"]
    assert approval.user_id == built["user_id"]
    assert (approval.details["version"], approval.details["messages"]) == (1, 4)
    assert approval.details["approved_at"]
    shown = review.campaign_approval(
        session=session, workspace_id=built["workspace_id"], campaign_id=built["campaign_id"]
    )
    assert shown is not None and shown.approved_at == approval.created_at
    assert shown.approver  # the approver's name, as the review page shows it after a reload
    [move] = [e for e in actions(session, built) if e.action == "campaign.status"][-1:]
    assert (move.user_id, move.details["from"], move.details["to"]) == (
        built["user_id"], "in_review", "approved",
    )  # fmt: skip
    with pytest.raises(review.CampaignNotReady, match="already approved"):
        review.approve_campaign(
            session=session, workspace_id=built["workspace_id"],
            campaign_id=built["campaign_id"], user_id=built["user_id"],
        )  # fmt: skip
    session.rollback()
    # Changing a decision after approval sends the campaign back to review.
    exclude(session, built, [built["ids"]["ann@example.com"]])
    session.expire_all()
    assert session.get(Campaign, built["campaign_id"]).status == "in_review"
    assert (
        review.campaign_approval(
            session=session, workspace_id=built["workspace_id"], campaign_id=built["campaign_id"]
        )
        is None
    )
    # And the machine refuses what the gate does not allow.
    campaign = session.get(Campaign, built["campaign_id"])
    with pytest.raises(IllegalTransition, match="A campaign in review cannot be queued."):
        campaigns.change_status(campaign, "queued")


# --- preview, .eml, test send --------------------------------------------------------------------


def test_the_preview_is_the_message_as_it_will_be_sent(session, built):
    preview = review.message_preview(
        session=session,
        workspace_id=built["workspace_id"],
        message_id=built["ids"]["eve@example.com"],
    )
    headers = dict(preview.headers)
    assert headers["To"] == "Eve <eve@example.com>"
    assert headers["From"] == "Acme Billing <billing@example.com>"
    assert headers["Subject"] == "Your invoice, Eve"
    assert {"Message-ID", "Date", "List-Unsubscribe", "MIME-Version"} <= set(headers)
    assert "Hello Eve, here is invoice C-5." in preview.html_document
    assert "<script" not in preview.html_document  # sanitized for the preview frame
    assert preview.text.strip() == "Hello Eve, here is invoice C-5."
    assert sorted(preview.attachments) == [("C-5-b.pdf", len(PDF)), ("C-5.pdf", len(PDF))]
    assert (preview.review_status, preview.problem) == ("needs_review", None)
    assert preview.reasons == [f"{build.REASONS['ambiguous_attachment'][1]} (2)"]
    # A blocked message is shown as it would be (here: without the missing invoice).
    blocked = review.message_preview(
        session=session,
        workspace_id=built["workspace_id"],
        message_id=built["ids"]["fay@example.com"],
    )
    assert (blocked.review_status, blocked.attachments, blocked.problem) == ("blocked", [], None)
    assert dict(blocked.headers)["Subject"] == "Your invoice, Fay"
    # One that cannot be put together any more says why instead.
    root = attachments.attachments_root(workspace_id=built["workspace_id"])
    (root / "invoices" / "C-1.pdf").unlink()
    gone = review.message_preview(
        session=session,
        workspace_id=built["workspace_id"],
        message_id=built["ids"]["ann@example.com"],
    )
    assert gone.headers == [] and "build again" in gone.problem


def test_a_test_send_arrives_marked_as_a_test_and_changes_nothing(session, built, smtp_server):
    before = snapshot(session, built)
    result = review.test_send(
        session=session, workspace_id=built["workspace_id"],
        message_id=built["ids"]["ann@example.com"], to_address=" tester@example.org ",
        user_id=built["user_id"], source=Source.UI,
    )  # fmt: skip
    session.commit()
    assert result.ok, result.detail
    assert "accepted" in result.detail
    [data] = smtp_server.recorder.messages
    assert smtp_server.recorder.mail_from == ["billing@example.com"]
    assert smtp_server.recorder.successful_logins == [smtp_server.username]
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert message["To"].addresses[0].addr_spec == "tester@example.org"
    assert "ann@example.com" not in str(message["To"]) + str(message["Cc"] or "")
    assert message["Subject"] == "[TEST] Your invoice, Ann"
    assert message["X-Mailer-App-Test"] == "yes"
    assert "Hello Ann" in message.get_body(("html",)).get_content()
    assert [p.get_filename() for p in message.iter_attachments()] == ["C-1.pdf"]
    assert snapshot(session, built) == before  # campaign and messages as they were
    [entry] = [e for e in actions(session, built) if e.action == "review.test_send"]
    assert (entry.user_id, entry.details["to"], entry.details["ok"]) == (
        built["user_id"], "tester@example.org", True,
    )  # fmt: skip

    with pytest.raises(InvalidInput, match="not a valid email address"):
        review.test_send(
            session=session, workspace_id=built["workspace_id"],
            message_id=built["ids"]["ann@example.com"], to_address="tester@",
            user_id=built["user_id"],
        )  # fmt: skip
    with pytest.raises(InvalidInput, match="not a valid email address"):
        review.test_send(
            session=session, workspace_id=built["workspace_id"],
            message_id=built["ids"]["ann@example.com"],
            to_address="a@example.org\r\nBcc: victim@example.net", user_id=built["user_id"],
        )  # fmt: skip
    root = attachments.attachments_root(workspace_id=built["workspace_id"])
    (root / "invoices" / "C-1.pdf").unlink()
    with pytest.raises(ServiceError, match="build again"):
        review.test_send(
            session=session, workspace_id=built["workspace_id"],
            message_id=built["ids"]["ann@example.com"], to_address="tester@example.org",
            user_id=built["user_id"],
        )  # fmt: skip
    session.rollback()
    assert len(smtp_server.recorder.messages) == 1


def test_a_test_send_to_a_server_that_is_down_says_so(session, built):
    sender = session.get(SenderAccount, built["sender_id"])
    sender.smtp_port = free_port()  # nothing listens there
    session.add(sender)
    session.commit()
    result = review.test_send(
        session=session, workspace_id=built["workspace_id"],
        message_id=built["ids"]["ann@example.com"], to_address="tester@example.org",
        user_id=built["user_id"],
    )  # fmt: skip
    assert not result.ok
    assert result.detail.startswith("Could not reach the mail server at 127.0.0.1:")


@pytest.mark.anyio
async def test_the_eml_download_is_for_people_of_the_workspace_only(session, built, smtp_server):
    from mailer_app import routes
    from mailer_app.api import build_api

    other = _workspace(session, "Other", smtp_server)
    tokens = {
        "viewer": auth.start_session(session=session, user=built["users"]["viewer"]),
        "stranger": auth.start_session(session=session, user=other["users"]["editor"]),
    }
    session.commit()
    message_id = built["ids"]["eve@example.com"]
    expected = build.message_bytes(
        session=session, workspace_id=built["workspace_id"], message_id=message_id
    )
    url = routes.message_eml(message_id)
    transport = httpx.ASGITransport(app=build_api())
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        answer = await client.get(url, cookies={"mailer_session": tokens["viewer"]})
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "message/rfc822"
        assert answer.headers["content-disposition"] == (
            f'attachment; filename="message-{message_id}-eve_at_example.com.eml"'
        )
        assert answer.content == expected
        parsed = email.message_from_bytes(answer.content, policy=email.policy.default)
        assert parsed["To"].addresses[0].addr_spec == "eve@example.com"
        assert len(list(parsed.iter_attachments())) == 2
        assert (await client.get(url)).status_code == 403
        stranger = await client.get(url, cookies={"mailer_session": tokens["stranger"]})
        assert stranger.status_code == 404
        missing = await client.get(
            routes.message_eml(999999), cookies={"mailer_session": tokens["viewer"]}
        )
        assert missing.status_code == 404


# --- the commands ----------------------------------------------------------------------------


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "mailer_app", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_the_review_command_prints_counts_reasons_and_blockers(session, built):
    result = _cli("review", str(built["campaign_id"]), "--workspace", str(built["workspace_id"]))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"campaign {built['campaign_id']} 'Invoices': Ready for review"
    assert lines[1] == "7 messages"
    assert [line.split() for line in lines[2:8]] == [
        ["ready", "2"], ["warning", "1"], ["needs_review", "1"], ["blocked", "1"],
        ["excluded", "1"], ["inactive", "1"],
    ]  # fmt: skip
    assert any(line.split()[:3] == ["needs_review", "ambiguous_attachment", "1"] for line in lines)
    assert lines[-2:] == [
        "Send is blocked:", "  - 1 message needs a decision: approve or exclude it."
    ]  # fmt: skip
    approve(session, built, reason_code="ambiguous_attachment")
    result = _cli("review", str(built["campaign_id"]), "--workspace", str(built["workspace_id"]))
    assert result.stdout.splitlines()[-1] == "Send is possible: nothing blocks it."
    result = _cli("review", str(built["campaign_id"]), "--workspace", "999999")
    assert result.returncode == 1 and "does not exist" in result.stderr


def test_the_test_send_command_sends_one_marked_message(session, built, smtp_server):
    ann = built["ids"]["ann@example.com"]
    result = _cli("test-send", str(ann), "--to", "qa@example.org",
                  "--workspace", str(built["workspace_id"]))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("test sent to qa@example.org: ")
    [data] = smtp_server.recorder.messages
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert (message["To"].addresses[0].addr_spec, message["X-Mailer-App-Test"]) == (
        "qa@example.org", "yes",
    )  # fmt: skip
    result = _cli("test-send", str(ann), "--to", "not an address",
                  "--workspace", str(built["workspace_id"]))  # fmt: skip
    assert result.returncode == 1 and "not a valid email address" in result.stderr
    session.expire_all()
    [entry] = [e for e in actions(session, built) if e.action == "review.test_send"]
    assert entry.source == "cli"


def test_the_build_command_queues_and_waits_for_a_worker(session, ws, spawn, db_url):
    result = _cli("build", str(ws["campaign_id"]), "--workspace", str(ws["workspace_id"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("(version 1) is queued")
    spawn("jobs.worker", "build", env={"DATABASE_URL": db_url})
    result = _cli("build", str(ws["campaign_id"]), "--workspace", str(ws["workspace_id"]),
                  "--wait", "--timeout", "150", timeout=200)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    last = result.stdout.splitlines()[-1]
    assert "done, 7 of 7 recipients" in last, result.stdout
    session.expire_all()
    assert counts(session, ws).total == 7
    result = _cli("build", str(ws["campaign_id"]), "--workspace", str(ws["workspace_id"] + 999))
    assert result.returncode == 1 and "does not exist" in result.stderr
