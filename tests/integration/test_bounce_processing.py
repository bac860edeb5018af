"""Bounce processing against the lab's real Dovecot, on SQLite and PostgreSQL: delivery
reports shaped like real MTAs' (tests/data/bounces, rewritten to name this test's send
records) are APPENDed to a sender account's mailbox, polled, attributed (VERP token,
Message-ID, address), counted once, and turned into suppressions."""

from __future__ import annotations

import email.parser
import email.policy
import threading
from datetime import timedelta
from email.utils import make_msgid
from pathlib import Path

import pytest
from sqlmodel import select

from jobs import bounces as bounce_jobs
from jobs import connection
from mailer_app.mail.bounces import parse_bounce
from mailer_app.models import (
    AuditEntry,
    BounceEvent,
    CampaignRun,
    SenderAccount,
    SendRecord,
    SendStatus,
    Source,
    Suppression,
    utcnow,
)
from mailer_app.services import bounce_processing, send_records
from mailer_app.services import secrets as secret_store
from mailer_app.services.bounce_processing import poll_sender
from tests.conftest import free_port
from tests.integration.test_build import do_build, ws  # noqa: F401  (ws: the build fixture)
from tests.integration.test_send_records import approved, queue  # noqa: F401
from tests.lab_fixtures import mail_lab_fixture  # noqa: F401

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "bounces"
PLAIN_RETURN_PATH = "news@example.com"  # the sender's address, without a bounce token


@pytest.fixture
def sent(session, engine, approved, mail_lab) -> dict:  # noqa: F811
    """The build fixture's campaign queued and sent (four records, status sent), its
    sender account reading bounces from a fresh lab mailbox."""
    run = queue(session, approved)
    ids = send_records.claim_batch(engine_or_session=engine, run_id=run.id, worker="w", limit=10)
    for record_id in ids:
        send_records.mark(session=session, record_id=record_id, to=SendStatus.SENT)
    box = mail_lab.add_account("legacy.lab")
    sender = session.get(SenderAccount, approved["sender_id"])
    sender.imap_host, sender.imap_port = "127.0.0.1", mail_lab.imap_port
    sender.imap_security, sender.imap_username = "plain", box.email
    sender.imap_credential_ref = secret_store.store_secret(
        session=session, workspace_id=sender.workspace_id, value=box.password, kind="password",
        source=Source.CLI,
    )  # fmt: skip
    session.add(sender)
    session.commit()
    return {**approved, "run_id": run.id, "box": box, "records": records(session, run.id)}


def records(session, run_id: int) -> dict[str, SendRecord]:
    session.expire_all()
    found = session.exec(select(SendRecord).where(SendRecord.run_id == run_id)).all()
    return {r.email: r for r in found}


def dsn(
    sample: str,
    *,
    to: str | None = None,
    recipients: dict[str, str] | None = None,
    message_id: str | None = None,
    return_path: str = PLAIN_RETURN_PATH,
    report_id: str | None = None,
) -> bytes:
    """A sample report rewritten: its (first) recipient becomes `to` (or as `recipients`
    maps them), the returned message's Message-ID `message_id` (default: one no record
    has), the return path it came back to `return_path`, and its own Message-ID
    `report_id` (default: a fresh one)."""
    raw = (SAMPLES / sample).read_bytes()
    found = parse_bounce(raw)
    mapping = dict(recipients or {})
    if to is not None:
        mapping[found.recipients[0].email] = to
    for old, new in mapping.items():
        raw = raw.replace(old.encode(), new.encode())
    raw = raw.replace(f"bounces+{found.verp_token}@example.com".encode(), return_path.encode())
    new_mid = message_id or make_msgid(domain="elsewhere.example")
    raw = raw.replace(found.original_message_id.encode(), new_mid.encode())
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    if headers["Message-ID"]:
        new_report_id = report_id or make_msgid(domain="mx.example.org")
        raw = raw.replace(str(headers["Message-ID"]).encode(), new_report_id.encode(), 1)
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def append(mail_lab, box, *messages: bytes, folder: str = "INBOX") -> None:
    with mail_lab.imap(box) as client:
        for message in messages:
            client.append(folder, message)


