"""One-click unsubscribe on SQLite and PostgreSQL: the link of a built message, its
confirmation page (which changes nothing), the RFC 8058 POST and the page's button,
repeated clicks, and links that are not genuine, through the app's HTTP routes."""

from __future__ import annotations

import email
import email.policy
import os
import re
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlmodel import select

import mailer_app.models  # noqa: F401  (every table in SQLModel.metadata)
from mailer_app.models import (
    AuditEntry,
    BuiltMessage,
    Campaign,
    CampaignStatus,
    CampaignVersion,
    Contact,
    ContactList,
    ReviewStatus,
    SenderAccount,
    Source,
    Suppression,
    utcnow,
)
from mailer_app.services import InvalidInput, build, contacts, suppressions, unsubscribe
from mailer_app.services.workspaces import create_workspace
from mailer_app.settings import get_settings

PEOPLE = ["ann@example.com", "bob@example.com", "cy@example.com"]
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def _workspace(session, name: str) -> dict:
    workspace = create_workspace(session=session, name=name, source=Source.UI)
    sender = SenderAccount(
        workspace_id=workspace.id, name="News", from_name="News", from_email="news@example.com",
        smtp_host="127.0.0.1",
    )  # fmt: skip
    people = ContactList(workspace_id=workspace.id, name="People")
    session.add_all([sender, people])
    session.flush()
    for address in PEOPLE:
        session.add(Contact(workspace_id=workspace.id, list_id=people.id, email=address))
    campaign = Campaign(workspace_id=workspace.id, name="Spring", status=CampaignStatus.IN_REVIEW)
    session.add(campaign)
    session.flush()
    version = CampaignVersion(
        workspace_id=workspace.id, campaign_id=campaign.id, number=1, is_draft=False,
        published_at=utcnow(), sender_account_id=sender.id, subject="Hello",
        html_body="<p>Hello</p>", text_body="Hello", recipients={"list_ids": [people.id]},
        attachment_rules={"pattern": "", "zip": False},
    )  # fmt: skip
    session.add(version)
    session.commit()
    return {"workspace_id": workspace.id, "campaign_id": campaign.id, "list_id": people.id}


@pytest.fixture
def acme(session, monkeypatch) -> dict:
    monkeypatch.setattr(build, "queue_build", lambda build_id: None)  # run_build runs here
    monkeypatch.setenv("PUBLIC_URL", "https://mail.example.org/")
    get_settings.cache_clear()
    return _workspace(session, "Acme <Mail> & Co")


@pytest.fixture
async def client():
    from mailer_app.api import build_api

    transport = httpx.ASGITransport(app=build_api())
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        yield c


def _build(session, engine, ws) -> dict[str, BuiltMessage]:
    queued = build.start_build(
        session=session, workspace_id=ws["workspace_id"], campaign_id=ws["campaign_id"],
        user_id=None, source=Source.CLI,
    )  # fmt: skip
    session.commit()
    build.run_build(build_id=queued.id, engine=engine)
    session.expire_all()
    rows = session.exec(select(BuiltMessage).where(BuiltMessage.campaign_id == ws["campaign_id"]))
    return {row.email: row for row in rows}


def _link_in_message(session, ws, message: BuiltMessage) -> str:
    """The path of the List-Unsubscribe link of the message as it will be sent."""
    data = build.message_bytes(
        session=session, workspace_id=ws["workspace_id"], message_id=message.id
    )
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = re.fullmatch(r"<(https://[^>]+)>", str(parsed["List-Unsubscribe"])).group(1)
    assert url.startswith("https://mail.example.org/unsubscribe/")
    return urlsplit(url).path


def _suppressed(session, ws) -> dict[str, str]:
    session.commit()  # a fresh snapshot: the app wrote through its own session
    rows = session.exec(select(Suppression).where(Suppression.workspace_id == ws["workspace_id"]))
    return {row.email: row.reason for row in rows}


def _flags(session, ws) -> dict[str, str | None]:
    session.commit()  # a fresh snapshot: the app wrote through its own session
    return {
        contact.email: reason
        for contact, reason in contacts.iter_recipients_flagged(
            session=session, workspace_id=ws["workspace_id"], list_ids=[ws["list_id"]]
        )
    }


def _link(ws, address: str) -> str:
    return f"/unsubscribe/{unsubscribe.unsubscribe_token(ws['workspace_id'], address)}"


def _audit(session, ws) -> list[tuple[str, str, dict]]:
    session.commit()  # a fresh snapshot: the app wrote through its own session
    rows = session.exec(
        select(AuditEntry)
        .where(
            AuditEntry.workspace_id == ws["workspace_id"], AuditEntry.target_type == "suppression"
        )
        .order_by(AuditEntry.id)
    )
    return [(row.action, row.source, row.details) for row in rows]


