"""The job monitor (/jobs): queues, workers, scheduled checks, failed jobs, unknowns."""

from __future__ import annotations

import reflex as rx

from mailer_app import routes
from mailer_app.components.job_widgets import jobs_body
from mailer_app.components.shell import page_frame
from mailer_app.state.auth import AuthState
from mailer_app.state.jobs import JobsState


@rx.page(
    route=routes.JOBS, title="Jobs · mailer", on_load=[AuthState.require_login, JobsState.load]
)
def jobs_page() -> rx.Component:
    return page_frame(
        "Background jobs",
        # Leaving the page stops its refresh loop (closing the tab does too).
        rx.box(
            rx.cond(
                JobsState.denied != "",
                rx.callout(JobsState.denied, icon="lock", color_scheme="red", id="jobs-denied"),
                rx.cond(
                    JobsState.loaded,
                    jobs_body(),
                    rx.hstack(rx.spinner(), rx.text("Reading the queues…"), align="center"),
                ),
            ),
            on_mount=JobsState.arrive,
            on_unmount=JobsState.leave,
            width="100%",
        ),
    )
