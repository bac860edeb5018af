"""State of the campaign list (/campaigns): search, new campaign, duplicate, archive.

Every handler asks the database who is signed in, and every change checks the role
(`campaigns.CAMPAIGN_EDITOR_ROLES`): hiding buttons is not authorization.
"""

from __future__ import annotations

import reflex as rx

from mailer_app import routes
from mailer_app.db import session_scope
from mailer_app.models import Source
from mailer_app.services import ServiceError, auth, campaigns
from mailer_app.state.auth import AuthState

STATUS_COLORS = {
    "draft": "gray",
    "in_review": "blue",
    "built": "blue",
    "approved": "green",
    "queued": "amber",
    "sending": "amber",
    "paused": "orange",
    "completed": "green",
    "cancelled": "red",
    "archived": "gray",
}


async def current_user(state: rx.State) -> auth.CurrentUser | None:
    return (await state.get_state(AuthState)).current_user()


async def campaign_editor(state: rx.State) -> tuple[auth.CurrentUser | None, str]:
    """(the signed-in user allowed to change campaigns, '') or (None, why not)."""
    try:
        return auth.require_role(await current_user(state), *campaigns.CAMPAIGN_EDITOR_ROLES), ""
    except auth.PermissionDenied as exc:
        return None, str(exc)


def can_edit(user: auth.CurrentUser | None) -> bool:
    return user is not None and (
        user.role == "owner" or user.role in campaigns.CAMPAIGN_EDITOR_ROLES
    )


def display_row(row: campaigns.CampaignRow) -> dict[str, str]:
    if row.has_draft and row.published_number:
        version = f"v{row.version_number} draft (v{row.published_number} published)"
    elif row.has_draft:
        version = f"v{row.version_number} draft"
    else:
        version = f"v{row.version_number} published"
    return {
        "id": str(row.id),
        "name": row.name or "(untitled)",
        "description": row.description,
        "status": row.status,
        "status_label": row.status_label,
        "status_color": STATUS_COLORS.get(row.status, "gray"),
        "version": version,
        "updated": row.updated_at.strftime("%Y-%m-%d %H:%M UTC"),
        "archived": "1" if row.archived else "",
        "href": routes.campaign_wizard(row.id),
        # Once a version is published its messages can be built and reviewed.
        "review_href": (
            routes.campaign_review(row.id) if row.published_number and not row.archived else ""
        ),
    }


class CampaignListState(rx.State):
    rows: list[dict[str, str]] = []
    search: str = ""
    show_archived: bool = False
    can_edit: bool = False
    notice: str = ""
    notice_ok: bool = True
    new_open: bool = False
    new_error: str = ""

    def _refresh(self, workspace_id: int) -> None:
        with session_scope() as session:
            rows = campaigns.list_campaigns(
                session=session,
                workspace_id=workspace_id,
                search=self.search,
                include_archived=self.show_archived,
            )
        self.rows = [display_row(r) for r in rows]

    def _say(self, message: str, ok: bool = True) -> None:
        self.notice, self.notice_ok = message, ok

    @rx.event
    async def load(self):
        user = await current_user(self)
        self.notice, self.new_open = "", False
        if user is None:
            self.rows, self.can_edit = [], False
            return
        self.can_edit = can_edit(user)
        self._refresh(user.workspace_id)

    @rx.event
    async def set_search(self, value: str):
        self.search = value
        user = await current_user(self)
        if user is not None:
            self._refresh(user.workspace_id)

    @rx.event
    async def set_show_archived(self, value: bool):
        self.show_archived = bool(value)
        user = await current_user(self)
        if user is not None:
            self._refresh(user.workspace_id)

    @rx.event
    def open_new(self):
        self.new_open, self.new_error = True, ""

    @rx.event
    def set_new_open(self, is_open: bool):
        self.new_open = is_open

    @rx.event
    async def create(self, form: dict):
        user, why = await campaign_editor(self)
        if user is None:
            self.new_error = why
            return None
        try:
            with session_scope() as session:
                campaign = campaigns.create_campaign(
                    session=session,
                    workspace_id=user.workspace_id,
                    name=str(form.get("name") or ""),
                    user_id=user.user_id,
                    source=Source.UI,
                )
                campaign_id = campaign.id
        except ServiceError as exc:
            self.new_error = str(exc)
            return None
        self.new_open = False
        return rx.redirect(routes.campaign_wizard(campaign_id))

    async def _change(self, action, done: str) -> None:
        user, why = await campaign_editor(self)
        if user is None:
            self._say(why, ok=False)
            return
        try:
            with session_scope() as session:
                name = action(session, user)
        except ServiceError as exc:
            self._say(str(exc), ok=False)
        else:
            self._say(done.format(name=name))
        self._refresh(user.workspace_id)

    @rx.event
    async def duplicate(self, campaign_id: str):
        def action(session, user):
            copy = campaigns.duplicate_campaign(
                session=session, workspace_id=user.workspace_id, campaign_id=int(campaign_id),
                user_id=user.user_id, source=Source.UI,
            )  # fmt: skip
            return copy.name

        await self._change(action, "Made a copy: {name}. It is a draft you can change.")

    @rx.event
    async def archive(self, campaign_id: str):
        def action(session, user):
            return campaigns.archive_campaign(
                session=session, workspace_id=user.workspace_id, campaign_id=int(campaign_id),
                user_id=user.user_id, source=Source.UI,
            ).name  # fmt: skip

        await self._change(action, "Archived {name}. Show archived campaigns to bring it back.")

    @rx.event
    async def restore(self, campaign_id: str):
        def action(session, user):
            return campaigns.restore_campaign(
                session=session, workspace_id=user.workspace_id, campaign_id=int(campaign_id),
                user_id=user.user_id, source=Source.UI,
            ).name  # fmt: skip

        await self._change(action, "Restored {name}.")
