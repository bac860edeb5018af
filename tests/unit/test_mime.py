"""The MIME writer: every message parses back with the `email` package to exactly what
went in, stays within the line limits, and no header input can add a header."""

from __future__ import annotations

import email
import email.header
import email.policy
import re
from datetime import UTC, datetime, timedelta, timezone
from email.headerregistry import Address

import pytest

from mailer_app.mail import mime
from mailer_app.mail.mime import AttachmentFile, UnsafeHeader

WHEN = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
URL = "https://mail.example.org/unsubscribe/abc.DEF_123-x"
HTML = "<html><body><p>Hello Zoë, 日本 😀</p><p>a=b ?= =?x?=</p></body></html>"
TEXT = "Hello Zoë\n\nLine two with a trailing space \nTabs\tinside\n.\nLast line"


def skeleton(**overrides) -> mime.MessageSkeleton:
    values = {
        "from_name": "News",
        "from_address": "news@example.com",
        "reply_to": None,
        "campaign_files": (),
        "message_id_domain": "example.com",
    }
    values.update(overrides)
    return mime.compile_skeleton(**values)


def assemble(sk: mime.MessageSkeleton | None = None, **overrides) -> bytes:
    values = {
        "to_name": "Ann Lee",
        "to_address": "ann@example.com",
        "subject": "Spring news",
        "html": HTML,
        "text": TEXT,
        "message_id": "<1.abc@example.com>",
        "date": WHEN,
        "unsubscribe_url": URL,
    }
    values.update(overrides)
    return (sk or skeleton()).assemble(**values)


def parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def check_lines(data: bytes) -> None:
    """CRLF only, no line over 998; header lines over 78 only for one unbreakable atom."""
    assert b"\n" not in data.replace(b"\r\n", b""), "a bare LF"
    assert b"\r" not in data.replace(b"\r\n", b""), "a bare CR"
    lines = data.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    for line in head:
        if len(line) > 78:
            assert b" " not in line.split(b": ", 1)[-1].strip(), line
    body = data.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 78


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


# --- the shape and the round trip -----------------------------------------------------------


def test_a_message_without_files_is_multipart_alternative_text_then_html():
    data = assemble()
    check_lines(data)
    message = parse(data)
    assert message.defects == []
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.iter_parts()
    assert text.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
    for part in (text, html):
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    # Byte-exact after decoding (line breaks are CRLF on the wire, as MIME requires).
    assert text.get_payload(decode=True) == crlf(TEXT)
    assert html.get_payload(decode=True) == crlf(HTML)
    assert message["From"].addresses[0] == Address("News", "news", "example.com")
    assert message["To"].addresses[0] == Address("Ann Lee", "ann", "example.com")
    assert message["Subject"] == "Spring news"
    assert message["Date"].datetime == WHEN
    assert message["Message-ID"] == "<1.abc@example.com>"
    assert message["MIME-Version"] == "1.0"
    assert message["List-Unsubscribe"] == f"<{URL}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Reply-To"] is None
    assert list(message.iter_attachments()) == []


def test_the_same_inputs_give_the_same_bytes_and_the_boundary_never_clashes():
    assert assemble() == assemble()
    first = parse(assemble())
    boundary = first.get_boundary()
    assert boundary.startswith("=_")
    # Even a body that contains the boundary text verbatim parses back intact.
    tricky = f"--{boundary}\n--{boundary}--\n"
    message = parse(assemble(text=tricky, html=tricky))
    text, html = message.iter_parts()
    assert text.get_payload(decode=True) == crlf(tricky)
    assert html.get_payload(decode=True) == crlf(tricky)
    assert parse(assemble(message_id="<2.abc@example.com>")).get_boundary() != boundary


@pytest.mark.parametrize(
    "subject",
    [
        "Café crème for you",
        "日本語のニュースレター",
        "Party 🎉🎉 tonight 👩‍👩‍👧",
        "Looks encoded =?utf-8?q?hello?= but is not",
        "A very long plain ASCII subject line that goes on well past seventy-eight characters "
        "and must be folded somewhere sensible",
        "Ünïcödé " * 30,
        "a" * 200,  # one word longer than a line
        "Spaces  kept   as    typed",
        "Mixed: prix 10 € — 日本 and more words after it to force several encoded words ✓",
    ],
)
def test_subjects_decode_back_to_exactly_the_text(subject):
    subject = subject.strip()
    data = assemble(subject=subject)
    check_lines(data)
    assert parse(data)["Subject"] == subject


@pytest.mark.parametrize(
    "name",
    [
        "Zoë Smith",
        "日本 太郎",
        "Emoji 😀 Fan",
        'Ann "The Boss" Lee, Jr.',
        "O'Brien (Sales)",
        "=?utf-8?q?not_encoded?=",
        "Very Long Name " * 8,
        "José García López de la Fuente y Martínez and Ñúñez of Ålborg in Østfold, Smith",
    ],
)
def test_display_names_decode_back_to_exactly_the_name(name):
    name = " ".join(name.split())
    sk = skeleton(from_name=name)
    data = assemble(sk, to_name=name)
    check_lines(data)
    message = parse(data)
    assert message["To"].addresses[0].display_name == name
    assert message["From"].addresses[0].display_name == name
    assert message["To"].addresses[0].addr_spec == "ann@example.com"


