"""Placement counts per hour, kept beside the results so a dashboard need not scan them.

A rollup row holds, for one workspace, one UTC hour of the seed copies' send time, one
campaign (None for pre-flight runs), ESP and placement, how many results there are.
Database triggers on `placement_result` (migration 0008) mark an hour dirty whenever
a result in it is added, changed or deleted, whoever writes it; `fold` (run by the
maintenance tick) rebuilds dirty hours from the results.

Readers never trust a dirty hour: `count_placements` counts dirty hours, and the
partial hours at a period's edges, from the results themselves, and only the clean
whole hours from the rollup. So the answer is exact whether or not the fold has run;
the fold only makes it fast.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from mailer_app.models import (
    PlacementResult,
    PlacementRollup,
    PlacementRollupDirty,
    PlacementRun,
)

HOUR = timedelta(hours=1)
HOURLY, DAILY = "hour", "day"
# A period with more stale hours than this is counted from the results directly:
# a long list of hour ranges costs more than it saves.
MAX_DIRTY_HOURS = 48
FOLD_BATCH = 5000
# PostgreSQL: one fold at a time (two would both rebuild an hour and count it twice).
_FOLD_LOCK = 0x70_6C_72_6F  # "plro"

# (slot, esp, placement, count); slot is the bucket's text, or None without buckets.
CountRow = tuple[str | None, str, str, int]


def hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hour_ceil(moment: datetime) -> datetime:
    floor = hour_floor(moment)
    return floor if floor == moment else floor + HOUR


def slot_expr(session: Session, column, bucket: str):
    """SQL for the UTC hour or day of a time column, as text ("YYYY-MM-DD[ HH]")."""
    if session.get_bind().dialect.name == "postgresql":
        fmt = "YYYY-MM-DD HH24" if bucket == HOURLY else "YYYY-MM-DD"
        return sa.func.to_char(sa.func.timezone("UTC", column), fmt)
    # SQLite keeps UTC times as "YYYY-MM-DD HH:MM:SS.ffffff".
    return sa.func.substr(column, 1, 13 if bucket == HOURLY else 10)


def count_placements(
    *,
    session: Session,
    workspace_id: int,
    sent_from: datetime,
    sent_to: datetime,
    campaign_id: int | None = None,
    bucket: str | None = None,
) -> list[CountRow]:
    """Results of one workspace sent in [sent_from, sent_to), counted by ESP and
    placement (and by hour or day when `bucket` is given). One key may appear twice
    (once from the rollup, once from the results): callers add the counts up."""
    whole_from, whole_to = hour_ceil(sent_from), hour_floor(sent_to)
    if whole_from >= whole_to:
        return _count_results(session, workspace_id, [(sent_from, sent_to)], campaign_id, bucket)
    dirty = list(
        session.exec(
            select(PlacementRollupDirty.hour)
            .where(
                PlacementRollupDirty.workspace_id == workspace_id,
                PlacementRollupDirty.hour >= whole_from,
                PlacementRollupDirty.hour < whole_to,
            )
            .distinct()
            .limit(MAX_DIRTY_HOURS + 1)
        )
    )
    if len(dirty) > MAX_DIRTY_HOURS:
        return _count_results(session, workspace_id, [(sent_from, sent_to)], campaign_id, bucket)
    ranges = [(sent_from, whole_from), (whole_to, sent_to)]
    ranges += [(hour, hour + HOUR) for hour in dirty]
    rows = _count_rollup(session, workspace_id, whole_from, whole_to, dirty, campaign_id, bucket)
    return rows + _count_results(session, workspace_id, _merged(ranges), campaign_id, bucket)


def _merged(ranges: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Non-empty ranges, sorted, with touching ones joined."""
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(r for r in ranges if r[0] < r[1]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _count_rollup(session, workspace_id, whole_from, whole_to, dirty, campaign_id, bucket):
    columns = [PlacementRollup.esp, PlacementRollup.placement]
    if bucket:
        columns.insert(0, slot_expr(session, PlacementRollup.hour, bucket))
    query = (
        select(*columns, sa.func.sum(PlacementRollup.count))
        .where(
            PlacementRollup.workspace_id == workspace_id,
            PlacementRollup.hour >= whole_from,
            PlacementRollup.hour < whole_to,
        )
        .group_by(*columns)
    )
    if dirty:
        query = query.where(PlacementRollup.hour.not_in(dirty))
    if campaign_id is not None:
        query = query.where(PlacementRollup.campaign_id == campaign_id)
    return [_row(row, bucket) for row in session.exec(query)]


def _count_results(session, workspace_id, ranges, campaign_id, bucket) -> list[CountRow]:
    """One query per range: an OR of ranges would make SQLite read the whole
    workspace's part of the index instead of each range."""
    columns = [PlacementResult.esp, PlacementResult.placement]
    if bucket:
        columns.insert(0, slot_expr(session, PlacementResult.sent_at, bucket))
    rows: list[CountRow] = []
    for start, end in ranges:
        query = (
            select(*columns, sa.func.count())
            .where(
                PlacementResult.workspace_id == workspace_id,
                PlacementResult.sent_at >= start,
                PlacementResult.sent_at < end,
            )
            .group_by(*columns)
        )
        if campaign_id is not None:
            query = query.join(PlacementRun, PlacementRun.id == PlacementResult.run_id).where(
                PlacementRun.campaign_id == campaign_id,
                PlacementRun.workspace_id == workspace_id,
            )
        rows += [_row(row, bucket) for row in session.exec(query)]
    return rows


def _row(row, bucket) -> CountRow:
    if bucket:
        slot, esp, placement, count = row
        return slot, esp, placement, int(count)
    esp, placement, count = row
    return None, esp, placement, int(count)


# --- folding ------------------------------------------------------------------------


def fold(*, session: Session, limit: int = FOLD_BATCH) -> int:
    """Rebuild the hours marked dirty by up to `limit` marks, and drop those marks.
    Returns how many marks were folded (0: nothing was dirty). The caller commits.

    Marks written while this runs are kept (only the marks read here are deleted), so
    a change that lands during the rebuild leaves its hour dirty for the next fold.
    """
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        if not conn.connection.dbapi_connection.in_transaction:
            # Write lock first: the marks read and the hours rebuilt then see the same
            # results (a deferred transaction could also fail to upgrade its lock).
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_FOLD_LOCK)))
    marks = list(
        session.exec(
            select(
                PlacementRollupDirty.id,
                PlacementRollupDirty.workspace_id,
                PlacementRollupDirty.hour,
            )
            .order_by(PlacementRollupDirty.id)
            .limit(limit)
        )
    )
    for workspace_id, hour in sorted({(ws, hour) for _, ws, hour in marks}):
        _rebuild_hour(session, workspace_id, hour)
    ids = [mark_id for mark_id, _, _ in marks]
    for start in range(0, len(ids), 1000):
        session.exec(
            sa.delete(PlacementRollupDirty).where(
                PlacementRollupDirty.id.in_(ids[start : start + 1000])
            )
        )
    return len(marks)


