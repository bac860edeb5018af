"""Helpers shared by the browser tests: accounts and signing in."""

from __future__ import annotations

import re
import secrets

from playwright.sync_api import expect

FIRST_LOAD_MS = 120_000  # the first load of each route compiles it
PASSWORD = "correct horse battery"


def ensure_user(database_url: str, *, role: str = "admin") -> str:
    """A user who can sign in (the owner on a fresh database); returns their email."""
    from sqlmodel import select

    from mailer_app.db import make_engine, session_scope
    from mailer_app.models import Role, Source, Workspace
    from mailer_app.services import auth

    email = f"e2e-{secrets.token_hex(4)}@example.com"
    engine = make_engine(database_url)
    try:
        with session_scope(engine) as session:
            if auth.needs_first_run(session=session):
                auth.create_owner(
                    session=session,
                    email=email,
                    password=PASSWORD,
                    display_name="E2E Owner",
                    workspace_name="E2E Workspace",
                    source=Source.UI,
                )
            else:
                workspace_id = session.exec(select(Workspace.id).order_by(Workspace.id)).first()
                auth.create_user(
                    session=session,
                    workspace_id=workspace_id,
                    email=email,
                    password=PASSWORD,
                    role=Role(role),
                    created_by_id=None,
                    display_name="E2E User",
                    source=Source.UI,
                )
    finally:
        engine.dispose()
    return email


def sign_in(page, base_url: str, email: str, password: str = PASSWORD) -> None:
    """Sign in through the login page and wait for home."""
    page.goto(base_url.rstrip("/") + "/login")
    expect(page.locator("#sign-in")).to_be_visible(timeout=FIRST_LOAD_MS)
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#sign-in")
    expect(page).to_have_url(re.compile(r"/$"), timeout=FIRST_LOAD_MS)
    expect(page.locator("#welcome")).to_be_visible(timeout=FIRST_LOAD_MS)


def new_workspace_owner(database_url: str, *, sender_smtp_port: int | None = None) -> str:
    """An owner of a new, empty workspace (so a test sees only its own seeds); with
    `sender_smtp_port`, the workspace also gets a sender account on the lab's intake."""
    from mailer_app.db import make_engine, session_scope
    from mailer_app.models import Role, SenderAccount, Source, TransportSecurity
    from mailer_app.services import auth, workspaces

    email = f"owner-{secrets.token_hex(4)}@example.com"
    engine = make_engine(database_url)
    try:
        with session_scope(engine) as session:
            if auth.needs_first_run(session=session):
                ensure_user(database_url)  # the first workspace belongs to someone else
            workspace = workspaces.create_workspace(
                session=session, name=f"Workspace {email}", source=Source.UI
            )
            auth.create_user(
                session=session,
                workspace_id=workspace.id,
                email=email,
                password=PASSWORD,
                role=Role.OWNER,
                created_by_id=None,
                display_name="Workspace Owner",
            )
            if sender_smtp_port:
                session.add(
                    SenderAccount(
                        workspace_id=workspace.id,
                        name="Lab sender",
                        from_name="Lab News",
                        from_email="news@sender.lab",
                        smtp_host="127.0.0.1",
                        smtp_port=sender_smtp_port,
                        smtp_security=TransportSecurity.PLAIN,
                    )
                )
    finally:
        engine.dispose()
    return email
