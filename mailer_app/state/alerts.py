"""States of the alerts: the navigation badge (every signed-in page) and /alerts.

The badge is one integer, read on page load and every BADGE_REFRESH_MS by a hidden
`rx.moment` in the sidebar: one indexed COUNT per open tab. Every handler asks the
database who is signed in; changes are checked again by the service (roles).
"""

from __future__ import annotations

import reflex as rx

from mailer_app.db import session_scope
from mailer_app.models import Role
from mailer_app.services import InvalidInput, ServiceError, alerts
from mailer_app.services.auth import CurrentUser
from mailer_app.state.auth import AuthState

BADGE_REFRESH_MS = 15_000
SHOWN = 200


async def _user(state: rx.State) -> CurrentUser | None:
    return (await state.get_state(AuthState)).current_user()


def _stamp(when) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC") if when else ""


def _row(row: alerts.AlertRow) -> dict[str, str]:
    return {
        "id": str(row.id),
        "kind": row.kind,
        "kind_label": row.kind_label,
        "status": row.status,
        "message": row.message,
        "created": _stamp(row.created_at),
        "campaign": row.campaign_name or "",
        "campaign_id": str(row.campaign_id or ""),
        "esp": row.esp or "",
        "acknowledged": (
            f"Acknowledged by {row.acknowledged_by or 'someone'} at {_stamp(row.acknowledged_at)}"
            if row.status == alerts.STATUS_ACKNOWLEDGED
            else ""
        ),
    }


def _pct(rate: float) -> str:
    return f"{rate * 100:g}"


class AlertBadgeState(rx.State):
    """How many alerts are new in the signed-in workspace (the sidebar badge)."""

    new_count: int = 0

    @rx.event
    async def refresh(self):
        user = await _user(self)
        if user is None:
            self.new_count = 0
            return
        with session_scope() as session:
            count = alerts.count_new_alerts(session=session, workspace_id=user.workspace_id)
        self.new_count = count

    @rx.event
    async def tick(self, _now: str = ""):
        await self.refresh()


class AlertsState(rx.State):
    new_rows: list[dict[str, str]] = []
    acknowledged_rows: list[dict[str, str]] = []
    can_acknowledge: bool = False
    can_edit_settings: bool = False
    min_inbox_pct: str = "70"
    max_missing_pct: str = "20"
    auto_pause: bool = False
    emails_text: str = ""
    sender_note: str = ""
    settings_error: str = ""
    settings_error_field: str = ""
    settings_saved: str = ""
    notice: str = ""

    def _read(self, user: CurrentUser) -> None:
        with session_scope() as session:
            rows = alerts.alert_rows(session=session, workspace_id=user.workspace_id, limit=SHOWN)
            current = alerts.alert_settings(session=session, workspace_id=user.workspace_id)
            sender = alerts.alert_sender(session=session, workspace_id=user.workspace_id)
        self.new_rows = [_row(r) for r in rows if r.status == alerts.STATUS_NEW]
        self.acknowledged_rows = [_row(r) for r in rows if r.status != alerts.STATUS_NEW]
        self.min_inbox_pct = _pct(current.min_inbox_rate)
        self.max_missing_pct = _pct(current.max_missing_rate)
        self.auto_pause = current.auto_pause_enabled
        self.emails_text = ", ".join(current.alert_emails)
        self.sender_note = (
            f"Alert e-mails are sent through the sender account “{sender.name}” "
            f"({sender.from_email}), the workspace's first active one."
            if sender is not None
            else "Alert e-mails need a sender account to go out through: add one under "
            "Sender accounts (until then alerts are shown here only)."
        )

    async def _after_change(self, user: CurrentUser) -> None:
        self._read(user)
        badge = await self.get_state(AlertBadgeState)
        badge.new_count = len(self.new_rows)

    @rx.event
    async def load(self):
        user = await _user(self)
        self.notice = self.settings_error = self.settings_saved = ""
        if user is None:
            self.new_rows, self.acknowledged_rows = [], []
            return
        self.can_acknowledge = user.role in {str(r) for r in alerts.ACKNOWLEDGE_ROLES}
        self.can_edit_settings = user.role in {str(r) for r in alerts.SETTINGS_ROLES}
        await self._after_change(user)

    @rx.event
    async def acknowledge(self, alert_id: str):
        await self._acknowledge([int(alert_id)])

    @rx.event
    async def acknowledge_all(self):
        await self._acknowledge(None)

    async def _acknowledge(self, ids: list[int] | None) -> None:
        user = await _user(self)
        if user is None:
            self.notice = "Sign in again to continue."
            return
        try:
            with session_scope() as session:
                alerts.acknowledge_alerts(
                    session=session, workspace_id=user.workspace_id, user_id=user.user_id,
                    alert_ids=ids,
                )  # fmt: skip
        except ServiceError as exc:
            self.notice = str(exc)
            return
        self.notice = ""
        await self._after_change(user)

    @rx.event
    def set_auto_pause(self, value: bool):
        self.auto_pause = bool(value)

    @rx.event
    async def save_settings(self, form: dict):
        user = await _user(self)
        self.settings_error = self.settings_error_field = self.settings_saved = ""
        if user is None or user.role not in (Role.OWNER, Role.ADMIN):
            self.settings_error = "Only owners and admins can change alert settings."
            return
        try:
            inbox = _fraction(form.get("min_inbox_pct", ""), "min_inbox_rate")
            missing = _fraction(form.get("max_missing_pct", ""), "max_missing_rate")
            with session_scope() as session:
                alerts.update_alert_settings(
                    session=session, workspace_id=user.workspace_id, user_id=user.user_id,
                    min_inbox_rate=inbox, max_missing_rate=missing,
                    auto_pause_enabled=self.auto_pause,
                    alert_emails=form.get("alert_emails", ""),
                )  # fmt: skip
        except ServiceError as exc:
            self.settings_error = str(exc)
            self.settings_error_field = getattr(exc, "field", "") or ""
            return
        self._read(user)
        self.settings_saved = "Saved."


def _fraction(text: str, field: str) -> float:
    """A percentage typed in the form ("70", "70%") as a rate 0..1."""
    cleaned = str(text).strip().rstrip("%").strip()
    try:
        return float(cleaned) / 100
    except ValueError:
        raise InvalidInput("Type a percentage, for example 70.", field=field) from None
