"""The sending engine (services/sending.py) against a real, scriptable SMTP server and
real SQLite and PostgreSQL: every failure case of PRODUCT.md's Sending and Guarantees,
seeds spread through the send, DKIM verifying on the received message."""

from __future__ import annotations

import email
import email.policy
import os
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import select

from mailer_app.models import (
    AlertEvent,
    CampaignRun,
    CampaignStatus,
    SendAttempt,
    SendRecord,
    SendStatus,
    Source,
    Suppression,
    utcnow,
)
from mailer_app.services import attachments, campaign_status, send_records, sending
from mailer_app.services.workspaces import create_workspace
from mailer_app.settings import get_settings
from tests.lab_fixtures import mail_lab_fixture  # noqa: F401
from tests.sending_fixtures import address, campaign_of, make_campaign, records
from tests.smtp_script import smtp_script_fixture  # noqa: F401


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch):
    monkeypatch.setenv("SEND_RETRY_BASE_SECONDS", "0.2")
    monkeypatch.setenv("SEND_RETRY_CAP_SECONDS", "0.4")
    monkeypatch.setenv("PUBLIC_URL", "https://mail.example.org/")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def send(engine, run_id: int, **kwargs) -> sending.SendOutcome:
    kwargs.setdefault("budget_seconds", 20)
    return sending.send_run(run_id=run_id, worker="test-worker", engine=engine, **kwargs)


def parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def test_a_campaign_is_sent_once_to_every_recipient_and_completes(session, engine, smtp_script):
    made = make_campaign(session, engine, port=smtp_script.port, count=12)
    outcome = send(engine, made.run_id, batch_size=5)
    assert (outcome.sent, outcome.failed, outcome.unknown, outcome.stopped) == (
        12,
        0,
        0,
        "completed",
    )
    assert smtp_script.received_by_recipient() == {address(i): 1 for i in range(12)}
    assert campaign_of(session, made).status == CampaignStatus.COMPLETED
    assert "12 delivered" in campaign_of(session, made).status_reason
    run = session.get(CampaignRun, made.run_id)
    assert run.status == "completed" and run.started_at and run.finished_at
    found = records(session, made.run_id)
    assert {r.status for r in found.values()} == {SendStatus.SENT}
    one = found[address(3)]
    assert one.attempt_count == 1 and one.sent_at and one.submitted_at
    attempt = session.exec(select(SendAttempt).where(SendAttempt.send_record_id == one.id)).one()
    assert (attempt.outcome, attempt.smtp_code, attempt.worker) == ("sent", 250, "test-worker")
    message = parse(smtp_script.messages_for(address(3))[0].data)
    assert message["Message-ID"] == one.message_id
    assert message["Subject"] == "Hello P3"
    assert "unsubscribe" in message["List-Unsubscribe"]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert email.utils.parsedate_to_datetime(message["Date"]) == one.submitted_at
    # Sending again sends nothing more.
    assert send(engine, made.run_id).sent == 0
    assert sum(smtp_script.received_by_recipient().values()) == 12


def test_a_temporary_refusal_is_retried_with_backoff_then_sent(session, engine, smtp_script):
    made = make_campaign(session, engine, port=smtp_script.port, count=3)
    smtp_script.set_rule(address(1), rcpt=450, fail_times=1)
    smtp_script.set_rule(address(2), data=451, fail_times=2)
    outcome = send(engine, made.run_id)
    assert outcome.stopped == "completed"
    assert smtp_script.received_by_recipient() == {address(i): 1 for i in range(3)}
    found = records(session, made.run_id)
    assert [found[address(i)].attempt_count for i in range(3)] == [1, 2, 3]
    codes = session.exec(
        select(SendAttempt.smtp_code, SendAttempt.outcome)
        .where(SendAttempt.send_record_id == found[address(2)].id)
        .order_by(SendAttempt.id)
    ).all()
    assert codes == [(451, "retry"), (451, "retry"), (250, "sent")]


