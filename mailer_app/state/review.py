"""State of the review page (/campaigns/[cid]/review): the gate before anything is sent.

Two small states. `ReviewGateState` holds the campaign, its build (with live
progress while the build job runs, polled by a bounded background loop like the
contact import), the counts by status and reason, one page of the filtered message
list and the Send button. `MessageState` holds the message being previewed, exactly
as it will be sent, with its actions, the test send and the form that fixes its
recipient's data (saved to the contact; the Rebuild button then remakes the message).

Every handler asks the database who is signed in and checks the role: hiding a
button is not authorization. Rules and queries are in services/build.py and
services/review.py; this module only calls them and words the answers. Send asks
for confirmation, then `send_control.start_send` approves (if still in review) and
queues the campaign, and the page moves on to the send page (live progress).
"""

from __future__ import annotations

import asyncio
import contextlib

import reflex as rx

from mailer_app import routes
from mailer_app.db import session_scope
from mailer_app.models import BuildStatus, CampaignStatus, Role, Source
from mailer_app.services import (
    ServiceError,
    auth,
    build,
    campaigns,
    contacts,
    review,
    send_control,
)
from mailer_app.state.auth import AuthState
from mailer_app.state.campaigns import STATUS_COLORS
from mailer_app.state.live import client_connected

PAGE_SIZE = 50
REFRESH_SECONDS = 0.5
MAX_REFRESHES = 4 * 3600  # two hours of polling at most, then the page shows the last state
RECIPIENT_SAVED = "Saved. Rebuild to update the message."
FIELD_INPUT = "field-"  # form input names of custom fields: field-<name>
REVIEWER_ROLES = review.REVIEWER_ROLES
APPROVER_ROLES = review.APPROVER_ROLES
# Statuses from which Send starts the send (in review: it approves first).
SENDABLE_FROM = (CampaignStatus.IN_REVIEW, CampaignStatus.APPROVED)
# Statuses with a send to follow on the send page.
SENT_STATUSES = (
    CampaignStatus.QUEUED,
    CampaignStatus.SENDING,
    CampaignStatus.PAUSED,
    CampaignStatus.COMPLETED,
    CampaignStatus.CANCELLED,
)
DECIDABLE = tuple(str(s) for s in review.DECIDABLE)  # a person may approve these
EXCLUDABLE = tuple(str(s) for s in review.EXCLUDABLE)  # ...and exclude these

# Status: (label, colour, what it means for the send), in the order the page shows them.
STATUS_INFO: dict[str, tuple[str, str, str]] = {
    "ready": ("Ready", "green", "Will be sent as built."),
    "warning": ("Warning", "amber", "Will be sent; something about it is worth a look."),
    "needs_review": (
        "Needs review",
        "orange",
        "A person must approve or exclude each one before the campaign can be sent.",
    ),
    "blocked": (
        "Blocked",
        "red",
        "Cannot be sent: fix the contact or the campaign, then rebuild.",
    ),
    "excluded": (
        "Excluded",
        "gray",
        "Left out of this send (suppressed, filtered, or excluded by a person); still reported.",
    ),
    "inactive": ("Inactive", "gray", "The contact is inactive: it gets nothing."),
}
DECISION_LABELS = {"approved": "Approved", "excluded": "Excluded by a person"}