def token_path(session, info, email_: str) -> str:
    sender = session.get(SenderAccount, info["sender_id"])
    return bounce_processing.return_path(sender=sender, record_id=info["records"][email_].id)


def poll(engine, info, **kwargs) -> bounce_processing.BouncePoll:
    return poll_sender(sender_account_id=info["sender_id"], engine=engine, **kwargs)


def events(session, info) -> list[BounceEvent]:
    session.expire_all()
    return list(
        session.exec(
            select(BounceEvent)
            .where(BounceEvent.workspace_id == info["workspace_id"])
            .order_by(BounceEvent.id)
        ).all()
    )


def suppression(session, info, email_: str) -> Suppression | None:
    session.expire_all()
    return session.exec(
        select(Suppression).where(
            Suppression.workspace_id == info["workspace_id"], Suppression.email == email_
        )
    ).first()


def another_send(session, info, email_: str, *, status=SendStatus.SENT) -> SendRecord:
    """One more send of the campaign (a new run) to `email_`."""
    run = CampaignRun(
        workspace_id=info["workspace_id"], campaign_id=info["campaign_id"],
        version_id=info["version_id"], kind="send", status="queued",
    )  # fmt: skip
    session.add(run)
    session.flush()
    record = SendRecord(
        workspace_id=info["workspace_id"], run_id=run.id, email=email_, status=status,
        message_id=make_msgid(domain="example.com"),
        sent_at=utcnow() if status == SendStatus.SENT else None,
    )  # fmt: skip
    session.add(record)
    session.commit()
    return record


# --- hard bounces ------------------------------------------------------------------------------


def test_a_hard_bounce_marks_the_record_suppresses_the_address_and_stops_later_sends(
    session, engine, sent, mail_lab
):
    ann = sent["records"]["ann@example.com"]
    report = dsn("gmail_no_such_account.eml", to=ann.email, message_id=ann.message_id,
                 return_path=token_path(session, sent, ann.email))  # fmt: skip
    append(mail_lab, sent["box"], report)

    result = poll(engine, sent)
    assert (result.error, result.read, result.hard, result.soft) == (None, 1, 1, 0)
    assert (result.unattributed, result.ignored, result.suppressed) == (0, 0, [ann.email])

    [event] = events(session, sent)
    assert (event.send_record_id, event.email, event.kind, event.status_code) == (
        ann.id, ann.email, "hard", "5.1.1",
    )  # fmt: skip
    assert "does not exist" in event.diagnostic
    assert event.sender_account_id == sent["sender_id"] and event.received_at is not None
    record = records(session, sent["run_id"])[ann.email]
    assert (record.bounce_kind, record.status) == ("hard", SendStatus.SENT)
    assert record.bounced_at is not None
    row = suppression(session, sent, ann.email)
    assert row.reason == "hard_bounce" and row.note.startswith("Hard bounce 5.1.1: 550 5.1.1")
    assert session.exec(
        select(AuditEntry).where(
            AuditEntry.workspace_id == sent["workspace_id"],
            AuditEntry.action == "suppression.add",
            AuditEntry.source == Source.JOB,
        )
    ).one().details == {"email": ann.email, "reason": "hard_bounce"}
    # The other records are untouched.
    others = [r for e, r in records(session, sent["run_id"]).items() if e != ann.email]
    assert {r.bounce_kind for r in others} == {None}

    # A later send to the same address fails as suppressed when it is claimed.
    later = another_send(session, sent, ann.email, status=SendStatus.QUEUED)
    claimed = send_records.claim_batch(
        engine_or_session=engine, run_id=later.run_id, worker="w", limit=10
    )
    assert claimed == []
    session.expire_all()
    later = session.get(SendRecord, later.id)
    assert (later.status, later.last_error) == (
        SendStatus.FAILED, send_records.SUPPRESSED_BEFORE_SENDING,
    )  # fmt: skip

    # The mailbox was only read: the report is still there, unflagged.
    with mail_lab.imap(sent["box"]) as client:
        client.select_folder("INBOX", readonly=True)
        [flags] = client.get_flags(client.search()).values()
        assert b"\\Seen" not in flags and b"\\Deleted" not in flags


