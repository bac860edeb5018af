"""The campaign wizard's parts: the stepper, one component per step, and navigation.

Text fields are uncontrolled (`default_value`) and autosave after a pause in typing
(a debounced change) and when they lose focus: what the author types stays in the
field whatever the server answers, and a click on Next right after typing saves
first. The steps only mount once the campaign is loaded, so the saved values are
there from the start.
"""

from __future__ import annotations

import reflex as rx

from mailer_app import routes
from mailer_app.components.message_preview import html_and_text
from mailer_app.components.shell import field_error
from mailer_app.state.campaign_wizard import (
    AttachmentsState,
    ContentState,
    RecipientsState,
    ReviewState,
    WizardState,
)

AUTOSAVE_MS = 500
LOCKED = ~WizardState.can_edit


def _error(field: str) -> rx.Component:
    return rx.box(field_error(WizardState.errors.get(field, "")), id=f"error-{field}")


def _field(label: str, control: rx.Component, field: str, hint: str = "") -> rx.Component:
    return rx.vstack(
        rx.text(label, as_="label", html_for=f"field-{field}", size="2", weight="medium"),
        control,
        rx.text(hint, size="1", color_scheme="gray") if hint else rx.fragment(),
        _error(field),
        spacing="1",
        align="stretch",
        width="100%",
    )


def _autosaving(handler) -> dict:
    """Save after a pause in typing, and at once when the field is left."""
    return {"on_change": handler.debounce(AUTOSAVE_MS), "on_blur": handler}


def _choice(option: rx.Var) -> rx.Component:
    return rx.select.item(option["label"], value=option["id"])


# --- header, stepper, navigation -----------------------------------------------------------


def wizard_header() -> rx.Component:
    return rx.vstack(
        rx.hstack(
            rx.badge(WizardState.status_label, variant="soft", size="2", id="wizard-status"),
            rx.text(WizardState.version_label, size="2", color_scheme="gray", id="wizard-version"),
            rx.spacer(),
            rx.cond(
                WizardState.save_note != "",
                rx.hstack(
                    rx.icon(
                        rx.cond(WizardState.save_ok, "cloud-check", "cloud-alert"),
                        size=16,
                    ),
                    rx.text(WizardState.save_note, size="2"),
                    color=rx.cond(WizardState.save_ok, "var(--green-11)", "var(--red-11)"),
                    align="center",
                    spacing="1",
                    id="save-note",
                ),
            ),
            rx.link("All campaigns", href=routes.CAMPAIGNS, size="2", id="back-to-list"),
            align="center",
            width="100%",
            spacing="3",
        ),
        rx.cond(
            WizardState.archived,
            rx.callout(
                "This campaign is archived. Restore it from the campaign list to change it.",
                icon="archive",
                color_scheme="gray",
            ),
        ),
        rx.cond(
            ~WizardState.is_draft & ~WizardState.archived,
            rx.callout(
                rx.hstack(
                    rx.text(
                        "This version is published and ready for review. Changing anything "
                        "starts a new draft version; this one stays as it is."
                    ),
                    rx.link(
                        "Review messages",
                        href=WizardState.review_href,
                        weight="medium",
                        white_space="nowrap",
                        id="review-messages-link",
                    ),
                    align="center",
                    spacing="3",
                ),
                icon="lock",
                id="published-banner",
            ),
        ),
        width="100%",
        spacing="3",
    )


def _step_marker(row: rx.Var) -> rx.Component:
    return rx.match(
        row["state"],
        ("done", rx.icon("circle-check", size=18, color="var(--green-10)")),
        ("error", rx.icon("circle-alert", size=18, color="var(--red-10)")),
        rx.badge(row["number"], variant="outline", radius="full"),
    )


def _step_button(row: rx.Var) -> rx.Component:
    current = row["current"] == "1"
    return rx.button(
        _step_marker(row),
        row["label"],
        variant=rx.cond(current, "solid", "soft"),
        color_scheme=rx.cond(current, "indigo", "gray"),
        on_click=WizardState.go_to(row["step"]),
        id="step-" + row["step"].to(str),
        class_name="wizard-step " + row["state"].to(str),
        aria_current=rx.cond(current, "step", "false"),
    )


def stepper() -> rx.Component:
    return rx.hstack(
        rx.foreach(WizardState.steps, _step_button),
        spacing="2",
        wrap="wrap",
        id="wizard-stepper",
    )


