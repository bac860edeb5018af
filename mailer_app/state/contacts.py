"""State of the contacts page (/contacts): the lists, and importing a CSV into one.

Two small states. Every handler that reads or writes asks the database who is
signed in, and every change checks the role (hiding buttons is not authorization).

The import goes: upload (streamed to disk chunk by chunk, refused past the size
cap) -> mapping step (the file's columns, a guess at what each one is, the first
rows) -> the import job, whose progress a background loop polls until it ends.
The mapping form is read from its submitted values (controlled inputs are
debounced, and a click right after typing must see what was typed).
"""

from __future__ import annotations

import asyncio

import reflex as rx

from mailer_app import routes
from mailer_app.db import session_scope
from mailer_app.models import Source
from mailer_app.services import InvalidInput, ServiceError, auth, contacts
from mailer_app.services.contact_csv import file_size_text
from mailer_app.settings import get_settings
from mailer_app.state.auth import AuthState
from mailer_app.state.live import client_connected

REFRESH_SECONDS = 0.5
MAX_REFRESHES = 4 * 3600  # two hours of polling at most, then the page shows the last state
PREVIEW_ROWS = 5
ERRORS_SHOWN = 100
NEW_LIST = "__new__"
TARGET_CHOICES = [
    ("email", "Email address"),
    ("first_name", "First name"),
    ("last_name", "Last name"),
    ("custom", "Custom field"),
    ("skip", "Do not import"),
]


async def current_user(state: rx.State) -> auth.CurrentUser | None:
    auth_state = await state.get_state(AuthState)
    return auth_state.current_user()


async def contact_manager(state: rx.State) -> tuple[auth.CurrentUser | None, str]:
    """(the signed-in user allowed to change contacts, '') or (None, why not)."""
    try:
        return auth.require_role(await current_user(state), *contacts.CONTACT_MANAGER_ROLES), ""
    except auth.PermissionDenied as exc:
        return None, str(exc)


def can_manage(user: auth.CurrentUser | None) -> bool:
    return user is not None and (
        user.role == "owner" or user.role in contacts.CONTACT_MANAGER_ROLES
    )


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def list_rows(rows: list[contacts.ContactListRow]) -> list[dict[str, str]]:
    return [
        {
            "id": str(r.id),
            "name": r.name,
            "count": _plural(r.contact_count, "contact"),
            "fields": ", ".join(r.field_names) or "—",
        }
        for r in rows
    ]


def report_url(import_id: int) -> str:
    """The report download on the backend (served next to Reflex's own endpoints)."""
    from reflex.config import get_config

    return get_config().api_url.rstrip("/") + routes.contact_import_report(import_id)


def progress_summary(progress: contacts.ImportProgress) -> str:
    """One sentence about where an import stands."""
    if progress.status == contacts.IMPORT_FAILED:
        return progress.message or "The import stopped."
    if progress.status == contacts.IMPORT_PENDING:
        return "Waiting for a worker to start the import…"
    if progress.status == contacts.IMPORT_RUNNING:
        return (
            f"Read {_plural(progress.rows_total, 'row')}: {progress.rows_imported:,} imported, "
            f"{progress.rows_rejected:,} skipped…"
        )
    summary = f"Imported {_plural(progress.rows_imported, 'contact')} into {progress.list_name}."
    if progress.rows_updated:
        summary += f" {progress.rows_updated:,} of them were already in the list and were updated."
    if progress.rows_rejected:
        summary += f" {_plural(progress.rows_rejected, 'row')} skipped (see below)."
    if progress.message:
        summary += " " + progress.message
    return summary


