"""The Reflex app: pages, the HTTP API in front of them, and start-up.

Nothing else lives here: rules are in services/, pages in pages/.
"""

import reflex as rx

from mailer_app import routes
from mailer_app.api import build_api
from mailer_app.api.metrics import metrics
from mailer_app.pages import (  # noqa: F401  (register routes)
    alerts,
    campaign_wizard,
    campaigns,
    contacts,
    dashboard,
    home,
    jobs,
    login,
    preflight,
    report,
    review,
    seeds,
    senders,
    sending,
    setup,
    status,
    suppressions,
)
from mailer_app.startup import app_lifespan

api = build_api()
api.router.add_route(routes.API_METRICS, metrics, methods=["GET"])
app = rx.App(api_transformer=api)
app.register_lifespan_task(app_lifespan)