def nav_buttons() -> rx.Component:
    return rx.hstack(
        rx.cond(
            WizardState.step != "basics",
            rx.button(
                rx.icon("arrow-left", size=16), "Back", variant="soft", color_scheme="gray",
                on_click=WizardState.back, id="wizard-back",
            ),
        ),
        rx.spacer(),
        rx.cond(
            WizardState.step != "review",
            rx.button(
                "Next", rx.icon("arrow-right", size=16), on_click=WizardState.next_step,
                id="wizard-next",
            ),
        ),
        width="100%",
    )  # fmt: skip


# --- Basics ----------------------------------------------------------------------------------


def basics_step() -> rx.Component:
    return rx.vstack(
        rx.text(
            "Name the campaign so you and your team recognise it. Recipients never see "
            "these.",
            size="2",
            color_scheme="gray",
        ),
        _field(
            "Campaign name",
            rx.input(
                default_value=WizardState.name, id="field-name", max_length=200,
                disabled=LOCKED, **_autosaving(WizardState.set_name),
            ),
            "name",
        ),
        _field(
            "Description (optional)",
            rx.text_area(
                default_value=WizardState.description, id="field-description", rows="3",
                disabled=LOCKED, **_autosaving(WizardState.set_description),
            ),
            "description",
            "A note for your team: what this campaign is for.",
        ),
        spacing="4",
        width="100%",
        id="step-body-basics",
    )  # fmt: skip


# --- Sender ----------------------------------------------------------------------------------


def sender_step() -> rx.Component:
    return rx.vstack(
        rx.text(
            "Choose the mailbox the campaign is sent from. Recipients see its name and "
            "address as the sender.",
            size="2",
            color_scheme="gray",
        ),
        rx.cond(
            WizardState.sender_choices.length() > 0,
            _field(
                "Send from",
                rx.select.root(
                    rx.select.trigger(placeholder="Choose a sender account", width="100%",
                                      id="field-sender_account_id"),
                    rx.select.content(rx.foreach(WizardState.sender_choices, _choice)),
                    value=WizardState.sender_id,
                    on_change=WizardState.set_sender,
                    disabled=LOCKED,
                ),
                "sender_account_id",
            ),
            rx.callout(
                rx.hstack(
                    rx.text("There is no sender account yet."),
                    rx.link("Add one on the Sender accounts page", href="/senders"),
                    spacing="2",
                ),
                icon="mail-plus",
                id="no-senders",
            ),
        ),
        spacing="4",
        width="100%",
        id="step-body-sender",
    )  # fmt: skip


# --- Recipients ------------------------------------------------------------------------------


def _list_option(option: rx.Var) -> rx.Component:
    return rx.card(
        rx.hstack(
            rx.checkbox(
                checked=RecipientsState.list_ids.contains(option["id"]),
                on_change=lambda checked: RecipientsState.toggle_list(option["id"], checked),
                disabled=LOCKED,
                id="list-" + option["id"].to(str),
            ),
            rx.vstack(
                rx.text(option["label"], weight="medium"),
                rx.text(option["count"], size="1", color_scheme="gray"),
                rx.cond(
                    option["fields"] != "",
                    rx.text("Fields: ", option["fields"], size="1", color_scheme="gray"),
                ),
                spacing="0",
            ),
            align="center",
            spacing="3",
        ),
        as_child=False,
        width="100%",
        class_name="contact-list-option",
    )


def _field_item(name: rx.Var) -> rx.Component:
    return rx.select.item(name, value=name)


def _filter_row(item: rx.Var, index: rx.Var) -> rx.Component:
    return rx.hstack(
        rx.select.root(
            rx.select.trigger(placeholder="Field", width="180px"),
            rx.select.content(rx.foreach(RecipientsState.field_choices, _field_item)),
            value=item["field"],
            on_change=lambda v: RecipientsState.set_filter(index, "field", v),
            disabled=LOCKED,
        ),
        rx.select.root(
            rx.select.trigger(width="140px"),
            rx.select.content(rx.foreach(RecipientsState.op_choices, _choice)),
            value=item["op"],
            on_change=lambda v: RecipientsState.set_filter(index, "op", v),
            disabled=LOCKED,
        ),
        rx.cond(
            (item["op"] != "is_empty") & (item["op"] != "is_not_empty"),
            rx.input(
                value=item["value"],
                on_change=lambda v: RecipientsState.set_filter(index, "value", v),
                placeholder="Value",
                disabled=LOCKED,
                width="200px",
            ),
        ),
        rx.icon_button(
            rx.icon("x", size=14), size="1", variant="soft", color_scheme="gray",
            on_click=RecipientsState.remove_filter(index), aria_label="Remove filter",
            disabled=LOCKED,
        ),
        align="center",
        spacing="2",
        class_name="recipient-filter",
    )  # fmt: skip