def test_a_hard_bounce_keeps_an_earlier_suppression_reason(session, engine, sent, mail_lab):
    noc = sent["records"]["noc@example.com"]
    session.add(Suppression(workspace_id=sent["workspace_id"], email=noc.email,
                            reason="unsubscribe"))  # fmt: skip
    session.commit()
    append(mail_lab, sent["box"], dsn("office365_recipient_not_found.eml", to=noc.email,
                                      message_id=noc.message_id))  # fmt: skip
    result = poll(engine, sent)
    assert (result.hard, result.suppressed) == (1, [])
    assert suppression(session, sent, noc.email).reason == "unsubscribe"
    assert records(session, sent["run_id"])[noc.email].bounce_kind == "hard"


# --- attribution -------------------------------------------------------------------------------


def test_attribution_by_verp_token_also_when_the_address_was_forwarded(
    session, engine, sent, mail_lab
):
    noc = sent["records"]["noc@example.com"]
    # The report names the address noc@ forwards to and no known Message-ID: only the
    # token in the return path says which send it was.
    forwarded = dsn("office365_recipient_not_found.eml", to="noc.elsewhere@example.net",
                    return_path=token_path(session, sent, noc.email))  # fmt: skip
    # A token in our format whose signature is wrong attributes nothing.
    forged_token = f"r{noc.id}-000000000000"
    forged = dsn("gmail_no_such_account.eml", to="stranger@example.net",
                 return_path=f"news+{forged_token}@example.com")  # fmt: skip
    append(mail_lab, sent["box"], forwarded, forged)

    result = poll(engine, sent)
    assert (result.hard, result.unattributed) == (2, 1)
    by_address = {e.email: e for e in events(session, sent)}
    # Attributed by the token: the event and the suppression are for the address sent to.
    assert by_address[noc.email].send_record_id == noc.id
    assert by_address["stranger@example.net"].send_record_id is None
    assert result.suppressed == [noc.email, "stranger@example.net"]
    assert records(session, sent["run_id"])[noc.email].bounce_kind == "hard"

    ws_id = sent["workspace_id"]
    token = bounce_processing.bounce_token(workspace_id=ws_id, record_id=noc.id)
    assert bounce_processing.record_id_from_token(token.upper(), workspace_id=ws_id) == noc.id
    assert bounce_processing.record_id_from_token(token, workspace_id=ws_id + 1) is None
    assert bounce_processing.record_id_from_token(forged_token, workspace_id=ws_id) is None


def test_attribution_by_the_returned_message_id(session, engine, sent, mail_lab):
    two = sent["records"]["two@example.com"]
    ann = sent["records"]["ann@example.com"]
    # No token: the Message-ID of the returned message names two@'s message, though the
    # report names the address it was forwarded to.
    by_mid = dsn("gmail_no_such_account.eml", to="two.forwarded@example.net",
                 message_id=two.message_id)  # fmt: skip
    # Two recipients in one report (Postfix): ann@ is ours, sales@ is not.
    two_recipients = dsn(
        "postfix_user_unknown.eml", message_id=ann.message_id,
        recipients={"jane.doe@example.org": ann.email, "sales@example.org": "sales@example.net"},
    )  # fmt: skip
    append(mail_lab, sent["box"], by_mid, two_recipients)

    result = poll(engine, sent)
    assert (result.read, result.hard, result.soft, result.unattributed) == (2, 2, 1, 1)
    found = {e.email: (e.send_record_id, e.kind) for e in events(session, sent)}
    assert found == {
        two.email: (two.id, "hard"),
        ann.email: (ann.id, "hard"),
        "sales@example.net": (None, "soft"),  # 5.7.1, a policy refusal: soft
    }
    assert set(result.suppressed) == {two.email, ann.email}


