"""The frame around every signed-in page: navigation, workspace, sign out."""

from __future__ import annotations

import reflex as rx

from mailer_app import routes
from mailer_app.state.alerts import BADGE_REFRESH_MS, AlertBadgeState
from mailer_app.state.auth import AuthState

# Only pages that work are listed here; a page joins when its issue lands.
NAVIGATION = [
    ("Home", routes.HOME, "house"),
    ("Contacts", routes.CONTACTS, "users"),
    ("Suppressions", routes.SUPPRESSIONS, "ban"),
    ("Campaigns", routes.CAMPAIGNS, "mails"),
    ("Sender accounts", routes.SENDERS, "at-sign"),
    ("Seed mailboxes", routes.SEEDS, "mailbox"),
    ("Pre-flight test", routes.PREFLIGHT, "send"),
    ("Alerts", routes.ALERTS, "bell"),
    ("Dashboard", routes.DASHBOARD, "chart-column"),
    ("Jobs", routes.JOBS, "list-checks"),
    ("System status", routes.STATUS, "activity"),
]


def _alerts_badge() -> rx.Component:
    """The count of new alerts, read on load and every BADGE_REFRESH_MS (hidden timer)."""
    return rx.fragment(
        rx.cond(
            AlertBadgeState.new_count > 0,
            rx.badge(
                AlertBadgeState.new_count, color_scheme="red", radius="full", id="alerts-badge"
            ),
        ),
        rx.moment(interval=BADGE_REFRESH_MS, on_change=AlertBadgeState.tick, display="none"),
    )


def _nav_link(label: str, href: str, icon: str) -> rx.Component:
    extra = _alerts_badge() if href == routes.ALERTS else rx.fragment()
    return rx.link(
        rx.hstack(rx.icon(icon, size=16), rx.text(label, size="3"), extra, align="center"),
        href=href,
        underline="none",
        color_scheme="gray",
        high_contrast=True,
        padding_y="6px",
    )


def sidebar() -> rx.Component:
    return rx.vstack(
        rx.hstack(rx.icon("mail-check", size=22), rx.heading("mailer", size="5"), align="center"),
        rx.text(AuthState.workspace_name, size="2", color_scheme="gray"),
        rx.divider(on_mount=AlertBadgeState.refresh),
        *[_nav_link(*item) for item in NAVIGATION],
        rx.spacer(),
        rx.divider(),
        rx.text(AuthState.user_name, size="2", weight="medium", id="signed-in-user"),
        rx.text(AuthState.role, size="1", color_scheme="gray"),
        rx.button(
            rx.icon("log-out", size=14),
            "Sign out",
            variant="soft",
            size="1",
            on_click=AuthState.sign_out,
            id="sign-out",
        ),
        width="220px",
        min_height="100vh",
        padding="20px",
        border_right="1px solid var(--gray-a5)",
        align="start",
        spacing="2",
    )


def page_frame(title: str, *children: rx.Component) -> rx.Component:
    """A signed-in page: sidebar on the left, the page's content on the right."""
    return rx.hstack(
        sidebar(),
        rx.vstack(
            rx.heading(title, size="7"),
            *children,
            padding="28px",
            width="100%",
            max_width="1100px",
            spacing="4",
            align="stretch",
        ),
        align="start",
        spacing="0",
        width="100%",
    )


def centered_card(*children: rx.Component) -> rx.Component:
    """The frame of the sign-in and first-run pages."""
    return rx.center(
        rx.card(
            rx.vstack(*children, spacing="4", align="stretch"),
            width="420px",
            padding="28px",
        ),
        min_height="100vh",
        background="var(--gray-2)",
    )


def field_error(message: rx.Var | str) -> rx.Component:
    return rx.cond(
        message != "",
        rx.callout(message, icon="triangle-alert", color_scheme="red", size="1", role="alert"),
    )
