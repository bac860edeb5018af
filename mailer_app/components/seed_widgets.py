"""Widgets of the seed manager: the seed table, the add/edit dialog, CSV import, lists."""

from __future__ import annotations

import reflex as rx

from mailer_app.components.shell import field_error
from mailer_app.state.seeds import SeedFormState, SeedImportState, SeedListsState, SeedsState

SECURITY_OPTIONS = [
    ("tls", "TLS (encrypted, usually port 993)"),
    ("starttls", "STARTTLS (encrypted, usually port 143)"),
    ("plain", "None (only for servers on this machine)"),
]


def spinner_text(text: str) -> rx.Component:
    return rx.hstack(rx.spinner(size="2"), rx.text(text, size="2"), align="center")


# --- the table -------------------------------------------------------------------------


def status_badge(row: rx.Var) -> rx.Component:
    return rx.vstack(
        rx.badge(
            row["status_label"],
            color_scheme=row["status_color"],
            variant="soft",
            id=f"seed-status-{row['id']}",
        ),
        rx.cond(row["reason"] != "", rx.text(row["reason"], size="1", color_scheme="gray")),
        spacing="1",
        align="start",
        max_width="260px",
    )


def _resume_button(row: rx.Var) -> rx.Component:
    return rx.button(
        rx.icon("play", size=14),
        "Resume",
        size="1",
        variant="soft",
        color_scheme="green",
        on_click=SeedsState.set_paused(row["id"], False),
        id=f"seed-resume-{row['id']}",
    )


def _pause_button(row: rx.Var) -> rx.Component:
    return rx.button(
        rx.icon("pause", size=14),
        "Pause",
        size="1",
        variant="soft",
        color_scheme="gray",
        on_click=SeedsState.set_paused(row["id"], True),
        id=f"seed-pause-{row['id']}",
    )


def row_actions(row: rx.Var) -> rx.Component:
    testing_this = SeedsState.testing_id == row["id"]
    return rx.hstack(
        rx.button(
            rx.cond(testing_this, rx.spinner(size="1"), rx.icon("plug-zap", size=14)),
            "Test",
            size="1",
            variant="soft",
            disabled=SeedsState.testing_id != "",
            on_click=SeedsState.test_row(row["id"]),
            id=f"seed-test-{row['id']}",
        ),
        rx.button(
            rx.icon("pencil", size=14),
            "Edit",
            size="1",
            variant="soft",
            on_click=SeedFormState.open_edit(row["id"]),
            id=f"seed-edit-{row['id']}",
        ),
        rx.cond(row["status"] == "paused", _resume_button(row), _pause_button(row)),
        rx.cond(
            (row["status"] == "auth_expired") | (row["status"] == "error"), _resume_button(row)
        ),
        rx.button(
            rx.icon("trash-2", size=14),
            size="1",
            variant="soft",
            color_scheme="red",
            on_click=SeedsState.ask_delete(row["id"], row["email"]),
            id=f"seed-delete-{row['id']}",
            aria_label="Delete",
        ),
        spacing="2",
    )


def seed_row(row: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(
            rx.vstack(
                rx.text(row["email"], weight="medium"),
                rx.text(row["server"], size="1", color_scheme="gray"),
                rx.cond(
                    row["folders"] != "", rx.text(row["folders"], size="1", color_scheme="gray")
                ),
                spacing="0",
                max_width="280px",
            )
        ),
        rx.table.cell(row["provider"]),
        rx.table.cell(status_badge(row)),
        rx.table.cell(rx.text(row["last_check"], size="2")),
        rx.table.cell(rx.text(row["last_placement"], size="2")),
        rx.cond(SeedsState.can_edit, rx.table.cell(row_actions(row))),
        id=f"seed-row-{row['id']}",
        align="center",
    )


def seed_table() -> rx.Component:
    return rx.cond(
        SeedsState.rows.length() > 0,
        rx.table.root(
            rx.table.header(
                rx.table.row(
                    rx.table.column_header_cell("Mailbox"),
                    rx.table.column_header_cell("Provider"),
                    rx.table.column_header_cell("Status"),
                    rx.table.column_header_cell("Last check"),
                    rx.table.column_header_cell("Last placement"),
                    rx.cond(SeedsState.can_edit, rx.table.column_header_cell("")),
                )
            ),
            rx.table.body(rx.foreach(SeedsState.rows, seed_row)),
            variant="surface",
            width="100%",
            id="seed-table",
        ),
        rx.callout(
            "No seed mailboxes yet. Add the test mailboxes you created at Gmail, Outlook, "
            "Yahoo and others, and each campaign will show where its mail landed.",
            icon="inbox",
            id="no-seeds",
        ),
    )


