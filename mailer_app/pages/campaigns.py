"""Campaigns: the list, with status and search; new, duplicate, archive."""

from __future__ import annotations

import reflex as rx

from mailer_app import routes
from mailer_app.components.shell import field_error, page_frame
from mailer_app.state.auth import AuthState
from mailer_app.state.campaigns import CampaignListState

# Campaigns with a send to follow (its progress page): queued and after.
SENT_STATUSES = ["queued", "sending", "paused", "completed", "cancelled"]


def toolbar() -> rx.Component:
    return rx.hstack(
        rx.input(
            rx.input.slot(rx.icon("search", size=16)),
            placeholder="Search by name",
            value=CampaignListState.search,
            on_change=CampaignListState.set_search,
            id="campaign-search",
            width="320px",
        ),
        rx.checkbox(
            "Show archived",
            checked=CampaignListState.show_archived,
            on_change=CampaignListState.set_show_archived,
            id="show-archived",
        ),
        rx.spacer(),
        rx.cond(
            CampaignListState.can_edit,
            rx.button(
                rx.icon("plus", size=16),
                "New campaign",
                on_click=CampaignListState.open_new,
                id="new-campaign",
            ),
        ),
        align="center",
        width="100%",
        spacing="4",
    )


def notice() -> rx.Component:
    return rx.cond(
        CampaignListState.notice != "",
        rx.callout(
            CampaignListState.notice,
            icon=rx.cond(CampaignListState.notice_ok, "circle-check", "triangle-alert"),
            color_scheme=rx.cond(CampaignListState.notice_ok, "green", "red"),
            id="campaign-notice",
        ),
    )


def _actions(row: rx.Var) -> rx.Component:
    return rx.hstack(
        rx.button(
            rx.icon("copy", size=14), "Duplicate", size="1", variant="soft",
            on_click=CampaignListState.duplicate(row["id"]), id=f"duplicate-{row['id']}",
        ),
        rx.cond(
            row["archived"] == "1",
            rx.button(
                rx.icon("archive-restore", size=14), "Restore", size="1", variant="soft",
                color_scheme="green", on_click=CampaignListState.restore(row["id"]),
                id=f"restore-{row['id']}",
            ),
            rx.button(
                rx.icon("archive", size=14), "Archive", size="1", variant="soft",
                color_scheme="gray", on_click=CampaignListState.archive(row["id"]),
                id=f"archive-{row['id']}",
            ),
        ),
        spacing="2",
    )  # fmt: skip


def campaign_row(row: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(
            rx.vstack(
                rx.link(row["name"], href=row["href"], weight="medium", id=f"open-{row['id']}"),
                rx.cond(
                    row["description"] != "",
                    rx.text(row["description"], size="1", color_scheme="gray", trim="end"),
                ),
                spacing="0",
                max_width="360px",
            )
        ),
        rx.table.cell(
            rx.vstack(
                rx.badge(
                    row["status_label"],
                    color_scheme=row["status_color"],
                    variant="soft",
                    class_name="campaign-status",
                ),
                rx.cond(
                    row["review_href"] != "",
                    rx.link(
                        "Review messages",
                        href=row["review_href"],
                        size="1",
                        id=f"review-{row['id']}",
                    ),
                ),
                rx.cond(
                    rx.Var.create(SENT_STATUSES).contains(row["status"]),
                    rx.link(
                        "Progress",
                        href=routes.CAMPAIGNS + "/" + row["id"].to(str) + "/send",
                        size="1",
                        id=f"progress-{row['id']}",
                    ),
                ),
                spacing="1",
            )
        ),
        rx.table.cell(rx.text(row["version"], size="2")),
        rx.table.cell(rx.text(row["updated"], size="2")),
        rx.cond(CampaignListState.can_edit, rx.table.cell(_actions(row))),
        id=f"campaign-row-{row['id']}",
        align="center",
    )


def campaign_table() -> rx.Component:
    return rx.cond(
        CampaignListState.rows.length() > 0,
        rx.table.root(
            rx.table.header(
                rx.table.row(
                    rx.table.column_header_cell("Campaign"),
                    rx.table.column_header_cell("Status"),
                    rx.table.column_header_cell("Version"),
                    rx.table.column_header_cell("Last change"),
                    rx.cond(CampaignListState.can_edit, rx.table.column_header_cell("")),
                )
            ),
            rx.table.body(rx.foreach(CampaignListState.rows, campaign_row)),
            variant="surface",
            width="100%",
            id="campaign-table",
        ),
        rx.callout(
            rx.cond(
                CampaignListState.search != "",
                "No campaign matches this search.",
                "No campaigns yet. Start one with New campaign: a few steps take you from "
                "your contacts and message to a campaign ready for review.",
            ),
            icon="mails",
            id="no-campaigns",
        ),
    )


def new_campaign_dialog() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title("New campaign"),
            rx.dialog.description(
                "Give it a name you will recognise; recipients never see it.",
                size="2",
                color_scheme="gray",
            ),
            rx.form(
                rx.vstack(
                    rx.input(
                        name="name",
                        placeholder="For example: March newsletter",
                        id="new-campaign-name",
                        auto_focus=True,
                        max_length=200,
                    ),
                    field_error(CampaignListState.new_error),
                    rx.hstack(
                        rx.dialog.close(rx.button("Cancel", variant="soft", color_scheme="gray")),
                        rx.button("Create", type="submit", id="create-campaign"),
                        justify="end",
                        spacing="2",
                    ),
                    spacing="3",
                    align="stretch",
                ),
                on_submit=CampaignListState.create,
                reset_on_submit=False,
            ),
            max_width="460px",
        ),
        open=CampaignListState.new_open,
        on_open_change=CampaignListState.set_new_open,
    )


@rx.page(
    route=routes.CAMPAIGNS,
    title="Campaigns · mailer",
    on_load=[AuthState.require_login, CampaignListState.load],
)
def campaigns_page() -> rx.Component:
    return page_frame(
        "Campaigns",
        toolbar(),
        notice(),
        campaign_table(),
        new_campaign_dialog(),
    )