def test_a_temporary_refusal_past_the_maximum_age_fails(session, engine, smtp_script, monkeypatch):
    monkeypatch.setenv("SEND_RETRY_MAX_HOURS", str(1.5 / 3600))  # 1.5 seconds
    get_settings.cache_clear()
    made = make_campaign(session, engine, port=smtp_script.port, count=2)
    smtp_script.set_rule(address(0), rcpt=450)
    outcome = send(engine, made.run_id)
    assert outcome.stopped == "completed"
    gave_up = records(session, made.run_id)[address(0)]
    assert gave_up.status == SendStatus.FAILED
    assert gave_up.attempt_count >= 2
    assert gave_up.last_error.startswith("Gave up after") and "450" in gave_up.last_error
    assert smtp_script.received_by_recipient() == {address(1): 1}


def test_a_permanent_refusal_fails_at_once_and_a_bad_mailbox_is_suppressed(
    session, engine, smtp_script
):
    made = make_campaign(session, engine, port=smtp_script.port, count=3)
    smtp_script.set_rule(address(0), rcpt=550)  # 5.1.1 no such user
    smtp_script.set_rule(address(1), data=552)  # 5.x storage: not the address's fault
    outcome = send(engine, made.run_id)
    assert (outcome.sent, outcome.failed) == (1, 2)
    found = records(session, made.run_id)
    assert found[address(0)].status == found[address(1)].status == SendStatus.FAILED
    assert found[address(0)].attempt_count == 1 == found[address(1)].attempt_count
    assert "550" in found[address(0)].last_error
    suppressed = session.exec(
        select(Suppression.email, Suppression.reason).where(
            Suppression.workspace_id == made.workspace_id
        )
    ).all()
    assert suppressed == [(address(0), "hard_bounce")]
    assert len(smtp_script.attempts_for(address(0))) == 1  # never tried again


def test_lost_before_the_final_dot_is_retried(session, engine, smtp_script):
    """The server cuts the connection while the body is still arriving. The message is
    big (6 MB of attachment), so the client is still writing when the cut reaches it:
    the final "." never left, nothing can have been accepted, it is tried again."""
    workspace = create_workspace(session=session, name="Big", source=Source.CLI)
    root = attachments.attachments_root(workspace_id=workspace.id)
    (root / "big.bin").write_bytes(os.urandom(6_000_000))
    made = make_campaign(
        session, engine, port=smtp_script.port, count=2, workspace_id=workspace.id,
        attachment_rules={"pattern": "big.bin", "zip": False},
    )  # fmt: skip
    smtp_script.set_rule(address(1), drop_before_dot=True, fail_times=1)
    outcome = send(engine, made.run_id)
    assert outcome.stopped == "completed"
    found = records(session, made.run_id)
    assert found[address(1)].status == SendStatus.SENT and found[address(1)].attempt_count == 2
    assert found[address(1)].last_error is None
    assert smtp_script.received_by_recipient() == {address(0): 1, address(1): 1}


def test_lost_after_the_final_dot_is_unknown_and_never_retried(session, engine, smtp_script):
    made = make_campaign(session, engine, port=smtp_script.port, count=4)
    smtp_script.set_rule(address(2), drop_after_dot=True)
    outcome = send(engine, made.run_id)
    assert outcome.stopped == "completed"
    found = records(session, made.run_id)
    assert found[address(2)].status == SendStatus.UNKNOWN
    assert "not sent again automatically" in found[address(2)].last_error
    # The server got address 2's message once (the client cannot know): never twice.
    assert smtp_script.received_by_recipient() == {address(i): 1 for i in range(4)}
    assert smtp_script.attempts_for(address(2)) == [("rcpt", 250), ("drop_after_dot", None)]


def test_no_answer_after_the_final_dot_is_unknown(session, engine, smtp_script, monkeypatch):
    monkeypatch.setattr(sending, "SEND_TIMEOUT", 1.0)
    made = make_campaign(session, engine, port=smtp_script.port, count=3)
    smtp_script.set_rule(address(0), hang_after_dot=True)
    outcome = send(engine, made.run_id)
    assert (outcome.sent, outcome.unknown, outcome.stopped) == (2, 1, "completed")
    assert records(session, made.run_id)[address(0)].status == SendStatus.UNKNOWN


