"""Append-to-Sent against the lab's real Dovecot (and a proxy that misbehaves on cue).

Lab accounts come with their provider's folders: gmail.lab has "[Gmail]/Sent Mail"
and outlook.lab "Sent Items", both flagged \\Sent by Dovecot; legacy.lab has no Sent
folder at all, so tests there create the folders they need. Everything runs on
127.0.0.1 with short timeouts.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from dataclasses import replace
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import pytest

from mailer_app.mail.imap import ImapEndpoint
from mailer_app.mail.imap_append import (
    AppendInterrupted,
    MailboxAuthError,
    MailboxError,
    MailboxUnavailable,
    SentFolderMissing,
    append_sent,
    choose_sent_folder,
    message_date,
)
from tests.conftest import free_port
from tests.imap_proxy import ImapProxy
from tests.lab_fixtures import mail_lab_fixture  # noqa: F401

WHEN = dt.datetime(2021, 3, 4, 5, 6, 7, tzinfo=dt.timezone(dt.timedelta(hours=2)))


def endpoint(mail_lab, box, **changes) -> ImapEndpoint:
    base = ImapEndpoint(
        "127.0.0.1", mail_lab.imap_port, "plain", box.email, box.password, timeout=5.0
    )
    return replace(base, **changes)


def campaign_message(to: str, *, date: dt.datetime | None = WHEN, subject: str = "") -> bytes:
    """A CRLF message like the builder's: non-ASCII subject, 8-bit text, an attachment."""
    msg = EmailMessage()
    msg["From"] = "Zoë News <news@sender.lab>"
    msg["To"] = to
    msg["Subject"] = subject or f"Frühlingsbrief {secrets.token_hex(4)}"
    msg["Message-ID"] = make_msgid(domain="sender.lab")
    if date is not None:
        msg["Date"] = format_datetime(date)
    msg.set_content("Grüße aus dem Garten.\n\nBis bald!\n", cte="8bit")
    msg.add_attachment(secrets.token_bytes(700), maintype="application", subtype="pdf",
                       filename="Rechnung März.pdf")  # fmt: skip
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def stored(mail_lab, box, folder: str, uid: int) -> dict:
    with mail_lab.imap(box) as client:
        client.normalise_times = False
        client.select_folder(folder, readonly=True)
        return client.fetch([uid], ["FLAGS", "INTERNALDATE", "BODY.PEEK[]"])[uid]


def count(mail_lab, box, folder: str) -> int:
    with mail_lab.imap(box) as client:
        return client.select_folder(folder, readonly=True)[b"EXISTS"]


def odd_sent_proxy(mail_lab, name: str) -> ImapProxy:
    """Dovecot with `name` flagged \\Sent in LIST (the lab declares only its own names)."""
    return ImapProxy(
        mail_lab.imap_port,
        rewrite_down=[(rb'^\* LIST \(([^)]*)\) "/" "' + name.encode() + rb'"$',
                       rb'* LIST (\1 \\Sent) "/" "' + name.encode() + rb'"')],
    )  # fmt: skip


# --- the Sent folder -----------------------------------------------------------------


@pytest.mark.parametrize(
    "domain, sent", [("gmail.lab", "[Gmail]/Sent Mail"), ("outlook.lab", "Sent Items")]
)
def test_the_special_use_sent_folder_is_used(mail_lab, domain, sent):
    box = mail_lab.add_account(domain)
    message = campaign_message(box.email)
    (result,) = append_sent(endpoint(mail_lab, box), None, [message])
    assert (result.ok, result.folder, result.error) == (True, sent, None)
    assert stored(mail_lab, box, sent, result.uid)[b"BODY[]"] == message


def test_a_sent_flag_on_an_odd_name_beats_usual_names_and_the_configured_one(mail_lab):
    box = mail_lab.add_account("legacy.lab")
    with mail_lab.imap(box) as client:
        client.create_folder("Gesendet")
        client.create_folder("Outgoing archive")
        client.create_folder("Post von mir")
    with odd_sent_proxy(mail_lab, "Post von mir") as proxy:
        ep = endpoint(mail_lab, box, port=proxy.port)
        results = append_sent(ep, None, [campaign_message(box.email)], "Outgoing archive")
    assert [r.folder for r in results] == ["Post von mir"]
    assert count(mail_lab, box, "Post von mir") == 1
    assert count(mail_lab, box, "Gesendet") == count(mail_lab, box, "Outgoing archive") == 0


