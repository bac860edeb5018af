"""The report page (/campaigns/[cid]/report): a campaign's numbers, exports, email."""

from __future__ import annotations

import reflex as rx

from mailer_app import routes
from mailer_app.components.report_widgets import report_body
from mailer_app.components.shell import page_frame
from mailer_app.state.auth import AuthState
from mailer_app.state.report import ReportPageState


@rx.page(
    route=routes.CAMPAIGN_REPORT,
    title="Report · mailer",
    on_load=[AuthState.require_login, ReportPageState.load],
)
def report_page() -> rx.Component:
    return page_frame(
        rx.cond(ReportPageState.loaded, "Report: " + ReportPageState.name, "Report"),
        # Leaving the page stops its refresh loop (closing the tab does too).
        rx.box(
            rx.cond(
                ReportPageState.missing != "",
                rx.callout(ReportPageState.missing, icon="triangle-alert", color_scheme="red",
                           id="campaign-missing"),
                rx.cond(
                    ReportPageState.loaded,
                    report_body(),
                    rx.hstack(rx.spinner(), rx.text("Opening the report…"), align="center"),
                ),
            ),
            on_mount=ReportPageState.arrive,
            on_unmount=ReportPageState.leave,
            width="100%",
        ),
    )  # fmt: skip
