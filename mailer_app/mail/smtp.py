"""Submitting messages over SMTP (aiosmtplib), one connection per batch.

This is the small, correct path used for seed copies and test sends. Every call
has a timeout; results are per recipient so a partial refusal is never lost.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import aiosmtplib


@dataclass(frozen=True)
class SmtpEndpoint:
    host: str
    port: int
    security: str  # plain | starttls | tls
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0


@dataclass(frozen=True)
class OutgoingMessage:
    envelope_from: str
    recipients: tuple[str, ...]
    data: bytes


@dataclass(frozen=True)
class SubmitResult:
    ok: bool
    code: int | None
    reply: str
    duration_ms: int
    # Refused recipients with their codes, when the server accepted only some.
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)


class SmtpAuthError(Exception):
    """The server refused the sender account's credentials (535 and the like)."""


def _client(endpoint: SmtpEndpoint) -> aiosmtplib.SMTP:
    context = ssl.create_default_context()
    return aiosmtplib.SMTP(
        hostname=endpoint.host,
        port=endpoint.port,
        timeout=endpoint.timeout,
        use_tls=endpoint.security == "tls",
        start_tls=endpoint.security == "starttls",
        tls_context=context if endpoint.security in ("tls", "starttls") else None,
    )


async def _submit_all(
    endpoint: SmtpEndpoint, messages: Sequence[OutgoingMessage]
) -> list[SubmitResult]:
    client = _client(endpoint)
    await client.connect()
    try:
        if endpoint.username:
            try:
                await client.login(endpoint.username, endpoint.password or "")
            except aiosmtplib.SMTPAuthenticationError as exc:
                raise SmtpAuthError(
                    f"The mail server refused the sender account's password ({exc.code})."
                ) from exc
        results = []
        for message in messages:
            started = time.perf_counter()
            try:
                refused, reply = await client.sendmail(
                    message.envelope_from, list(message.recipients), message.data
                )
                results.append(
                    SubmitResult(
                        ok=len(refused) < len(message.recipients),
                        code=250,
                        reply=reply,
                        duration_ms=int((time.perf_counter() - started) * 1000),
                        refused={r: (e.code, e.message) for r, e in refused.items()},
                    )
                )
            except aiosmtplib.SMTPResponseException as exc:
                results.append(
                    SubmitResult(
                        ok=False,
                        code=exc.code,
                        reply=exc.message,
                        duration_ms=int((time.perf_counter() - started) * 1000),
                    )
                )
        return results
    finally:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()


def submit_messages(
    endpoint: SmtpEndpoint, messages: Sequence[OutgoingMessage]
) -> list[SubmitResult]:
    """Send each message over one connection; one result per message, in order.

    Raises SmtpAuthError for refused credentials and aiosmtplib/OSError errors when
    the connection itself fails (the caller decides whether to retry).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_submit_all(endpoint, messages))
    # Called from a thread that already runs an event loop (a Reflex event handler):
    # a nested asyncio.run is refused there, so use a private loop in a helper thread.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="smtp-submit") as executor:
        return executor.submit(asyncio.run, _submit_all(endpoint, messages)).result()
