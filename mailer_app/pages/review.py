"""The review gate (/campaigns/[cid]/review): build every message, check, decide, send."""

from __future__ import annotations

import reflex as rx

from mailer_app import routes
from mailer_app.components.review_widgets import (
    build_panel,
    counts_panel,
    message_list,
    message_preview,
    review_header,
    send_panel,
)
from mailer_app.components.shell import page_frame
from mailer_app.state.auth import AuthState
from mailer_app.state.review import ReviewGateState


def review_gate() -> rx.Component:
    return rx.vstack(
        review_header(),
        build_panel(),
        counts_panel(),
        send_panel(),
        message_list(),
        message_preview(),
        spacing="4",
        width="100%",
        align="stretch",
    )


@rx.page(
    route=routes.CAMPAIGN_REVIEW,
    title="Review · mailer",
    on_load=[AuthState.require_login, ReviewGateState.load],
)
def review_page() -> rx.Component:
    return page_frame(
        rx.cond(ReviewGateState.loaded, "Review: " + ReviewGateState.name, "Review"),
        rx.cond(
            ReviewGateState.missing != "",
            rx.callout(ReviewGateState.missing, icon="triangle-alert", color_scheme="red",
                       id="campaign-missing"),
            rx.cond(
                ReviewGateState.loaded,
                review_gate(),
                rx.hstack(rx.spinner(), rx.text("Opening the campaign…"), align="center"),
            ),
        ),
    )  # fmt: skip
