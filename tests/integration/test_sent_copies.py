"""Copies of sent campaign messages in the sender's Sent folder, against the lab's real
Dovecot, on SQLite and PostgreSQL: one copy per sent record, byte for byte what it was
sent with, read, dated when it went out; queued and failed records never copied;
nothing copied twice; paging; a refused copy fails alone; a mailbox that cannot be
used leaves the records pending with a plain reason (and never touches the send's
status) until the last try gives up; and the job through a real RQ worker."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import dkim
import pytest
import sqlalchemy as sa
from sqlmodel import select

from jobs import append as append_jobs
from mailer_app.mail.dkim import generate_key
from mailer_app.mail.imap_append import message_date
from mailer_app.models import AppendStatus, SenderAccount, SendRecord, SendStatus, Source
from mailer_app.services import outgoing, send_records, senders, sent_copies
from mailer_app.services import secrets as secret_store
from tests.conftest import free_port, wait_until
from tests.imap_proxy import ImapProxy
from tests.integration.test_build import ws  # noqa: F401  (the build fixture)
from tests.integration.test_send_records import approved, queue  # noqa: F401
from tests.lab_fixtures import mail_lab_fixture  # noqa: F401

T0 = dt.datetime(2024, 1, 2, 10, 0, 0, tzinfo=dt.UTC)
WORKER = "test-worker"


@dataclass
class Run:
    id: int
    workspace_id: int
    sender_id: int
    box: object  # the lab mailbox behind the sender account
    sent: list[int] = field(default_factory=list)  # oldest first
    failed: list[int] = field(default_factory=list)
    queued: list[int] = field(default_factory=list)
    folder: str = "Sent Items"

    @property
    def info(self) -> dict:
        return {"workspace_id": self.workspace_id, "sender_id": self.sender_id}


def give_mailbox(session, info, mail_lab, box, **changes) -> None:
    """The sender account reads `box` on the lab's Dovecot (through the service)."""
    sender = session.get(SenderAccount, info["sender_id"])
    values = {
        key: getattr(sender, key)
        for key in ("name", "from_email", "from_name", "reply_to", "smtp_host", "smtp_port",
                    "smtp_security", "smtp_username")
    }  # fmt: skip
    values |= {"imap_host": "127.0.0.1", "imap_port": mail_lab.imap_port,
               "imap_security": "plain", "imap_username": box.email,
               "imap_password": box.password} | changes  # fmt: skip
    senders.update_sender(
        session=session, workspace_id=info["workspace_id"], sender_id=sender.id, user_id=None,
        source=Source.CLI, **values,
    )  # fmt: skip
    session.commit()


def send(session, engine, run: Run, *, sent: int, failed: int) -> None:
    """Claim `sent + failed` records and move them as the sender would; the rest stay
    queued. Sent record i was submitted at T0 + i hours."""
    ids = send_records.claim_batch(
        engine_or_session=engine, run_id=run.id, worker=WORKER, limit=sent + failed
    )
    for i, record_id in enumerate(ids[:sent]):
        at = T0 + dt.timedelta(hours=i)
        assert send_records.mark_submitted(session, record_id=record_id, worker=WORKER, at=at)
        send_records.mark(session=session, record_id=record_id, to=SendStatus.SENT,
                          sent_at=at + dt.timedelta(seconds=1))  # fmt: skip
        run.sent.append(record_id)
    for record_id in ids[sent:]:
        send_records.mark(session=session, record_id=record_id, to=SendStatus.FAILED,
                          error="550 5.1.1 no such user")  # fmt: skip
        run.failed.append(record_id)
    session.commit()
    every = session.exec(select(SendRecord.id).where(SendRecord.run_id == run.id)).all()
    run.queued = sorted(set(every) - set(run.sent) - set(run.failed))


@pytest.fixture
def run(session, engine, approved, mail_lab) -> Run:  # noqa: F811
    """A queued run of the build fixture's 4 sendable messages whose sender account has
    a mailbox on the lab (an outlook.lab account: "Sent Items", flagged \\Sent): 2 sent,
    1 failed, 1 still queued."""
    box = mail_lab.add_account("outlook.lab")
    give_mailbox(session, approved, mail_lab, box)
    campaign_run = queue(session, approved)
    found = Run(campaign_run.id, approved["workspace_id"], approved["sender_id"], box)
    assert {r.append_status for r in records(session, found).values()} == {"pending"}
    send(session, engine, found, sent=2, failed=1)
    return found


def records(session, run: Run) -> dict[int, SendRecord]:
    session.expire_all()
    found = session.exec(select(SendRecord).where(SendRecord.run_id == run.id)).all()
    return {r.id: r for r in found}


