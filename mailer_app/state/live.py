"""Live pages: background refresh loops stop when their browser tab goes away."""

from __future__ import annotations


def client_connected(token: str) -> bool:
    """Whether the browser tab behind a state's client token is still connected."""
    from mailer_app.mailer_app import app

    namespace = app.event_namespace
    return bool(namespace) and token in namespace.token_to_sid
