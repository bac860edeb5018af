"""One SMTP connection that submits many messages and says exactly how each one ended.

The sender needs to know more than "it failed": whether the server refused the
message (and with which code), whether the connection was lost *before* the final
"." was handed to the server (nothing was submitted: safe to try again), or *after*
it (the server may have accepted it: never retried silently). aiosmtplib's
`sendmail` hides that difference, so MAIL, RCPT and DATA are driven one by one here
and the body is written in two steps: the content, then, only if the connection is
still there, the final ".".

Each transaction has one recipient (every campaign message is personal), so a
refusal always belongs to exactly one send record.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from dataclasses import dataclass

import aiosmtplib

from mailer_app.mail.smtp import SmtpAuthError, SmtpEndpoint

_ENHANCED = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")
_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")
CHUNK = 256 * 1024  # body bytes written between waits for the socket to drain


class SmtpConnectFailed(Exception):
    """No usable session: the server could not be reached, refused the connection
    (421 greeting), or TLS failed. Nothing was submitted."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Delivery:
    """How one message's transaction ended."""

    accepted: bool
    code: int | None  # the server's reply code (None: no reply came)
    reply: str
    stage: str  # mail | rcpt | data | body: where it was refused or lost; done if accepted
    body_sent: bool  # the final "." was handed to the server
    duration_ms: int

    @property
    def enhanced(self) -> str | None:
        """The enhanced status code (RFC 3463) at the start of the reply, if any."""
        found = _ENHANCED.match(self.reply or "")
        return found.group(1) if found else None

    @property
    def lost(self) -> bool:
        """The connection ended (or timed out) without an answer."""
        return self.code is None


def dot_stuffed(data: bytes) -> bytes:
    """The DATA payload without its final ".": CRLF line ends, leading dots doubled,
    ending with CRLF."""
    body = _LEADING_DOT.sub(b"..", _LINE_ENDS.sub(b"\r\n", data))
    return body if body.endswith(b"\r\n") else body + b"\r\n"


class SmtpConnection:
    """A connection to one SMTP server, opened on first use and reopened after a drop."""

    def __init__(self, endpoint: SmtpEndpoint) -> None:
        self.endpoint = endpoint
        self._client: aiosmtplib.SMTP | None = None
        self.messages = 0  # submitted over the current connection

    @property
    def is_open(self) -> bool:
        return self._client is not None and self._client.is_connected

    async def open(self) -> None:
        """Connect, say hello, STARTTLS and log in as configured.

        SmtpAuthError when the credentials are refused; SmtpConnectFailed otherwise."""
        await self.close()
        ep = self.endpoint
        client = aiosmtplib.SMTP(
            hostname=ep.host,
            port=ep.port,
            timeout=ep.timeout,
            use_tls=ep.security == "tls",
            start_tls=ep.security == "starttls",
            tls_context=ssl.create_default_context()
            if ep.security in ("tls", "starttls")
            else None,
        )
        try:
            await client.connect()
            if ep.username:
                await client.login(ep.username, ep.password or "")
        except aiosmtplib.SMTPAuthenticationError as exc:
            client.close()
            raise SmtpAuthError(
                f"The mail server refused the sender account's password ({exc.code})."
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            raise SmtpConnectFailed(
                f"The mail server {ep.host} answered {exc.code} {exc.message}".strip(), exc.code
            ) from None
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            client.close()
            raise SmtpConnectFailed(
                f"Could not connect to the mail server {ep.host}:{ep.port} ({type(exc).__name__})."
            ) from None
        self._client = client
        self.messages = 0

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if client.is_connected:
            try:
                await asyncio.wait_for(client.quit(), timeout=2.0)
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()

    async def send(self, envelope_from: str, recipient: str, data: bytes) -> Delivery:
        """Submit one message to one recipient over this connection (opened if needed).

        Raises SmtpAuthError / SmtpConnectFailed only while (re)opening, before
        anything of this message was sent."""
        if not self.is_open:
            await self.open()
        client = self._client
        assert client is not None
        started = time.perf_counter()

        def ended(accepted: bool, code: int | None, reply: str, stage: str, sent: bool) -> Delivery:
            ms = int((time.perf_counter() - started) * 1000)
            return Delivery(accepted, code, reply, stage, sent, ms)

        options = self._options(envelope_from, recipient)
        stage = "mail"
        try:
            await client.mail(envelope_from, options=options)
            stage = "rcpt"
            await client.rcpt(recipient)
            stage = "data"
            start = await client.execute_command(b"DATA")
            if start.code != 354:
                await self._reset()
                return ended(False, start.code, start.message, "data", False)
            stage = "body"
            reply = await self._body(client, data)
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code in (421,) or not client.is_connected:
                await self.close()
            else:
                await self._reset()
            return ended(False, exc.code, exc.message, stage, False)
        except _BodySent as lost:
            await self.close()
            return ended(False, None, lost.why, "body", True)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # Lost before the final "." left: the server cannot have accepted it.
            await self.close()
            return ended(False, None, _lost_text(exc), stage, False)
        self.messages += 1
        if reply.code == 250:
            return ended(True, 250, reply.message, "done", True)
        if reply.code == 421:
            await self.close()
        return ended(False, reply.code, reply.message, "body", True)

    async def _body(self, client: aiosmtplib.SMTP, data: bytes):
        protocol = client.protocol
        payload = dot_stuffed(data)
        for start in range(0, len(payload), CHUNK):
            protocol.write(payload[start : start + CHUNK])
            await _drained(protocol)
        await asyncio.sleep(0)  # let a pending close or reset be noticed first
        if not client.is_connected or protocol.transport is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost before the end of data")
        protocol.write(b".\r\n")
        try:
            # No await between the write and read_response arming its waiter.
            return await protocol.read_response(timeout=self.endpoint.timeout)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise _BodySent(_lost_text(exc)) from None

    async def _reset(self) -> None:
        client = self._client
        if client is None or not client.is_connected:
            return
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            await self.close()

    def _options(self, envelope_from: str, recipient: str) -> list[str]:
        client = self._client
        if client is None:
            return []
        wide = not (envelope_from.isascii() and recipient.isascii())
        return ["SMTPUTF8"] if wide and client.supports_extension("smtputf8") else []


class _BodySent(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


async def _drained(protocol) -> None:
    drain = getattr(protocol, "_drain_helper", None)
    if drain is not None:
        await drain()


def _lost_text(exc: BaseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        return "The mail server stopped answering (timed out)."
    return "The connection to the mail server was lost."
