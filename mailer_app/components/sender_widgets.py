"""Widgets of the sender accounts page: the table, the add/edit dialog, delete, and
the signing (DKIM) dialog."""

from __future__ import annotations

import reflex as rx

from mailer_app.components.shell import field_error
from mailer_app.state.senders import SenderDkimState, SenderFormState, SendersState

SMTP_SECURITY_OPTIONS = [
    ("starttls", "STARTTLS (encrypted after connecting, usually port 587)"),
    ("tls", "TLS (encrypted from the start, usually port 465)"),
    ("plain", "None (only for a server on this computer)"),
]
IMAP_SECURITY_OPTIONS = [
    ("tls", "TLS (usually port 993)"),
    ("starttls", "STARTTLS (usually port 143)"),
    ("plain", "None (only for a server on this computer)"),
]


def spinner_text(text: rx.Var | str) -> rx.Component:
    return rx.hstack(rx.spinner(size="2"), rx.text(text, size="2"), align="center")


# --- the table ---------------------------------------------------------------------------


def status_badge(row: rx.Var) -> rx.Component:
    return rx.vstack(
        rx.badge(
            row["status_label"],
            color_scheme=row["status_color"],
            variant="soft",
            id=f"sender-status-{row['id']}",
        ),
        rx.cond(
            row["reason"] != "",
            rx.text(row["reason"], size="1", color_scheme="gray", id=f"sender-reason-{row['id']}"),
        ),
        spacing="1",
        align="start",
        max_width="280px",
    )


def row_actions(row: rx.Var) -> rx.Component:
    testing_this = SendersState.testing_id == row["id"]
    return rx.hstack(
        rx.button(
            rx.cond(testing_this, rx.spinner(size="1"), rx.icon("plug-zap", size=14)),
            "Test",
            size="1",
            variant="soft",
            disabled=SendersState.testing_id != "",
            on_click=SendersState.test_row(row["id"]),
            id=f"sender-test-{row['id']}",
        ),
        rx.button(
            rx.icon("pencil", size=14),
            "Edit",
            size="1",
            variant="soft",
            on_click=SenderFormState.open_edit(row["id"]),
            id=f"sender-edit-{row['id']}",
        ),
        rx.button(
            rx.icon("signature", size=14),
            "Signing",
            size="1",
            variant="soft",
            on_click=SenderDkimState.open_dkim(row["id"]),
            id=f"sender-dkim-{row['id']}",
            title="Signing (DKIM)",
        ),
        rx.button(
            rx.icon("trash-2", size=14),
            size="1",
            variant="soft",
            color_scheme="red",
            on_click=SendersState.ask_delete(row["id"], row["name"]),
            id=f"sender-delete-{row['id']}",
            aria_label="Delete",
        ),
        spacing="2",
    )


def _small(text: rx.Var) -> rx.Component:
    return rx.cond(text != "", rx.text(text, size="1", color_scheme="gray"))


def sender_row(row: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.text(row["name"], weight="medium")),
        rx.table.cell(rx.text(row["from"], size="2")),
        rx.table.cell(
            rx.vstack(
                rx.text(row["server"], size="2"),
                _small(row["sign_in"]),
                _small(row["imap"]),
                _small(row["limits"]),
                _small(row["signing"]),
                spacing="0",
                max_width="300px",
            )
        ),
        rx.table.cell(status_badge(row)),
        rx.cond(SendersState.can_edit, rx.table.cell(row_actions(row))),
        id=f"sender-row-{row['id']}",
        align="center",
    )


def sender_table() -> rx.Component:
    return rx.cond(
        SendersState.rows.length() > 0,
        rx.table.root(
            rx.table.header(
                rx.table.row(
                    rx.table.column_header_cell("Name"),
                    rx.table.column_header_cell("From"),
                    rx.table.column_header_cell("Server"),
                    rx.table.column_header_cell("Status"),
                    rx.cond(SendersState.can_edit, rx.table.column_header_cell("")),
                )
            ),
            rx.table.body(rx.foreach(SendersState.rows, sender_row)),
            variant="surface",
            width="100%",
            id="sender-table",
        ),
        rx.callout(
            "No sender accounts yet. Add the email account your campaigns are sent from: "
            "you need its outgoing mail server and password, which your email provider's "
            "help pages list.",
            icon="inbox",
            id="no-senders",
        ),
    )