def test_refused_credentials_pause_the_campaign_once_with_the_reason(session, engine, smtp_script):
    from mailer_app.services import secrets as secret_store

    smtp_script.configure(username="news@example.com", password="right")
    made = make_campaign(session, engine, port=smtp_script.port, count=5, queue=False)
    ref = secret_store.store_secret(
        session=session,
        workspace_id=made.workspace_id,
        kind="smtp_password",
        value="wrong",
        source=Source.CLI,
    )
    session.execute(
        sa.text("UPDATE sender_account SET smtp_username='news@example.com', credential_ref=:r "
                "WHERE id=:i"),
        {"r": ref, "i": made.sender_id},
    )  # fmt: skip
    session.commit()
    from tests.sending_fixtures import queue_it

    queue_it(session, made)
    outcome = send(engine, made.run_id)
    assert outcome.stopped == "auth_failed"
    campaign = campaign_of(session, made)
    assert campaign.status == CampaignStatus.PAUSED
    assert "refused the sender account's password" in campaign.status_reason
    assert "wrong" not in campaign.status_reason
    assert smtp_script.received == []
    logins = len(smtp_script.auth_attempts)
    assert 1 <= logins <= 2  # one login (aiosmtplib tries PLAIN then LOGIN): no retry storm
    assert {r.status for r in records(session, made.run_id).values()} == {SendStatus.QUEUED}
    # A second job finds the campaign paused and does nothing at all.
    assert send(engine, made.run_id).stopped == CampaignStatus.PAUSED
    assert len(smtp_script.auth_attempts) == logins
    alerts = session.exec(
        select(AlertEvent).where(AlertEvent.workspace_id == made.workspace_id)
    ).all()
    assert [a.kind for a in alerts] == ["sender_auth_failed"]


def test_pause_stops_a_send_within_a_second_and_resume_sends_the_rest_once(
    session, engine, smtp_script
):
    import threading
    import time

    smtp_script.configure(delay=0.05)
    made = make_campaign(session, engine, port=smtp_script.port, count=60)
    result = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("outcome", send(engine, made.run_id, batch_size=100))
    )
    thread.start()
    smtp_script.wait_for_received(5, timeout=10)
    campaign_status.transition(session=session, campaign=campaign_of(session, made), to="paused")
    session.commit()
    paused_at = time.monotonic()
    thread.join(timeout=10)
    assert time.monotonic() - paused_at < 1.6
    assert result["outcome"].stopped == CampaignStatus.PAUSED
    got = sum(smtp_script.received_by_recipient().values())
    assert 5 <= got < 60
    counts = send_records.run_counters(
        session=session, workspace_id=made.workspace_id, run_id=made.run_id
    )
    assert counts.sending == 0 and counts.queued == 60 - got  # the claim was given back
    time.sleep(0.3)
    assert sum(smtp_script.received_by_recipient().values()) == got  # nothing while paused
    campaign_status.transition(session=session, campaign=campaign_of(session, made), to="sending")
    session.commit()
    smtp_script.configure(delay=0)
    assert send(engine, made.run_id).stopped == "completed"
    assert smtp_script.received_by_recipient() == {address(i): 1 for i in range(60)}


def test_cancel_leaves_the_rest_unsent(session, engine, smtp_script):
    made = make_campaign(session, engine, port=smtp_script.port, count=5)
    campaign_status.transition(session=session, campaign=campaign_of(session, made), to="cancelled")
    session.commit()
    assert send(engine, made.run_id).stopped == CampaignStatus.CANCELLED
    assert smtp_script.received == []
    assert {r.status for r in records(session, made.run_id).values()} == {SendStatus.QUEUED}


