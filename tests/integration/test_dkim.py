"""DKIM keys of sender accounts on SQLite and PostgreSQL: stored encrypted (the PEM is
in no table and no log line), read back as a signer, scoped to the workspace,
refused in plain words when they cannot work, and a signed message sent through a
real SMTP server arrives signed and verifies with dkimpy."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import dkim
import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel, select

import mailer_app.models  # noqa: F401  (every table in SQLModel.metadata)
from mailer_app.mail import mime
from mailer_app.mail.dkim import DkimSigner, generate_key, load_private_key
from mailer_app.mail.smtp import OutgoingMessage, SmtpEndpoint, submit_messages
from mailer_app.models import AuditEntry, Secret, Source
from mailer_app.services import InvalidInput, ServiceError, auth, senders
from mailer_app.services.workspaces import create_workspace
from tests.integration.test_secrets_canary import debug_log_file  # noqa: F401  (fixture)
from tests.smtp_fixtures import smtp_auth_server_fixture, smtp_server_fixture  # noqa: F401

log = logging.getLogger("mailer_app.test.dkim")


@pytest.fixture(scope="module")
def rsa_pem() -> str:
    return generate_key("rsa", 2048)


@pytest.fixture
def owner(session):
    user, workspace = auth.create_owner(
        session=session,
        email="owner@example.com",
        password="correct horse battery",
        display_name="Owner",
        workspace_name="Dkim Inc",
        source=Source.UI,
    )
    session.commit()
    return user.id, workspace.id


def add_sender(session, workspace_id, user_id=None, **kw):
    values = {"name": "Newsletter", "from_email": "news@mail.example.com",
              "smtp_host": "smtp.example.com"} | kw  # fmt: skip
    sender = senders.create_sender(
        session=session, workspace_id=workspace_id, user_id=user_id, **values
    )
    session.commit()
    return sender


def set_key(session, workspace_id, sender_id, pem, domain="example.com", selector="mail"):
    sender = senders.set_dkim_key(
        session=session, workspace_id=workspace_id, sender_id=sender_id, domain=domain,
        selector=selector, private_key_pem=pem, user_id=None, source=Source.UI,
    )  # fmt: skip
    session.commit()
    return sender


def message(to: str = "zoe@example.org", text: str = "Hello Zoë") -> bytes:
    skeleton = mime.compile_skeleton(
        from_name="Example News", from_address="news@mail.example.com",
        message_id_domain="mail.example.com",
    )  # fmt: skip
    return skeleton.assemble(
        to_name="Zoë", to_address=to, subject="Spring news", html="<p>Hello Zoë</p>",
        text=text, message_id=mime.new_message_id("mail.example.com"),
        date=datetime.now(UTC), unsubscribe_url="https://mail.example.com/u/abc",
    )  # fmt: skip


def dnsfunc_for(record):
    def lookup(name: bytes, timeout: int = 5):
        return record.value.encode() if name.rstrip(b".") == record.name.encode() else None

    return lookup


def pem_fragments(pem: str) -> list[str]:
    """The whole key and each line of its base64: none may be found anywhere."""
    return [pem.strip(), *(line for line in pem.splitlines() if "-----" not in line)]


def cells(session):
    """(table.column, text) of every cell of every table."""
    for table in SQLModel.metadata.sorted_tables:
        for row in session.execute(sa.select(table)).all():
            for column, cell in zip(table.columns, row, strict=True):
                text = json.dumps(cell, default=str) if isinstance(cell, dict | list) else str(cell)
                yield f"{table.name}.{column.name}", text


# --- stored encrypted, read back ------------------------------------------------------------


def test_key_is_stored_encrypted_and_found_in_no_table_or_log(
    session,
    owner,
    rsa_pem,
    debug_log_file,  # noqa: F811
):
    user_id, ws = owner
    sender = add_sender(session, ws, user_id)
    # The key as people paste it: PKCS#1 ("BEGIN RSA PRIVATE KEY"), Windows line ends.
    from cryptography.hazmat.primitives import serialization

    pasted = (
        serialization.load_pem_private_key(rsa_pem.encode(), password=None)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        .decode()
        .replace("\n", "\r\n")
    )
    sender = senders.set_dkim_key(
        session=session, workspace_id=ws, sender_id=sender.id, domain="Example.com",
        selector="Mail", private_key_pem=pasted, user_id=user_id, source=Source.UI,
    )  # fmt: skip
    session.commit()
    assert (sender.dkim_domain, sender.dkim_selector) == ("example.com", "mail")
    assert sender.dkim_key_ref.startswith("sec_")
    secret = session.exec(select(Secret).where(Secret.ref == sender.dkim_key_ref)).one()
    assert (secret.kind, secret.workspace_id) == ("dkim_key", ws)

    signer = senders.dkim_signer_for(session=session, workspace_id=ws, sender_id=sender.id)
    assert signer.key.pem == load_private_key(rsa_pem).pem  # the same key, read back
    log.info("signing with %r", signer)  # what a worker might log

    fragments = pem_fragments(pasted.replace("\r\n", "\n")) + pem_fragments(signer.key.pem)
    seen = 0
    for where, text in cells(session):
        seen += 1
        for fragment in fragments:
            assert fragment not in text, f"private key text in {where}"
    assert seen > 20
    database = session.get_bind().url.database
    if session.get_bind().dialect.name == "sqlite":
        raw = Path(database).read_bytes()
        wal = Path(f"{database}-wal")
        raw += wal.read_bytes() if wal.exists() else b""
        for fragment in fragments:
            assert fragment.encode() not in raw, "private key text in the SQLite file"

    for handler in logging.getLogger().handlers:
        handler.flush()
    logged = debug_log_file.read_text()
    assert "INSERT INTO" in logged and "DkimSigner(domain='example.com'" in logged
    for fragment in fragments:
        assert fragment not in logged, "private key text in the log"

    details = session.exec(
        select(AuditEntry.details).where(AuditEntry.action == "sender.dkim_set")
    ).one()
    assert details["domain"] == "example.com" and details["algorithm"] == "rsa"
    assert details["bits"] == 2048


def test_signer_signs_what_the_dns_record_verifies(session, owner, rsa_pem):
    _, ws = owner
    sender = add_sender(session, ws)
    assert senders.dkim_signer_for(session=session, workspace_id=ws, sender_id=sender.id) is None
    assert senders.dkim_dns_record(session=session, workspace_id=ws, sender_id=sender.id) is None

    set_key(session, ws, sender.id, rsa_pem, domain="mail.example.com", selector="s2025")
    record = senders.dkim_dns_record(session=session, workspace_id=ws, sender_id=sender.id)
    assert record.name == "s2025._domainkey.mail.example.com" and record.type == "TXT"
    assert record.value.startswith("v=DKIM1; k=rsa; p=")
    assert "".join(record.strings) == record.value and len(record.strings) == 2
    assert record.advice == ()
    assert "PRIVATE" not in repr(record)

    signer = senders.dkim_signer_for(session=session, workspace_id=ws, sender_id=sender.id)
    signed = signer.sign(message())
    assert dkim.verify(signed, dnsfunc=dnsfunc_for(record))
    assert not dkim.verify(
        signed.replace(b"Spring news", b"Winter news"), dnsfunc=dnsfunc_for(record)
    )


def test_ed25519_key_and_1024_bit_key_come_with_advice(session, owner):
    _, ws = owner
    sender = add_sender(session, ws)
    set_key(session, ws, sender.id, generate_key("ed25519"))
    record = senders.dkim_dns_record(session=session, workspace_id=ws, sender_id=sender.id)
    assert record.value.startswith("v=DKIM1; k=ed25519; p=") and "Gmail" in record.advice[0]
    signer = senders.dkim_signer_for(session=session, workspace_id=ws, sender_id=sender.id)
    assert dkim.verify(signer.sign(message()), dnsfunc=dnsfunc_for(record))

    set_key(session, ws, sender.id, generate_key("rsa", 1024))
    record = senders.dkim_dns_record(session=session, workspace_id=ws, sender_id=sender.id)
    assert record.bits == 1024 and "2048 bits is recommended" in record.advice[0]


def test_new_key_keeps_its_ref_empty_key_keeps_the_key_and_clear_deletes_it(
    session, owner, rsa_pem
):
    user_id, ws = owner
    sender = add_sender(session, ws)
    set_key(session, ws, sender.id, generate_key("rsa", 1024))
    ref = sender.dkim_key_ref
    set_key(session, ws, sender.id, rsa_pem)
    assert sender.dkim_key_ref == ref  # replaced behind the same ref
    assert session.exec(select(sa.func.count()).select_from(Secret)).one() == 1

    # Only the selector changes: an empty key keeps the saved one.
    set_key(session, ws, sender.id, "", selector="s2")
    signer = senders.dkim_signer_for(session=session, workspace_id=ws, sender_id=sender.id)
    assert signer.selector == "s2" and signer.key.pem == load_private_key(rsa_pem).pem

    senders.clear_dkim_key(
        session=session, workspace_id=ws, sender_id=sender.id, user_id=user_id, source=Source.UI
    )
    session.commit()
    assert (sender.dkim_domain, sender.dkim_selector, sender.dkim_key_ref) == (None, None, None)
    assert session.exec(select(sa.func.count()).select_from(Secret)).one() == 0
    assert senders.dkim_signer_for(session=session, workspace_id=ws, sender_id=sender.id) is None
    actions = session.exec(
        select(AuditEntry.action)
        .where(AuditEntry.action.like("sender.dkim%"))
        .order_by(AuditEntry.id)
    ).all()
    assert actions == ["sender.dkim_set"] * 3 + ["sender.dkim_clear"]
    # Without a saved key, an empty key is refused.
    with pytest.raises(InvalidInput, match="Paste the private key") as refused:
        set_key(session, ws, sender.id, "")
    assert refused.value.field == "dkim_private_key"


def test_deleting_a_sender_deletes_its_dkim_key(session, owner, rsa_pem):
    user_id, ws = owner
    sender = add_sender(session, ws)
    set_key(session, ws, sender.id, rsa_pem)
    senders.delete_sender(
        session=session, workspace_id=ws, sender_id=sender.id, user_id=user_id, source=Source.UI
    )
    session.commit()
    assert session.exec(select(sa.func.count()).select_from(Secret)).one() == 0


def test_a_missing_stored_key_is_an_error_not_a_silent_unsigned_send(session, owner, rsa_pem):
    _, ws = owner
    sender = add_sender(session, ws, name="Main")
    set_key(session, ws, sender.id, rsa_pem)
    session.exec(sa.delete(Secret))
    session.commit()
    with pytest.raises(ServiceError, match="DKIM key of the sender account “Main” is missing"):
        senders.dkim_signer_for(session=session, workspace_id=ws, sender_id=sender.id)


# --- scoping and refusals ------------------------------------------------------------------


def test_another_workspace_cannot_set_read_or_clear_the_key(session, owner, rsa_pem):
    _, ws = owner
    other = create_workspace(session=session, name="Someone Else", source=Source.UI)
    session.commit()
    sender = add_sender(session, ws)
    set_key(session, ws, sender.id, rsa_pem)
    for call in (
        lambda: senders.dkim_signer_for(
            session=session, workspace_id=other.id, sender_id=sender.id
        ),
        lambda: senders.dkim_dns_record(
            session=session, workspace_id=other.id, sender_id=sender.id
        ),
        lambda: senders.set_dkim_key(
            session=session, workspace_id=other.id, sender_id=sender.id, domain="example.com",
            selector="x", private_key_pem=rsa_pem, user_id=None, source=Source.UI,
        ),
        lambda: senders.clear_dkim_key(
            session=session, workspace_id=other.id, sender_id=sender.id, user_id=None,
            source=Source.UI,
        ),
    ):  # fmt: skip
        with pytest.raises(senders.SenderNotFound):
            call()
    session.rollback()
    assert senders.dkim_signer_for(session=session, workspace_id=ws, sender_id=sender.id)


@pytest.mark.parametrize(
    "domain, selector, key, field, words",
    [
        ("other.example", "mail", None, "dkim_domain", "mail.example.com or example.com"),
        ("example.org", "mail", None, "dkim_domain", "DMARC"),
        ("ail.example.com", "mail", None, "dkim_domain", "DMARC"),
        ("sub.mail.example.com", "mail", None, "dkim_domain", "DMARC"),
        ("com", "mail", None, "dkim_domain", "with a dot in it"),
        ("example.com", "bad_selector", None, "dkim_selector", "letters, digits and hyphens"),
        ("example.com", "mail", "not a key", "dkim_private_key", "not a private key in PEM"),
        ("example.com", "mail", "ec", "dkim_private_key", "RSA or Ed25519"),
    ],
)
def test_unusable_settings_are_refused_in_plain_words_and_nothing_is_stored(
    session, owner, rsa_pem, domain, selector, key, field, words
):
    _, ws = owner
    sender = add_sender(session, ws)
    if key == "ec":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = (
            ec.generate_private_key(ec.SECP256R1())
            .private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            .decode()
        )
    with pytest.raises(InvalidInput) as refused:
        set_key(session, ws, sender.id, key or rsa_pem, domain=domain, selector=selector)
    assert refused.value.field == field
    assert words in str(refused.value)
    session.rollback()
    assert session.exec(select(sa.func.count()).select_from(Secret)).one() == 0
    assert senders.dkim_signer_for(session=session, workspace_id=ws, sender_id=sender.id) is None


def test_the_from_domain_itself_and_its_parent_are_both_aligned(session, owner, rsa_pem):
    _, ws = owner
    sender = add_sender(session, ws)
    for domain in ("mail.example.com", "example.com", "MAIL.Example.COM."):
        assert set_key(session, ws, sender.id, rsa_pem, domain=domain).dkim_domain in (
            "mail.example.com",
            "example.com",
        )


# --- through a real SMTP server -------------------------------------------------------------


def test_a_signed_message_arrives_signed_and_verifies(session, owner, rsa_pem, smtp_server):
    _, ws = owner
    sender = add_sender(session, ws)
    set_key(session, ws, sender.id, rsa_pem)
    signer = senders.dkim_signer_for(session=session, workspace_id=ws, sender_id=sender.id)
    record = senders.dkim_dns_record(session=session, workspace_id=ws, sender_id=sender.id)
    data = signer.sign(message(text="Hello Zoë\n.\n.. and a line of dots"))
    # A line starting with "." in the body: SMTP dot-stuffing must not break the hash.
    assert b"\r\n.. and" in data
    endpoint = SmtpEndpoint(
        host=smtp_server.host, port=smtp_server.port, security="plain",
        username=smtp_server.username, password=smtp_server.password, timeout=10,
    )  # fmt: skip
    [result] = submit_messages(
        endpoint, [OutgoingMessage("news@mail.example.com", ("zoe@example.org",), data)]
    )
    assert result.ok, result.reply
    [received] = smtp_server.recorder.messages
    assert received.startswith(b"DKIM-Signature: ")
    assert dkim.verify(received, dnsfunc=dnsfunc_for(record))
    signer_again = DkimSigner("example.com", "mail", generate_key("rsa", 1024))
    assert not dkim.verify(
        received, dnsfunc=dnsfunc_for(senders.DkimDnsRecord(
            name=record.name, value=signer_again.public_dns_record(), strings=(),
            domain="example.com", selector="mail", algorithm="rsa", bits=1024, advice=(),
        ))
    )  # fmt: skip