def row_test_result() -> rx.Component:
    return rx.cond(
        SendersState.testing_id != "",
        rx.callout(
            spinner_text("Connecting for " + SendersState.test_name + "…"),
            icon="plug-zap",
            id="sender-row-test-result",
        ),
        rx.cond(
            SendersState.test_message != "",
            rx.callout(
                rx.hstack(
                    rx.vstack(
                        rx.text(SendersState.test_name, weight="bold", size="2"),
                        rx.text(SendersState.test_message, size="2"),
                        spacing="1",
                    ),
                    rx.spacer(),
                    rx.icon_button(
                        rx.icon("x", size=14),
                        size="1",
                        variant="ghost",
                        on_click=SendersState.dismiss_test,
                        aria_label="Close",
                    ),
                    width="100%",
                ),
                icon=rx.cond(SendersState.test_ok, "circle-check", "triangle-alert"),
                color_scheme=rx.cond(SendersState.test_ok, "green", "red"),
                id="sender-row-test-result",
            ),
        ),
    )


def delete_dialog() -> rx.Component:
    return rx.alert_dialog.root(
        rx.alert_dialog.content(
            rx.alert_dialog.title("Delete the sender account " + SendersState.delete_name + "?"),
            rx.alert_dialog.description(
                "Its saved passwords are deleted too. Mail already sent is not affected, "
                "and the email account itself is not touched."
            ),
            field_error(SendersState.delete_error),
            rx.hstack(
                rx.alert_dialog.cancel(
                    rx.button("Cancel", variant="soft", color_scheme="gray", id="cancel-delete")
                ),
                rx.button(
                    "Delete", color_scheme="red", on_click=SendersState.confirm_delete,
                    id="confirm-delete-sender",
                ),
                justify="end",
                spacing="3",
                margin_top="16px",
            ),
        ),
        open=SendersState.delete_id != "",
        on_open_change=SendersState.cancel_delete,
    )  # fmt: skip


# --- add / edit dialog ------------------------------------------------------------------------


def _error(field: str) -> rx.Component:
    return field_error(SenderFormState.errors.get(field, ""))


def _field(label: str, control: rx.Component, field: str, hint: str = "") -> rx.Component:
    return rx.vstack(
        rx.el.label(
            rx.text(label, as_="span", size="2", weight="medium"), html_for=f"sender-{field}"
        ),
        control,
        rx.text(hint, size="1", color_scheme="gray") if hint else rx.fragment(),
        _error(field),
        spacing="1",
        align="stretch",
        width="100%",
    )


def _input(field: str, **props) -> rx.Component:
    """A text input bound to the form's values (the submitted form is what counts)."""
    return rx.input(
        id=f"sender-{field}",
        name=field,
        value=SenderFormState.values[field],
        on_change=lambda value: SenderFormState.set_field(field, value),
        **props,
    )


def _security(field: str, options: list[tuple[str, str]]) -> rx.Component:
    return rx.select.root(
        rx.select.trigger(id=f"sender-{field}", width="100%"),
        rx.select.content(*[rx.select.item(label, value=v) for v, label in options]),
        name=field,
        value=SenderFormState.values[field],
        on_change=lambda value: SenderFormState.set_field(field, value),
    )


def _password(field: str, has_saved: rx.Var) -> rx.Component:
    # Never bound to state: the value travels only with the submitted form.
    return rx.input(
        id=f"sender-{field}",
        name=field,
        type="password",
        auto_complete="new-password",
        placeholder=rx.cond(has_saved, "Leave empty to keep the saved password", ""),
    )


def _section(title: str, *children: rx.Component) -> rx.Component:
    return rx.vstack(
        rx.heading(title, size="3", as_="h3"),
        *children,
        spacing="3",
        align="stretch",
        width="100%",
    )


def _two(left: rx.Component, right: rx.Component) -> rx.Component:
    return rx.grid(left, right, columns="3fr 1fr", spacing="3", width="100%")


def identity_section() -> rx.Component:
    return _section(
        "Who the mail is from",
        _field(
            "Account name",
            _input("name", placeholder="Newsletter", auto_focus=True),
            "name",
            "For you, to tell your sender accounts apart.",
        ),
        rx.grid(
            _field(
                "Sender name",
                _input("from_name", placeholder="Example News"),
                "from_name",
                "What recipients see as the sender.",
            ),
            _field(
                "From address",
                _input("from_email", type="email", placeholder="news@example.com"),
                "from_email",
            ),
            columns="1fr 1fr",
            spacing="3",
            width="100%",
        ),
        _field(
            "Reply-to address (optional)",
            _input("reply_to", type="email", placeholder="Replies go to the from address"),
            "reply_to",
        ),
    )


