"""State of the job monitor (/jobs): queues, workers, scheduled checks, failed jobs
with Retry, and the send records of unknown outcome needing a decision.

Owners and admins only (Redis holds every workspace's jobs). While the page is open
a bounded background loop (state/live.LivePage) reads everything again every few
seconds. Redis being down is shown in words, never raised.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import reflex as rx

from jobs.connection import get_redis
from mailer_app import routes
from mailer_app.db import session_scope
from mailer_app.logs import redact
from mailer_app.services import ServiceError, auth, job_monitor
from mailer_app.state.auth import AuthState
from mailer_app.state.live import LivePage

REFRESH_SECONDS = 3.0
MAX_REFRESHES = 8 * 3600 // 3
NOT_ALLOWED = "Only an owner or an admin may watch the background jobs."


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def _in(value: datetime, now: datetime) -> str:
    seconds = int((value - now).total_seconds())
    if seconds <= 0:
        return "due now"
    return f"in {seconds} s" if seconds < 120 else f"in {seconds // 60} min"


def _age(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.0f} s ago"


def read_redis() -> dict:
    """What Redis says (in a worker thread); `redis_error` in words when it is down."""
    try:
        o = job_monitor.overview(get_redis())
    except Exception as exc:  # Redis down: the page says so and keeps trying
        return {
            "redis_error": "Cannot read the job queues from Redis: "
            + redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        }
    now = datetime.now(UTC)
    return {
        "redis_error": "",
        "queues": [{"name": q.name, "queued": str(q.queued), "started": str(q.started),
                    "failed": str(q.failed), "scheduled": str(q.scheduled),
                    "deferred": str(q.deferred)} for q in o.queues],
        "workers": [{"name": w.name, "state": w.state, "queues": ", ".join(w.queues),
                     "alive": "1" if w.alive else "", "beat": _age(w.heartbeat_age),
                     "job": w.current_job or "—", "done": f"{w.successful_jobs} ok, "
                     f"{w.failed_jobs} failed"} for w in o.workers],
        "schedulers": (f"{o.schedulers_alive} scheduler running" if o.schedulers_alive == 1
                       else f"{o.schedulers_alive} schedulers running"),
        "scheduled": [{"id": s.job_id, "when": _when(s.due_at), "in": _in(s.due_at, now),
                       "run": f"placement run {s.run_id}" if s.run_id else "—",
                       "check": str(s.check_number or "—"), "what": s.description}
                      for s in o.scheduled],
        "failed": [{"id": f.job_id, "queue": f.queue, "what": f.description,
                    "when": _when(f.failed_at), "summary": f.summary, "error": f.error}
                   for f in o.failed],
    }  # fmt: skip


def read_unknown(workspace_id: int) -> list[dict[str, str]]:
    with session_scope() as session:
        groups = job_monitor.unknown_records(session=session, workspace_id=workspace_id)
    return [
        {"campaign": g.campaign_name, "count": f"{g.count:,}", "emails": ", ".join(g.emails)
         + (" …" if g.count > len(g.emails) else ""), "href": routes.campaign_send(g.campaign_id),
         "id": str(g.campaign_id)}
        for g in groups
    ]  # fmt: skip


def _retry(job_id: str) -> str:
    return job_monitor.retry_failed_job(get_redis(), job_id)


class JobsState(LivePage, rx.State):
    """The job monitor's tables, refreshed live."""

    loaded: bool = False
    denied: str = ""
    redis_error: str = ""
    queues: list[dict[str, str]] = []
    workers: list[dict[str, str]] = []
    schedulers: str = ""
    scheduled: list[dict[str, str]] = []
    failed: list[dict[str, str]] = []
    unknown: list[dict[str, str]] = []
    notice: str = ""
    notice_ok: bool = True
    updated: str = ""

    async def _user(self) -> auth.CurrentUser | None:
        try:
            return auth.require_role(
                (await self.get_state(AuthState)).current_user(), *job_monitor.MONITOR_ROLES
            )
        except auth.PermissionDenied:
            return None

    async def _read(self, workspace_id: int) -> dict:
        page = await asyncio.to_thread(read_redis)
        page["unknown"] = await asyncio.to_thread(read_unknown, workspace_id)
        page["updated"] = datetime.now(UTC).strftime("%H:%M:%S UTC")
        return page

    def _show(self, page: dict) -> None:
        for key, value in page.items():
            setattr(self, key, value)

    @rx.event
    async def load(self):
        self.notice = ""
        user = await self._user()
        if user is None:
            self.denied, self.loaded = NOT_ALLOWED, True
            return None
        self.denied = ""
        self._show(await self._read(user.workspace_id))
        self.loaded = True
        return JobsState.watch

    @rx.event(background=True)
    async def watch(self):
        """Read everything again every few seconds while the page is open."""
        await self._live_loop(every_s=REFRESH_SECONDS, max_rounds=MAX_REFRESHES)

    async def _live_viewer(self) -> auth.CurrentUser | None:
        return await self._user()

    async def _live_read(self, user: auth.CurrentUser, key: object) -> dict:
        return await self._read(user.workspace_id)

    @rx.event
    async def retry(self, job_id: str):
        user = await self._user()
        if user is None:
            self.notice, self.notice_ok = NOT_ALLOWED, False
            return
        try:
            queue = await asyncio.to_thread(_retry, job_id)
        except ServiceError as exc:
            self.notice, self.notice_ok = str(exc), False
        except Exception as exc:  # Redis went away
            self.notice, self.notice_ok = f"Could not retry: {redact(str(exc))}", False
        else:
            self.notice, self.notice_ok = f"Job {job_id} is back on the {queue} queue.", True
        self._show(await self._read(user.workspace_id))