def size_text(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def reason_label(code: str) -> str:
    """'missing_field' -> 'Missing field' (the explanation says the rest)."""
    return code.replace("_", " ").capitalize()


def build_summary(row) -> str:
    """One sentence about where the latest build stands (`row` a CampaignBuild or None)."""
    if row is None:
        return (
            "No messages are built yet. Build them to see every recipient's message, "
            "exactly as it will be sent, and what needs a decision."
        )
    if row.status == BuildStatus.QUEUED:
        return "Waiting for a worker to start the build…"
    if row.status == BuildStatus.RUNNING:
        if not row.total:
            return "Counting the recipients…"
        return f"Built {row.done:,} of {_plural(row.total, 'message')}…"
    if row.status == BuildStatus.FAILED:
        return row.message or "The build stopped before the end. Try again."
    when = row.finished_at.strftime("%Y-%m-%d %H:%M UTC") if row.finished_at else ""
    text = f"Built {_plural(row.total, 'message')}" + (f" at {when}" if when else "") + "."
    if row.changed and row.changed != row.total:
        text += f" {row.changed:,} of them are new or changed since the previous build."
    return text


async def current_user(state: rx.State) -> auth.CurrentUser | None:
    return (await state.get_state(AuthState)).current_user()


async def permitted(state: rx.State, roles) -> tuple[auth.CurrentUser | None, str]:
    """(the signed-in user with one of `roles`, '') or (None, why not)."""
    try:
        return auth.require_role(await current_user(state), *roles), ""
    except auth.PermissionDenied as exc:
        return None, str(exc)


def has_role(user: auth.CurrentUser | None, roles) -> bool:
    return user is not None and (user.role == Role.OWNER or user.role in {str(r) for r in roles})


def _campaign_id_from(path: str) -> int:
    """The [cid] of /campaigns/[cid]/review."""
    parts = path.rstrip("/").split("/")
    return int(parts[-2]) if len(parts) >= 2 and parts[-2].isdigit() else 0


def approval_note(approval: review.Approval | None) -> str:
    if approval is None:
        return ""
    stamp = approval.approved_at.strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Approved by {approval.approver} at {stamp}. The campaign is approved and "
        "waiting to be queued for sending: press Send to start."
    )


def sent_note(status: str) -> str:
    """Where a campaign past the gate stands ('' while it is still at the gate)."""
    if status not in SENT_STATUSES:
        return ""
    label = campaigns.STATUS_LABELS.get(status, status).lower()
    return f"This campaign is {label}: follow its send on the progress page."