def send_owned(record: SendRecord) -> tuple:
    """What the send owns on a record: appending must never change any of it."""
    return (record.status, record.sent_at, record.submitted_at, record.last_error,
            record.attempt_count, record.claimed_by, record.message_id)  # fmt: skip


def stored(mail_lab, box, folder: str) -> list[dict]:
    """Every message in `folder`, oldest UID first: flags, internal date, bytes."""
    with mail_lab.imap(box) as client:
        client.normalise_times = False
        client.select_folder(folder, readonly=True)
        uids = sorted(client.search("ALL"))
        fetched = client.fetch(uids, ["FLAGS", "INTERNALDATE", "BODY.PEEK[]"]) if uids else {}
        return [fetched[uid] for uid in uids]


def expected_bytes(session, record_ids: list[int]) -> list[bytes]:
    session.expire_all()
    return [
        outgoing.record_message(session=session, record=session.get(SendRecord, i))
        for i in record_ids
    ]


# --- copies --------------------------------------------------------------------------------


def test_each_sent_message_is_copied_once_exactly_as_sent_and_read(session, run, mail_lab):
    before = {i: send_owned(r) for i, r in records(session, run).items()}
    assert sent_copies.pending_runs() == [run.id]

    outcome = sent_copies.append_pending(run_id=run.id)
    assert outcome == sent_copies.AppendOutcome(appended=2, failed=0, left=0, error=None)

    copies = stored(mail_lab, run.box, run.folder)
    wanted = expected_bytes(session, run.sent)
    assert [c[b"BODY[]"] for c in copies] == wanted  # byte for byte, oldest first
    assert all(b"\\Seen" in c[b"FLAGS"] for c in copies)
    for copy, data, hours in zip(copies, wanted, (0, 1), strict=True):
        assert message_date(data) == T0 + dt.timedelta(hours=hours)
        assert copy[b"INTERNALDATE"] == T0 + dt.timedelta(hours=hours)
    # Nothing else in the mailbox got a copy.
    assert stored(mail_lab, run.box, "INBOX") == []

    after = records(session, run)
    for record_id in run.sent:
        assert (after[record_id].append_status, after[record_id].append_error) == (
            AppendStatus.APPENDED, None,
        )  # fmt: skip
    for record_id in run.failed + run.queued:  # never sent: never copied
        assert after[record_id].append_status == AppendStatus.PENDING
    assert {i: send_owned(r) for i, r in after.items()} == before
    assert sent_copies.pending_runs() == []

    # Again: nothing more is copied.
    assert sent_copies.append_pending(run_id=run.id) == sent_copies.AppendOutcome()
    assert len(stored(mail_lab, run.box, run.folder)) == 2


def test_records_sent_later_are_copied_by_the_next_call(session, engine, run, mail_lab):
    sent_copies.append_pending(run_id=run.id)
    late = Run(run.id, run.workspace_id, run.sender_id, run.box)
    send(session, engine, late, sent=1, failed=0)  # the last queued one
    assert sent_copies.pending_runs() == [run.id]
    assert sent_copies.append_pending(run_id=run.id).appended == 1
    copies = stored(mail_lab, run.box, run.folder)
    assert [c[b"BODY[]"] for c in copies] == expected_bytes(session, run.sent + late.sent)


def test_a_limit_pages_oldest_first(session, run, mail_lab):
    first = sent_copies.append_pending(run_id=run.id, limit=1)
    assert (first.appended, first.left, first.error) == (1, 1, None)
    (copy,) = stored(mail_lab, run.box, run.folder)
    assert copy[b"BODY[]"] == expected_bytes(session, run.sent[:1])[0]
    second = sent_copies.append_pending(run_id=run.id, limit=1)
    assert (second.appended, second.left) == (1, 0)
    assert len(stored(mail_lab, run.box, run.folder)) == 2


def test_a_copy_the_server_refuses_fails_alone_in_plain_words(session, run, mail_lab):
    # The server says NO to the second APPEND (as a full mailbox would).
    proxy = ImapProxy(
        mail_lab.imap_port,
        rewrite_down=[(rb"^(\S+) OK \[APPENDUID (\d+) 2\] .*$",
                       rb"\1 NO [OVERQUOTA] Quota exceeded (mailbox is full)")],
    )  # fmt: skip
    with proxy:
        give_mailbox(session, run.info, mail_lab, run.box, imap_port=proxy.port)
        outcome = sent_copies.append_pending(run_id=run.id)
    assert (outcome.appended, outcome.failed, outcome.left, outcome.error) == (1, 1, 0, None)
    after = records(session, run)
    first, second = (after[i] for i in run.sent)
    assert first.append_status == AppendStatus.APPENDED
    assert second.append_status == AppendStatus.FAILED
    assert second.append_error == (
        "The server refused the message: [OVERQUOTA] Quota exceeded (mailbox is full)"
    )
    assert second.status == SendStatus.SENT  # a failed copy never fails the send


