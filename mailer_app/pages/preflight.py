"""Pre-flight test: send the message to the seed mailboxes only and see where it lands."""

from __future__ import annotations

import reflex as rx

from mailer_app import routes
from mailer_app.components.shell import field_error, page_frame
from mailer_app.state.auth import AuthState
from mailer_app.state.preflight import PreflightState


def _labelled(label: str, control: rx.Component) -> rx.Component:
    return rx.vstack(rx.text(label, size="2", weight="medium"), control, spacing="1", width="100%")


def _choice(option: rx.Var) -> rx.Component:
    return rx.select.item(option["label"], value=option["id"])


def test_form() -> rx.Component:
    # Subject and body are read from the submitted form, so a click right after
    # typing sends what was typed (controlled inputs send their changes debounced).
    return rx.card(
        rx.form(
            rx.vstack(
                rx.text(
                    "Sends your message to the seed mailboxes only (one copy each, from the "
                    "sender you choose), then looks into each mailbox at +1, +3, +5 and +10 "
                    "minutes to find where it landed. Nobody else receives it.",
                    size="2",
                    color_scheme="gray",
                ),
                rx.hstack(
                    _labelled(
                        "Send from",
                        rx.select.root(
                            rx.select.trigger(
                                placeholder="Choose a sender account",
                                width="100%",
                                id="preflight-sender",
                            ),
                            rx.select.content(rx.foreach(PreflightState.sender_choices, _choice)),
                            value=PreflightState.sender_id,
                            on_change=PreflightState.set_sender,
                        ),
                    ),
                    _labelled(
                        "Seed mailboxes",
                        rx.select.root(
                            rx.select.trigger(width="100%", id="preflight-seeds"),
                            rx.select.content(rx.foreach(PreflightState.list_choices, _choice)),
                            value=PreflightState.seed_list_id,
                            on_change=PreflightState.set_seed_list,
                        ),
                    ),
                    width="100%",
                    spacing="4",
                ),
                _labelled(
                    "Subject",
                    rx.input(
                        name="subject",
                        placeholder="The subject line of your campaign",
                        id="preflight-subject",
                        width="100%",
                    ),
                ),
                _labelled(
                    "Message",
                    rx.text_area(
                        name="body",
                        placeholder="The text of your message",
                        rows="6",
                        id="preflight-body",
                        width="100%",
                    ),
                ),
                field_error(PreflightState.error),
                rx.hstack(
                    rx.button(
                        rx.icon("send", size=16),
                        "Run pre-flight test",
                        type="submit",
                        loading=PreflightState.starting,
                        disabled=AuthState.role == "viewer",
                        id="preflight-run",
                    ),
                    rx.link("Manage seed mailboxes", href=routes.SEEDS, size="2"),
                    align="center",
                    spacing="4",
                ),
                spacing="3",
                align="stretch",
            ),
            on_submit=PreflightState.start,
            reset_on_submit=False,
        )
    )


def _count_badge(count: rx.Var) -> rx.Component:
    return rx.badge(count["placement"], ": ", count["count"], color_scheme=count["color"], size="2")


def _result_row(row: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(row["email"]),
        rx.table.cell(row["esp"]),
        rx.table.cell(
            rx.badge(row["placement"], color_scheme=row["color"], variant="solid"),
            class_name="placement",
        ),
        rx.table.cell(row["folder"]),
        rx.table.cell(row["landed"]),
        rx.table.cell(rx.text(row["auth"], size="1")),
        rx.table.cell(rx.text(row["note"], size="1", color_scheme="gray")),
        id="result-" + row["email"],
    )


def run_results() -> rx.Component:
    return rx.cond(
        PreflightState.run_id > 0,
        rx.card(
            rx.vstack(
                rx.hstack(
                    rx.heading("Results of test ", PreflightState.run_id, size="4"),
                    rx.spacer(),
                    rx.cond(
                        PreflightState.running,
                        rx.hstack(rx.spinner(size="2"), rx.text("Checking mailboxes…", size="2")),
                        rx.badge("finished", color_scheme="green", id="preflight-finished"),
                    ),
                    align="center",
                    width="100%",
                ),
                rx.progress(value=PreflightState.percent, max=100, id="preflight-progress"),
                rx.text(
                    PreflightState.decided,
                    " of ",
                    PreflightState.total,
                    " seed mailboxes have a result.",
                    size="2",
                    id="preflight-summary",
                ),
                rx.hstack(rx.foreach(PreflightState.counts, _count_badge), wrap="wrap"),
                rx.table.root(
                    rx.table.header(
                        rx.table.row(
                            *[
                                rx.table.column_header_cell(name)
                                for name in (
                                    "Seed",
                                    "Provider",
                                    "Placement",
                                    "Folder",
                                    "Landed after",
                                    "Authentication",
                                    "Note",
                                )
                            ]
                        )
                    ),
                    rx.table.body(rx.foreach(PreflightState.rows, _result_row)),
                    width="100%",
                    id="preflight-results",
                ),
                spacing="3",
                align="stretch",
            )
        ),
    )


@rx.page(
    route=routes.PREFLIGHT,
    title="Pre-flight test · mailer",
    on_load=[AuthState.require_login, PreflightState.load],
)
def preflight_page() -> rx.Component:
    return page_frame(
        "Pre-flight test",
        # Leaving the page stops its refresh loop (closing the tab does too).
        rx.vstack(
            test_form(),
            run_results(),
            on_mount=PreflightState.arrive,
            on_unmount=PreflightState.leave,
            spacing="4",
            align="stretch",
            width="100%",
        ),
    )
