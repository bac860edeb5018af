"""The report page's parts: send counts, review counts, failures, placement, exports
and the "Email the report" form. The tiles and the failures table are the send
page's own (components/send_widgets.py).

Element ids are stable for tests: report-status, report-progress, count-<sent|failed|
unknown|remaining>, review-table, failures-table, placement-table, report-csv,
report-json, report-send-link, email-to, email-sender, email-report, email-notice.
"""

from __future__ import annotations

import reflex as rx

from mailer_app.components.send_widgets import _failure_row, _tile
from mailer_app.state.report import ReportPageState

R = ReportPageState


def report_header() -> rx.Component:
    return rx.hstack(
        rx.badge(R.status_label, color_scheme=R.status_color, variant="soft", size="2",
                 id="report-status"),
        rx.text(R.status_reason, size="2", color_scheme="gray"),
        rx.spacer(),
        rx.link(rx.hstack(rx.icon("download", size=14), rx.text("CSV")), href=R.csv_href,
                is_external=True, id="report-csv"),
        rx.link(rx.hstack(rx.icon("braces", size=14), rx.text("JSON")), href=R.json_href,
                is_external=True, id="report-json"),
        rx.link("Send page", href=R.send_href, id="report-send-link"),
        align="center", width="100%", spacing="4",
    )  # fmt: skip


def send_counts() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.hstack(
                rx.text("Sending", size="4", weight="bold"),
                rx.spacer(),
                rx.text(R.percent_text, size="4", weight="bold", id="report-percent"),
                width="100%",
            ),
            rx.progress(value=R.bar_value, max=100, width="100%", id="report-progress"),
            rx.grid(
                _tile("Sent", R.sent, "Accepted by the recipient's mail server.", "count-sent",
                      "green"),
                _tile("Failed", R.failed, "Refused or undeliverable.", "count-failed", "red"),
                _tile("Unknown", R.unknown, "No answer from the mail server.", "count-unknown",
                      "orange"),
                _tile("Still to send", R.remaining, "Queued or being handed over.",
                      "count-remaining"),
                columns="4", spacing="3", width="100%",
            ),
            rx.text("Messages in the send: ", R.total, " · speed: ", R.rate, size="2",
                    color_scheme="gray"),
            spacing="3", width="100%",
        ),
        width="100%",
    )  # fmt: skip


def _count_row(item: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.text(item["status"], size="2")),
        rx.table.cell(rx.text(item["count"], size="2", weight="bold"), justify="end"),
    )


def review_counts() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.text("Review", size="4", weight="bold"),
            rx.text("Every built message by what the review gate said (", R.review_total,
                    " in all).", size="2", color_scheme="gray"),
            rx.table.root(
                rx.table.header(rx.table.row(
                    rx.table.column_header_cell("Review status"),
                    rx.table.column_header_cell("Messages", justify="end"),
                )),
                rx.table.body(rx.foreach(R.review_rows, _count_row)),
                width="100%", id="review-table",
            ),
            spacing="2", width="100%",
        ),
        width="100%",
    )  # fmt: skip


def failures() -> rx.Component:
    return rx.cond(
        R.failures.length() > 0,
        rx.card(
            rx.vstack(
                rx.text("Why messages failed", size="4", weight="bold"),
                rx.table.root(
                    rx.table.header(rx.table.row(
                        rx.table.column_header_cell("What the mail server said"),
                        rx.table.column_header_cell("Messages", justify="end"),
                    )),
                    rx.table.body(rx.foreach(R.failures, _failure_row)),
                    width="100%", id="failures-table",
                ),
                rx.cond(R.failures_more != "", rx.text(R.failures_more, size="1")),
                spacing="2", width="100%",
            ),
            width="100%",
        ),
    )  # fmt: skip


def _placement_row(item: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(item["run"]), rx.table.cell(item["status"]), rx.table.cell(item["esp"]),
        rx.table.cell(item["checked"]), rx.table.cell(item["inbox"]),
        rx.table.cell(item["spam"]), rx.table.cell(item["promotions"]),
        rx.table.cell(item["missing"]), rx.table.cell(item["pending"]),
    )  # fmt: skip


def placement() -> rx.Component:
    headers = ("Run", "Status", "Mailbox provider", "Checked", "Inbox", "Spam", "Promotions",
               "Missing", "Pending")  # fmt: skip
    return rx.card(
        rx.vstack(
            rx.text("Inbox placement", size="4", weight="bold"),
            rx.cond(
                R.placement_rows.length() > 0,
                rx.table.root(
                    rx.table.header(rx.table.row(
                        *[rx.table.column_header_cell(h) for h in headers]
                    )),
                    rx.table.body(rx.foreach(R.placement_rows, _placement_row)),
                    width="100%", id="placement-table",
                ),
                rx.text("No seed mailboxes went out with this campaign.", size="2",
                        color_scheme="gray", id="no-placement"),
            ),
            rx.text("Rates are of the seeds checked so far (pending seeds are not counted).",
                    size="1", color_scheme="gray"),
            spacing="2", width="100%",
        ),
        width="100%",
    )  # fmt: skip


def email_form() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.text("Email the report", size="4", weight="bold"),
            rx.text("The summary in the message, every recipient's record attached as CSV.",
                    size="2", color_scheme="gray"),
            rx.hstack(
                rx.input(placeholder="lead@example.com, boss@example.com", value=R.email_to,
                         on_change=R.set_email_to, width="100%", id="email-to"),
                rx.select(R.sender_options, value=R.email_sender,
                          on_change=R.set_email_sender,
                          placeholder="The campaign's sender account", id="email-sender"),
                rx.button(rx.icon("send", size=14), "Email it", on_click=R.send_email,
                          loading=R.email_busy, disabled=~R.can_email, id="email-report"),
                width="100%", spacing="2",
            ),
            rx.cond(
                R.email_notice != "",
                rx.callout(R.email_notice,
                           icon=rx.cond(R.email_ok, "circle-check", "triangle-alert"),
                           color_scheme=rx.cond(R.email_ok, "green", "red"), id="email-notice"),
            ),
            rx.cond(~R.can_email, rx.text("Viewers may read the report but not email it.",
                                          size="1", color_scheme="gray")),
            spacing="2", width="100%",
        ),
        width="100%",
    )  # fmt: skip


def report_body() -> rx.Component:
    return rx.vstack(
        report_header(),
        rx.cond(
            R.queued_ever,
            send_counts(),
            rx.callout("This campaign has not been sent yet: the numbers below are of its "
                       "built messages.", icon="info", id="not-sent-yet"),
        ),
        rx.grid(review_counts(), failures(), columns="2", spacing="4", width="100%"),
        placement(),
        email_form(),
        spacing="4", width="100%", align="stretch",
    )  # fmt: skip
