"""Reflex configuration. Every value comes from mailer_app.settings (environment)."""

import reflex as rx

from mailer_app.settings import get_settings

_settings = get_settings()

config = rx.Config(
    app_name="mailer_app",
    db_url=_settings.resolved_database_url(),
    telemetry_enabled=False,  # it would try to reach the internet
    show_built_with_reflex=False,
    plugins=[rx.plugins.RadixThemesPlugin(theme=rx.theme(accent_color="indigo", radius="medium"))],
    disable_plugins=["reflex_base.plugins.sitemap.SitemapPlugin"],
)