def test_a_worker_that_died_leaves_at_most_its_message_in_flight_unknown(
    session, engine, smtp_script
):
    """What a SIGKILL leaves, written directly: a claimed batch with one record stamped
    as handed over. The reconciler makes that one unknown and queues the rest again."""
    made = make_campaign(session, engine, port=smtp_script.port, count=6)
    claimed = send_records.claim_batch(
        engine_or_session=engine, run_id=made.run_id, worker="dead", limit=4
    )
    long_ago = utcnow() - timedelta(hours=1)
    table = SendRecord.__table__
    session.execute(sa.update(table).where(table.c.id.in_(claimed)).values(claimed_at=long_ago))
    session.execute(sa.update(table).where(table.c.id == claimed[1]).values(submitted_at=long_ago))
    session.commit()
    result = send_records.reconcile(session=session, stuck_after=timedelta(minutes=5))
    session.commit()
    assert result.unknown_ids == [claimed[1]] and len(result.requeued_ids) == 3
    assert send(engine, made.run_id).stopped == "completed"
    found = records(session, made.run_id)
    unknown = [e for e, r in found.items() if r.status == SendStatus.UNKNOWN]
    assert len(unknown) == 1
    assert smtp_script.received_by_recipient() == {
        address(i): 1 for i in range(6) if address(i) not in unknown
    }


def test_a_dkim_signed_send_verifies_at_the_server(session, engine, smtp_script):
    import dkim

    from mailer_app.mail.dkim import generate_key
    from mailer_app.services import senders
    from tests.integration.test_dkim import dnsfunc_for

    made = make_campaign(session, engine, port=smtp_script.port, count=2, queue=False)
    senders.set_dkim_key(
        session=session, workspace_id=made.workspace_id, sender_id=made.sender_id,
        domain="example.com", selector="mail", private_key_pem=generate_key("rsa", 1024),
        user_id=None, source=Source.CLI,
    )  # fmt: skip
    session.commit()
    record = senders.dkim_dns_record(
        session=session, workspace_id=made.workspace_id, sender_id=made.sender_id
    )
    from tests.sending_fixtures import queue_it

    queue_it(session, made)
    assert send(engine, made.run_id).sent == 2
    received = smtp_script.messages_for(address(1))[0].data
    assert received.startswith(b"DKIM-Signature:")
    assert dkim.verify(received, dnsfunc=dnsfunc_for(record))
    assert not dkim.verify(received.replace(b"Hello P1", b"Hello P9"), dnsfunc=dnsfunc_for(record))


# --- seeds inside the send ---------------------------------------------------------------------


