"""Bounce reports from real mail systems' shapes: who bounced, hard or soft, which message
and which send (VERP), and what is not a bounce at all."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailer_app.mail.bounces import (
    DELAYED,
    DSN,
    FAILED,
    HARD,
    HEURISTIC,
    SOFT,
    classify_status,
    parse_bounce,
    parse_verp,
    verp_address,
)

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "bounces"


def sample(name: str, *, crlf: bool = False) -> bytes:
    raw = (SAMPLES / name).read_bytes()
    return raw.replace(b"\n", b"\r\n") if crlf else raw


# file: ([(email, status, action, kind)], original Message-ID, VERP token, MTA, source)
EXPECTED = {
    "postfix_user_unknown.eml": (
        [
            ("jane.doe@example.org", "5.1.1", FAILED, HARD),
            ("sales@example.org", "5.7.1", FAILED, SOFT),
        ],
        "<19560a1b2c3.4d5e6f7a8b9c0d1e2f3a@example.com>",
        "r7f3k2a9q1",
        "mail.example.com",
        DSN,
    ),
    "exim_user_unknown.eml": (
        [("tom.baker@example.org", "5.1.1", FAILED, HARD)],
        "<19565b2c3d4.5e6f7a8b9c0d1e2f3a4b@example.com>",
        "x4m8p2c6w0",
        "relay.example.com",
        HEURISTIC,
    ),
    "office365_recipient_not_found.eml": (
        [("bob.smith@example.org", "5.1.10", FAILED, HARD)],
        "<19568c3d4e5.6f7a8b9c0d1e2f3a4b5c@example.com>",
        "k9d8s7a6f5",
        "EXAMPLEPR01MB1234.eurprd01.prod.exchangelabs.com",
        DSN,
    ),
    "gmail_no_such_account.eml": (
        [("amy.nguyen@example.org", "5.1.1", FAILED, HARD)],
        "<1956e4f5a6b.7c8d9e0f1a2b3c4d5e6f@example.com>",
        "g5h6j7k8l9",
        "example.org",
        DSN,
    ),
    "sendmail_user_unknown.eml": (
        [("carol.white@example.org", "5.1.1", FAILED, HARD)],
        "<1956f0a1b2c.3d4e5f6a7b8c9d0e1f2a@example.com>",
        None,  # sent with a plain return path (news@example.com): Message-ID only
        "mail.example.org",
        DSN,
    ),
    "postfix_delayed.eml": (
        [("dan.lee@example.org", "4.4.1", DELAYED, SOFT)],
        "<19560a1b2c4.5e6f7a8b9c0d1e2f3a4b@example.com>",
        "d3l4y5e6d7",
        "mail.example.com",
        DSN,
    ),
    "dovecot_mailbox_full.eml": (
        [("eve.park@example.org", "5.2.2", FAILED, SOFT)],
        "<19574b5c6d7.8e9f0a1b2c3d4e5f6a7b@example.com>",
        "m1b2x3f4l5",
        "mx.example.org",
        DSN,
    ),
    "qmail_user_unknown.eml": (
        [("gina.ross@example.org", "5.1.1", FAILED, HARD)],
        "<19575c6d7e8.9f0a1b2c3d4e5f6a7b8c@example.com>",
        "q2w3e4r5t6",
        "mail.example.org",
        HEURISTIC,
    ),
}


def test_every_sample_file_is_checked():
    names = {p.name for p in SAMPLES.glob("*.eml")}
    assert names == set(EXPECTED) | {"auto_reply_out_of_office.eml"}


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_is_attributed(name, crlf):
    recipients, message_id, token, mta, source = EXPECTED[name]
    bounce = parse_bounce(sample(name, crlf=crlf))
    assert bounce is not None
    got = [(r.email, r.status, r.action, r.kind) for r in bounce.recipients]
    assert got == recipients
    assert bounce.original_message_id == message_id
    assert bounce.verp_token == token
    assert bounce.reporting_mta == mta
    assert bounce.source == source
    for r in bounce.recipients:
        assert r.reason  # plain words for the UI
        assert "\n" not in r.diagnostic and len(r.diagnostic) <= 1000


def test_diagnostics_are_the_remote_reply_on_one_line():
    gmail = parse_bounce(sample("gmail_no_such_account.eml")).recipients[0]
    # the multi-line 550-5.1.1 reply is joined without its repeated codes
    assert gmail.diagnostic.startswith(
        "550 5.1.1 The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address for typos or unnecessary spaces."
    )
    assert "550-" not in gmail.diagnostic
    o365 = parse_bounce(sample("office365_recipient_not_found.eml")).recipients[0]
    assert o365.diagnostic.startswith("550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient ")
    assert "08DD5C1A2B3C4D5E]" in o365.diagnostic  # the long text is kept whole
    exim = parse_bounce(sample("exim_user_unknown.eml")).recipients[0]
    assert exim.diagnostic == (
        "550 5.1.1 <tom.baker@example.org>: Recipient address rejected: "
        "User unknown in local recipient table"
    )
    delayed = parse_bounce(sample("postfix_delayed.eml")).recipients[0]
    assert delayed.diagnostic == "connect to mx.example.org[192.0.2.60]:25: Connection timed out"
    full = parse_bounce(sample("dovecot_mailbox_full.eml")).recipients[0]
    assert full.reason == "the mailbox is full"


def test_an_out_of_office_reply_is_not_a_bounce():
    raw = sample("auto_reply_out_of_office.eml")
    assert b"Auto-Submitted: auto-replied" in raw  # the same header Postfix/Exim bounces carry
    assert b"bounces+o0f1f2c3e4@example.com" in raw  # and it came back to a VERP address
    assert parse_bounce(raw) is None


def test_a_person_answering_is_not_a_bounce():
    raw = (
        b"From: Ann Lee <ann@example.org>\r\nTo: bounces+abc123@example.com\r\n"
        b"Subject: Re: Spring news\r\nIn-Reply-To: <1.2@example.com>\r\n"
        b"Message-ID: <9.9@example.org>\r\n\r\n"
        b"Your message to bob@example.org could not be delivered? 550 5.1.1 user unknown\r\n"
    )
    assert parse_bounce(raw) is None


@pytest.mark.parametrize("raw", [b"", b"\x00\xff garbage", b"Subject: x\r\n\r\n", b"From: <>"])
def test_nonsense_is_not_a_bounce(raw):
    assert parse_bounce(raw) is None


def test_truncated_reports_never_raise():
    for name in sorted(EXPECTED):
        raw = sample(name)
        for cut in range(0, len(raw), 97):
            parse_bounce(raw[:cut])  # None or a Bounce, never an exception


# ---------------------------------------------------------------------------
# RFC 3464 reports built here, for the cases no sample covers


def dsn(
    recipient_blocks: str,
    *,
    headers: str = "",
    returned: str | None = "Message-ID: <orig.1@example.com>\nSubject: Hi\n",
    status_type: str = "message/delivery-status",
    report_type: str = "delivery-status",
    per_message: str = "Reporting-MTA: dns; mta.example.org\n",
) -> bytes:
    parts = [
        "Content-Type: text/plain\n\nA report.\n",
        f"Content-Type: {status_type}\n\n{per_message}\n{recipient_blocks.strip()}\n",
    ]
    if returned is not None:
        parts.append(f"Content-Type: text/rfc822-headers\n\n{returned}")
    body = "".join(f"--B\n{p}\n" for p in parts) + "--B--\n"
    text = (
        "From: MAILER-DAEMON@mta.example.org\nTo: bounces+t0k3n@example.com\n"
        f"{headers}Subject: Undelivered Mail\nMIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type={report_type}; boundary="B"\n\n{body}'
    )
    return text.encode()


def test_a_success_notice_is_not_a_bounce():
    raw = dsn("Final-Recipient: rfc822; ann@example.org\nAction: delivered\nStatus: 2.0.0\n")
    assert parse_bounce(raw) is None


def test_only_the_failed_recipients_of_a_mixed_report_are_listed():
    raw = dsn(
        "Final-Recipient: rfc822; ok@example.org\nAction: relayed\nStatus: 2.0.0\n\n"
        "Final-Recipient: rfc822; gone@example.org\nAction: failed\nStatus: 5.1.1\n"
    )
    assert [r.email for r in parse_bounce(raw).recipients] == ["gone@example.org"]


def test_a_read_receipt_is_not_a_bounce():
    raw = (
        b"From: ann@example.org\nTo: news@example.com\nSubject: Read: Spring news\n"
        b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=disposition-notification; boundary="B"\n\n'
        b"--B\nContent-Type: text/plain\n\nYour message was read.\n"
        b"--B\nContent-Type: message/disposition-notification\n\n"
        b"Final-Recipient: rfc822; ann@example.org\n"
        b"Disposition: manual-action/MDN-sent-manually; displayed\n--B--\n"
    )
    assert parse_bounce(raw) is None


def test_original_recipient_is_the_address_we_sent_to():
    raw = dsn(
        "Original-Recipient: rfc822; sales@example.org\n"
        "Final-Recipient: rfc822; <old.person@example.org>\n"
        "Action: failed\nStatus: 5.2.1\nDiagnostic-Code: smtp; 550 5.2.1 Account disabled\n"
    )
    r = parse_bounce(raw).recipients[0]
    assert (r.email, r.final_recipient, r.kind) == (
        "sales@example.org",
        "old.person@example.org",
        HARD,
    )
    assert r.reason == "the mailbox is disabled and accepts no mail"


def test_a_vague_status_is_refined_by_the_servers_reply():
    raw = dsn(
        "Final-Recipient: rfc822; ann@example.org\nAction: failed\nStatus: 5.0.0\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <ann@example.org>: Recipient address rejected\n"
    )
    r = parse_bounce(raw).recipients[0]
    assert (r.status, r.kind) == ("5.1.1", HARD)


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        ("550 No such user here", HARD),
        ("550 Requested action not taken: mailbox unavailable", SOFT),  # policy or user?
        ("550 Message rejected as spam", SOFT),
    ],
)
def test_an_unspecific_permanent_failure_is_hard_only_when_the_reply_is_plain(reply, kind):
    raw = dsn(
        "Final-Recipient: rfc822; ann@example.org\nAction: failed\nStatus: 5.0.0\n"
        f"Diagnostic-Code: smtp; {reply}\n"
    )
    r = parse_bounce(raw).recipients[0]
    assert (r.status, r.kind) == ("5.0.0", kind)


def test_a_message_given_up_after_temporary_failures_is_a_soft_failure():
    raw = dsn(
        "Final-Recipient: rfc822; ann@example.org\nAction: failed\nStatus: 4.4.7\n"
        "Diagnostic-Code: X-Postfix; delivery temporarily suspended: connect timed out\n"
    )
    r = parse_bounce(raw).recipients[0]
    assert (r.action, r.status, r.kind) == (FAILED, "4.4.7", SOFT)


def test_a_missing_action_is_read_from_the_status_class():
    raw = dsn("Final-Recipient: rfc822; ann@example.org\nStatus: 5.1.2\n")
    r = parse_bounce(raw).recipients[0]
    assert (r.action, r.kind) == (FAILED, HARD)


def test_message_id_comes_from_in_reply_to_when_nothing_is_returned():
    raw = dsn(
        "Final-Recipient: rfc822; ann@example.org\nAction: failed\nStatus: 5.1.1\n",
        headers="In-Reply-To: <sent.7@example.com>\n"
        "References: <a@x.example> <sent.7@example.com>\n",
        returned=None,
    )
    assert parse_bounce(raw).original_message_id == "<sent.7@example.com>"


def test_message_id_comes_from_the_last_reference_otherwise():
    raw = dsn(
        "Final-Recipient: rfc822; ann@example.org\nAction: failed\nStatus: 5.1.1\n",
        headers="References: <a@x.example>\n <sent.8@example.com>\n",
        returned=None,
    )
    assert parse_bounce(raw).original_message_id == "<sent.8@example.com>"


def test_message_id_from_the_report_fields_beats_in_reply_to():
    raw = dsn(
        "Final-Recipient: rfc822; ann@example.org\nAction: failed\nStatus: 5.1.1\n",
        headers="In-Reply-To: <other@example.com>\n",
        returned=None,
        per_message="Reporting-MTA: dns; mta.example.org\n"
        "X-Original-Message-ID: <sent.9@example.com>\n",
    )
    assert parse_bounce(raw).original_message_id == "<sent.9@example.com>"


def test_no_message_id_at_all_is_none():
    raw = dsn(
        "Final-Recipient: rfc822; ann@example.org\nAction: failed\nStatus: 5.1.1\n",
        returned=None,
    )
    bounce = parse_bounce(raw)
    assert bounce.original_message_id is None
    assert bounce.verp_token == "t0k3n"  # the send is still found by its return path


def test_an_smtputf8_report_is_read():
    raw = dsn(
        "Final-Recipient: utf-8; zoë@example.org\nAction: failed\nStatus: 5.1.1\n",
        status_type="message/global-delivery-status",
        report_type="global-delivery-status",
    )
    bounce = parse_bounce(raw)
    assert [(r.email, r.kind) for r in bounce.recipients] == [("zoë@example.org", HARD)]
    assert bounce.reporting_mta == "mta.example.org"
    assert bounce.original_message_id == "<orig.1@example.com>"


# ---------------------------------------------------------------------------
# Reports without RFC 3464 fields (flufl.bounce + the report's text)


def exim(failed: list[str], details: str) -> bytes:
    return (
        "From: Mail Delivery System <Mailer-Daemon@relay.example.com>\n"
        "To: bounces+e1x2@example.com\n"
        f"X-Failed-Recipients: {', '.join(failed)}\n"
        "Subject: Mail delivery failed: returning message to sender\n\n"
        "This message was created automatically by mail delivery software.\n\n"
        "A message that you sent could not be delivered to one or more of its\n"
        "recipients. This is a permanent error. The following address(es) failed:\n\n"
        f"{details}\n"
        "------ This is a copy of the message, including all the headers. ------\n\n"
        "Message-ID: <copy.1@example.com>\nTo: someone@example.org\n"
        "Subject: 550 5.1.1 should not be read from the copy\n\nHello\n"
    ).encode()


def test_each_recipient_of_a_text_report_gets_its_own_reply():
    raw = exim(
        ["ann@example.org", "jo.ann@example.org"],
        "  ann@example.org\n"
        "    SMTP error from remote mail server after RCPT TO:<ann@example.org>:\n"
        "    552 5.2.2 <ann@example.org>: Mailbox full\n"
        "  jo.ann@example.org\n    SMTP error from remote mail server after RCPT TO:\n"
        "    550 5.1.1 <jo.ann@example.org>: User unknown\n",
    )
    bounce = parse_bounce(raw)
    got = {r.email: (r.status, r.kind, r.diagnostic) for r in bounce.recipients}
    assert got == {
        "ann@example.org": ("5.2.2", SOFT, "552 5.2.2 <ann@example.org>: Mailbox full"),
        "jo.ann@example.org": ("5.1.1", HARD, "550 5.1.1 <jo.ann@example.org>: User unknown"),
    }
    assert bounce.original_message_id == "<copy.1@example.com>"
    assert bounce.verp_token == "e1x2"


@pytest.mark.parametrize(
    ("details", "status", "kind"),
    [
        ("  ann@example.org\n    550 No Such User Here\n", "5.0.0", HARD),
        ("  ann@example.org\n    Unrouteable address\n", "5.0.0", SOFT),
        ("  ann@example.org\n    host mx.example.org [192.0.2.4]: 554 Rejected\n", "5.0.0", SOFT),
    ],
)
def test_a_text_report_without_a_status_code_is_soft_unless_plain(details, status, kind):
    r = parse_bounce(exim(["ann@example.org"], details)).recipients[0]
    assert (r.status, r.kind, r.action) == (status, kind, FAILED)


# ---------------------------------------------------------------------------
# VERP


def test_verp_round_trip():
    address = verp_address("bounces@example.com", "r7f3k2a9q1")
    assert address == "bounces+r7f3k2a9q1@example.com"
    assert parse_verp(address) == "r7f3k2a9q1"
    assert parse_verp(f"Spring News <{address}>") == "r7f3k2a9q1"
    assert parse_verp(address, base_address="bounces@example.com") == "r7f3k2a9q1"
    assert parse_verp(address.upper(), base_address="bounces@example.com") == "R7F3K2A9Q1"
    assert parse_verp(address, base_address="returns@example.com") is None
    assert parse_verp(address, base_address="bounces@example.org") is None


@pytest.mark.parametrize(
    "address",
    ["bounces@example.com", "bounces+@example.com", "+tok@example.com", "bounces+a.b@example.com",
     "bounces+tok", "", "not an address"],
)  # fmt: skip
def test_parse_verp_refuses_what_is_not_a_verp_address(address):
    assert parse_verp(address) is None


@pytest.mark.parametrize(
    ("base", "token", "message"),
    [
        ("bounces", "tok", "not an email address"),
        ("me+x@example.com", "tok", "may not contain '+'"),
        ("bounces@example.com", "a b", "1 to 48 letters"),
        ("bounces@example.com", "", "1 to 48 letters"),
        ("b" * 40 + "@example.com", "t" * 30, "too long"),
    ],
)
def test_verp_address_refuses_bad_input(base, token, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        verp_address(base, token)


def test_verp_base_limits_which_return_path_counts():
    raw = sample("postfix_user_unknown.eml")
    assert parse_bounce(raw, verp_base="bounces@example.com").verp_token == "r7f3k2a9q1"
    assert parse_bounce(raw, verp_base="BOUNCES@EXAMPLE.COM").verp_token == "r7f3k2a9q1"
    other = parse_bounce(raw, verp_base="returns@example.com")
    assert other.verp_token is None
    assert other.original_message_id  # still attributable by Message-ID


# ---------------------------------------------------------------------------
# Hard or soft


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("5.1.1", HARD),  # bad destination mailbox
        ("5.1.2", HARD),  # bad destination system (domain)
        ("5.1.3", HARD),  # bad address syntax
        ("5.1.6", HARD),  # moved, no forwarding address
        ("5.1.10", HARD),  # null MX (RFC 7505) / Office 365 RecipientNotFound
        ("5.2.1", HARD),  # mailbox disabled
        ("5.4.4", HARD),  # unable to route: the domain has no mail server
        ("5.1.7", SOFT),  # OUR sender address refused
        ("5.1.8", SOFT),  # OUR sender domain refused
        ("5.2.2", SOFT),  # mailbox full
        ("5.2.3", SOFT),  # message too big for the mailbox
        ("5.3.4", SOFT),  # message too big for the system
        ("5.4.1", SOFT),  # no answer from host
        ("5.5.2", SOFT),  # protocol: syntax error
        ("5.6.0", SOFT),  # content
        ("5.7.1", SOFT),  # policy: spam, block list
        ("5.7.26", SOFT),  # DMARC / authentication failed: our problem
        ("5.0.0", SOFT),  # unspecified
        ("4.2.2", SOFT),  # temporarily full
        ("4.7.0", SOFT),  # greylisting, rate limits
        ("", SOFT),
        ("nonsense", SOFT),
    ],
)
def test_classify_status(status, kind):
    got, reason = classify_status(status)
    assert got == kind
    assert reason


def test_classify_status_reads_the_reply_only_for_unspecific_codes():
    assert classify_status("5.0.0", "550 User unknown")[0] == HARD
    assert classify_status("5.7.1", "550 User unknown")[0] == SOFT  # the code says policy
    assert classify_status("4.0.0", "450 User unknown")[0] == SOFT  # temporary stays soft
