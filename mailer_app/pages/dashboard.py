"""Placement dashboard: where seed copies landed, per provider and over time, live."""

from __future__ import annotations

import reflex as rx

from mailer_app import routes
from mailer_app.components.dashboard_widgets import (
    chart_card,
    evolution_table,
    headline_card,
    seed_table,
)
from mailer_app.components.shell import page_frame
from mailer_app.state.auth import AuthState
from mailer_app.state.dashboard import ALL_CAMPAIGNS, DashboardState


def _labelled(label: str, control: rx.Component) -> rx.Component:
    return rx.vstack(rx.text(label, size="2", weight="medium"), control, spacing="1")


def _choice(option: rx.Var) -> rx.Component:
    return rx.select.item(option["label"], value=option["id"])


def filters() -> rx.Component:
    return rx.hstack(
        _labelled(
            "From",
            rx.input(
                type="date",
                value=DashboardState.start_date,
                on_change=DashboardState.set_start_date,
                id="dash-from",
            ),
        ),
        _labelled(
            "To",
            rx.input(
                type="date",
                value=DashboardState.end_date,
                on_change=DashboardState.set_end_date,
                id="dash-to",
            ),
        ),
        _labelled(
            "Campaign",
            rx.select.root(
                rx.select.trigger(min_width="220px", id="dash-campaign"),
                rx.select.content(
                    rx.select.item("All campaigns and tests", value=ALL_CAMPAIGNS),
                    rx.foreach(DashboardState.campaign_choices, _choice),
                ),
                value=DashboardState.campaign,
                on_change=DashboardState.set_campaign,
            ),
        ),
        rx.spacer(),
        rx.cond(
            DashboardState.loading,
            rx.hstack(rx.spinner(size="2"), rx.text("Loading…", size="2"), id="dash-loading"),
            rx.text("Updates by itself", size="1", color_scheme="gray", id="dash-live"),
        ),
        align="end",
        spacing="4",
        wrap="wrap",
        width="100%",
    )


def error_state() -> rx.Component:
    return rx.callout.root(
        rx.callout.icon(rx.icon("triangle-alert")),
        rx.callout.text(DashboardState.error),
        rx.button("Try again", size="1", variant="soft", on_click=DashboardState.retry),
        color_scheme="red",
        role="alert",
        id="dash-error",
    )


def empty_state() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.icon("chart-column", size=28, color="var(--gray-9)"),
            rx.heading("No placement results in these dates yet", size="4"),
            rx.text(
                "Results appear here as soon as seed mailboxes are checked. Run a pre-flight "
                "test, or send a campaign that includes seed mailboxes.",
                size="2",
                color_scheme="gray",
            ),
            rx.link("Run a pre-flight test", href=routes.PREFLIGHT, size="2"),
            align="center",
            spacing="2",
            padding="24px",
        ),
        id="dash-empty",
    )


def drilldown() -> rx.Component:
    return rx.cond(
        DashboardState.campaign != ALL_CAMPAIGNS,
        rx.card(
            rx.vstack(
                rx.hstack(
                    rx.heading("Each seed mailbox", size="4"),
                    rx.spacer(),
                    rx.select.root(
                        rx.select.trigger(min_width="300px", id="dash-run"),
                        rx.select.content(rx.foreach(DashboardState.runs, _choice)),
                        value=DashboardState.run_id,
                        on_change=DashboardState.set_run,
                    ),
                    width="100%",
                    align="center",
                ),
                rx.text(
                    "Where each seed's copy landed in this send, how long it took, and what "
                    "the receiving server said about the sender's authentication.",
                    size="2",
                    color_scheme="gray",
                ),
                seed_table(DashboardState.seed_rows),
                rx.heading("How placement evolved over the checks", size="3"),
                evolution_table(DashboardState.steps),
                spacing="3",
                align="stretch",
            ),
            id="dash-drilldown",
        ),
        rx.text(
            "Choose a campaign to see each seed mailbox's result.",
            size="2",
            color_scheme="gray",
        ),
    )


def results() -> rx.Component:
    return rx.vstack(
        rx.flex(rx.foreach(DashboardState.cards, headline_card), gap="3", wrap="wrap"),
        rx.text(
            DashboardState.pending,
            " seed copies are still being looked for and ",
            DashboardState.errors,
            " could not be checked; rates count only the copies that were found or are "
            "known missing.",
            size="1",
            color_scheme="gray",
            id="dash-not-counted",
        ),
        chart_card(
            "Placement by email provider",
            "Where the seed copies landed at each provider.",
            rx.plotly(data=DashboardState.esp_fig, use_resize_handler=True, width="100%"),
            id="dash-esp-chart",
        ),
        chart_card(
            "Inbox rate over time",
            rx.cond(
                DashboardState.bucket == "hour",
                "Per provider, by hour (UTC).",
                "Per provider, by day (UTC).",
            ),
            rx.plotly(data=DashboardState.series_fig, use_resize_handler=True, width="100%"),
            id="dash-series-chart",
        ),
        drilldown(),
        spacing="4",
        align="stretch",
        width="100%",
    )


@rx.page(
    route=routes.DASHBOARD,
    title="Placement dashboard · mailer",
    on_load=[AuthState.require_login, DashboardState.load],
)
def dashboard_page() -> rx.Component:
    return page_frame(
        "Placement dashboard",
        # Leaving the page stops its refresh loop (closing the tab does too).
        rx.vstack(
            filters(),
            rx.cond(
                DashboardState.error != "",
                error_state(),
                rx.cond(
                    DashboardState.has_results,
                    results(),
                    rx.cond(DashboardState.loading, rx.skeleton(height="240px"), empty_state()),
                ),
            ),
            rx.text(DashboardState.updated, id="dash-updated", display="none"),
            on_mount=DashboardState.arrive,
            on_unmount=DashboardState.leave,
            spacing="4",
            align="stretch",
            width="100%",
        ),
    )
