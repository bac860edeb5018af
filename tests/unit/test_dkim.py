"""DKIM signing: messages written by mail/mime.py, signed by DkimSigner, verify with
dkimpy against the published record (a dnsfunc, no network); any change to the body,
a signed header, or an added copy of a signed header fails verification; keys,
domains and selectors that cannot work are refused in plain words."""

from __future__ import annotations

import base64
import email
import email.policy
import re
from datetime import UTC, datetime

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from mailer_app.mail import mime
from mailer_app.mail.dkim import (
    SIGNED_HEADERS,
    DkimKeyError,
    DkimSigner,
    check_domain,
    check_selector,
    generate_key,
    load_private_key,
    split_txt,
)
from mailer_app.mail.mime import AttachmentFile

WHEN = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)

# 512 bits: too short for DKIM (made with `openssl genpkey`, RSA 512; test data only).
RSA_512 = """-----BEGIN PRIVATE KEY-----
MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAmHujGRhDlYVyZUFD
gC+9eeGtl4Ko+mR22c14zdZQHLs/6F7BwIXESy0UEC/DXw3XUh05K+oB13XZZnlL
EsRO/QIDAQABAkAiiq9xudtlfatiYJxn52imuYbXcZPR1PxPbopVJp1TRIY4uNPF
XM+89iLVJLuVoFYbd95O4EiNH7Q/elczq81BAiEAyPyNxMJ5lJHejxd6iGXPlIwt
uK1dtJYezWarXpqip9kCIQDCOFw9aVzDtpWZ/JzM/LF840jlquN+7WSuI30bpdgt
xQIhAMUEpSgSh0H3N9bG6iuYucJhI1ScRXYHjoxEr4peRUIJAiBPSHSW+SjOF/2v
84gKweiuQ5Xhc0YU7VGZKJGMtMGvxQIhAISbr9ebQx9DiREtZrqWo4tUtIMdeCda
+2a4K61KeBZz
-----END PRIVATE KEY-----
"""


@pytest.fixture(scope="module")
def rsa_pem() -> str:
    return generate_key("rsa", 2048)


@pytest.fixture(scope="module")
def ed_pem() -> str:
    return generate_key("ed25519")


def build(*, reply_to: str | None = None, files=(), **overrides) -> bytes:
    """A campaign message as the build writes it (mail/mime.py)."""
    skeleton = mime.compile_skeleton(
        from_name="Example News",
        from_address="news@example.com",
        reply_to=reply_to,
        campaign_files=files,
        message_id_domain="example.com",
    )
    values = {
        "to_name": "Zoë Lee",
        "to_address": "zoe@example.org",
        "subject": "Spring news for Zoë",
        "html": "<html><body><p>Hello Zoë, 日本 😀</p></body></html>",
        "text": "Hello Zoë\n\nLine with a trailing space \nLast line",
        "message_id": "<1.abc@example.com>",
        "date": WHEN,
        "unsubscribe_url": "https://mail.example.com/u/abc.DEF_123",
    }
    values.update(overrides)
    return skeleton.assemble(**values)


def dns_for(*signers: DkimSigner):
    """A dkimpy dnsfunc answering for these signers only (no network)."""
    records = {f"{s.dns_name}.".encode(): s.public_dns_record().encode() for s in signers}

    def lookup(name: bytes, timeout: int = 5):
        return records.get(name if name.endswith(b".") else name + b".")

    return lookup


def verifies(message: bytes, *signers: DkimSigner) -> bool:
    return dkim.verify(message, dnsfunc=dns_for(*signers))


def signature_tags(message: bytes) -> dict[str, str]:
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    value = re.sub(r"\s+", "", parsed["DKIM-Signature"])
    return dict(part.split("=", 1) for part in value.split(";") if part)


def head_and_body(message: bytes) -> tuple[bytes, bytes]:
    head, body = message.split(b"\r\n\r\n", 1)
    return head, body


# --- signing and verifying ------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_a_built_message_signed_verifies_with_dkimpy(algorithm, rsa_pem, ed_pem):
    signer = DkimSigner("example.com", "mail", rsa_pem if algorithm == "rsa" else ed_pem)
    message = build(reply_to="help@example.com")
    signed = signer.sign(message)

    assert signed.startswith(b"DKIM-Signature: ")
    assert signed.endswith(message)  # only a header in front; nothing else changed
    assert verifies(signed, signer)
    tags = signature_tags(signed)
    assert tags["a"] == f"{algorithm}-sha256"
    assert (tags["c"], tags["d"], tags["s"]) == ("relaxed/relaxed", "example.com", "mail")
    # Every listed header is signed, and each once more than the message has it, so
    # none can be added later (Reply-To is there once: listed twice).
    signed_names = tags["h"].lower().split(":")
    for name in SIGNED_HEADERS:
        present = 1 if name != "Reply-To" or b"Reply-To:" in message else 0
        assert signed_names.count(name.lower()) == present + 1, name