def recipients_step() -> rx.Component:
    return rx.vstack(
        rx.hstack(
            rx.text(
                "Choose who receives the campaign: one or more contact lists, narrowed by "
                "filters if you like.",
                size="2",
                color_scheme="gray",
            ),
            rx.spacer(),
            rx.link(
                rx.button(rx.icon("file-up", size=16), "Import contacts from a CSV file",
                          variant="soft"),
                href="/contacts",
                id="import-contacts-link",
            ),
            width="100%",
            align="center",
        ),
        rx.text("Contact lists", size="2", weight="medium"),
        rx.cond(
            RecipientsState.list_choices.length() > 0,
            rx.vstack(rx.foreach(RecipientsState.list_choices, _list_option), width="100%",
                      id="field-list_ids"),
            rx.callout(
                "There are no contact lists yet. Import a CSV file of your contacts: "
                "come back here afterwards, nothing you did is lost.",
                icon="users",
                id="no-contact-lists",
            ),
        ),
        _error("list_ids"),
        rx.text("Filters (optional)", size="2", weight="medium"),
        rx.foreach(RecipientsState.filters, _filter_row),
        rx.box(rx.button(rx.icon("filter", size=14), "Add a filter", size="1", variant="soft",
                         on_click=RecipientsState.add_filter, disabled=LOCKED, id="add-filter")),
        _error("filters"),
        rx.text(RecipientsState.recipient_count, weight="bold", id="recipient-count"),
        rx.divider(),
        _field(
            "Seed mailboxes",
            rx.select.root(
                rx.select.trigger(width="100%", id="field-seed_list_id"),
                rx.select.content(rx.foreach(RecipientsState.seed_choices, _choice)),
                value=RecipientsState.seed_list_id,
                on_change=RecipientsState.set_seed_list,
                disabled=LOCKED,
            ),
            "seed_list_id",
            "Each seed mailbox gets a copy, so you can see whether the campaign lands in "
            "the inbox or in spam.",
        ),
        spacing="3",
        width="100%",
        align="stretch",
        id="step-body-recipients",
    )  # fmt: skip


# --- Content ---------------------------------------------------------------------------------


def _merge_field_badge(name: rx.Var) -> rx.Component:
    return rx.code("{{ " + name.to(str) + " }}", size="1")


def content_editor() -> rx.Component:
    return rx.vstack(
        _field(
            "Subject",
            rx.input(default_value=ContentState.subject, id="field-subject", disabled=LOCKED,
                     **_autosaving(ContentState.set_subject)),
            "subject",
        ),
        _field(
            "HTML message",
            rx.text_area(default_value=ContentState.html_body, id="field-html_body", rows="12",
                         font_family="monospace", disabled=LOCKED,
                         **_autosaving(ContentState.set_html_body)),
            "html_body",
        ),
        _field(
            "Text message (optional)",
            rx.text_area(default_value=ContentState.text_body, id="field-text_body", rows="6",
                         font_family="monospace", disabled=LOCKED,
                         **_autosaving(ContentState.set_text_body)),
            "text_body",
            "Left empty, a text version is made from the HTML message.",
        ),
        rx.vstack(
            rx.text("Merge fields you can use:", size="1", color_scheme="gray"),
            rx.hstack(rx.foreach(ContentState.merge_fields, _merge_field_badge), wrap="wrap",
                      spacing="1"),
            rx.text(
                'Defaults and conditions work too: {{ first_name | default("there") }}, '
                "{% if company %}…{% endif %}.",
                size="1",
                color_scheme="gray",
            ),
            spacing="1",
        ),
        spacing="3",
        width="100%",
        align="stretch",
    )  # fmt: skip


def _missing_item(name: rx.Var) -> rx.Component:
    return rx.badge(name, color_scheme="orange", variant="soft")