def test_the_configured_name_comes_before_usual_names(mail_lab):
    box = mail_lab.add_account("legacy.lab")
    with mail_lab.imap(box) as client:
        client.create_folder("Gesendet")
        client.create_folder("Outgoing archive")
    ep = endpoint(mail_lab, box)
    (result,) = append_sent(ep, None, [campaign_message(box.email)], "outgoing  ARCHIVE")
    assert (result.ok, result.folder) == (True, "Outgoing archive")
    # A configured folder that is gone: the usual names still find one.
    (result,) = append_sent(ep, None, [campaign_message(box.email)], "Deleted long ago")
    assert (result.ok, result.folder) == (True, "Gesendet")
    assert count(mail_lab, box, "Outgoing archive") == count(mail_lab, box, "Gesendet") == 1


def test_a_localized_name_is_found_even_when_written_decomposed(mail_lab):
    box = mail_lab.add_account("legacy.lab")
    nfd = "Envoye\u0301s"  # as macOS clients create it
    with mail_lab.imap(box) as client:
        client.create_folder(nfd)
    (result,) = append_sent(endpoint(mail_lab, box), None, [campaign_message(box.email)])
    assert (result.ok, result.folder) == (True, nfd)
    assert count(mail_lab, box, nfd) == 1


def test_no_sent_folder_is_a_plain_error_and_nothing_is_stored(mail_lab):
    box = mail_lab.add_account("legacy.lab")  # INBOX and Spam only
    ep = endpoint(mail_lab, box)
    with pytest.raises(SentFolderMissing) as info:
        append_sent(ep, None, [campaign_message(box.email)])
    assert isinstance(info.value, MailboxError)
    assert not isinstance(info.value, MailboxUnavailable | MailboxAuthError)
    assert str(info.value).startswith(f"{box.email}: No Sent folder found")
    with pytest.raises(SentFolderMissing, match='The Sent folder "Sent Stuff" set for this'):
        append_sent(ep, None, [campaign_message(box.email)], "Sent Stuff")
    assert count(mail_lab, box, "INBOX") == count(mail_lab, box, "Spam") == 0


def test_choosing_among_listed_folders():
    def listing(*entries, delimiter=b"/"):
        return [(tuple(flags), delimiter, name) for name, *flags in entries]

    courier = listing(("INBOX",), ("INBOX.Drafts",), ("INBOX.Sent",), delimiter=b".")
    assert choose_sent_folder(courier) == "INBOX.Sent"
    # A top-level name beats the same name further down; a usual name beats a rarer one.
    nested = listing(("INBOX/Sent",), ("Sent",), ("Sent Items",))
    assert choose_sent_folder(nested) == "Sent"
    assert choose_sent_folder(listing(("Gesendet",), ("Sent Items",))) == "Sent Items"
    # Folders that cannot hold mail are never chosen, flagged or not.
    hidden = listing(("[Gmail]", b"\\Noselect"), ("Sent", b"\\NonExistent", b"\\Sent"))
    with pytest.raises(SentFolderMissing):
        choose_sent_folder(hidden)
    # Two flagged folders: the configured one, else the first listed.
    two = listing(("A", b"\\Sent"), ("B", b"\\Sent"))
    assert (choose_sent_folder(two), choose_sent_folder(two, "B")) == ("A", "B")


# --- appending -----------------------------------------------------------------------


def test_messages_are_stored_seen_byte_identical_and_dated_by_their_date_header(mail_lab):
    box = mail_lab.add_account("yahoo.lab")
    earlier = WHEN - dt.timedelta(days=40)
    messages = [
        campaign_message(box.email),
        campaign_message(box.email, date=earlier),
        campaign_message(box.email, date=None),  # no Date: the server's clock
    ]
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with ImapProxy(mail_lab.imap_port) as proxy:
        results = append_sent(endpoint(mail_lab, box, port=proxy.port), None, messages)
    after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    assert proxy.logins() == 1
    assert [(r.ok, r.folder, r.error) for r in results] == [(True, "Sent", None)] * 3
    assert len({r.uid for r in results}) == 3

    fetched = [stored(mail_lab, box, "Sent", r.uid) for r in results]
    assert [f[b"BODY[]"] for f in fetched] == messages
    assert all(b"\\Seen" in f[b"FLAGS"] for f in fetched)
    assert fetched[0][b"INTERNALDATE"] == WHEN
    assert fetched[1][b"INTERNALDATE"] == earlier
    assert before <= fetched[2][b"INTERNALDATE"] <= after


