"""Log redaction: every credential form is masked, in messages, %-args and tracebacks."""

from __future__ import annotations

import base64
import logging

import pytest

from mailer_app import logs
from mailer_app.logs import (
    MASK,
    RedactingFilter,
    forget_registered_secrets,
    redact,
    register_secret,
    setup_logging,
)


@pytest.fixture(autouse=True)
def _clean_registry():
    forget_registered_secrets()
    yield
    forget_registered_secrets()


@pytest.fixture
def restore_logging():
    """setup_logging changes the root logger: put it back after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        handler.filters = [f for f in handler.filters if not isinstance(f, RedactingFilter)]
    root.setLevel(level)
    logging.captureWarnings(False)


@pytest.mark.parametrize(
    ("text", "secret", "expected"),
    [
        ("login password=hunter2-x user=bob", "hunter2-x", "login password=[REDACTED] user=bob"),
        (
            '{"password": "two words", "user": "bob"}',
            "two words",
            '{"password": "[REDACTED]", "user": "bob"}',
        ),
        ("{'passwd': 'p4ss'}", "p4ss", "{'passwd': '[REDACTED]'}"),
        ("smtp_password: abc123def", "abc123def", "smtp_password: [REDACTED]"),
        ("client_secret=xyz789,next", "xyz789", "client_secret=[REDACTED],next"),
        (
            "GET /cb?access_token=tok123&state=1",
            "tok123",
            "GET /cb?access_token=[REDACTED]&state=1",
        ),
        ('api_key="k-998877"', "k-998877", 'api_key="[REDACTED]"'),
        ("X-Api-Key: key-5566", "key-5566", "X-Api-Key: [REDACTED]"),
        (
            "Authorization: Bearer eyJhbGciOi.abc.def",
            "eyJhbGciOi",
            "Authorization: Bearer [REDACTED]",
        ),
        (
            '{"Authorization": "Basic dXNlcjpwYXNzd29yZA=="}',
            "dXNlcjpwYXNzd29yZA",
            '{"Authorization": "Basic [REDACTED]"}',
        ),
        (
            "token refused: Bearer ya29.a0AfH6SMBxyzxyzxyz",
            "ya29.a0AfH6SMB",
            "token refused: Bearer [REDACTED]",
        ),
        (
            "send: 'AUTH PLAIN AGJvYgBodW50ZXIy\\r\\n'",
            "AGJvYgBodW50ZXIy",
            "send: 'AUTH PLAIN [REDACTED]\\r\\n'",
        ),
        ("auth login dXNlcm5hbWU=", "dXNlcm5hbWU=", "auth login [REDACTED]"),
        (
            "AUTH XOAUTH2 dXNlcj1ib2IBYXV0aD1CZWFyZXIgeHl6AQE=",
            "dXNlcj1ib2I",
            "AUTH XOAUTH2 [REDACTED]",
        ),
        (
            "ciphertext gAAAAABmZXJuZXRfdG9rZW5fZXhhbXBsZV9hYmNkZWY= stored",
            "gAAAAABmZXJuZXRf",
            "ciphertext [REDACTED] stored",
        ),
        ("key mk_3fa9c2_Zx8Kq1Lm9Pp0Rr7Tt6 used", "Zx8Kq1Lm9Pp0", "key mk_[REDACTED] used"),
        ("redis://:redispw@127.0.0.1:6379/1", "redispw", "redis://:[REDACTED]@127.0.0.1:6379/1"),
        (
            "postgresql+psycopg://app:pg%40pw@db:5432/mail",
            "pg%40pw",
            "postgresql+psycopg://app:[REDACTED]@db:5432/mail",
        ),
        (
            "imaps://seed@example.com:imappw@imap.example.com",
            "imappw",
            "imaps://seed@example.com:[REDACTED]@imap.example.com",
        ),
    ],
)
def test_each_credential_form_is_masked(text, secret, expected):
    redacted = redact(text)
    assert secret not in redacted
    assert redacted == expected
    assert redact(redacted) == redacted  # idempotent: a second pass changes nothing


@pytest.mark.parametrize(
    "text",
    [
        "http://127.0.0.1:8080/path?x=1",
        "api key mk_3fa9c2 created",  # the short display prefix stays readable
        "Token expired: sign in again",
        "campaign 12 queued 4,000 messages",
        "",
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert redact(text) == text


def test_registered_secrets_are_masked_as_exact_substrings():
    register_secret("Xk9-very-secret")
    register_secret("Xk9")  # too short to register: would mask ordinary words
    text = "535 5.7.8 login failed for Xk9-very-secret (Xk9)"
    assert redact(text) == f"535 5.7.8 login failed for {MASK} (Xk9)"


def test_registered_secret_is_masked_in_its_base64_form():
    # AUTH LOGIN sends the password alone, base64-encoded, on its own line.
    register_secret("imap-pass-123")
    encoded = base64.b64encode(b"imap-pass-123").decode()
    assert encoded not in redact(f"send: {encoded}")


def test_registry_is_bounded(monkeypatch):
    # Each value registers two forms here (itself and its base64): room for three values.
    monkeypatch.setattr(logs, "MAX_REGISTERED_SECRETS", 6)
    for i in range(5):
        register_secret(f"value-number-{i}")
    assert redact("value-number-0 value-number-1") == "value-number-0 value-number-1"
    assert redact("value-number-2 value-number-4") == f"{MASK} {MASK}"


def _read(path) -> str:
    for handler in logging.getLogger().handlers:
        handler.flush()
    return path.read_text()


def test_logging_masks_percent_args(tmp_path, restore_logging):
    log_file = tmp_path / "app.log"
    setup_logging(level="DEBUG", log_file=log_file)
    register_secret("arg-secret-777")
    log = logging.getLogger("mailer_app.test.args")
    log.info("connecting with %s", "arg-secret-777")
    log.debug("dsn %s", "redis://:dsnpw@host/0")
    log.info("config %r", {"password": "dict-pw-1"})
    log.info("bad format %d", "password=args-pw-2")  # broken %-format
    text = _read(log_file)
    for secret in ("arg-secret-777", "dsnpw", "dict-pw-1", "args-pw-2"):
        assert secret not in text
    assert f"connecting with {MASK}" in text


def test_logging_masks_exceptions_and_stacks(tmp_path, restore_logging):
    log_file = tmp_path / "app.log"
    setup_logging(level="INFO", log_file=log_file)
    register_secret("exc-secret-555")
    log = logging.getLogger("mailer_app.test.exc")
    try:
        raise RuntimeError("login failed with exc-secret-555; password=exc-pw-2")
    except RuntimeError:
        log.exception("sending failed")
    try:
        raise ValueError("token=exc-tok-3")
    except ValueError as exc:
        log.error("wrapped", exc_info=exc)
    log.info("where am I: exc-secret-555", stack_info=True)
    text = _read(log_file)
    assert "RuntimeError" in text and "Traceback" in text and "sending failed" in text
    for secret in ("exc-secret-555", "exc-pw-2", "exc-tok-3"):
        assert secret not in text


def test_setup_logging_is_idempotent_and_covers_existing_handlers(tmp_path, restore_logging):
    other = logging.getLogger("thirdparty.own_handler")
    other_file = tmp_path / "other.log"
    own_handler = logging.FileHandler(other_file)
    other.addHandler(own_handler)
    other.propagate = False
    try:
        setup_logging(log_file=tmp_path / "a.log")
        setup_logging(log_file=tmp_path / "a.log")
        ours = [h for h in logging.getLogger().handlers if getattr(h, "_mailer_app_handler", 0)]
        assert len(ours) == 2  # stderr and the file, once
        other.warning("password=third-party-pw")
        own_handler.flush()
        assert "third-party-pw" not in other_file.read_text()
    finally:
        other.removeHandler(own_handler)
        own_handler.close()
        other.propagate = True


def test_filter_on_a_plain_handler_redacts_the_record():
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "auth %s", ("AUTH PLAIN AGJvYgBwdw==",), None
    )
    assert RedactingFilter().filter(record) is True
    assert record.getMessage() == "auth AUTH PLAIN [REDACTED]"