class ContactListsState(rx.State):
    """The table of lists: create, rename, delete."""

    lists: list[dict[str, str]] = []
    can_edit: bool = False
    notice: str = ""
    create_error: str = ""
    rename_id: str = ""
    rename_name: str = ""
    rename_error: str = ""
    delete_id: str = ""
    delete_name: str = ""
    delete_error: str = ""

    def refresh(self, workspace_id: int) -> None:
        with session_scope() as session:
            self.lists = list_rows(
                contacts.list_contact_lists(session=session, workspace_id=workspace_id)
            )

    @rx.event
    async def load(self):
        user = await current_user(self)
        self.can_edit = can_manage(user)
        self.notice = self.create_error = ""
        if user is None:
            self.lists = []
            return
        self.refresh(user.workspace_id)
        imports = await self.get_state(ContactImportState)
        imports.refresh_recent(user.workspace_id)
        if imports.import_id and imports.import_status in contacts.ACTIVE_IMPORT:
            return ContactImportState.watch  # back on the page while it runs: keep following
        return None

    async def _change(self, action) -> str:
        """Run `action(session, user)` as a permitted change; '' or the error to show."""
        user, why = await contact_manager(self)
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
            lambda s, u: contacts.create_contact_list(
                session=s, workspace_id=u.workspace_id, user_id=u.user_id, name=name,
                source=Source.UI,
            )
        )  # fmt: skip
        if not self.create_error:
            yield rx.set_value("new-list-name", "")

    @rx.event
    def start_rename(self, list_id: str, name: str):
        self.rename_id, self.rename_name, self.rename_error = list_id, name, ""

    @rx.event
    def close_rename(self, _open: bool = False):
        if not _open:
            self.rename_id = self.rename_error = ""

    @rx.event
    async def save_rename(self, form_data: dict):
        list_id, name = int(self.rename_id or 0), str(form_data.get("name", ""))
        self.rename_error = await self._change(
            lambda s, u: contacts.rename_contact_list(
                session=s, workspace_id=u.workspace_id, list_id=list_id, user_id=u.user_id,
                name=name, source=Source.UI,
            )
        )  # fmt: skip
        if not self.rename_error:
            self.rename_id = ""

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
            lambda s, u: contacts.delete_contact_list(
                session=s, workspace_id=u.workspace_id, list_id=list_id, user_id=u.user_id,
                source=Source.UI,
            )
        )  # fmt: skip
        if not self.delete_error:
            self.delete_id = ""
            imports = await self.get_state(ContactImportState)
            user = await current_user(self)
            if user is not None:
                imports.refresh_recent(user.workspace_id)


