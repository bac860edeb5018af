"""Seed mailboxes: the test mailboxes whose copies show where campaigns land."""

from __future__ import annotations

import reflex as rx

from mailer_app import routes
from mailer_app.components.seed_widgets import (
    delete_dialog,
    import_dialog,
    row_test_result,
    seed_form_dialog,
    seed_lists_section,
    seed_table,
)
from mailer_app.components.shell import field_error, page_frame
from mailer_app.state.auth import AuthState
from mailer_app.state.seeds import SeedFormState, SeedImportState, SeedListsState, SeedsState


def toolbar() -> rx.Component:
    return rx.hstack(
        rx.text(
            "Each seed mailbox gets a copy of every campaign; its folders tell you whether "
            "the campaign reached the inbox.",
            size="2",
            color_scheme="gray",
        ),
        rx.spacer(),
        rx.cond(
            SeedsState.can_edit,
            rx.hstack(
                rx.link(
                    rx.button(
                        rx.icon("send", size=16),
                        "Run a pre-flight test",
                        variant="soft",
                        id="open-preflight",
                    ),
                    href=routes.PREFLIGHT,
                ),
                rx.button(
                    rx.icon("file-up", size=16),
                    "Import CSV",
                    variant="soft",
                    on_click=SeedImportState.open_dialog,
                    id="import-csv",
                ),
                rx.button(
                    rx.icon("plus", size=16),
                    "Add seed",
                    on_click=SeedFormState.open_add,
                    id="add-seed",
                ),
                spacing="2",
            ),
        ),
        align="center",
        width="100%",
    )


@rx.page(
    route=routes.SEEDS,
    title="Seed mailboxes · mailer",
    on_load=[AuthState.require_login, SeedsState.load, SeedListsState.load],
)
def seeds_page() -> rx.Component:
    return page_frame(
        "Seed mailboxes",
        toolbar(),
        field_error(SeedsState.notice),
        row_test_result(),
        seed_table(),
        rx.divider(),
        seed_lists_section(),
        seed_form_dialog(),
        import_dialog(),
        delete_dialog(),
    )