def row_test_result() -> rx.Component:
    return rx.cond(
        SeedsState.testing_id != "",
        rx.callout(
            spinner_text("Signing in to " + SeedsState.test_email + "…"),
            icon="plug-zap",
            id="row-test-result",
        ),
        rx.cond(
            SeedsState.test_message != "",
            rx.callout(
                rx.hstack(
                    rx.vstack(
                        rx.text(SeedsState.test_email, weight="bold", size="2"),
                        rx.text(SeedsState.test_message, size="2"),
                        spacing="1",
                    ),
                    rx.spacer(),
                    rx.icon_button(
                        rx.icon("x", size=14),
                        size="1",
                        variant="ghost",
                        on_click=SeedsState.dismiss_test,
                        aria_label="Close",
                    ),
                    width="100%",
                ),
                icon=rx.cond(SeedsState.test_ok, "circle-check", "triangle-alert"),
                color_scheme=rx.cond(SeedsState.test_ok, "green", "red"),
                id="row-test-result",
            ),
        ),
    )


def delete_dialog() -> rx.Component:
    return rx.alert_dialog.root(
        rx.alert_dialog.content(
            rx.alert_dialog.title("Delete this seed mailbox?"),
            rx.alert_dialog.description(
                SeedsState.delete_email
                + " will be removed from every seed list and its saved password is deleted. "
                "The mailbox itself is not touched."
            ),
            field_error(SeedsState.delete_error),
            rx.hstack(
                rx.alert_dialog.cancel(rx.button("Cancel", variant="soft", color_scheme="gray")),
                rx.button(
                    "Delete", color_scheme="red", on_click=SeedsState.confirm_delete,
                    id="confirm-delete",
                ),
                justify="end",
                spacing="3",
                margin_top="16px",
            ),
        ),
        open=SeedsState.delete_id != "",
        on_open_change=SeedsState.cancel_delete,
    )  # fmt: skip


# --- add / edit dialog ------------------------------------------------------------------------


def _label(text: str, html_for: str) -> rx.Component:
    return rx.text(text, as_="label", html_for=html_for, size="2", weight="medium")


def _error(field: str) -> rx.Component:
    return field_error(SeedFormState.errors.get(field, ""))


def _field(label: str, control: rx.Component, field: str, hint: str = "") -> rx.Component:
    return rx.vstack(
        _label(label, f"seed-{field}"),
        control,
        rx.text(hint, size="1", color_scheme="gray") if hint else rx.fragment(),
        _error(field),
        spacing="1",
        align="stretch",
        width="100%",
    )


