"""Suppression list: addresses no campaign is ever sent to (unsubscribes, bounces, ...)."""

from __future__ import annotations

import reflex as rx

from mailer_app import routes
from mailer_app.components.shell import field_error, page_frame
from mailer_app.services.suppressions import REASON_LABELS
from mailer_app.settings import get_settings
from mailer_app.state.auth import AuthState
from mailer_app.state.suppressions import REASON_FILTER_ALL, SuppressionsState

UPLOAD_ID = "suppressions-upload"


def reason_items() -> list[rx.Component]:
    return [rx.select.item(label, value=value) for value, label in REASON_LABELS.items()]


def add_form() -> rx.Component:
    return rx.form(
        rx.hstack(
            rx.vstack(
                rx.input(
                    id="sup-email", name="email", placeholder="someone@example.com",
                    width="260px",
                ),
                rx.cond(
                    SuppressionsState.add_error_field == "email",
                    field_error(SuppressionsState.add_error),
                ),
                spacing="1",
            ),
            rx.select.root(
                rx.select.trigger(id="sup-reason", width="170px"),
                rx.select.content(*reason_items()),
                value=SuppressionsState.add_reason,
                on_change=SuppressionsState.set_add_reason,
            ),
            rx.input(id="sup-note", name="note", placeholder="Note (optional)", width="240px"),
            rx.button(rx.icon("ban", size=16), "Suppress", type="submit", id="sup-add"),
            spacing="2",
            align="start",
            wrap="wrap",
        ),
        rx.cond(
            (SuppressionsState.add_error != "") & (SuppressionsState.add_error_field != "email"),
            field_error(SuppressionsState.add_error),
        ),
        on_submit=SuppressionsState.add,
        reset_on_submit=False,
        width="100%",
    )  # fmt: skip


def import_box() -> rx.Component:
    return rx.vstack(
        rx.hstack(
            rx.text("Import a CSV of addresses as", size="2"),
            rx.select.root(
                rx.select.trigger(id="sup-import-reason", width="170px"),
                rx.select.content(*reason_items()),
                value=SuppressionsState.import_reason,
                on_change=SuppressionsState.set_import_reason,
            ),
            rx.text(
                "(a column named reason in the file wins; a column named note is kept)",
                size="1", color_scheme="gray",
            ),
            align="center", spacing="2", wrap="wrap",
        ),
        rx.upload(
            rx.text("Drop a CSV file here, or click to choose one.", size="2"),
            id=UPLOAD_ID,
            accept={"text/csv": [".csv"], "text/plain": [".txt"]},
            max_files=1,
            multiple=False,
            max_size=get_settings().contacts_max_upload_bytes,
            on_drop=SuppressionsState.handle_upload(rx.upload_files_chunk(upload_id=UPLOAD_ID)),
            on_drop_rejected=SuppressionsState.upload_rejected,
            border="1px dashed var(--gray-a7)", padding="14px", width="100%", cursor="pointer",
        ),
        rx.cond(
            SuppressionsState.importing,
            rx.hstack(rx.spinner(size="2"), rx.text("Importing…", size="2")),
        ),
        field_error(SuppressionsState.import_error),
        rx.cond(
            SuppressionsState.import_result != "",
            rx.callout(SuppressionsState.import_result, icon="circle-check", id="sup-result"),
        ),
        rx.cond(
            SuppressionsState.import_errors.length() > 0,
            rx.vstack(
                rx.foreach(
                    SuppressionsState.import_errors,
                    lambda e: rx.text(
                        "Line " + e["line"] + ": " + e["reason"], size="1", color_scheme="orange"
                    ),
                ),
                id="sup-import-errors", spacing="1",
            ),
        ),
        spacing="2",
        width="100%",
    )  # fmt: skip


def search_bar() -> rx.Component:
    return rx.hstack(
        rx.form(
            rx.hstack(
                rx.input(
                    id="sup-search", name="search", placeholder="Search addresses",
                    default_value=SuppressionsState.search, width="260px",
                ),
                rx.button("Search", type="submit", variant="soft", id="sup-search-go"),
                spacing="2",
            ),
            on_submit=SuppressionsState.apply_search,
            reset_on_submit=False,
        ),
        rx.select.root(
            rx.select.trigger(id="sup-filter", width="170px"),
            rx.select.content(
                rx.select.item("Every reason", value=REASON_FILTER_ALL), *reason_items()
            ),
            value=SuppressionsState.reason_filter,
            on_change=SuppressionsState.set_reason_filter,
        ),
        rx.spacer(),
        rx.text(
            SuppressionsState.total.to_string() + " suppressed",
            size="2", color_scheme="gray", id="sup-total", white_space="nowrap",
        ),
        align="center", width="100%", spacing="2",
    )  # fmt: skip


