"""A message's HTML and text side by side, the HTML in a sandboxed frame."""

from __future__ import annotations

import reflex as rx

_FRAME_BORDER = {"border": "1px solid var(--gray-a6)", "background": "white", "borderRadius": "6px"}


def html_and_text(html_document: rx.Var, text: rx.Var, *, title: str, height: str) -> rx.Component:
    """`html_document` must already be sanitized (templating.preview_document)."""
    return rx.grid(
        rx.vstack(
            rx.text("HTML", size="1", color_scheme="gray"),
            # No allow-scripts, no allow-same-origin: the message cannot run code or
            # reach the app.
            rx.el.iframe(
                src_doc=html_document,
                sandbox="",
                referrer_policy="no-referrer",
                title=title,
                id="preview-html",
                width="100%",
                height=height,
                style=_FRAME_BORDER,
            ),
            spacing="1",
            width="100%",
            min_width="0",
        ),
        rx.vstack(
            rx.text("Text", size="1", color_scheme="gray"),
            rx.box(
                text,
                white_space="pre-wrap",
                font_family="monospace",
                font_size="12px",
                height=height,
                overflow="auto",
                padding="8px",
                border="1px solid var(--gray-a6)",
                border_radius="6px",
                width="100%",
                id="preview-text",
            ),
            spacing="1",
            width="100%",
            min_width="0",
        ),
        columns="2",
        spacing="3",
        width="100%",
    )
