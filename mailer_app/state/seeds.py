"""State of the seed manager page (/seeds): table, add/edit form, CSV import, lists.

Four small states, one per part of the page. Every handler that reads or writes
asks the database who is signed in (`_current`), and every change also checks the
role (`_manager`): hiding buttons from viewers is not authorization.

No password is ever kept in state: the add/edit form's password field is not
bound to state (its value arrives with the submitted form and is used at once),
and a CSV preview keeps its checked rows only as an encrypted token.
Slow work (IMAP sign-ins, imports) runs in background events, outside the state
lock and outside any database transaction.
"""

from __future__ import annotations

import asyncio

import reflex as rx

from mailer_app.db import session_scope
from mailer_app.mail.imap import ProbeResult, probe_mailbox
from mailer_app.models import Source
from mailer_app.services import InvalidInput, ServiceError, auth, seeds
from mailer_app.services.esp import canonical_esp, domain_of
from mailer_app.state.auth import AuthState

PROVIDER_LABELS = {
    "gmail": "Gmail",
    "outlook": "Outlook",
    "yahoo": "Yahoo",
    "icloud": "iCloud",
    "aol": "AOL",
    "gmx": "GMX",
    "zoho": "Zoho",
    "other": "Other",
}
STATUS_LABELS = {
    "active": ("Active", "green"),
    "paused": ("Paused", "gray"),
    "auth_expired": ("Sign-in failed", "red"),
    "error": ("Error", "orange"),
}
PLACEMENT_LABELS = {
    "inbox": "Inbox",
    "spam": "Spam",
    "promotions": "Promotions",
    "missing": "Missing",
    "error": "Could not check",
    "pending": "Waiting",
}
PREVIEW_ROWS_SHOWN = 200
IMPORT_BATCH = 500


def display_row(row: seeds.SeedRow) -> dict[str, str]:
    """One table row as text (state vars must be plain, and never hold secrets)."""
    label, color = STATUS_LABELS.get(row.status, (row.status, "gray"))
    return {
        "id": str(row.id),
        "email": row.email,
        "provider": PROVIDER_LABELS.get(row.esp, row.esp),
        "status": row.status,
        "status_label": label,
        "status_color": color,
        "reason": row.status_reason,
        "server": f"{row.imap_host}:{row.imap_port or ''} ({row.imap_security})",
        "last_check": (
            row.last_checked_at.strftime("%Y-%m-%d %H:%M UTC") if row.last_checked_at else "Never"
        ),
        "last_placement": PLACEMENT_LABELS.get(row.last_placement, row.last_placement or "—"),
        "folders": row.folder_summary,
    }


async def _current(state: rx.State) -> auth.CurrentUser | None:
    auth_state = await state.get_state(AuthState)
    return auth_state.current_user()


async def _manager(state: rx.State) -> tuple[auth.CurrentUser | None, str]:
    """(the signed-in user allowed to change seeds, '') or (None, why not)."""
    try:
        return auth.require_role(await _current(state), *seeds.SEED_MANAGER_ROLES), ""
    except auth.PermissionDenied as exc:
        return None, str(exc)


def _probe_saved_seed(workspace_id: int, user_id: int, seed_id: int) -> ProbeResult:
    # Three steps so no transaction stays open while the IMAP server answers.
    with session_scope() as session:
        seed = seeds.get_seed(session=session, workspace_id=workspace_id, seed_id=seed_id)
        endpoint = seeds.endpoint_for_seed(session=session, workspace_id=workspace_id, seed=seed)
    result = probe_mailbox(endpoint)
    with session_scope() as session:
        seeds.record_connection_result(
            session=session,
            workspace_id=workspace_id,
            seed_id=seed_id,
            result=result,
            user_id=user_id,
            source=Source.UI,
        )
    return result


