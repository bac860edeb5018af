"""Placement dashboard widgets: headline cards and the plotly figures (pure functions)."""

from __future__ import annotations

import plotly.graph_objects as go
import reflex as rx

# The order of the stacked bars, bottom to top, and their colours.
PLACEMENT_COLOURS = {
    "inbox": "#30a46c",
    "promotions": "#0090ff",
    "spam": "#f76b15",
    "missing": "#e5484d",
    "pending": "#b9bbc6",
}
ESP_COLOURS = ("#0090ff", "#e5484d", "#30a46c", "#f76b15", "#8e4ec6", "#12a594", "#ffc53d")
_LAYOUT = {
    "margin": {"l": 48, "r": 16, "t": 16, "b": 40},
    "height": 320,
    "legend": {"orientation": "h", "y": -0.18},
    "paper_bgcolor": "rgba(0,0,0,0)",
    "plot_bgcolor": "rgba(0,0,0,0)",
}


def esp_bar_figure(by_esp: dict[str, dict[str, int]]) -> go.Figure:
    """Stacked bar: how many seed copies of each ESP landed where (pending on top)."""
    esps = sorted(by_esp)
    fig = go.Figure(
        [
            go.Bar(
                name=placement,
                x=esps,
                y=[by_esp[esp].get(placement, 0) for esp in esps],
                marker_color=colour,
            )
            for placement, colour in PLACEMENT_COLOURS.items()
        ]
    )
    fig.update_layout(barmode="stack", yaxis_title="seed copies", **_LAYOUT)
    return fig


def inbox_series_figure(labels: list[str], rates: dict[str, list[float | None]]) -> go.Figure:
    """Inbox rate per ESP over time (gaps where nothing was checked)."""
    fig = go.Figure(
        [
            go.Scatter(
                name=esp,
                x=labels,
                y=[None if r is None else round(100 * r, 1) for r in values],
                mode="lines+markers",
                connectgaps=True,
                line={"color": ESP_COLOURS[i % len(ESP_COLOURS)]},
            )
            for i, (esp, values) in enumerate(sorted(rates.items()))
        ]
    )
    fig.update_layout(yaxis={"title": "inbox rate (%)", "range": [0, 105]}, **_LAYOUT)
    return fig


def headline_card(card: rx.Var) -> rx.Component:
    """One headline number: a rate (or count), and its change against the period before."""
    return rx.card(
        rx.vstack(
            rx.text(card["label"], size="2", color_scheme="gray"),
            rx.heading(card["value"], size="7", class_name="card-value"),
            rx.text(
                card["change"], size="1", color_scheme=card["colour"], class_name="card-change"
            ),
            spacing="1",
        ),
        id="dash-card-" + card["key"],
        min_width="150px",
        flex="1",
    )


def chart_card(title: str, hint: str, chart: rx.Component, *, id: str) -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.heading(title, size="4"),
            rx.text(hint, size="2", color_scheme="gray"),
            chart,
            spacing="2",
            align="stretch",
        ),
        id=id,
        width="100%",
    )


def _step_row(step: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(step["label"]),
        *[
            rx.table.cell(step[name])
            for name in ("inbox", "promotions", "spam", "missing", "pending", "error")
        ],
    )


def evolution_table(steps: rx.Var) -> rx.Component:
    """Where the run's seeds stood after each scheduled check."""
    return rx.table.root(
        rx.table.header(
            rx.table.row(
                *[
                    rx.table.column_header_cell(name)
                    for name in (
                        "After check",
                        "Inbox",
                        "Promotions",
                        "Spam",
                        "Missing",
                        "Not found yet",
                        "Could not check",
                    )
                ]
            )
        ),
        rx.table.body(rx.foreach(steps, _step_row)),
        size="1",
        width="100%",
        id="dash-evolution",
    )


def _seed_row(row: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(row["email"]),
        rx.table.cell(row["esp"]),
        rx.table.cell(rx.badge(row["placement"], color_scheme=row["colour"], variant="solid")),
        rx.table.cell(row["folder"]),
        rx.table.cell(row["landed"]),
        rx.table.cell(rx.text(row["auth"], size="1")),
        rx.table.cell(rx.text(row["checks"], size="1", color_scheme="gray")),
    )


def seed_table(rows: rx.Var) -> rx.Component:
    """Each seed's result in one run."""
    return rx.table.root(
        rx.table.header(
            rx.table.row(
                *[
                    rx.table.column_header_cell(name)
                    for name in (
                        "Seed",
                        "Provider",
                        "Placement",
                        "Folder",
                        "Landed after",
                        "SPF / DKIM / DMARC",
                        "Each check",
                    )
                ]
            )
        ),
        rx.table.body(rx.foreach(rows, _seed_row)),
        size="1",
        width="100%",
        id="dash-seeds",
    )
