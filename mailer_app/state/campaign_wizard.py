"""State of the campaign wizard (/campaigns/[cid]).

One small state per part of the page: `WizardState` (the campaign, the stepper,
Basics and Sender), `RecipientsState`, `ContentState` (with the live preview),
`AttachmentsState` and `ReviewState`. Every change autosaves through
`campaigns.save_step` (inputs send their value after a pause in typing, or when they
lose focus) and the draft remembers the step, so closing the tab loses nothing and
the next visit opens on the same step.

Errors are shown next to their field once the author has touched that field, or
for the whole step after they press Next (or come back to a step they saved before):
nobody wants "Write a subject line" before they reached the subject.

Every handler asks the database who is signed in; changes need an editor role.
"""

from __future__ import annotations

import reflex as rx

from mailer_app import routes
from mailer_app.db import session_scope
from mailer_app.models import Source
from mailer_app.services import (
    ServiceError,
    attachments,
    campaign_preview,
    campaigns,
    contacts,
    seeds,
    senders,
)
from mailer_app.services.campaign_steps import FILTER_OPS, STEPS, merge_field_names
from mailer_app.state.campaigns import campaign_editor, can_edit, current_user

NO_CHOICE = "none"
MAX_UPLOAD_BYTES = attachments.MAX_FILE_BYTES
SAMPLE_KEY = campaign_preview.SAMPLE_KEY


def _step_rows(statuses: list[campaigns.StepStatus], current: str) -> list[dict[str, str]]:
    rows = []
    for number, status in enumerate(statuses, start=1):
        if status.step == "review":
            state = "done" if not status.errors and status.visited else "todo"
        elif status.visited:
            state = "done" if status.complete else "error"
        else:
            state = "todo"
        rows.append(
            {
                "step": status.step,
                "label": status.label,
                "number": str(number),
                "state": state,
                "current": "1" if status.step == current else "",
            }
        )
    return rows


