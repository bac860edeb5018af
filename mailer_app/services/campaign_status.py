"""The campaign status machine: the one place that writes `Campaign.status`.

Every move is checked against `MOVES` and written to the audit log with who made
it, from which status, to which, and why. An illegal move raises
`IllegalTransition`, whose message names both statuses in plain words
("A completed campaign cannot be paused."), and leaves the campaign untouched.

Archiving remembers the status the campaign had (in `status_reason`, as the wizard
always did) and an archived campaign can only go back to that status.

    draft      -> in_review (publish), archived
    built      -> in_review, draft, archived
    in_review  -> draft (edited), approved, archived
    approved   -> in_review (rebuilt, decision changed), draft, queued, cancelled, archived
    queued     -> sending, paused, cancelled
    sending    -> paused, completed, cancelled
    paused     -> sending, cancelled
    completed  -> archived, sending (a person resends messages of unknown outcome)
    cancelled  -> archived
    archived   -> the status it had

The caller owns the transaction (nothing is committed here).
"""

from __future__ import annotations

from sqlmodel import Session

from mailer_app.models import Campaign, CampaignStatus, Source, utcnow
from mailer_app.services import InvalidInput, audit

S = CampaignStatus
MOVES: dict[str, frozenset[str]] = {
    S.DRAFT: frozenset({S.IN_REVIEW, S.ARCHIVED}),
    S.BUILT: frozenset({S.IN_REVIEW, S.DRAFT, S.ARCHIVED}),
    S.IN_REVIEW: frozenset({S.DRAFT, S.APPROVED, S.ARCHIVED}),
    S.APPROVED: frozenset({S.IN_REVIEW, S.DRAFT, S.QUEUED, S.CANCELLED, S.ARCHIVED}),
    S.QUEUED: frozenset({S.SENDING, S.PAUSED, S.CANCELLED}),
    S.SENDING: frozenset({S.PAUSED, S.COMPLETED, S.CANCELLED}),
    S.PAUSED: frozenset({S.SENDING, S.CANCELLED}),
    S.COMPLETED: frozenset({S.SENDING, S.ARCHIVED}),  # sending: a person resends unknowns
    S.CANCELLED: frozenset({S.ARCHIVED}),
    S.ARCHIVED: frozenset(),  # back to the status it had: see restore_status
}
# The statuses a campaign may be archived from (and so restored to).
ARCHIVABLE = frozenset(s for s, moves in MOVES.items() if S.ARCHIVED in moves)

# "A completed campaign" cannot be "paused": the two halves of the refusal message.
_A_CAMPAIGN = {
    S.DRAFT: "A draft campaign",
    S.BUILT: "A built campaign",
    S.IN_REVIEW: "A campaign in review",
    S.APPROVED: "An approved campaign",
    S.QUEUED: "A queued campaign",
    S.SENDING: "A campaign that is sending",
    S.PAUSED: "A paused campaign",
    S.COMPLETED: "A completed campaign",
    S.CANCELLED: "A cancelled campaign",
    S.ARCHIVED: "An archived campaign",
}
_BE_MOVED = {
    S.DRAFT: "put back to draft",
    S.BUILT: "marked as built",
    S.IN_REVIEW: "put in review",
    S.APPROVED: "approved",
    S.QUEUED: "queued",
    S.SENDING: "sent",
    S.PAUSED: "paused",
    S.COMPLETED: "completed",
    S.CANCELLED: "cancelled",
    S.ARCHIVED: "archived",
}
_LABEL = {
    S.DRAFT: "draft",
    S.BUILT: "built",
    S.IN_REVIEW: "in review",
    S.APPROVED: "approved",
    S.QUEUED: "queued",
    S.SENDING: "sending",
    S.PAUSED: "paused",
    S.COMPLETED: "completed",
    S.CANCELLED: "cancelled",
    S.ARCHIVED: "archived",
}


class IllegalTransition(InvalidInput):
    """The campaign cannot move from `from_status` to `to_status`."""

    def __init__(self, message: str, *, from_status: str, to_status: str) -> None:
        super().__init__(message, field="status")
        self.from_status = from_status
        self.to_status = to_status


def restore_status(campaign: Campaign) -> str:
    """The status an archived campaign returns to (draft when it is not known)."""
    previous = campaign.status_reason
    return previous if previous in ARCHIVABLE else S.DRAFT


def allowed_moves(campaign: Campaign) -> frozenset[str]:
    """The statuses `campaign` may move to now."""
    if campaign.status == S.ARCHIVED:
        return frozenset({restore_status(campaign)})
    return MOVES.get(campaign.status, frozenset())


def refusal(from_status: str, to_status: str, campaign: Campaign | None = None) -> str:
    """The plain-language reason a move is refused."""
    who = _A_CAMPAIGN.get(from_status, f"A campaign with status {from_status}")
    what = _BE_MOVED.get(to_status, f"moved to {to_status}")
    if from_status == S.ARCHIVED and campaign is not None:
        back = _LABEL[restore_status(campaign)]
        return f"{who} cannot be {what}: restore it first (it goes back to {back})."
    return f"{who} cannot be {what}."


def transition(
    *,
    session: Session,
    campaign: Campaign,
    to: CampaignStatus | str,
    user_id: int | None = None,
    source: Source | str = Source.SYSTEM,
    reason: str | None = None,
) -> Campaign:
    """Move `campaign` to `to` if the move is allowed (IllegalTransition if not).

    Moving to the status it already has does nothing. `reason` (plain words) is kept
    in `status_reason` and the audit entry; while archived, `status_reason` keeps the
    status to return to instead.
    """
    try:
        target = CampaignStatus(to)
    except ValueError:
        raise InvalidInput(f"There is no campaign status called {to!r}.", field="status") from None
    current = campaign.status
    if target == current:
        return campaign
    if target not in allowed_moves(campaign):
        raise IllegalTransition(
            refusal(current, target, campaign), from_status=current, to_status=target
        )
    now = utcnow()
    campaign.status = target
    if target == S.ARCHIVED:
        campaign.status_reason = current  # what restoring returns to
        campaign.archived_at = campaign.archived_at or now
    else:
        campaign.status_reason = reason
        if current == S.ARCHIVED:
            campaign.archived_at = None
    campaign.updated_at = now
    session.add(campaign)
    session.flush()
    audit.record(
        session=session,
        action="campaign.status",
        source=source,
        workspace_id=campaign.workspace_id,
        user_id=user_id,
        target_type="campaign",
        target_id=campaign.id,
        details={"from": str(current), "to": str(target), "reason": reason},
    )
    return campaign
