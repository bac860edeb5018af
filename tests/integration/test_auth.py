"""First run, sign-in, sessions, roles and secret scoping, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from argon2 import PasswordHasher
from sqlmodel import select

from mailer_app.models import (
    AuditEntry,
    Membership,
    Role,
    Source,
    User,
    UserSession,
    Workspace,
    utcnow,
)
from mailer_app.services import InvalidInput, auth, workspaces
from mailer_app.services.secrets import (
    SecretNotFound,
    delete_secret,
    replace_secret,
    reveal_secret,
    store_secret,
)

PASSWORD = "correct horse battery"


@pytest.fixture
def owner(session):
    """The first-run owner and workspace, committed (as the setup page leaves them)."""
    user, workspace = auth.create_owner(
        session=session,
        email="  Owner@Example.COM ",
        password=PASSWORD,
        display_name="Olive Owner",
        workspace_name="Acme Mail",
        source=Source.UI,
    )
    session.commit()
    return user, workspace


def actions(session) -> list[str]:
    return list(session.exec(select(AuditEntry.action).order_by(AuditEntry.id)).all())


# --- first run ----------------------------------------------------------------------


def test_first_run_creates_owner_then_closes(session):
    assert auth.needs_first_run(session=session) is True
    user, workspace = auth.create_owner(
        session=session,
        email="Owner@Example.com",
        password=PASSWORD,
        display_name="",
        workspace_name="Acme Mail, Inc.",
    )
    session.commit()
    assert auth.needs_first_run(session=session) is False
    assert user.email == "owner@example.com"
    assert user.display_name == "owner"
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    assert workspace.slug == "acme-mail-inc"
    membership = session.exec(select(Membership).where(Membership.user_id == user.id)).one()
    assert (membership.workspace_id, membership.role) == (workspace.id, Role.OWNER)
    entry = session.exec(select(AuditEntry)).one()
    assert entry.action == "workspace.create_owner" and entry.workspace_id == workspace.id

    with pytest.raises(auth.SetupAlreadyDone):
        auth.create_owner(
            session=session,
            email="second@example.com",
            password=PASSWORD,
            display_name="Second",
            workspace_name="Other",
        )
    assert len(session.exec(select(User)).all()) == 1


@pytest.mark.parametrize(
    ("email", "password", "workspace_name", "field", "message"),
    [
        ("owner@example.com", "short", "Acme", "password", "at least 10 characters"),
        ("not-an-email", PASSWORD, "Acme", "email", "valid email address"),
        ("owner@example.com", PASSWORD, "   ", "workspace_name", "workspace a name"),
    ],
)
def test_create_owner_explains_what_is_wrong(
    session, email, password, workspace_name, field, message
):
    with pytest.raises(InvalidInput, match=message) as caught:
        auth.create_owner(
            session=session,
            email=email,
            password=password,
            display_name="O",
            workspace_name=workspace_name,
        )
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)  # the setup page catches ValueError


def test_workspace_slug_is_made_unique(session):
    session.add(Workspace(name="Taken", slug="acme-mail"))
    session.flush()
    _, workspace = auth.create_owner(
        session=session,
        email="o@example.com",
        password=PASSWORD,
        display_name="O",
        workspace_name="Acme Mail",
    )
    assert workspace.slug == "acme-mail-2"


# --- sign-in ------------------------------------------------------------------------


def test_authenticate_success(session, owner):
    user, _ = owner
    signed_in = auth.authenticate(session=session, email=" OWNER@example.com", password=PASSWORD)
    assert signed_in.id == user.id
    assert signed_in.last_login_at is not None
    assert actions(session)[-1] == "user.sign_in"


def test_authenticate_rehashes_when_parameters_change(session, owner):
    user, _ = owner
    cheap = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    user.password_hash = cheap.hash(PASSWORD)
    session.add(user)
    session.commit()
    old_hash = user.password_hash
    auth.authenticate(session=session, email="owner@example.com", password=PASSWORD)
    session.commit()
    session.refresh(user)
    assert user.password_hash != old_hash
    assert not PasswordHasher().check_needs_rehash(user.password_hash)


def test_every_failure_gives_the_same_error_and_is_audited(session, owner):
    user, _ = owner
    inactive = auth.create_user(
        session=session,
        workspace_id=owner[1].id,
        email="gone@example.com",
        password=PASSWORD,
        role=Role.VIEWER,
        created_by_id=user.id,
    )
    inactive.is_active = False
    session.add(inactive)
    session.commit()

    attempts = [
        ("owner@example.com", "wrong password!"),  # wrong password
        ("nobody@example.com", PASSWORD),  # unknown email
        ("gone@example.com", PASSWORD),  # inactive user, right password
        ("", ""),
    ]
    messages = set()
    for email, password in attempts:
        with pytest.raises(auth.InvalidCredentials) as caught:
            auth.authenticate(session=session, email=email, password=password)
        assert type(caught.value) is auth.InvalidCredentials
        messages.add(str(caught.value))
        session.rollback()  # what session_scope does when the exception leaves it
    assert messages == {"Email or password is incorrect."}

    # The failures were audited in their own transaction: the rollbacks kept them.
    failures = session.exec(
        select(AuditEntry).where(AuditEntry.action == "user.sign_in_failed").order_by(AuditEntry.id)
    ).all()
    assert [f.details["reason"] for f in failures] == [
        "wrong_password",
        "unknown_email",
        "inactive_user",
        "unknown_email",
    ]
    assert failures[0].user_id == user.id and failures[1].user_id is None
    for entry in failures:
        assert PASSWORD not in str(entry.details) and "wrong password!" not in str(entry.details)


def test_password_typed_into_the_email_field_is_not_audited(session, owner):
    with pytest.raises(auth.InvalidCredentials):
        auth.authenticate(session=session, email="my-Secret-pass-99", password="x")
    session.rollback()
    entry = session.exec(select(AuditEntry).where(AuditEntry.action == "user.sign_in_failed")).one()
    assert "my-secret-pass-99" not in str(entry.details).lower()


# --- sessions -----------------------------------------------------------------------


def test_session_token_resolves_expires_and_ends(session, owner):
    user, workspace = owner
    token = auth.start_session(session=session, user=user)
    session.commit()

    row = session.exec(select(UserSession)).one()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in row.token_hash
    assert row.workspace_id == workspace.id
    assert timedelta(days=13) < row.expires_at - utcnow() <= timedelta(days=14)

    current = auth.resolve_session(session=session, token=token)
    assert current == auth.CurrentUser(
        user_id=user.id,
        email="owner@example.com",
        display_name="Olive Owner",
        workspace_id=workspace.id,
        workspace_name="Acme Mail",
        role=Role.OWNER,
    )
    assert auth.resolve_session(session=session, token=token + "x") is None
    assert auth.resolve_session(session=session, token="") is None

    row.expires_at = utcnow() - timedelta(seconds=1)
    session.add(row)
    session.commit()
    assert auth.resolve_session(session=session, token=token) is None

    second = auth.start_session(session=session, user=user, workspace_id=workspace.id)
    assert auth.resolve_session(session=session, token=second) is not None
    auth.end_session(session=session, token=second)
    session.commit()
    assert auth.resolve_session(session=session, token=second) is None
    auth.end_session(session=session, token=second)  # twice is harmless
    assert actions(session).count("user.sign_out") == 1


def test_inactive_user_session_stops_resolving(session, owner):
    user, _ = owner
    token = auth.start_session(session=session, user=user)
    user.is_active = False
    session.add(user)
    session.commit()
    assert auth.resolve_session(session=session, token=token) is None


def test_session_only_in_a_workspace_the_user_belongs_to(session, owner):
    user, _ = owner
    other = workspaces.create_workspace(session=session, name="Elsewhere", source=Source.CLI)
    with pytest.raises(auth.PermissionDenied):
        auth.start_session(session=session, user=user, workspace_id=other.id)


# --- users and roles ----------------------------------------------------------------


def test_create_user_and_require_role(session, owner):
    user, workspace = owner
    viewer = auth.create_user(
        session=session,
        workspace_id=workspace.id,
        email="Viewer@Example.com",
        password=PASSWORD,
        role="viewer",
        created_by_id=user.id,
    )
    session.commit()
    assert viewer.email == "viewer@example.com"
    with pytest.raises(InvalidInput, match="already exists"):
        auth.create_user(
            session=session,
            workspace_id=workspace.id,
            email="viewer@example.com",
            password=PASSWORD,
            role=Role.EDITOR,
            created_by_id=user.id,
        )
    with pytest.raises(workspaces.WorkspaceNotFound):
        auth.create_user(
            session=session,
            workspace_id=workspace.id + 999,
            email="y@example.com",
            password=PASSWORD,
            role=Role.EDITOR,
            created_by_id=None,
        )
    with pytest.raises(InvalidInput, match="roles"):
        auth.create_user(
            session=session,
            workspace_id=workspace.id,
            email="x@example.com",
            password=PASSWORD,
            role="superuser",
            created_by_id=user.id,
        )

    current = auth.resolve_session(
        session=session, token=auth.start_session(session=session, user=viewer)
    )
    assert current.role == Role.VIEWER
    assert auth.require_role(current, Role.VIEWER, Role.ADMIN) is current
    with pytest.raises(auth.PermissionDenied):
        auth.require_role(current, Role.ADMIN, Role.SENDER)
    with pytest.raises(auth.PermissionDenied):
        auth.require_role(None, Role.VIEWER)
    owner_current = auth.resolve_session(
        session=session, token=auth.start_session(session=session, user=user)
    )
    assert auth.require_role(owner_current, Role.ADMIN) is owner_current  # owners always pass


# --- workspaces ---------------------------------------------------------------------


def test_workspace_lookup_and_alert_settings(session, owner):
    user, workspace = owner
    assert workspaces.first_workspace(session=session).id == workspace.id
    assert workspaces.get_workspace(session=session, workspace_id=workspace.id).name == "Acme Mail"
    with pytest.raises(workspaces.WorkspaceNotFound):
        workspaces.get_workspace(session=session, workspace_id=workspace.id + 999)

    updated = workspaces.update_alert_settings(
        session=session,
        workspace_id=workspace.id,
        user_id=user.id,
        source=Source.UI,
        min_inbox_rate=0.8,
        max_missing_rate=0.1,
        alert_emails=["Ops@Example.com", "ops@example.com"],
    )
    session.commit()
    assert (updated.alert_min_inbox_rate, updated.alert_max_missing_rate) == (0.8, 0.1)
    assert updated.alert_emails == ["ops@example.com"]
    for bad in (-0.1, 1.5, float("nan"), "lots"):
        with pytest.raises(InvalidInput) as caught:
            workspaces.update_alert_settings(
                session=session,
                workspace_id=workspace.id,
                user_id=user.id,
                source=Source.UI,
                min_inbox_rate=bad,
            )
        assert caught.value.field == "min_inbox_rate"
    assert actions(session)[-1] == "workspace.alert_settings"


# --- secrets are scoped to their workspace ------------------------------------------


def test_secret_refs_are_scoped_to_their_workspace(session, owner):
    user, mine = owner
    theirs = workspaces.create_workspace(session=session, name="Another team", source=Source.CLI)
    ref = store_secret(
        session=session,
        workspace_id=mine.id,
        value="smtp-pass-scoped",
        kind="password",
        source=Source.UI,
        created_by_id=user.id,
    )
    session.commit()
    assert reveal_secret(session=session, workspace_id=mine.id, ref=ref) == "smtp-pass-scoped"
    with pytest.raises(SecretNotFound):
        reveal_secret(session=session, workspace_id=theirs.id, ref=ref)
    with pytest.raises(SecretNotFound):
        replace_secret(
            session=session,
            workspace_id=theirs.id,
            ref=ref,
            value="overwritten!",
            source=Source.API,
        )
    with pytest.raises(SecretNotFound):
        delete_secret(session=session, workspace_id=theirs.id, ref=ref, source=Source.API)
    with pytest.raises(SecretNotFound):
        reveal_secret(session=session, workspace_id=mine.id, ref="sec_does-not-exist")
    assert reveal_secret(session=session, workspace_id=mine.id, ref=ref) == "smtp-pass-scoped"