def _rebuild_hour(session: Session, workspace_id: int, hour: datetime) -> None:
    session.exec(
        sa.delete(PlacementRollup).where(
            PlacementRollup.workspace_id == workspace_id, PlacementRollup.hour == hour
        )
    )
    hour_type = PlacementRollup.__table__.c.hour.type
    counted = (
        select(
            PlacementResult.workspace_id,
            sa.literal(hour, hour_type),
            PlacementRun.campaign_id,
            PlacementResult.esp,
            PlacementResult.placement,
            sa.func.count(),
        )
        .join(PlacementRun, PlacementRun.id == PlacementResult.run_id)
        .where(
            PlacementResult.workspace_id == workspace_id,
            PlacementResult.sent_at >= hour,
            PlacementResult.sent_at < hour + HOUR,
        )
        .group_by(
            PlacementResult.workspace_id,
            PlacementRun.campaign_id,
            PlacementResult.esp,
            PlacementResult.placement,
        )
    )
    session.exec(
        sa.insert(PlacementRollup).from_select(
            ["workspace_id", "hour", "campaign_id", "esp", "placement", "count"], counted
        )
    )


def fold_all(*, session_factory, max_rounds: int = 200, limit: int = FOLD_BATCH) -> int:
    """Fold until nothing is dirty (at most `max_rounds` transactions). Returns the
    number of marks folded."""
    total = 0
    for _ in range(max_rounds):
        with session_factory() as session:
            folded = fold(session=session, limit=limit)
        total += folded
        if folded < limit:
            break
    return total
