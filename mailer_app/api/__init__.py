"""The HTTP API, mounted in front of Reflex's own routes (see mailer_app.py)."""

from starlette.applications import Starlette
from starlette.routing import Route

from mailer_app import routes
from mailer_app.api.contacts import contact_import_report
from mailer_app.api.health import health
from mailer_app.api.messages import message_eml
from mailer_app.api.reports import campaign_report_csv, campaign_report_json
from mailer_app.api.schemas import campaign_schema
from mailer_app.api.unsubscribe import unsubscribe_page, unsubscribe_post


def build_api() -> Starlette:
    return Starlette(
        routes=[
            Route(routes.API_HEALTH, health, methods=["GET"]),
            Route(routes.API_CAMPAIGN_SCHEMA, campaign_schema, methods=["GET"]),
            Route(routes.API_CONTACT_IMPORT_REPORT, contact_import_report, methods=["GET"]),
            Route(routes.API_MESSAGE_EML, message_eml, methods=["GET"]),
            Route(routes.API_CAMPAIGN_REPORT_CSV, campaign_report_csv, methods=["GET"]),
            Route(routes.API_CAMPAIGN_REPORT_JSON, campaign_report_json, methods=["GET"]),
            Route(routes.API_UNSUBSCRIBE, unsubscribe_page, methods=["GET"]),
            Route(routes.API_UNSUBSCRIBE, unsubscribe_post, methods=["POST"]),
        ]
    )
