"""State of the send page (/campaigns/[cid]/send): live progress, pause, resume, cancel.

While the page is open a bounded background loop (state/live.LivePage) reads the
progress every second (services/send_control.send_progress) and shows it without a
reload; it stops when the tab goes away, when the page is left, or once the send has
ended and nothing is in flight.

Every handler asks the database who is signed in and checks the role (the service
checks it again): hiding a button is not authorization. This module only calls the
service and words its answers.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import reflex as rx

from mailer_app import routes
from mailer_app.db import session_scope
from mailer_app.models import Role, Source
from mailer_app.services import ServiceError, auth, campaigns, send_control
from mailer_app.state.auth import AuthState
from mailer_app.state.campaigns import STATUS_COLORS
from mailer_app.state.live import LivePage

REFRESH_SECONDS = 1.0
MAX_REFRESHES = 12 * 3600  # twelve hours at most, then the page shows the last numbers
CONTROL_ROLES = send_control.CONTROL_ROLES
ACTIVE = tuple(str(s) for s in send_control.ACTIVE)  # statuses in which messages go out
UNKNOWN_EXPLANATION = (
    "We could not tell whether these were delivered: the message went out, but the mail "
    "server's answer never came back (the connection ended, or a worker stopped). They "
    "will not be sent again automatically; check with these recipients if it matters."
)


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def duration_text(seconds: int | None) -> str:
    """'about 3 minutes', 'about 1 hour 20 minutes', 'less than a minute'."""
    if seconds is None:
        return ""
    if seconds < 60:
        return "less than a minute"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {_plural(minutes, 'minute')}"
    hours, minutes = divmod(minutes, 60)
    text = f"about {_plural(hours, 'hour')}"
    return text + (f" {_plural(minutes, 'minute')}" if minutes else "")


def rate_text(rate: float) -> str:
    if rate <= 0:
        return "none in the last minute"
    shown = f"{rate:,.0f}" if rate >= 10 else f"{rate:,.1f}".rstrip("0").rstrip(".")
    return f"{shown} a minute"


def eta_text(progress: send_control.SendProgress) -> str:
    """When the send should end, in plain words (why there is no estimate otherwise)."""
    status = progress.status
    if status == "completed":
        return "finished"
    if status == "cancelled":
        return "cancelled"
    if status == "paused":
        return "paused: no estimate"
    if not progress.remaining:
        return "finishing"
    if progress.eta_seconds is None:
        return "waiting for the first messages" if not progress.done else "estimating…"
    return duration_text(progress.eta_seconds)


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def summary_text(p: send_control.SendProgress) -> str:
    """One sentence: where the send stands."""
    done = f"{p.done:,} of {_plural(p.total, 'message')} handled ({p.percent:g}%)"
    if p.status == "cancelled":
        return f"{done}. Cancelled: {_plural(p.not_sent, 'message')} not sent."
    if p.status == "completed":
        return f"{done}. The send is complete."
    if p.status == "paused":
        return f"{done}. Paused: nothing more goes out until it is resumed."
    if p.status == "queued" and not p.done:
        return f"{done}. Waiting for a worker to start sending…"
    return f"{done}."


def has_role(user: auth.CurrentUser | None) -> bool:
    return user is not None and (
        user.role == Role.OWNER or user.role in {str(r) for r in CONTROL_ROLES}
    )


def _campaign_id_from(path: str) -> int:
    """The [cid] of /campaigns/[cid]/send."""
    parts = path.rstrip("/").split("/")
    return int(parts[-2]) if len(parts) >= 2 and parts[-2].isdigit() else 0


def read_page(workspace_id: int, campaign_id: int) -> dict:
    """Everything the page shows, as plain values (in a worker thread)."""
    with session_scope() as session:
        campaign = campaigns.get_campaign(
            session=session, workspace_id=workspace_id, campaign_id=campaign_id
        )
        name, status, reason = campaign.name, str(campaign.status), campaign.status_reason
        p = send_control.send_progress(
            session=session, workspace_id=workspace_id, campaign_id=campaign_id
        )
    page = {
        "name": name or "(untitled)",
        "status": status,
        "status_label": campaigns.STATUS_LABELS.get(status, status),
        "status_color": STATUS_COLORS.get(status, "gray"),
        "status_reason": reason or "",
        "queued_ever": p is not None,
    }
    if p is None:
        return page
    more = p.failure_reasons - len(p.failures)
    page.update(
        run_id=p.run_id,
        percent=p.percent,
        sent=p.sent,
        failed=p.failed,
        unknown=p.unknown,
        remaining=p.remaining,
        not_sent=p.not_sent,
        total=p.total,
        in_flight=p.sending,
        rate=rate_text(p.rate_per_minute) if p.status in ACTIVE else "—",
        eta=eta_text(p),
        summary=summary_text(p),
        seeds=(f"{p.seeds_sent:,} of {p.seeds_total:,} seed mailboxes sent" if p.seeds_total
               else ""),
        started=_time(p.started_at),
        finished=_time(p.finished_at),
        can_pause=p.can_pause,
        can_resume=p.can_resume,
        can_cancel=p.can_cancel,
        failures=[{"reason": g.reason, "count": f"{g.count:,}"} for g in p.failures],
        failures_more=(f"…and {_plural(more, 'other reason')}." if more > 0 else ""),
        unknown_rows=[
            {"id": str(u.id), "email": u.email, "error": u.last_error or "",
             "submitted": _time(u.submitted_at) or "—"}
            for u in p.unknown_records
        ],
        unknown_more=(
            f"Showing the first {len(p.unknown_records):,} of {p.unknown:,}."
            if p.unknown > len(p.unknown_records) else ""
        ),
        ended=p.status in ("completed", "cancelled", "archived") and not p.sending,
    )  # fmt: skip
    return page


CONTROLS = {
    "pause": send_control.pause_send, "resume": send_control.resume_send,
    "cancel": send_control.cancel_send, "resend": send_control.resend_unknown,
}  # fmt: skip


def _control(user: auth.CurrentUser, campaign_id: int, what: str) -> None:
    with session_scope() as session:
        CONTROLS[what](
            session=session, workspace_id=user.workspace_id, campaign_id=campaign_id,
            user_id=user.user_id, source=Source.UI,
        )  # fmt: skip


DONE_WORDS = {
    "pause": "Paused. Messages already handed to a worker finish; nothing more goes out.",
    "resume": "Resumed. Only messages not sent yet will go out.",
    "cancel": "Cancelled. The messages not sent yet will never be sent.",
    "resend": "The messages of unknown outcome are queued again.",
}


class SendPageState(LivePage, rx.State):
    """One campaign's send: its numbers, refreshed live, and its controls."""

    campaign_id: int = 0
    resend_open: bool = False
    loaded: bool = False
    missing: str = ""
    name: str = ""
    status: str = ""
    status_label: str = ""
    status_color: str = "gray"
    status_reason: str = ""
    queued_ever: bool = False
    run_id: int = 0
    percent: float = 0.0
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    remaining: int = 0
    not_sent: int = 0
    total: int = 0
    in_flight: int = 0
    rate: str = ""
    eta: str = ""
    summary: str = ""
    seeds: str = ""
    started: str = ""
    finished: str = ""
    failures: list[dict[str, str]] = []
    failures_more: str = ""
    unknown_rows: list[dict[str, str]] = []
    unknown_more: str = ""
    # What the status allows now, and whether this person may do it.
    can_control: bool = False
    can_pause: bool = False
    can_resume: bool = False
    can_cancel: bool = False
    busy: bool = False
    notice: str = ""
    notice_ok: bool = True
    cancel_open: bool = False
    _ended: bool = False

    @rx.var
    def review_href(self) -> str:
        return routes.campaign_review(self.campaign_id) if self.campaign_id else routes.CAMPAIGNS

    @rx.var
    def bar_value(self) -> int:
        """The progress bar's fill (whole percents)."""
        return int(self.percent)

    @rx.var
    def percent_text(self) -> str:
        return f"{self.percent:g}%"

    def _show(self, page: dict) -> None:
        ended = bool(page.pop("ended", False))
        for name in ("can_pause", "can_resume", "can_cancel"):
            page[name] = bool(page.get(name)) and self.can_control
        for key, value in page.items():
            setattr(self, key, value)
        self._ended = ended
        if not self.can_cancel:
            self.cancel_open = False

    @rx.event
    async def load(self):
        self.loaded, self.missing, self.notice, self.cancel_open = False, "", "", False
        user = (await self.get_state(AuthState)).current_user()
        if user is None:
            return None
        campaign_id = _campaign_id_from(self.router.url.path)
        if campaign_id != self.campaign_id:
            self.queued_ever, self.run_id, self.failures, self.unknown_rows = False, 0, [], []
        self.campaign_id = campaign_id
        self.can_control = has_role(user)
        try:
            page = await asyncio.to_thread(read_page, user.workspace_id, campaign_id)
        except ServiceError as exc:
            self.missing = str(exc)
            return None
        self._show(page)
        self.loaded = True
        return None if self._ended else SendPageState.watch

    @rx.event(background=True)
    async def watch(self):
        """Read the progress every second while the page is open and the send not over."""
        await self._live_loop(every_s=REFRESH_SECONDS, max_rounds=MAX_REFRESHES)

    def _live_key(self) -> int | None:
        """The campaign the next round reads; None once the send is over."""
        return None if self._ended or not self.campaign_id else self.campaign_id

    async def _live_read(self, user: auth.CurrentUser, campaign_id: int) -> dict:
        return await asyncio.to_thread(read_page, user.workspace_id, campaign_id)

    async def _do(self, what: str):
        self.notice = ""
        try:
            user = auth.require_role(
                (await self.get_state(AuthState)).current_user(), *CONTROL_ROLES
            )
        except auth.PermissionDenied as exc:
            self.notice, self.notice_ok = str(exc), False
            return
        self.busy = True
        yield
        try:
            await asyncio.to_thread(_control, user, self.campaign_id, what)
        except ServiceError as exc:
            self.notice, self.notice_ok = str(exc), False
        else:
            self.notice, self.notice_ok = DONE_WORDS[what], True
        finally:
            self.busy = False
            self.cancel_open = False
        try:
            self._show(await asyncio.to_thread(read_page, user.workspace_id, self.campaign_id))
        except ServiceError as exc:
            self.missing = str(exc)
            return
        if not self._ended:
            yield SendPageState.watch

    @rx.event
    async def pause(self):
        async for update in self._do("pause"):
            yield update

    @rx.event
    async def resume(self):
        async for update in self._do("resume"):
            yield update

    @rx.event
    def open_cancel(self):
        self.cancel_open = self.can_cancel

    @rx.event
    def set_cancel_open(self, is_open: bool):
        self.cancel_open = bool(is_open) and self.can_cancel

    @rx.event
    async def confirm_cancel(self):
        async for update in self._do("cancel"):
            yield update

    @rx.event
    def set_resend_open(self, is_open: bool):
        self.resend_open = bool(is_open) and self.can_control

    @rx.event
    async def confirm_resend(self):
        self.resend_open = False
        async for update in self._do("resend"):
            yield update