def suppression_row(row: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.text(row["email"], weight="medium")),
        rx.table.cell(rx.badge(row["reason_label"], variant="soft")),
        rx.table.cell(rx.text(row["note"], size="2", color_scheme="gray")),
        rx.table.cell(rx.text(row["added"], size="1")),
        rx.cond(
            SuppressionsState.can_edit,
            rx.table.cell(
                rx.button(
                    "Remove", size="1", variant="soft", color_scheme="red",
                    on_click=SuppressionsState.ask_remove(row["id"], row["email"], row["reason"]),
                    id=f"sup-remove-{row['id']}",
                )
            ),
        ),
        align="center",
    )  # fmt: skip


def table() -> rx.Component:
    return rx.cond(
        SuppressionsState.rows.length() > 0,
        rx.vstack(
            rx.table.root(
                rx.table.header(
                    rx.table.row(
                        rx.table.column_header_cell("Address"),
                        rx.table.column_header_cell("Reason"),
                        rx.table.column_header_cell("Note"),
                        rx.table.column_header_cell("Added"),
                        rx.cond(SuppressionsState.can_edit, rx.table.column_header_cell("")),
                    )
                ),
                rx.table.body(rx.foreach(SuppressionsState.rows, suppression_row)),
                variant="surface",
                width="100%",
                id="suppression-table",
            ),
            rx.hstack(
                rx.button(
                    "Previous", size="1", variant="soft",
                    disabled=SuppressionsState.page <= 1,
                    on_click=SuppressionsState.go_to_page(SuppressionsState.page - 1),
                ),
                rx.text(
                    "Page " + SuppressionsState.page.to_string() + " of "
                    + SuppressionsState.pages.to_string(),
                    size="2",
                ),
                rx.button(
                    "Next", size="1", variant="soft",
                    disabled=SuppressionsState.page >= SuppressionsState.pages,
                    on_click=SuppressionsState.go_to_page(SuppressionsState.page + 1),
                ),
                align="center", spacing="3",
            ),
            width="100%",
            align="stretch",
        ),
        rx.callout(
            "No suppressed addresses match.", icon="inbox", id="no-suppressions",
        ),
    )  # fmt: skip


def remove_dialog() -> rx.Component:
    asked = (SuppressionsState.remove_reason == "unsubscribe") | (
        SuppressionsState.remove_reason == "complaint"
    )
    return rx.alert_dialog.root(
        rx.alert_dialog.content(
            rx.alert_dialog.title("Send to " + SuppressionsState.remove_email + " again?"),
            rx.alert_dialog.description(
                rx.cond(
                    asked,
                    "This person asked not to get your emails (or reported one as spam). "
                    "Remove them only if they asked to be added back.",
                    "The address goes back into campaigns to the lists it is in.",
                )
            ),
            field_error(SuppressionsState.remove_error),
            rx.hstack(
                rx.alert_dialog.cancel(rx.button("Cancel", variant="soft", color_scheme="gray")),
                rx.button(
                    "Remove from the list", color_scheme="red",
                    on_click=SuppressionsState.confirm_remove, id="sup-confirm-remove",
                ),
                justify="end", spacing="3", margin_top="16px",
            ),
        ),
        open=SuppressionsState.remove_id != "",
        on_open_change=SuppressionsState.close_remove,
    )  # fmt: skip


@rx.page(
    route=routes.SUPPRESSIONS,
    title="Suppression list · mailer",
    on_load=[AuthState.require_login, SuppressionsState.load],
)
def suppressions_page() -> rx.Component:
    return page_frame(
        "Suppression list",
        rx.text(
            "Addresses here never get a campaign: people who unsubscribed or complained, "
            "addresses that bounced for good, and any you add yourself. They are left out "
            "when a campaign is built and checked again just before each message is sent.",
            size="2",
            color_scheme="gray",
        ),
        rx.cond(SuppressionsState.can_edit, rx.card(rx.vstack(add_form(), import_box()))),
        field_error(SuppressionsState.notice),
        search_bar(),
        table(),
        remove_dialog(),
    )