def test_seeds_get_their_own_copies_spread_through_the_send_and_are_checked(
    session, engine, mail_lab, monkeypatch
):
    """A campaign with a seed list, sent through the lab: each seed's copy goes out in
    the first, middle or last part of the send, its placement checks are scheduled from
    its own sent_at, and the checks find every copy in the seed's mailbox."""
    from mailer_app.models import (
        PlacementResult,
        PlacementRun,
        SeedAccount,
        SeedList,
        SeedListMember,
        TransportSecurity,
    )
    from mailer_app.services import placement
    from mailer_app.services import secrets as secret_store

    scheduled = []
    monkeypatch.setattr(
        placement, "schedule_checks",
        lambda run_id, due, group=None: scheduled.append((run_id, due, group)),
    )  # fmt: skip
    workspace = create_workspace(session=session, name="Seeded", source=Source.CLI)
    seed_list = SeedList(workspace_id=workspace.id, name="Panel")
    session.add(seed_list)
    session.flush()
    seeds = []
    for domain in ("gmail.lab", "outlook.lab", "yahoo.lab"):
        box = mail_lab.add_account(domain)
        ref = secret_store.store_secret(
            session=session, workspace_id=workspace.id, value=box.password, kind="password",
            source=Source.LAB,
        )  # fmt: skip
        seed = SeedAccount(
            workspace_id=workspace.id, email=box.email, esp=domain.split(".")[0],
            imap_host="127.0.0.1", imap_port=mail_lab.imap_port,
            imap_security=TransportSecurity.PLAIN, imap_username=box.email, credential_ref=ref,
            source=Source.LAB,
        )  # fmt: skip
        session.add(seed)
        session.flush()
        session.add(
            SeedListMember(workspace_id=workspace.id, seed_list_id=seed_list.id, seed_id=seed.id)
        )
        seeds.append(seed)
    session.commit()
    made = make_campaign(
        session, engine, port=mail_lab.smtp_port, count=30, workspace_id=workspace.id,
        seed_list_id=seed_list.id,
    )  # fmt: skip
    found = records(session, made.run_id)
    seed_records = sorted((r.id, e) for e, r in found.items() if r.is_seed)
    message_ids = sorted(r.id for r in found.values() if not r.is_seed)
    assert len(seed_records) == 3 and len(message_ids) == 30
    # First, middle and last: one before every message, one among them, one after.
    assert seed_records[0][0] < message_ids[0]
    assert message_ids[0] < seed_records[1][0] < message_ids[-1]
    assert seed_records[2][0] > message_ids[-1]
    prun = session.exec(
        select(PlacementRun).where(PlacementRun.campaign_run_id == made.run_id)
    ).one()
    session.execute(
        sa.update(PlacementRun)
        .where(PlacementRun.id == prun.id)
        .values(check_offsets_min=[0.02, 0.04])
    )
    session.commit()

    outcome = send(engine, made.run_id, batch_size=8)
    assert outcome.stopped == "completed" and outcome.sent == 33
    results = session.exec(select(PlacementResult).where(PlacementResult.run_id == prun.id)).all()
    assert all(r.sent_at is not None and r.message_id for r in results)
    by_token = {r.token: r for r in results}
    # Each group of seeds sent in one batch got its own checks, from its own send time.
    groups = {group for _, _, group in scheduled}
    assert len(groups) == 3 and all(run_id == prun.id for run_id, _, _ in scheduled)
    for _, due, _ in scheduled:
        assert [index for index, _ in due] == [0, 1]
    # The copies carry the token and are the campaign's message (not a [TEST]).
    time.sleep(2.5)  # past the last seed's final offset (2.4 s)
    for index in (0, 1):
        placement.check_run(
            run_id=prun.id, check_index=index, due_only=True, retry_window_seconds=2
        )
    session.expire_all()
    results = session.exec(select(PlacementResult).where(PlacementResult.run_id == prun.id)).all()
    assert {r.placement for r in results} <= {"inbox", "spam", "promotions"}
    assert len(by_token) == 3
    assert session.get(PlacementRun, prun.id).status == "completed"


def test_a_person_may_choose_to_send_the_unknown_ones_again(session, engine, smtp_script):
    from mailer_app.models import AuditEntry
    from mailer_app.services import send_control

    made = make_campaign(session, engine, port=smtp_script.port, count=3)
    smtp_script.set_rule(address(1), drop_after_dot=True, fail_times=1)
    assert send(engine, made.run_id).stopped == "completed"
    assert records(session, made.run_id)[address(1)].status == SendStatus.UNKNOWN
    # The app alone never sends it again: another job finds nothing to do.
    assert send(engine, made.run_id).sent == 0
    queued = send_control.resend_unknown(
        session=session, workspace_id=made.workspace_id, campaign_id=made.campaign_id,
        user_id=None, source=Source.CLI,
    )  # fmt: skip
    session.commit()
    assert queued == 1
    assert campaign_of(session, made).status == CampaignStatus.SENDING
    assert send(engine, made.run_id).stopped == "completed"
    again = records(session, made.run_id)[address(1)]
    assert again.status == SendStatus.SENT and again.attempt_count == 2
    # The person was told it could arrive twice; here it did (the first copy got through).
    assert smtp_script.received_by_recipient()[address(1)] == 2
    assert campaign_of(session, made).status == CampaignStatus.COMPLETED
    entry = session.exec(
        select(AuditEntry).where(AuditEntry.action == "campaign.resend_unknown")
    ).one()
    assert entry.details["records"] == [again.id]
    # Nothing unknown is left: a second request queues nothing.
    assert send_control.resend_unknown(
        session=session, workspace_id=made.workspace_id, campaign_id=made.campaign_id,
        user_id=None, source=Source.CLI,
    ) == 0  # fmt: skip
