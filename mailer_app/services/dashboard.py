"""Placement dashboard queries: period summary, ESP breakdown, time series, drill-down.

Every number comes from the counts of `placement_results` (PRODUCT.md, "Rates"):
a rate is placement / total_checked, and seeds still pending (or ended in `error`)
are reported beside the rates, never inside them. A period is half-open on the
seed copies' send time (`start <= sent_at < end`), like `summarize_placement`.
Every query is scoped to one workspace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from mailer_app.models import (
    Campaign,
    Placement,
    PlacementCheck,
    PlacementResult,
    PlacementRun,
    SeedAccount,
)
from mailer_app.services import NotFoundError, placement_rollup
from mailer_app.services.placement_results import (
    PLACED,
    PlacementCounts,
    summarize_placement,
)

HOUR, DAY = placement_rollup.HOURLY, placement_rollup.DAILY
# Ranges up to this long are drawn per hour, longer ones per day.
HOURLY_UP_TO = timedelta(days=2)
DRILLDOWN_RUNS = 20


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    @property
    def previous(self) -> Period:
        """The period of the same length just before this one."""
        return Period(self.start - (self.end - self.start), self.start)


@dataclass
class DashboardSummary:
    """The headline numbers of a period, the period before, and the ESP breakdown."""

    period: Period
    current: PlacementCounts
    previous: PlacementCounts
    by_esp: dict[str, PlacementCounts] = field(default_factory=dict)

    def change(self, placement: str) -> float | None:
        """Rate now minus rate in the previous period; None when either has no checks."""
        now, before = self.current.rate(placement), self.previous.rate(placement)
        if now is None or before is None:
            return None
        return now - before

    @property
    def checked_change(self) -> int:
        return self.current.total_checked - self.previous.total_checked


def period_summary(
    *,
    session: Session,
    workspace_id: int,
    period: Period,
    campaign_id: int | None = None,
) -> DashboardSummary:
    """Counts and rates for `period` and the one before, overall and by canonical ESP."""
    now = summarize_placement(
        session=session,
        workspace_id=workspace_id,
        campaign_id=campaign_id,
        sent_from=period.start,
        sent_to=period.end,
    )
    before = summarize_placement(
        session=session,
        workspace_id=workspace_id,
        campaign_id=campaign_id,
        sent_from=period.previous.start,
        sent_to=period.previous.end,
    )
    return DashboardSummary(
        period=period, current=now.overall, previous=before.overall, by_esp=now.by_esp
    )


def esp_breakdown(
    *, session: Session, workspace_id: int, period: Period, campaign_id: int | None = None
) -> dict[str, PlacementCounts]:
    """Counts and rates per canonical ESP for `period` (one GROUP BY query)."""
    return summarize_placement(
        session=session,
        workspace_id=workspace_id,
        campaign_id=campaign_id,
        sent_from=period.start,
        sent_to=period.end,
    ).by_esp


# --- time series --------------------------------------------------------------------


@dataclass
class Series:
    """Counts per (time bucket, ESP); `buckets` lists every bucket of the period."""

    bucket: str  # "hour" or "day"
    buckets: list[datetime]
    counts: dict[str, dict[datetime, PlacementCounts]]  # esp -> bucket -> counts

    def inbox_rates(self, esp: str) -> list[float | None]:
        """The inbox rate of `esp` in each bucket (None where nothing was checked)."""
        per_bucket = self.counts.get(esp, {})
        return [per_bucket.get(b, PlacementCounts()).rate(Placement.INBOX) for b in self.buckets]


def bucket_for(period: Period) -> str:
    return HOUR if period.end - period.start <= HOURLY_UP_TO else DAY


def _bucket_start(text: str, bucket: str) -> datetime:
    fmt = "%Y-%m-%d %H" if bucket == HOUR else "%Y-%m-%d"
    return datetime.strptime(text, fmt).replace(tzinfo=UTC)


def _floor(moment: datetime, bucket: str) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment if bucket == HOUR else moment.replace(hour=0)


def inbox_rate_series(
    *,
    session: Session,
    workspace_id: int,
    period: Period,
    campaign_id: int | None = None,
    bucket: str | None = None,
) -> Series:
    """Placement counts per ESP per hour (short periods) or day, in UTC."""
    bucket = bucket or bucket_for(period)
    counts: dict[str, dict[datetime, PlacementCounts]] = {}
    for text, esp, placement, count in placement_rollup.count_placements(
        session=session,
        workspace_id=workspace_id,
        campaign_id=campaign_id,
        sent_from=period.start,
        sent_to=period.end,
        bucket=bucket,
    ):
        start = _bucket_start(text, bucket)
        counts.setdefault(esp, {}).setdefault(start, PlacementCounts()).add(placement, count)
    step = timedelta(hours=1) if bucket == HOUR else timedelta(days=1)
    buckets, moment = [], _floor(period.start, bucket)
    while moment < period.end:
        buckets.append(moment)
        moment += step
    return Series(bucket=bucket, buckets=buckets, counts=counts)


# --- live marker --------------------------------------------------------------------


def latest_change(*, session: Session, workspace_id: int) -> tuple:
    """A cheap fingerprint of the workspace's results: it changes when a result is
    added (a new run: a higher id) or decided (results are decided at the current
    time, so the newest decided_at moves). Two index seeks, no counting."""
    newest = session.exec(
        select(sa.func.max(PlacementResult.id)).where(PlacementResult.workspace_id == workspace_id)
    ).one()
    decided = session.exec(
        select(sa.func.max(PlacementResult.decided_at)).where(
            PlacementResult.workspace_id == workspace_id
        )
    ).one()
    return (newest, decided.isoformat() if decided else None)


# --- campaigns and drill-down -------------------------------------------------------


def campaigns_with_results(*, session: Session, workspace_id: int) -> list[tuple[int, str]]:
    """(id, name) of the workspace's campaigns that have a placement run, by name."""
    rows = session.exec(
        select(Campaign.id, Campaign.name)
        .where(
            Campaign.workspace_id == workspace_id,
            sa.exists().where(
                PlacementRun.campaign_id == Campaign.id,
                PlacementRun.workspace_id == workspace_id,
            ),
        )
        .order_by(Campaign.name, Campaign.id)
    )
    return [(cid, name) for cid, name in rows]


