"""Sign in. One generic message for every failure, so it reveals nothing."""

from __future__ import annotations

import reflex as rx

from mailer_app import routes
from mailer_app.components.shell import centered_card, field_error
from mailer_app.db import session_scope
from mailer_app.models import Source
from mailer_app.services import auth
from mailer_app.state.auth import AuthState


class LoginState(rx.State):
    error: str = ""

    @rx.event
    def redirect_if_needed(self):
        self.error = ""
        with session_scope() as session:
            if auth.needs_first_run(session=session):
                return rx.redirect(routes.SETUP)
        return None

    @rx.event
    async def submit(self, form: dict):
        email = str(form.get("email", "")).strip()
        password = str(form.get("password", ""))
        try:
            with session_scope() as session:
                user = auth.authenticate(
                    session=session, email=email, password=password, source=Source.UI
                )
                token = auth.start_session(session=session, user=user)
        except auth.InvalidCredentials as exc:
            self.error = str(exc)
            return None
        self.error = ""
        state = await self.get_state(AuthState)
        state.session_token = token
        return rx.redirect(routes.HOME)


@rx.page(route=routes.LOGIN, title="Sign in · mailer", on_load=LoginState.redirect_if_needed)
def login_page() -> rx.Component:
    return centered_card(
        rx.heading("Sign in", size="6"),
        rx.text("Campaigns and inbox placement, in one place.", color_scheme="gray"),
        rx.form(
            rx.vstack(
                rx.text("Email", as_="label", html_for="email", size="2", weight="medium"),
                rx.input(id="email", name="email", type="email", required=True, size="3"),
                rx.text("Password", as_="label", html_for="password", size="2", weight="medium"),
                rx.input(id="password", name="password", type="password", required=True, size="3"),
                field_error(LoginState.error),
                rx.button("Sign in", type="submit", size="3", id="sign-in"),
                spacing="2",
                align="stretch",
            ),
            on_submit=LoginState.submit,
            reset_on_submit=False,
        ),
    )