def test_a_message_with_files_verifies_and_a_signature_is_one_header(rsa_pem):
    signer = DkimSigner("example.com", "mail", rsa_pem)
    files = (AttachmentFile("report é.pdf", "application/pdf", data=bytes(range(256)) * 40),)
    message = build(files=files, attachments=(AttachmentFile("a.txt", "text/plain", b"hi\n"),))
    signed = signer.sign(message)
    assert verifies(signed, signer)
    parsed = email.message_from_bytes(signed, policy=email.policy.default)
    assert parsed.defects == []
    original = email.message_from_bytes(message, policy=email.policy.default)
    assert parsed.keys() == ["DKIM-Signature", *original.keys()]
    # The signature header itself: CRLF line ends, folded under 998 characters.
    head, _ = head_and_body(signed)
    assert b"\n" not in head.replace(b"\r\n", b"")
    assert max(len(line) for line in head.split(b"\r\n")) < 998


def test_a_changed_body_fails(rsa_pem):
    signer = DkimSigner("example.com", "mail", rsa_pem)
    signed = signer.sign(build())
    assert b"Last line" in signed
    assert not verifies(signed.replace(b"Last line", b"Last link"), signer)


@pytest.mark.parametrize(
    "tamper",
    [
        # a changed subject
        lambda m: m.replace(b"Subject: Spring news", b"Subject: Winter news", 1),
        # a changed recipient
        lambda m: m.replace(b"zoe@example.org", b"eve@example.org", 1),
        # a changed unsubscribe link
        lambda m: m.replace(b"https://mail.example.com/u/abc", b"https://evil.example/u/abc", 1),
        # a second Subject added on top (oversigning makes the extra copy count)
        lambda m: b"Subject: You won\r\n" + m,
        # a Reply-To the message did not have
        lambda m: m.replace(b"\r\n\r\n", b"\r\nReply-To: eve@example.org\r\n\r\n", 1),
        # a second From, on top
        lambda m: b"From: eve@example.org\r\n" + m,
    ],
    ids=["subject", "to", "unsubscribe", "extra-subject", "added-reply-to", "extra-from"],
)
def test_a_changed_or_added_signed_header_fails(rsa_pem, tamper):
    signer = DkimSigner("example.com", "mail", rsa_pem)
    signed = signer.sign(build())
    tampered = tamper(signed)
    assert tampered != signed
    assert not verifies(tampered, signer)


def test_relaxed_canonicalization_survives_what_relays_do(rsa_pem):
    signer = DkimSigner("example.com", "mail", rsa_pem)
    signed = signer.sign(build())
    # A relay adds a trace header, refolds a header and changes runs of spaces: the
    # signature still holds (relaxed/relaxed); with simple it would not.
    relayed = b"Received: from relay.example.net by mx.example.org\r\n" + signed.replace(
        b"Subject: Spring news", b"Subject:  Spring\r\n   news", 1
    )
    assert verifies(relayed, signer)


def test_the_wrong_published_key_fails(rsa_pem):
    signer = DkimSigner("example.com", "mail", rsa_pem)
    impostor = DkimSigner("example.com", "mail", generate_key("rsa", 2048))
    assert not verifies(signer.sign(build()), impostor)


def test_subdomain_and_idn_domains_are_written_in_ascii(rsa_pem):
    signer = DkimSigner("Mail.Bücher.Example", "S2025.News", rsa_pem)
    assert (signer.domain, signer.selector) == ("mail.xn--bcher-kva.example", "s2025.news")
    assert signer.dns_name == "s2025.news._domainkey.mail.xn--bcher-kva.example"
    signed = signer.sign(build())
    assert signature_tags(signed)["d"] == "mail.xn--bcher-kva.example"
    assert verifies(signed, signer)


# --- header injection -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "domain, selector",
    [
        ("example.com\r\nBcc: eve@example.org", "mail"),
        ("example.com", "mail\r\nBcc: eve@example.org"),
        ("example.com", "mail\nX-Evil: 1"),
        ("example.com; s=evil", "mail"),
        ("example.com", "mail; d=evil.example"),
        ("example.com", "ma il"),
        ("example.com\x00", "mail"),
    ],
)
def test_domain_and_selector_cannot_carry_a_header_or_a_tag(domain, selector, rsa_pem):
    with pytest.raises(DkimKeyError):
        DkimSigner(domain, selector, rsa_pem)


