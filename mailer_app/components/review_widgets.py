"""The review page's parts: header, build panel, counts, message list, preview, Send.

Element ids are stable for tests: build-progress, status-count-<status>,
reason-<code>, approve-reason-<code>, message-row-<id>, exclude-<id>, eml-<id>,
test-send-address, test-send-button, send-blockers, send-campaign, confirm-send,
campaign-sent, send-progress-link; the recipient form:
edit-recipient, recipient-first_name, recipient-last_name, recipient-field-<name>,
save-recipient, recipient-error, recipient-saved.
"""

from __future__ import annotations

import reflex as rx

from mailer_app import routes
from mailer_app.components.message_preview import html_and_text
from mailer_app.state.review import PAGE_SIZE, MessageState, ReviewGateState

SEARCH_DEBOUNCE_MS = 400
BUILDING = (ReviewGateState.build_status == "queued") | (ReviewGateState.build_status == "running")


# --- header -----------------------------------------------------------------------------------


def review_header() -> rx.Component:
    return rx.vstack(
        rx.hstack(
            rx.badge(ReviewGateState.status_label, color_scheme=ReviewGateState.status_color,
                     variant="soft", size="2", id="review-campaign-status"),
            rx.spacer(),
            rx.link("Edit the campaign", href=routes.CAMPAIGNS + "/" +
                    ReviewGateState.campaign_id.to(str), size="2", id="edit-campaign"),
            rx.link("All campaigns", href=routes.CAMPAIGNS, size="2", id="back-to-list"),
            align="center",
            width="100%",
            spacing="4",
        ),
        rx.text(
            "Every message of the published version is built here, exactly as it will be "
            "sent, and checked. Nothing is sent until every message that needs a decision "
            "has one and the campaign is approved.",
            size="2",
            color_scheme="gray",
        ),
        rx.cond(
            ReviewGateState.notice != "",
            rx.callout(
                ReviewGateState.notice,
                icon=rx.cond(ReviewGateState.notice_ok, "circle-check", "triangle-alert"),
                color_scheme=rx.cond(ReviewGateState.notice_ok, "green", "red"),
                id="review-notice",
            ),
        ),
        spacing="2",
        width="100%",
    )  # fmt: skip


# --- build ------------------------------------------------------------------------------------


def build_panel() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.hstack(
                rx.text("Messages", size="4", weight="bold"),
                rx.spacer(),
                rx.cond(
                    ReviewGateState.can_review,
                    rx.button(
                        rx.cond(BUILDING, rx.spinner(size="1"), rx.icon("hammer", size=16)),
                        rx.cond(ReviewGateState.build_status == "", "Build messages", "Rebuild"),
                        on_click=ReviewGateState.start_build,
                        disabled=BUILDING | ReviewGateState.starting,
                        id="build-button",
                    ),
                ),
                align="center",
                width="100%",
            ),
            rx.cond(
                ReviewGateState.build_status != "",
                rx.progress(
                    value=ReviewGateState.build_done,
                    max=rx.cond(ReviewGateState.build_total > 0, ReviewGateState.build_total, 1),
                    width="100%",
                    color_scheme=rx.cond(ReviewGateState.build_status == "failed", "red",
                                         "accent"),
                    id="build-progress",
                ),
            ),
            rx.text(ReviewGateState.build_summary, size="2", id="build-summary",
                    data_status=ReviewGateState.build_status),
            rx.text(
                "A rebuild after a fix changes only the messages the fix touches; decisions "
                "on the others are kept.",
                size="1",
                color_scheme="gray",
            ),
            spacing="3",
            width="100%",
        ),
        width="100%",
        id="build-panel",
    )  # fmt: skip


# --- counts -----------------------------------------------------------------------------------


def _status_tile(item: rx.Var) -> rx.Component:
    active = ReviewGateState.filter_status == item["status"]
    return rx.card(
        rx.vstack(
            rx.hstack(
                rx.badge(item["label"], color_scheme=item["color"], variant="soft"),
                rx.spacer(),
                rx.text(item["count"], size="5", weight="bold", class_name="count"),
                align="center",
                width="100%",
            ),
            rx.text(item["explanation"], size="1", color_scheme="gray"),
            spacing="1",
            width="100%",
        ),
        as_child=False,
        on_click=ReviewGateState.filter_by_status(item["status"]),
        cursor="pointer",
        id="status-count-" + item["status"].to(str),
        class_name=rx.cond(active, "status-count active", "status-count"),
        style=rx.cond(active, {"outline": "2px solid var(--accent-9)"}, {}),
        aria_pressed=rx.cond(active, "true", "false"),
    )


