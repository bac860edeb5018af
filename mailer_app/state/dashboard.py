"""The placement dashboard's state: filters, the numbers shown, and the live refresh.

Every number comes from services/dashboard.py (which counts with the PRODUCT.md
formulas); this module only turns them into text, rows and figures. While the page
is open it polls a cheap marker every second (state/live.LivePage) and reloads the
numbers only when it moved.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, date, datetime, timedelta

import plotly.graph_objects as go
import reflex as rx

from mailer_app.components.dashboard_widgets import esp_bar_figure, inbox_series_figure
from mailer_app.db import session_scope
from mailer_app.services import ServiceError, auth
from mailer_app.services import dashboard as dash
from mailer_app.services.placement_results import PlacementCounts
from mailer_app.state.auth import AuthState
from mailer_app.state.live import LivePage

log = logging.getLogger(__name__)

ALL_CAMPAIGNS = "all"
REFRESH_SECONDS = 1.0
MAX_REFRESHES = 4 * 3600  # a tab left open stops refreshing after about four hours
MAX_DAYS = 366
RATES = (("inbox", "Inbox"), ("spam", "Spam"), ("promotions", "Promotions"), ("missing", "Missing"))
BADGE_COLOURS = {
    "pending": "gray",
    "inbox": "green",
    "promotions": "blue",
    "spam": "orange",
    "missing": "red",
    "error": "red",
}


def _percent(rate: float | None) -> str:
    return "–" if rate is None else f"{100 * rate:.1f}%"


def _period(start: str, end: str) -> dash.Period:
    """The days from `start` to `end` (both included, UTC) as a half-open period."""
    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError:
        raise ServiceError("Choose a start and an end date.") from None
    if first > last:
        raise ServiceError("The start date must be on or before the end date.")
    if (last - first).days >= MAX_DAYS:
        raise ServiceError("Choose at most one year at a time.")
    begin = datetime(first.year, first.month, first.day, tzinfo=UTC)
    return dash.Period(begin, datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(1))


def _cards(summary: dash.DashboardSummary) -> list[dict[str, str]]:
    cards = []
    for key, label in RATES:
        change = summary.change(key)
        if change is None:
            text, colour = "nothing to compare with before", "gray"
        else:
            text = f"{100 * change:+.1f} points against the period before"
            good = change >= 0 if key == "inbox" else change <= 0
            colour = "gray" if abs(change) < 0.0005 else ("green" if good else "red")
        cards.append(
            {
                "key": key,
                "label": f"{label} rate",
                "value": _percent(summary.current.rate(key)),
                "change": text,
                "colour": colour,
            }
        )
    checked = summary.checked_change
    cards.append(
        {
            "key": "checked",
            "label": "Seed copies checked",
            "value": str(summary.current.total_checked),
            "change": f"{checked:+d} against the period before",
            "colour": "gray",
        }
    )
    return cards


def _counts_dict(counts: PlacementCounts) -> dict[str, int]:
    return {k: v for k, v in counts.as_dict().items() if isinstance(v, int)}


def _auth(spf, dkim, dmarc) -> str:
    return " / ".join(value or "–" for value in (spf, dkim, dmarc))


def _drilldown(session, workspace_id: int, campaign_id: int, run_id: int | None) -> dict:
    d = dash.campaign_drilldown(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id, run_id=run_id
    )
    steps = []
    for step in d.steps:
        when = f" (+{step.offset_min:g} min)" if step.offset_min is not None else ""
        row = {"label": f"{step.attempt}{when}"}
        row.update({k: str(v) for k, v in _counts_dict(step.counts).items()})
        steps.append(row)
    rows = [
        {
            "email": s.seed_email,
            "esp": s.esp,
            "placement": s.placement,
            "colour": BADGE_COLOURS.get(s.placement, "gray"),
            "folder": s.folder or "",
            "landed": f"{s.seconds_to_land:.0f} s" if s.seconds_to_land is not None else "",
            "auth": _auth(s.spf, s.dkim, s.dmarc),
            "checks": ", ".join(
                f"{n}: {o.replace('not_found', 'not found')}" for n, o in sorted(s.checks.items())
            )
            or (s.error or ""),
        }
        for s in d.seeds
    ]
    runs = [
        {"id": str(rid), "label": f"Run {rid} · {created:%Y-%m-%d %H:%M} UTC · {status}"}
        for rid, created, status in d.runs
    ]
    return {"runs": runs, "run_id": str(d.run_id or ""), "rows": rows, "steps": steps}


def snapshot(
    workspace_id: int, start: str, end: str, campaign: str, run_id: str
) -> dict:  # runs in a worker thread
    """Everything the page shows for these filters, as plain values and figures."""
    period = _period(start, end)
    campaign_id = None if campaign in ("", ALL_CAMPAIGNS) else int(campaign)
    with session_scope() as session:
        marker = dash.latest_change(session=session, workspace_id=workspace_id)
        choices = dash.campaigns_with_results(session=session, workspace_id=workspace_id)
        summary = dash.period_summary(
            session=session, workspace_id=workspace_id, period=period, campaign_id=campaign_id
        )
        series = dash.inbox_rate_series(
            session=session, workspace_id=workspace_id, period=period, campaign_id=campaign_id
        )
        drill = (
            _drilldown(session, workspace_id, campaign_id, int(run_id) if run_id else None)
            if campaign_id is not None
            else None
        )
    fmt = "%m-%d %H:00" if series.bucket == dash.HOUR else "%Y-%m-%d"
    labels = [b.strftime(fmt) for b in series.buckets]
    current = summary.current
    return {
        "marker": repr(marker),
        "choices": [{"id": str(cid), "label": name} for cid, name in choices],
        "cards": _cards(summary),
        "pending": current.pending,
        "errors": current.error,
        "has_results": current.total_checked + current.pending + current.error > 0,
        "esp_fig": esp_bar_figure({e: _counts_dict(c) for e, c in summary.by_esp.items()}),
        "series_fig": inbox_series_figure(
            labels, {e: series.inbox_rates(e) for e in series.counts}
        ),
        "bucket": "hour" if series.bucket == dash.HOUR else "day",
        "drill": drill,
    }


def _marker(workspace_id: int) -> str:
    with session_scope() as session:
        return repr(dash.latest_change(session=session, workspace_id=workspace_id))


class DashboardState(LivePage, rx.State):
    start_date: str = ""
    end_date: str = ""
    campaign: str = ALL_CAMPAIGNS
    campaign_choices: list[dict[str, str]] = []
    run_id: str = ""

    loading: bool = True
    error: str = ""
    has_results: bool = False
    cards: list[dict[str, str]] = []
    pending: int = 0
    errors: int = 0
    bucket: str = "day"
    esp_fig: go.Figure = go.Figure()
    series_fig: go.Figure = go.Figure()
    runs: list[dict[str, str]] = []
    seed_rows: list[dict[str, str]] = []
    steps: list[dict[str, str]] = []
    updated: int = 0  # counts refreshes (the browser test watches it)
    _marker: str = ""

    async def _workspace_id(self) -> int | None:
        user = (await self.get_state(AuthState)).current_user()
        return user.workspace_id if user else None

    def _show(self, data: dict) -> None:
        self._marker = data["marker"]
        self.campaign_choices = data["choices"]
        self.cards, self.pending, self.errors = data["cards"], data["pending"], data["errors"]
        self.has_results, self.bucket = data["has_results"], data["bucket"]
        self.esp_fig, self.series_fig = data["esp_fig"], data["series_fig"]
        drill = data["drill"] or {"runs": [], "run_id": "", "rows": [], "steps": []}
        self.runs, self.run_id = drill["runs"], drill["run_id"]
        self.seed_rows, self.steps = drill["rows"], drill["steps"]
        self.updated += 1

    async def _reload(self, workspace_id: int) -> None:
        self.loading = True
        try:
            data = await asyncio.to_thread(
                snapshot, workspace_id, self.start_date, self.end_date, self.campaign, self.run_id
            )
        except ServiceError as exc:
            self.error = str(exc)
        except Exception:
            log.exception("dashboard: loading failed")
            self.error = "The numbers could not be loaded just now. Try again in a moment."
        else:
            self.error = ""
            self._show(data)
        self.loading = False

    @rx.event
    async def load(self):
        workspace_id = await self._workspace_id()
        if workspace_id is None:
            return None
        if not self.start_date or not self.end_date:
            today = datetime.now(UTC).date()
            self.start_date, self.end_date = str(today - timedelta(days=6)), str(today)
        await self._reload(workspace_id)
        return DashboardState.watch

    async def _filter_changed(self):
        workspace_id = await self._workspace_id()
        if workspace_id is not None:
            await self._reload(workspace_id)

    @rx.event
    async def set_start_date(self, value: str):
        self.start_date = value
        self.loading = True
        yield
        await self._filter_changed()

    @rx.event
    async def set_end_date(self, value: str):
        self.end_date = value
        self.loading = True
        yield
        await self._filter_changed()

    @rx.event
    async def set_campaign(self, value: str):
        self.campaign, self.run_id = value, ""
        self.loading = True
        yield
        await self._filter_changed()

    @rx.event
    async def set_run(self, value: str):
        self.run_id = value
        self.loading = True
        yield
        await self._filter_changed()

    @rx.event
    async def retry(self):
        self.loading = True
        yield
        await self._filter_changed()

    @rx.event(background=True)
    async def watch(self):
        """Poll the change marker every second while the page is open."""
        await self._live_loop(every_s=REFRESH_SECONDS, max_rounds=MAX_REFRESHES)

    def _live_key(self) -> tuple[str, ...]:
        """What the numbers shown were read with: their marker, and the filters."""
        filters = (self.start_date, self.end_date, self.campaign, self.run_id)
        return (self._marker, self.error, *filters)

    async def _live_read(self, user: auth.CurrentUser, key: tuple[str, ...]) -> dict | None:
        """The numbers again if the marker moved; None when nothing changed (or after
        an error the person has to see first)."""
        marker, error, *filters = key
        try:
            if error or await asyncio.to_thread(_marker, user.workspace_id) == marker:
                return None
            return await asyncio.to_thread(snapshot, user.workspace_id, *filters)
        except Exception:
            log.exception("dashboard: refreshing failed")
            return None

    def _live_show(self, key: tuple[str, ...], data: dict | None) -> None:
        if data is not None:
            self._show(data)