class ReviewGateState(rx.State):
    """The campaign, its build, counts, the message list and the Send button."""

    campaign_id: int = 0
    loaded: bool = False
    missing: str = ""
    name: str = ""
    status: str = ""
    status_label: str = ""
    status_color: str = "gray"
    can_review: bool = False
    can_approve: bool = False
    notice: str = ""
    notice_ok: bool = True
    # The latest build.
    build_status: str = ""
    build_done: int = 0
    build_total: int = 0
    build_summary: str = ""
    starting: bool = False
    # Counts.
    status_counts: list[dict[str, str]] = []
    reason_counts: list[dict[str, str]] = []
    counts_note: str = ""
    # The list.
    filter_status: str = ""
    filter_reason: str = ""
    search: str = ""
    offset: int = 0
    total: int = 0
    rows: list[dict[str, str]] = []
    # Send.
    blockers: list[str] = []
    approved_note: str = ""
    sent_note: str = ""
    send_error: str = ""
    sendable: int = 0  # messages that would go out (the confirmation says how many)
    confirm_open: bool = False
    sending_now: bool = False
    _watching: bool = False

    # --- loading ------------------------------------------------------------------------

    @rx.event
    async def load(self):
        self.loaded, self.missing, self.notice, self.send_error = False, "", "", ""
        self.approved_note, self.sent_note, self.confirm_open = "", "", False
        self.filter_status = self.filter_reason = self.search = ""
        self.offset = 0
        user = await current_user(self)
        if user is None:
            return None
        self.campaign_id = _campaign_id_from(self.router.url.path)
        self.can_review = has_role(user, REVIEWER_ROLES)
        self.can_approve = has_role(user, APPROVER_ROLES)
        try:
            self._refresh(user.workspace_id)
        except ServiceError as exc:
            self.missing = str(exc)
            return None
        await (await self.get_state(MessageState)).clear()
        self.loaded = True
        if self.build_status in (BuildStatus.QUEUED, BuildStatus.RUNNING):
            return ReviewGateState.watch
        return None

    def _refresh(self, workspace_id: int) -> None:
        """Everything on the page from the database, in one transaction."""
        with session_scope() as session:
            self._read_campaign(session, workspace_id)
            latest = build.latest_build(
                session=session, workspace_id=workspace_id, campaign_id=self.campaign_id
            )
            self._read_build(latest)
            self._read_counts(session, workspace_id)
            self._read_page(session, workspace_id)
            # An approved campaign has passed the gate (Send queues it); one past it
            # is followed on the send page.
            past_gate = self.status == CampaignStatus.APPROVED or self.status in SENT_STATUSES
            self.blockers = (
                []
                if past_gate
                else review.send_blockers(
                    session=session, workspace_id=workspace_id, campaign_id=self.campaign_id
                )
            )

    def _read_campaign(self, session, workspace_id: int) -> None:
        campaign = campaigns.get_campaign(
            session=session, workspace_id=workspace_id, campaign_id=self.campaign_id
        )
        self.name = campaign.name or "(untitled)"
        self.status = str(campaign.status)
        self.status_label = campaigns.STATUS_LABELS.get(campaign.status, str(campaign.status))
        self.status_color = STATUS_COLORS.get(self.status, "gray")
        self.sent_note = sent_note(self.status)
        self.approved_note = approval_note(
            review.campaign_approval(
                session=session, workspace_id=workspace_id, campaign_id=self.campaign_id
            )
        )

    def _read_build(self, row) -> None:
        self.build_status = str(row.status) if row is not None else ""
        self.build_done = row.done if row is not None else 0
        self.build_total = row.total if row is not None else 0
        self.build_summary = build_summary(row)

    def _read_counts(self, session, workspace_id: int) -> None:
        counts = review.review_counts(
            session=session, workspace_id=workspace_id, campaign_id=self.campaign_id
        )
        self.status_counts = [
            {
                "status": status,
                "label": label,
                "color": color,
                "explanation": explanation,
                "count": f"{counts.by_status.get(status, 0):,}",
            }
            for status, (label, color, explanation) in STATUS_INFO.items()
        ]
        self.reason_counts = [_reason(r) for r in counts.by_reason if r.count]
        self.sendable = counts.sendable
        self.counts_note = _counts_note(counts)

    def _read_page(self, session, workspace_id: int) -> None:
        page = review.list_messages(
            session=session,
            workspace_id=workspace_id,
            campaign_id=self.campaign_id,
            status=self.filter_status or None,
            reason=self.filter_reason or None,
            search=self.search,
            offset=self.offset,
            limit=PAGE_SIZE,
        )
        self.total = page.total
        self.rows = [_row(r) for r in page.rows]

    async def _again(self) -> None:
        """After a change: counts, list and Send from the database."""
        user = await current_user(self)
        if user is not None:
            self._refresh(user.workspace_id)

    def _say(self, message: str, ok: bool = True) -> None:
        self.notice, self.notice_ok = message, ok

    # --- build ----------------------------------------------------------------------------

    @rx.event
    async def start_build(self):
        user, why = await permitted(self, REVIEWER_ROLES)
        if user is None:
            self._say(why, ok=False)
            return None
        if self.starting:
            return None
        self.starting = True
        try:
            with session_scope() as session:
                build.start_build(
                    session=session, workspace_id=user.workspace_id,
                    campaign_id=self.campaign_id, user_id=user.user_id, source=Source.UI,
                )  # fmt: skip
        except ServiceError as exc:
            self._say(str(exc), ok=False)
            return None
        finally:
            self.starting = False
        self._say("")
        (await self.get_state(MessageState)).recipient_saved = ""
        self._refresh(user.workspace_id)
        return ReviewGateState.watch

    @rx.event(background=True)
    async def watch(self):
        """Follow the build until it ends (or the tab goes away), then show the results."""
        async with self:
            if self._watching or not self.campaign_id:
                return
            self._watching = True
            campaign_id = self.campaign_id
            user = await current_user(self)
        try:
            if user is None:
                return
            for _ in range(MAX_REFRESHES):
                await asyncio.sleep(REFRESH_SECONDS)
                if not client_connected(self.router.session.client_token):
                    return
                row = await asyncio.to_thread(_latest_build, user.workspace_id, campaign_id)
                async with self:
                    if self.campaign_id != campaign_id:
                        return  # another campaign is shown now
                    self._read_build(row)
                    if row is None or row.status in (BuildStatus.DONE, BuildStatus.FAILED):
                        self._refresh(user.workspace_id)
                        await (await self.get_state(MessageState)).reload()
                        return
        except ServiceError:
            return  # the campaign went away meanwhile
        finally:
            async with self:
                self._watching = False

    # --- filters and paging ------------------------------------------------------------------

    async def _filter(self, status: str, reason: str) -> None:
        self.filter_status, self.filter_reason, self.offset = status, reason, 0
        await self._again()

    @rx.event
    async def filter_by_status(self, status: str):
        await self._filter("" if status == self.filter_status else status, "")

    @rx.event
    async def filter_by_reason(self, code: str):
        await self._filter("", "" if code == self.filter_reason else code)

    @rx.event
    async def clear_filters(self):
        self.search = ""
        await self._filter("", "")

    @rx.event
    async def set_search(self, value: str):
        self.search, self.offset = value.strip(), 0
        await self._again()

    @rx.event
    async def next_page(self):
        if self.offset + PAGE_SIZE < self.total:
            self.offset += PAGE_SIZE
            await self._again()

    @rx.event
    async def previous_page(self):
        if self.offset:
            self.offset = max(0, self.offset - PAGE_SIZE)
            await self._again()

    @rx.var
    def page_label(self) -> str:
        if not self.total:
            filtered = self.filter_status or self.filter_reason or self.search
            return "No messages match." if filtered else "No messages yet."
        last = min(self.offset + PAGE_SIZE, self.total)
        return f"{self.offset + 1:,}–{last:,} of {_plural(self.total, 'message')}"

    # --- decisions -------------------------------------------------------------------------------

    async def decide(self, action, done: str) -> bool:
        """Run `action(session, user) -> count` as a reviewer; say `done` with the count."""
        user, why = await permitted(self, REVIEWER_ROLES)
        if user is None:
            self._say(why, ok=False)
            return False
        try:
            with session_scope() as session:
                count = action(session, user)
        except ServiceError as exc:
            self._say(str(exc), ok=False)
            return False
        self._say(done.format(n=_plural(count, "message")))
        self._refresh(user.workspace_id)
        return True

    @rx.event
    async def approve_reason(self, code: str):
        await self.decide(
            lambda s, u: review.approve_messages(
                session=s, workspace_id=u.workspace_id, campaign_id=self.campaign_id,
                user_id=u.user_id, reason_code=code, source=Source.UI,
            ),
            f"Approved {{n}} with the reason “{reason_label(code)}”.",
        )  # fmt: skip
        await (await self.get_state(MessageState)).reload()

    @rx.event
    async def approve(self, message_id: str):
        await self.decide(
            lambda s, u: review.approve_messages(
                session=s, workspace_id=u.workspace_id, campaign_id=self.campaign_id,
                user_id=u.user_id, message_ids=[int(message_id)], source=Source.UI,
            ),
            "Approved {n}.",
        )  # fmt: skip
        await (await self.get_state(MessageState)).reload()

    @rx.event
    async def exclude(self, message_id: str):
        await self.decide(
            lambda s, u: review.exclude_messages(
                session=s, workspace_id=u.workspace_id, campaign_id=self.campaign_id,
                user_id=u.user_id, message_ids=[int(message_id)], source=Source.UI,
            ),
            "Excluded {n}: it will not be sent.",
        )  # fmt: skip
        await (await self.get_state(MessageState)).reload()

    @rx.event
    async def include(self, message_id: str):
        await self.decide(
            lambda s, u: review.include_messages(
                session=s, workspace_id=u.workspace_id, campaign_id=self.campaign_id,
                user_id=u.user_id, message_ids=[int(message_id)], source=Source.UI,
            ),
            "Put {n} back into the campaign.",
        )  # fmt: skip
        await (await self.get_state(MessageState)).reload()

    # --- send -------------------------------------------------------------------------------------

    @rx.event
    async def open_send(self):
        """Send asks first: "Send N messages now?"."""
        user, why = await permitted(self, APPROVER_ROLES)
        self.send_error = ""
        if user is None:
            self.send_error = why
            return
        self.confirm_open = not self.send_disabled

    @rx.event
    def set_confirm_open(self, is_open: bool):
        self.confirm_open = bool(is_open) and not self.sending_now

    @rx.event(background=True)
    async def send(self):
        """Approve (if still in review) and queue the campaign, then show its progress.

        A background event: queueing a large campaign may take longer than a normal
        handler may hold the page's state.
        """
        async with self:
            if self.sending_now:
                return
            self.send_error = ""
            user, why = await permitted(self, APPROVER_ROLES)
            if user is None:
                self.send_error, self.confirm_open = why, False
                return
            self.sending_now = True
            campaign_id = self.campaign_id
        try:
            await asyncio.to_thread(_start_send, user, campaign_id)
        except ServiceError as exc:
            async with self:
                self.sending_now, self.confirm_open = False, False
                self.send_error = str(exc)
                with contextlib.suppress(ServiceError):  # gone: the message says enough
                    self._refresh(user.workspace_id)
            return
        async with self:
            self.sending_now, self.confirm_open = False, False
        yield rx.redirect(routes.campaign_send(campaign_id))

    @rx.var
    def send_disabled(self) -> bool:
        return not self.can_approve or self.status not in SENDABLE_FROM or len(self.blockers) > 0

    @rx.var
    def send_href(self) -> str:
        return routes.campaign_send(self.campaign_id)

    @rx.var
    def confirm_title(self) -> str:
        return f"Send {_plural(self.sendable, 'message')} now?"