def _assert_page_basics(answer: httpx.Response) -> None:
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert "set-cookie" not in answer.headers
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    # Self-contained: no script, no external stylesheet, image or font.
    assert "<script" not in answer.text
    assert not re.search(r"""(src|href)\s*=""", answer.text)


# --- the whole path: built message -> page -> one click -> next build -----------------------


@pytest.mark.anyio
async def test_the_link_of_a_built_message_unsubscribes_with_one_click(
    session, engine, acme, client
):
    built = _build(session, engine, acme)
    assert {e: m.review_status for e, m in built.items()} == dict.fromkeys(
        PEOPLE, ReviewStatus.READY
    )
    path = _link_in_message(session, acme, built["bob@example.com"])

    # Opening the link (as a person or a mail scanner does) only asks.
    page = await client.get(path)
    assert page.status_code == 200
    _assert_page_basics(page)
    assert '<form method="post">' in page.text
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in page.text
    assert '<button type="submit">Unsubscribe</button>' in page.text
    assert "<strong>bob@example.com</strong>" in page.text
    assert "<strong>Acme &lt;Mail&gt; &amp; Co</strong>" in page.text  # escaped
    assert (await client.head(path)).status_code == 200
    assert _suppressed(session, acme) == {}

    # The mail client's one-click POST: no cookie, no redirect, a plain 200.
    answer = await client.post(path, data=ONE_CLICK)
    assert answer.status_code == 200
    assert "location" not in answer.headers
    _assert_page_basics(answer)
    assert "<h1>You are unsubscribed</h1>" in answer.text
    assert "<strong>bob@example.com</strong> will get no more emails" in answer.text
    assert _suppressed(session, acme) == {"bob@example.com": "unsubscribe"}
    assert _flags(session, acme) == {
        "ann@example.com": None, "bob@example.com": "unsubscribe", "cy@example.com": None,
    }  # fmt: skip
    assert _audit(session, acme) == [
        ("suppression.add", "api", {"email": "bob@example.com", "reason": "unsubscribe"})
    ]
    note = session.exec(select(Suppression.note)).one()
    assert note == unsubscribe.LINK_NOTE

    # The next build leaves the address out.
    rebuilt = _build(session, engine, acme)
    assert rebuilt["bob@example.com"].review_status == ReviewStatus.EXCLUDED
    assert [r["code"] for r in rebuilt["bob@example.com"].reasons] == ["suppressed"]
    assert rebuilt["ann@example.com"].review_status == ReviewStatus.READY

    # Opening the link again says so, without a button.
    again = await client.get(path)
    assert again.status_code == 200
    assert "<h1>You are unsubscribed</h1>" in again.text
    assert "<form" not in again.text


