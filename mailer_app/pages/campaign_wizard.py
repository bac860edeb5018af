"""The campaign wizard: Basics → Sender → Recipients → Content → Attachments → Review."""

from __future__ import annotations

import reflex as rx

from mailer_app import routes
from mailer_app.components.shell import page_frame
from mailer_app.components.wizard_steps import nav_buttons, step_body, stepper, wizard_header
from mailer_app.state.auth import AuthState
from mailer_app.state.campaign_wizard import WizardState


def wizard() -> rx.Component:
    return rx.vstack(
        wizard_header(),
        stepper(),
        # Keyed by campaign: opening another campaign remounts the (uncontrolled) fields.
        rx.card(
            step_body(), width="100%", id="wizard-step-card", key=WizardState.campaign_id.to(str)
        ),
        nav_buttons(),
        spacing="4",
        width="100%",
        align="stretch",
    )


@rx.page(
    route=routes.CAMPAIGN_WIZARD,
    title="Campaign · mailer",
    on_load=[AuthState.require_login, WizardState.load],
)
def campaign_wizard_page() -> rx.Component:
    return page_frame(
        rx.cond(WizardState.loaded, WizardState.title, "Campaign"),
        rx.cond(
            WizardState.missing != "",
            rx.callout(WizardState.missing, icon="triangle-alert", color_scheme="red",
                       id="campaign-missing"),
            # Steps mount only once the campaign is loaded: their fields start from the
            # saved values.
            rx.cond(
                WizardState.loaded,
                wizard(),
                rx.hstack(rx.spinner(), rx.text("Opening the campaign…"), align="center"),
            ),
        ),
    )  # fmt: skip