def content_preview() -> rx.Component:
    return rx.vstack(
        rx.hstack(
            rx.text("Preview for", size="2", weight="medium"),
            rx.select.root(
                rx.select.trigger(width="360px", id="preview-recipient"),
                rx.select.content(rx.foreach(ContentState.preview_choices, _choice)),
                value=ContentState.preview_key,
                on_change=ContentState.choose_recipient,
            ),
            align="center",
        ),
        rx.cond(
            ContentState.preview_error != "",
            rx.callout(ContentState.preview_error, icon="triangle-alert", color_scheme="red",
                       id="preview-error"),
        ),
        rx.cond(
            ContentState.preview_missing.length() > 0,
            rx.hstack(
                rx.text("Missing for this recipient:", size="1"),
                rx.foreach(ContentState.preview_missing, _missing_item),
                wrap="wrap",
                id="preview-missing",
            ),
        ),
        rx.text(
            rx.text.strong("Subject: "), ContentState.preview_subject, size="2",
            id="preview-subject",
        ),
        html_and_text(ContentState.preview_html, ContentState.preview_text,
                      title="HTML preview", height="420px"),
        spacing="2",
        width="100%",
        align="stretch",
        id="content-preview",
    )  # fmt: skip


def content_step() -> rx.Component:
    return rx.vstack(
        content_editor(),
        rx.divider(),
        content_preview(),
        spacing="4",
        width="100%",
        align="stretch",
        id="step-body-content",
    )


# --- Attachments -----------------------------------------------------------------------------


def _file_row(item: rx.Var) -> rx.Component:
    return rx.hstack(
        rx.icon("paperclip", size=14),
        rx.text(item["name"], size="2"),
        rx.text(item["size"], size="1", color_scheme="gray"),
        rx.icon_button(
            rx.icon("trash-2", size=14), size="1", variant="soft", color_scheme="red",
            on_click=AttachmentsState.remove_file(item["id"]), aria_label="Remove file",
            disabled=LOCKED,
        ),
        align="center",
        spacing="2",
        class_name="campaign-file",
    )  # fmt: skip


def _dry_run_row(row: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(row["email"]),
        rx.table.cell(rx.text(row["files"], size="1")),
        rx.table.cell(row["size"]),
        rx.table.cell(rx.badge(row["status"], color_scheme=row["color"], variant="soft")),
        rx.table.cell(rx.text(row["reason"], size="1", color_scheme="gray")),
    )


def attachments_step() -> rx.Component:
    return rx.vstack(
        rx.text("Files for everyone", size="3", weight="bold"),
        rx.text("These files are attached to every message.", size="2", color_scheme="gray"),
        rx.upload(
            rx.vstack(
                rx.icon("upload", size=20),
                rx.text("Drop files here, or click to choose", size="2"),
                align="center",
                spacing="1",
            ),
            id="campaign-files",
            multiple=True,
            on_drop=AttachmentsState.upload(rx.upload_files(upload_id="campaign-files")),
            disabled=LOCKED,
            border="1px dashed var(--gray-a7)",
            padding="16px",
            width="100%",
            cursor="pointer",
        ),
        field_error(AttachmentsState.upload_error),
        rx.vstack(rx.foreach(AttachmentsState.files, _file_row), id="campaign-file-list",
                  spacing="1"),
        rx.divider(),
        rx.text("Files for each recipient (optional)", size="3", weight="bold"),
        _field(
            "File pattern",
            rx.input(default_value=AttachmentsState.pattern, id="field-pattern",
                     placeholder="invoices/{{ customer_id }}/*.pdf", disabled=LOCKED,
                     **_autosaving(AttachmentsState.set_pattern)),
            "pattern",
            "Looked up in your workspace's attachments folder, with each recipient's fields "
            "filled in. No file found blocks that recipient; several need a review.",
        ),
        rx.text("Attachments folder: ", rx.code(AttachmentsState.folder), size="1",
                color_scheme="gray", id="attachments-folder"),
        rx.hstack(
            rx.switch(checked=AttachmentsState.zip, on_change=AttachmentsState.set_zip,
                      disabled=LOCKED, id="field-zip"),
            rx.text("Zip each recipient's files into one attachment", size="2"),
            align="center",
        ),
        _error("zip"),
        rx.box(rx.button(rx.icon("list-checks", size=16), "Check which files each recipient gets",
                         variant="soft", on_click=AttachmentsState.run_dry_run, id="run-dry-run")),
        rx.cond(
            AttachmentsState.dry_run_summary != "",
            rx.text(AttachmentsState.dry_run_summary, size="2", id="dry-run-summary"),
        ),
        rx.cond(
            AttachmentsState.dry_run_rows.length() > 0,
            rx.table.root(
                rx.table.header(rx.table.row(*[rx.table.column_header_cell(h) for h in (
                    "Recipient", "Files", "Size", "Status", "Why")])),
                rx.table.body(rx.foreach(AttachmentsState.dry_run_rows, _dry_run_row)),
                width="100%",
                id="dry-run-table",
            ),
        ),
        spacing="3",
        width="100%",
        align="stretch",
        id="step-body-attachments",
    )  # fmt: skip