def test_attribution_by_address_among_the_senders_recent_records(session, engine, sent, mail_lab):
    noc = sent["records"]["noc@example.com"]
    two = sent["records"]["two@example.com"]
    # two@ was sent long ago: a report naming it alone is not tied to that send.
    old = utcnow() - bounce_processing.RECENT_SEND_WINDOW - timedelta(days=1)
    record = session.get(SendRecord, two.id)
    record.sent_at = record.created_at = old
    session.add(record)
    session.commit()
    append(
        mail_lab, sent["box"],
        dsn("exim_user_unknown.eml", to=noc.email),  # heuristic (Exim), no token, no known id
        dsn("sendmail_user_unknown.eml", to=two.email),
        dsn("qmail_user_unknown.eml", to="never-sent@example.net"),
    )  # fmt: skip
    result = poll(engine, sent)
    assert (result.read, result.hard, result.unattributed) == (3, 3, 2)
    found = {e.email: e.send_record_id for e in events(session, sent)}
    assert found == {noc.email: noc.id, two.email: None, "never-sent@example.net": None}
    assert records(session, sent["run_id"])[two.email].bounce_kind is None
    # Hard bounces suppress the address even when no send record is found.
    assert set(result.suppressed) == set(found)


# --- soft bounces ------------------------------------------------------------------------------


def test_soft_bounces_suppress_only_at_the_threshold(session, engine, sent, mail_lab):
    ann = sent["records"]["ann@example.com"]
    second = another_send(session, sent, ann.email)
    third = another_send(session, sent, ann.email)
    box = sent["box"]

    def full(record) -> bytes:
        return dsn("dovecot_mailbox_full.eml", to=ann.email, message_id=record.message_id)

    append(mail_lab, box, full(ann), full(second))
    result = poll(engine, sent)
    assert (result.soft, result.hard, result.suppressed) == (2, 0, [])
    assert suppression(session, sent, ann.email) is None
    session.expire_all()
    assert session.get(SendRecord, ann.id).bounce_kind == "soft"
    assert session.get(SendRecord, third.id).bounce_kind is None

    # Another report about a message already counted does not reach the threshold.
    append(mail_lab, box, full(second))
    assert (poll(engine, sent).soft, suppression(session, sent, ann.email)) == (1, None)

    # The third message that soft-bounces does.
    append(mail_lab, box, full(third))
    result = poll(engine, sent)
    assert (result.soft, result.suppressed) == (1, [ann.email])
    row = suppression(session, sent, ann.email)
    assert row.reason == "manual"
    assert row.note.startswith(
        f"{bounce_processing.SOFT_BOUNCE_THRESHOLD} soft bounces in 30 days (the last: 5.2.2"
    )
    assert len(events(session, sent)) == 4


def test_soft_bounces_older_than_the_window_do_not_count(session, engine, sent, mail_lab):
    noc = sent["records"]["noc@example.com"]
    sends = [noc, another_send(session, sent, noc.email), another_send(session, sent, noc.email)]
    append(mail_lab, sent["box"], *(dsn("dovecot_mailbox_full.eml", to=noc.email,
                                        message_id=r.message_id) for r in sends[:2]))  # fmt: skip
    poll(engine, sent)
    old = utcnow() - bounce_processing.SOFT_BOUNCE_WINDOW - timedelta(days=1)
    for event in events(session, sent):
        event.received_at = old
        session.add(event)
    session.commit()
    last = dsn("dovecot_mailbox_full.eml", to=noc.email, message_id=sends[2].message_id)
    append(mail_lab, sent["box"], last)
    assert poll(engine, sent).suppressed == []
    assert suppression(session, sent, noc.email) is None


def test_a_soft_bounce_never_downgrades_a_hard_one(session, engine, sent, mail_lab):
    ann = sent["records"]["ann@example.com"]
    append(mail_lab, sent["box"],
           dsn("gmail_no_such_account.eml", to=ann.email, message_id=ann.message_id),
           dsn("dovecot_mailbox_full.eml", to=ann.email, message_id=ann.message_id))  # fmt: skip
    result = poll(engine, sent)
    assert (result.hard, result.soft) == (1, 1)
    assert records(session, sent["run_id"])[ann.email].bounce_kind == "hard"