def _reason_row(item: rx.Var) -> rx.Component:
    active = ReviewGateState.filter_reason == item["code"]
    return rx.hstack(
        rx.hstack(
            rx.badge(item["count"], color_scheme=item["color"], variant="solid", radius="full"),
            rx.text(item["label"], size="2", weight="medium", white_space="nowrap",
                    min_width="160px"),
            rx.text(item["explanation"], size="2", color_scheme="gray"),
            rx.cond(item["details"] != "",
                    rx.code(item["details"], size="1", variant="ghost")),
            on_click=ReviewGateState.filter_by_reason(item["code"]),
            cursor="pointer",
            align="center",
            spacing="2",
            id="reason-" + item["code"].to(str),
            class_name=rx.cond(active, "reason active", "reason"),
            text_decoration=rx.cond(active, "underline", "none"),
            flex="1",
        ),
        rx.cond(
            (item["undecided"] != "") & ReviewGateState.can_review,
            rx.button(
                rx.icon("check-check", size=14), "Approve all " + item["undecided"].to(str),
                size="1", variant="soft", color_scheme="green",
                on_click=ReviewGateState.approve_reason(item["code"]),
                id="approve-reason-" + item["code"].to(str),
            ),
        ),
        align="center",
        width="100%",
    )  # fmt: skip


def counts_panel() -> rx.Component:
    return rx.vstack(
        rx.grid(
            rx.foreach(ReviewGateState.status_counts, _status_tile),
            columns="3",
            spacing="3",
            width="100%",
            id="status-counts",
        ),
        rx.cond(
            ReviewGateState.counts_note != "",
            rx.text(ReviewGateState.counts_note, size="2", weight="medium", id="counts-note"),
        ),
        rx.cond(
            ReviewGateState.reason_counts.length() > 0,
            rx.card(
                rx.vstack(
                    rx.text("Why messages are not simply ready", size="3", weight="bold"),
                    rx.foreach(ReviewGateState.reason_counts, _reason_row),
                    spacing="2",
                    width="100%",
                ),
                width="100%",
                id="reason-counts",
            ),
        ),
        spacing="3",
        width="100%",
    )


# --- the list ---------------------------------------------------------------------------------


def _filters() -> rx.Component:
    return rx.hstack(
        rx.input(
            rx.input.slot(rx.icon("search", size=16)),
            placeholder="Search by address or subject",
            default_value=ReviewGateState.search,
            on_change=ReviewGateState.set_search.debounce(SEARCH_DEBOUNCE_MS),
            id="message-search",
            width="320px",
        ),
        rx.cond(
            ReviewGateState.filter_status != "",
            rx.badge("Status: ", ReviewGateState.filter_status, variant="outline",
                     id="filter-status"),
        ),
        rx.cond(
            ReviewGateState.filter_reason != "",
            rx.badge("Reason: ", ReviewGateState.filter_reason, variant="outline",
                     id="filter-reason"),
        ),
        rx.cond(
            (ReviewGateState.filter_status != "") | (ReviewGateState.filter_reason != ""),
            rx.link("Show all", on_click=ReviewGateState.clear_filters, size="2",
                    cursor="pointer", id="clear-filters"),
        ),
        rx.spacer(),
        rx.text(ReviewGateState.page_label, size="2", color_scheme="gray", id="page-label"),
        rx.icon_button(rx.icon("chevron-left", size=16), size="1", variant="soft",
                       on_click=ReviewGateState.previous_page,
                       disabled=ReviewGateState.offset == 0, aria_label="Previous page",
                       id="previous-page"),
        rx.icon_button(rx.icon("chevron-right", size=16), size="1", variant="soft",
                       on_click=ReviewGateState.next_page,
                       disabled=ReviewGateState.offset + PAGE_SIZE >= ReviewGateState.total,
                       aria_label="Next page", id="next-page"),
        align="center",
        width="100%",
        spacing="3",
    )  # fmt: skip


def _eml_link(message_id: rx.Var, element_id) -> rx.Component:
    return rx.link(
        rx.hstack(rx.icon("download", size=14), rx.text(".eml", size="1"), spacing="1",
                  align="center"),
        on_click=MessageState.download_eml(message_id),
        cursor="pointer",
        id=element_id,
        title="Download this message as .eml, exactly as it will be sent",
    )  # fmt: skip


