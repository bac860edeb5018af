"""Contact jobs: import an uploaded CSV into a contact list.

A thin wrapper over mailer_app.services.contact_import, which holds every rule.
The job id is derived from the import's id, so a second enqueue of the same import
is one job, and the service's claim makes even a duplicate run harmless.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from jobs.connection import QUEUE_BUILD, get_queue
from mailer_app.services.contact_import import run_contact_import

log = logging.getLogger(__name__)

# A million rows take a couple of minutes; never let a stuck import hold a worker forever.
IMPORT_TIMEOUT = 60 * 60


def import_job_id(import_id: int) -> str:
    return f"contact-import-{import_id}"


def enqueue_import(import_id: int) -> None:
    # The build queue: a person is watching the progress bar.
    get_queue(QUEUE_BUILD).enqueue(
        import_contacts,
        import_id,
        job_id=import_job_id(import_id),
        job_timeout=IMPORT_TIMEOUT,
        description=f"import contacts (import {import_id})",
    )


def import_contacts(import_id: int) -> dict:
    outcome = run_contact_import(import_id=import_id)
    log.info(
        "contact import %s: %s, %s rows, %s imported (%s updated), %s rejected",
        import_id,
        outcome.status,
        outcome.rows_total,
        outcome.rows_imported,
        outcome.rows_updated,
        outcome.rows_rejected,
    )
    return asdict(outcome)