def test_a_wrong_password_leaves_them_pending_until_it_is_fixed(session, run, mail_lab):
    sender = session.get(SenderAccount, run.sender_id)
    wrong = "not-" + run.box.password
    secret_store.replace_secret(
        session=session, workspace_id=run.workspace_id, ref=sender.imap_credential_ref,
        value=wrong, source=Source.CLI,
    )  # fmt: skip
    session.commit()
    before = {i: send_owned(r) for i, r in records(session, run).items()}

    outcome = sent_copies.append_pending(run_id=run.id)
    assert (outcome.appended, outcome.failed, outcome.left) == (0, 0, 2)
    assert outcome.error.startswith("The mailbox refused the sign-in: ")
    assert run.box.email in outcome.error and "Check the IMAP password" in outcome.error
    assert wrong not in outcome.error and run.box.password not in outcome.error
    after = records(session, run)
    for record_id in run.sent:
        assert after[record_id].append_status == AppendStatus.PENDING
        assert after[record_id].append_error == outcome.error
    assert {i: send_owned(r) for i, r in after.items()} == before
    assert sent_copies.pending_runs() == [run.id]
    assert stored(mail_lab, run.box, run.folder) == []

    secret_store.replace_secret(
        session=session, workspace_id=run.workspace_id, ref=sender.imap_credential_ref,
        value=run.box.password, source=Source.CLI,
    )  # fmt: skip
    session.commit()
    assert sent_copies.append_pending(run_id=run.id).appended == 2
    assert {r.append_error for i, r in records(session, run).items() if i in run.sent} == {None}


def test_the_last_try_gives_up_and_says_why(session, run, mail_lab):
    give_mailbox(session, run.info, mail_lab, run.box, imap_port=free_port())
    outcome = sent_copies.append_pending(run_id=run.id)
    assert (outcome.left, outcome.failed) == (2, 0) and "connection refused" in outcome.error
    outcome = sent_copies.append_pending(run_id=run.id, give_up=True)
    assert (outcome.failed, outcome.left) == (2, 0)
    after = records(session, run)
    for record_id in run.sent:
        assert after[record_id].append_status == AppendStatus.FAILED
        assert after[record_id].append_error.startswith(
            "No copy was stored in Sent, after several tries: "
        )
        assert after[record_id].status == SendStatus.SENT
    for record_id in run.failed + run.queued:
        assert after[record_id].append_status == AppendStatus.PENDING
    assert sent_copies.pending_runs() == []


def test_a_hang_up_midway_keeps_what_was_stored(session, run, mail_lab):
    # The server hangs up when the second copy (dated T0 + 1 h) arrives.
    proxy = ImapProxy(mail_lab.imap_port, drop_on=rb'^\S+ APPEND .*"02-Jan-2024 11:00:00 ')
    with proxy:
        give_mailbox(session, run.info, mail_lab, run.box, imap_port=proxy.port)
        outcome = sent_copies.append_pending(run_id=run.id)
    assert (outcome.appended, outcome.failed, outcome.left) == (1, 0, 1)
    assert "1 of 2 messages were stored before that" in outcome.error
    after = records(session, run)
    first, second = (after[i] for i in run.sent)
    assert (first.append_status, second.append_status) == ("appended", "pending")
    assert second.append_error == outcome.error


def test_the_configured_folder_is_used_and_a_missing_one_is_explained(session, run, mail_lab):
    box = mail_lab.add_account("legacy.lab")  # no Sent folder at all
    give_mailbox(session, run.info, mail_lab, box)
    outcome = sent_copies.append_pending(run_id=run.id)
    assert outcome.left == 2 and "No Sent folder found" in outcome.error

    with mail_lab.imap(box) as client:
        client.create_folder("Outgoing archive")
    sender = session.get(SenderAccount, run.sender_id)
    sender.sent_folder = "Outgoing archive"
    session.commit()
    assert sent_copies.append_pending(run_id=run.id).appended == 2
    assert len(stored(mail_lab, box, "Outgoing archive")) == 2


