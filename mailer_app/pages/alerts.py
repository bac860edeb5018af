"""/alerts: alerts waiting for someone, those already seen, and the alert settings."""

from __future__ import annotations

import reflex as rx

from mailer_app import routes
from mailer_app.components.alert_widgets import alert_card, empty_note, settings_form
from mailer_app.components.shell import field_error, page_frame
from mailer_app.state.alerts import AlertsState
from mailer_app.state.auth import AuthState


def new_alerts() -> rx.Component:
    return rx.vstack(
        rx.hstack(
            rx.heading("New", size="4"),
            rx.badge(AlertsState.new_rows.length(), id="alerts-new-count"),
            rx.spacer(),
            rx.cond(
                AlertsState.can_acknowledge & (AlertsState.new_rows.length() > 0),
                rx.button(
                    rx.icon("check-check", size=14), "Acknowledge all", variant="soft",
                    on_click=AlertsState.acknowledge_all, id="alerts-ack-all",
                ),
            ),
            align="center", width="100%",
        ),
        rx.cond(
            AlertsState.new_rows.length() > 0,
            rx.foreach(
                AlertsState.new_rows,
                lambda row: alert_card(
                    row,
                    rx.cond(
                        AlertsState.can_acknowledge,
                        rx.button(
                            "Acknowledge", size="1", variant="outline",
                            on_click=AlertsState.acknowledge(row["id"]),
                            class_name="alert-ack",
                        ),
                    ),
                ),
            ),
            empty_note("Nothing new. Alerts appear here when placement drops or a login fails."),
        ),
        width="100%", spacing="2", id="alerts-new",
    )  # fmt: skip


def acknowledged_alerts() -> rx.Component:
    return rx.vstack(
        rx.heading("Acknowledged", size="4"),
        rx.cond(
            AlertsState.acknowledged_rows.length() > 0,
            rx.foreach(AlertsState.acknowledged_rows, lambda row: alert_card(row)),
            empty_note("None yet."),
        ),
        width="100%",
        spacing="2",
        id="alerts-acknowledged",
    )


def settings() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.heading("Alert settings", size="4"),
            settings_form(
                min_inbox_pct=AlertsState.min_inbox_pct,
                max_missing_pct=AlertsState.max_missing_pct,
                auto_pause=AlertsState.auto_pause,
                emails_text=AlertsState.emails_text,
                sender_note=AlertsState.sender_note,
                error=AlertsState.settings_error,
                error_field=AlertsState.settings_error_field,
                saved=AlertsState.settings_saved,
                on_auto_pause=AlertsState.set_auto_pause,
                on_submit=AlertsState.save_settings,
            ),
            align="stretch",
        ),
        id="alert-settings",
    )


@rx.page(
    route=routes.ALERTS,
    title="Alerts · mailer",
    on_load=[AuthState.require_login, AlertsState.load],
)
def alerts_page() -> rx.Component:
    return page_frame(
        "Alerts",
        rx.text(
            "Raised when a campaign's or an ESP's inbox rate falls below, or its missing rate "
            "rises above, the workspace's thresholds, and when a seed or sender login is "
            "refused. Rates count seeds whose result is known.",
            size="2",
            color_scheme="gray",
        ),
        field_error(AlertsState.notice),
        new_alerts(),
        acknowledged_alerts(),
        rx.cond(AlertsState.can_edit_settings, settings()),
    )
