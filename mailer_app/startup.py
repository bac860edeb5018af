"""What the web backend does when it starts, in development and in production.

- Both: logging with secret redaction.
- Development: migrate the database, start (once) the supervisor that runs Redis,
  the worker, the scheduler and the mail lab next to `reflex run`, and make sure
  the demo seeds exist in the lab.
- Production: refuse to start on an outdated schema, naming the command to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mailer_app.db import ensure_schema
from mailer_app.logs import setup_logging
from mailer_app.settings import get_settings

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def app_lifespan():
    settings = get_settings()
    setup_logging()
    # Key problems must stop start-up with their message, not surface on first use.
    settings.master_keys()
    await asyncio.to_thread(ensure_schema, migrate=settings.is_dev)
    if settings.is_dev and settings.supervise:
        from mailer_app.runtime.supervisor import ensure_supervisor, find_watch_pid

        await asyncio.to_thread(ensure_supervisor, settings, find_watch_pid())
    if settings.is_dev and settings.lab_enabled:
        from mailer_app.services import demo

        await asyncio.to_thread(demo.ensure_demo_data_for_all_workspaces_safely, settings=settings)
    log.info("mailer_app started (%s)", settings.environment)
    yield
