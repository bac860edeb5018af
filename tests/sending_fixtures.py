"""A campaign ready to send: workspace, sender account pointing at a test SMTP server,
a contact list, built, approved and queued (tests of the sending engine and jobs)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, select

from mailer_app.models import (
    Campaign,
    CampaignRun,
    CampaignStatus,
    CampaignVersion,
    Contact,
    ContactList,
    SenderAccount,
    SendRecord,
    Source,
    utcnow,
)
from mailer_app.services import build, campaign_status, send_records
from mailer_app.services.workspaces import create_workspace

SUBJECT = "Hello {{ first_name | default('friend') }}"
HTML = "<p>Hi {{ first_name | default('there') }}, news for {{ email }}.</p>"
TEXT = "Hi {{ first_name | default('there') }}, news for {{ email }}."


@dataclass
class Sendable:
    workspace_id: int
    campaign_id: int
    version_id: int
    sender_id: int
    list_id: int
    run_id: int | None = None


def address(i: int) -> str:
    return f"r{i:05d}@example.com"


def make_campaign(
    session: Session,
    engine,
    *,
    port: int,
    count: int = 10,
    emails: list[str] | None = None,
    name: str = "Acme",
    username: str | None = None,
    credential_ref: str | None = None,
    seed_list_id: int | None = None,
    workspace_id: int | None = None,
    queue: bool = True,
    attachment_rules: dict | None = None,
    **sender_fields,
) -> Sendable:
    """Build, approve and (by default) queue a campaign of `count` recipients (or the
    given `emails`) sent through 127.0.0.1:`port` (plain SMTP)."""
    if workspace_id is None:
        workspace_id = create_workspace(session=session, name=name, source=Source.CLI).id
    sender = SenderAccount(
        workspace_id=workspace_id, name="News", from_name="News", from_email="news@example.com",
        smtp_host="127.0.0.1", smtp_port=port, smtp_security="plain", smtp_username=username,
        credential_ref=credential_ref, **sender_fields,
    )  # fmt: skip
    people = ContactList(workspace_id=workspace_id, name=f"People {utcnow().timestamp()}")
    session.add_all([sender, people])
    session.flush()
    addresses = emails if emails is not None else [address(i) for i in range(count)]
    for i, email in enumerate(addresses):
        session.add(
            Contact(
                workspace_id=workspace_id,
                list_id=people.id,
                email=email,
                first_name=f"P{i}",
                source=Source.IMPORT,
            )  # fmt: skip
        )
    campaign = Campaign(workspace_id=workspace_id, name="Spring", status=CampaignStatus.IN_REVIEW)
    session.add(campaign)
    session.flush()
    version = CampaignVersion(
        workspace_id=workspace_id, campaign_id=campaign.id, number=1, is_draft=False,
        published_at=utcnow(), sender_account_id=sender.id, subject=SUBJECT, html_body=HTML,
        text_body=TEXT, recipients={"list_ids": [people.id], "filters": []},
        seed_list_id=seed_list_id, attachment_rules=attachment_rules or {},
    )  # fmt: skip
    session.add(version)
    session.commit()
    enqueue, build.queue_build = build.queue_build, lambda build_id: None  # built right here
    try:
        started = build.start_build(
            session=session, workspace_id=workspace_id, campaign_id=campaign.id, user_id=None,
            source=Source.CLI,
        )  # fmt: skip
        session.commit()
    finally:
        build.queue_build = enqueue
    done = build.run_build(build_id=started.id, engine=engine)
    assert done.status == "done", done.message
    session.expire_all()
    campaign = session.get(Campaign, campaign.id)
    campaign_status.transition(session=session, campaign=campaign, to=CampaignStatus.APPROVED)
    session.commit()
    made = Sendable(workspace_id, campaign.id, version.id, sender.id, people.id)
    if queue:
        made.run_id = queue_it(session, made).id
    return made


def queue_it(session: Session, made: Sendable) -> CampaignRun:
    run = send_records.queue_campaign(
        session=session, workspace_id=made.workspace_id, campaign_id=made.campaign_id,
        user_id=None, source=Source.CLI,
    )  # fmt: skip
    session.commit()
    made.run_id = run.id
    return run


def records(session: Session, run_id: int) -> dict[str, SendRecord]:
    session.expire_all()
    found = session.exec(select(SendRecord).where(SendRecord.run_id == run_id)).all()
    return {r.email: r for r in found}


def campaign_of(session: Session, made: Sendable) -> Campaign:
    session.expire_all()
    return session.get(Campaign, made.campaign_id)