def _reason(r: review.ReasonCount) -> dict[str, str]:
    undecided = r.count - r.approved if r.status in DECIDABLE else 0
    count = f"{r.count:,}"
    if r.approved:
        count += f" ({r.approved:,} approved)"
    return {
        "code": r.code,
        "status": r.status,
        "label": reason_label(r.code),
        "explanation": r.explanation,
        "details": ", ".join(r.details),
        "color": STATUS_INFO.get(r.status, ("", "gray", ""))[1],
        "count": count,
        "undecided": f"{undecided:,}" if undecided > 0 else "",
    }


def _counts_note(counts: review.ReviewCounts) -> str:
    if not counts.total:
        return ""
    text = f"{_plural(counts.sendable, 'message')} of {counts.total:,} would be sent."
    if counts.awaiting_decision:
        text += f" {counts.awaiting_decision:,} still need a decision."
    if counts.approved:
        text += f" {counts.approved:,} approved by a person."
    if counts.excluded_by_person:
        text += f" {counts.excluded_by_person:,} excluded by a person."
    return text


def _row(r) -> dict[str, str]:
    label, color, _ = STATUS_INFO.get(r.review_status, (r.review_status, "gray", ""))
    decision = r.decision or ""
    return {
        "id": str(r.id),
        "email": r.email,
        "subject": r.subject or "—",
        "status": r.review_status,
        "status_label": label,
        "color": color,
        "reasons": "; ".join(r.reasons),
        "decision": decision,
        "decision_label": DECISION_LABELS.get(decision, ""),
        "decidable": "1" if r.review_status in DECIDABLE and not decision else "",
        "excludable": "1" if r.review_status in EXCLUDABLE else "",
        "size": size_text(r.size_bytes) if r.size_bytes else "—",
    }


