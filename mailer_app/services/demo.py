"""Development demo data: lab seed mailboxes and a sender account, created once.

So that a new user sees the whole product work without real accounts, each
workspace gets (in development, with the lab on) one seed mailbox per simulated
provider, a seed list holding them, and a sender account that sends through the
lab's SMTP intake. The passwords are random, kept only in the secret store (the
lab keeps its own salted hash), and re-provisioned into the lab if its folder was
wiped.
"""

from __future__ import annotations

import logging
import secrets

from sqlmodel import Session, select

from mailer_app.db import session_scope
from mailer_app.models import (
    SeedAccount,
    SeedList,
    SeedListMember,
    SenderAccount,
    Source,
    TransportSecurity,
    Workspace,
)
from mailer_app.services import secrets as secret_store
from mailer_app.services.seeds import create_seed
from mailer_app.settings import Settings

log = logging.getLogger(__name__)

# (address, canonical ESP) of the demo seeds, one per simulated provider.
DEMO_SEEDS = [
    ("demo-seed@gmail.lab", "gmail"),
    ("demo-seed@outlook.lab", "outlook"),
    ("demo-seed@yahoo.lab", "yahoo"),
    ("demo-seed@legacy.lab", "other"),
]
DEMO_SEED_LIST = "Lab seeds"
DEMO_SENDER = "Local mail lab"
DEMO_FROM = "newsletter@sender.lab"


def ensure_demo_data(*, session: Session, settings: Settings, workspace_id: int) -> None:
    """Create what is missing of the demo data in one workspace (idempotent)."""
    from mailer_app.lab.accounts import ensure_lab_account

    seed_list = session.exec(
        select(SeedList).where(
            SeedList.workspace_id == workspace_id, SeedList.name == DEMO_SEED_LIST
        )
    ).first()
    if seed_list is None:
        seed_list = SeedList(workspace_id=workspace_id, name=DEMO_SEED_LIST, source=Source.LAB)
        session.add(seed_list)
        session.flush()

    for address, _esp in DEMO_SEEDS:  # the ESP follows from the address
        seed = session.exec(
            select(SeedAccount).where(
                SeedAccount.workspace_id == workspace_id, SeedAccount.email == address
            )
        ).first()
        if seed is None:
            password = secrets.token_urlsafe(18)
            seed = create_seed(
                session=session,
                workspace_id=workspace_id,
                user_id=None,
                email=address,
                password=password,
                imap_host="127.0.0.1",
                imap_port=settings.lab_imap_port,
                imap_security=TransportSecurity.PLAIN,
                imap_username=address,
                source=Source.LAB,
            )
            session.add(
                SeedListMember(
                    workspace_id=workspace_id,
                    seed_list_id=seed_list.id,
                    seed_id=seed.id,
                    source=Source.LAB,
                )
            )
        else:
            password = secret_store.reveal_secret(
                session=session, workspace_id=workspace_id, ref=seed.credential_ref
            )
        ensure_lab_account(settings.lab_dir, address, password)

    sender = session.exec(
        select(SenderAccount).where(
            SenderAccount.workspace_id == workspace_id, SenderAccount.name == DEMO_SENDER
        )
    ).first()
    if sender is None:
        session.add(
            SenderAccount(
                workspace_id=workspace_id,
                name=DEMO_SENDER,
                from_name="Lab Newsletter",
                from_email=DEMO_FROM,
                smtp_host="127.0.0.1",
                smtp_port=settings.lab_smtp_port,
                smtp_security=TransportSecurity.PLAIN,
                source=Source.LAB,
            )
        )


def ensure_demo_data_safely(*, settings: Settings, workspace_id: int) -> bool:
    """ensure_demo_data in its own transaction; a failure is logged, never raised.

    Demo data is a convenience: it must never stop sign-up or start-up.
    """
    try:
        with session_scope() as session:
            ensure_demo_data(session=session, settings=settings, workspace_id=workspace_id)
    except Exception:
        log.exception("could not create the demo data for workspace %s", workspace_id)
        return False
    return True


def ensure_demo_data_for_all_workspaces_safely(*, settings: Settings) -> None:
    with session_scope() as session:
        workspace_ids = list(session.exec(select(Workspace.id)))
    for workspace_id in workspace_ids:
        ensure_demo_data_safely(settings=settings, workspace_id=workspace_id)
