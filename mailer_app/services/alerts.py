"""Alert events: raised once per condition, listed until acknowledged.

Placement rules (thresholds per workspace): inbox rate below
`alert_min_inbox_rate`, or missing rate above `alert_max_missing_rate`, for a run
overall and for each canonical ESP in it. Each condition has a dedupe key, so
checking again (every new result, two workers at once) never duplicates an event.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from mailer_app.models import AlertEvent, AlertKind, PlacementRun, Source, Workspace
from mailer_app.services.placement_results import PlacementCounts, summarize_placement

ALL_ESPS = "all"


def raise_alert(
    *,
    session: Session,
    workspace_id: int,
    kind: str,
    message: str,
    dedupe_key: str,
    source: str = Source.JOB,
    campaign_id: int | None = None,
    seed_id: int | None = None,
    esp: str | None = None,
    value: float | None = None,
    threshold: float | None = None,
) -> AlertEvent | None:
    """Record an alert unless one with the same dedupe key exists; the new one or None."""
    existing = session.exec(
        select(AlertEvent.id).where(
            AlertEvent.workspace_id == workspace_id, AlertEvent.dedupe_key == dedupe_key
        )
    ).first()
    if existing is not None:
        return None
    event = AlertEvent(
        workspace_id=workspace_id,
        kind=kind,
        message=message,
        dedupe_key=dedupe_key,
        source=source,
        campaign_id=campaign_id,
        seed_id=seed_id,
        esp=esp,
        value=value,
        threshold=threshold,
    )
    # A savepoint: losing a race to another worker must not undo the caller's work.
    try:
        with session.begin_nested():
            session.add(event)
    except IntegrityError:
        return None
    return event


def _percent(rate: float) -> str:
    return f"{rate * 100:.0f}%"


def evaluate_placement_alerts(
    *, session: Session, workspace_id: int, run_id: int, min_checked: int = 1
) -> list[AlertEvent]:
    """Raise the low-inbox and high-missing alerts a run's results call for."""
    workspace = session.get(Workspace, workspace_id)
    run = session.get(PlacementRun, run_id)
    if workspace is None or run is None or run.workspace_id != workspace_id:
        return []
    summary = summarize_placement(session=session, workspace_id=workspace_id, run_id=run_id)
    scopes: list[tuple[str, PlacementCounts]] = [(ALL_ESPS, summary.overall)]
    scopes += sorted(summary.by_esp.items())
    what = f"campaign {run.campaign_id}" if run.campaign_id else "pre-flight test"
    raised = []
    for esp, counts in scopes:
        if counts.total_checked < min_checked:
            continue
        where = "overall" if esp == ALL_ESPS else f"at {esp}"
        inbox_rate, missing_rate = counts.rate("inbox"), counts.rate("missing")
        rules = [
            (
                AlertKind.LOW_INBOX_RATE,
                inbox_rate,
                workspace.alert_min_inbox_rate,
                inbox_rate is not None and inbox_rate < workspace.alert_min_inbox_rate,
                "Inbox rate {where} is {value}, below the {threshold} threshold "
                "({what}, run {run}).",
            ),
            (
                AlertKind.HIGH_MISSING_RATE,
                missing_rate,
                workspace.alert_max_missing_rate,
                missing_rate is not None and missing_rate > workspace.alert_max_missing_rate,
                "Missing rate {where} is {value}, above the {threshold} threshold "
                "({what}, run {run}).",
            ),
        ]
        for kind, value, threshold, crossed, template in rules:
            if not crossed:
                continue
            event = raise_alert(
                session=session,
                workspace_id=workspace_id,
                kind=kind,
                message=template.format(
                    where=where,
                    value=_percent(value),
                    threshold=_percent(threshold),
                    what=what,
                    run=run_id,
                ),
                dedupe_key=f"{kind}:run-{run_id}:{esp}",
                campaign_id=run.campaign_id,
                esp=None if esp == ALL_ESPS else esp,
                value=value,
                threshold=threshold,
            )
            if event is not None:
                raised.append(event)
    return raised


def list_alerts(
    *, session: Session, workspace_id: int, status: str | None = None
) -> list[AlertEvent]:
    query = select(AlertEvent).where(AlertEvent.workspace_id == workspace_id)
    if status:
        query = query.where(AlertEvent.status == status)
    return list(session.exec(query.order_by(AlertEvent.created_at.desc(), AlertEvent.id.desc())))
