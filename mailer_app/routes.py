"""Route paths, in one place, so links and redirects never drift apart."""

HOME = "/"
LOGIN = "/login"
SETUP = "/setup"
STATUS = "/status"
SEEDS = "/seeds"
SENDERS = "/senders"
PREFLIGHT = "/preflight"
CONTACTS = "/contacts"
SUPPRESSIONS = "/suppressions"
CAMPAIGNS = "/campaigns"
CAMPAIGN_WIZARD = "/campaigns/[cid]"
CAMPAIGN_REVIEW = "/campaigns/[cid]/review"
CAMPAIGN_SEND = "/campaigns/[cid]/send"
CAMPAIGN_REPORT = "/campaigns/[cid]/report"
DASHBOARD = "/dashboard"
ALERTS = "/alerts"
JOBS = "/jobs"


def campaign_report(campaign_id: int | str) -> str:
    """The report of one campaign: send and review counts, failures, placement, exports."""
    return f"{CAMPAIGNS}/{campaign_id}/report"


def campaign_wizard(campaign_id: int | str) -> str:
    """The wizard page of one campaign."""
    return f"{CAMPAIGNS}/{campaign_id}"


def campaign_review(campaign_id: int | str) -> str:
    """The review page of one campaign: build, check and approve every message."""
    return f"{CAMPAIGNS}/{campaign_id}/review"


def campaign_send(campaign_id: int | str) -> str:
    """The send page of one campaign: live progress, pause, resume, cancel."""
    return f"{CAMPAIGNS}/{campaign_id}/send"


# HTTP API (served by the backend next to Reflex's own endpoints).
API_HEALTH = "/health"
API_CAMPAIGN_SCHEMA = "/schemas/campaign.schema.json"
API_CONTACT_IMPORT_REPORT = "/exports/contact-imports/{import_id:int}/rejected.csv"


def contact_import_report(import_id: int) -> str:
    """The CSV of every row an import rejected (signed-in users of its workspace)."""
    return f"/exports/contact-imports/{int(import_id)}/rejected.csv"


API_METRICS = "/metrics"
API_CAMPAIGN_REPORT_CSV = "/exports/campaigns/{campaign_id:int}/report.csv"
API_CAMPAIGN_REPORT_JSON = "/exports/campaigns/{campaign_id:int}/report.json"


def campaign_report_csv(campaign_id: int) -> str:
    return f"/exports/campaigns/{int(campaign_id)}/report.csv"


def campaign_report_json(campaign_id: int) -> str:
    return f"/exports/campaigns/{int(campaign_id)}/report.json"


API_MESSAGE_EML = "/exports/messages/{message_id:int}.eml"
# The link in every message (services/unsubscribe.unsubscribe_url makes it; no sign-in).
API_UNSUBSCRIBE = "/unsubscribe/{token}"


def message_eml(message_id: int) -> str:
    """One built message as an .eml file (signed-in users of its workspace)."""
    return f"/exports/messages/{int(message_id)}.eml"
