"""Who is signed in. Every page that shows workspace data loads through here.

Hiding a page is not authorization: handlers that read or write data call
`current_user()` themselves, which resolves the cookie token against the database
each time (a revoked session stops working at once).
"""

from __future__ import annotations

import reflex as rx

from mailer_app import routes
from mailer_app.db import session_scope
from mailer_app.services import auth

SESSION_MAX_AGE_S = 14 * 24 * 3600


class AuthState(rx.State):
    session_token: str = rx.Cookie(
        "", name="mailer_session", same_site="strict", max_age=SESSION_MAX_AGE_S
    )
    user_email: str = ""
    user_name: str = ""
    workspace_name: str = ""
    role: str = ""

    def current_user(self) -> auth.CurrentUser | None:
        if not self.session_token:
            return None
        with session_scope() as session:
            return auth.resolve_session(session=session, token=self.session_token)

    @rx.event
    def require_login(self):
        """on_load of every protected page: fill the user, or send to sign-in/setup."""
        user = self.current_user()
        if user is None:
            self.user_email = self.user_name = self.workspace_name = self.role = ""
            with session_scope() as session:
                first_run = auth.needs_first_run(session=session)
            return rx.redirect(routes.SETUP if first_run else routes.LOGIN)
        self.user_email = user.email
        self.user_name = user.display_name or user.email
        self.workspace_name = user.workspace_name
        self.role = user.role
        return None

    @rx.event
    def sign_out(self):
        if self.session_token:
            with session_scope() as session:
                auth.end_session(session=session, token=self.session_token)
        self.session_token = ""
        self.user_email = self.user_name = self.workspace_name = self.role = ""
        return rx.redirect(routes.LOGIN)