def test_a_sender_without_a_mailbox_any_more_is_explained(session, run, mail_lab):
    give_mailbox(session, run.info, mail_lab, run.box, imap_host="", imap_port=None,
                 imap_security=None, imap_username=None, imap_password="")  # fmt: skip
    outcome = sent_copies.append_pending(run_id=run.id)
    assert outcome.left == 2 and "no longer has a mailbox (IMAP)" in outcome.error
    assert all(
        r.append_error == outcome.error for i, r in records(session, run).items() if i in run.sent
    )


def test_a_signed_message_is_copied_signed(session, run, mail_lab):
    senders.set_dkim_key(
        session=session, workspace_id=run.workspace_id, sender_id=run.sender_id,
        domain="example.com", selector="mail", private_key_pem=generate_key("rsa", 1024),
        user_id=None, source=Source.CLI,
    )  # fmt: skip
    session.commit()
    record = senders.dkim_dns_record(
        session=session, workspace_id=run.workspace_id, sender_id=run.sender_id
    )
    assert sent_copies.append_pending(run_id=run.id).appended == 2
    copies = stored(mail_lab, run.box, run.folder)
    session.expire_all()
    for copy, record_id in zip(copies, run.sent, strict=True):
        data = copy[b"BODY[]"]
        assert data.startswith(b"DKIM-Signature: ")
        unsigned = outgoing.record_message(
            session=session, record=session.get(SendRecord, record_id), dkim=False
        )
        assert data.endswith(unsigned)
        assert dkim.verify(data, dnsfunc=lambda name, timeout=5: record.value.encode())


# --- the job -------------------------------------------------------------------------------


def test_the_job_runs_on_a_real_worker_and_is_queued_once(
    redis_url, spawn, session, engine, run, mail_lab
):  # Redis first: with `spawn`, the build fixture queues its build job for real
    from jobs.connection import QUEUE_DEFAULT, close_redis, get_queue

    close_redis()
    first, second = append_jobs.append_job_ids(run.id)
    assert append_jobs.enqueue_append(run.id) == first
    assert append_jobs.enqueue_append(run.id) is None  # already waiting
    assert get_queue(QUEUE_DEFAULT).count == 1
    spawn("jobs.worker", "default", env={"DATABASE_URL": engine.url.render_as_string(False)})

    def appended():
        done = records(session, run)
        return all(done[i].append_status == AppendStatus.APPENDED for i in run.sent)

    wait_until(appended, 60, "the append job to copy both messages")
    assert len(stored(mail_lab, run.box, run.folder)) == 2
    job = get_queue(QUEUE_DEFAULT).fetch_job(first)
    wait_until(lambda: job.get_status(refresh=True) == "finished", 10, "the job to finish")
    assert job.return_value()["appended"] == 2
    # Finished: the next enqueue reuses the first id.
    assert append_jobs.enqueue_append(run.id) == first
    close_redis()


def test_the_job_function_retries_later_when_the_mailbox_is_unusable(
    redis_url, session, run, mail_lab
):
    from jobs.connection import close_redis, get_redis

    close_redis()
    give_mailbox(session, run.info, mail_lab, run.box, imap_port=free_port())
    with pytest.raises(append_jobs.AppendDeferred, match="connection refused"):
        append_jobs.append_sent(run.id)
    assert all(records(session, run)[i].append_status == AppendStatus.PENDING for i in run.sent)
    # The lock is released after each try; a held lock makes a second job step aside.
    assert get_redis().keys(f"{append_jobs.LOCK_PREFIX}:*") == []
    get_redis().set(f"{append_jobs.LOCK_PREFIX}:{run.id}", "someone", ex=60)
    assert append_jobs.append_sent(run.id) == {"run_id": run.id, "busy": True}
    close_redis()


def test_pending_runs_lists_only_runs_with_sent_records_to_copy(session, run):
    assert sent_copies.pending_runs() == [run.id]
    session.execute(
        sa.update(SendRecord)
        .where(SendRecord.run_id == run.id, SendRecord.status == SendStatus.SENT)
        .values(append_status=AppendStatus.NOT_NEEDED)
    )
    session.commit()
    assert sent_copies.pending_runs() == []  # queued and failed ones are not due


def test_a_missing_mailbox_password_is_explained(session, run):
    sender = session.get(SenderAccount, run.sender_id)
    secret_store.delete_secret(
        session=session, workspace_id=run.workspace_id, ref=sender.imap_credential_ref,
        source=Source.CLI,
    )  # fmt: skip
    session.commit()
    outcome = sent_copies.append_pending(run_id=run.id)
    assert outcome.left == 2 and outcome.appended == outcome.failed == 0
    assert "mailbox password of the sender account “News” is missing" in outcome.error
