"""The send page's parts: header, progress and counters, controls, failures, unknowns.

Element ids are stable for tests: send-status, send-status-reason, send-notice,
send-progress, send-percent, send-summary, count-<sent|failed|unknown|remaining|
not-sent> (the number inside has class "count"), send-rate, send-eta, send-seeds,
pause-send, resume-send, cancel-send, confirm-cancel-send, keep-sending,
failures-table, unknown-table, not-queued.
"""

from __future__ import annotations

import reflex as rx

from mailer_app import routes
from mailer_app.state.sending import UNKNOWN_EXPLANATION, SendPageState

P = SendPageState

# --- header -----------------------------------------------------------------------------------


def send_header() -> rx.Component:
    return rx.vstack(
        rx.hstack(
            rx.badge(P.status_label, color_scheme=P.status_color, variant="soft", size="2",
                     id="send-status"),
            rx.text(P.status_reason, size="2", color_scheme="gray", id="send-status-reason"),
            rx.spacer(),
            rx.link("Review messages", href=P.review_href, size="2", id="review-link"),
            rx.link("Report", href=f"{routes.CAMPAIGNS}/{P.campaign_id}/report", size="2",
                    id="report-link"),
            rx.link("All campaigns", href=routes.CAMPAIGNS, size="2", id="back-to-list"),
            align="center",
            width="100%",
            spacing="3",
        ),
        rx.cond(
            P.notice != "",
            rx.callout(P.notice, icon=rx.cond(P.notice_ok, "circle-check", "triangle-alert"),
                       color_scheme=rx.cond(P.notice_ok, "green", "red"), id="send-notice"),
        ),
        spacing="2",
        width="100%",
    )  # fmt: skip


def not_queued() -> rx.Component:
    return rx.callout(
        rx.text(
            "This campaign has not been sent yet. Check its messages and press Send on ",
            rx.link("the review page", href=P.review_href),
            ".",
        ),
        icon="info",
        id="not-queued",
    )


# --- progress and counters --------------------------------------------------------------------


def _tile(label: str, value: rx.Var, explanation: str, tile_id: str, color: str = "gray"):
    return rx.card(
        rx.vstack(
            rx.text(label, size="2", weight="medium", color_scheme=color),
            rx.text(value, size="6", weight="bold", class_name="count"),
            rx.text(explanation, size="1", color_scheme="gray"),
            spacing="1",
        ),
        id=tile_id,
        width="100%",
    )


def progress_panel() -> rx.Component:
    last_tile = rx.cond(
        P.status == "cancelled",
        _tile("Not sent (cancelled)", P.not_sent, "Cancelled before they went out: they will "
              "never be sent.", "count-not-sent", "red"),
        _tile("Still to send", P.remaining, "Waiting in the queue or being handed over now.",
              "count-remaining"),
    )  # fmt: skip
    return rx.card(
        rx.vstack(
            rx.hstack(
                rx.text("Progress", size="4", weight="bold"),
                rx.spacer(),
                rx.text(P.percent_text, size="4", weight="bold", id="send-percent"),
                align="center",
                width="100%",
            ),
            rx.progress(value=P.bar_value, max=100, width="100%", id="send-progress",
                        color_scheme=rx.cond(P.status == "cancelled", "red", "accent")),
            rx.text(P.summary, size="2", id="send-summary"),
            rx.grid(
                _tile("Sent", P.sent, "Accepted by the recipient's mail server.", "count-sent",
                      "green"),
                _tile("Failed", P.failed, "Refused or undeliverable: see the reasons below.",
                      "count-failed", "red"),
                _tile("Unknown", P.unknown, "No answer from the mail server: a person decides.",
                      "count-unknown", "orange"),
                last_tile,
                columns="4",
                spacing="3",
                width="100%",
            ),
            rx.hstack(
                rx.text("Speed: ", rx.text.strong(P.rate, id="send-rate"), size="2"),
                rx.text("Time left: ", rx.text.strong(P.eta, id="send-eta"), size="2"),
                rx.cond(P.seeds != "", rx.text(P.seeds, size="2", id="send-seeds")),
                rx.cond(P.started != "", rx.text("Started ", P.started, size="2",
                                                 color_scheme="gray")),
                rx.cond(P.finished != "", rx.text("Finished ", P.finished, size="2",
                                                  color_scheme="gray")),
                spacing="5",
                wrap="wrap",
            ),
            spacing="3",
            width="100%",
        ),
        width="100%",
        id="progress-panel",
    )  # fmt: skip


# --- controls ---------------------------------------------------------------------------------


def controls() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.hstack(
                rx.button(rx.icon("pause", size=16), "Pause", on_click=P.pause, variant="soft",
                          disabled=~P.can_pause | P.busy, id="pause-send"),
                rx.button(rx.icon("play", size=16), "Resume", on_click=P.resume,
                          disabled=~P.can_resume | P.busy, id="resume-send"),
                rx.button(rx.icon("circle-stop", size=16), "Cancel the send",
                          on_click=P.open_cancel, color_scheme="red", variant="soft",
                          disabled=~P.can_cancel | P.busy, id="cancel-send"),
                rx.cond(P.busy, rx.spinner(size="2")),
                spacing="3",
                align="center",
            ),
            rx.cond(
                P.can_control,
                rx.text("Pause stops the send within seconds and Resume carries on where it "
                        "stopped: no one gets a message twice. Cancel stops it for good.",
                        size="1", color_scheme="gray"),
                rx.text("Only an owner, an admin or a sender may pause, resume or cancel a "
                        "send.", size="1", color_scheme="gray", id="control-role"),
            ),
            spacing="2",
            width="100%",
        ),
        width="100%",
        id="send-controls",
    )  # fmt: skip


