"""The job monitor's tables. Element ids are stable for tests: jobs-redis-error,
queues-table (rows queue-<name>), workers-table, scheduled-table, failed-table (rows
failed-<job id>, buttons retry-<job id>), unknown-table (links unknown-<campaign id>),
jobs-notice, jobs-updated."""

from __future__ import annotations

import reflex as rx

from mailer_app.state.jobs import JobsState

J = JobsState


def _table(table_id: str, headers: list[str], rows: rx.Var, row) -> rx.Component:
    return rx.table.root(
        rx.table.header(rx.table.row(*[rx.table.column_header_cell(h) for h in headers])),
        rx.table.body(rx.foreach(rows, row)),
        width="100%",
        id=table_id,
    )


def _section(title: str, explanation: str, body: rx.Component, empty: rx.Var, none_text: str):
    return rx.card(
        rx.vstack(
            rx.text(title, size="4", weight="bold"),
            rx.text(explanation, size="2", color_scheme="gray"),
            rx.cond(empty, rx.text(none_text, size="2", color_scheme="gray"), body),
            spacing="2", width="100%",
        ),
        width="100%",
    )  # fmt: skip


def _queue_row(q: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.text(q["name"], weight="medium")), rx.table.cell(q["queued"]),
        rx.table.cell(q["started"]), rx.table.cell(q["failed"]), rx.table.cell(q["scheduled"]),
        rx.table.cell(q["deferred"]), id="queue-" + q["name"],
    )  # fmt: skip


def _worker_row(w: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.text(w["name"], size="1")),
        rx.table.cell(rx.badge(rx.cond(w["alive"] != "", w["state"], "stale"),
                               color_scheme=rx.cond(w["alive"] != "", "green", "red"))),
        rx.table.cell(w["beat"]), rx.table.cell(rx.text(w["job"], size="1")),
        rx.table.cell(rx.text(w["queues"], size="1")), rx.table.cell(rx.text(w["done"], size="1")),
    )  # fmt: skip


def _scheduled_row(s: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(s["when"]), rx.table.cell(s["in"]), rx.table.cell(s["run"]),
        rx.table.cell(s["check"]), rx.table.cell(rx.text(s["what"], size="1")),
    )  # fmt: skip


def _failed_row(f: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.text(f["when"], size="1")), rx.table.cell(f["queue"]),
        rx.table.cell(rx.text(f["what"], size="1")),
        rx.table.cell(
            rx.vstack(
                rx.text(f["summary"], size="2", color_scheme="red"),
                rx.el.details(rx.el.summary("Details"),
                              rx.code_block(f["error"], language="log", wrap_long_lines=True)),
                spacing="1",
            )
        ),
        rx.table.cell(rx.button("Retry", size="1", on_click=J.retry(f["id"]),
                                id="retry-" + f["id"])),
        id="failed-" + f["id"],
    )  # fmt: skip


def _unknown_row(u: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.link(u["campaign"], href=u["href"], id="unknown-" + u["id"])),
        rx.table.cell(u["count"]), rx.table.cell(rx.text(u["emails"], size="1")),
    )  # fmt: skip


def jobs_body() -> rx.Component:
    return rx.vstack(
        rx.hstack(
            rx.text("Updated ", J.updated, " · ", J.schedulers, size="2", color_scheme="gray",
                    id="jobs-updated"),
            width="100%",
        ),
        rx.cond(J.redis_error != "", rx.callout(J.redis_error, icon="triangle-alert",
                                                color_scheme="red", id="jobs-redis-error")),
        rx.cond(J.notice != "", rx.callout(J.notice, icon=rx.cond(J.notice_ok, "circle-check",
                "triangle-alert"), color_scheme=rx.cond(J.notice_ok, "green", "red"),
                id="jobs-notice")),
        _section("Queues", "Jobs waiting for a worker, running now, failed, and delayed.",
                 _table("queues-table", ["Queue", "Waiting", "Running", "Failed", "Delayed",
                                         "Deferred"], J.queues, _queue_row),
                 J.queues.length() == 0, "No queue could be read."),
        _section("Workers", "Each worker process, its last heartbeat and the job it runs.",
                 _table("workers-table", ["Worker", "State", "Heartbeat", "Current job",
                                          "Queues", "Jobs"], J.workers, _worker_row),
                 J.workers.length() == 0, "No worker is running: nothing gets sent or checked."),
        _section("Scheduled checks", "Placement checks and other jobs waiting for their time.",
                 _table("scheduled-table", ["When", "", "Run", "Check", "Job"], J.scheduled,
                        _scheduled_row),
                 J.scheduled.length() == 0, "Nothing is scheduled."),
        _section("Failed jobs", "Jobs that stopped with an error. Retry puts one back on its "
                 "queue.", _table("failed-table", ["Failed at", "Queue", "Job", "Error", ""],
                                  J.failed, _failed_row),
                 J.failed.length() == 0, "No failed jobs."),
        _section("Messages needing a decision", "Sent, but the mail server's answer never came "
                 "back. Decide on each campaign's send page.",
                 _table("unknown-table", ["Campaign", "Messages", "Recipients"], J.unknown,
                        _unknown_row),
                 J.unknown.length() == 0, "None: every message's outcome is known."),
        spacing="4", width="100%", align="stretch",
    )  # fmt: skip