class WizardState(rx.State):
    """The campaign being edited, the stepper, and the Basics and Sender steps."""

    campaign_id: int = 0
    loaded: bool = False
    missing: str = ""
    can_edit: bool = False
    title: str = ""
    status: str = ""
    status_label: str = ""
    version_label: str = ""
    is_draft: bool = True
    archived: bool = False
    step: str = "basics"
    steps: list[dict[str, str]] = []
    errors: dict[str, str] = {}
    save_note: str = ""
    save_ok: bool = True
    # Basics
    name: str = ""
    description: str = ""
    # Sender
    sender_id: str = ""
    sender_choices: list[dict[str, str]] = []
    _show_all: bool = False
    _touched: list[str] = []
    _visited: list[str] = []
    _step_errors: dict[str, dict[str, str]] = {}

    # --- loading -------------------------------------------------------------------

    @rx.event
    async def load(self):
        self.loaded, self.missing, self.save_note = False, "", ""
        user = await current_user(self)
        if user is None:
            return
        # The last segment of /campaigns/[cid].
        cid = self.router.url.path.rstrip("/").rsplit("/", 1)[-1]
        campaign_id = int(cid) if cid.isdigit() else 0
        try:
            with session_scope() as session:
                data = campaigns.load_wizard(
                    session=session, workspace_id=user.workspace_id, campaign_id=campaign_id
                )
                sender_rows = senders.list_senders(session=session, workspace_id=user.workspace_id)
        except ServiceError as exc:
            self.missing = str(exc)
            return
        self.campaign_id = campaign_id
        self.can_edit = can_edit(user) and not data.archived
        self.sender_choices = [
            {"id": str(s.id), "label": f"{s.name} <{s.from_email}>", "status": s.status}
            for s in sender_rows
        ]
        self._apply(data)
        values = data.values
        self.name, self.description = values["name"], values["description"]
        self.sender_id = str(values["sender_account_id"] or "")
        for part in (RecipientsState, ContentState, AttachmentsState):
            sub = await self.get_state(part)
            sub.fill(user.workspace_id, data)
        await self._enter(data.wizard_step, user.workspace_id)
        self.loaded = True

    def _apply(self, data: campaigns.WizardData) -> None:
        """Header, version and stepper from the service's view of the campaign."""
        self.title = data.name or "(untitled)"
        self.status, self.status_label = data.status, data.status_label
        self.is_draft, self.archived = data.is_draft, data.archived
        if data.is_draft and data.published_number:
            self.version_label = (
                f"Version {data.version_number} (draft; version "
                f"{data.published_number} is published)"
            )
        elif data.is_draft:
            self.version_label = f"Version {data.version_number} (draft)"
        else:
            self.version_label = f"Version {data.version_number} (published)"
        self._set_statuses(data.steps)

    def _set_statuses(self, statuses: list[campaigns.StepStatus]) -> None:
        self._step_errors = {s.step: dict(s.errors) for s in statuses}
        self._visited = [s.step for s in statuses if s.visited]
        self.steps = _step_rows(statuses, self.step)

    async def _enter(self, step: str, workspace_id: int) -> None:
        self.step = step if step in STEPS else "basics"
        self._touched = []
        self._show_all = self.step in self._visited
        self.errors = self._visible(self._step_errors.get(self.step, {}))
        self.steps = [{**row, "current": "1" if row["step"] == self.step else ""}
                      for row in self.steps]  # fmt: skip
        if self.step == "content":
            await (await self.get_state(ContentState)).refresh_preview(workspace_id)
        elif self.step == "review":
            await (await self.get_state(ReviewState)).refresh(workspace_id, self.campaign_id)

    @rx.var
    def review_href(self) -> str:
        """The review page of this campaign (build, check and approve its messages)."""
        return routes.campaign_review(self.campaign_id)

    def _visible(self, errors: dict[str, str]) -> dict[str, str]:
        if self._show_all:
            return dict(errors)
        return {k: v for k, v in errors.items() if k in self._touched}

    # --- saving --------------------------------------------------------------------------

    async def save(self, step: str, values: dict) -> campaigns.StepResult | None:
        """Autosave `values` of `step`; updates the stepper, errors and the saved note."""
        user, why = await campaign_editor(self)
        if user is None:
            self.save_note, self.save_ok = why, False
            return None
        try:
            with session_scope() as session:
                result = campaigns.save_step(
                    session=session, workspace_id=user.workspace_id,
                    campaign_id=self.campaign_id, step=step, values=values,
                    user_id=user.user_id, source=Source.UI,
                )  # fmt: skip
                data = campaigns.load_wizard(
                    session=session, workspace_id=user.workspace_id, campaign_id=self.campaign_id
                )
        except ServiceError as exc:
            self.save_note, self.save_ok = str(exc), False
            return None
        self._apply(data)
        self._step_errors[step] = dict(result.errors)
        if step == self.step:  # a late autosave of the step just left shows nothing here
            self._touched = sorted({*self._touched, *values})
            self.errors = self._visible(result.errors)
        if result.saved:
            self.save_note, self.save_ok = "All changes saved", True
        else:
            self.save_note, self.save_ok = "Not saved: see the message next to the field", False
        return result

    @rx.event
    async def set_name(self, value: str):
        self.name = value
        await self.save("basics", {"name": value})

    @rx.event
    async def set_description(self, value: str):
        self.description = value
        await self.save("basics", {"description": value})

    @rx.event
    async def set_sender(self, value: str):
        self.sender_id = value
        await self.save("sender", {"sender_account_id": value})

    # --- moving between steps ------------------------------------------------------------

    async def _go(self, step: str) -> None:
        user = await current_user(self)
        if user is None:
            return
        editor, _why = await campaign_editor(self)
        try:
            if editor is not None and self.can_edit:  # only editors move the resume point
                with session_scope() as session:
                    campaigns.set_wizard_step(
                        session=session, workspace_id=user.workspace_id,
                        campaign_id=self.campaign_id, step=step,
                    )  # fmt: skip
        except ServiceError as exc:
            self.save_note, self.save_ok = str(exc), False
            return
        await self._enter(step, user.workspace_id)

    @rx.event
    async def go_to(self, step: str):
        await self._go(step)

    @rx.event
    async def back(self):
        index = STEPS.index(self.step)
        await self._go(STEPS[max(index - 1, 0)])

    @rx.event
    async def next_step(self):
        """Mark the step as seen (saving it), then move on only if it is complete."""
        result = await self.save(self.step, {}) if self.can_edit else None
        if result is not None and result.errors:
            self._show_all = True
            self.errors = dict(result.errors)
            self.save_note, self.save_ok = "Some fields need your attention", False
            return
        index = STEPS.index(self.step)
        await self._go(STEPS[min(index + 1, len(STEPS) - 1)])


