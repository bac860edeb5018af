"""The IMAP adapter against the lab's real Dovecot, and against servers that misbehave.

Copies are sent through the lab's SMTP intake with `X-Lab-Placement` so each lands
in a known folder of a simulated provider; failures are produced at exact points
of a real session by a loopback proxy (tests/imap_proxy.py). Everything runs on
127.0.0.1 with short timeouts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
import secrets
import socket
import ssl
import threading
import time
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailer_app.mail.imap import (
    FolderMap,
    ImapEndpoint,
    MailboxAuthError,
    MailboxPool,
    MailboxUnavailable,
    SeedMailbox,
    probe_mailbox,
)
from mailer_app.mail.seed_copy import SEED_TOKEN_HEADER
from tests.conftest import free_port
from tests.imap_proxy import ImapProxy
from tests.lab_fixtures import mail_lab_fixture  # noqa: F401

# Lab messages carrying this header count as DKIM-signed (the lab does not verify).
DKIM_SIGNATURE = "v=1; a=rsa-sha256; d=sender.lab; s=lab; bh=AAAA; b=BBBB"


def endpoint(mail_lab, seed, **changes) -> ImapEndpoint:
    base = ImapEndpoint(
        "127.0.0.1", mail_lab.imap_port, "plain", seed.email, seed.password, timeout=5.0
    )
    return replace(base, **changes)


def send_copy(mail_lab, seed, placement: str, *, signed: bool = False) -> str:
    """Send one seed copy that the lab files as `placement`; returns its token."""
    token = secrets.token_hex(10)
    headers = {"X-Lab-Placement": placement, SEED_TOKEN_HEADER: token}
    if signed:
        headers["DKIM-Signature"] = DKIM_SIGNATURE
    mail_lab.send(seed.email, subject=f"Spring letter {token[:6]}", headers=headers)
    return token


def append_copy(client, folder: str, mail_lab, seed, token: str | None, **headers) -> None:
    """Put a message straight into `folder` (no filter, no Authentication-Results)."""
    if token:
        headers[SEED_TOKEN_HEADER] = token
    msg = mail_lab.message(seed.email, subject="Appended", headers=headers)
    client.append(folder, msg.as_bytes())


@pytest.mark.parametrize(
    "domain, spam, flagged, promotions, sent",
    [
        ("gmail.lab", "[Gmail]/Spam", True, "Promotions", "[Gmail]/Sent Mail"),
        ("outlook.lab", "Junk Email", True, None, "Sent Items"),
        ("yahoo.lab", "Bulk", True, None, "Sent"),
        ("legacy.lab", "Spam", False, None, None),
    ],
)
def test_discovery_finds_each_providers_spam_folder(
    mail_lab, domain, spam, flagged, promotions, sent
):
    seed = mail_lab.add_account(domain)
    with SeedMailbox(endpoint(mail_lab, seed)) as mailbox:
        fm = mailbox.discover_folders()
    assert (fm.inbox, fm.spam, fm.spam_flagged) == ("INBOX", spam, flagged)
    assert (fm.promotions, fm.gmail_categories) == (promotions, False)
    assert sent not in fm.searchable
    assert set(fm.searchable) == {"INBOX", spam} | ({promotions} if promotions else set())


@pytest.mark.parametrize(
    "domain, spam_folder, promotions_result",
    [
        ("gmail.lab", "[Gmail]/Spam", ("promotions", "Promotions")),
        ("outlook.lab", "Junk Email", ("inbox", "INBOX")),
        ("yahoo.lab", "Bulk", ("inbox", "INBOX")),
        ("legacy.lab", "Spam", ("inbox", "INBOX")),
    ],
)
def test_find_reports_where_each_copy_landed(mail_lab, domain, spam_folder, promotions_result):
    seed = mail_lab.add_account(domain)
    before = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=2)
    inbox_token = send_copy(mail_lab, seed, "inbox", signed=True)
    spam_token = send_copy(mail_lab, seed, "spam")
    promo_token = send_copy(mail_lab, seed, "promotions", signed=True)
    drop_token = send_copy(mail_lab, seed, "drop")
    after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)

    with SeedMailbox(endpoint(mail_lab, seed)) as mailbox:
        fm = mailbox.discover_folders()
        inbox = mailbox.find(inbox_token, folder_map=fm)
        spam = mailbox.find(spam_token, folder_map=fm)
        promo = mailbox.find(promo_token)  # discovers the folders itself
        assert mailbox.find(drop_token, folder_map=fm) is None

    assert (inbox.placement, inbox.folder) == ("inbox", "INBOX")
    assert (inbox.spf, inbox.dkim, inbox.dmarc) == ("pass", "pass", "pass")
    assert (spam.placement, spam.folder) == ("spam", spam_folder)
    assert (spam.spf, spam.dkim, spam.dmarc) == ("pass", "none", "none")
    assert (promo.placement, promo.folder) == promotions_result
    for found in (inbox, spam, promo):
        assert found.received_at.tzinfo == dt.UTC
        assert before <= found.received_at <= after


def test_find_only_reads_the_mailbox(mail_lab):
    seed = mail_lab.add_account("outlook.lab")
    token = send_copy(mail_lab, seed, "inbox")
    with SeedMailbox(endpoint(mail_lab, seed)) as mailbox:
        assert mailbox.find(token).placement == "inbox"
    with mail_lab.imap(seed) as client:
        client.select_folder("INBOX", readonly=True)
        flags = client.get_flags(client.search(["HEADER", SEED_TOKEN_HEADER, token]))
    assert flags and all(b"\\Seen" not in f for f in flags.values())


def test_find_matches_the_whole_token_not_a_part(mail_lab):
    seed = mail_lab.add_account("gmail.lab")
    token = secrets.token_hex(10)
    with mail_lab.imap(seed) as client:
        # An older copy whose token merely starts with ours; the verdicts tell them apart.
        decoy = {"Authentication-Results": "mx.lab; spf=fail; dkim=fail; dmarc=fail"}
        ours = {"Authentication-Results": "mx.lab; spf=pass; dkim=pass; dmarc=pass"}
        append_copy(client, "INBOX", mail_lab, seed, token + "ff", **decoy)
        append_copy(client, "INBOX", mail_lab, seed, token, **ours)
    with SeedMailbox(endpoint(mail_lab, seed)) as mailbox:
        found = mailbox.find(token)
        assert mailbox.find(token[:-2]) is None
    assert (found.placement, found.spf, found.dkim, found.dmarc) == (
        "inbox",
        "pass",
        "pass",
        "pass",
    )


def test_non_ascii_spam_folder_is_found_by_name(mail_lab):
    seed = mail_lab.add_account("legacy.lab")
    token = secrets.token_hex(10)
    with mail_lab.imap(seed) as client:
        client.delete_folder("Spam")
        client.create_folder("Courrier indésirable")
        append_copy(client, "Courrier indésirable", mail_lab, seed, token)
        client.folder_encode = False
        wire_names = [name for _, _, name in client.list_folders()]
    assert b"Courrier ind&AOk-sirable" in wire_names  # really modified UTF-7 on the wire

    with SeedMailbox(endpoint(mail_lab, seed)) as mailbox:
        fm = mailbox.discover_folders()
        found = mailbox.find(token, folder_map=fm)
    assert (fm.spam, fm.spam_flagged) == ("Courrier indésirable", False)
    assert (found.placement, found.folder) == ("spam", "Courrier indésirable")


def test_without_a_spam_folder_anything_outside_the_inbox_counts_as_spam(mail_lab):
    seed = mail_lab.add_account("legacy.lab")
    in_receipts, in_sent = secrets.token_hex(10), secrets.token_hex(10)
    with mail_lab.imap(seed) as client:
        client.delete_folder("Spam")
        client.create_folder("Receipts")
        client.create_folder("Gesendet")
        append_copy(client, "Receipts", mail_lab, seed, in_receipts)
        append_copy(client, "Gesendet", mail_lab, seed, in_sent)
    inbox_token = send_copy(mail_lab, seed, "inbox")

    with SeedMailbox(endpoint(mail_lab, seed)) as mailbox:
        fm = mailbox.discover_folders()
        assert fm.spam is None
        assert fm.searchable == ["INBOX", "Receipts"]
        assert "No spam folder found" in fm.describe()
        found = mailbox.find(in_receipts, folder_map=fm)
        assert (found.placement, found.folder) == ("spam", "Receipts")
        assert mailbox.find(inbox_token, folder_map=fm).placement == "inbox"
        assert mailbox.find(in_sent, folder_map=fm) is None  # the seed's own sent mail


def test_a_stale_folder_map_is_looked_up_again(mail_lab):
    seed = mail_lab.add_account("yahoo.lab")
    token = send_copy(mail_lab, seed, "spam")
    stale = FolderMap(spam="Old Spam", searchable=["INBOX", "Old Spam"], spam_flagged=True)
    with SeedMailbox(endpoint(mail_lab, seed)) as mailbox:
        found = mailbox.find(token, folder_map=stale)
        assert mailbox.rediscovered is not None and mailbox.rediscovered.spam == "Bulk"
    assert (found.placement, found.folder) == ("spam", "Bulk")


def test_wrong_password_is_an_auth_error_and_never_shown(mail_lab):
    seed = mail_lab.add_account("outlook.lab")
    wrong = endpoint(mail_lab, seed, password="not-" + seed.password)
    with pytest.raises(MailboxAuthError) as info:
        SeedMailbox(wrong).open()
    assert seed.email in str(info.value)
    assert "AUTHENTICATIONFAILED" in str(info.value)
    assert wrong.password not in str(info.value)

    result = probe_mailbox(wrong)
    assert (result.ok, result.error_kind, result.folder_map) == (False, "auth", None)
    assert result.message.startswith("The server refused the password for ")


def test_the_password_never_reaches_the_logs(mail_lab, caplog):
    seed = mail_lab.add_account("gmail.lab")
    token = send_copy(mail_lab, seed, "spam")
    caplog.set_level(logging.DEBUG)
    with SeedMailbox(endpoint(mail_lab, seed)) as mailbox:
        assert mailbox.find(token).placement == "spam"
    assert "LOGIN" in caplog.text  # imapclient did log the session...
    assert seed.password not in caplog.text  # ...without the password


def test_nothing_listening_is_unavailable_at_once():
    ep = ImapEndpoint("127.0.0.1", free_port(), "plain", "a@b.lab", "pw", timeout=2.0)
    started = time.monotonic()
    with pytest.raises(MailboxUnavailable, match="connection refused"):
        SeedMailbox(ep).open()
    assert time.monotonic() - started < 1.0
    result = probe_mailbox(ep)
    assert (result.ok, result.error_kind) == (False, "unavailable")
    assert result.message.startswith(f"Could not reach 127.0.0.1:{ep.port}")


def test_a_server_that_never_greets_times_out():
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never speaks
        ep = ImapEndpoint("127.0.0.1", silent.getsockname()[1], "plain", "a", "pw", timeout=1.0)
        started = time.monotonic()
        with pytest.raises(MailboxUnavailable, match=r"within 1 s"):
            SeedMailbox(ep).open()
        assert 0.9 <= time.monotonic() - started < 2.0


def test_tls_to_a_plain_port_fails_cleanly(mail_lab):
    seed = mail_lab.add_account("yahoo.lab")
    with pytest.raises(MailboxUnavailable, match="TLS failed"):
        SeedMailbox(endpoint(mail_lab, seed, security="tls", timeout=2.0)).open()


def test_starttls_is_required_when_asked_for(mail_lab):
    seed = mail_lab.add_account("yahoo.lab")  # the lab's Dovecot offers no STARTTLS
    with pytest.raises(MailboxUnavailable, match="does not offer STARTTLS"):
        SeedMailbox(endpoint(mail_lab, seed, security="starttls", timeout=2.0)).open()


def test_tls_certificates_are_verified(tmp_path):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*_self_signed_cert(tmp_path))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=_tls_accept_once, args=(listener, context))
        server.start()
        ep = ImapEndpoint("127.0.0.1", listener.getsockname()[1], "tls", "a", "pw", timeout=2.0)
        with pytest.raises(MailboxUnavailable, match="certificate could not be verified"):
            SeedMailbox(ep).open()
        server.join(timeout=3)


def test_server_hanging_up_during_search_is_unavailable(mail_lab):
    seed = mail_lab.add_account("outlook.lab")
    token = send_copy(mail_lab, seed, "inbox")
    with ImapProxy(
        mail_lab.imap_port, drop_on=rb"^\S+ UID SEARCH ", bye_text=b"Shutting down"
    ) as proxy:
        mailbox = SeedMailbox(endpoint(mail_lab, seed, port=proxy.port))
        with mailbox:
            fm = mailbox.discover_folders()
            started = time.monotonic()
            with pytest.raises(MailboxUnavailable, match="Shutting down") as info:
                mailbox.find(token, folder_map=fm)
            assert time.monotonic() - started < 1.0
            assert "while searching" in str(info.value)
            assert not mailbox.is_open and not mailbox.is_alive()
            with pytest.raises(MailboxUnavailable):
                mailbox.find(token, folder_map=fm)


def test_a_stalled_read_times_out_within_the_endpoint_timeout(mail_lab):
    seed = mail_lab.add_account("outlook.lab")
    proxy = ImapProxy(mail_lab.imap_port, stall_on=rb"^\S+ UID SEARCH ")
    with proxy, SeedMailbox(endpoint(mail_lab, seed, port=proxy.port, timeout=1.0)) as mailbox:
        fm = mailbox.discover_folders()
        started = time.monotonic()
        with pytest.raises(MailboxUnavailable, match="did not answer within 1 s"):
            mailbox.find("sometoken", folder_map=fm)
        elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 1.5


def test_closing_does_not_wait_long_for_a_silent_server(mail_lab):
    seed = mail_lab.add_account("outlook.lab")
    proxy = ImapProxy(mail_lab.imap_port, stall_on=rb"^\S+ LOGOUT")
    with proxy:
        mailbox = SeedMailbox(endpoint(mail_lab, seed, port=proxy.port, timeout=10.0))
        mailbox.open()
        started = time.monotonic()
        mailbox.close()  # never raises, and gives up on LOGOUT well before 10 s
        assert time.monotonic() - started < 3.0
        assert not mailbox.is_open


def test_pool_keeps_one_login_per_key_and_reopens_after_discard(mail_lab):
    seed = mail_lab.add_account("yahoo.lab")
    token = send_copy(mail_lab, seed, "spam")
    with ImapProxy(mail_lab.imap_port) as proxy:
        ep = endpoint(mail_lab, seed, port=proxy.port)
        pool = MailboxPool()
        try:
            first = pool.mailbox("seed-1:cred-1", ep)
            assert first.find(token).placement == "spam"
            assert pool.mailbox("seed-1:cred-1", ep) is first
            assert proxy.logins() == 1 and proxy.connections == 1

            pool.discard("seed-1:cred-1")
            assert not first.is_open
            fresh = pool.mailbox("seed-1:cred-1", ep)
            assert fresh is not first and fresh.find(token).folder == "Bulk"
            assert proxy.logins() == 2
        finally:
            pool.close_all()
        assert not fresh.is_open and len(pool) == 0


def test_pool_replaces_dead_or_changed_sessions_and_evicts_the_oldest(mail_lab):
    seed = mail_lab.add_account("yahoo.lab")
    with ImapProxy(mail_lab.imap_port) as proxy:
        ep = endpoint(mail_lab, seed, port=proxy.port)
        pool = MailboxPool(max_size=2, idle_check_after=0)  # always NOOP before reuse
        try:
            a, b = pool.mailbox("a", ep), pool.mailbox("b", ep)
            assert pool.mailbox("a", ep) is a and proxy.logins() == 2

            proxy.sever()  # the server drops every idle session
            a2 = pool.mailbox("a", ep)
            assert a2 is not a and a2.is_alive() and proxy.logins() == 3

            pool.mailbox("c", ep)  # "b" is now the least recently used
            assert not b.is_open and len(pool) == 2

            moved = pool.mailbox("a", replace(ep, timeout=4.0))  # e.g. a new password
            assert moved is not a2 and not a2.is_open
        finally:
            pool.close_all()


def test_probe_mailbox_names_the_spam_folder(mail_lab):
    seed = mail_lab.add_account("yahoo.lab")
    result = probe_mailbox(endpoint(mail_lab, seed))
    assert (result.ok, result.error_kind) == (True, None)
    assert result.folder_map.spam == "Bulk"
    assert result.message == (
        "Signed in and found 3 folders. Inbox: INBOX. Spam: Bulk (flagged \\Junk by the server)."
    )


def test_gmail_categories_and_message_id_search(mail_lab):
    """Dovecot dressed as Gmail: X-GM-EXT-1 advertised, X-GM-RAW translated.

    category:promotions becomes the keyword $Promotions, rfc822msgid: a Message-ID
    header search, so the Gmail-only code paths run against a real server.
    """
    seed = mail_lab.add_account("gmail.lab")
    promo_token, by_id_token = secrets.token_hex(10), secrets.token_hex(10)
    message_id = f"<{by_id_token}@sender.lab>"
    with mail_lab.imap(seed) as client:
        msg = mail_lab.message(seed.email, headers={SEED_TOKEN_HEADER: promo_token})
        client.append("INBOX", msg.as_bytes(), flags=[b"$Promotions"])
        # No seed token header: only the Message-ID search can find this one.
        msg = mail_lab.message(seed.email, message_id=False, headers={"Message-ID": message_id})
        client.append("INBOX", msg.as_bytes())
    spam_token = send_copy(mail_lab, seed, "spam")

    gmail_like = ImapProxy(
        mail_lab.imap_port,
        rewrite_down=[(rb"CAPABILITY ", b"CAPABILITY X-GM-EXT-1 ")],
        rewrite_up=[
            (rb'X-GM-RAW "?category:promotions"?', b"KEYWORD $Promotions"),
            (rb'X-GM-RAW "?rfc822msgid:([^"\s]+)"?', rb'HEADER Message-ID "\1"'),
        ],
    )
    with gmail_like as proxy, SeedMailbox(endpoint(mail_lab, seed, port=proxy.port)) as mailbox:
        fm = mailbox.discover_folders()
        assert (fm.gmail_categories, fm.promotions, fm.spam) == (True, None, "[Gmail]/Spam")
        promo = mailbox.find(promo_token, folder_map=fm)
        by_id = mailbox.find(by_id_token, folder_map=fm, message_id=message_id)
        spam = mailbox.find(spam_token, folder_map=fm)
    assert (promo.placement, promo.folder) == ("promotions", "INBOX")
    assert (by_id.placement, by_id.folder) == ("inbox", "INBOX")
    assert (spam.placement, spam.folder) == ("spam", "[Gmail]/Spam")
    assert any(b"X-GM-RAW rfc822msgid:" in line for line in proxy.commands)


def _self_signed_cert(folder) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def _tls_accept_once(listener: socket.socket, context: ssl.SSLContext) -> None:
    listener.settimeout(3)
    with contextlib.suppress(OSError):
        conn, _ = listener.accept()
        with conn, contextlib.suppress(OSError):
            conn.settimeout(3)
            context.wrap_socket(conn, server_side=True).close()
