"""Sender accounts on SQLite and PostgreSQL, and connection tests against real SMTP
servers (aiosmtpd with AUTH, STARTTLS and TLS on loopback) and the mail lab."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import threading
import time

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel, select

import mailer_app.models  # noqa: F401  (every table in SQLModel.metadata)
from mailer_app.mail.smtp import SmtpEndpoint, probe_smtp
from mailer_app.models import (
    AuditEntry,
    Campaign,
    PlacementRun,
    Secret,
    SenderAccount,
    Source,
)
from mailer_app.services import InvalidInput, auth, demo, senders
from mailer_app.services.secrets import reveal_secret
from mailer_app.services.workspaces import create_workspace
from tests.conftest import free_port
from tests.lab_fixtures import mail_lab_fixture  # noqa: F401
from tests.smtp_fixtures import (  # noqa: F401
    SMTP_USER,
    smtp_auth_server_fixture,
    smtp_server_fixture,
    smtp_starttls_server_fixture,
    smtp_tls_server_fixture,
)


@pytest.fixture
def owner(session):
    user, workspace = auth.create_owner(
        session=session,
        email="owner@example.com",
        password="correct horse battery",
        display_name="Owner",
        workspace_name="Senders Inc",
        source=Source.UI,
    )
    session.commit()
    return user.id, workspace.id


@pytest.fixture
def other_workspace(session) -> int:
    workspace = create_workspace(session=session, name="Someone Else", source=Source.UI)
    session.commit()
    return workspace.id


GOOD = {
    "name": "Newsletter",
    "from_email": "news@example.com",
    "smtp_host": "smtp.example.com",
}


def add(session, workspace_id, user_id=None, **kw):
    sender = senders.create_sender(
        session=session, workspace_id=workspace_id, user_id=user_id, **(GOOD | kw)
    )
    session.commit()
    return sender


def update(session, workspace_id, sender, **kw):
    values = {
        key: getattr(sender, key)
        for key in (
            "name", "from_email", "from_name", "reply_to", "smtp_host", "smtp_port",
            "smtp_security", "smtp_username", "imap_host", "imap_port", "imap_security",
            "imap_username", "rate_per_second", "rate_per_minute", "rate_per_hour",
        )
    }  # fmt: skip
    updated = senders.update_sender(
        session=session, workspace_id=workspace_id, sender_id=sender.id, user_id=None,
        **(values | kw),
    )  # fmt: skip
    session.commit()
    return updated


def actions(session, workspace_id) -> list[str]:
    return list(
        session.exec(
            select(AuditEntry.action)
            .where(AuditEntry.workspace_id == workspace_id)
            .order_by(AuditEntry.id)
        ).all()
    )


def counts(session) -> tuple[int, int]:
    return (
        session.exec(select(sa.func.count()).select_from(SenderAccount)).one(),
        session.exec(select(sa.func.count()).select_from(Secret)).one(),
    )


# --- create / validate ----------------------------------------------------------------------


def test_create_normalizes_fills_defaults_and_keeps_only_refs(session, owner):
    user_id, ws = owner
    sender = add(
        session, ws, user_id,
        name="  Newsletter ", from_email="Anna.Smith@EXAMPLE.com", from_name=" Example News ",
        reply_to="Help@Example.com", smtp_host="SMTP.Example.com", smtp_port="",
        smtp_security="STARTTLS", smtp_username="news@example.com", password=" secret pw ",
        imap_host="imap.example.com", imap_password="imap-pw", rate_per_second="0.5",
        rate_per_minute="100", rate_per_hour=" 2000 ",
    )  # fmt: skip
    assert (sender.name, sender.from_name) == ("Newsletter", "Example News")
    # Domains are lowercased; the local part is kept (it may be case-sensitive).
    assert (sender.from_email, sender.reply_to) == ("Anna.Smith@example.com", "Help@example.com")
    assert (sender.smtp_host, sender.smtp_port, sender.smtp_security) == (
        "smtp.example.com", 587, "starttls",
    )  # fmt: skip
    # IMAP defaults: TLS, port 993, the SMTP user name.
    assert (sender.imap_host, sender.imap_port, sender.imap_security, sender.imap_username) == (
        "imap.example.com", 993, "tls", "news@example.com",
    )  # fmt: skip
    assert (sender.rate_per_second, sender.rate_per_minute, sender.rate_per_hour) == (
        0.5, 100, 2000,
    )  # fmt: skip
    assert sender.status == "active" and sender.created_by_id == user_id
    assert sender.credential_ref.startswith("sec_") and sender.imap_credential_ref.startswith(
        "sec_"
    )
    # Passwords are kept as typed (spaces can be part of them).
    assert reveal_secret(session=session, workspace_id=ws, ref=sender.credential_ref) == (
        " secret pw "
    )
    assert reveal_secret(session=session, workspace_id=ws, ref=sender.imap_credential_ref) == (
        "imap-pw"
    )
    assert actions(session, ws)[-3:] == ["secret.create", "secret.create", "sender.create"]

    # No user name: no sign-in, nothing stored; lab (.lab) addresses are accepted;
    # the port follows the encryption (TLS 465, none 25).
    lab = add(session, ws, name="Lab", from_email="newsletter@sender.lab", smtp_security="plain")
    assert (lab.smtp_port, lab.smtp_username, lab.credential_ref) == (25, None, None)
    assert lab.imap_host is None and lab.imap_credential_ref is None
    tls = add(session, ws, name="TLS", smtp_security="ssl", smtp_username="u", password="p")
    assert (tls.smtp_security, tls.smtp_port) == ("tls", 465)


BAD_VALUES = [
    ({"name": "  "}, "name", "Give the sender account a name"),
    ({"from_email": ""}, "from_email", "Enter the from address."),
    ({"from_email": "not-an-address"}, "from_email", "Enter a valid from address"),
    ({"reply_to": "nope@"}, "reply_to", "Enter a valid reply-to address"),
    ({"smtp_host": ""}, "smtp_host", "Enter the mail server's name"),
    ({"smtp_host": "smtp example.com"}, "smtp_host", "Enter the mail server's name"),
    ({"smtp_port": "0"}, "smtp_port", "between 1 and 65535"),
    ({"smtp_port": 65536}, "smtp_port", "between 1 and 65535"),
    ({"smtp_port": "five"}, "smtp_port", "between 1 and 65535"),
    ({"smtp_security": "ssl3"}, "smtp_security", "TLS, STARTTLS or none"),
    ({"smtp_username": "me"}, "password", "Enter the password for this user name."),
    ({"password": "pw"}, "smtp_username", "user name that goes with this password"),
    ({"smtp_username": "me", "password": "   "}, "password", "Enter the password (or app"),
    ({"imap_host": "imap.example.com"}, "imap_password", "Enter the IMAP password"),
    ({"imap_port": "993", "imap_password": "x"}, "imap_host", "IMAP server's name"),
    ({"imap_host": "i.example.com", "imap_password": "x", "imap_port": "99999"},
     "imap_port", "between 1 and 65535"),
    ({"rate_per_second": "0"}, "rate_per_second", "above 0"),
    ({"rate_per_second": "-2"}, "rate_per_second", "above 0"),
    ({"rate_per_second": "nan"}, "rate_per_second", "above 0"),
    ({"rate_per_second": "inf"}, "rate_per_second", "above 0"),
    ({"rate_per_minute": "1.5"}, "rate_per_minute", "whole number"),
    ({"rate_per_minute": "lots"}, "rate_per_minute", "above 0"),
    ({"rate_per_hour": "1e12"}, "rate_per_hour", "at most 100,000,000"),
    ({"name": "x" * 201}, "name", "at most 200 characters"),
]  # fmt: skip

# Values that end up in message headers (or SMTP commands) with a line break in them.
INJECTIONS = [
    ("from_name", "Example News\r\nBcc: everyone@example.com"),
    ("from_name", "Example\nNews"),
    ("from_name", "Example\u2028News"),
    ("reply_to", "help@example.com\r\nBcc: everyone@example.com"),
    ("from_email", "news@example.com\nBcc: everyone@example.com"),
    ("name", "Two\rlines"),
    ("smtp_username", "user\r\nMAIL FROM:<x@example.com>"),
    ("password", "pw\r\nQUIT"),
]


def test_bad_values_are_refused_next_to_their_field_and_nothing_is_written(session, owner):
    # One database per case would cost a migration each: the cases share one.
    _, ws = owner
    for kwargs, field, message in BAD_VALUES:
        with pytest.raises(InvalidInput) as caught:
            add(session, ws, **kwargs)
        assert (caught.value.field, message in str(caught.value)) == (field, True), (
            kwargs, str(caught.value),
        )  # fmt: skip
        session.rollback()
    assert counts(session) == (0, 0)


def test_header_injection_is_rejected_at_input(session, owner):
    _, ws = owner
    sender = add(session, ws, name="Kept", from_name="Example News")
    for field, value in INJECTIONS:
        # A password needs a user name and the other way round.
        values = ({"smtp_username": "user"} if field == "password" else {"password": "pw"}) | {
            field: value
        }
        for action in ("create", "update"):
            with pytest.raises(InvalidInput, match="cannot contain line breaks") as caught:
                if action == "create":
                    add(session, ws, **values)
                else:
                    update(session, ws, sender, **values)
            assert caught.value.field == field, (action, field, value)
            session.rollback()
    assert counts(session) == (1, 0)
    stored = senders.get_sender(session=session, workspace_id=ws, sender_id=sender.id)
    assert (stored.name, stored.from_name, stored.reply_to) == ("Kept", "Example News", None)


def test_other_control_characters_are_refused_in_header_values(session, owner):
    _, ws = owner
    with pytest.raises(InvalidInput, match="control characters") as caught:
        add(session, ws, from_name="Bell\x07Co")
    assert caught.value.field == "from_name"


def test_names_are_unique_per_workspace_in_any_case(session, owner, other_workspace):
    _, ws = owner
    first = add(session, ws, name="Newsletter")
    with pytest.raises(InvalidInput) as caught:
        add(session, ws, name="NEWSLETTER ")
    assert (caught.value.field, str(caught.value)) == (
        "name", "There is already a sender account named Newsletter.",
    )  # fmt: skip
    session.rollback()
    add(session, other_workspace, name="Newsletter")  # another workspace may
    second = add(session, ws, name="Billing")
    with pytest.raises(InvalidInput, match="already a sender account named Newsletter"):
        update(session, ws, second, name="newsletter")
    session.rollback()
    assert update(session, ws, first, name="Newsletter", from_name="Renamed").from_name == (
        "Renamed"
    )


# --- edit / delete ----------------------------------------------------------------------------


def test_edit_keeps_passwords_when_empty_and_replaces_them_when_given(session, owner):
    _, ws = owner
    sender = add(
        session, ws, smtp_username="u", password="first", imap_host="imap.example.com",
        imap_password="imap-first",
    )  # fmt: skip
    ref, imap_ref = sender.credential_ref, sender.imap_credential_ref
    sender.status, sender.status_reason = "auth_failed", "535 refused"
    session.commit()

    same = update(session, ws, sender, password="", imap_password=None, from_name="New name")
    assert same.status == "auth_failed"  # no server setting changed: no second chance yet
    assert reveal_secret(session=session, workspace_id=ws, ref=ref) == "first"
    assert reveal_secret(session=session, workspace_id=ws, ref=imap_ref) == "imap-first"

    changed = update(session, ws, sender, password="second", imap_password="imap-second")
    assert changed.credential_ref == ref and changed.imap_credential_ref == imap_ref
    assert reveal_secret(session=session, workspace_id=ws, ref=ref) == "second"
    assert reveal_secret(session=session, workspace_id=ws, ref=imap_ref) == "imap-second"
    assert changed.status == "active" and changed.status_reason is None
    entry = session.exec(
        select(AuditEntry)
        .where(AuditEntry.action == "sender.update")
        .order_by(AuditEntry.id.desc())
    ).first()
    assert entry.details["changed"] == ["password", "imap_password"]

    # No user name (or no IMAP server): sign-in (or IMAP) is off and its password goes.
    off = update(session, ws, sender, smtp_username="", imap_host="", imap_port=None,
                 imap_username="", imap_security="")  # fmt: skip
    assert (off.credential_ref, off.imap_credential_ref, off.imap_host, off.imap_port) == (
        None, None, None, None,
    )  # fmt: skip
    assert counts(session) == (1, 0)
    with pytest.raises(InvalidInput) as caught:  # sign-in on again needs a password
        update(session, ws, sender, smtp_username="u", password="")
    assert caught.value.field == "password"


def test_delete_removes_the_sender_and_its_passwords(session, owner):
    user_id, ws = owner
    sender = add(session, ws, smtp_username="u", password="pw", imap_host="imap.example.com",
                 imap_password="imap-pw")  # fmt: skip
    senders.delete_sender(session=session, workspace_id=ws, sender_id=sender.id, user_id=user_id)
    session.commit()
    assert counts(session) == (0, 0)
    assert actions(session, ws)[-3:] == ["secret.delete", "secret.delete", "sender.delete"]
    with pytest.raises(senders.SenderNotFound):
        senders.get_sender(session=session, workspace_id=ws, sender_id=sender.id)


def test_delete_is_refused_while_a_campaign_or_a_placement_run_uses_it(session, owner):
    _, ws = owner
    used_by_campaign = add(session, ws, name="Campaign sender")
    session.add(
        Campaign(workspace_id=ws, name="Spring sale", sender_account_id=used_by_campaign.id)
    )
    used_by_run = add(session, ws, name="Pre-flight sender")
    session.add(
        PlacementRun(workspace_id=ws, sender_account_id=used_by_run.id, idempotency_key="k1")
    )
    session.commit()

    with pytest.raises(InvalidInput) as caught:
        senders.delete_sender(
            session=session, workspace_id=ws, sender_id=used_by_campaign.id, user_id=None
        )
    assert str(caught.value) == (
        "The campaign Spring sale uses this sender account. Choose another sender there first."
    )
    session.rollback()
    with pytest.raises(InvalidInput, match="sent 1 placement test; their results refer to it"):
        senders.delete_sender(
            session=session, workspace_id=ws, sender_id=used_by_run.id, user_id=None
        )
    session.rollback()
    assert counts(session)[0] == 2


def test_every_query_is_scoped_to_the_workspace(session, owner, other_workspace):
    _, ws = owner
    theirs = add(session, other_workspace, name="Theirs", smtp_username="u", password="pw")
    mine = add(session, ws, name="Mine")
    assert [r.name for r in senders.list_sender_rows(session=session, workspace_id=ws)] == ["Mine"]
    assert [c.name for c in senders.list_senders(session=session, workspace_id=ws)] == ["Mine"]
    for call in (
        lambda: senders.get_sender(session=session, workspace_id=ws, sender_id=theirs.id),
        lambda: update(session, ws, theirs, name="Stolen"),
        lambda: senders.delete_sender(
            session=session, workspace_id=ws, sender_id=theirs.id, user_id=None
        ),
        lambda: senders.test_sender_connection(
            session=session, workspace_id=ws, sender_id=theirs.id
        ),
        lambda: senders.edited_sender_endpoints(
            session=session, workspace_id=ws, sender_id=theirs.id, smtp_host="x.example.com",
            smtp_username="u",
        ),
    ):  # fmt: skip
        with pytest.raises(senders.SenderNotFound, match="does not exist"):
            call()
        session.rollback()
    assert senders.get_sender(session=session, workspace_id=other_workspace, sender_id=theirs.id)
    assert mine.workspace_id == ws


def test_passwords_are_only_in_the_secret_table_encrypted(session, owner, smtp_server):
    user_id, ws = owner
    canaries = [f"canary-{secrets.token_hex(12)}" for _ in range(5)]
    sender = add(
        session, ws, user_id, smtp_host="127.0.0.1", smtp_port=smtp_server.port,
        smtp_security="plain", smtp_username=SMTP_USER, password=canaries[0],
        imap_host="127.0.0.1", imap_port=free_port(), imap_security="plain",
        imap_password=canaries[1],
    )  # fmt: skip
    update(session, ws, sender, password=canaries[2], imap_password=canaries[3])
    # A refused test stores the server's answer as the reason: never the password.
    senders.test_sender_connection(session=session, workspace_id=ws, sender_id=sender.id)
    senders.test_new_sender_connection(
        smtp_host="127.0.0.1", smtp_port=smtp_server.port, smtp_security="plain",
        smtp_username=SMTP_USER, password=canaries[4],
    )  # fmt: skip
    session.commit()
    assert session.exec(select(SenderAccount)).one().status == "auth_failed"
    assert len(session.exec(select(Secret)).all()) == 2

    for table in SQLModel.metadata.sorted_tables:
        for row in session.execute(sa.select(table)).all():
            for column, cell in zip(table.columns, row, strict=True):
                text = json.dumps(cell, default=str) if isinstance(cell, dict | list) else str(cell)
                for canary in canaries:
                    assert canary not in text, f"password in {table.name}.{column.name}"
    row = senders.list_sender_rows(session=session, workspace_id=ws)[0]
    shown = repr(row) + json.dumps(row.__dict__, default=str)
    assert row.has_password and row.has_imap_password
    assert sender.credential_ref not in shown and canaries[2] not in shown


# --- connection tests against real servers --------------------------------------------------------


def endpoint(server, **kw) -> SmtpEndpoint:
    values = {"host": "127.0.0.1", "port": server.port, "security": "plain",
              "username": server.username, "password": server.password, "timeout": 5.0}  # fmt: skip
    return SmtpEndpoint(**(values | kw))


def test_probe_with_the_right_password_signs_in_and_sends_nothing(smtp_server):
    probe = probe_smtp(endpoint(smtp_server))
    assert probe.ok and probe.error_kind is None
    assert probe.message == (
        f"Connected to 127.0.0.1:{smtp_server.port}, no encryption, signed in as {SMTP_USER}. "
        "Nothing was sent."
    )
    assert smtp_server.recorder.successful_logins == [SMTP_USER]
    assert smtp_server.recorder.mail_from == [] and smtp_server.recorder.messages == []


def test_probe_with_a_wrong_password_says_the_server_refused_it(smtp_server):
    probe = probe_smtp(endpoint(smtp_server, password="not-the-password"))
    assert not probe.ok and probe.error_kind == "auth"
    assert probe.message.startswith(f"The server refused the password for {SMTP_USER} (535")
    assert "not-the-password" not in probe.message
    assert smtp_server.recorder.successful_logins == []


def test_probe_without_a_user_name_only_connects(smtp_server):
    probe = probe_smtp(endpoint(smtp_server, username=None, password=None))
    assert probe.ok
    assert "No user name is set, so no sign-in was tried" in probe.message
    assert smtp_server.recorder.login_attempts == []


def test_nothing_listening_is_reported_quickly():
    started = time.monotonic()
    probe = probe_smtp(
        SmtpEndpoint("127.0.0.1", free_port(), "plain", "u", "pw-unused", timeout=10)
    )
    assert time.monotonic() - started < 2.0
    assert not probe.ok and probe.error_kind == "unavailable"
    assert probe.message.startswith("Could not reach 127.0.0.1:")
    assert "nothing accepts mail connections there" in probe.message


def test_a_server_that_never_greets_times_out_with_a_hint():
    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts, never speaks
        port = listener.getsockname()[1]
        started = time.monotonic()
        probe = probe_smtp(SmtpEndpoint("127.0.0.1", port, "plain", timeout=1.0))
        elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 5.0
    assert not probe.ok and probe.error_kind == "unavailable"
    assert "did not greet within 1 s" in probe.message and "Port 465 needs TLS" in probe.message


def test_a_self_signed_starttls_certificate_is_refused_before_signing_in(smtp_starttls_server):
    server = smtp_starttls_server
    server.reset()
    probe = probe_smtp(endpoint(server, security="starttls"))
    assert not probe.ok and probe.error_kind == "tls"
    assert probe.message.startswith(f"The TLS certificate of 127.0.0.1:{server.port} could not")
    assert "self-signed certificate" in probe.message
    assert server.recorder.login_attempts == []  # the password never left


def test_a_trusted_starttls_certificate_signs_in(smtp_starttls_server, monkeypatch):
    server = smtp_starttls_server
    server.reset()
    # Operators with a private CA set SSL_CERT_FILE; here it trusts the test's cert.
    monkeypatch.setenv("SSL_CERT_FILE", str(server.cert_file))
    probe = probe_smtp(endpoint(server, security="starttls"))
    assert probe.ok, probe.message
    assert probe.message.startswith(
        f"Connected to 127.0.0.1:{server.port}, TLS on (STARTTLS), signed in as {SMTP_USER}."
    )
    assert server.recorder.successful_logins == [SMTP_USER]


def test_sign_in_without_encryption_on_a_starttls_server_says_to_encrypt(smtp_starttls_server):
    probe = probe_smtp(endpoint(smtp_starttls_server, security="plain"))
    assert not probe.ok and probe.error_kind == "settings"
    assert "does not accept sign-in on an unencrypted connection" in probe.message
    assert "Choose STARTTLS" in probe.message


def test_implicit_tls_certificates_are_verified_too(smtp_tls_server, monkeypatch):
    probe = probe_smtp(endpoint(smtp_tls_server, security="tls"))
    assert not probe.ok and probe.error_kind == "tls"
    assert "certificate" in probe.message and "could not be verified" in probe.message
    monkeypatch.setenv("SSL_CERT_FILE", str(smtp_tls_server.cert_file))
    trusted = probe_smtp(endpoint(smtp_tls_server, security="tls"))
    assert trusted.ok and ", TLS on, signed in as" in trusted.message


def test_wrong_encryption_choices_are_explained(smtp_server):
    no_starttls = probe_smtp(endpoint(smtp_server, security="starttls"))
    assert not no_starttls.ok and no_starttls.error_kind == "tls"
    assert no_starttls.message.startswith(
        f"The server at 127.0.0.1:{smtp_server.port} does not offer STARTTLS."
    )
    tls_on_plain = probe_smtp(endpoint(smtp_server, security="tls"))
    assert not tls_on_plain.ok and tls_on_plain.error_kind == "tls"
    assert "TLS is usually port 465, STARTTLS port 587" in tls_on_plain.message
    assert smtp_server.recorder.login_attempts == []


def test_probe_works_inside_a_running_event_loop(smtp_server):
    async def from_a_handler():  # Reflex event handlers run inside an event loop
        return probe_smtp(endpoint(smtp_server))

    assert asyncio.run(from_a_handler()).ok


# --- the service's test buttons --------------------------------------------------------------


def test_saved_sender_test_marks_and_clears_auth_failed(session, owner, smtp_server):
    _, ws = owner
    sender = add(session, ws, smtp_host="127.0.0.1", smtp_port=smtp_server.port,
                 smtp_security="plain", smtp_username=SMTP_USER, password="wrong")  # fmt: skip
    result = senders.test_sender_connection(session=session, workspace_id=ws, sender_id=sender.id)
    session.commit()
    assert not result.ok and result.error_kind == "auth"
    row = senders.list_sender_rows(session=session, workspace_id=ws)[0]
    assert row.status == "auth_failed"
    assert row.status_reason.startswith(f"The server refused the password for {SMTP_USER}")

    update(session, ws, sender, password=smtp_server.password)
    assert senders.get_sender(session=session, workspace_id=ws, sender_id=sender.id).status == (
        "active"
    )
    sender.status = "auth_failed"  # e.g. set by the placement engine in the meantime
    session.commit()
    result = senders.test_sender_connection(session=session, workspace_id=ws, sender_id=sender.id)
    session.commit()
    assert result.ok and result.message.endswith(f"signed in as {SMTP_USER}. Nothing was sent.")
    assert senders.get_sender(session=session, workspace_id=ws, sender_id=sender.id).status == (
        "active"
    )
    assert actions(session, ws).count("sender.test_connection") == 2


def test_unreachable_server_changes_no_status(session, owner):
    _, ws = owner
    sender = add(session, ws, smtp_host="127.0.0.1", smtp_port=free_port(), smtp_security="plain")
    result = senders.test_sender_connection(session=session, workspace_id=ws, sender_id=sender.id)
    session.commit()
    assert not result.ok and result.error_kind == "unavailable"
    assert "Could not reach" in result.message
    assert senders.get_sender(session=session, workspace_id=ws, sender_id=sender.id).status == (
        "active"
    )


def test_unsaved_edits_are_tested_with_the_saved_password(session, owner, smtp_server):
    _, ws = owner
    sender = add(session, ws, smtp_host="127.0.0.1", smtp_port=free_port(), smtp_security="plain",
                 smtp_username=SMTP_USER, password=smtp_server.password)  # fmt: skip

    def probe(**kw):
        endpoints = senders.edited_sender_endpoints(
            session=session, workspace_id=ws, sender_id=sender.id, smtp_host="127.0.0.1",
            smtp_port=str(smtp_server.port), smtp_security="plain", smtp_username=SMTP_USER, **kw,
        )  # fmt: skip
        return senders.probe_sender(endpoints)

    assert probe(password="").ok  # the saved password
    typed = probe(password="typed-but-wrong")
    assert typed.error_kind == "auth" and "refused the password" in typed.message
    stored = senders.get_sender(session=session, workspace_id=ws, sender_id=sender.id)
    assert stored.smtp_port != smtp_server.port and stored.status == "active"  # nothing saved


def test_new_settings_are_checked_before_connecting(smtp_server):
    with pytest.raises(InvalidInput) as caught:
        senders.test_new_sender_connection(
            smtp_host="127.0.0.1", smtp_port=smtp_server.port, smtp_username=SMTP_USER
        )
    assert caught.value.field == "password"
    with pytest.raises(InvalidInput) as caught:
        senders.test_new_sender_connection(smtp_host="127.0.0.1", smtp_port="0")
    assert caught.value.field == "smtp_port"
    assert smtp_server.recorder.login_attempts == []


def test_imap_is_tested_too_when_filled_in(smtp_server, mail_lab):
    box = mail_lab.add_account("sender.lab")
    common = {"smtp_host": "127.0.0.1", "smtp_port": smtp_server.port, "smtp_security": "plain",
              "smtp_username": SMTP_USER, "password": smtp_server.password,
              "imap_host": "127.0.0.1", "imap_port": mail_lab.imap_port, "imap_security": "plain",
              "imap_username": box.email}  # fmt: skip
    good = senders.test_new_sender_connection(**common, imap_password=box.password)
    assert good.ok, good.message
    assert f"Mailbox (IMAP) at 127.0.0.1:{mail_lab.imap_port}: signed in as {box.email}." in (
        good.message
    )
    bad = senders.test_new_sender_connection(**common, imap_password="not-it")
    assert not bad.ok and bad.smtp.ok and bad.error_kind == "imap_auth"
    assert "Mailbox (IMAP): The server refused the password" in bad.message
    assert "not-it" not in bad.message


def test_the_lab_sender_shows_and_its_test_passes(session, owner, mail_lab, monkeypatch):
    from mailer_app.settings import get_settings

    _, ws = owner
    monkeypatch.setenv("LAB_SMTP_PORT", str(mail_lab.smtp_port))
    monkeypatch.setenv("LAB_IMAP_PORT", str(mail_lab.imap_port))
    get_settings.cache_clear()
    demo.ensure_demo_data(session=session, settings=get_settings(), workspace_id=ws)
    session.commit()
    (row,) = senders.list_sender_rows(session=session, workspace_id=ws)
    assert (row.name, row.from_email, row.status) == (demo.DEMO_SENDER, demo.DEMO_FROM, "active")
    result = senders.test_sender_connection(session=session, workspace_id=ws, sender_id=row.id)
    assert result.ok, result.message
    assert result.message.startswith(f"Connected to 127.0.0.1:{mail_lab.smtp_port}")
    # The form offers the lab as a provider in development.
    lab = next(p for p in senders.provider_presets(get_settings()) if p.key == "lab")
    assert (lab.smtp_host, lab.smtp_port, lab.smtp_security) == (
        "127.0.0.1", mail_lab.smtp_port, "plain",
    )  # fmt: skip


def test_probe_total_time_is_bounded_when_a_server_stalls_mid_session():
    # A server that greets and then never answers EHLO: the read timeout ends the test.
    done = threading.Event()

    def serve(listener):
        listener.settimeout(5)
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.sendall(b"220 stall.example ESMTP\r\n")
            done.wait(10)

    with socket.create_server(("127.0.0.1", 0)) as listener:
        thread = threading.Thread(target=serve, args=(listener,), daemon=True)
        thread.start()
        started = time.monotonic()
        probe = probe_smtp(SmtpEndpoint("127.0.0.1", listener.getsockname()[1], "plain",
                                        timeout=1.0))  # fmt: skip
        elapsed = time.monotonic() - started
        done.set()
        thread.join(timeout=5)
    assert elapsed < 3.0
    assert not probe.ok and probe.error_kind == "unavailable"
    assert "did not answer within 1 s while greeting the server (EHLO)" in probe.message


# --- the page's handlers check the role, whatever the browser shows ---------------------------


def _page_states(token: str):
    import reflex as rx

    from mailer_app.state.auth import AuthState
    from mailer_app.state.senders import SenderFormState, SendersState

    root = rx.State(_reflex_internal_init=True)

    def sub(cls):
        return root.get_substate(cls.get_full_name().split(".")[1:])

    sub(AuthState).session_token = token
    return sub(SendersState), sub(SenderFormState)


def test_page_handlers_refuse_changes_from_a_viewer(session, owner):
    from mailer_app.models import Role, User

    user_id, ws = owner
    sender = add(session, ws, name="Kept", from_name="Example News")
    viewer = auth.create_user(
        session=session, workspace_id=ws, email="viewer@example.com",
        password="correct horse battery", role=Role.VIEWER, created_by_id=user_id,
    )  # fmt: skip
    viewer_token = auth.start_session(session=session, user=viewer)
    owner_token = auth.start_session(
        session=session, user=session.get(User, user_id), workspace_id=ws
    )
    session.commit()

    page, form = _page_states(viewer_token)
    asyncio.run(page.load())
    assert not page.can_edit
    assert [(r["name"], r["from"]) for r in page.rows] == [
        ("Kept", "Example News <news@example.com>")
    ]
    asyncio.run(form.open_edit(str(sender.id)))
    refused = "Your role does not allow this. Ask an owner or admin."
    assert not form.is_open and page.notice == refused
    page.ask_delete(str(sender.id), "Kept")  # a crafted event: the handler still says no
    asyncio.run(page.confirm_delete())
    assert page.delete_error == refused
    session.expire_all()
    assert senders.get_sender(session=session, workspace_id=ws, sender_id=sender.id)

    page, form = _page_states(owner_token)
    asyncio.run(page.load())
    assert page.can_edit
    asyncio.run(form.open_edit(str(sender.id)))
    assert form.is_open and form.values["name"] == "Kept" and form.values["smtp_port"] == "587"
    assert not form.has_password and "password" not in form.values
    page.ask_delete(str(sender.id), "Kept")
    asyncio.run(page.confirm_delete())
    assert page.delete_error == "" and page.rows == []
    assert page.notice == "Deleted the sender account Kept."