class SeedsState(rx.State):
    """The table of seeds and the actions on one row."""

    rows: list[dict[str, str]] = []
    can_edit: bool = False
    notice: str = ""
    testing_id: str = ""
    test_email: str = ""
    test_ok: bool = False
    test_message: str = ""
    delete_id: str = ""
    delete_email: str = ""
    delete_error: str = ""

    def refresh(self, workspace_id: int) -> None:
        with session_scope() as session:
            self.rows = [
                display_row(r) for r in seeds.list_seeds(session=session, workspace_id=workspace_id)
            ]

    @rx.event
    async def load(self):
        user = await _current(self)
        if user is None:
            self.rows, self.can_edit = [], False
            return
        self.can_edit = user.role == "owner" or user.role in seeds.SEED_MANAGER_ROLES
        self.notice = ""
        self.refresh(user.workspace_id)

    @rx.event(background=True)
    async def test_row(self, seed_id: str):
        async with self:
            if self.testing_id:
                return
            user, why = await _manager(self)
            if user is None:
                self.notice = why
                return
            self.testing_id = seed_id
            self.test_email = next((r["email"] for r in self.rows if r["id"] == seed_id), "")
            self.test_message = ""
        ok, message = False, ""
        try:
            result = await asyncio.to_thread(
                _probe_saved_seed, user.workspace_id, user.user_id, int(seed_id)
            )
            ok, message = result.ok, result.message
        except ServiceError as exc:
            message = str(exc)
        finally:
            async with self:
                self.testing_id = ""
                self.test_ok, self.test_message = ok, message or "The test did not finish."
                self.refresh(user.workspace_id)

    @rx.event
    def dismiss_test(self):
        self.test_message = ""

    @rx.event
    async def set_paused(self, seed_id: str, paused: bool):
        user, why = await _manager(self)
        if user is None:
            self.notice = why
            return
        try:
            with session_scope() as session:
                seeds.set_seed_paused(
                    session=session,
                    workspace_id=user.workspace_id,
                    seed_id=int(seed_id),
                    paused=paused,
                    user_id=user.user_id,
                    source=Source.UI,
                )
            self.notice = ""
        except ServiceError as exc:
            self.notice = str(exc)
        self.refresh(user.workspace_id)

    @rx.event
    def ask_delete(self, seed_id: str, email: str):
        self.delete_id, self.delete_email, self.delete_error = seed_id, email, ""

    @rx.event
    def cancel_delete(self, _open: bool = False):
        if not _open:
            self.delete_id = self.delete_email = self.delete_error = ""

    @rx.event
    async def confirm_delete(self):
        user, why = await _manager(self)
        if user is None:
            self.delete_error = why
            return
        try:
            with session_scope() as session:
                seeds.delete_seed(
                    session=session,
                    workspace_id=user.workspace_id,
                    seed_id=int(self.delete_id),
                    user_id=user.user_id,
                    source=Source.UI,
                )
        except ServiceError as exc:
            self.delete_error = str(exc)
            return
        self.delete_id = self.delete_email = self.delete_error = ""
        self.refresh(user.workspace_id)
        lists = await self.get_state(SeedListsState)
        lists.refresh(user.workspace_id)