def server_section() -> rx.Component:
    return _section(
        "Outgoing mail server (SMTP)",
        _field(
            "Email provider",
            rx.select.root(
                rx.select.trigger(id="sender-preset", width="100%"),
                rx.select.content(
                    rx.foreach(
                        SenderFormState.presets,
                        lambda p: rx.select.item(p["label"], value=p["key"]),
                    )
                ),
                value=SenderFormState.preset,
                on_change=SenderFormState.choose_preset,
            ),
            "preset",
        ),
        rx.cond(
            SenderFormState.preset_hint != "",
            rx.callout(SenderFormState.preset_hint, icon="info", size="1", id="sender-preset-hint"),
        ),
        _two(
            _field("Server", _input("smtp_host", placeholder="smtp.example.com"), "smtp_host"),
            _field("Port", _input("smtp_port", input_mode="numeric"), "smtp_port"),
        ),
        _field("Encryption", _security("smtp_security", SMTP_SECURITY_OPTIONS), "smtp_security"),
        rx.grid(
            _field(
                "User name",
                _input("smtp_username", placeholder="Usually your full email address"),
                "smtp_username",
                "Leave empty if the server needs no sign-in.",
            ),
            _field(
                "Password",
                _password("password", SenderFormState.has_password),
                "password",
                "Stored encrypted and never shown again.",
            ),
            columns="1fr 1fr",
            spacing="3",
            width="100%",
        ),
    )


def imap_section() -> rx.Component:
    return _section(
        "Incoming mail (IMAP, optional)",
        rx.text(
            rx.switch(
                checked=SenderFormState.imap_on,
                on_change=SenderFormState.set_imap_on,
                margin_right="8px",
            ),
            "Also read this mailbox: keeps a copy of each campaign in Sent, and finds "
            "bounced messages.",
            as_="label",
            size="2",
            id="sender-imap-on",
        ),
        rx.cond(
            SenderFormState.imap_on,
            rx.vstack(
                _two(
                    _field(
                        "IMAP server", _input("imap_host", placeholder="imap.example.com"),
                        "imap_host",
                    ),
                    _field("Port", _input("imap_port", input_mode="numeric"), "imap_port"),
                ),
                _field(
                    "Encryption", _security("imap_security", IMAP_SECURITY_OPTIONS),
                    "imap_security",
                ),
                rx.grid(
                    _field(
                        "User name",
                        _input("imap_username", placeholder="Same as above"),
                        "imap_username",
                    ),
                    _field(
                        "Password",
                        _password("imap_password", SenderFormState.has_imap_password),
                        "imap_password",
                        "Usually the same password as above.",
                    ),
                    columns="1fr 1fr",
                    spacing="3",
                    width="100%",
                ),
                spacing="3",
                align="stretch",
                width="100%",
            ),
        ),
    )  # fmt: skip


def limits_section() -> rx.Component:
    return _section(
        "Sending speed (optional)",
        rx.text(
            "Your provider limits how fast you may send; stay under its limits so your "
            "mail is not blocked. Leave empty for no limit.",
            size="1",
            color_scheme="gray",
        ),
        rx.grid(
            _field("Per second", _input("rate_per_second", input_mode="decimal"),
                   "rate_per_second"),
            _field("Per minute", _input("rate_per_minute", input_mode="numeric"),
                   "rate_per_minute"),
            _field("Per hour", _input("rate_per_hour", input_mode="numeric"), "rate_per_hour"),
            columns="3",
            spacing="3",
            width="100%",
        ),
    )  # fmt: skip


def form_test_result() -> rx.Component:
    return rx.cond(
        SenderFormState.testing,
        rx.callout(spinner_text("Connecting…"), icon="plug-zap", id="sender-form-test-result"),
        rx.cond(
            SenderFormState.test_message != "",
            rx.callout(
                SenderFormState.test_message,
                icon=rx.cond(SenderFormState.test_ok, "circle-check", "triangle-alert"),
                color_scheme=rx.cond(SenderFormState.test_ok, "green", "red"),
                id="sender-form-test-result",
            ),
        ),
    )