# --- counted once, paging, UIDVALIDITY -----------------------------------------------------------


def test_a_second_poll_counts_nothing_again(session, engine, sent, mail_lab):
    ann, noc = sent["records"]["ann@example.com"], sent["records"]["noc@example.com"]
    append(mail_lab, sent["box"],
           dsn("gmail_no_such_account.eml", to=ann.email, message_id=ann.message_id),
           dsn("dovecot_mailbox_full.eml", to=noc.email, message_id=noc.message_id))  # fmt: skip
    first = poll(engine, sent)
    assert (first.read, first.hard, first.soft) == (2, 1, 1)
    session.expire_all()
    sender = session.get(SenderAccount, sent["sender_id"])
    assert sender.bounce_last_uid == 2 and sender.bounce_uidvalidity is not None
    polled_at = sender.bounce_polled_at
    assert polled_at is not None

    again = poll(engine, sent)
    assert (again.read, again.hard, again.soft, again.duplicates, again.suppressed) == (
        0, 0, 0, 0, [],
    )  # fmt: skip
    session.expire_all()
    assert session.get(SenderAccount, sent["sender_id"]).bounce_polled_at > polled_at

    # Even when where polling stopped is lost, the same reports are not counted twice.
    sender = session.get(SenderAccount, sent["sender_id"])
    sender.bounce_last_uid = None
    session.add(sender)
    session.commit()
    reread = poll(engine, sent)
    assert (reread.read, reread.hard, reread.soft, reread.duplicates) == (2, 0, 0, 2)
    assert len(events(session, sent)) == 2