def _row_actions(row: rx.Var) -> rx.Component:
    return rx.hstack(
        rx.cond(
            (row["decidable"] == "1") & ReviewGateState.can_review,
            rx.button("Approve", size="1", variant="soft", color_scheme="green",
                      on_click=ReviewGateState.approve(row["id"]), id="approve-" + row["id"]),
        ),
        rx.cond(
            ReviewGateState.can_review & (row["excludable"] == "1"),
            rx.cond(
                row["decision"] == "excluded",
                rx.button("Include", size="1", variant="soft",
                          on_click=ReviewGateState.include(row["id"]), id="include-" + row["id"]),
                rx.button("Exclude", size="1", variant="soft", color_scheme="gray",
                          on_click=ReviewGateState.exclude(row["id"]), id="exclude-" + row["id"]),
            ),
        ),
        _eml_link(row["id"], "eml-" + row["id"]),
        spacing="2",
        align="center",
    )  # fmt: skip


def _message_row(row: rx.Var) -> rx.Component:
    selected = MessageState.message_id.to(str) == row["id"]
    return rx.table.row(
        rx.table.cell(
            rx.vstack(
                rx.link(row["email"], on_click=MessageState.select(row["id"]), cursor="pointer",
                        weight="medium", id="open-message-" + row["id"]),
                rx.text(row["subject"], size="1", color_scheme="gray", trim="end"),
                spacing="0",
                max_width="320px",
            )
        ),
        rx.table.cell(
            rx.vstack(
                rx.badge(row["status_label"], color_scheme=row["color"], variant="soft",
                         class_name="review-status"),
                rx.cond(row["decision_label"] != "",
                        rx.text(row["decision_label"], size="1", class_name="decision")),
                spacing="1",
            )
        ),
        rx.table.cell(rx.text(row["reasons"], size="1")),
        rx.table.cell(rx.text(row["size"], size="1")),
        rx.table.cell(_row_actions(row)),
        id="message-row-" + row["id"],
        align="center",
        background_color=rx.cond(selected, "var(--accent-a3)", "transparent"),
    )  # fmt: skip


def message_list() -> rx.Component:
    return rx.vstack(
        _filters(),
        rx.cond(
            ReviewGateState.rows.length() > 0,
            rx.table.root(
                rx.table.header(rx.table.row(*[rx.table.column_header_cell(h) for h in (
                    "Recipient", "Status", "Why", "Size", "")])),
                rx.table.body(rx.foreach(ReviewGateState.rows, _message_row)),
                variant="surface",
                size="1",
                width="100%",
                id="message-table",
            ),
        ),
        spacing="3",
        width="100%",
    )  # fmt: skip


# --- preview ----------------------------------------------------------------------------------


def _header_line(item: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.text(item["name"], size="1", weight="medium")),
        rx.table.cell(rx.text(item["value"], size="1", word_break="break-all")),
    )


def _attachment(item: rx.Var) -> rx.Component:
    return rx.hstack(
        rx.icon("paperclip", size=14),
        rx.text(item["name"], size="2"),
        rx.text(item["size"], size="1", color_scheme="gray"),
        align="center",
        spacing="2",
        class_name="preview-attachment",
    )


def _test_send() -> rx.Component:
    return rx.form(
        rx.hstack(
            rx.input(name="address", placeholder="you@example.com", type="email",
                     default_value=MessageState.test_address, id="test-send-address",
                     width="280px"),
            rx.button(rx.cond(MessageState.test_sending, rx.spinner(size="1"),
                              rx.icon("send", size=14)),
                      "Send a test", type="submit", variant="soft",
                      disabled=MessageState.test_sending, id="test-send-button"),
            rx.text("Only this address gets it, marked as a test; the campaign does not "
                    "change.", size="1", color_scheme="gray", max_width="300px"),
            align="center",
            spacing="2",
        ),
        rx.cond(
            MessageState.test_result != "",
            rx.callout(MessageState.test_result,
                       icon=rx.cond(MessageState.test_ok, "circle-check", "triangle-alert"),
                       color_scheme=rx.cond(MessageState.test_ok, "green", "red"), size="1",
                       margin_top="8px", id="test-send-result"),
        ),
        on_submit=MessageState.test_send,
        reset_on_submit=False,
        width="100%",
    )  # fmt: skip


