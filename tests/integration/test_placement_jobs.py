"""A placement run end to end through real processes: RQ worker, rq-scheduler, Redis,
the lab's SMTP intake and Dovecot, with the check offsets scaled down to seconds."""

from __future__ import annotations

import threading
import time

import pytest
from sqlmodel import Session, select

from jobs import connection
from jobs.placement import check_job_id, schedule_checks
from mailer_app.db import session_scope
from mailer_app.mail.seed_copy import SeedContent
from mailer_app.models import (
    Placement,
    PlacementCheck,
    PlacementResult,
    PlacementRun,
    SeedAccount,
    SenderAccount,
    Source,
    TransportSecurity,
    Workspace,
    utcnow,
)
from mailer_app.services import placement
from mailer_app.services import secrets as secret_store
from tests.conftest import wait_until
from tests.lab_fixtures import mail_lab_fixture  # noqa: F401

SCHEDULED_JOBS = "rq:scheduler:scheduled_jobs"


@pytest.fixture(autouse=True)
def _fresh_clients():
    connection.close_redis()
    yield
    connection.close_redis()


def _workspace_with_seeds(session: Session, mail_lab, domains: list[str]):
    workspace = Workspace(name="Jobs", slug=f"jobs-{time.monotonic_ns()}")
    session.add(workspace)
    session.flush()
    sender = SenderAccount(
        workspace_id=workspace.id, name="Lab", from_email="news@sender.lab",
        smtp_host="127.0.0.1", smtp_port=mail_lab.smtp_port,
        smtp_security=TransportSecurity.PLAIN,
    )  # fmt: skip
    session.add(sender)
    seeds = []
    for domain in domains:
        box = mail_lab.add_account(domain)
        ref = secret_store.store_secret(
            session=session, workspace_id=workspace.id, value=box.password,
            kind="password", source=Source.LAB,
        )  # fmt: skip
        seed = SeedAccount(
            workspace_id=workspace.id, email=box.email, imap_host="127.0.0.1",
            imap_port=mail_lab.imap_port, imap_security="plain", imap_username=box.email,
            credential_ref=ref,
        )  # fmt: skip
        session.add(seed)
        seeds.append(seed)
    session.commit()
    return workspace, sender, seeds


def test_a_run_goes_from_trigger_to_results_through_worker_and_scheduler(
    session, mail_lab, spawn, db_url
):
    workspace, sender, seeds = _workspace_with_seeds(
        session, mail_lab, ["gmail.lab", "outlook.lab", "yahoo.lab", "legacy.lab"]
    )
    env = {"DATABASE_URL": db_url}
    spawn("jobs.worker", "placement", "--simple", env=env)
    spawn("jobs.scheduler", "--interval", "0.2", env=env)

    with session_scope() as tx:
        # Promotions at gmail.lab; the other providers have no such tab (inbox).
        run = placement.trigger_placement_run(
            session=tx,
            workspace_id=workspace.id,
            seed_ids=[s.id for s in seeds],
            content=SeedContent(subject="Big sale [lab:promo]", html_body="", text_body="Hi"),
            sender_account_id=sender.id,
            idempotency_key="e2e-run",
            check_offsets_min=[0.02, 0.04, 0.06],
        )
        run_id = run.id

    def completed():
        session.expire_all()
        return session.get(PlacementRun, run_id).status == placement.RUN_COMPLETED

    wait_until(completed, 40, "the run to complete")
    results = session.exec(select(PlacementResult).where(PlacementResult.run_id == run_id)).all()
    by_email = {
        session.get(SeedAccount, r.seed_id).email.split("@")[1]: r.placement for r in results
    }
    assert by_email == {
        "gmail.lab": Placement.PROMOTIONS,
        "outlook.lab": Placement.INBOX,
        "yahoo.lab": Placement.INBOX,
        "legacy.lab": Placement.INBOX,
    }
    # Found at the first check: nothing scheduled later looked again.
    checks = session.exec(select(PlacementCheck)).all()
    assert len(checks) == 4 and {c.attempt for c in checks} == {1}


def test_a_dropped_copy_becomes_missing_only_after_the_scheduled_final_check(
    session, mail_lab, spawn, db_url
):
    workspace, sender, seeds = _workspace_with_seeds(session, mail_lab, ["yahoo.lab"])
    env = {"DATABASE_URL": db_url}
    spawn("jobs.worker", "placement", "--simple", env=env)
    spawn("jobs.scheduler", "--interval", "0.2", env=env)
    with session_scope() as tx:
        run_id = placement.trigger_placement_run(
            session=tx,
            workspace_id=workspace.id,
            seed_ids=[seeds[0].id],
            content=SeedContent(subject="Lost [lab:drop]", html_body="", text_body="Hi"),
            sender_account_id=sender.id,
            idempotency_key="e2e-missing",
            check_offsets_min=[0.02, 0.04, 0.06],
        ).id

    def result():
        session.expire_all()
        return session.exec(select(PlacementResult).where(PlacementResult.run_id == run_id)).one()

    wait_until(lambda: result().attempts >= 1, 30, "the first check")
    if result().attempts < 3:
        assert result().placement == Placement.PENDING
    wait_until(lambda: result().placement != Placement.PENDING, 30, "the final check")
    final = result()
    assert (final.placement, final.attempts) == (Placement.MISSING, 3)


def test_scheduling_the_same_checks_twice_keeps_one_job_each(redis_url):
    due = [(0, utcnow()), (1, utcnow())]
    threads = [threading.Thread(target=schedule_checks, args=(41, due)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    scheduled = {m.decode() for m in connection.get_redis().zrange(SCHEDULED_JOBS, 0, -1)}
    assert scheduled == {check_job_id(41, 0), check_job_id(41, 1)}
