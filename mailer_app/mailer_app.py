"""The Reflex app: pages, the HTTP API in front of them, and start-up.

Nothing else lives here: rules are in services/, pages in pages/.
"""

import reflex as rx

from mailer_app.api import build_api
from mailer_app.pages import (  # noqa: F401  (register routes)
    campaign_wizard,
    campaigns,
    contacts,
    home,
    login,
    preflight,
    review,
    seeds,
    senders,
    sending,
    setup,
    status,
    suppressions,
)
from mailer_app.startup import app_lifespan

app = rx.App(api_transformer=build_api())
app.register_lifespan_task(app_lifespan)