def seed_form_dialog() -> rx.Component:
    is_edit = SeedFormState.mode == "edit"
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(rx.cond(is_edit, "Edit seed mailbox", "Add a seed mailbox")),
            rx.dialog.description(
                "A test mailbox at a provider. It receives a copy of each campaign so you "
                "can see whether mail lands in the inbox or in spam.",
                size="2",
                color_scheme="gray",
            ),
            rx.form(
                rx.vstack(
                    _field(
                        "Email address",
                        rx.input(
                            id="seed-email",
                            name="email",
                            type="email",
                            value=SeedFormState.email,
                            on_change=SeedFormState.set_email,
                            on_blur=SeedFormState.prefill,
                            read_only=is_edit,
                            placeholder="seed@gmail.com",
                            auto_focus=True,
                        ),
                        "email",
                    ),
                    rx.cond(
                        SeedFormState.provider != "",
                        rx.text(
                            "Provider: "
                            + SeedFormState.provider
                            + ". The server settings below were filled in for it; "
                            "change them if your provider says otherwise.",
                            size="1",
                            color_scheme="gray",
                            id="seed-provider",
                        ),
                    ),  # fmt: skip
                    _field(
                        "Password",
                        rx.input(
                            id="seed-password",
                            name="password",
                            type="password",
                            auto_complete="new-password",
                            placeholder=rx.cond(
                                is_edit, "Leave empty to keep the saved password", ""
                            ),
                        ),
                        "password",
                        "For Gmail, Outlook and Yahoo use an app password. It is stored "
                        "encrypted and never shown again.",
                    ),
                    rx.grid(
                        _field(
                            "IMAP server",
                            rx.input(
                                id="seed-imap_host",
                                name="imap_host",
                                value=SeedFormState.host,
                                on_change=SeedFormState.set_host,
                                placeholder="imap.example.com",
                            ),
                            "imap_host",
                        ),
                        _field(
                            "Port",
                            rx.input(
                                id="seed-imap_port",
                                name="imap_port",
                                value=SeedFormState.port,
                                on_change=SeedFormState.set_port,
                                input_mode="numeric",
                                placeholder="993",
                            ),
                            "imap_port",
                        ),
                        columns="3fr 1fr",
                        spacing="3",
                        width="100%",
                    ),
                    _field(
                        "Security",
                        rx.select.root(
                            rx.select.trigger(id="seed-imap_security", width="100%"),
                            rx.select.content(
                                *[rx.select.item(label, value=v) for v, label in SECURITY_OPTIONS]
                            ),
                            value=SeedFormState.security,
                            on_change=SeedFormState.set_security,
                        ),
                        "imap_security",
                    ),
                    _field(
                        "User name",
                        rx.input(
                            id="seed-imap_username",
                            name="imap_username",
                            value=SeedFormState.username,
                            on_change=SeedFormState.set_username,
                            placeholder="Same as the email address",
                        ),
                        "imap_username",
                    ),
                    field_error(SeedFormState.message),
                    form_test_result(),
                    rx.hstack(
                        rx.button(
                            rx.cond(
                                SeedFormState.testing,
                                rx.spinner(size="2"),
                                rx.icon("plug-zap", size=16),
                            ),
                            "Test connection",
                            type="submit",
                            variant="soft",
                            disabled=SeedFormState.busy,
                            on_click=SeedFormState.set_intent("test"),
                            id="seed-form-test",
                        ),
                        rx.spacer(),
                        rx.dialog.close(
                            rx.button("Cancel", type="button", variant="soft", color_scheme="gray")
                        ),
                        rx.button(
                            rx.cond(
                                SeedFormState.busy & ~SeedFormState.testing,
                                rx.spinner(size="2"),
                                rx.fragment(),
                            ),
                            "Save",
                            type="submit",
                            disabled=SeedFormState.busy,
                            on_click=SeedFormState.set_intent("save"),
                            id="seed-form-save",
                        ),
                        width="100%",
                        spacing="3",
                        margin_top="8px",
                    ),
                    spacing="3",
                    align="stretch",
                ),
                on_submit=SeedFormState.submit,
                reset_on_submit=False,
                id="seed-form",
            ),
            max_width="560px",
        ),
        open=SeedFormState.is_open,
        on_open_change=SeedFormState.set_open,
    )


def form_test_result() -> rx.Component:
    return rx.cond(
        SeedFormState.testing,
        rx.callout(spinner_text("Signing in…"), icon="plug-zap", id="seed-form-test-result"),
        rx.cond(
            SeedFormState.test_message != "",
            rx.callout(
                SeedFormState.test_message,
                icon=rx.cond(SeedFormState.test_ok, "circle-check", "triangle-alert"),
                color_scheme=rx.cond(SeedFormState.test_ok, "green", "red"),
                id="seed-form-test-result",
            ),
        ),
    )


# --- CSV import ---------------------------------------------------------------------------


def import_dialog() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title("Import seed mailboxes from CSV"),
            rx.dialog.description(
                "The first row names the columns: email and password, and optionally "
                "imap_host, imap_port, imap_security and imap_username. Missing server "
                "settings are filled in from the provider.",
                size="2",
                color_scheme="gray",
            ),
            rx.vstack(
                rx.upload(
                    rx.vstack(
                        rx.icon("upload", size=20),
                        rx.text("Drop a CSV file here, or click to choose one", size="2"),
                        align="center",
                        spacing="1",
                    ),
                    id="seed-csv-upload",
                    accept={"text/csv": [".csv"], "text/plain": [".txt"]},
                    max_files=1,
                    multiple=False,
                    on_drop=SeedImportState.handle_upload(
                        rx.upload_files(upload_id="seed-csv-upload")
                    ),
                    border="1px dashed var(--gray-a7)",
                    padding="16px",
                    width="100%",
                    cursor="pointer",
                ),
                rx.text("or paste it:", size="2", color_scheme="gray"),
                rx.form(
                    rx.vstack(
                        rx.text_area(
                            id="seed-csv-text",
                            name="csv_text",
                            placeholder="email,password\nseed1@gmail.com,app-password",
                            rows="5",
                            width="100%",
                            font_family="monospace",
                        ),
                        rx.button("Preview", type="submit", variant="soft", id="seed-csv-preview"),
                        align="start",
                        width="100%",
                    ),
                    on_submit=SeedImportState.preview_pasted,
                    reset_on_submit=False,
                    width="100%",
                ),
                import_preview(),
                spacing="3",
                width="100%",
            ),
            max_width="680px",
        ),
        open=SeedImportState.is_open,
        on_open_change=SeedImportState.set_open,
    )