def test_a_refused_message_does_not_stop_the_others(mail_lab):
    box = mail_lab.add_account("outlook.lab")
    first, last = campaign_message(box.email), campaign_message(box.email)
    results = append_sent(endpoint(mail_lab, box), None, [first, b"", last])
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error.startswith("The server refused the message: ")
    assert "zero byte" in results[1].error
    assert results[1].uid is None
    assert count(mail_lab, box, "Sent Items") == 2
    assert stored(mail_lab, box, "Sent Items", results[2].uid)[b"BODY[]"] == last


def test_the_password_argument_replaces_the_endpoints(mail_lab):
    box = mail_lab.add_account("gmail.lab")
    ep = endpoint(mail_lab, box, password="stale-" + box.password)
    (result,) = append_sent(ep, box.password, [campaign_message(box.email)])
    assert result.ok
    assert append_sent(ep, box.password, []) == []


def test_a_wrong_password_is_an_auth_error_that_never_shows_it(mail_lab):
    box = mail_lab.add_account("gmail.lab")
    wrong = "not-" + box.password
    with pytest.raises(MailboxAuthError) as info:
        append_sent(endpoint(mail_lab, box), wrong, [campaign_message(box.email)])
    assert "AUTHENTICATIONFAILED" in str(info.value) and box.email in str(info.value)
    assert wrong not in str(info.value)
    assert count(mail_lab, box, "[Gmail]/Sent Mail") == 0


def test_nothing_listening_is_unavailable_at_once():
    ep = ImapEndpoint("127.0.0.1", free_port(), "plain", "news@sender.lab", "pw", timeout=2.0)
    started = time.monotonic()
    with pytest.raises(MailboxUnavailable, match="connection refused"):
        append_sent(ep, None, [b"Subject: x\r\n\r\nx\r\n"])
    assert time.monotonic() - started < 1.0


def test_a_hang_up_midway_says_which_messages_were_stored(mail_lab):
    box = mail_lab.add_account("yahoo.lab")
    third_date = WHEN + dt.timedelta(hours=3)
    messages = [
        campaign_message(box.email),
        campaign_message(box.email, date=WHEN + dt.timedelta(hours=1)),
        campaign_message(box.email, date=third_date),
        campaign_message(box.email),
    ]
    # The server hangs up when the third message's APPEND arrives.
    proxy = ImapProxy(mail_lab.imap_port, drop_on=rb'^\S+ APPEND .*"04-Mar-2021 08:06:07 ')
    with proxy, pytest.raises(AppendInterrupted) as info:
        append_sent(endpoint(mail_lab, box, port=proxy.port), None, messages)
    assert isinstance(info.value, MailboxUnavailable)
    assert [r.ok for r in info.value.results] == [True, True]
    assert "2 of 4 messages were stored before that" in str(info.value)
    assert count(mail_lab, box, "Sent") == 2


def test_a_server_that_stops_answering_times_out(mail_lab):
    box = mail_lab.add_account("yahoo.lab")
    with ImapProxy(mail_lab.imap_port, stall_on=rb"^\S+ APPEND ") as proxy:
        ep = endpoint(mail_lab, box, port=proxy.port, timeout=1.0)
        started = time.monotonic()
        with pytest.raises(AppendInterrupted, match="did not answer within 1 s") as info:
            append_sent(ep, None, [campaign_message(box.email)])
        assert time.monotonic() - started < 2.0
    assert info.value.results == []


def test_message_date_reads_the_date_header():
    assert message_date(campaign_message("a@b.lab")) == WHEN
    assert message_date(b"Date: Thu, 04 Mar 2021 03:06:07 -0000\r\n\r\n") == WHEN
    assert message_date(b"Date: sometime soon\r\n\r\nbody") is None
    assert message_date(b"Subject: none\r\n\r\nbody") is None