def test_a_long_non_ascii_name_is_split_into_encoded_words_at_spaces():
    name = " ".join(["Ünïcödé Nämé"] * 6)
    data = assemble(skeleton(from_name=name), to_name=name)
    check_lines(data)
    raw = parse(data)["To"].defects, data.split(b"\r\nTo: ", 1)[1].split(b" <ann@", 1)[0]
    words = raw[1].decode().split()
    assert len(words) > 1 and all(w.startswith("=?utf-8?q?") for w in words)
    assert all(w.endswith("_?=") for w in words[:-1])  # each ends after a space
    # RFC 2047 (6.2): whitespace between adjacent encoded words is not shown.
    decoded = email.header.make_header(email.header.decode_header(raw[1].decode()))
    assert str(decoded) == name
    # (Python's own address parser adds a space between adjacent encoded words in a
    # display name, against 6.2; it still gets every character.)
    shown = parse(data)["To"].addresses[0].display_name
    assert shown.split() == name.split()


def test_non_ascii_domains_are_written_in_idna_form_and_local_parts_refused():
    sk = skeleton(from_address="news@bücher.de", message_id_domain="bücher.de")
    data = assemble(sk, to_address="zoë@例え.jp".replace("zoë", "zoe"))
    message = parse(data)
    assert message["To"].addresses[0].domain == "xn--r8jz45g.jp"
    assert message["From"].addresses[0].domain == "xn--bcher-kva.de"
    assert data.isascii()
    assert mime.new_message_id("bücher.de").endswith("@xn--bcher-kva.de>")
    with pytest.raises(UnsafeHeader, match="SMTPUTF8"):
        assemble(sk, to_address="zoë@example.com")
    for bad in ("no-at-sign", "@example.com", "a b@example.com", "ann@exa mple.com", "a@-x..com"):
        with pytest.raises(UnsafeHeader):
            assemble(sk, to_address=bad)


def test_files_are_base64_parts_of_multipart_mixed_with_rfc2231_names(tmp_path):
    on_disk = tmp_path / "invoice.pdf"
    on_disk.write_bytes(bytes(range(256)) * 40)
    long_name = "Rechnung für März 2025 – Kundennummer 1234567890 – bitte aufbewahren.pdf"
    sk = skeleton(
        reply_to="help@example.com",
        campaign_files=[AttachmentFile("Terms & conditions.txt", "text/plain", data=b"Terms\n")],
    )
    data = assemble(
        sk,
        attachments=[
            AttachmentFile("日本.pdf", "application/pdf", path=on_disk),
            AttachmentFile(long_name, "application/pdf", data=b"%PDF"),
            AttachmentFile('quote "this".bin', "application/octet-stream", data=b""),
        ],
    )
    check_lines(data)
    message = parse(data)
    assert message.defects == []
    assert message.get_content_type() == "multipart/mixed"
    assert message["Reply-To"].addresses[0].addr_spec == "help@example.com"
    parts = list(message.iter_parts())
    assert parts[0].get_content_type() == "multipart/alternative"
    text, html = parts[0].iter_parts()
    assert text.get_payload(decode=True) == crlf(TEXT)
    files = [(p.get_filename(), p.get_content_type(), p.get_payload(decode=True))
             for p in message.iter_attachments()]  # fmt: skip
    assert files == [
        ("Terms & conditions.txt", "text/plain", b"Terms\n"),
        ("日本.pdf", "application/pdf", bytes(range(256)) * 40),
        (long_name, "application/pdf", b"%PDF"),
        ('quote "this".bin', "application/octet-stream", b""),
    ]
    for part in message.iter_attachments():
        assert part.get_content_disposition() == "attachment"
        assert part["Content-Transfer-Encoding"] == "base64"


def test_long_lines_and_odd_line_breaks_in_bodies_survive():
    text = "x" * 5000 + "\r\nold mac line\rnext\nend "
    html = "<p>" + "y" * 3000 + "</p>"
    data = assemble(text=text, html=html)
    check_lines(data)
    part_text, part_html = parse(data).iter_parts()
    assert part_text.get_payload(decode=True) == crlf("x" * 5000 + "\nold mac line\nnext\nend ")
    assert part_html.get_payload(decode=True) == html.encode()


def test_the_test_banner_is_visible_in_both_parts_and_extra_headers_are_added():
    data = assemble(test_banner="TEST copy", extra_headers={"X-Mailer-App-Test": "yes"})
    message = parse(data)
    assert message["X-Mailer-App-Test"] == "yes"
    text, html = message.iter_parts()
    assert text.get_content().startswith("*** TEST copy ***")
    assert re.search(r"<body><div [^>]*>TEST copy</div><p>Hello", html.get_content())
    # Without a <body> tag the banner goes first.
    html = parse(assemble(html="<p>x</p>", test_banner="T")).get_body(("html",)).get_content()
    assert html.startswith("<div") and html.endswith("<p>x</p>")


