"""Home: what is in the workspace and whether the system is running."""

from __future__ import annotations

import asyncio

import reflex as rx

from mailer_app import routes
from mailer_app.components.shell import page_frame
from mailer_app.db import session_scope
from mailer_app.pages.status import health_rows
from mailer_app.services import overview
from mailer_app.state.auth import AuthState


class HomeState(rx.State):
    counts: dict[str, int] = {}
    system_ok: bool = False
    problems: list[str] = []

    @rx.event
    async def load(self):
        auth = await self.get_state(AuthState)
        user = auth.current_user()
        if user is None:
            return
        with session_scope() as session:
            self.counts = overview.workspace_counts(session=session, workspace_id=user.workspace_id)
        overall, rows = await asyncio.to_thread(health_rows)
        self.system_ok = overall == "ok"
        self.problems = [f"{r['name']}: {r['detail']}" for r in rows if r["state"] == "down"]


def stat_card(label: str, key: str, icon: str) -> rx.Component:
    return rx.card(
        rx.hstack(
            rx.icon(icon, size=24),
            rx.vstack(
                rx.text(label, size="2", color_scheme="gray"),
                rx.heading(HomeState.counts[key], size="6"),
                spacing="0",
            ),
            align="center",
            spacing="3",
        ),
        width="100%",
    )


@rx.page(
    route=routes.HOME, title="Home · mailer", on_load=[AuthState.require_login, HomeState.load]
)
def home_page() -> rx.Component:
    return page_frame(
        "Home",
        rx.text("Welcome, ", AuthState.user_name, ".", size="4", id="welcome"),
        rx.grid(
            stat_card("Campaigns", "campaigns", "send"),
            stat_card("Seed mailboxes", "seeds", "inbox"),
            stat_card("Sender accounts", "senders", "at-sign"),
            stat_card("Contacts", "contacts", "users"),
            columns="4",
            spacing="3",
            width="100%",
        ),
        rx.cond(
            HomeState.system_ok,
            rx.callout(
                "All systems are running.",
                icon="circle-check",
                color_scheme="green",
                id="system-summary",
            ),
            rx.callout(
                rx.vstack(
                    rx.text("Some parts of the system are not running:"),
                    rx.foreach(HomeState.problems, lambda p: rx.text("• ", p, size="2")),
                    rx.link("See system status", href=routes.STATUS),
                ),
                icon="triangle-alert",
                color_scheme="orange",
                id="system-summary",
            ),
        ),
    )
