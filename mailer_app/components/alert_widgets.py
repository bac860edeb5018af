"""Pieces of the alerts page: one alert as a card, the list of them, the settings form.

They take plain vars and event handlers, never a State class."""

from __future__ import annotations

import reflex as rx

from mailer_app import routes
from mailer_app.components.shell import field_error

KIND_COLORS = {
    "low_inbox_rate": "orange",
    "high_missing_rate": "red",
    "seed_auth_expired": "amber",
    "sender_auth_failed": "red",
}


def kind_badge(kind: rx.Var, label: rx.Var) -> rx.Component:
    return rx.match(
        kind,
        *[(k, rx.badge(label, color_scheme=c)) for k, c in KIND_COLORS.items()],
        rx.badge(label, color_scheme="gray"),
    )


def alert_card(row: rx.Var, action: rx.Component | None = None) -> rx.Component:
    """One alert: kind, when, what, campaign and ESP, and an optional action."""
    return rx.card(
        rx.hstack(
            rx.vstack(
                rx.hstack(
                    kind_badge(row["kind"], row["kind_label"]),
                    rx.text(row["created"], size="1", color_scheme="gray"),
                    rx.cond(row["esp"] != "", rx.badge(row["esp"], variant="outline")),
                    spacing="2",
                    align="center",
                ),
                rx.text(row["message"], size="2", class_name="alert-message"),
                rx.cond(
                    row["campaign"] != "",
                    rx.link(
                        "Campaign: ",
                        row["campaign"],
                        href=f"{routes.CAMPAIGNS}/" + row["campaign_id"].to(str) + "/send",
                        size="1",
                    ),
                ),
                rx.cond(
                    row["acknowledged"] != "",
                    rx.text(row["acknowledged"], size="1", color_scheme="gray"),
                ),
                spacing="1",
                align="start",
                width="100%",
            ),
            action if action is not None else rx.fragment(),
            align="start",
            width="100%",
        ),
        width="100%",
        class_name="alert-card",
        data_status=row["status"],
    )


def empty_note(text: str) -> rx.Component:
    return rx.text(text, size="2", color_scheme="gray")


def settings_form(
    *,
    min_inbox_pct: rx.Var,
    max_missing_pct: rx.Var,
    auto_pause: rx.Var,
    emails_text: rx.Var,
    sender_note: rx.Var,
    error: rx.Var,
    error_field: rx.Var,
    saved: rx.Var,
    on_auto_pause,
    on_submit,
) -> rx.Component:
    """Thresholds, alert addresses and the auto-pause switch of the workspace."""

    def labelled(label: str, hint: str, control: rx.Component, field: str) -> rx.Component:
        return rx.vstack(
            rx.text(label, size="2", weight="medium"),
            control,
            rx.text(hint, size="1", color_scheme="gray"),
            rx.cond(error_field == field, field_error(error)),
            spacing="1",
            align="start",
        )

    return rx.form(
        rx.vstack(
            rx.hstack(
                labelled(
                    "Alert when the inbox rate falls below (%)",
                    "Share of checked seeds that landed in the inbox.",
                    rx.input(
                        name="min_inbox_pct", default_value=min_inbox_pct, id="alert-min-inbox",
                        width="120px", key=min_inbox_pct,
                    ),
                    "min_inbox_rate",
                ),
                labelled(
                    "Alert when the missing rate rises above (%)",
                    "Share of checked seeds where the message never arrived.",
                    rx.input(
                        name="max_missing_pct", default_value=max_missing_pct,
                        id="alert-max-missing", width="120px", key=max_missing_pct,
                    ),
                    "max_missing_rate",
                ),
                spacing="6",
                wrap="wrap",
            ),
            labelled(
                "E-mail new alerts to",
                "Addresses separated by commas; leave empty to see alerts here only.",
                rx.text_area(
                    name="alert_emails", default_value=emails_text, id="alert-emails",
                    width="480px", key=emails_text,
                ),
                "alert_emails",
            ),
            rx.text(sender_note, size="1", color_scheme="gray", id="alert-sender-note"),
            rx.hstack(
                rx.box(
                    rx.switch(checked=auto_pause, on_change=on_auto_pause), id="alert-auto-pause"
                ),
                rx.text(
                    "Pause a campaign automatically when its first seed results (after the "
                    "+3 or +5 minute check) cross a threshold overall.",
                    size="2",
                ),
                align="center",
                spacing="2",
            ),
            rx.hstack(
                rx.button("Save alert settings", type="submit", id="alert-settings-save"),
                rx.text(saved, size="2", color_scheme="green"),
                align="center",
            ),
            rx.cond(
                (error != "") & (error_field != "min_inbox_rate")
                & (error_field != "max_missing_rate") & (error_field != "alert_emails"),
                field_error(error),
            ),
            spacing="3",
            align="start",
        ),
        on_submit=on_submit,
        reset_on_submit=False,
        width="100%",
    )  # fmt: skip
