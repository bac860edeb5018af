"""The pre-flight test page: choose a sender and seeds, send, watch results arrive."""

from __future__ import annotations

import asyncio

import reflex as rx

from mailer_app.db import session_scope
from mailer_app.models import PlacementRunKind, Role
from mailer_app.services import ServiceError, auth, placement, seeds, senders
from mailer_app.state.auth import AuthState
from mailer_app.state.live import LivePage

ALL_SEEDS = "all"
REFRESH_SECONDS = 1.0
# A tab left open on a run polls at most this long (checks end by +10 minutes).
MAX_REFRESHES = 1500

PLACEMENT_COLORS = {
    "pending": "gray",
    "inbox": "green",
    "promotions": "blue",
    "spam": "orange",
    "missing": "red",
    "error": "red",
}


def _choices(workspace_id: int) -> tuple[list[dict[str, str]], list[dict[str, str]], int | None]:
    with session_scope() as session:
        sender_rows = senders.list_senders(session=session, workspace_id=workspace_id)
        list_rows = seeds.list_seed_lists(session=session, workspace_id=workspace_id)
        latest = placement.latest_runs(
            session=session, workspace_id=workspace_id, kind=PlacementRunKind.PREFLIGHT, limit=1
        )
    sender_choices = [{"id": str(s.id), "label": f"{s.name} <{s.from_email}>"} for s in sender_rows]
    list_choices = [{"id": ALL_SEEDS, "label": "All active seed mailboxes"}] + [
        {"id": str(row.id), "label": f"{row.name} ({row.seed_count})"} for row in list_rows
    ]
    return sender_choices, list_choices, (latest[0].id if latest else None)


def _progress(workspace_id: int, run_id: int) -> dict:
    with session_scope() as session:
        progress = placement.run_progress(session=session, workspace_id=workspace_id, run_id=run_id)
    rows = [
        {
            "email": row.seed_email,
            "esp": row.esp,
            "placement": row.placement,
            "color": PLACEMENT_COLORS.get(row.placement, "gray"),
            "folder": row.folder or "",
            "landed": f"{row.seconds_to_land:.0f} s" if row.seconds_to_land is not None else "",
            "auth": " ".join(
                f"{name}={value}"
                for name, value in (("spf", row.spf), ("dkim", row.dkim), ("dmarc", row.dmarc))
                if value
            ),
            "note": row.error or (f"check {row.attempts}" if row.placement == "pending" else ""),
        }
        for row in progress.results
    ]
    counts = [
        {"placement": name, "count": str(progress.counts[name]), "color": color}
        for name, color in PLACEMENT_COLORS.items()
        if progress.counts.get(name)
    ]
    decided = progress.total - progress.pending
    return {
        "status": progress.status,
        "total": progress.total,
        "decided": decided,
        "percent": int(100 * decided / progress.total) if progress.total else 100,
        "rows": rows,
        "counts": counts,
    }


def _start_run(
    user: auth.CurrentUser, *, sender_id: int, seed_list_id: int | None, subject: str, body: str
) -> int:
    with session_scope() as session:
        run = placement.start_preflight(
            session=session,
            workspace_id=user.workspace_id,
            user_id=user.user_id,
            sender_account_id=sender_id,
            seed_list_id=seed_list_id,
            subject=subject,
            text_body=body,
        )
        return run.id


class PreflightState(LivePage, rx.State):
    sender_choices: list[dict[str, str]] = []
    list_choices: list[dict[str, str]] = []
    sender_id: str = ""
    seed_list_id: str = ALL_SEEDS
    error: str = ""
    error_field: str = ""
    starting: bool = False

    run_id: int = 0
    run_status: str = ""
    total: int = 0
    decided: int = 0
    percent: int = 0
    rows: list[dict[str, str]] = []
    counts: list[dict[str, str]] = []

    @rx.var
    def running(self) -> bool:
        return self.run_id > 0 and self.run_status != placement.RUN_COMPLETED

    @rx.event
    async def load(self):
        user = (await self.get_state(AuthState)).current_user()
        if user is None:
            return None
        sender_choices, list_choices, latest = await asyncio.to_thread(_choices, user.workspace_id)
        self.sender_choices, self.list_choices = sender_choices, list_choices
        if not self.sender_id and sender_choices:
            self.sender_id = sender_choices[0]["id"]
        if latest and not self.run_id:
            self._show(await asyncio.to_thread(_progress, user.workspace_id, latest), latest)
        return PreflightState.watch if self.running else None

    @rx.event
    def set_sender(self, value: str):
        self.sender_id = value

    @rx.event
    def set_seed_list(self, value: str):
        self.seed_list_id = value

    @rx.event
    async def start(self, form_data: dict):
        self.error = self.error_field = ""
        subject = str(form_data.get("subject", ""))
        body = str(form_data.get("body", ""))
        try:
            user = auth.require_role(
                (await self.get_state(AuthState)).current_user(),
                Role.ADMIN,
                Role.EDITOR,
                Role.SENDER,
            )
            if not self.sender_id:
                raise ServiceError("Choose the sender account to send from.")
            self.starting = True
            yield
            run_id = await asyncio.to_thread(
                _start_run,
                user,
                sender_id=int(self.sender_id),
                seed_list_id=None if self.seed_list_id == ALL_SEEDS else int(self.seed_list_id),
                subject=subject,
                body=body,
            )
        except ServiceError as exc:
            self.error = str(exc)
            self.error_field = getattr(exc, "field", "") or ""
            self.starting = False
            return
        self.starting = False
        self._show(await asyncio.to_thread(_progress, user.workspace_id, run_id), run_id)
        yield PreflightState.watch

    def _show(self, progress: dict, run_id: int) -> None:
        self.run_id = run_id
        self.run_status = progress["status"]
        self.total, self.decided, self.percent = (
            progress["total"],
            progress["decided"],
            progress["percent"],
        )
        self.rows, self.counts = progress["rows"], progress["counts"]

    @rx.event(background=True)
    async def watch(self):
        """Read the run's results every second until every seed has one."""
        await self._live_loop(every_s=REFRESH_SECONDS, max_rounds=MAX_REFRESHES)

    def _live_key(self) -> int | None:
        """The run the next round reads; None once it is complete."""
        return self.run_id if self.running else None

    async def _live_read(self, user: auth.CurrentUser, run_id: int) -> dict:
        return await asyncio.to_thread(_progress, user.workspace_id, run_id)

    def _live_show(self, run_id: int, progress: dict) -> None:
        self._show(progress, run_id)
