"""GET /health: database, Redis, workers, scheduler and lab, as JSON.

200 when nothing is down, 503 otherwise, so load balancers and scripts can use it.
"""

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from mailer_app.services.health import system_health
from mailer_app.settings import get_settings


async def health(_request: Request) -> JSONResponse:
    report = await run_in_threadpool(system_health, get_settings())
    return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)
