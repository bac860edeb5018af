"""Contacts: the lists campaigns send to, and importing them from CSV files."""

from __future__ import annotations

import reflex as rx

from mailer_app import routes
from mailer_app.components.contact_widgets import import_section, lists_section, recent_imports
from mailer_app.components.shell import page_frame
from mailer_app.state.auth import AuthState
from mailer_app.state.contacts import ContactListsState


@rx.page(
    route=routes.CONTACTS,
    title="Contacts · mailer",
    on_load=[AuthState.require_login, ContactListsState.load],
)
def contacts_page() -> rx.Component:
    return page_frame(
        "Contacts",
        rx.text(
            "Each list holds people you send campaigns to. Addresses are compared without "
            "regard to case, so each person is in a list once; suppressed addresses stay in "
            "their lists but never get a campaign.",
            size="2",
            color_scheme="gray",
        ),
        lists_section(),
        rx.cond(ContactListsState.can_edit, import_section()),
        recent_imports(),
    )