def form_buttons() -> rx.Component:
    return rx.hstack(
        rx.button(
            rx.cond(SenderFormState.testing, rx.spinner(size="2"), rx.icon("plug-zap", size=16)),
            "Test connection",
            type="submit",
            variant="soft",
            disabled=SenderFormState.busy,
            on_click=SenderFormState.set_intent("test"),
            id="sender-form-test",
        ),
        rx.spacer(),
        rx.dialog.close(rx.button("Cancel", type="button", variant="soft", color_scheme="gray")),
        rx.button(
            rx.cond(
                SenderFormState.busy & ~SenderFormState.testing, rx.spinner(size="2"), rx.fragment()
            ),
            "Save",
            type="submit",
            disabled=SenderFormState.busy,
            on_click=SenderFormState.set_intent("save"),
            id="sender-form-save",
        ),
        width="100%",
        spacing="3",
        margin_top="8px",
    )


def sender_form_dialog() -> rx.Component:
    is_edit = SenderFormState.mode == "edit"
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(rx.cond(is_edit, "Edit sender account", "Add a sender account")),
            rx.dialog.description(
                "The email account your campaigns are sent from. Test the connection "
                "before saving: it signs in to the server and sends nothing.",
                size="2",
                color_scheme="gray",
            ),
            rx.form(
                rx.vstack(
                    identity_section(),
                    rx.divider(),
                    server_section(),
                    rx.divider(),
                    imap_section(),
                    rx.divider(),
                    limits_section(),
                    field_error(SenderFormState.message),
                    form_test_result(),
                    form_buttons(),
                    spacing="4",
                    align="stretch",
                ),
                on_submit=SenderFormState.submit,
                reset_on_submit=False,
                # The server checks every value and says what is wrong next to the
                # field, in the same words for every browser.
                no_validate=True,
                id="sender-form",
            ),
            max_width="640px",
        ),
        open=SenderFormState.is_open,
        on_open_change=SenderFormState.set_open,
    )


# --- signing (DKIM) dialog ----------------------------------------------------------------------

KEY_OPTIONS = [
    ("keep", "Keep the current key"),
    ("rsa", "Make a new key for me (RSA, 2048 bits: recommended)"),
    ("ed25519", "Make a new Ed25519 key (shorter, but Gmail and Outlook do not check it yet)"),
    ("paste", "Use a private key I already have"),
]


def _dkim_error(field: str) -> rx.Component:
    return field_error(SenderDkimState.errors.get(field, ""))


def _dkim_field(label: str, control: rx.Component, field: str, hint) -> rx.Component:
    return rx.vstack(
        rx.el.label(rx.text(label, as_="span", size="2", weight="medium"), html_for=field),
        control,
        rx.text(hint, size="1", color_scheme="gray"),
        _dkim_error(field),
        spacing="1",
        align="stretch",
        width="100%",
    )


def dkim_status() -> rx.Component:
    record = SenderDkimState.record
    return rx.cond(
        SenderDkimState.enabled,
        rx.hstack(
            rx.badge("On", color_scheme="green", variant="soft", size="2"),
            rx.text(
                rx.cond(
                    record["domain"] != "",
                    "Messages from this account are signed for " + record["domain"] + " with an "
                    + record["key"] + ", selector “" + record["selector"] + "”.",
                    "This account is set to sign its messages, but its key cannot be used.",
                ),
                size="2",
            ),
            align="center",
            id="dkim-status",
        ),
        rx.hstack(
            rx.badge("Off", color_scheme="gray", variant="soft", size="2"),
            rx.text("Messages from this account are not signed.", size="2"),
            align="center",
            id="dkim-status",
        ),
    )  # fmt: skip


def _key_option(value: str, label: str) -> rx.Component:
    return rx.text(
        rx.radio_group.item(value=value, id=f"dkim-key-{value}", margin_right="8px"),
        label,
        as_="label",
        size="2",
        display="flex",
        align_items="center",
    )


