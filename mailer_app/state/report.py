"""State of the report page (/campaigns/[cid]/report): counts, failures, placement,
downloads, and "Email the report".

While the page is open and the send still moves, a bounded background loop
(state/live.LivePage) reads the report again every few seconds
(services/reports.campaign_report). Every handler asks the database who is signed
in; the service checks the role again.
"""

from __future__ import annotations

import asyncio

import reflex as rx
from reflex.config import get_config

from mailer_app import routes
from mailer_app.db import session_scope
from mailer_app.models import Source
from mailer_app.services import ServiceError, auth, campaigns, reports, senders
from mailer_app.state.auth import AuthState
from mailer_app.state.campaigns import STATUS_COLORS
from mailer_app.state.live import LivePage
from mailer_app.state.sending import ACTIVE, rate_text

REFRESH_SECONDS = 3.0
MAX_REFRESHES = 4 * 3600 // 3  # four hours at most
PLACEMENTS = ("inbox", "spam", "promotions", "missing")


def _campaign_id_from(path: str) -> int:
    """The [cid] of /campaigns/[cid]/report."""
    parts = path.rstrip("/").split("/")
    return int(parts[-2]) if len(parts) >= 2 and parts[-2].isdigit() else 0


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _api(path: str) -> str:
    return get_config().api_url.rstrip("/") + path


def read_page(workspace_id: int, campaign_id: int) -> dict:
    """Everything the page shows, as plain values (in a worker thread)."""
    with session_scope() as session:
        r = reports.campaign_report(
            session=session, workspace_id=workspace_id, campaign_id=campaign_id
        )
        choices = senders.list_senders(session=session, workspace_id=workspace_id)
    p, c = r.progress, r.send_counts
    page = {
        "name": r.campaign_name,
        "status": r.status,
        "status_label": campaigns.STATUS_LABELS.get(r.status, r.status),
        "status_color": STATUS_COLORS.get(r.status, "gray"),
        "status_reason": r.status_reason or "",
        "queued_ever": p is not None,
        "percent": p.percent if p else 0.0,
        "sent": c["sent"], "failed": c["failed"], "unknown": c["unknown"],
        "remaining": c["queued"] + c["sending"], "total": c["total"],
        "rate": rate_text(p.rate_per_minute) if p and p.status in ACTIVE else "—",
        "failures": [{"reason": g.reason, "count": f"{g.count:,}"} for g in p.failures]
        if p else [],
        "failures_more": (f"…and {p.failure_reasons - len(p.failures):,} other reasons."
                          if p and p.failure_reasons > len(p.failures) else ""),
        "review_rows": [
            {"status": status, "count": f"{count:,}"}
            for status, count in r.review.by_status.items()
        ],
        "review_total": r.review.total,
        "placement_rows": [
            {"run": f"Run {run.run_id}", "kind": run.kind, "status": run.status,
             "esp": esp, "checked": f"{counts.total_checked:,}", "pending": f"{counts.pending:,}",
             **{p_: _rate(counts.rate(p_)) for p_ in PLACEMENTS}}
            for run in r.placement
            for esp, counts in [("all", run.summary.overall),
                                *sorted(run.summary.by_esp.items())]
        ],
        "sender_options": [s.name for s in choices],
        "_sender_ids": {s.name: s.id for s in choices},
        "ended": r.status not in ACTIVE and not (p and p.sending),
    }  # fmt: skip
    return page


class ReportPageState(LivePage, rx.State):
    """One campaign's report, refreshed live while its send moves."""

    campaign_id: int = 0
    loaded: bool = False
    missing: str = ""
    name: str = ""
    status: str = ""
    status_label: str = ""
    status_color: str = "gray"
    status_reason: str = ""
    queued_ever: bool = False
    percent: float = 0.0
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    remaining: int = 0
    total: int = 0
    rate: str = ""
    failures: list[dict[str, str]] = []
    failures_more: str = ""
    review_rows: list[dict[str, str]] = []
    review_total: int = 0
    placement_rows: list[dict[str, str]] = []
    sender_options: list[str] = []
    # The email form.
    email_to: str = ""
    email_sender: str = ""
    email_busy: bool = False
    email_notice: str = ""
    email_ok: bool = True
    can_email: bool = False
    _sender_ids: dict[str, int] = {}
    _ended: bool = False

    @rx.var
    def csv_href(self) -> str:
        return _api(routes.campaign_report_csv(self.campaign_id)) if self.campaign_id else ""

    @rx.var
    def json_href(self) -> str:
        return _api(routes.campaign_report_json(self.campaign_id)) if self.campaign_id else ""

    @rx.var
    def send_href(self) -> str:
        return routes.campaign_send(self.campaign_id) if self.campaign_id else routes.CAMPAIGNS

    @rx.var
    def bar_value(self) -> int:
        return int(self.percent)

    @rx.var
    def percent_text(self) -> str:
        return f"{self.percent:g}%"

    def _show(self, page: dict) -> None:
        self._ended = bool(page.pop("ended", False))
        for key, value in page.items():
            setattr(self, key, value)
        if self.email_sender not in self.sender_options:
            self.email_sender = ""

    @rx.event
    async def load(self):
        self.loaded, self.missing, self.email_notice = False, "", ""
        user = (await self.get_state(AuthState)).current_user()
        if user is None:
            return None
        self.campaign_id = _campaign_id_from(self.router.url.path)
        self.can_email = user.role == "owner" or user.role in {str(r) for r in reports.EMAIL_ROLES}
        try:
            page = await asyncio.to_thread(read_page, user.workspace_id, self.campaign_id)
        except ServiceError as exc:
            self.missing = str(exc)
            return None
        self._show(page)
        self.loaded = True
        return None if self._ended else ReportPageState.watch

    @rx.event(background=True)
    async def watch(self):
        """Read the report every few seconds while the page is open and the send moves."""
        await self._live_loop(every_s=REFRESH_SECONDS, max_rounds=MAX_REFRESHES)

    def _live_key(self) -> int | None:
        """The campaign the next round reads; None once its send has ended."""
        return None if self._ended or not self.campaign_id else self.campaign_id

    async def _live_read(self, user: auth.CurrentUser, campaign_id: int) -> dict:
        return await asyncio.to_thread(read_page, user.workspace_id, campaign_id)

    @rx.event
    def set_email_to(self, value: str):
        self.email_to = value

    @rx.event
    def set_email_sender(self, value: str):
        self.email_sender = value

    @rx.event
    async def send_email(self):
        self.email_notice = ""
        try:
            user = auth.require_role(
                (await self.get_state(AuthState)).current_user(), *reports.EMAIL_ROLES
            )
        except auth.PermissionDenied as exc:
            self.email_notice, self.email_ok = str(exc), False
            return
        self.email_busy = True
        yield
        sender_id = self._sender_ids.get(self.email_sender)
        try:
            done = await asyncio.to_thread(_email, user, self.campaign_id, self.email_to, sender_id)
        except ServiceError as exc:
            self.email_notice, self.email_ok = str(exc), False
        else:
            self.email_notice, self.email_ok = done.detail, True
            self.email_to = ""
        finally:
            self.email_busy = False


def _email(user: auth.CurrentUser, campaign_id: int, to: str, sender_id: int | None):
    with session_scope() as session:
        return reports.email_report(
            session=session, workspace_id=user.workspace_id, campaign_id=campaign_id, to=to,
            user_id=user.user_id, sender_id=sender_id, source=Source.UI,
        )  # fmt: skip