def _preview_actions() -> rx.Component:
    mid = MessageState.message_id.to(str)
    decidable = (
        (MessageState.review_status == "warning") | (MessageState.review_status == "needs_review")
    ) & (MessageState.decision == "")
    return rx.hstack(
        rx.cond(decidable & ReviewGateState.can_review,
                rx.button(rx.icon("check", size=14), "Approve", size="2", color_scheme="green",
                          on_click=ReviewGateState.approve(mid), id="preview-approve")),
        rx.cond(
            ReviewGateState.can_review & MessageState.excludable,
            rx.cond(
                MessageState.decision == "excluded",
                rx.button("Include again", size="2", variant="soft",
                          on_click=ReviewGateState.include(mid), id="preview-include"),
                rx.button(rx.icon("ban", size=14), "Exclude", size="2", variant="soft",
                          color_scheme="gray", on_click=ReviewGateState.exclude(mid),
                          id="preview-exclude"),
            ),
        ),
        rx.button(rx.icon("download", size=14), "Download .eml", size="2", variant="soft",
                  on_click=MessageState.download_eml(mid), id="preview-eml"),
        # Only while in review: after approval an edit would need a rebuild that takes
        # the campaign back to review, and after sending it would change nothing sent.
        rx.cond(ReviewGateState.can_review & (MessageState.contact_id != 0)
                & (ReviewGateState.status == "in_review") & ~MessageState.editing_recipient,
                rx.button(rx.icon("user-pen", size=14), "Edit recipient", size="2",
                          variant="soft", on_click=MessageState.edit_recipient,
                          id="edit-recipient")),
        rx.spacer(),
        rx.icon_button(rx.icon("x", size=16), variant="ghost", on_click=MessageState.close,
                       aria_label="Close the preview"),
        align="center",
        width="100%",
        spacing="2",
    )  # fmt: skip


def _missing_badge(missing) -> rx.Component:
    return rx.cond(missing, rx.badge("missing in this message", color_scheme="orange",
                                     variant="soft", size="1"))  # fmt: skip


def _recipient_input(label, name: str, value, element_id, missing) -> rx.Component:
    return rx.vstack(
        rx.hstack(rx.text(label, size="1", weight="medium"), _missing_badge(missing),
                  spacing="2", align="center"),
        rx.input(name=name, default_value=value, id=element_id, width="100%"),
        spacing="1",
        width="100%",
    )  # fmt: skip


def _recipient_field(item: rx.Var) -> rx.Component:
    name = item["name"].to(str)
    return _recipient_input(
        name, "field-" + name, item["value"], "recipient-field-" + name, item["missing"] == "1"
    )


def _recipient_form() -> rx.Component:
    """The recipient's names and custom fields, saved to the contact (not the address)."""
    missing = MessageState.recipient_missing
    return rx.form(
        rx.vstack(
            rx.text("Edit recipient", size="3", weight="bold"),
            rx.text("The address ", rx.code(MessageState.email), " cannot be changed here: it "
                    "is the contact's key. Saving changes the contact in its list; Rebuild then "
                    "updates this message (and any other built for the same contact).",
                    size="1", color_scheme="gray"),
            rx.grid(
                _recipient_input("First name", "first_name", MessageState.recipient_first_name,
                                 "recipient-first_name", missing.contains("first_name")),
                _recipient_input("Last name", "last_name", MessageState.recipient_last_name,
                                 "recipient-last_name", missing.contains("last_name")),
                rx.foreach(MessageState.recipient_fields, _recipient_field),
                columns="3",
                spacing="3",
                width="100%",
            ),
            rx.cond(MessageState.recipient_error != "",
                    rx.callout(MessageState.recipient_error, icon="triangle-alert",
                               color_scheme="red", size="1", role="alert",
                               id="recipient-error")),
            rx.hstack(
                rx.button("Save", type="submit", size="2", id="save-recipient"),
                rx.button("Cancel", type="button", size="2", variant="soft", color_scheme="gray",
                          on_click=MessageState.cancel_recipient, id="cancel-recipient"),
                spacing="2",
            ),
            spacing="2",
            width="100%",
        ),
        on_submit=MessageState.save_recipient,
        reset_on_submit=False,
        key=MessageState.message_id.to(str),
        width="100%",
        padding="12px",
        border="1px solid var(--gray-a6)",
        border_radius="6px",
        id="recipient-form",
    )  # fmt: skip


def recipient_editor() -> rx.Component:
    return rx.fragment(
        rx.cond(MessageState.editing_recipient, _recipient_form()),
        rx.cond(MessageState.recipient_saved != "",
                rx.callout(MessageState.recipient_saved, icon="circle-check",
                           color_scheme="green", size="1", id="recipient-saved")),
    )  # fmt: skip


