"""The campaign status machine, on SQLite and PostgreSQL: every allowed move works and
is audited, every other move is refused in plain words and leaves the row as it was."""

from __future__ import annotations

import pytest
from sqlmodel import select

import mailer_app.models  # noqa: F401  (every table in SQLModel.metadata)
from mailer_app.models import AuditEntry, Campaign, CampaignStatus, Source
from mailer_app.services import InvalidInput, ServiceError, auth, campaigns
from mailer_app.services.campaign_status import MOVES, IllegalTransition, transition
from mailer_app.services.workspaces import create_workspace

S = CampaignStatus


@pytest.fixture
def ws(session) -> dict:
    workspace = create_workspace(session=session, name="Status", source=Source.UI)
    user = auth.create_user(
        session=session, workspace_id=workspace.id, email="ann@example.com",
        password="correct horse battery", role="sender", created_by_id=None,
    )  # fmt: skip
    session.commit()
    return {"workspace_id": workspace.id, "user_id": user.id}


def campaign_in(session, ws, status: str, reason: str | None = None) -> Campaign:
    # Test setup only: a campaign already in `status` (the app gets there by moves).
    campaign = Campaign(
        workspace_id=ws["workspace_id"], name=f"In {status}", status=status, status_reason=reason
    )
    session.add(campaign)
    session.commit()
    return campaign


def status_entries(session, campaign_id: int) -> list[AuditEntry]:
    return list(
        session.exec(
            select(AuditEntry)
            .where(AuditEntry.action == "campaign.status", AuditEntry.target_id == campaign_id)
            .order_by(AuditEntry.id)
        ).all()
    )


ALL_MOVES = [(a, b) for a, targets in MOVES.items() for b in sorted(targets)]


def test_the_table_is_the_one_agreed():
    assert {(str(a), str(b)) for a, b in ALL_MOVES} == {
        ("draft", "in_review"), ("draft", "archived"),
        ("built", "in_review"), ("built", "draft"), ("built", "archived"),
        ("in_review", "draft"), ("in_review", "approved"), ("in_review", "archived"),
        ("approved", "in_review"), ("approved", "draft"), ("approved", "queued"),
        ("approved", "cancelled"), ("approved", "archived"),
        ("queued", "sending"), ("queued", "paused"), ("queued", "cancelled"),
        ("sending", "paused"), ("sending", "completed"), ("sending", "cancelled"),
        ("paused", "sending"), ("paused", "cancelled"),
        ("completed", "archived"), ("completed", "sending"), ("cancelled", "archived"),
    }  # fmt: skip


def test_every_allowed_move_works_and_is_audited_with_who_from_to_and_why(session, ws):
    for before, after in ALL_MOVES:
        campaign = campaign_in(session, ws, before)
        transition(
            session=session, campaign=campaign, to=after, user_id=ws["user_id"],
            source=Source.CLI, reason=f"test {before} to {after}",
        )  # fmt: skip
        session.commit()
        session.expire_all()
        stored = session.get(Campaign, campaign.id)
        assert stored.status == after, (before, after)
        [entry] = status_entries(session, campaign.id)
        assert entry.user_id == ws["user_id"]
        assert entry.source == "cli"
        assert entry.details == {
            "from": before, "to": after, "reason": f"test {before} to {after}"
        }  # fmt: skip
        if after == S.ARCHIVED:
            assert (stored.status_reason, stored.archived_at is not None) == (before, True)
        else:
            assert stored.status_reason == f"test {before} to {after}"


ILLEGAL = [
    (S.COMPLETED, S.PAUSED, "A completed campaign cannot be paused."),
    (S.DRAFT, S.APPROVED, "A draft campaign cannot be approved."),
    (S.DRAFT, S.QUEUED, "A draft campaign cannot be queued."),
    (S.IN_REVIEW, S.QUEUED, "A campaign in review cannot be queued."),
    (S.IN_REVIEW, S.SENDING, "A campaign in review cannot be sent."),
    (S.BUILT, S.APPROVED, "A built campaign cannot be approved."),
    (S.QUEUED, S.ARCHIVED, "A queued campaign cannot be archived."),
    (S.SENDING, S.DRAFT, "A campaign that is sending cannot be put back to draft."),
    (S.SENDING, S.QUEUED, "A campaign that is sending cannot be queued."),
    (S.PAUSED, S.COMPLETED, "A paused campaign cannot be completed."),
    (S.CANCELLED, S.SENDING, "A cancelled campaign cannot be sent."),
    (S.COMPLETED, S.DRAFT, "A completed campaign cannot be put back to draft."),
    (S.APPROVED, S.SENDING, "An approved campaign cannot be sent."),
    (S.DRAFT, S.BUILT, "A draft campaign cannot be marked as built."),
]


