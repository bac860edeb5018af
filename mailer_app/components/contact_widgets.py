"""Widgets of the contacts page: the lists, and the three steps of a CSV import."""

from __future__ import annotations

import reflex as rx

from mailer_app.components.shell import field_error
from mailer_app.services.contact_csv import file_size_text
from mailer_app.settings import get_settings
from mailer_app.state.contacts import (
    NEW_LIST,
    TARGET_CHOICES,
    ContactImportState,
    ContactListsState,
)

UPLOAD_ID = "contacts-upload"


def spinner_text(text: str) -> rx.Component:
    return rx.hstack(rx.spinner(size="2"), rx.text(text, size="2"), align="center")


# --- lists -------------------------------------------------------------------------------


def list_row(row: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.text(row["name"], weight="medium")),
        rx.table.cell(rx.text(row["count"], id=f"list-count-{row['id']}")),
        rx.table.cell(rx.text(row["fields"], size="2", color_scheme="gray")),
        rx.cond(
            ContactListsState.can_edit,
            rx.table.cell(
                rx.hstack(
                    rx.button(
                        rx.icon("file-up", size=14), "Import CSV", size="1", variant="soft",
                        on_click=ContactImportState.import_into(row["id"]),
                        id=f"list-import-{row['id']}",
                    ),
                    rx.button(
                        "Rename", size="1", variant="soft", color_scheme="gray",
                        on_click=ContactListsState.start_rename(row["id"], row["name"]),
                        id=f"list-rename-{row['id']}",
                    ),
                    rx.button(
                        rx.icon("trash-2", size=14), size="1", variant="soft", color_scheme="red",
                        on_click=ContactListsState.ask_delete(row["id"], row["name"]),
                        id=f"list-delete-{row['id']}", aria_label="Delete list",
                    ),
                    spacing="2",
                )
            ),
        ),
        id=f"contact-list-{row['id']}",
        align="center",
    )  # fmt: skip


def lists_section() -> rx.Component:
    return rx.vstack(
        rx.cond(
            ContactListsState.can_edit,
            rx.vstack(
                # A form, not a controlled input: a click right after typing must see
                # the typed name (controlled inputs send changes debounced).
                rx.form(
                    rx.hstack(
                        rx.input(id="new-list-name", name="name", placeholder="New list name"),
                        rx.button("Create list", type="submit", id="create-list"),
                        spacing="2",
                    ),
                    on_submit=ContactListsState.create,
                    reset_on_submit=False,
                ),
                field_error(ContactListsState.create_error),
                spacing="2",
            ),
        ),
        field_error(ContactListsState.notice),
        rx.cond(
            ContactListsState.lists.length() > 0,
            rx.table.root(
                rx.table.header(
                    rx.table.row(
                        rx.table.column_header_cell("List"),
                        rx.table.column_header_cell("Contacts"),
                        rx.table.column_header_cell("Merge fields"),
                        rx.cond(ContactListsState.can_edit, rx.table.column_header_cell("")),
                    )
                ),
                rx.table.body(rx.foreach(ContactListsState.lists, list_row)),
                variant="surface",
                width="100%",
                id="contact-lists",
            ),
            rx.callout(
                "No contact lists yet. Import a CSV file from your spreadsheet or your old "
                "mailing tool below: its columns become the merge fields of your campaigns.",
                icon="users",
                id="no-lists",
            ),
        ),
        rename_dialog(),
        delete_dialog(),
        spacing="3",
        width="100%",
        align="stretch",
    )


def rename_dialog() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title("Rename list"),
            rx.form(
                rx.vstack(
                    rx.input(
                        id="rename-list-name", name="name",
                        default_value=ContactListsState.rename_name,
                    ),
                    field_error(ContactListsState.rename_error),
                    rx.hstack(
                        rx.dialog.close(
                            rx.button("Cancel", type="button", variant="soft", color_scheme="gray")
                        ),
                        rx.button("Save", type="submit", id="rename-list-save"),
                        justify="end", spacing="3", width="100%",
                    ),
                    spacing="3",
                ),
                on_submit=ContactListsState.save_rename,
                reset_on_submit=False,
            ),
            max_width="420px",
        ),
        open=ContactListsState.rename_id != "",
        on_open_change=ContactListsState.close_rename,
    )  # fmt: skip


