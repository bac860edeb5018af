"""First run: create the workspace and its owner. Closed once any user exists."""

from __future__ import annotations

import reflex as rx

from mailer_app import routes
from mailer_app.components.shell import centered_card, field_error
from mailer_app.db import session_scope
from mailer_app.models import Source
from mailer_app.services import auth, demo
from mailer_app.settings import get_settings
from mailer_app.state.auth import AuthState


class SetupState(rx.State):
    error: str = ""
    is_open: bool = True

    @rx.event
    def check_open(self):
        with session_scope() as session:
            self.is_open = auth.needs_first_run(session=session)
        if not self.is_open:
            return rx.redirect(routes.LOGIN)
        return None

    @rx.event
    async def submit(self, form: dict):
        if form.get("password") != form.get("password_confirm"):
            self.error = "The two passwords are not the same."
            return None
        try:
            with session_scope() as session:
                user, workspace = auth.create_owner(
                    session=session,
                    email=str(form.get("email", "")).strip(),
                    password=str(form.get("password", "")),
                    display_name=str(form.get("display_name", "")).strip(),
                    workspace_name=str(form.get("workspace_name", "")).strip(),
                    source=Source.UI,
                )
                token = auth.start_session(session=session, user=user)
                workspace_id = workspace.id
        except (auth.AuthError, ValueError) as exc:
            self.error = str(exc)
            return None
        settings = get_settings()
        if settings.is_dev and settings.lab_enabled:
            demo.ensure_demo_data_safely(settings=settings, workspace_id=workspace_id)
        self.error = ""
        state = await self.get_state(AuthState)
        state.session_token = token
        return rx.redirect(routes.HOME)


def _field(label: str, name: str, type_: str = "text", hint: str = "") -> rx.Component:
    return rx.vstack(
        rx.text(label, as_="label", html_for=name, size="2", weight="medium"),
        rx.input(id=name, name=name, type=type_, required=True, size="3"),
        rx.cond(hint != "", rx.text(hint, size="1", color_scheme="gray")),
        spacing="1",
        align="stretch",
    )


@rx.page(route=routes.SETUP, title="Welcome · mailer", on_load=SetupState.check_open)
def setup_page() -> rx.Component:
    return centered_card(
        rx.heading("Welcome", size="6"),
        rx.text(
            "Create your workspace and the owner account. You can invite others later.",
            color_scheme="gray",
        ),
        rx.form(
            rx.vstack(
                _field("Workspace name", "workspace_name", hint="Your team or company."),
                _field("Your name", "display_name"),
                _field("Email", "email", "email"),
                _field("Password", "password", "password", hint="At least 10 characters."),
                _field("Password again", "password_confirm", "password"),
                field_error(SetupState.error),
                rx.button("Create workspace", type="submit", size="3", id="create-workspace"),
                spacing="3",
                align="stretch",
            ),
            on_submit=SetupState.submit,
            reset_on_submit=False,
        ),
    )