@pytest.mark.parametrize(("before", "after", "message"), ILLEGAL)
def test_illegal_moves_are_refused_in_plain_words(session, ws, before, after, message):
    campaign = campaign_in(session, ws, before, reason="as it was")
    stamp = campaign.updated_at
    with pytest.raises(IllegalTransition) as refused:
        transition(session=session, campaign=campaign, to=after, user_id=ws["user_id"])
    assert str(refused.value) == message
    assert (refused.value.from_status, refused.value.to_status) == (before, after)
    assert isinstance(refused.value, InvalidInput) and refused.value.field == "status"
    session.commit()  # whatever the caller commits, the row is as it was
    session.expire_all()
    stored = session.get(Campaign, campaign.id)
    assert (stored.status, stored.status_reason, stored.updated_at) == (before, "as it was", stamp)
    assert stored.archived_at is None
    assert status_entries(session, campaign.id) == []


def test_every_move_outside_the_table_is_refused_and_changes_nothing(session, ws):
    refused = 0
    for before in S:
        if before == S.ARCHIVED:
            continue
        campaign = campaign_in(session, ws, before)
        for after in S:
            if after == before or after in MOVES[before]:
                continue
            with pytest.raises(IllegalTransition, match=r"^An? .* cannot be .*\.$"):
                transition(session=session, campaign=campaign, to=after)
            refused += 1
        session.commit()
        session.expire_all()
        assert session.get(Campaign, campaign.id).status == before
        assert status_entries(session, campaign.id) == []
    assert refused == 9 * 9 - len(ALL_MOVES)


def test_an_archived_campaign_goes_back_only_to_the_status_it_had(session, ws):
    campaign = campaign_in(session, ws, S.APPROVED)
    transition(session=session, campaign=campaign, to=S.ARCHIVED, user_id=ws["user_id"])
    session.commit()
    assert (campaign.status, campaign.status_reason) == ("archived", "approved")
    for wrong, message in [
        (S.DRAFT, "An archived campaign cannot be put back to draft: restore it first "
                  "(it goes back to approved)."),
        (S.QUEUED, "An archived campaign cannot be queued: restore it first "
                   "(it goes back to approved)."),
    ]:  # fmt: skip
        with pytest.raises(IllegalTransition) as refused:
            transition(session=session, campaign=campaign, to=wrong)
        assert str(refused.value) == message
    session.commit()
    session.expire_all()
    campaign = session.get(Campaign, campaign.id)
    assert (campaign.status, campaign.status_reason) == ("archived", "approved")
    transition(session=session, campaign=campaign, to=S.APPROVED, user_id=ws["user_id"])
    session.commit()
    session.expire_all()
    campaign = session.get(Campaign, campaign.id)
    assert (campaign.status, campaign.archived_at) == ("approved", None)
    moves = [(e.details["from"], e.details["to"]) for e in status_entries(session, campaign.id)]
    assert moves == [("approved", "archived"), ("archived", "approved")]


def test_the_wizard_archive_and_restore_go_through_the_machine(session, ws):
    campaign = campaign_in(session, ws, S.IN_REVIEW)
    campaigns.archive_campaign(
        session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id, user_id=None
    )
    session.commit()
    campaigns.restore_campaign(
        session=session, workspace_id=ws["workspace_id"], campaign_id=campaign.id, user_id=None
    )
    session.commit()
    session.expire_all()
    assert session.get(Campaign, campaign.id).status == "in_review"
    moves = [(e.details["from"], e.details["to"]) for e in status_entries(session, campaign.id)]
    assert moves == [("in_review", "archived"), ("archived", "in_review")]


def test_change_status_is_the_machine_under_its_old_name(session, ws):
    campaign = campaign_in(session, ws, S.COMPLETED)
    with pytest.raises(ServiceError, match=r"^A completed campaign cannot be paused\.$"):
        campaigns.change_status(campaign, S.PAUSED)
    campaigns.change_status(campaign, S.ARCHIVED, user_id=ws["user_id"], source=Source.UI)
    session.commit()
    [entry] = status_entries(session, campaign.id)
    assert (entry.user_id, entry.source, entry.details["to"]) == (ws["user_id"], "ui", "archived")
    # Staying where it is is not a move: nothing is written.
    campaigns.change_status(campaign, S.ARCHIVED)
    session.commit()
    assert len(status_entries(session, campaign.id)) == 1


def test_an_unknown_status_is_refused(session, ws):
    campaign = campaign_in(session, ws, S.DRAFT)
    with pytest.raises(InvalidInput, match="no campaign status called 'shipped'"):
        transition(session=session, campaign=campaign, to="shipped")
    assert campaign.status == "draft"
