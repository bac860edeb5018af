"""The signing (DKIM) dialog's handlers on the sender accounts page, on SQLite and
PostgreSQL: defaults, generating and pasting keys, the DNS record shown, refusals
next to their field, keeping the key while renaming it, removing it, roles, and no
private key in the page's state at any point."""

from __future__ import annotations

import asyncio
import pickle

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from sqlmodel import select

import mailer_app.models  # noqa: F401  (every table in SQLModel.metadata)
from mailer_app.mail.dkim import generate_key, load_private_key
from mailer_app.models import AuditEntry, Role, Secret, Source, User
from mailer_app.services import auth, senders

PASSWORD = "correct horse battery"


@pytest.fixture
def owner(session):
    user, workspace = auth.create_owner(
        session=session, email="owner@example.com", password=PASSWORD, display_name="Owner",
        workspace_name="Dkim UI Inc", source=Source.UI,
    )  # fmt: skip
    session.commit()
    return user.id, workspace.id


@pytest.fixture
def sender(session, owner):
    _, ws = owner
    sender = senders.create_sender(
        session=session, workspace_id=ws, user_id=None, name="Newsletter",
        from_email="news@mail.example.com", smtp_host="smtp.example.com",
    )  # fmt: skip
    session.commit()
    return sender


def states(session, user_id: int, workspace_id: int):
    """(page state, DKIM dialog state) for a browser tab signed in as `user_id`."""
    import reflex as rx

    from mailer_app.state.auth import AuthState
    from mailer_app.state.senders import SenderDkimState, SendersState

    token = auth.start_session(
        session=session, user=session.get(User, user_id), workspace_id=workspace_id
    )
    session.commit()
    root = rx.State(_reflex_internal_init=True)

    def sub(cls):
        return root.get_substate(cls.get_full_name().split(".")[1:])

    sub(AuthState).session_token = token
    return sub(SendersState), sub(SenderDkimState)


def save(dkim, **form) -> None:
    """Submit the dialog's form (a background handler: called through `.fn`)."""
    from mailer_app.state.senders import SenderDkimState

    values = {"dkim_domain": dkim.domain, "dkim_selector": dkim.selector} | form
    asyncio.run(SenderDkimState.save.fn(dkim, values))


def private_fragments(session) -> list[str]:
    """Every stored DKIM key as PEM text and as its base64 lines."""
    from mailer_app.services.secrets import reveal_secret

    found = []
    for secret in session.exec(select(Secret).where(Secret.kind == "dkim_key")).all():
        pem = reveal_secret(session=session, workspace_id=secret.workspace_id, ref=secret.ref)
        found += [pem.strip(), *(line for line in pem.splitlines() if "-----" not in line)]
    return found


def assert_no_key_in_state(session, *state_objects, extra: tuple[str, ...] = ()) -> None:
    fragments = [*private_fragments(session), *extra]
    assert fragments
    for state in state_objects:
        text = repr(state.dict()) + repr(pickle.dumps(state))
        assert "PRIVATE KEY" not in text
        for fragment in fragments:
            assert fragment not in text