class ContactImportState(rx.State):
    """Upload a CSV, map its columns, import it into a list, watch the progress."""

    step: str = "upload"  # upload | mapping | progress
    list_choice: str = NEW_LIST
    uploading: bool = False
    upload_error: str = ""
    filename: str = ""
    file_facts: str = ""  # "UTF-8, comma-separated, 5 columns"
    columns: list[str] = []
    preview_rows: list[list[str]] = []
    preview_problems: list[str] = []
    mapping: list[dict[str, str]] = []  # column, target, field, sample
    mapping_error: str = ""
    starting: bool = False
    # The import being shown (0: none).
    import_id: int = 0
    import_status: str = ""
    import_percent: int = 0
    import_summary: str = ""
    import_list: str = ""
    import_errors: list[dict[str, str]] = []
    import_more_errors: int = 0
    import_report: str = ""  # where to download every rejected row ('' when none)
    recent: list[dict[str, str]] = []
    _stored_name: str = ""
    _watching: bool = False

    # -- the upload step

    @rx.event
    def set_list_choice(self, value: str):
        self.list_choice = value

    @rx.event
    def import_into(self, list_id: str):
        """A list's "Import CSV" button: that list is chosen, the import is in view."""
        if self.step == "progress" and not self._watching:
            self._reset()
        self.list_choice = list_id
        return rx.scroll_to("contact-import")

    @rx.event
    def start_over(self):
        self._reset()

    def _reset(self) -> None:
        self.step, self.upload_error, self.mapping_error = "upload", "", ""
        self.filename = self.file_facts = ""
        self.columns, self.preview_rows, self.preview_problems, self.mapping = [], [], [], []
        self.import_id = 0
        self._stored_name = ""

    @rx.event
    def upload_rejected(self, rejected: list[dict]):
        cap = file_size_text(get_settings().contacts_max_upload_bytes)
        self.upload_error = (
            f"This file is too large: files up to {cap} can be imported. Split it into "
            "smaller files."
            if any(
                e.get("code") == "file-too-large"
                for item in rejected
                for e in item.get("errors", [])
            )
            else "Choose one CSV file (.csv or .txt)."
        )

    @rx.event(background=True)
    async def handle_upload(self, chunks: rx.UploadChunkIterator):
        async with self:
            user, why = await contact_manager(self)
            if user is None or self.uploading:
                self.upload_error = why
                return
            self._reset()
            self.uploading = True
        writer = None
        error = ""
        filename = ""
        try:
            writer = contacts.UploadWriter(user.workspace_id)
            async for chunk in chunks:
                filename = filename or chunk.filename
                writer.write(chunk.data)
            stored = writer.finish()
            preview = await asyncio.to_thread(_preview, user.workspace_id, stored)
        except ServiceError as exc:
            error = str(exc)
        except OSError:
            error = "The file could not be saved on the server. Try again."
        finally:
            async with self:
                self.uploading = False
                if error:
                    self.upload_error = error
        if error:
            if writer is not None:
                writer.abort()
            return
        async with self:
            self._show_preview(stored, filename, preview)

    def _show_preview(self, stored: str, filename: str, preview: contacts.CsvPreview) -> None:
        self._stored_name = stored
        self.filename = filename.rsplit("/", 1)[-1] or "contacts.csv"
        self.columns = preview.columns
        self.preview_rows = preview.rows
        self.preview_problems = [str(e) for e in preview.errors]
        self.file_facts = (
            f"{preview.encoding}, {preview.delimiter}-separated, "
            f"{_plural(len(preview.columns), 'column')}"
        )
        suggested = contacts.suggest_mapping(preview.columns)
        self.mapping = []
        for index, column in enumerate(preview.columns):
            target = suggested.get(column, "")
            kind = target if target in contacts.STANDARD_TARGETS else "custom" if target else "skip"
            sample = next((row[index] for row in preview.rows if row[index].strip()), "")
            self.mapping.append(
                {
                    "index": str(index),
                    "column": column,
                    "target": kind,
                    "field": target if kind == "custom" else contacts.custom_field_name(column),
                    "sample": sample[:60],
                }
            )
        self.step = "mapping"

    # -- the mapping step

    @rx.event
    def set_target(self, index: str, value: str):
        rows = [dict(row) for row in self.mapping]
        for row in rows:
            if row["index"] == index:
                row["target"] = value
            elif value in contacts.STANDARD_TARGETS and row["target"] == value:
                row["target"] = "custom"  # one column per standard target
        self.mapping = rows
        self.mapping_error = ""

    @rx.event
    async def start_import(self, form: dict):
        if self.starting or not self._stored_name:
            return
        user, why = await contact_manager(self)
        if user is None:
            self.mapping_error = why
            return
        mapping: dict[str, str] = {}
        for row in self.mapping:
            target = row["target"]
            if target == "custom":
                mapping[row["column"]] = str(form.get(f"field-{row['index']}") or row["field"])
            elif target != "skip":
                mapping[row["column"]] = target
        self.starting, self.mapping_error = True, ""
        yield
        try:
            import_id, lists = await asyncio.to_thread(
                _start, user, self.list_choice, str(form.get("new_list") or ""),
                self._stored_name, self.filename, mapping,
            )  # fmt: skip
        except ServiceError as exc:
            self.mapping_error = str(exc)
            self.starting = False
            return
        self.starting = False
        self.step = "progress"
        self._stored_name = ""
        page = await self.get_state(ContactListsState)
        page.lists = lists
        await self._show(user.workspace_id, import_id)
        yield ContactImportState.watch

    # -- progress

    def _apply(self, progress: contacts.ImportProgress) -> None:
        self.import_id = progress.id
        self.import_status = progress.status
        self.import_percent = progress.percent
        self.import_summary = progress_summary(progress)
        self.import_list = progress.list_name
        self.import_errors = [
            {"line": str(e.get("line", "")), "email": e.get("email") or "", "reason": e["reason"]}
            for e in progress.errors[:ERRORS_SHOWN]
        ]
        self.import_more_errors = max(0, progress.rows_rejected - len(self.import_errors))
        self.import_report = report_url(progress.id) if progress.has_report else ""

    async def _show(self, workspace_id: int, import_id: int) -> None:
        self._apply(await asyncio.to_thread(_progress, workspace_id, import_id))

    @rx.event(background=True)
    async def watch(self):
        async with self:
            if self._watching or not self.import_id:
                return
            self._watching = True
            user = await current_user(self)
        try:
            if user is None:
                return
            for _ in range(MAX_REFRESHES):
                await asyncio.sleep(REFRESH_SECONDS)
                if not client_connected(self.router.session.client_token):
                    return
                async with self:
                    import_id = self.import_id
                if not import_id:
                    return
                progress = await asyncio.to_thread(_progress, user.workspace_id, import_id)
                async with self:
                    if self.import_id != import_id:
                        return  # another import is shown now
                    self._apply(progress)
                    if progress.finished:
                        page = await self.get_state(ContactListsState)
                        page.refresh(user.workspace_id)
                        self.refresh_recent(user.workspace_id)
                        return
        except ServiceError:
            return  # the list (and its import) was deleted meanwhile
        finally:
            async with self:
                self._watching = False

    def refresh_recent(self, workspace_id: int) -> None:
        with session_scope() as session:
            rows = contacts.recent_imports(session=session, workspace_id=workspace_id, limit=8)
        self.recent = [
            {
                "id": str(r.id),
                "when": r.created_at.strftime("%Y-%m-%d %H:%M UTC"),
                "filename": r.filename,
                "list": r.list_name,
                "status": r.status,
                "counts": (
                    f"{r.rows_imported:,} imported, {r.rows_rejected:,} skipped"
                    if r.status != contacts.IMPORT_FAILED
                    else (r.message or "Failed")
                ),
                "report_url": report_url(r.id) if r.has_report else "",
            }
            for r in rows
        ]

    @rx.event
    async def show_import(self, import_id: str):
        user = await current_user(self)
        if user is None:
            return
        try:
            await self._show(user.workspace_id, int(import_id))
        except ServiceError as exc:
            self.upload_error = str(exc)
            return
        self.step = "progress"
        if self.import_status in (contacts.IMPORT_PENDING, contacts.IMPORT_RUNNING):
            yield ContactImportState.watch