def delete_dialog() -> rx.Component:
    return rx.alert_dialog.root(
        rx.alert_dialog.content(
            rx.alert_dialog.title("Delete the list " + ContactListsState.delete_name + "?"),
            rx.alert_dialog.description(
                "Its contacts and the reports of its imports are deleted too. Suppressed "
                "addresses stay suppressed."
            ),
            field_error(ContactListsState.delete_error),
            rx.hstack(
                rx.alert_dialog.cancel(rx.button("Cancel", variant="soft", color_scheme="gray")),
                rx.button(
                    "Delete", color_scheme="red", on_click=ContactListsState.confirm_delete,
                    id="confirm-delete-list",
                ),
                justify="end", spacing="3", margin_top="16px",
            ),
        ),
        open=ContactListsState.delete_id != "",
        on_open_change=ContactListsState.close_delete,
    )  # fmt: skip


# --- import: step 1, the file --------------------------------------------------------------


def upload_step() -> rx.Component:
    cap = get_settings().contacts_max_upload_bytes
    return rx.vstack(
        rx.text(
            "A CSV file with a header row: one column of email addresses, and any others you "
            "want as merge fields (names, customer numbers…). Up to "
            f"{file_size_text(cap)}; commas, semicolons or tabs between values.",
            size="2",
            color_scheme="gray",
        ),
        rx.upload(
            rx.vstack(
                rx.icon("file-up", size=24),
                rx.text("Drop a CSV file here, or click to choose one.", size="2"),
                align="center",
                spacing="1",
            ),
            id=UPLOAD_ID,
            accept={"text/csv": [".csv"], "text/plain": [".txt", ".tsv"]},
            max_files=1,
            multiple=False,
            max_size=cap,
            on_drop=ContactImportState.handle_upload(rx.upload_files_chunk(upload_id=UPLOAD_ID)),
            on_drop_rejected=ContactImportState.upload_rejected,
            border="1px dashed var(--gray-a7)",
            padding="20px",
            width="100%",
            cursor="pointer",
        ),
        rx.cond(ContactImportState.uploading, spinner_text("Uploading and reading the file…")),
        field_error(ContactImportState.upload_error),
        spacing="3",
        width="100%",
    )


# --- import: step 2, the columns -------------------------------------------------------------


def mapping_row(row: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.text(row["column"], weight="medium")),
        rx.table.cell(
            rx.select.root(
                rx.select.trigger(id=f"map-target-{row['index']}", width="170px"),
                rx.select.content(
                    *[rx.select.item(label, value=value) for value, label in TARGET_CHOICES]
                ),
                value=row["target"],
                on_change=lambda value: ContactImportState.set_target(row["index"], value),
            )
        ),
        rx.table.cell(
            rx.cond(
                row["target"] == "custom",
                rx.input(
                    name=f"field-{row['index']}",
                    default_value=row["field"],
                    id=f"map-field-{row['index']}",
                    size="1",
                    width="160px",
                ),
                rx.text("—", color_scheme="gray"),
            )
        ),
        rx.table.cell(rx.text(row["sample"], size="1", color_scheme="gray")),
        id=f"map-row-{row['index']}",
        align="center",
    )


def preview_table() -> rx.Component:
    return rx.box(
        rx.table.root(
            rx.table.header(
                rx.table.row(
                    rx.foreach(ContactImportState.columns, lambda c: rx.table.column_header_cell(c))
                )
            ),
            rx.table.body(
                rx.foreach(
                    ContactImportState.preview_rows,
                    lambda r: rx.table.row(rx.foreach(r, lambda v: rx.table.cell(v))),
                )
            ),
            size="1",
            variant="surface",
            id="csv-preview",
        ),
        overflow_x="auto",
        width="100%",
    )


