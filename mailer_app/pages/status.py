"""System status: the same report as GET /health, refreshed live while open."""

from __future__ import annotations

import asyncio

import reflex as rx

from mailer_app import routes
from mailer_app.components.shell import page_frame
from mailer_app.services.health import system_health
from mailer_app.settings import get_settings
from mailer_app.state.auth import AuthState
from mailer_app.state.live import client_connected

REFRESH_SECONDS = 3
# A page left open refreshes for at most this long; reopening starts again.
MAX_REFRESHES = 1200

STATE_COLORS = {"up": "green", "down": "red", "off": "gray"}


def health_rows() -> tuple[str, list[dict[str, str]]]:
    report = system_health(get_settings())
    rows = [
        {
            "name": name,
            "state": c["state"],
            "detail": c["detail"],
            "color": STATE_COLORS.get(c["state"], "gray"),
        }
        for name, c in report["components"].items()
    ]
    return report["status"], rows


class StatusState(rx.State):
    overall: str = ""
    components: list[dict[str, str]] = []
    _watching: bool = False

    @rx.event
    async def load(self):
        auth = await self.get_state(AuthState)
        if auth.current_user() is None:
            return None
        self.overall, self.components = await asyncio.to_thread(health_rows)
        return StatusState.watch

    @rx.event(background=True)
    async def watch(self):
        async with self:
            if self._watching:
                return
            self._watching = True
        try:
            for _ in range(MAX_REFRESHES):
                await asyncio.sleep(REFRESH_SECONDS)
                if not client_connected(self.router.session.client_token):
                    return
                overall, rows = await asyncio.to_thread(health_rows)
                async with self:
                    self.overall, self.components = overall, rows
        finally:
            async with self:
                self._watching = False


def component_card(row: rx.Var) -> rx.Component:
    return rx.card(
        rx.hstack(
            rx.badge(row["state"], color_scheme=row["color"], size="2", variant="solid"),
            rx.text(row["name"], weight="bold", size="3", min_width="90px"),
            rx.text(row["detail"], size="2", color_scheme="gray"),
            align="center",
            spacing="3",
        ),
        id=f"component-{row['name']}",
    )


def status_summary() -> rx.Component:
    return rx.cond(
        StatusState.overall == "ok",
        rx.callout("Everything is running.", icon="circle-check", color_scheme="green"),
        rx.cond(
            StatusState.overall == "",
            rx.text("Checking…", color_scheme="gray"),
            rx.callout(
                "Something is not running. The list below says what and how to fix it.",
                icon="triangle-alert",
                color_scheme="orange",
            ),
        ),
    )


@rx.page(
    route=routes.STATUS,
    title="System status · mailer",
    on_load=[AuthState.require_login, StatusState.load],
)
def status_page() -> rx.Component:
    return page_frame(
        "System status",
        status_summary(),
        rx.foreach(StatusState.components, component_card),
        rx.text(
            "Also available as JSON at /health for monitoring tools.", size="1", color_scheme="gray"
        ),
    )