def _start_send(user: auth.CurrentUser, campaign_id: int) -> int:
    with session_scope() as session:
        run = send_control.start_send(
            session=session, workspace_id=user.workspace_id, campaign_id=campaign_id,
            user_id=user.user_id, source=Source.UI,
        )  # fmt: skip
        return run.id


def _latest_build(workspace_id: int, campaign_id: int):
    with session_scope() as session:
        return build.latest_build(
            session=session, workspace_id=workspace_id, campaign_id=campaign_id
        )


class MessageState(rx.State):
    """One message, exactly as it will be sent; its decision and the test send."""

    message_id: int = 0
    email: str = ""
    headers: list[dict[str, str]] = []
    html_document: str = ""
    text: str = ""
    attachments: list[dict[str, str]] = []
    review_status: str = ""
    status_label: str = ""
    status_color: str = "gray"
    reasons: list[str] = []
    decision: str = ""
    decision_label: str = ""
    excludable: bool = False
    error: str = ""
    loading: bool = False
    test_address: str = ""
    test_result: str = ""
    test_ok: bool = True
    test_sending: bool = False
    # The recipient's data, for the edit form (contact_id 0: no contact to edit).
    contact_id: int = 0
    recipient_first_name: str = ""
    recipient_last_name: str = ""
    recipient_fields: list[dict[str, str]] = []  # name, value, missing ("1" or "")
    recipient_missing: list[str] = []
    editing_recipient: bool = False
    recipient_error: str = ""
    recipient_saved: str = ""

    async def clear(self) -> None:
        self.message_id, self.error, self.test_result = 0, "", ""
        self.headers, self.attachments, self.reasons = [], [], []
        self.html_document = self.text = self.email = ""
        self._close_recipient()
        self.recipient_saved = ""

    async def reload(self) -> None:
        """The shown message again (after a decision changed it)."""
        if self.message_id:
            await self._show(self.message_id)

    async def _show(self, message_id: int) -> None:
        user = await current_user(self)  # anyone of the workspace may look (viewers too)
        if user is None:
            self.error = "Sign in to continue."
            return
        try:
            preview, recipient = await asyncio.to_thread(_preview, user.workspace_id, message_id)
        except ServiceError as exc:
            self.error = str(exc)
            return
        self._read_recipient(recipient)
        self.error = preview.problem or ""
        self.message_id = message_id
        self.headers = [{"name": name, "value": value} for name, value in preview.headers]
        self.email = preview.email
        self.html_document = preview.html_document
        self.text = preview.text
        self.attachments = [
            {"name": name, "size": size_text(size)} for name, size in preview.attachments
        ]
        self.review_status = preview.review_status
        label, color, _ = STATUS_INFO.get(
            preview.review_status, (preview.review_status, "gray", "")
        )
        self.status_label, self.status_color = label, color
        self.reasons = list(preview.reasons)
        self.decision = preview.decision or ""
        self.decision_label = DECISION_LABELS.get(self.decision, self.decision)
        self.excludable = preview.review_status in EXCLUDABLE

    def _read_recipient(self, recipient: review.EditableRecipient | None) -> None:
        if recipient is None:
            self.contact_id, self.recipient_fields, self.recipient_missing = 0, [], []
            self.recipient_first_name = self.recipient_last_name = ""
            self.editing_recipient = False
            return
        missing = set(recipient.missing)
        self.contact_id = recipient.contact_id
        self.recipient_first_name = recipient.first_name
        self.recipient_last_name = recipient.last_name
        self.recipient_fields = [
            {"name": name, "value": value, "missing": "1" if name in missing else ""}
            for name, value in recipient.fields
        ]
        self.recipient_missing = sorted(missing)

    def _close_recipient(self) -> None:
        self.editing_recipient, self.recipient_error = False, ""

    @rx.event
    async def select(self, message_id: str):
        if int(message_id) != self.message_id:
            self.test_result, self.recipient_saved = "", ""
            self._close_recipient()
        self.loading = True
        yield
        await self._show(int(message_id))
        self.loading = False
        yield rx.scroll_to("message-preview")

    @rx.event
    async def download_eml(self, message_id: str):
        """The message as an .eml file, exactly as it will be sent.

        Served through the live connection rather than a link to the backend's
        /exports/messages/<id>.eml: where the backend is another origin (development
        runs two ports), following such a link starts leaving the page, and Reflex
        then drops and re-opens the page's connection (a reload) for a download.
        """
        user = await current_user(self)
        if user is None:
            self.error = "Sign in to continue."
            return None
        try:
            data, filename = await asyncio.to_thread(_eml, user.workspace_id, int(message_id))
        except ServiceError as exc:
            page = await self.get_state(ReviewGateState)
            page._say(str(exc), ok=False)
            return None
        return rx.download(data=data, filename=filename, mime_type="message/rfc822")

    @rx.event
    def close(self):
        self.message_id, self.test_result, self.recipient_saved = 0, "", ""
        self._close_recipient()

    @rx.event
    def edit_recipient(self):
        self.editing_recipient, self.recipient_error, self.recipient_saved = True, "", ""

    @rx.event
    def cancel_recipient(self):
        self._close_recipient()

    @rx.event
    async def save_recipient(self, form: dict):
        """Save the recipient's names and fields to the contact (not the message: the
        Rebuild button remakes the messages whose data changed)."""
        user, why = await permitted(self, REVIEWER_ROLES)
        if user is None:
            self.recipient_error = why
            return
        if not self.contact_id:
            self.recipient_error = "This message has no contact any more (its list was deleted)."
            return
        fields = {
            str(key)[len(FIELD_INPUT) :]: str(value or "")
            for key, value in (form or {}).items()
            if str(key).startswith(FIELD_INPUT)
        }
        try:
            with session_scope() as session:
                contacts.update_contact(
                    session=session, workspace_id=user.workspace_id, contact_id=self.contact_id,
                    first_name=str(form.get("first_name") or ""),
                    last_name=str(form.get("last_name") or ""), fields=fields,
                    user_id=user.user_id, source=Source.UI,
                )  # fmt: skip
        except ServiceError as exc:
            self.recipient_error = str(exc)
            return
        self._close_recipient()
        self.recipient_saved = RECIPIENT_SAVED
        (await self.get_state(ReviewGateState))._say(RECIPIENT_SAVED)
        await self.reload()

    @rx.event
    def set_test_address(self, value: str):
        self.test_address = value

    @rx.event(background=True)
    async def test_send(self, form: dict | None = None):
        """Send this message to the typed address, marked as a test; nothing else changes."""
        async with self:
            if self.test_sending or not self.message_id:
                return
            user, why = await permitted(self, REVIEWER_ROLES)
            address = str((form or {}).get("address") or self.test_address).strip()
            self.test_address = address
            if user is None:
                self.test_result, self.test_ok = why, False
                return
            self.test_sending, self.test_result = True, ""
            message_id = self.message_id
        try:
            result = await asyncio.to_thread(_test_send, user, message_id, address)
            ok, text = result.ok, result.detail
        except ServiceError as exc:
            ok, text = False, str(exc)
        async with self:
            self.test_sending = False
            self.test_ok = ok
            self.test_result = (
                f"Test sent to {address}. {text}".strip()
                if ok
                else f"The test was not sent: {text}"
            )


def _preview(workspace_id: int, message_id: int):
    """(the message's preview, its recipient for the edit form or None)."""
    with session_scope() as session:
        preview = review.message_preview(
            session=session, workspace_id=workspace_id, message_id=message_id
        )
        recipient = review.recipient_for_message(
            session=session, workspace_id=workspace_id, message_id=message_id
        )
        return preview, recipient


def _eml(workspace_id: int, message_id: int) -> tuple[bytes, str]:
    with session_scope() as session:
        return review.eml_bytes(session=session, workspace_id=workspace_id, message_id=message_id)


def _test_send(user: auth.CurrentUser, message_id: int, address: str):
    with session_scope() as session:
        return review.test_send(
            session=session, workspace_id=user.workspace_id, message_id=message_id,
            to_address=address, user_id=user.user_id, source=Source.UI,
        )  # fmt: skip