class RecipientsState(rx.State):
    """Contact lists, filters and the seed list."""

    list_choices: list[dict[str, str]] = []
    list_ids: list[str] = []
    filters: list[dict[str, str]] = []
    field_choices: list[str] = []
    seed_list_id: str = NO_CHOICE
    seed_choices: list[dict[str, str]] = []
    recipient_count: str = ""
    op_choices: list[dict[str, str]] = [{"id": k, "label": v} for k, v in FILTER_OPS.items()]

    def fill(self, workspace_id: int, data: campaigns.WizardData) -> None:
        values = data.values
        self.list_ids = [str(i) for i in values["list_ids"]]
        self.filters = [dict(f) for f in values["filters"]]
        self.seed_list_id = str(values["seed_list_id"] or NO_CHOICE)
        with session_scope() as session:
            rows = contacts.list_contact_lists(session=session, workspace_id=workspace_id)
            seed_rows = seeds.list_seed_lists(session=session, workspace_id=workspace_id)
        self.list_choices = [
            {
                "id": str(r.id),
                "label": r.name,
                "count": f"{r.contact_count} contact{'s' if r.contact_count != 1 else ''}",
                "fields": ", ".join(r.field_names),
            }
            for r in rows
        ]
        self.seed_choices = [{"id": NO_CHOICE, "label": "No seed mailboxes"}] + [
            {"id": str(r.id), "label": f"{r.name} ({r.seed_count})"} for r in seed_rows
        ]
        self._refresh_fields_and_count(workspace_id)

    def _refresh_fields_and_count(self, workspace_id: int) -> None:
        list_ids = [int(i) for i in self.list_ids]
        with session_scope() as session:
            names = merge_field_names(session=session, workspace_id=workspace_id, list_ids=list_ids)
            count = (
                contacts.count_recipients(
                    session=session,
                    workspace_id=workspace_id,
                    list_ids=list_ids,
                    filters=self._complete_filters() or None,
                )  # fmt: skip
                if list_ids
                else 0
            )
        self.field_choices = sorted(names)
        self.recipient_count = (
            f"{count} recipient{'s' if count != 1 else ''}" if list_ids else "No lists chosen yet"
        )

    def _complete_filters(self) -> list[dict[str, str]]:
        return [f for f in self.filters if f.get("field")]

    async def _save(self, values: dict) -> None:
        wizard = await self.get_state(WizardState)
        result = await wizard.save("recipients", values)
        user = await current_user(self)
        if result is not None and user is not None and "filters" not in result.errors:
            self._refresh_fields_and_count(user.workspace_id)

    @rx.event
    async def toggle_list(self, list_id: str, checked: bool):
        rest = [i for i in self.list_ids if i != list_id]
        self.list_ids = sorted([*rest, list_id] if checked else rest, key=int)
        await self._save({"list_ids": self.list_ids})

    @rx.event
    async def set_seed_list(self, value: str):
        self.seed_list_id = value
        await self._save({"seed_list_id": None if value == NO_CHOICE else value})

    @rx.event
    def add_filter(self):
        self.filters = [*self.filters, {"field": "", "op": "equals", "value": ""}]

    @rx.event
    async def remove_filter(self, index: int):
        self.filters = [f for i, f in enumerate(self.filters) if i != index]
        await self._save({"filters": self._complete_filters()})

    @rx.event
    async def set_filter(self, index: int, key: str, value: str):
        self.filters = [{**f, key: value} if i == index else f for i, f in enumerate(self.filters)]
        await self._save({"filters": self._complete_filters()})


class ContentState(rx.State):
    """Subject and bodies, and the live preview for a chosen recipient."""

    subject: str = ""
    html_body: str = ""
    text_body: str = ""
    merge_fields: list[str] = []
    preview_choices: list[dict[str, str]] = []
    preview_key: str = campaign_preview.SAMPLE_KEY
    preview_subject: str = ""
    preview_html: str = ""
    preview_text: str = ""
    preview_missing: list[str] = []
    preview_error: str = ""
    _recipients: dict[str, dict] = {}

    def fill(self, workspace_id: int, data: campaigns.WizardData) -> None:
        values = data.values
        self.subject, self.html_body = values["subject"], values["html_body"]
        self.text_body = values["text_body"]

    async def refresh_preview(self, workspace_id: int) -> None:
        """Reload the recipients to preview for (the lists may have changed) and render."""
        wizard = await self.get_state(WizardState)
        with session_scope() as session:
            version = campaigns.current_version(
                session=session, workspace_id=workspace_id, campaign_id=wizard.campaign_id
            )
            people = campaign_preview.preview_recipients(
                session=session, workspace_id=workspace_id, version=version
            )
            list_ids = list((version.recipients or {}).get("list_ids") or [])
            names = merge_field_names(session=session, workspace_id=workspace_id, list_ids=list_ids)
        self._recipients = {p.key: p.data for p in people}
        self.preview_choices = [{"id": p.key, "label": p.label} for p in people]
        if self.preview_key not in self._recipients or self.preview_key == SAMPLE_KEY:
            self.preview_key = people[0].key  # a real recipient when there is one
        self.merge_fields = sorted(names)
        self._render()

    def _render(self) -> None:
        preview = campaign_preview.render_preview(
            subject=self.subject,
            html_body=self.html_body,
            text_body=self.text_body,
            data=self._recipients.get(self.preview_key, {}),
        )
        self.preview_subject, self.preview_html = preview.subject, preview.html
        self.preview_text, self.preview_error = preview.text, preview.error
        self.preview_missing = list(preview.missing)

    async def _edit(self, field: str, value: str) -> None:
        setattr(self, field, value)
        self._render()  # the preview follows every change, saved or not
        wizard = await self.get_state(WizardState)
        await wizard.save("content", {field: value})

    @rx.event
    async def set_subject(self, value: str):
        await self._edit("subject", value)

    @rx.event
    async def set_html_body(self, value: str):
        await self._edit("html_body", value)

    @rx.event
    async def set_text_body(self, value: str):
        await self._edit("text_body", value)

    @rx.event
    def choose_recipient(self, key: str):
        if key in self._recipients:
            self.preview_key = key
            self._render()