def list_choice() -> rx.Component:
    return rx.hstack(
        rx.text("Import into", size="2", weight="medium"),
        rx.select.root(
            rx.select.trigger(id="import-list", width="220px"),
            rx.select.content(
                rx.select.item("A new list…", value=NEW_LIST),
                rx.foreach(
                    ContactListsState.lists, lambda cl: rx.select.item(cl["name"], value=cl["id"])
                ),
            ),
            value=ContactImportState.list_choice,
            on_change=ContactImportState.set_list_choice,
        ),
        rx.cond(
            ContactImportState.list_choice == NEW_LIST,
            rx.input(
                name="new_list",
                id="import-new-list",
                placeholder="Name of the new list",
                width="240px",
            ),
        ),  # fmt: skip
        align="center",
        spacing="2",
        wrap="wrap",
    )


def mapping_step() -> rx.Component:
    return rx.form(
        rx.vstack(
            rx.hstack(
                rx.icon("file-text", size=18),
                rx.text(ContactImportState.filename, weight="bold", id="import-filename"),
                rx.text(ContactImportState.file_facts, size="2", color_scheme="gray"),
                align="center",
                spacing="2",
            ),
            rx.text(
                "Say what each column holds. Custom fields become merge fields you can use "
                "in your emails, like {{ customer_id }}.",
                size="2",
                color_scheme="gray",
            ),
            rx.table.root(
                rx.table.header(
                    rx.table.row(
                        rx.table.column_header_cell("Column in the file"),
                        rx.table.column_header_cell("Import as"),
                        rx.table.column_header_cell("Merge field name"),
                        rx.table.column_header_cell("Example"),
                    )
                ),
                rx.table.body(rx.foreach(ContactImportState.mapping, mapping_row)),
                size="1",
                width="100%",
                id="column-mapping",
            ),
            rx.text("The first rows of the file:", size="2", weight="medium"),
            preview_table(),
            rx.cond(
                ContactImportState.preview_problems.length() > 0,
                rx.callout(
                    rx.vstack(
                        rx.text("Rows that will be skipped:", weight="medium", size="2"),
                        rx.foreach(
                            ContactImportState.preview_problems, lambda p: rx.text(p, size="1")
                        ),
                        spacing="1",
                    ),
                    icon="triangle-alert",
                    color_scheme="orange",
                    id="preview-problems",
                ),
            ),
            list_choice(),
            field_error(ContactImportState.mapping_error),
            rx.hstack(
                rx.button(
                    "Choose another file",
                    type="button",
                    variant="soft",
                    color_scheme="gray",
                    on_click=ContactImportState.start_over,
                    id="import-cancel",
                ),
                rx.button(
                    rx.cond(
                        ContactImportState.starting,
                        rx.spinner(size="2"),
                        rx.icon("import", size=16),
                    ),
                    "Import contacts",
                    type="submit",
                    disabled=ContactImportState.starting,
                    id="start-import",
                ),
                justify="end",
                width="100%",
                spacing="3",
            ),  # fmt: skip
            spacing="3",
            width="100%",
            align="stretch",
        ),
        on_submit=ContactImportState.start_import,
        reset_on_submit=False,
        id="mapping-form",
        width="100%",
    )


# --- import: step 3, progress and the report -------------------------------------------------