class SeedFormState(rx.State):
    """The add/edit dialog. The password input is deliberately not bound to state."""

    is_open: bool = False
    mode: str = "add"  # add | edit
    seed_id: str = ""
    email: str = ""
    host: str = ""
    port: str = ""
    security: str = "tls"
    username: str = ""
    provider: str = ""
    errors: dict[str, str] = {}
    message: str = ""
    busy: bool = False
    testing: bool = False
    test_ok: bool = False
    test_message: str = ""
    _intent: str = "save"
    _prefilled_domain: str = ""

    def _clear(self) -> None:
        self.errors, self.message, self.test_message = {}, "", ""
        self.test_ok = self.busy = self.testing = False
        self._intent, self._prefilled_domain = "save", ""

    @rx.event
    def open_add(self):
        self._clear()
        self.mode, self.seed_id = "add", ""
        self.email = self.host = self.port = self.username = self.provider = ""
        self.security = "tls"
        self.is_open = True

    @rx.event
    async def open_edit(self, seed_id: str):
        self._clear()
        user, why = await _manager(self)
        if user is None:
            page = await self.get_state(SeedsState)
            page.notice = why
            return
        try:
            with session_scope() as session:
                seed = seeds.get_seed(
                    session=session, workspace_id=user.workspace_id, seed_id=int(seed_id)
                )
                row = seeds.seed_row(seed)
        except ServiceError as exc:
            page = await self.get_state(SeedsState)
            page.notice = str(exc)
            return
        self.mode, self.seed_id, self.email = "edit", seed_id, row.email
        self.host, self.port = row.imap_host, str(row.imap_port or "")
        self.security = row.imap_security or "tls"
        self.username = "" if row.imap_username == row.email else row.imap_username
        self.provider = PROVIDER_LABELS.get(row.esp, row.esp)
        self._prefilled_domain = domain_of(row.email)
        self.is_open = True

    @rx.event
    def set_open(self, is_open: bool):
        if not self.busy:
            self.is_open = is_open

    @rx.event
    def set_email(self, value: str):
        self.email = value
        self.errors = {k: v for k, v in self.errors.items() if k != "email"}

    @rx.event
    def prefill(self, value: str):
        """On leaving the email field: suggest the provider's server (still editable)."""
        self.email = value.strip()
        domain = domain_of(self.email)
        if self.mode != "add" or not domain or "." not in domain:
            return
        if domain == self._prefilled_domain:
            return
        self._prefilled_domain = domain
        host, port, security = seeds.imap_suggestion(self.email)
        self.host, self.port, self.security = host, str(port), security
        self.provider = PROVIDER_LABELS.get(str(canonical_esp(self.email)), "Other")

    @rx.event
    def set_host(self, value: str):
        self.host = value

    @rx.event
    def set_port(self, value: str):
        self.port = value

    @rx.event
    def set_security(self, value: str):
        self.security = value

    @rx.event
    def set_username(self, value: str):
        self.username = value

    @rx.event
    def set_intent(self, intent: str):
        """Which button submitted the form (clicks are handled before the submit)."""
        self._intent = "test" if intent == "test" else "save"

    def _values(self) -> dict[str, str]:
        return {
            "imap_host": self.host,
            "imap_port": self.port,
            "imap_security": self.security,
            "imap_username": self.username,
        }

    @rx.event(background=True)
    async def submit(self, form: dict):
        password = str(form.get("password") or "")
        async with self:
            intent, self._intent = self._intent, "save"
            if self.busy:
                return
            user, why = await _manager(self)
            if user is None:
                self.message = why
                return
            mode, seed_id, email, values = self.mode, self.seed_id, self.email, self._values()
            self.busy, self.testing = True, intent == "test"
            self.errors, self.message = {}, ""
            if intent == "test":
                self.test_message = ""
        try:
            if intent == "test":
                result = await asyncio.to_thread(
                    _test_form, user, mode, seed_id, email, values, password
                )
                async with self:
                    self.test_ok, self.test_message = result.ok, result.message
            else:
                await asyncio.to_thread(_save_form, user, mode, seed_id, email, values, password)
                async with self:
                    self.is_open = False
                    page = await self.get_state(SeedsState)
                    page.refresh(user.workspace_id)
                    page.notice = ""
        except InvalidInput as exc:
            async with self:
                if exc.field in {"email", "password", *values}:
                    self.errors = {exc.field: str(exc)}
                else:
                    self.message = str(exc)
        except ServiceError as exc:
            async with self:
                self.message = str(exc)
        finally:
            async with self:
                self.busy = self.testing = False


def _test_form(user, mode: str, seed_id: str, email: str, values: dict, password: str):
    if mode == "edit":
        with session_scope() as session:
            endpoint = seeds.edited_connection_endpoint(
                session=session,
                workspace_id=user.workspace_id,
                seed_id=int(seed_id),
                password=password or None,
                **values,
            )
    else:
        endpoint = seeds.new_connection_endpoint(email=email, password=password, **values)
    return probe_mailbox(endpoint)


def _save_form(user, mode: str, seed_id: str, email: str, values: dict, password: str) -> None:
    with session_scope() as session:
        if mode == "edit":
            seeds.update_seed(
                session=session,
                workspace_id=user.workspace_id,
                seed_id=int(seed_id),
                user_id=user.user_id,
                password=password or None,
                source=Source.UI,
                **values,
            )
        else:
            seeds.create_seed(
                session=session,
                workspace_id=user.workspace_id,
                user_id=user.user_id,
                email=email,
                password=password,
                source=Source.UI,
                **values,
            )


