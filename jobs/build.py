"""Build jobs: build every message of a campaign version (services.build holds the rules).

The job id is derived from the build's id, so a second enqueue of the same build is
one job, and the service's claim makes even a duplicate run harmless.
"""

from __future__ import annotations

import logging

from jobs.connection import QUEUE_BUILD, get_queue
from mailer_app.services.build import run_build

log = logging.getLogger(__name__)

# 100,000 messages take under a minute here; never let a stuck build hold a worker forever.
BUILD_TIMEOUT = 2 * 60 * 60


def build_job_id(build_id: int) -> str:
    return f"campaign-build-{build_id}"


def enqueue_build(build_id: int) -> None:
    get_queue(QUEUE_BUILD).enqueue(
        build_campaign,
        build_id,
        job_id=build_job_id(build_id),
        job_timeout=BUILD_TIMEOUT,
        description=f"build campaign messages (build {build_id})",
    )


def build_campaign(build_id: int) -> dict:
    build = run_build(build_id=build_id)
    log.info(
        "campaign build %s: %s, %s messages, %s changed, %s",
        build_id,
        build.status,
        build.done,
        build.changed,
        build.counts,
    )
    return {
        "build_id": build_id,
        "status": build.status,
        "done": build.done,
        "changed": build.changed,
        "counts": dict(build.counts or {}),
    }