def message_preview() -> rx.Component:
    return rx.cond(
        MessageState.message_id != 0,
        rx.card(
            rx.vstack(
                rx.hstack(
                    rx.text(MessageState.email, size="4", weight="bold"),
                    rx.badge(MessageState.status_label, color_scheme=MessageState.status_color,
                             variant="soft", id="preview-status"),
                    rx.cond(MessageState.decision != "",
                            rx.badge(MessageState.decision_label, variant="outline",
                                     id="preview-decision")),
                    align="center",
                    spacing="2",
                ),
                rx.foreach(MessageState.reasons,
                           lambda r: rx.text("• ", r, size="2", class_name="preview-reason")),
                _preview_actions(),
                recipient_editor(),
                rx.cond(MessageState.error != "",
                        rx.callout(MessageState.error, icon="triangle-alert", color_scheme="red",
                                   size="1")),
                rx.table.root(rx.table.body(rx.foreach(MessageState.headers, _header_line)),
                              size="1", width="100%", id="preview-headers"),
                html_and_text(MessageState.html_document, MessageState.text,
                              title="HTML part of the message", height="460px"),
                rx.cond(
                    MessageState.attachments.length() > 0,
                    rx.vstack(rx.text("Attachments", size="1", color_scheme="gray"),
                              rx.foreach(MessageState.attachments, _attachment), spacing="1",
                              id="preview-attachments"),
                    rx.text("No attachments.", size="1", color_scheme="gray",
                            id="preview-attachments"),
                ),
                rx.divider(),
                _test_send(),
                spacing="3",
                width="100%",
                align="stretch",
            ),
            width="100%",
            id="message-preview",
        ),
    )  # fmt: skip


# --- send -------------------------------------------------------------------------------------


def _blocker(text: rx.Var) -> rx.Component:
    return rx.text("• ", text, size="2", class_name="send-blocker")


def send_confirmation() -> rx.Component:
    return rx.alert_dialog.root(
        rx.alert_dialog.content(
            rx.alert_dialog.title(ReviewGateState.confirm_title, id="confirm-send-title"),
            rx.alert_dialog.description(
                rx.cond(ReviewGateState.status == "in_review",
                        "This approves the campaign in your name and starts sending right "
                        "away. ", "Sending starts right away. "),
                "You can pause or cancel it from the progress page; messages already sent "
                "cannot be called back.",
            ),
            rx.hstack(
                rx.alert_dialog.cancel(rx.button("Not yet", variant="soft", color_scheme="gray",
                                                 disabled=ReviewGateState.sending_now,
                                                 id="cancel-send-confirm")),
                rx.button(rx.icon("send-horizontal", size=16), "Send now",
                          on_click=ReviewGateState.send, loading=ReviewGateState.sending_now,
                          id="confirm-send"),
                justify="end", spacing="3", margin_top="16px",
            ),
        ),
        open=ReviewGateState.confirm_open,
        on_open_change=ReviewGateState.set_confirm_open,
    )  # fmt: skip


def send_panel() -> rx.Component:
    return rx.card(
        rx.hstack(
            rx.button(rx.icon("send-horizontal", size=16), "Send", size="3",
                      on_click=ReviewGateState.open_send, disabled=ReviewGateState.send_disabled,
                      id="send-campaign"),
            rx.vstack(
                rx.cond(
                    ReviewGateState.sent_note != "",
                    rx.callout(
                        rx.text(ReviewGateState.sent_note, " ",
                                rx.link("See the progress", href=ReviewGateState.send_href,
                                        id="send-progress-link")),
                        icon="send", color_scheme="blue", id="campaign-sent",
                    ),
                    rx.cond(
                        ReviewGateState.approved_note != "",
                        rx.callout(ReviewGateState.approved_note, icon="circle-check",
                                   color_scheme="green", id="campaign-approved"),
                        rx.cond(
                            ReviewGateState.blockers.length() > 0,
                            rx.vstack(
                                rx.text("Send stays off until:", size="2", weight="bold"),
                                rx.foreach(ReviewGateState.blockers, _blocker),
                                spacing="1",
                                id="send-blockers",
                            ),
                            rx.cond(
                                ReviewGateState.can_approve,
                                rx.text("Every message has what it needs. Send approves the "
                                        "campaign in your name and starts sending; you can "
                                        "pause or cancel it while it goes out.",
                                        size="2", id="send-ready"),
                                rx.text("Only an owner, an admin or a sender may approve and "
                                        "send.", size="2", color_scheme="gray", id="send-role"),
                            ),
                        ),
                    ),
                ),
                rx.cond(ReviewGateState.send_error != "",
                        rx.callout(ReviewGateState.send_error, icon="triangle-alert",
                                   color_scheme="red", size="1", role="alert",
                                   id="send-error")),
                spacing="2",
                width="100%",
            ),
            send_confirmation(),
            align="start",
            spacing="4",
            width="100%",
        ),
        width="100%",
        id="send-panel",
    )  # fmt: skip