# --- Review ----------------------------------------------------------------------------------


def _summary_line(label: str, value: rx.Var | str, step: str) -> rx.Component:
    return rx.hstack(
        rx.text(label, size="2", weight="medium", width="140px"),
        rx.text(value, size="2", id=f"summary-{step}-{label.lower().replace(' ', '-')}"),
        rx.spacer(),
        rx.link("Change", size="1", on_click=WizardState.go_to(step), cursor="pointer"),
        width="100%",
        align="start",
    )


def _problem(item: rx.Var) -> rx.Component:
    return rx.hstack(
        rx.badge(item["label"], color_scheme="red", variant="soft"),
        rx.text(item["message"], size="2"),
        rx.link("Fix", size="1", on_click=WizardState.go_to(item["step"]), cursor="pointer"),
        align="center",
        class_name="review-problem",
    )


def _plain_item(text: rx.Var) -> rx.Component:
    return rx.text("• ", text, size="2")


def review_step() -> rx.Component:
    return rx.vstack(
        rx.card(
            rx.vstack(
                _summary_line("Sender", ReviewState.sender, "sender"),
                _summary_line("Contact lists", ReviewState.lists, "recipients"),
                rx.foreach(ReviewState.filters, _plain_item),
                _summary_line("Recipients", ReviewState.recipient_count.to(str), "recipients"),
                _summary_line("Seed mailboxes", ReviewState.seed_list, "recipients"),
                _summary_line("Subject", ReviewState.subject, "content"),
                _summary_line("Files for all", ReviewState.files, "attachments"),
                rx.cond(ReviewState.pattern != "",
                        _summary_line("Per recipient", ReviewState.pattern, "attachments")),
                spacing="2",
                width="100%",
            ),
            width="100%",
            id="review-summary",
        ),
        rx.cond(
            ReviewState.missing.length() > 0,
            rx.callout(
                rx.vstack(rx.foreach(ReviewState.missing, _plain_item), spacing="0"),
                icon="triangle-alert", color_scheme="orange", id="review-missing",
            ),
        ),
        rx.cond(ReviewState.render_note != "",
                rx.callout(ReviewState.render_note, icon="triangle-alert", color_scheme="red")),
        rx.cond(
            ReviewState.problems.length() > 0,
            rx.vstack(
                rx.text("Still to do before publishing:", size="2", weight="bold"),
                rx.foreach(ReviewState.problems, _problem),
                spacing="2",
                id="review-problems",
            ),
        ),
        field_error(ReviewState.publish_error),
        rx.cond(
            ReviewState.published_message != "",
            rx.callout(ReviewState.published_message, icon="circle-check", color_scheme="green",
                       id="published-message"),
        ),
        rx.cond(
            WizardState.is_draft,
            rx.hstack(
                rx.button(rx.icon("send-horizontal", size=16), "Publish: ready for review",
                          on_click=ReviewState.publish, disabled=LOCKED | (
                              ReviewState.problems.length() > 0), id="publish"),
                rx.text(
                    "Publishing freezes this version. Next comes the review gate: every "
                    "message is rendered and checked, and a person approves it before "
                    "anything is sent.",
                    size="1", color_scheme="gray", max_width="520px",
                ),
                align="center",
                spacing="3",
            ),
            rx.box(rx.button("Back to campaigns", variant="soft", on_click=ReviewState.to_list,
                             id="to-list")),
        ),
        spacing="4",
        width="100%",
        align="stretch",
        id="step-body-review",
    )  # fmt: skip


def step_body() -> rx.Component:
    return rx.match(
        WizardState.step,
        ("basics", basics_step()),
        ("sender", sender_step()),
        ("recipients", recipients_step()),
        ("content", content_step()),
        ("attachments", attachments_step()),
        ("review", review_step()),
        rx.fragment(),
    )
