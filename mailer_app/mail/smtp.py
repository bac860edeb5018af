"""Submitting messages over SMTP (aiosmtplib), one connection per batch.

This is the small, correct path used for seed copies and test sends. Every call
has a timeout; results are per recipient so a partial refusal is never lost.
"""

from __future__ import annotations

import asyncio
import socket
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


# ---------------------------------------------------------------------------
# Test connection (the sender accounts page's "Test" button)

PROBE_QUIT_TIMEOUT = 5.0  # QUIT is a courtesy: never wait long for it


@dataclass(frozen=True)
class SmtpProbe:
    """What a connection test found, in plain words for the person who set it up.

    `error_kind` is None on success, else "auth" (the server refused the user name
    or password), "tls" (encryption could not be set up as chosen: no STARTTLS,
    an untrusted certificate, a failed handshake), "settings" (the server does not
    offer what the settings need, e.g. sign-in without encryption) or "unavailable"
    (not reachable, no answer in time, hung up: trying later may help).
    """

    ok: bool
    message: str
    error_kind: str | None = None


class _ProbeFailed(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


def probe_smtp(endpoint: SmtpEndpoint) -> SmtpProbe:
    """Connect, set up TLS as chosen (certificates verified), EHLO, sign in when a
    user name is set, and QUIT. Never sends mail; never raises for network,
    TLS or server trouble (the SmtpProbe says what went wrong).

    Every step is bounded by `endpoint.timeout`, and the whole test by a few times it.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_probe(endpoint))
    # Inside a running loop (a Reflex event handler): use a private loop in a thread.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="smtp-probe") as executor:
        return executor.submit(asyncio.run, _probe(endpoint)).result()


async def _probe(ep: SmtpEndpoint) -> SmtpProbe:
    address = f"{ep.host}:{ep.port}"
    scrub = _scrubber(ep.password)
    client = aiosmtplib.SMTP(
        hostname=ep.host,
        port=ep.port,
        timeout=ep.timeout,
        use_tls=ep.security == "tls",
        start_tls=False,  # STARTTLS only when chosen, and then required (below)
        tls_context=ssl.create_default_context() if ep.security != "plain" else None,
    )
    stage = ["connecting"]
    try:
        # Each step has its own timeout; this bounds the sum (a dozen steps at most).
        async with asyncio.timeout(ep.timeout * 4 + PROBE_QUIT_TIMEOUT):
            message = await _probe_steps(client, ep, address, stage)
        return SmtpProbe(True, message, None)
    except _ProbeFailed as failed:
        return SmtpProbe(False, scrub(failed.message), failed.kind)
    except (aiosmtplib.SMTPException, OSError, TimeoutError, UnicodeError) as exc:
        kind, text = _explain(exc, ep, address, stage[0])
        return SmtpProbe(False, scrub(text), kind)
    finally:
        await _quit(client)


async def _probe_steps(
    client: aiosmtplib.SMTP, ep: SmtpEndpoint, address: str, stage: list[str]
) -> str:
    await client.connect()
    stage[0] = "greeting the server (EHLO)"
    await _hello(client)
    if ep.security == "starttls":
        if not client.supports_extension("starttls"):
            raise _ProbeFailed(
                "tls",
                f"The server at {address} does not offer STARTTLS. Choose TLS (usually "
                "port 465), or no encryption only for a server on this computer.",
            )
        stage[0] = "starting TLS"
        await client.starttls()
        stage[0] = "greeting the server after STARTTLS"
        await _hello(client)
    security = {"tls": "TLS on", "starttls": "TLS on (STARTTLS)"}.get(ep.security, "no encryption")
    if not ep.username:
        return (
            f"Connected to {address}, {security}. No user name is set, so no sign-in was "
            "tried. Nothing was sent."
        )
    if not client.supports_extension("auth"):
        if ep.security == "plain":
            raise _ProbeFailed(
                "settings",
                f"The server at {address} does not accept sign-in on an unencrypted "
                "connection. Choose STARTTLS (usually port 587) or TLS (usually port 465).",
            )
        raise _ProbeFailed(
            "settings",
            f"The server at {address} does not offer sign-in. If it needs none, leave the "
            "user name empty.",
        )
    if not client.supported_auth_methods:
        offered = ", ".join(m.upper() for m in client.server_auth_methods) or "none"
        raise _ProbeFailed(
            "settings",
            f"The server at {address} offers no sign-in method this app can use "
            f"(it offers {offered}).",
        )
    stage[0] = "signing in"
    await client.login(ep.username, ep.password or "")
    return f"Connected to {address}, {security}, signed in as {ep.username}. Nothing was sent."


async def _hello(client: aiosmtplib.SMTP) -> None:
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        await client.helo()  # a very old server: no extensions, so no STARTTLS or AUTH


async def _quit(client: aiosmtplib.SMTP) -> None:
    if not client.is_connected:
        return
    try:
        await asyncio.wait_for(client.quit(), timeout=PROBE_QUIT_TIMEOUT)
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        client.close()


def _scrubber(password: str | None):
    def scrub(text: str) -> str:
        return text.replace(password, "********") if password else text

    return scrub


def _explain(exc: BaseException, ep: SmtpEndpoint, address: str, stage: str) -> tuple[str, str]:
    """(error_kind, plain words) for an exception raised while `stage`."""
    cause = exc.__cause__
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        reply = f"{exc.code} {exc.message}".strip()
        if 400 <= exc.code < 500:
            return "unavailable", f"{address} cannot sign anyone in right now ({reply})."
        if exc.code == 530:  # "Must issue a STARTTLS command first"
            return (
                "settings",
                f"The server at {address} wants an encrypted connection before sign-in "
                f"({reply}). Choose STARTTLS or TLS.",
            )
        return "auth", f"The server refused the password for {ep.username} ({reply})."
    tls_error = next((e for e in (exc, cause) if isinstance(e, ssl.SSLError)), None)
    if isinstance(tls_error, ssl.SSLCertVerificationError):
        return (
            "tls",
            f"The TLS certificate of {address} could not be verified "
            f"({tls_error.verify_message}). Check the server name; if it is right, the "
            "server's certificate is not trusted, so the connection was not used.",
        )
    if tls_error is not None:
        return (
            "tls",
            f"TLS with {address} failed ({tls_error.reason or tls_error}). Check the "
            "security setting: TLS is usually port 465, STARTTLS port 587.",
        )
    if isinstance(exc, aiosmtplib.SMTPConnectTimeoutError):
        if isinstance(cause, aiosmtplib.SMTPReadTimeoutError):
            return (
                "unavailable",
                f"{address} accepted the connection but did not greet within "
                f"{ep.timeout:g} s. Is this the mail server's port? (Port 465 needs TLS.)",
            )
        return "unavailable", f"Could not reach {address} within {ep.timeout:g} s (no answer)."
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        return "unavailable", f"{address} refused the connection ({exc.code} {exc.message})."
    if isinstance(exc, aiosmtplib.SMTPConnectError):
        return "unavailable", f"Could not reach {address} ({_network_detail(cause, ep)})."
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return "unavailable", f"{address} ended the connection while {stage}."
    if isinstance(exc, TimeoutError):
        return "unavailable", f"{address} did not answer within {ep.timeout:g} s while {stage}."
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        reply = f"{exc.code} {exc.message}".strip()
        return "unavailable", f"{address} answered {reply} while {stage}."
    if isinstance(exc, UnicodeError):
        return (
            "auth",
            f"The user name or password for {ep.username} has characters this server's "
            "sign-in cannot take.",
        )
    if isinstance(exc, OSError):
        return "unavailable", f"The connection to {address} failed while {stage} ({exc})."
    return "unavailable", f"{address}: {exc} (while {stage})."


def _network_detail(exc: BaseException | None, ep: SmtpEndpoint) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: nothing accepts mail connections there"
    if isinstance(exc, socket.gaierror):
        return f"the server name {ep.host} could not be found"
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return "it closed the connection before greeting"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) if exc else "unknown error"