def test_list_unsubscribe_carries_the_link_and_the_mailto():
    message = parse(assemble(unsubscribe_mailto="mailto:unsub@example.com?subject=stop"))
    assert message["List-Unsubscribe"] == f"<{URL}>, <mailto:unsub@example.com?subject=stop>"


def test_dates_are_rfc5322_in_the_given_zone_and_naive_times_are_utc():
    paris = timezone(timedelta(hours=1))
    message = parse(assemble(date=datetime(2025, 1, 2, 3, 4, 5, tzinfo=paris)))
    assert message["Date"] == "Thu, 02 Jan 2025 03:04:05 +0100"
    message = parse(assemble(date=datetime(2025, 1, 2, 3, 4, 5)))
    assert message["Date"].datetime == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_message_ids_are_unique_and_well_formed():
    ids = {mime.new_message_id("example.com") for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"<[0-9a-f]+\.[0-9a-f]{20}@example\.com>", i) for i in ids)


# --- header injection -------------------------------------------------------------------------

ATTACKS = [
    "x\r\nBcc: victim@example.com",
    "x\nBcc: victim@example.com",
    "x\rBcc: victim@example.com",
    "x\x00y",
    "x\u2028Bcc: victim@example.com",
    "x\x85y",
    "x\ty",
    "x\x1by",
]


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize(
    "field",
    ["from_name", "from_address", "reply_to", "message_id_domain", "campaign_file_name",
     "campaign_file_type"],
)  # fmt: skip
def test_skeleton_inputs_refuse_line_breaks_and_controls(field, attack):
    values = {}
    if field == "campaign_file_name":
        values["campaign_files"] = [AttachmentFile(attack, "text/plain", data=b"x")]
    elif field == "campaign_file_type":
        values["campaign_files"] = [AttachmentFile("a.txt", "text/" + attack, data=b"x")]
    elif field in ("from_address", "reply_to"):
        values[field] = attack.replace("x", "a@example.com", 1)
    else:
        values[field] = attack
    with pytest.raises(UnsafeHeader):
        skeleton(**values)


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize(
    "field",
    ["to_name", "to_address", "subject", "message_id", "unsubscribe_url", "unsubscribe_mailto",
     "test_banner", "extra_value", "extra_name", "file_name", "file_type"],
)  # fmt: skip
def test_message_inputs_refuse_line_breaks_and_controls(field, attack):
    values: dict = {}
    if field == "to_address":
        values[field] = attack.replace("x", "ann@example.com", 1)
    elif field == "message_id":
        values[field] = "<" + attack.replace("x", "a@example.com", 1) + ">"
    elif field == "unsubscribe_url":
        values[field] = URL + attack
    elif field == "unsubscribe_mailto":
        values[field] = "mailto:u@example.com" + attack
    elif field == "extra_value":
        values["extra_headers"] = {"X-Campaign": attack}
    elif field == "extra_name":
        values["extra_headers"] = {"X-" + attack: "1"}
    elif field == "file_name":
        values["attachments"] = [AttachmentFile(attack, "text/plain", data=b"x")]
    elif field == "file_type":
        values["attachments"] = [AttachmentFile("a.txt", "text/plain" + attack, data=b"x")]
    else:
        values[field] = attack
    with pytest.raises(UnsafeHeader):
        assemble(**values)


def test_extra_headers_cannot_replace_the_messages_own():
    for name in ("To", "bcc", "Subject", "Content-Type", "From", "List-Unsubscribe"):
        with pytest.raises(UnsafeHeader, match="written by the message"):
            assemble(extra_headers={name: "x"})
    for name in ("X Space", "X:Colon", "", "Ünï"):
        with pytest.raises(UnsafeHeader, match="not a header name"):
            assemble(extra_headers={name: "x"})
    with pytest.raises(UnsafeHeader):
        assemble(unsubscribe_url="javascript:alert(1)")
    with pytest.raises(UnsafeHeader):
        assemble(unsubscribe_url="https://x.example/<script>")


def test_no_header_input_ever_adds_a_header():
    """Whatever passes the checks, the parsed message has exactly the headers written."""
    names = ["Zoë", 'A "quoted", name', "=?utf-8?b?QmNjOiB4?=", "Bcc: evil@example.com",
             "To: evil@example.com", "日本 <evil@example.com>"]  # fmt: skip
    for value in names:
        message = parse(assemble(to_name=value, subject=value))
        assert sorted(message.keys()) == sorted(
            ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "List-Unsubscribe",
             "List-Unsubscribe-Post", "Content-Type"]
        )  # fmt: skip
        assert message["Subject"] == value
        assert [a.addr_spec for a in message["To"].addresses] == ["ann@example.com"]
        assert message["To"].addresses[0].display_name == value