def dkim_key_choice() -> rx.Component:
    keep_value, keep_label = KEY_OPTIONS[0]
    return rx.vstack(
        rx.text("Key", as_="span", size="2", weight="medium"),
        rx.radio_group.root(
            rx.vstack(
                rx.cond(SenderDkimState.enabled, _key_option(keep_value, keep_label)),
                *[_key_option(value, label) for value, label in KEY_OPTIONS[1:]],
                spacing="2",
            ),
            value=SenderDkimState.key_choice,
            on_change=SenderDkimState.set_key_choice,
            name="dkim_key_choice",
            id="dkim-key-choice",
        ),
        rx.cond(
            SenderDkimState.key_choice == "paste",
            rx.vstack(
                # Never bound to state: the key travels only with the submitted form.
                rx.text_area(
                    id="dkim_private_key",
                    name="dkim_private_key",
                    placeholder="-----BEGIN PRIVATE KEY-----\n…\n-----END PRIVATE KEY-----",
                    rows="7",
                    auto_complete=False,
                    spell_check=False,
                    font_family="var(--code-font-family)",
                    width="100%",
                ),
                rx.text(
                    "Paste the whole key, from the -----BEGIN line to the -----END line. It is "
                    "stored encrypted and never shown again.",
                    size="1",
                    color_scheme="gray",
                ),
                spacing="1",
                width="100%",
            ),
        ),
        _dkim_error("dkim_private_key"),
        spacing="2",
        align="stretch",
        width="100%",
    )


def _copy_button(part: str, value: rx.Var, label: str = "Copy") -> rx.Component:
    return rx.button(
        rx.icon(rx.cond(SenderDkimState.copied == part, "check", "copy"), size=14),
        rx.cond(SenderDkimState.copied == part, "Copied", label),
        type="button",
        size="1",
        variant="soft",
        on_click=[rx.set_clipboard(value), SenderDkimState.mark_copied(part)],
        id=f"dkim-copy-{part}",
    )


def _long_text(value: rx.Var, element_id: str) -> rx.Component:
    return rx.code(
        value,
        id=element_id,
        variant="ghost",
        size="2",
        style={"word_break": "break-all", "white_space": "pre-wrap", "user_select": "all"},
    )


def dkim_record() -> rx.Component:
    record = SenderDkimState.record
    return rx.cond(
        record["name"] != "",
        rx.vstack(
            rx.heading("Publish this record in your domain's DNS", size="3", as_="h3"),
            rx.text(
                "Sign in where your domain's DNS is managed (usually the company you bought "
                "the domain from) and add a new record of type TXT with this name and value. "
                "Until it is published, receivers cannot check the signature. A new record "
                "can take up to a day to be seen everywhere.",
                size="2",
                color_scheme="gray",
            ),
            rx.data_list.root(
                rx.data_list.item(
                    rx.data_list.label("Type"),
                    rx.data_list.value(rx.code("TXT", variant="ghost", id="dkim-record-type")),
                ),
                rx.data_list.item(
                    rx.data_list.label("Name"),
                    rx.data_list.value(
                        rx.vstack(
                            rx.hstack(
                                _long_text(record["name"], "dkim-record-name"),
                                _copy_button("name", record["name"]),
                                align="center",
                                wrap="wrap",
                            ),
                            rx.text(
                                "If your DNS host adds the domain to names itself, enter only ",
                                rx.code(record["host"], id="dkim-record-host"),
                                ".",
                                size="1",
                                color_scheme="gray",
                            ),
                            spacing="1",
                        )
                    ),
                ),
                rx.data_list.item(
                    rx.data_list.label("Value"),
                    rx.data_list.value(
                        rx.vstack(
                            _long_text(record["value"], "dkim-record-value"),
                            _copy_button("value", record["value"]),
                            spacing="2",
                        )
                    ),
                ),
                orientation="vertical",
                size="2",
                width="100%",
            ),
            rx.cond(SenderDkimState.record_strings.length() > 1, dkim_record_pieces()),
            rx.foreach(
                SenderDkimState.advice,
                lambda note: rx.callout(note, icon="info", color_scheme="amber", size="1"),
            ),
            spacing="3",
            align="stretch",
            width="100%",
            id="dkim-record",
        ),
    )


def dkim_record_pieces() -> rx.Component:
    return rx.vstack(
        rx.text(
            "One piece of a TXT record holds at most 255 characters, so this value is split "
            "in " + SenderDkimState.record_strings.length().to_string() + " pieces. Most DNS "
            "hosts split it for you when you paste the whole value; if yours asks for the "
            "pieces, enter them in this order:",
            size="2",
            color_scheme="gray",
        ),
        rx.foreach(
            SenderDkimState.record_strings,
            lambda piece, i: rx.hstack(
                rx.badge(i + 1, variant="outline"),
                _long_text(piece, f"dkim-record-piece-{i}"),
                align="start",
            ),
        ),
        _copy_button("pieces", SenderDkimState.record["quoted"], "Copy as quoted pieces"),
        spacing="2",
        align="stretch",
        width="100%",
        id="dkim-record-pieces",
    )


