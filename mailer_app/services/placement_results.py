"""Placement counts and rates, overall and per canonical ESP.

The formulas (PRODUCT.md, "Rates"):
    inbox_rate = inbox / total_checked      (likewise spam, promotions, missing)
    total_checked = seeds with a terminal placement (inbox, spam, promotions, missing)

So seeds still pending in active runs are not in the denominator (they would drag
every rate down while checks are under way), and neither are `error` results (a
seed whose login expired says nothing about where the mail landed); both are
reported beside the rates. One SQL query with GROUP BY does the counting, so the
same function serves a single run and a year of dashboards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, select

from mailer_app.models import Placement, PlacementResult, PlacementRun
from mailer_app.services import placement_rollup

PLACED = (Placement.INBOX, Placement.SPAM, Placement.PROMOTIONS, Placement.MISSING)


@dataclass
class PlacementCounts:
    inbox: int = 0
    spam: int = 0
    promotions: int = 0
    missing: int = 0
    pending: int = 0
    error: int = 0

    @property
    def total_checked(self) -> int:
        return self.inbox + self.spam + self.promotions + self.missing

    def rate(self, placement: str) -> float | None:
        """Share of checked seeds with this placement; None before any is checked."""
        if self.total_checked == 0:
            return None
        return getattr(self, placement) / self.total_checked

    def as_dict(self) -> dict:
        return {
            "inbox": self.inbox,
            "spam": self.spam,
            "promotions": self.promotions,
            "missing": self.missing,
            "pending": self.pending,
            "error": self.error,
            "total_checked": self.total_checked,
            "rates": {p.value: self.rate(p.value) for p in PLACED},
        }

    def add(self, placement: str, count: int) -> None:
        if hasattr(self, placement):
            setattr(self, placement, getattr(self, placement) + count)


@dataclass
class PlacementSummary:
    overall: PlacementCounts = field(default_factory=PlacementCounts)
    by_esp: dict[str, PlacementCounts] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "overall": self.overall.as_dict(),
            "by_esp": {esp: c.as_dict() for esp, c in sorted(self.by_esp.items())},
        }


def summarize_placement(
    *,
    session: Session,
    workspace_id: int,
    run_id: int | None = None,
    campaign_id: int | None = None,
    sent_from: datetime | None = None,
    sent_to: datetime | None = None,
) -> PlacementSummary:
    """Counts and rates for the results matching the filters, in one workspace.

    `sent_from`/`sent_to` bound the seed copies' send time (half-open: from <= t < to).
    A period of the whole workspace or of a campaign is counted from the hourly rollup
    (services/placement_rollup.py) rather than from every result.
    """
    if run_id is None and sent_from is not None and sent_to is not None:
        summary = PlacementSummary()
        for _, esp, placement, count in placement_rollup.count_placements(
            session=session,
            workspace_id=workspace_id,
            campaign_id=campaign_id,
            sent_from=sent_from,
            sent_to=sent_to,
        ):
            summary.overall.add(placement, count)
            summary.by_esp.setdefault(esp, PlacementCounts()).add(placement, count)
        return summary
    query = (
        select(PlacementResult.esp, PlacementResult.placement, sa.func.count())
        .where(PlacementResult.workspace_id == workspace_id)
        .group_by(PlacementResult.esp, PlacementResult.placement)
    )
    if run_id is not None:
        query = query.where(PlacementResult.run_id == run_id)
    if campaign_id is not None:
        query = query.join(PlacementRun, PlacementRun.id == PlacementResult.run_id).where(
            PlacementRun.campaign_id == campaign_id, PlacementRun.workspace_id == workspace_id
        )
    if sent_from is not None:
        query = query.where(PlacementResult.sent_at >= sent_from)
    if sent_to is not None:
        query = query.where(PlacementResult.sent_at < sent_to)

    summary = PlacementSummary()
    for esp, placement, count in session.exec(query):
        summary.overall.add(placement, count)
        summary.by_esp.setdefault(esp, PlacementCounts()).add(placement, count)
    return summary