def _preview(workspace_id: int, stored: str) -> contacts.CsvPreview:
    path = contacts.upload_path(workspace_id=workspace_id, stored_name=stored)
    try:
        return contacts.preview_csv(path, limit=PREVIEW_ROWS)
    except ServiceError:
        path.unlink(missing_ok=True)  # unreadable: nothing will ever import it
        raise


def _start(user, list_choice: str, new_list: str, stored: str, filename: str, mapping: dict):
    """Create the list if asked, queue the import; (import id, the lists for the table)."""
    with session_scope() as session:
        if list_choice == NEW_LIST:
            if not new_list.strip():
                raise InvalidInput(
                    "Name the new list, or choose an existing one.", field="new_list"
                )
            list_id = contacts.create_contact_list(
                session=session, workspace_id=user.workspace_id, user_id=user.user_id,
                name=new_list, source=Source.UI,
            ).id  # fmt: skip
        else:
            list_id = int(list_choice)
        item = contacts.start_contact_import(
            session=session,
            workspace_id=user.workspace_id,
            user_id=user.user_id,
            list_id=list_id,
            stored_name=stored,
            filename=filename,
            mapping=mapping,
            source=Source.UI,
        )
        import_id = item.id
    with session_scope() as session:
        lists = list_rows(
            contacts.list_contact_lists(session=session, workspace_id=user.workspace_id)
        )
    return import_id, lists


def _progress(workspace_id: int, import_id: int) -> contacts.ImportProgress:
    with session_scope() as session:
        return contacts.import_progress(
            session=session, workspace_id=workspace_id, import_id=import_id
        )
