"""Sender accounts: the email accounts campaigns and pre-flight tests are sent from."""

from __future__ import annotations

import reflex as rx

from mailer_app import routes
from mailer_app.components.sender_widgets import (
    delete_dialog,
    row_test_result,
    sender_dkim_dialog,
    sender_form_dialog,
    sender_table,
)
from mailer_app.components.shell import page_frame
from mailer_app.state.auth import AuthState
from mailer_app.state.senders import SenderFormState, SendersState


def toolbar() -> rx.Component:
    return rx.hstack(
        rx.text(
            "Campaigns go out through these email accounts. Each one needs its provider's "
            "outgoing mail server and a password; the Test button checks them without "
            "sending anything.",
            size="2",
            color_scheme="gray",
        ),
        rx.spacer(),
        rx.cond(
            SendersState.can_edit,
            rx.button(
                rx.icon("plus", size=16),
                "Add sender account",
                on_click=SenderFormState.open_add,
                id="add-sender",
            ),
        ),
        align="center",
        width="100%",
        spacing="4",
    )


def notice() -> rx.Component:
    return rx.cond(
        SendersState.notice != "",
        rx.callout(SendersState.notice, icon="info", size="1", id="senders-notice"),
    )


@rx.page(
    route=routes.SENDERS,
    title="Sender accounts · mailer",
    on_load=[AuthState.require_login, SendersState.load],
)
def senders_page() -> rx.Component:
    return page_frame(
        "Sender accounts",
        toolbar(),
        notice(),
        row_test_result(),
        sender_table(),
        sender_form_dialog(),
        sender_dkim_dialog(),
        delete_dialog(),
    )