def dkim_remove() -> rx.Component:
    return rx.cond(
        SenderDkimState.enabled,
        rx.cond(
            SenderDkimState.confirm_remove,
            rx.callout(
                rx.vstack(
                    rx.text(
                        "Remove the key? Messages from this account will no longer be signed, "
                        "and the key cannot be brought back: to sign again you make a new one "
                        "and publish its DNS record.",
                        size="2",
                    ),
                    rx.hstack(
                        rx.button(
                            "Cancel", type="button", size="1", variant="soft",
                            color_scheme="gray", on_click=SenderDkimState.cancel_remove,
                            id="dkim-cancel-remove",
                        ),
                        rx.button(
                            "Remove key", type="button", size="1", color_scheme="red",
                            on_click=SenderDkimState.remove, id="dkim-confirm-remove",
                        ),
                        spacing="2",
                    ),
                    spacing="2",
                ),
                icon="triangle-alert",
                color_scheme="red",
                id="dkim-remove-confirmation",
            ),
            rx.button(
                rx.icon("trash-2", size=14), "Remove key", type="button", variant="soft",
                color_scheme="red", on_click=SenderDkimState.ask_remove, id="dkim-remove",
            ),
        ),
    )  # fmt: skip


def dkim_form() -> rx.Component:
    choice = SenderDkimState.key_choice
    return rx.form(
        rx.vstack(
            rx.grid(
                _dkim_field(
                    "Domain",
                    rx.input(
                        id="dkim_domain", name="dkim_domain", value=SenderDkimState.domain,
                        on_change=SenderDkimState.set_domain, placeholder="example.com",
                    ),
                    "dkim_domain",
                    "The domain of the from address (" + SenderDkimState.from_email
                    + "), or a domain it belongs to.",
                ),
                _dkim_field(
                    "Selector",
                    rx.input(
                        id="dkim_selector", name="dkim_selector",
                        value=SenderDkimState.selector, on_change=SenderDkimState.set_selector,
                        placeholder="mailer",
                    ),
                    "dkim_selector",
                    "A short name for this key, like “mailer”. It becomes part of the DNS "
                    "record's name.",
                ),
                columns="1fr 1fr",
                spacing="3",
                width="100%",
            ),
            dkim_key_choice(),
            field_error(SenderDkimState.message),
            rx.hstack(
                rx.spacer(),
                rx.button(
                    rx.cond(SenderDkimState.busy, rx.spinner(size="2"), rx.icon("key-round")),
                    rx.cond(
                        (choice == "rsa") | (choice == "ed25519"), "Make the key and save",
                        rx.cond(choice == "paste", "Save this key", "Save"),
                    ),
                    type="submit", disabled=SenderDkimState.busy, id="dkim-save",
                ),
                width="100%",
            ),
            spacing="3",
            align="stretch",
        ),
        on_submit=SenderDkimState.save,
        reset_on_submit=False,
        no_validate=True,
        id="dkim-form",
    )  # fmt: skip


def sender_dkim_dialog() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title("Signing (DKIM): " + SenderDkimState.sender_name),
            rx.dialog.description(
                "DKIM puts a digital signature on every message sent from this account, so "
                "receiving servers can tell it really comes from your domain and was not "
                "changed on the way; signed mail is less likely to land in spam. It takes two "
                "steps: make a key here, then add one record to your domain's DNS.",
                size="2",
                color_scheme="gray",
            ),
            rx.vstack(
                dkim_status(),
                rx.cond(
                    SenderDkimState.notice != "",
                    rx.callout(
                        SenderDkimState.notice, icon="circle-check", color_scheme="green",
                        size="1", id="dkim-notice",
                    ),
                ),
                dkim_record(),
                rx.divider(),
                rx.heading(
                    rx.cond(SenderDkimState.enabled, "Change the key or its name",
                            "Set up signing"),
                    size="3", as_="h3",
                ),
                dkim_form(),
                dkim_remove(),
                rx.hstack(
                    rx.spacer(),
                    rx.dialog.close(
                        rx.button("Close", variant="soft", color_scheme="gray", id="dkim-close")
                    ),
                    width="100%",
                ),
                spacing="4",
                align="stretch",
                margin_top="12px",
            ),
            max_width="720px",
        ),
        open=SenderDkimState.is_open,
        on_open_change=SenderDkimState.set_open,
    )  # fmt: skip
