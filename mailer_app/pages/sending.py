"""The send page (/campaigns/[cid]/send): live progress of a send, pause, resume, cancel."""

from __future__ import annotations

import reflex as rx

from mailer_app import routes
from mailer_app.components.send_widgets import send_page_body
from mailer_app.components.shell import page_frame
from mailer_app.state.auth import AuthState
from mailer_app.state.sending import SendPageState


@rx.page(
    route=routes.CAMPAIGN_SEND,
    title="Sending · mailer",
    on_load=[AuthState.require_login, SendPageState.load],
)
def send_page() -> rx.Component:
    return page_frame(
        rx.cond(SendPageState.loaded, "Sending: " + SendPageState.name, "Sending"),
        # Leaving the page stops its refresh loop (closing the tab does too).
        rx.box(
            rx.cond(
                SendPageState.missing != "",
                rx.callout(SendPageState.missing, icon="triangle-alert", color_scheme="red",
                           id="campaign-missing"),
                rx.cond(
                    SendPageState.loaded,
                    send_page_body(),
                    rx.hstack(rx.spinner(), rx.text("Opening the campaign…"), align="center"),
                ),
            ),
            on_mount=SendPageState.arrive,
            on_unmount=SendPageState.leave,
            width="100%",
        ),
    )  # fmt: skip