def import_preview() -> rx.Component:
    return rx.vstack(
        field_error(SeedImportState.file_error),
        rx.cond(
            (SeedImportState.ready_count > 0) | (SeedImportState.error_count > 0),
            rx.vstack(
                rx.text(
                    SeedImportState.ready_count.to_string() + " ready to add, "
                    + SeedImportState.error_count.to_string() + " with errors.",
                    weight="medium", id="seed-csv-summary",
                ),
                rx.cond(
                    SeedImportState.ignored_columns != "",
                    rx.text(
                        "Ignored columns: " + SeedImportState.ignored_columns,
                        size="1", color_scheme="gray",
                    ),
                ),
                rx.cond(SeedImportState.error_count > 0, import_errors_table()),
                rx.cond(
                    SeedImportState.ready_count > 0,
                    rx.text(
                        "Ready: " + SeedImportState.ready_emails.join(", "),
                        size="1", color_scheme="gray", max_height="80px", overflow_y="auto",
                    ),
                ),
                rx.hstack(
                    rx.text("Also put them in the list", size="2"),
                    rx.select.root(
                        rx.select.trigger(id="seed-csv-list"),
                        rx.select.content(
                            rx.select.item("(no list)", value="none"),
                            rx.foreach(
                                SeedListsState.lists,
                                lambda sl: rx.select.item(sl["name"], value=sl["id"]),
                            ),
                        ),
                        value=SeedImportState.list_choice,
                        on_change=SeedImportState.set_list_choice,
                    ),
                    align="center",
                    spacing="2",
                ),
                rx.button(
                    rx.cond(SeedImportState.busy, rx.spinner(size="2"), rx.icon("import", size=16)),
                    rx.cond(
                        SeedImportState.ready_count == 1,
                        "Import 1 seed mailbox",
                        "Import " + SeedImportState.ready_count.to_string() + " seed mailboxes",
                    ),
                    disabled=SeedImportState.busy | (SeedImportState.ready_count == 0),
                    on_click=SeedImportState.run_import,
                    id="seed-csv-import",
                ),
                spacing="2",
                width="100%",
            ),
        ),
        rx.cond(
            SeedImportState.result != "",
            rx.callout(SeedImportState.result, icon="circle-check", id="seed-csv-result"),
        ),
        width="100%",
        spacing="2",
    )  # fmt: skip


def import_errors_table() -> rx.Component:
    return rx.box(
        rx.table.root(
            rx.table.header(
                rx.table.row(
                    rx.table.column_header_cell("Row"),
                    rx.table.column_header_cell("Email"),
                    rx.table.column_header_cell("Problem"),
                )
            ),
            rx.table.body(
                rx.foreach(
                    SeedImportState.error_rows,
                    lambda r: rx.table.row(
                        rx.table.cell(r["row"]),
                        rx.table.cell(r["email"]),
                        rx.table.cell(r["error"]),
                    ),
                )
            ),
            size="1",
            width="100%",
            id="seed-csv-errors",
        ),
        max_height="220px",
        overflow_y="auto",
        width="100%",
    )


# --- seed lists ------------------------------------------------------------------------------


