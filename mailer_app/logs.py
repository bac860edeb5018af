"""Logging for every process (web, worker, scheduler, lab, CLI), with secrets masked.

`setup_logging()` installs a `RedactingFilter` on every handler of the root logger
(and on handlers already attached to other loggers, such as uvicorn's or rq's). The
filter formats the message with its %-args first and redacts the result, and does
the same for exception and stack text, so a secret is masked however it got into
the record.

What is masked (see `redact`):
- values registered with `register_secret` (every secret stored or revealed in this
  process), also in their base64 and URL-quoted forms;
- `password=...`, `"password": "..."`, `passwd`, `pwd`, `secret`, `token`,
  `api_key` key-value forms (any key containing one of those words);
- `Authorization: Bearer/Basic ...` headers and bare `Bearer <token>`;
- SMTP `AUTH PLAIN/LOGIN/XOAUTH2 <base64>` commands;
- Fernet tokens (`gAAAAA...`), our API keys (`mk_...`);
- passwords in URLs (`redis://:pw@host`, `postgresql://user:pw@host`).
"""

from __future__ import annotations

import base64
import logging
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

MASK = "[REDACTED]"

# Bounded so a long-running worker that reveals many secrets does not grow forever;
# the oldest values are forgotten first.
MAX_REGISTERED_SECRETS = 2048
# Shorter values would mask ordinary words everywhere and protect nothing.
MIN_SECRET_LENGTH = 4

DEFAULT_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"

_registered: OrderedDict[str, None] = OrderedDict()
_registered_sorted: tuple[str, ...] = ()
_lock = threading.Lock()

_KEY_WORDS = r"(?:password|passwd|pwd|secret|token|api[_-]?key|apikey)"
_PATTERNS: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    # URL userinfo password: scheme://user:pw@host (user may be empty).
    # The user part may hold an unencoded "@" (imaps://seed@example.com:pw@host).
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s/:]*:)[^\s/@]+@"), rf"\1{MASK}@"),
    # Authorization headers, in HTTP, JSON or repr form, with or without a scheme.
    (
        re.compile(
            r"""(?i)(\b(?:proxy-)?authorization["']?\s*[:=]\s*["']?\s*"""
            r"""(?:(?:bearer|basic|digest|token|negotiate)\s+)?)[^\s"',;]+"""
        ),
        rf"\1{MASK}",
    ),
    # A bare bearer token outside a header (for example in an exception message).
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/\-]{16,}=*"), rf"\1{MASK}"),
    # SMTP AUTH with an initial response (the base64 holds user and password).
    (
        re.compile(
            r"(?i)(\bAUTH\s+(?:PLAIN|LOGIN|XOAUTH2|OAUTHBEARER|CRAM-MD5)\s+)[A-Za-z0-9+/=]+"
        ),
        rf"\1{MASK}",
    ),
    # Key-value forms: password=x, "password": "x", 'api_key': 'x', token: x, pwd="x".
    (
        re.compile(
            rf"""(?ix)
            (?P<key>["']?[\w.\-]*{_KEY_WORDS}[\w.\-]*["']?\s*[:=]\s*)
            (?!\[REDACTED\])  # already masked (a registered value): leave it
            (?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,;&"'}}\])]+)
            """
        ),
        lambda m: m.group("key") + _mask_keeping_quotes(m.group("value")),
    ),
    # Fernet tokens (what the secret store keeps): version byte 0x80 -> "gAAAAA".
    (re.compile(r"gAAAAA[A-Za-z0-9_\-]{20,}={0,2}"), MASK),
    # Our API keys. The short display prefix ("mk_3fa9c2") stays readable.
    (re.compile(r"\bmk_[A-Za-z0-9_\-]{16,}"), f"mk_{MASK}"),
]


def _mask_keeping_quotes(value: str) -> str:
    if value[:1] in {'"', "'"}:
        return f"{value[0]}{MASK}{value[0]}"
    return MASK


def register_secret(value: str | None) -> None:
    """Mask `value` (and its base64 and URL-quoted forms) in every later log line."""
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    forms = dict.fromkeys(  # ordered and de-duplicated
        [value, quote(value, safe=""), base64.b64encode(value.encode()).decode()]
    )
    global _registered_sorted
    with _lock:
        for form in forms:
            _registered[form] = None
            _registered.move_to_end(form)
        while len(_registered) > MAX_REGISTERED_SECRETS:
            _registered.popitem(last=False)
        # Longest first, so a value that contains another is masked whole.
        _registered_sorted = tuple(sorted(_registered, key=len, reverse=True))


def forget_registered_secrets() -> None:
    """Empty the registry (tests use this to start clean)."""
    global _registered_sorted
    with _lock:
        _registered.clear()
        _registered_sorted = ()


def redact(text: str) -> str:
    """`text` with every registered secret and every known credential form masked."""
    if not text:
        return text
    for value in _registered_sorted:  # a snapshot tuple: safe without the lock
        if value in text:
            text = text.replace(value, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Formats each record's message and exception text, then redacts them in place.

    Installed on handlers (not loggers) because handler filters see records that
    propagate up from every child logger. The record is rewritten, so every handler
    after the first sees only the redacted text.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_mailer_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken %-format must not hide the values it carried
            message = f"{record.msg!s} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self._formatter.formatException(record.exc_info)
            # Drop the live exception so no later handler can render it unredacted.
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record._mailer_redacted = True
        return True


def install_redaction(logger: logging.Logger | None = None) -> None:
    """Add a RedactingFilter to every handler of `logger` (default: all known loggers)."""
    loggers = [logger] if logger else [logging.getLogger(), *_existing_loggers()]
    for lg in loggers:
        for handler in lg.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())


def _existing_loggers() -> list[logging.Logger]:
    return [
        lg
        for lg in list(logging.Logger.manager.loggerDict.values())
        if isinstance(lg, logging.Logger)
    ]


def setup_logging(
    level: int | str = logging.INFO,
    *,
    log_file: str | Path | None = None,
    fmt: str = DEFAULT_FORMAT,
) -> None:
    """Configure the root logger: stderr (and `log_file` if given), redacted.

    Safe to call more than once: the handlers it installed before are replaced,
    handlers installed by others (pytest, uvicorn) are kept and get the filter too.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_mailer_app_handler", False):
            root.removeHandler(handler)
            handler.close()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    formatter = logging.Formatter(fmt)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler._mailer_app_handler = True
        root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # Warnings can quote arguments (a DSN with its password), so route them here too.
    logging.captureWarnings(True)
    install_redaction()