@dataclass(frozen=True)
class SeedOutcome:
    seed_email: str
    esp: str
    placement: str
    folder: str | None
    seconds_to_land: float | None
    spf: str | None
    dkim: str | None
    dmarc: str | None
    error: str | None
    checks: dict[int, str]  # attempt -> outcome (a placement, "not_found" or "error")


@dataclass(frozen=True)
class CheckStep:
    """Where the run's seeds stood after check `attempt` (+`offset_min` minutes)."""

    attempt: int
    offset_min: float | None
    counts: PlacementCounts


@dataclass
class Drilldown:
    campaign_id: int
    runs: list[tuple[int, datetime, str]]  # (run id, created, status), newest first
    run_id: int | None
    seeds: list[SeedOutcome]
    steps: list[CheckStep]
    counts: PlacementCounts


def campaign_drilldown(
    *, session: Session, workspace_id: int, campaign_id: int, run_id: int | None = None
) -> Drilldown:
    """Each seed's result for one run of a campaign (the newest by default), and how
    placement evolved over the scheduled checks."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None or campaign.workspace_id != workspace_id:
        raise NotFoundError("That campaign does not exist.")
    runs = list(
        session.exec(
            select(PlacementRun)
            .where(
                PlacementRun.workspace_id == workspace_id, PlacementRun.campaign_id == campaign_id
            )
            .order_by(PlacementRun.id.desc())
            .limit(DRILLDOWN_RUNS)
        )
    )
    listed = [(r.id, r.created_at, r.status) for r in runs]
    if not runs:
        return Drilldown(campaign_id, listed, None, [], [], PlacementCounts())
    run = next((r for r in runs if r.id == run_id), runs[0])
    rows = list(
        session.exec(
            select(PlacementResult, SeedAccount.email)
            .join(SeedAccount, SeedAccount.id == PlacementResult.seed_id)
            .where(PlacementResult.run_id == run.id, PlacementResult.workspace_id == workspace_id)
            .order_by(PlacementResult.esp, SeedAccount.email)
        )
    )
    checks: dict[int, dict[int, str]] = {}
    for result_id, attempt, outcome in session.exec(
        select(PlacementCheck.result_id, PlacementCheck.attempt, PlacementCheck.outcome)
        .join(PlacementResult, PlacementResult.id == PlacementCheck.result_id)
        .where(PlacementResult.run_id == run.id, PlacementCheck.workspace_id == workspace_id)
    ):
        checks.setdefault(result_id, {})[attempt] = outcome
    seeds = [
        SeedOutcome(
            seed_email=email,
            esp=r.esp,
            placement=r.placement,
            folder=r.folder,
            seconds_to_land=r.seconds_to_land,
            spf=r.spf,
            dkim=r.dkim,
            dmarc=r.dmarc,
            error=r.error,
            checks=checks.get(r.id, {}),
        )
        for r, email in rows
    ]
    counts = PlacementCounts()
    for seed in seeds:
        counts.add(seed.placement, 1)
    offsets = list(run.check_offsets_min or [])
    attempts = max([len(offsets)] + [max(s.checks, default=0) for s in seeds])
    steps = [
        CheckStep(n, offsets[n - 1] if n <= len(offsets) else None, _after_check(seeds, n))
        for n in range(1, attempts + 1)
    ]
    return Drilldown(campaign_id, listed, run.id, seeds, steps, counts)


def _after_check(seeds: list[SeedOutcome], attempt: int) -> PlacementCounts:
    """Each seed's standing once check `attempt` had run: the placement it was found
    in by then; `missing` if the final result says so and no later check was
    needed; otherwise still pending."""
    counts = PlacementCounts()
    placed = {p.value for p in PLACED}
    for seed in seeds:
        found = [o for n, o in sorted(seed.checks.items()) if n <= attempt and o in placed]
        if found:
            counts.add(found[-1], 1)
        elif seed.placement in (Placement.MISSING, Placement.ERROR) and (
            max(seed.checks, default=0) <= attempt
        ):
            counts.add(seed.placement, 1)
        else:
            counts.pending += 1
    return counts