def test_two_polls_at_once_count_each_report_once(session, engine, sent, mail_lab):
    addresses = [f"gone{i}@example.net" for i in range(3)]
    append(mail_lab, sent["box"], *(dsn("gmail_no_such_account.eml", to=a) for a in addresses))
    results = []
    threads = [threading.Thread(target=lambda: results.append(poll(engine, sent))) for _ in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 2 and [r.error for r in results] == [None, None]
    assert sum(r.hard for r in results) == 3
    assert sum(r.duplicates for r in results) == sum(r.read for r in results) - 3
    assert sorted(sum((r.suppressed for r in results), [])) == addresses
    assert [e.email for e in events(session, sent)] == addresses


def test_a_new_uidvalidity_reads_the_folder_again(session, engine, sent, mail_lab):
    box = sent["box"]
    ann, two = sent["records"]["ann@example.com"], sent["records"]["two@example.com"]
    with mail_lab.imap(box) as client:
        client.create_folder("Bounces")
    sender = session.get(SenderAccount, sent["sender_id"])
    sender.bounce_folder = "Bounces"
    session.add(sender)
    session.commit()
    first = dsn("gmail_no_such_account.eml", to=ann.email, message_id=ann.message_id)
    append(mail_lab, box, dsn("gmail_no_such_account.eml", to="x@example.net"), first,
           folder="Bounces")  # fmt: skip
    assert poll(engine, sent).hard == 2
    append(mail_lab, box, first)  # in INBOX: not the bounce folder, never read
    session.expire_all()
    before = session.get(SenderAccount, sent["sender_id"]).bounce_uidvalidity

    # The folder is made again (new UIDVALIDITY, UIDs from 1): the report already
    # counted comes back, with a new one.
    with mail_lab.imap(box) as client:
        client.delete_folder("Bounces")
        client.create_folder("Bounces")
    append(mail_lab, box, first, dsn("office365_recipient_not_found.eml", to=two.email,
                                     message_id=two.message_id), folder="Bounces")  # fmt: skip
    result = poll(engine, sent)
    assert (result.read, result.hard, result.duplicates, result.suppressed) == (
        2, 1, 1, [two.email],
    )  # fmt: skip
    session.expire_all()
    sender = session.get(SenderAccount, sent["sender_id"])
    assert sender.bounce_uidvalidity != before and sender.bounce_last_uid == 2
    assert len(events(session, sent)) == 3


def test_the_limit_reads_a_big_mailbox_over_several_polls(session, engine, sent, mail_lab):
    addresses = [f"gone{i}@example.net" for i in range(5)]
    append(mail_lab, sent["box"], *(dsn("gmail_no_such_account.eml", to=a) for a in addresses))
    seen = []
    for _ in range(5):  # bounded: 3 polls are enough
        result = poll(engine, sent, limit=2)
        seen.append((result.read, result.hard, result.more))
        if not result.more:
            break
    assert seen == [(2, 2, True), (2, 2, True), (1, 1, False)]
    assert [e.email for e in events(session, sent)] == addresses
    assert poll(engine, sent, limit=2).read == 0


def test_a_big_report_is_read_from_its_beginning(session, engine, sent, mail_lab):
    noc = sent["records"]["noc@example.com"]
    report = dsn("gmail_no_such_account.eml", to=noc.email, message_id=noc.message_id)
    closing = b"--000000000000a1b2c3062fd4e5f6--"
    filler = b"Spring is here, again and again and again.\r\n" * 12_000  # ~ 530 kB
    report = report.replace(closing, filler + closing)
    assert len(report) > 2 * bounce_processing.MAX_MESSAGE_BYTES
    append(mail_lab, sent["box"], report)
    result = poll(engine, sent)
    assert (result.hard, result.unattributed) == (1, 0)
    assert events(session, sent)[0].send_record_id == noc.id


# --- not bounces ---------------------------------------------------------------------------------


def test_mail_that_is_not_a_bounce_is_ignored_and_delays_are_not_bounces(
    session, engine, sent, mail_lab
):
    ann = sent["records"]["ann@example.com"]
    person = mail_lab.message(sent["box"].email, subject="Re: Spring news", sender=ann.email,
                              body="Thanks, see you soon!")  # fmt: skip
    append(
        mail_lab, sent["box"],
        (SAMPLES / "auto_reply_out_of_office.eml").read_bytes(),
        person.as_bytes(),
        dsn("postfix_delayed.eml", to=ann.email, message_id=ann.message_id),
    )  # fmt: skip
    result = poll(engine, sent)
    assert (result.read, result.ignored, result.delayed) == (3, 2, 1)
    assert (result.hard, result.soft, result.suppressed) == (0, 0, [])
    assert events(session, sent) == []
    assert records(session, sent["run_id"])[ann.email].bounce_kind is None
    session.expire_all()
    assert session.get(SenderAccount, sent["sender_id"]).bounce_last_uid == 3


# --- errors ------------------------------------------------------------------------------------


def assert_unchanged(session, info) -> None:
    session.expire_all()
    sender = session.get(SenderAccount, info["sender_id"])
    assert (sender.bounce_uidvalidity, sender.bounce_last_uid, sender.bounce_polled_at) == (
        None, None, None,
    )  # fmt: skip
    assert events(session, info) == []


def test_a_refused_password_is_a_plain_error_without_the_password(session, engine, sent, mail_lab):
    ann = sent["records"]["ann@example.com"]
    append(mail_lab, sent["box"],
           dsn("gmail_no_such_account.eml", to=ann.email, message_id=ann.message_id))  # fmt: skip
    wrong = "Wrong-Passw0rd-xyz"
    sender = session.get(SenderAccount, sent["sender_id"])
    secret_store.replace_secret(
        session=session, workspace_id=sent["workspace_id"], ref=sender.imap_credential_ref,
        value=wrong, source=Source.CLI,
    )  # fmt: skip
    session.commit()

    result = poll(engine, sent)
    assert result.error.startswith("Could not read the bounce mailbox: The server refused the")
    assert sent["box"].email in result.error
    assert wrong not in result.error and sent["box"].password not in result.error
    assert (result.read, result.hard, result.suppressed) == (0, 0, [])
    assert_unchanged(session, sent)
    assert suppression(session, sent, ann.email) is None


def test_an_unreachable_server_or_a_missing_folder_changes_nothing(session, engine, sent):
    sender = session.get(SenderAccount, sent["sender_id"])
    port = sender.imap_port
    sender.imap_port = free_port()  # nothing listens there
    session.add(sender)
    session.commit()
    result = poll(engine, sent)
    assert result.error.startswith("Could not read the bounce mailbox: Could not reach 127.0.0.1")
    assert_unchanged(session, sent)

    sender = session.get(SenderAccount, sent["sender_id"])
    sender.imap_port, sender.bounce_folder = port, "Returned mail"
    session.add(sender)
    session.commit()
    result = poll(engine, sent)
    assert 'The folder "Returned mail" does not exist' in result.error
    assert_unchanged(session, sent)


def test_a_sender_without_a_mailbox_says_so(session, engine, sent):
    sender = session.get(SenderAccount, sent["sender_id"])
    sender.imap_host = None
    session.add(sender)
    session.commit()
    assert (
        poll(engine, sent).error == "This sender account has no IMAP server to read bounces from."
    )
    with pytest.raises(bounce_processing.SenderNotFound):
        poll_sender(sender_account_id=sent["sender_id"], workspace_id=sent["workspace_id"] + 1,
                    engine=engine)  # fmt: skip


# --- due polls and the job -----------------------------------------------------------------------


def test_poll_due_polls_only_mailboxes_not_polled_lately(session, engine, sent, mail_lab):
    ann = sent["records"]["ann@example.com"]
    append(mail_lab, sent["box"],
           dsn("gmail_no_such_account.eml", to=ann.email, message_id=ann.message_id))  # fmt: skip
    no_mailbox = SenderAccount(workspace_id=sent["workspace_id"], name="No IMAP",
                               from_email="plain@example.com", smtp_host="127.0.0.1")  # fmt: skip
    session.add(no_mailbox)
    session.commit()

    [first] = bounce_processing.poll_due(engine=engine)
    assert (first.sender_account_id, first.hard) == (sent["sender_id"], 1)
    assert bounce_processing.poll_due(engine=engine) == []  # polled a moment ago
    [again] = bounce_processing.poll_due(every=timedelta(0), engine=engine)
    assert (again.sender_account_id, again.read) == (sent["sender_id"], 0)


def test_poll_jobs_run_on_a_real_worker(redis_url, spawn, session, engine, sent, mail_lab):
    # redis_url first: building the campaign (in `sent`) queues its build job there.
    sender_id = sent["sender_id"]
    ann = sent["records"]["ann@example.com"]
    append(mail_lab, sent["box"],
           dsn("gmail_no_such_account.eml", to=ann.email, message_id=ann.message_id))  # fmt: skip
    database_url = engine.url.render_as_string(hide_password=False)

    def run_jobs() -> dict:
        worker = spawn("jobs.worker", "default", "--burst", env={"DATABASE_URL": database_url})
        assert worker.wait(timeout=60) == 0
        return connection.get_queue().fetch_job(bounce_jobs.poll_job_id(sender_id)).return_value()

    try:
        assert bounce_jobs.enqueue_due() == [sender_id]  # never polled
        assert bounce_jobs.enqueue_poll(sender_id) is False  # already waiting
        result = run_jobs()
        assert (result["hard"], result["suppressed"], result["error"]) == (1, [ann.email], None)
        assert suppression(session, sent, ann.email).reason == "hard_bounce"
        assert bounce_jobs.enqueue_due() == []  # polled a moment ago

        # A mailbox that cannot be read advances nothing, so it stays due; its polls are
        # still queued only every DUE_EVERY, not at every maintenance tick.
        sender = session.get(SenderAccount, sender_id)
        sender.imap_port, sender.bounce_polled_at = free_port(), None
        session.add(sender)
        session.commit()
        assert bounce_jobs.enqueue_due() == []  # the last poll ended moments ago
        assert bounce_jobs.enqueue_poll(sender_id) is True  # asked for explicitly
        assert run_jobs()["error"].startswith("Could not read the bounce mailbox")
        assert bounce_jobs.enqueue_due() == []
        assert bounce_jobs.enqueue_due(every=timedelta(0)) == [sender_id]
    finally:
        connection.close_redis()