def _confirm_dialog(
    *,
    title: str,
    description: list,
    keep: tuple[str, str],
    confirm: tuple[str, str],
    color: str,
    on_confirm,
    is_open,
    on_open_change,
) -> rx.Component:
    """A confirmation: `keep` and `confirm` are (label, id) of its two buttons."""
    return rx.alert_dialog.root(
        rx.alert_dialog.content(
            rx.alert_dialog.title(title),
            rx.alert_dialog.description(*description),
            rx.hstack(
                rx.alert_dialog.cancel(rx.button(keep[0], variant="soft", color_scheme="gray",
                                                 id=keep[1])),
                rx.button(confirm[0], color_scheme=color, on_click=on_confirm, loading=P.busy,
                          id=confirm[1]),
                justify="end", spacing="3", margin_top="16px",
            ),
        ),
        open=is_open,
        on_open_change=on_open_change,
    )  # fmt: skip


def cancel_dialog() -> rx.Component:
    return _confirm_dialog(
        title="Cancel this send?",
        description=["The ", P.remaining, " messages not sent yet will never be sent, and the "
                     "send cannot be started again. Messages already sent cannot be called back."],
        keep=("Keep sending", "keep-sending"), confirm=("Cancel the send", "confirm-cancel-send"),
        color="red", on_confirm=P.confirm_cancel, is_open=P.cancel_open,
        on_open_change=P.set_cancel_open,
    )  # fmt: skip


# --- failures and unknowns --------------------------------------------------------------------


def _failure_row(item: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.text(item["reason"], size="2")),
        rx.table.cell(rx.text(item["count"], size="2", weight="bold"), justify="end"),
    )


def failures_panel() -> rx.Component:
    return rx.cond(
        P.failures.length() > 0,
        rx.card(
            rx.vstack(
                rx.text("Why messages failed", size="4", weight="bold"),
                rx.text("The mail server refused these, or they could not be delivered; "
                        "they are not tried again.", size="2", color_scheme="gray"),
                rx.table.root(
                    rx.table.header(rx.table.row(
                        rx.table.column_header_cell("What the mail server said"),
                        rx.table.column_header_cell("Messages", justify="end"),
                    )),
                    rx.table.body(rx.foreach(P.failures, _failure_row)),
                    width="100%",
                    id="failures-table",
                ),
                rx.cond(P.failures_more != "", rx.text(P.failures_more, size="1",
                                                       color_scheme="gray")),
                spacing="2",
                width="100%",
            ),
            width="100%",
            id="failures-panel",
        ),
    )  # fmt: skip


def _unknown_row(item: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.text(item["email"], size="2")),
        rx.table.cell(rx.text(item["submitted"], size="2")),
        rx.table.cell(rx.text(item["error"], size="1", color_scheme="gray")),
        id="unknown-" + item["id"],
    )


def resend_dialog() -> rx.Component:
    return _confirm_dialog(
        title="Send these messages again?",
        description=["Some of the ", P.unknown, " recipients may already have received their "
                     "message: they would get it twice. Send again only if that is better than "
                     "some of them getting nothing."],
        keep=("Leave them", "keep-unknown"),
        confirm=("Send them again", "confirm-resend-unknown"),
        color="orange", on_confirm=P.confirm_resend, is_open=P.resend_open,
        on_open_change=P.set_resend_open,
    )  # fmt: skip


def unknown_panel() -> rx.Component:
    return rx.cond(
        P.unknown_rows.length() > 0,
        rx.card(
            rx.vstack(
                rx.text("Messages we are not sure about", size="4", weight="bold"),
                rx.callout(UNKNOWN_EXPLANATION, icon="circle-help", color_scheme="orange",
                           size="1"),
                rx.table.root(
                    rx.table.header(rx.table.row(
                        rx.table.column_header_cell("Recipient"),
                        rx.table.column_header_cell("Handed to the mail server"),
                        rx.table.column_header_cell("What happened"),
                    )),
                    rx.table.body(rx.foreach(P.unknown_rows, _unknown_row)),
                    width="100%",
                    id="unknown-table",
                ),
                rx.cond(P.unknown_more != "", rx.text(P.unknown_more, size="1",
                                                      color_scheme="gray")),
                rx.cond(
                    P.can_control,
                    rx.button(rx.icon("send", size=16), "Send these again…", variant="soft",
                              color_scheme="orange", on_click=P.set_resend_open(True),
                              disabled=P.busy | (P.status == "cancelled"), id="resend-unknown"),
                ),
                resend_dialog(),
                spacing="2",
                width="100%",
            ),
            width="100%",
            id="unknown-panel",
        ),
    )  # fmt: skip


def send_page_body() -> rx.Component:
    return rx.vstack(
        send_header(),
        rx.cond(
            P.queued_ever,
            rx.vstack(progress_panel(), controls(), failures_panel(), unknown_panel(),
                      cancel_dialog(), spacing="4", width="100%", align="stretch"),
            not_queued(),
        ),
        spacing="4",
        width="100%",
        align="stretch",
    )  # fmt: skip