def seed_list_card(sl: rx.Var) -> rx.Component:
    return rx.card(
        rx.hstack(
            rx.vstack(
                rx.text(sl["name"], weight="bold"),
                rx.text(sl["count"], size="1", color_scheme="gray"),
                spacing="0",
            ),
            rx.spacer(),
            rx.cond(
                SeedsState.can_edit,
                rx.hstack(
                    rx.button(
                        "Choose mailboxes", size="1", variant="soft",
                        on_click=SeedListsState.start_members(sl["id"], sl["name"], sl["members"]),
                        id=f"list-members-{sl['id']}",
                    ),
                    rx.button(
                        "Rename", size="1", variant="soft", color_scheme="gray",
                        on_click=SeedListsState.start_rename(sl["id"], sl["name"]),
                        id=f"list-rename-{sl['id']}",
                    ),
                    rx.button(
                        rx.icon("trash-2", size=14), size="1", variant="soft", color_scheme="red",
                        on_click=SeedListsState.ask_delete(sl["id"], sl["name"]),
                        id=f"list-delete-{sl['id']}", aria_label="Delete list",
                    ),
                    spacing="2",
                ),
            ),
            align="center",
            width="100%",
        ),
        id=f"seed-list-{sl['id']}",
        width="100%",
    )  # fmt: skip


def seed_lists_section() -> rx.Component:
    return rx.vstack(
        rx.heading("Seed lists", size="5"),
        rx.text(
            "A seed list is a named set of seed mailboxes; each campaign uses one.",
            size="2",
            color_scheme="gray",
        ),
        rx.cond(
            SeedsState.can_edit,
            rx.vstack(
                # A form, not a controlled input: a click right after typing must
                # see the typed name (controlled inputs send changes debounced).
                rx.form(
                    rx.hstack(
                        rx.input(id="new-list-name", name="name", placeholder="New list name"),
                        rx.button("Create list", type="submit", id="create-list"),
                        spacing="2",
                    ),
                    on_submit=SeedListsState.create,
                    reset_on_submit=False,
                ),
                field_error(SeedListsState.create_error),
                spacing="2",
            ),
        ),
        rx.foreach(SeedListsState.lists, seed_list_card),
        rename_list_dialog(),
        members_dialog(),
        delete_list_dialog(),
        spacing="3",
        width="100%",
        align="stretch",
    )


def rename_list_dialog() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title("Rename seed list"),
            rx.vstack(
                rx.input(
                    id="rename-list-name",
                    value=SeedListsState.rename_name,
                    on_change=SeedListsState.set_rename_name,
                ),
                field_error(SeedListsState.rename_error),
                rx.hstack(
                    rx.dialog.close(rx.button("Cancel", variant="soft", color_scheme="gray")),
                    rx.button("Save", on_click=SeedListsState.save_rename, id="rename-list-save"),
                    justify="end",
                    spacing="3",
                    width="100%",
                ),
                spacing="3",
            ),
            max_width="420px",
        ),
        open=SeedListsState.rename_id != "",
        on_open_change=SeedListsState.close_rename,
    )


def members_dialog() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title("Mailboxes in " + SeedListsState.members_name),
            rx.vstack(
                rx.foreach(
                    SeedsState.rows,
                    lambda row: rx.checkbox(
                        row["email"] + " (" + row["provider"] + ")",
                        checked=SeedListsState.member_ids.contains(row["id"]),
                        on_change=lambda checked: SeedListsState.toggle_member(row["id"], checked),
                        id=f"member-{row['id']}",
                    ),
                ),
                spacing="2",
                max_height="360px",
                overflow_y="auto",
            ),
            field_error(SeedListsState.members_error),
            rx.hstack(
                rx.dialog.close(rx.button("Cancel", variant="soft", color_scheme="gray")),
                rx.button("Save", on_click=SeedListsState.save_members, id="members-save"),
                justify="end",
                spacing="3",
                margin_top="16px",
            ),
            max_width="480px",
        ),
        open=SeedListsState.members_id != "",
        on_open_change=SeedListsState.close_members,
    )


def delete_list_dialog() -> rx.Component:
    return rx.alert_dialog.root(
        rx.alert_dialog.content(
            rx.alert_dialog.title("Delete the list " + SeedListsState.delete_name + "?"),
            rx.alert_dialog.description(
                "The seed mailboxes in it are kept; only the list goes."
            ),
            field_error(SeedListsState.delete_error),
            rx.hstack(
                rx.alert_dialog.cancel(rx.button("Cancel", variant="soft", color_scheme="gray")),
                rx.button(
                    "Delete", color_scheme="red", on_click=SeedListsState.confirm_delete,
                    id="confirm-delete-list",
                ),
                justify="end",
                spacing="3",
                margin_top="16px",
            ),
        ),
        open=SeedListsState.delete_id != "",
        on_open_change=SeedListsState.close_delete,
    )  # fmt: skip