def test_a_merge_field_cannot_add_a_header_to_a_signed_message(rsa_pem):
    # The MIME writer refuses line breaks in every header input, so nothing typed by a
    # contact ends up as a header that the signature would then vouch for.
    with pytest.raises(mime.UnsafeHeader):
        build(subject="Hi\r\nBcc: eve@example.org")
    with pytest.raises(mime.UnsafeHeader):
        build(to_name="Zoë\nReply-To: eve@example.org")


# --- keys -------------------------------------------------------------------------------------


def test_public_record_is_the_spki_of_the_key(rsa_pem, ed_pem):
    rsa_signer = DkimSigner("example.com", "mail", rsa_pem)
    record = rsa_signer.public_dns_record()
    assert record.startswith("v=DKIM1; k=rsa; p=")
    public = serialization.load_der_public_key(base64.b64decode(record.split("p=", 1)[1]))
    private = serialization.load_pem_private_key(rsa_pem.encode(), password=None)
    assert public.public_numbers() == private.public_key().public_numbers()
    assert rsa_signer.key.bits == 2048 and rsa_signer.key.advice == []

    ed_signer = DkimSigner("example.com", "mail", ed_pem)
    record = ed_signer.public_dns_record()
    assert record.startswith("v=DKIM1; k=ed25519; p=")
    assert len(base64.b64decode(record.split("p=", 1)[1])) == 32
    assert "Gmail" in ed_signer.key.advice[0]


def test_a_2048_bit_record_is_split_into_dns_strings(rsa_pem):
    record = DkimSigner("example.com", "mail", rsa_pem).public_dns_record()
    pieces = split_txt(record)
    assert len(record) > 255 and len(pieces) == 2
    assert all(len(p) <= 255 for p in pieces) and "".join(pieces) == record


def test_pkcs1_and_windows_line_ends_are_accepted(rsa_pem):
    key = serialization.load_pem_private_key(rsa_pem.encode(), password=None)
    pkcs1 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    assert pkcs1.startswith("-----BEGIN RSA PRIVATE KEY-----")
    pasted = "\n  " + pkcs1.replace("\n", "\r\n") + "  \n"
    signer = DkimSigner("example.com", "mail", pasted)
    assert signer.key.pem == load_private_key(rsa_pem).pem  # normalized to PKCS#8
    assert verifies(signer.sign(build()), signer)


def test_a_1024_bit_key_works_with_advice_to_use_2048():
    key = load_private_key(generate_key("rsa", 1024))
    assert key.bits == 1024
    assert "2048" in key.advice[0]
    signer = DkimSigner("example.com", "mail", key.pem)
    assert verifies(signer.sign(build()), signer)


def _pem(key, encryption=None) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        encryption or serialization.NoEncryption(),
    ).decode()


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: RSA_512, "only 512 bits"),
        (lambda: _pem(ec.generate_private_key(ec.SECP256R1())), "RSA or Ed25519"),
        (
            lambda: _pem(
                ed25519.Ed25519PrivateKey.generate(),
                serialization.BestAvailableEncryption(b"passphrase"),
            ),
            "passphrase",
        ),
        (
            lambda: (
                rsa.generate_private_key(public_exponent=65537, key_size=2048)
                .public_key()
                .public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                .decode()
            ),
            "public key",
        ),
        (lambda: "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----", "PEM"),
        (lambda: "hunter2", "PEM"),
        (lambda: "   ", "Paste the private key"),
    ],
    ids=["rsa-512", "ec", "encrypted", "public-key", "garbage-pem", "not-pem", "empty"],
)
def test_unusable_keys_are_refused_in_plain_words(make, words):
    text = make()
    with pytest.raises(DkimKeyError) as refused:
        load_private_key(text)
    message = str(refused.value)
    assert words in message
    # The message never repeats the key.
    for line in text.splitlines():
        if len(line) > 20 and "-----" not in line:
            assert line not in message


def test_the_key_is_in_no_repr(rsa_pem):
    signer = DkimSigner("example.com", "mail", rsa_pem)
    body_line = rsa_pem.splitlines()[1]
    for text in (repr(signer), repr(signer.key), str(signer.key)):
        assert body_line not in text and "PRIVATE" not in text


@pytest.mark.parametrize("selector", ["mail", "s1", "2025-01", "news.s2025", "A-b.C9"])
def test_selectors_that_are_fine(selector):
    assert check_selector(selector) == selector.lower()


@pytest.mark.parametrize("selector", ["", "-mail", "mail-", "a..b", "ma_il", "x" * 64, "mail."])
def test_selectors_that_are_refused(selector):
    with pytest.raises(DkimKeyError, match="selector"):
        check_selector(selector)


@pytest.mark.parametrize("domain", ["com", "", "exa mple.com", "example..com", "-x.example"])
def test_domains_that_are_refused(domain):
    with pytest.raises(DkimKeyError):
        check_domain(domain)
