"""Route paths, in one place, so links and redirects never drift apart."""

HOME = "/"
LOGIN = "/login"
SETUP = "/setup"
STATUS = "/status"
SEEDS = "/seeds"
SENDERS = "/senders"
PREFLIGHT = "/preflight"

# HTTP API (served by the backend next to Reflex's own endpoints).
API_HEALTH = "/health"
