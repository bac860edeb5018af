"""GET /metrics: the Prometheus exposition of services/metrics.

Who may read it: with a `metrics_token` setting (env METRICS_TOKEN), anyone sending
`Authorization: Bearer <token>`; without one, only clients on loopback (a Prometheus
on the same host, or a scrape through `ssh -L`). Behind a reverse proxy every
client looks like loopback, so set the token there.
"""

from __future__ import annotations

import hmac
import ipaddress

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from mailer_app.services import metrics as metrics_service
from mailer_app.settings import get_settings


def metrics_token() -> str:
    """The token scrapers must send; '' when none is configured (loopback only)."""
    return str(getattr(get_settings(), "metrics_token", "") or "")


def _is_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def allowed(request: Request) -> bool:
    """Whether this request may read the metrics (see the module's docstring)."""
    token = metrics_token()
    if not token:
        return _is_loopback(request)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


async def metrics(request: Request) -> Response:
    if not allowed(request):
        return PlainTextResponse(
            "Metrics are readable from this host only, or with the metrics token.\n",
            status_code=403,
        )
    body = await run_in_threadpool(metrics_service.render_metrics)
    return Response(body, media_type=metrics_service.CONTENT_TYPE)