class AttachmentsState(rx.State):
    """Campaign-wide files, the per-recipient pattern, zip, and the dry run."""

    files: list[dict[str, str]] = []
    folder: str = ""
    pattern: str = ""
    zip: bool = False
    upload_error: str = ""
    uploading: bool = False
    dry_run_rows: list[dict[str, str]] = []
    dry_run_summary: str = ""

    def fill(self, workspace_id: int, data: campaigns.WizardData) -> None:
        self.pattern, self.zip = data.values["pattern"], data.values["zip"]
        self.dry_run_rows, self.dry_run_summary, self.upload_error = [], "", ""
        self.folder = str(attachments.attachments_root(workspace_id=workspace_id))
        self._load_files(workspace_id, data.version_id)

    def _load_files(self, workspace_id: int, version_id: int) -> None:
        with session_scope() as session:
            rows = attachments.list_campaign_files(
                session=session, workspace_id=workspace_id, version_id=version_id
            )
        self.files = [
            {"id": str(r.id), "name": r.filename, "size": _size(r.size_bytes)} for r in rows
        ]

    async def _reload_files(self, workspace_id: int) -> None:
        wizard = await self.get_state(WizardState)
        with session_scope() as session:
            version = campaigns.current_version(
                session=session, workspace_id=workspace_id, campaign_id=wizard.campaign_id
            )
        self._load_files(workspace_id, version.id)

    @rx.event
    async def upload(self, files: list[rx.UploadFile]):
        user, why = await campaign_editor(self)
        self.upload_error = ""
        if user is None:
            self.upload_error = why
            return
        wizard = await self.get_state(WizardState)
        for item in files:
            data = await item.read(MAX_UPLOAD_BYTES + 1)
            name = item.name or item.filename or "attachment"
            if len(data) > MAX_UPLOAD_BYTES:
                self.upload_error = f"{name} is too large (at most {_size(MAX_UPLOAD_BYTES)})."
                continue
            try:
                with session_scope() as session:
                    campaigns.add_campaign_file(
                        session=session, workspace_id=user.workspace_id,
                        campaign_id=wizard.campaign_id, filename=name, data=data,
                        content_type=item.content_type or "application/octet-stream",
                        user_id=user.user_id, source=Source.UI,
                    )  # fmt: skip
            except ServiceError as exc:
                self.upload_error = f"{name}: {exc}"
        await self._reload_files(user.workspace_id)
        await wizard.save("attachments", {})

    @rx.event
    async def remove_file(self, attachment_id: str):
        user, why = await campaign_editor(self)
        if user is None:
            self.upload_error = why
            return
        wizard = await self.get_state(WizardState)
        try:
            with session_scope() as session:
                campaigns.remove_campaign_file(
                    session=session, workspace_id=user.workspace_id,
                    campaign_id=wizard.campaign_id, attachment_id=int(attachment_id),
                    user_id=user.user_id, source=Source.UI,
                )  # fmt: skip
        except ServiceError as exc:
            self.upload_error = str(exc)
        await self._reload_files(user.workspace_id)
        await wizard.save("attachments", {})

    @rx.event
    async def set_pattern(self, value: str):
        self.pattern = value
        self.dry_run_rows, self.dry_run_summary = [], ""
        await (await self.get_state(WizardState)).save("attachments", {"pattern": value})

    @rx.event
    async def set_zip(self, value: bool):
        self.zip = bool(value)
        await (await self.get_state(WizardState)).save("attachments", {"zip": self.zip})

    @rx.event
    async def run_dry_run(self):
        user = await current_user(self)
        if user is None:
            return
        wizard = await self.get_state(WizardState)
        try:
            with session_scope() as session:
                version = campaigns.current_version(
                    session=session, workspace_id=user.workspace_id,
                    campaign_id=wizard.campaign_id,
                )  # fmt: skip
                matches = campaign_preview.attachment_dry_run(
                    session=session, workspace_id=user.workspace_id, version=version
                )
        except ServiceError as exc:
            self.dry_run_rows, self.dry_run_summary = [], str(exc)
            return
        self.dry_run_rows = [
            {
                "email": m.email,
                "files": ", ".join(str(f) for f in m.files) or "—",
                "size": _size(m.total_bytes),
                "status": m.status,
                "color": _MATCH_COLORS.get(m.status, "gray"),
                "reason": m.reason or "",
            }
            for m in matches
        ]
        if not matches:
            self.dry_run_summary = "Nothing to check: add a pattern and choose contact lists."
            return
        counts: dict[str, int] = {}
        for m in matches:
            counts[m.status] = counts.get(m.status, 0) + 1
        self.dry_run_summary = f"Checked {len(matches)} recipients: " + ", ".join(
            f"{n} {status.replace('_', ' ')}" for status, n in sorted(counts.items())
        )