class SeedImportState(rx.State):
    """CSV import: upload or paste, preview with per-row errors, then import."""

    is_open: bool = False
    file_error: str = ""
    ready_count: int = 0
    error_count: int = 0
    error_rows: list[dict[str, str]] = []
    ready_emails: list[str] = []
    ignored_columns: str = ""
    list_choice: str = "none"
    busy: bool = False
    result: str = ""
    _pending: str = ""  # the checked rows, encrypted (they carry passwords)

    def _reset_preview(self) -> None:
        self.file_error, self.ready_count, self.error_count = "", 0, 0
        self.error_rows, self.ready_emails, self.ignored_columns = [], [], ""
        self.result, self._pending = "", ""

    @rx.event
    def open_dialog(self):
        self._reset_preview()
        self.list_choice = "none"
        self.is_open = True

    @rx.event
    def set_open(self, is_open: bool):
        if not self.busy:
            self.is_open = is_open

    @rx.event
    def set_list_choice(self, value: str):
        self.list_choice = value

    async def _preview(self, text: str) -> None:
        self._reset_preview()
        user, why = await _manager(self)
        if user is None:
            self.file_error = why
            return
        preview = seeds.parse_seed_csv(text)
        if preview.file_error:
            self.file_error = preview.file_error
            return
        ready, bad = preview.valid_rows, preview.error_rows
        self.ready_count, self.error_count = len(ready), len(bad)
        self.ready_emails = [r.email for r in ready[:PREVIEW_ROWS_SHOWN]]
        self.error_rows = [
            {"row": str(r.row_number), "email": r.email or "(empty)", "error": r.error or ""}
            for r in bad[:PREVIEW_ROWS_SHOWN]
        ]
        self.ignored_columns = ", ".join(preview.ignored_columns)
        self._pending = seeds.pack_import_rows(ready)

    @rx.event
    async def preview_pasted(self, form: dict):
        await self._preview(str(form.get("csv_text") or ""))

    @rx.event
    async def handle_upload(self, files: list[rx.UploadFile]):
        if not files:
            return
        data = await files[0].read(seeds.MAX_CSV_CHARS * 4 + 1)
        if len(data) > seeds.MAX_CSV_CHARS * 4:
            self._reset_preview()
            self.file_error = "This file is too large. Split it into smaller files."
            return
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = data.decode("cp1252", errors="replace")  # older spreadsheet exports
        await self._preview(text)

    @rx.event(background=True)
    async def run_import(self):
        async with self:
            if self.busy or not self._pending:
                return
            user, why = await _manager(self)
            if user is None:
                self.file_error = why
                return
            token, choice = self._pending, self.list_choice
            self.busy, self.result = True, ""
        message = ""
        try:
            summary = await asyncio.to_thread(_import, user, token, choice)
            message = _summary_text(summary)
            async with self:
                self._reset_preview()  # done: the preview's rows are in the table now
        except ServiceError as exc:
            message = str(exc)
        finally:
            async with self:
                self.busy, self.result = False, message
                page = await self.get_state(SeedsState)
                page.refresh(user.workspace_id)
                lists = await self.get_state(SeedListsState)
                lists.refresh(user.workspace_id)


def _import(user, token: str, choice: str) -> seeds.ImportSummary:
    # Batches, each its own transaction: a 5,000-row import must not hold SQLite's
    # write lock for the ~10 s it takes (workers give up waiting after 10 s). Every
    # row is checked before anything of it is written, so no row is half-imported.
    rows = seeds.unpack_import_rows(token)
    created, skipped, errors = 0, 0, []
    for start in range(0, len(rows), IMPORT_BATCH):
        with session_scope() as session:
            part = seeds.import_seeds(
                session=session,
                workspace_id=user.workspace_id,
                user_id=user.user_id,
                rows=rows[start : start + IMPORT_BATCH],
                seed_list_id=None if choice in ("", "none") else int(choice),
                source=Source.IMPORT,
            )
        created, skipped = created + part.created, skipped + part.skipped_existing
        errors.extend(part.errors)
    return seeds.ImportSummary(created=created, skipped_existing=skipped, errors=tuple(errors))


def _summary_text(summary: seeds.ImportSummary) -> str:
    parts = [f"Added {summary.created} seed mailbox{'es' if summary.created != 1 else ''}."]
    if summary.skipped_existing == 1:
        parts.append("1 already existed and was left as it is.")
    elif summary.skipped_existing:
        parts.append(f"{summary.skipped_existing} already existed and were left as they are.")
    if summary.errors:
        rows = ", ".join(str(n) for n, _ in summary.errors[:20])
        more = ", …" if len(summary.errors) > 20 else ""
        parts.append(f"Skipped because of errors: rows {rows}{more}.")
    return " ".join(parts)