@pytest.mark.anyio
async def test_the_page_button_and_multipart_one_click_both_unsubscribe(session, acme, client):
    # The confirmation page's form posts form-encoded fields, as a browser does.
    answer = await client.post(
        _link(acme, "ann@example.com"),
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200
    # Some mail clients send the one-click body as multipart/form-data.
    multipart = await client.post(
        _link(acme, "cy@example.com"), files={"List-Unsubscribe": (None, "One-Click")}
    )
    assert multipart.request.headers["content-type"].startswith("multipart/form-data")
    assert multipart.status_code == 200, multipart.text
    assert _suppressed(session, acme) == {
        "ann@example.com": "unsubscribe",
        "cy@example.com": "unsubscribe",
    }


@pytest.mark.anyio
async def test_a_post_without_the_one_click_body_asks_instead(session, acme, client):
    path = _link(acme, "ann@example.com")
    for body in ({}, {"List-Unsubscribe": "Yes"}, {"other": "One-Click"}):
        answer = await client.post(path, data=body)
        assert answer.status_code == 400
        assert "Press the button to confirm." in answer.text
        assert '<button type="submit">Unsubscribe</button>' in answer.text
    too_big = await client.post(path, content=b"List-Unsubscribe=One-Click&" + b"x" * 20_000)
    assert too_big.status_code == 413
    assert _suppressed(session, acme) == {}


@pytest.mark.anyio
async def test_unsubscribing_twice_changes_nothing_more(session, acme, client):
    path = _link(acme, "ann@example.com")
    first = await client.post(path, data=ONE_CLICK)
    second = await client.post(path, data=ONE_CLICK)
    assert first.status_code == second.status_code == 200
    assert "<h1>You are unsubscribed</h1>" in second.text
    assert _suppressed(session, acme) == {"ann@example.com": "unsubscribe"}
    assert len(_audit(session, acme)) == 1  # the repeat wrote nothing


def test_an_address_suppressed_for_another_reason_becomes_unsubscribed(session, acme):
    suppressions.add_suppression(
        session=session, workspace_id=acme["workspace_id"], email="ann@example.com",
        reason="hard_bounce", note="Mailbox gone",
    )  # fmt: skip
    session.commit()
    token = unsubscribe.unsubscribe_token(acme["workspace_id"], "ann@example.com")
    before = unsubscribe.check_unsubscribe(session=session, token=token)
    assert not before.already_unsubscribed
    done = unsubscribe.unsubscribe(session=session, token=token, source=Source.API)
    session.commit()
    assert (done.email, done.workspace_name) == ("ann@example.com", "Acme <Mail> & Co")
    row = session.exec(select(Suppression)).one()
    assert (row.reason, row.note) == ("unsubscribe", "Mailbox gone")  # latest event wins
    assert [a for a, _, _ in _audit(session, acme)] == ["suppression.add", "suppression.update"]
    assert unsubscribe.check_unsubscribe(session=session, token=token).already_unsubscribed


# --- links that are not genuine --------------------------------------------------------------


def _other_key_token(monkeypatch, workspace_id: int, address: str) -> str:
    """A well-formed token made under a master key this app does not have."""
    saved = os.environ["MASTER_KEY"]
    monkeypatch.setenv("MASTER_KEY", Fernet.generate_key().decode())
    get_settings.cache_clear()
    token = unsubscribe.unsubscribe_token(workspace_id, address)
    monkeypatch.setenv("MASTER_KEY", saved)
    get_settings.cache_clear()
    return token


def _one_char_changed(token: str) -> list[str]:
    payload, signature = token.split(".")
    flip = {"A": "B"}
    return [
        # the signature changed
        f"{payload}.{signature[:-2]}{'B' if signature[-2] != 'B' else 'C'}{signature[-1]}",
        # the payload changed (another address or workspace under the same signature)
        f"{payload[:3]}{'x' if payload[3] != 'x' else 'y'}{payload[4:]}.{signature}",
        f"{flip.get(payload[0], 'A')}{payload[1:]}.{signature}",
    ]


@pytest.mark.anyio
async def test_a_link_that_is_not_genuine_changes_nothing(session, acme, client, monkeypatch):
    other = _workspace(session, "Other")
    token = unsubscribe.unsubscribe_token(acme["workspace_id"], "ann@example.com")
    payload, _ = token.split(".")
    _, other_signature = unsubscribe.unsubscribe_token(
        other["workspace_id"], "ann@example.com"
    ).split(".")
    bad = [
        *_one_char_changed(token),
        f"{payload}.{other_signature}",  # another workspace's signature on this address
        _other_key_token(monkeypatch, acme["workspace_id"], "ann@example.com"),
        "garbage",
        "a.b",
        "....",
        "%00",
        "x" * 2000,
    ]
    for value in bad:
        assert unsubscribe.verify_unsubscribe_token(value) is None, value
        with pytest.raises(InvalidInput) as caught:
            unsubscribe.unsubscribe(session=session, token=value, source=Source.API)
        assert str(caught.value) == unsubscribe.INVALID_LINK
        for method in ("get", "post"):
            kwargs = {"data": ONE_CLICK} if method == "post" else {}
            answer = await getattr(client, method)(f"/unsubscribe/{value}", **kwargs)
            assert answer.status_code == 400, (method, value)
            _assert_page_basics(answer)
            assert "<h1>This link is not valid</h1>" in answer.text
            assert "Nothing was changed." in answer.text
            assert "<form" not in answer.text
    session.rollback()
    assert session.exec(select(Suppression)).all() == []
    assert (
        session.exec(select(AuditEntry).where(AuditEntry.target_type == "suppression")).all() == []
    )


@pytest.mark.anyio
async def test_a_link_only_unsubscribes_in_its_own_workspace(session, acme, client):
    other = _workspace(session, "Other")
    answer = await client.post(_link(other, "ann@example.com"), data=ONE_CLICK)
    assert answer.status_code == 200
    assert "<strong>Other</strong>" in answer.text
    assert _suppressed(session, other) == {"ann@example.com": "unsubscribe"}
    assert _suppressed(session, acme) == {}
    assert _flags(session, acme)["ann@example.com"] is None


@pytest.mark.anyio
async def test_links_made_before_a_key_rotation_keep_working(session, acme, client, monkeypatch):
    token = unsubscribe.unsubscribe_token(acme["workspace_id"], "ann@example.com")
    monkeypatch.setenv("MASTER_KEY", f"{Fernet.generate_key().decode()},{os.environ['MASTER_KEY']}")
    get_settings.cache_clear()
    assert unsubscribe.unsubscribe_token(acme["workspace_id"], "ann@example.com") != token
    answer = await client.post(f"/unsubscribe/{token}", data=ONE_CLICK)
    assert answer.status_code == 200
    assert _suppressed(session, acme) == {"ann@example.com": "unsubscribe"}


@pytest.mark.anyio
async def test_a_genuine_link_of_a_deleted_workspace_is_not_valid(session, acme, client):
    token = unsubscribe.unsubscribe_token(acme["workspace_id"] + 1000, "ann@example.com")
    answer = await client.post(f"/unsubscribe/{token}", data=ONE_CLICK)
    assert answer.status_code == 400
    assert _suppressed(session, acme) == {}