_MATCH_COLORS = {"ready": "green", "ok": "green", "needs_review": "orange", "blocked": "red"}


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


class ReviewState(rx.State):
    """The summary of every step, what is left to do, and Publish."""

    sender: str = ""
    lists: str = ""
    filters: list[str] = []
    recipient_count: int = 0
    seed_list: str = ""
    subject: str = ""
    files: str = ""
    pattern: str = ""
    zip: bool = False
    missing: list[str] = []
    render_note: str = ""
    problems: list[dict[str, str]] = []
    publish_error: str = ""
    published_message: str = ""
    publishing: bool = False

    async def refresh(self, workspace_id: int, campaign_id: int) -> None:
        with session_scope() as session:
            summary = campaign_preview.review_summary(
                session=session, workspace_id=workspace_id, campaign_id=campaign_id
            )
            statuses = campaigns.step_status(
                session=session, workspace_id=workspace_id, campaign_id=campaign_id
            )
        self.sender = summary.sender or "Not chosen yet"
        self.lists = ", ".join(summary.lists) or "None chosen yet"
        self.filters = summary.filters
        self.recipient_count = summary.recipient_count
        self.seed_list = (
            f"{summary.seed_list} ({summary.seed_count} mailboxes)"
            if summary.seed_list
            else "None: you will not see where this campaign lands"
        )
        self.subject = summary.subject or "No subject yet"
        self.files = ", ".join(summary.files) or "None"
        self.pattern, self.zip = summary.pattern, summary.zip
        self.missing = summary.missing
        self.render_note = (
            f"{summary.render_errors} of {summary.rendered} messages cannot be rendered."
            if summary.render_errors
            else ""
        )
        self.problems = [
            {"step": s.step, "label": s.label, "message": message}
            for s in statuses
            for message in s.errors.values()
        ]
        self.publish_error = self.published_message = ""

    @rx.event
    async def publish(self):
        user, why = await campaign_editor(self)
        if user is None:
            self.publish_error = why
            return
        wizard = await self.get_state(WizardState)
        try:
            with session_scope() as session:
                version = campaigns.publish(
                    session=session, workspace_id=user.workspace_id,
                    campaign_id=wizard.campaign_id, user_id=user.user_id, source=Source.UI,
                )  # fmt: skip
                number = version.number
                data = campaigns.load_wizard(
                    session=session, workspace_id=user.workspace_id,
                    campaign_id=wizard.campaign_id,
                )  # fmt: skip
        except ServiceError as exc:
            self.publish_error = str(exc)
            await self.refresh(user.workspace_id, wizard.campaign_id)
            self.publish_error = str(exc)
            return
        wizard._apply(data)
        wizard.save_note, wizard.save_ok = "", True
        await self.refresh(user.workspace_id, wizard.campaign_id)
        self.published_message = (
            f"Version {number} is published and ready for review. Next, the review gate "
            "renders every message, shows each one's status and asks for approval before "
            "anything is sent."
        )

    @rx.event
    def to_list(self):
        return rx.redirect(routes.CAMPAIGNS)