def test_generate_a_key_see_the_record_and_remove_it(session, owner, sender):
    user_id, ws = owner
    page, dkim = states(session, user_id, ws)
    asyncio.run(page.load())
    assert page.rows[0]["signing"] == "Not signed (no DKIM key)"

    asyncio.run(dkim.open_dkim(str(sender.id)))
    assert dkim.is_open and dkim.sender_name == "Newsletter"
    # Defaults a non-technical user can keep: the from domain, "mailer", a new RSA key.
    assert (dkim.domain, dkim.selector, dkim.key_choice) == ("mail.example.com", "mailer", "rsa")
    assert not dkim.enabled and dkim.record["name"] == "" and dkim.message == ""

    save(dkim, dkim_domain="Example.com")
    assert dkim.errors == {} and dkim.message == ""
    assert dkim.enabled and dkim.key_choice == "keep" and not dkim.busy
    assert "Publish the DNS record" in dkim.notice
    record = dkim.record
    assert record["name"] == "mailer._domainkey.example.com"
    assert record["host"] == "mailer._domainkey"
    assert record["value"].startswith("v=DKIM1; k=rsa; p=")
    assert record["key"] == "RSA key (2048 bits)" and record["domain"] == "example.com"
    # A 2048-bit key's value is longer than one TXT string: shown in order, and quoted.
    assert len(dkim.record_strings) == 2 and "".join(dkim.record_strings) == record["value"]
    assert all(len(piece) <= 255 for piece in dkim.record_strings)
    assert record["quoted"] == " ".join(f'"{p}"' for p in dkim.record_strings)
    assert dkim.advice == []
    assert page.rows[0]["signing"] == "Signed (DKIM) as example.com"
    assert_no_key_in_state(session, page, dkim)

    # What the dialog shows is what signs the mail.
    session.expire_all()
    signer = senders.dkim_signer_for(session=session, workspace_id=ws, sender_id=sender.id)
    assert signer.public_dns_record() == record["value"] and signer.key.bits == 2048

    # Opening it again shows the same record, with "keep the key" chosen.
    dkim.is_open = False
    asyncio.run(dkim.open_dkim(str(sender.id)))
    assert dkim.record["value"] == record["value"] and dkim.key_choice == "keep"

    dkim.ask_remove()
    assert dkim.confirm_remove
    dkim.cancel_remove()
    assert not dkim.confirm_remove and dkim.enabled
    dkim.ask_remove()
    asyncio.run(dkim.remove())
    assert not dkim.enabled and dkim.record["name"] == "" and dkim.record_strings == []
    assert "no longer signed" in dkim.notice and dkim.key_choice == "rsa"
    assert (dkim.domain, dkim.selector) == ("mail.example.com", "mailer")
    assert page.rows[0]["signing"] == "Not signed (no DKIM key)"
    session.expire_all()
    assert session.exec(select(sa.func.count()).select_from(Secret)).one() == 0
    assert senders.dkim_signer_for(session=session, workspace_id=ws, sender_id=sender.id) is None
    done = session.exec(
        select(AuditEntry.action).where(AuditEntry.action.like("sender.dkim%"))
    ).all()
    assert sorted(done) == ["sender.dkim_clear", "sender.dkim_set"]


def test_a_pasted_key_is_used_and_never_comes_back(session, owner, sender):
    user_id, ws = owner
    page, dkim = states(session, user_id, ws)
    asyncio.run(dkim.open_dkim(str(sender.id)))
    pem = generate_key("rsa", 2048)
    # As people often have it: PKCS#1 ("BEGIN RSA PRIVATE KEY").
    pasted = (
        serialization.load_pem_private_key(pem.encode(), password=None)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        .decode()
    )
    dkim.set_key_choice("paste")
    save(dkim, dkim_selector="s2025", dkim_private_key=pasted)
    assert dkim.errors == {} and dkim.enabled
    assert dkim.record["name"] == "s2025._domainkey.mail.example.com"
    assert dkim.record["value"] == load_private_key(pem).dns_value
    assert_no_key_in_state(session, page, dkim, extra=(pasted.strip(),))

    # Keeping the key and changing only the selector: same key, new record name.
    assert dkim.key_choice == "keep"
    save(dkim, dkim_selector="s2026")
    assert dkim.errors == {} and dkim.record["name"] == "s2026._domainkey.mail.example.com"
    assert dkim.record["value"] == load_private_key(pem).dns_value
    assert "publish it again" in dkim.notice
    session.expire_all()
    signer = senders.dkim_signer_for(session=session, workspace_id=ws, sender_id=sender.id)
    assert signer.selector == "s2026" and signer.key.pem == load_private_key(pem).pem


def test_an_ed25519_key_comes_with_advice(session, owner, sender):
    user_id, ws = owner
    _, dkim = states(session, user_id, ws)
    asyncio.run(dkim.open_dkim(str(sender.id)))
    dkim.set_key_choice("ed25519")
    save(dkim)
    assert dkim.errors == {} and dkim.record["value"].startswith("v=DKIM1; k=ed25519; p=")
    assert dkim.record["key"] == "Ed25519 key" and len(dkim.record_strings) == 1
    assert "Gmail" in dkim.advice[0]


PUBLIC_KEY = (
    "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n"
    "-----END PUBLIC KEY-----\n"
)