def import_errors() -> rx.Component:
    return rx.vstack(
        rx.box(
            rx.table.root(
                rx.table.header(
                    rx.table.row(
                        rx.table.column_header_cell("Line"),
                        rx.table.column_header_cell("Email"),
                        rx.table.column_header_cell("Why it was skipped"),
                    )
                ),
                rx.table.body(
                    rx.foreach(
                        ContactImportState.import_errors,
                        lambda e: rx.table.row(
                            rx.table.cell(e["line"]),
                            rx.table.cell(e["email"]),
                            rx.table.cell(e["reason"]),
                        ),
                    )
                ),
                size="1",
                width="100%",
                id="import-errors",
            ),
            max_height="320px",
            overflow_y="auto",
            width="100%",
        ),
        rx.cond(
            ContactImportState.import_more_errors > 0,
            rx.text(
                "…and " + ContactImportState.import_more_errors.to_string() + " more.",
                size="2",
                color_scheme="gray",
            ),
        ),
        rx.cond(
            ContactImportState.import_report != "",
            rx.link(
                rx.hstack(
                    rx.icon("download", size=14), rx.text("Download every skipped row (CSV)")
                ),
                href=ContactImportState.import_report,
                is_external=True,
                id="import-report",
            ),
        ),
        spacing="2",
        width="100%",
    )


def progress_step() -> rx.Component:
    finished = (ContactImportState.import_status == "done") | (
        ContactImportState.import_status == "failed"
    )
    return rx.vstack(
        rx.hstack(
            rx.text(ContactImportState.filename, weight="bold"),
            rx.text("→ " + ContactImportState.import_list, size="2", color_scheme="gray"),
            align="center",
            spacing="2",
        ),
        rx.progress(
            value=ContactImportState.import_percent,
            max=100,
            width="100%",
            color_scheme=rx.cond(ContactImportState.import_status == "failed", "red", "accent"),
            id="import-progress",
        ),
        rx.callout(
            ContactImportState.import_summary,
            icon=rx.cond(
                ContactImportState.import_status == "done",
                "circle-check",
                rx.cond(ContactImportState.import_status == "failed", "triangle-alert", "loader"),
            ),
            color_scheme=rx.cond(
                ContactImportState.import_status == "done",
                "green",
                rx.cond(ContactImportState.import_status == "failed", "red", "blue"),
            ),
            id="import-summary",
        ),
        rx.cond(ContactImportState.import_errors.length() > 0, import_errors()),
        rx.cond(
            finished,
            rx.button(
                rx.icon("file-up", size=16),
                "Import another file",
                variant="soft",
                on_click=ContactImportState.start_over,
                id="import-another",
            ),
        ),  # fmt: skip
        spacing="3",
        width="100%",
        align="stretch",
    )


def import_section() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.heading("Import contacts", size="4"),
            rx.match(
                ContactImportState.step,
                ("mapping", mapping_step()),
                ("progress", progress_step()),
                upload_step(),
            ),
            spacing="3",
            width="100%",
        ),
        id="contact-import",
        width="100%",
    )


def recent_imports() -> rx.Component:
    return rx.cond(
        ContactImportState.recent.length() > 0,
        rx.vstack(
            rx.heading("Recent imports", size="4"),
            rx.table.root(
                rx.table.header(
                    rx.table.row(
                        rx.table.column_header_cell("When"),
                        rx.table.column_header_cell("File"),
                        rx.table.column_header_cell("List"),
                        rx.table.column_header_cell("Result"),
                        rx.table.column_header_cell(""),
                    )
                ),
                rx.table.body(
                    rx.foreach(
                        ContactImportState.recent,
                        lambda r: rx.table.row(
                            rx.table.cell(rx.text(r["when"], size="1")),
                            rx.table.cell(r["filename"]),
                            rx.table.cell(r["list"]),
                            rx.table.cell(rx.text(r["counts"], size="2")),
                            rx.table.cell(
                                rx.button(
                                    "Details",
                                    size="1",
                                    variant="soft",
                                    on_click=ContactImportState.show_import(r["id"]),
                                )
                            ),
                        ),
                    )
                ),
                size="1",
                width="100%",
                id="recent-imports",
            ),  # fmt: skip
            spacing="2",
            width="100%",
            align="stretch",
        ),
    )