class SeedListsState(rx.State):
    """Named seed lists: create, rename, delete, choose members."""

    lists: list[dict[str, str]] = []
    create_error: str = ""
    rename_id: str = ""
    rename_name: str = ""
    rename_error: str = ""
    members_id: str = ""
    members_name: str = ""
    member_ids: list[str] = []
    members_error: str = ""
    delete_id: str = ""
    delete_name: str = ""
    delete_error: str = ""

    def refresh(self, workspace_id: int) -> None:
        with session_scope() as session:
            rows = seeds.list_seed_lists(session=session, workspace_id=workspace_id)
        self.lists = [
            {
                "id": str(r.id),
                "name": r.name,
                "count": f"{r.seed_count} seed mailbox{'es' if r.seed_count != 1 else ''}",
                "members": ",".join(str(i) for i in r.seed_ids),
            }
            for r in rows
        ]

    @rx.event
    async def load(self):
        user = await _current(self)
        if user is not None:
            self.refresh(user.workspace_id)

    async def _change(self, action) -> str:
        """Run `action(session, user)` as a permitted change; '' or the error to show."""
        user, why = await _manager(self)
        if user is None:
            return why
        try:
            with session_scope() as session:
                action(session, user)
        except ServiceError as exc:
            return str(exc)
        self.refresh(user.workspace_id)
        return ""

    @rx.event
    async def create(self, form_data: dict):
        name = str(form_data.get("name", ""))
        self.create_error = await self._change(
            lambda s, u: seeds.create_seed_list(
                session=s, workspace_id=u.workspace_id, user_id=u.user_id, name=name
            )
        )
        if not self.create_error:
            # Empty the field for the next list.
            yield rx.set_value("new-list-name", "")

    @rx.event
    def start_rename(self, list_id: str, name: str):
        self.rename_id, self.rename_name, self.rename_error = list_id, name, ""

    @rx.event
    def set_rename_name(self, value: str):
        self.rename_name = value

    @rx.event
    def close_rename(self, _open: bool = False):
        if not _open:
            self.rename_id = self.rename_error = ""

    @rx.event
    async def save_rename(self):
        list_id, name = int(self.rename_id or 0), self.rename_name
        self.rename_error = await self._change(
            lambda s, u: seeds.rename_seed_list(
                session=s, workspace_id=u.workspace_id, seed_list_id=list_id, user_id=u.user_id,
                name=name,
            )
        )  # fmt: skip
        if not self.rename_error:
            self.rename_id = ""

    @rx.event
    def start_members(self, list_id: str, name: str, members: str):
        self.members_id, self.members_name, self.members_error = list_id, name, ""
        self.member_ids = [m for m in members.split(",") if m]

    @rx.event
    def toggle_member(self, seed_id: str, checked: bool):
        rest = [m for m in self.member_ids if m != seed_id]
        self.member_ids = [*rest, seed_id] if checked else rest

    @rx.event
    def close_members(self, _open: bool = False):
        if not _open:
            self.members_id = self.members_error = ""

    @rx.event
    async def save_members(self):
        list_id, ids = int(self.members_id or 0), [int(m) for m in self.member_ids]
        self.members_error = await self._change(
            lambda s, u: seeds.set_seed_list_members(
                session=s, workspace_id=u.workspace_id, seed_list_id=list_id, seed_ids=ids,
                user_id=u.user_id,
            )
        )  # fmt: skip
        if not self.members_error:
            self.members_id = ""

    @rx.event
    def ask_delete(self, list_id: str, name: str):
        self.delete_id, self.delete_name, self.delete_error = list_id, name, ""

    @rx.event
    def close_delete(self, _open: bool = False):
        if not _open:
            self.delete_id = self.delete_error = ""

    @rx.event
    async def confirm_delete(self):
        list_id = int(self.delete_id or 0)
        self.delete_error = await self._change(
            lambda s, u: seeds.delete_seed_list(
                session=s, workspace_id=u.workspace_id, seed_list_id=list_id, user_id=u.user_id
            )
        )
        if not self.delete_error:
            self.delete_id = ""
