"""Is every part of the system up? Used by /health, the status page and tests.

Each check is short (sub-second timeouts) and never raises: a failure becomes a
component that is "down" with a reason a person can act on.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import sqlalchemy as sa

from mailer_app.settings import Settings

UP, DOWN, OFF = "up", "down", "off"


@dataclass(frozen=True)
class ComponentHealth:
    name: str
    state: str  # up, down, off (not used in this environment)
    detail: str
    latency_ms: float | None = None


def _timed(name: str, check) -> ComponentHealth:
    started = time.perf_counter()
    try:
        state, detail = check()
    except Exception as exc:  # a health check reports, it never raises
        state, detail = DOWN, _plain_error(name, exc)
    return ComponentHealth(name, state, detail, round((time.perf_counter() - started) * 1000, 1))


def _plain_error(name: str, exc: Exception) -> str:
    """Say what is wrong in words first; keep the technical reason after it."""
    import redis

    from mailer_app.logs import redact

    if isinstance(exc, redis.exceptions.ConnectionError):
        if name == "redis":
            lead = "cannot reach Redis (is it running? in development `./dev run` starts it)"
        else:
            lead = "cannot be checked while Redis is unreachable"
    elif isinstance(exc, sa.exc.OperationalError):
        lead = "cannot reach the database (check DATABASE_URL)"
    else:
        lead = "check failed"
    return f"{lead}: {redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}"


def check_database() -> tuple[str, str]:
    from mailer_app.db import get_engine, schema_revisions

    engine = get_engine()
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    current, head = schema_revisions(str(engine.url.render_as_string(hide_password=False)))
    if current != head:
        return DOWN, f"schema at {current or 'none'}, code needs {head}: run migrate"
    return UP, f"{engine.dialect.name}, schema {current}"


def _redis_client(settings: Settings):
    import redis

    # No retries: a health check must answer in about a second, not after backoff.
    return redis.Redis.from_url(
        settings.resolved_redis_url(), socket_timeout=1, socket_connect_timeout=1, retry=None
    )


def check_redis(settings: Settings) -> tuple[str, str]:
    client = _redis_client(settings)
    try:
        client.ping()
        version = client.info("server").get("redis_version", "?")
    finally:
        client.close()
    return UP, f"redis {version}"


def check_workers(settings: Settings) -> tuple[str, str]:
    from jobs.health import workers_alive

    client = _redis_client(settings)
    try:
        workers = workers_alive(client)
    finally:
        client.close()
    if not workers:
        return DOWN, "no worker is running: start `python -m jobs.worker`"
    return UP, f"{len(workers)} worker(s): " + ", ".join(w["name"] for w in workers)


def check_scheduler(settings: Settings) -> tuple[str, str]:
    from jobs.health import scheduler_alive

    client = _redis_client(settings)
    try:
        alive = scheduler_alive(client)
    finally:
        client.close()
    if not alive:
        return DOWN, "the scheduler is not running: start `python -m jobs.scheduler`"
    return UP, "scheduling timed checks"


def check_lab(settings: Settings) -> tuple[str, str]:
    if not settings.is_dev:
        return OFF, "the local mail lab runs in development only"
    if not settings.lab_enabled:
        return OFF, "disabled by MAILER_LAB=0"
    from mailer_app.lab import lab_status

    status = lab_status(settings)
    smtp, imap = status.get("smtp", DOWN), status.get("imap", DOWN)
    detail = (
        f"SMTP 127.0.0.1:{settings.lab_smtp_port} {smtp}; "
        f"IMAP 127.0.0.1:{settings.lab_imap_port} {imap}"
    )
    if smtp == UP and imap == UP:
        return UP, detail
    if smtp == UP and str(imap).startswith(OFF):
        return OFF, detail
    return DOWN, detail


def system_health(settings: Settings) -> dict:
    """Every component's state, and "ok" only when none is down."""
    components = [
        _timed("database", check_database),
        _timed("redis", lambda: check_redis(settings)),
        _timed("worker", lambda: check_workers(settings)),
        _timed("scheduler", lambda: check_scheduler(settings)),
        _timed("lab", lambda: check_lab(settings)),
    ]
    ok = all(c.state != DOWN for c in components)
    return {
        "status": "ok" if ok else "degraded",
        "environment": str(settings.environment),
        "components": {c.name: asdict(c) for c in components},
    }
