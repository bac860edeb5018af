"""State of the suppression list page (/suppressions): add, search, remove, import.

One small state. Every handler asks the database who is signed in; every change
also checks the role. Imports stream the upload to disk and run in a background
event (in a worker thread, one transaction per batch), so the page stays live.
"""

from __future__ import annotations

import asyncio

import reflex as rx

from mailer_app.db import session_scope
from mailer_app.models import Source
from mailer_app.services import ServiceError, contacts, suppressions
from mailer_app.state.contacts import can_manage, contact_manager, current_user

ERRORS_SHOWN = 50
REASON_FILTER_ALL = "all"


def _row(row: suppressions.SuppressionRow) -> dict[str, str]:
    return {
        "id": str(row.id),
        "email": row.email,
        "reason": row.reason,
        "reason_label": suppressions.REASON_LABELS.get(row.reason, row.reason),
        "note": row.note,
        "added": row.created_at.strftime("%Y-%m-%d %H:%M UTC"),
    }


class SuppressionsState(rx.State):
    rows: list[dict[str, str]] = []
    total: int = 0
    page: int = 1
    pages: int = 1
    search: str = ""
    reason_filter: str = REASON_FILTER_ALL
    can_edit: bool = False
    add_reason: str = "manual"
    add_error: str = ""
    add_error_field: str = ""
    notice: str = ""
    remove_id: str = ""
    remove_email: str = ""
    remove_reason: str = ""
    remove_error: str = ""
    import_reason: str = "unsubscribe"
    importing: bool = False
    import_result: str = ""
    import_error: str = ""
    import_errors: list[dict[str, str]] = []

    def refresh(self, workspace_id: int) -> None:
        with session_scope() as session:
            found = suppressions.list_suppressions(
                session=session,
                workspace_id=workspace_id,
                search=self.search,
                reason=None if self.reason_filter == REASON_FILTER_ALL else self.reason_filter,
                page=self.page,
            )
        self.rows = [_row(r) for r in found.rows]
        self.total, self.page, self.pages = found.total, found.page, found.pages

    @rx.event
    async def load(self):
        user = await current_user(self)
        self.can_edit = can_manage(user)
        self.notice = self.add_error = ""
        if user is None:
            self.rows, self.total = [], 0
            return
        self.refresh(user.workspace_id)

    async def _user_or_notice(self):
        user = await current_user(self)
        if user is None:
            self.notice = "Sign in to continue."
        return user

    # -- search and paging

    @rx.event
    async def apply_search(self, form: dict):
        user = await self._user_or_notice()
        if user is None:
            return
        self.search = str(form.get("search") or "").strip()[:320]
        self.page = 1
        self.refresh(user.workspace_id)

    @rx.event
    async def set_reason_filter(self, value: str):
        user = await self._user_or_notice()
        if user is None:
            return
        self.reason_filter = value
        self.page = 1
        self.refresh(user.workspace_id)

    @rx.event
    async def go_to_page(self, page: int):
        user = await self._user_or_notice()
        if user is None:
            return
        self.page = max(1, int(page))
        self.refresh(user.workspace_id)

    # -- adding

    @rx.event
    def set_add_reason(self, value: str):
        self.add_reason = value

    @rx.event
    async def add(self, form: dict):
        user, why = await contact_manager(self)
        if user is None:
            self.add_error, self.add_error_field = why, ""
            return
        email = str(form.get("email") or "")
        try:
            with session_scope() as session:
                row = suppressions.add_suppression(
                    session=session,
                    workspace_id=user.workspace_id,
                    email=email,
                    reason=self.add_reason,
                    note=str(form.get("note") or ""),
                    user_id=user.user_id,
                    source=Source.UI,
                )
                address = row.email
        except ServiceError as exc:
            self.add_error = str(exc)
            self.add_error_field = getattr(exc, "field", "") or ""
            return
        self.add_error = self.add_error_field = ""
        self.notice = ""
        self.import_result = f"{address} is suppressed: no campaign will be sent to it."
        self.search, self.page = "", 1
        self.refresh(user.workspace_id)
        yield [rx.set_value("sup-email", ""), rx.set_value("sup-note", "")]

    # -- removing

    @rx.event
    def ask_remove(self, suppression_id: str, email: str, reason: str):
        self.remove_id, self.remove_email, self.remove_reason = suppression_id, email, reason
        self.remove_error = ""

    @rx.event
    def close_remove(self, _open: bool = False):
        if not _open:
            self.remove_id = self.remove_error = ""

    @rx.event
    async def confirm_remove(self):
        user, why = await contact_manager(self)
        if user is None:
            self.remove_error = why
            return
        try:
            with session_scope() as session:
                suppressions.remove_suppression(
                    session=session,
                    workspace_id=user.workspace_id,
                    suppression_id=int(self.remove_id or 0),
                    user_id=user.user_id,
                    source=Source.UI,
                )
        except ServiceError as exc:
            self.remove_error = str(exc)
            return
        self.remove_id = ""
        self.refresh(user.workspace_id)

    # -- importing

    @rx.event
    def set_import_reason(self, value: str):
        self.import_reason = value

    @rx.event
    def upload_rejected(self, _rejected: list[dict]):
        self.import_error = "Choose one CSV file, within the size limit."

    @rx.event(background=True)
    async def handle_upload(self, chunks: rx.UploadChunkIterator):
        async with self:
            user, why = await contact_manager(self)
            if user is None or self.importing:
                self.import_error = why
                return
            self.importing, self.import_error, self.import_result = True, "", ""
            self.import_errors = []
            reason = self.import_reason
        writer = None
        outcome, error = None, ""
        try:
            writer = contacts.UploadWriter(user.workspace_id)
            async for chunk in chunks:
                writer.write(chunk.data)
            writer.finish()
            outcome = await asyncio.to_thread(
                suppressions.import_suppressions,
                path=writer.path,
                workspace_id=user.workspace_id,
                reason=reason,
                user_id=user.user_id,
                source=Source.IMPORT,
            )
        except ServiceError as exc:
            error = str(exc)
        except OSError:
            error = "The file could not be read on the server. Try again."
        finally:
            if writer is not None:
                writer.abort()  # imported (or not): the file is not kept
            async with self:
                self.importing = False
                self.import_error = error
                if outcome is not None:
                    self.import_result = outcome.summary()
                    self.import_errors = [
                        {"line": str(e.line), "email": e.email, "reason": e.reason}
                        for e in outcome.errors[:ERRORS_SHOWN]
                    ]
                    self.page = 1
                    self.refresh(user.workspace_id)