@pytest.mark.parametrize(
    "form, field, words",
    [
        ({"dkim_domain": "other.example"}, "dkim_domain", "mail.example.com or example.com"),
        ({"dkim_domain": "example.org"}, "dkim_domain", "DMARC"),
        ({"dkim_domain": "localhost"}, "dkim_domain", "with a dot in it"),
        ({"dkim_selector": "my_selector"}, "dkim_selector", "letters, digits and hyphens"),
        ({"dkim_selector": ""}, "dkim_selector", "Enter the DKIM selector"),
        ({"choice": "paste", "dkim_private_key": ""}, "dkim_private_key", "Paste the private"),
        ({"choice": "paste", "dkim_private_key": "hello"}, "dkim_private_key", "not a private"),
        ({"choice": "paste", "dkim_private_key": PUBLIC_KEY}, "dkim_private_key",
         "This is a public key"),
    ],
)  # fmt: skip
def test_refusals_are_shown_next_to_their_field_and_nothing_is_saved(
    session, owner, sender, form, field, words
):
    user_id, ws = owner
    _, dkim = states(session, user_id, ws)
    asyncio.run(dkim.open_dkim(str(sender.id)))
    form = dict(form)  # shared by the SQLite and PostgreSQL runs
    dkim.set_key_choice(form.pop("choice", "rsa"))
    save(dkim, **form)
    assert list(dkim.errors) == [field] and words in dkim.errors[field]
    assert dkim.message == "" and not dkim.enabled and not dkim.busy
    session.expire_all()
    assert session.exec(select(sa.func.count()).select_from(Secret)).one() == 0
    # Typing in the field clears its error.
    {"dkim_domain": dkim.set_domain, "dkim_selector": dkim.set_selector,
     "dkim_private_key": lambda _v: dkim.set_key_choice("rsa")}[field]("x")  # fmt: skip
    assert dkim.errors == {}


def test_keep_is_only_offered_with_a_saved_key(session, owner, sender):
    user_id, ws = owner
    _, dkim = states(session, user_id, ws)
    asyncio.run(dkim.open_dkim(str(sender.id)))
    dkim.set_key_choice("keep")
    assert dkim.key_choice == "rsa"
    dkim.set_key_choice("anything")
    assert dkim.key_choice == "rsa"


def test_a_missing_stored_key_is_said_and_can_be_removed(session, owner, sender):
    user_id, ws = owner
    _, dkim = states(session, user_id, ws)
    asyncio.run(dkim.open_dkim(str(sender.id)))
    save(dkim)
    session.exec(sa.delete(Secret))
    session.commit()
    dkim.is_open = False
    asyncio.run(dkim.open_dkim(str(sender.id)))
    assert dkim.enabled and "DKIM key of the sender account “Newsletter” is missing" in (
        dkim.message
    )
    assert dkim.key_choice == "rsa" and dkim.record["name"] == ""
    save(dkim)  # a new key fixes it
    assert dkim.message == "" and dkim.record["name"] == "mailer._domainkey.mail.example.com"


def test_a_viewer_can_neither_open_nor_change_signing(session, owner, sender):
    user_id, ws = owner
    viewer = auth.create_user(
        session=session, workspace_id=ws, email="viewer@example.com", password=PASSWORD,
        role=Role.VIEWER, created_by_id=user_id,
    )  # fmt: skip
    session.commit()
    page, dkim = states(session, viewer.id, ws)
    refused = "Your role does not allow this. Ask an owner or admin."
    asyncio.run(dkim.open_dkim(str(sender.id)))
    assert not dkim.is_open and page.notice == refused
    # Crafted events: the handlers ask the database, whatever the page shows.
    dkim.sender_id = str(sender.id)
    save(dkim, dkim_domain="example.com", dkim_selector="mailer")
    assert dkim.message == refused
    asyncio.run(dkim.remove())
    assert dkim.message == refused
    session.expire_all()
    assert session.exec(select(sa.func.count()).select_from(Secret)).one() == 0


def test_another_workspace_sender_cannot_be_opened(session, owner, sender):
    from mailer_app.services.workspaces import create_workspace

    other = create_workspace(session=session, name="Someone Else", source=Source.UI)
    other_owner = auth.create_user(
        session=session, workspace_id=other.id, email="other@example.com", password=PASSWORD,
        role=Role.OWNER, created_by_id=None,
    )  # fmt: skip
    session.commit()
    page, dkim = states(session, other_owner.id, other.id)
    asyncio.run(dkim.open_dkim(str(sender.id)))
    assert not dkim.is_open and "does not exist" in page.notice
    dkim.sender_id = str(sender.id)
    save(dkim, dkim_domain="mail.example.com", dkim_selector="mailer")
    assert "does not exist" in dkim.message
    session.expire_all()
    assert session.exec(select(sa.func.count()).select_from(Secret)).one() == 0
