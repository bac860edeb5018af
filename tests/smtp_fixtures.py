"""Real SMTP servers (aiosmtpd) on loopback, for testing sender accounts.

- `smtp_auth_server`: plain SMTP that requires nothing but offers AUTH PLAIN/LOGIN
  and accepts exactly one user name and password (`auth_require_tls=False`, so a
  plain connection may sign in).
- `smtp_starttls_server`: offers STARTTLS with a self-signed certificate made in
  the test, and AUTH only after STARTTLS (like real submission servers).
- `smtp_tls_server`: implicit TLS (like port 465) with the same kind of certificate.

Use them from a test module with

    from tests.smtp_fixtures import smtp_server_fixture  # noqa: F401  (and the others)

(the fixture functions end in `_fixture`, so test arguments do not shadow imports).
Each server counts what clients did (`login_attempts`, `mail_from`, `messages`), so a
test can prove a connection test signed in and never sent anything.
`self_signed_cert(folder)` writes a certificate for 127.0.0.1 (cryptography); point
SSL_CERT_FILE at it to make a client trust it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
import secrets
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import free_port

SMTP_USER = "sender@example.com"


@dataclass
class SmtpRecorder:
    """aiosmtpd handler + authenticator that remembers what clients did."""

    username: str
    password: str
    # Not `auth_...`: aiosmtpd takes every handler attribute named auth_* for an AUTH
    # mechanism and would advertise it.
    login_attempts: list[tuple[str, bool]] = field(default_factory=list)
    mail_from: list[str] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        ok = login == self.username and auth_data.password.decode("utf-8", "replace") == (
            self.password
        )
        self.login_attempts.append((login, ok))
        return AuthResult(success=ok, handled=False)

    async def handle_MAIL(self, server, session, envelope, address, mail_options) -> str:
        self.mail_from.append(address)
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(envelope.content)
        return "250 2.0.0 OK"

    @property
    def successful_logins(self) -> list[str]:
        return [login for login, ok in self.login_attempts if ok]


@dataclass
class SmtpServer:
    host: str
    port: int
    username: str
    password: str
    recorder: SmtpRecorder
    cert_file: Path | None = None

    def reset(self) -> None:
        self.recorder.login_attempts.clear()
        self.recorder.mail_from.clear()
        self.recorder.messages.clear()


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files for CN/SAN 127.0.0.1, valid for a day."""
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
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _HideLoginDataWarning(logging.Filter):
    # aiosmtpd 1.4 warns about its own deprecated attribute on every successful AUTH.
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Session.login_data is deprecated")


@contextlib.contextmanager
def running_smtp_server(
    *,
    starttls_cert: tuple[Path, Path] | None = None,
    implicit_tls_cert: tuple[Path, Path] | None = None,
    username: str = SMTP_USER,
    password: str | None = None,
) -> Iterator[SmtpServer]:
    """An aiosmtpd server on 127.0.0.1:<free port> with AUTH for one user."""
    logging.getLogger("mail.log").addFilter(_HideLoginDataWarning())
    recorder = SmtpRecorder(username, password or f"pw-{secrets.token_urlsafe(9)}")
    kwargs: dict = {}
    cert = starttls_cert or implicit_tls_cert
    if cert is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert[0]), str(cert[1]))
        kwargs["tls_context" if starttls_cert else "ssl_context"] = context
    port = free_port()
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=port,
        ready_timeout=5.0,
        server_hostname="smtp.test.local",
        authenticator=recorder.authenticate,
        # Plain servers let clients sign in unencrypted; STARTTLS ones only after TLS.
        auth_require_tls=starttls_cert is not None,
        timeout=30,
        **kwargs,
    )
    controller.start()
    try:
        yield SmtpServer(
            "127.0.0.1", port, recorder.username, recorder.password, recorder,
            cert_file=cert[0] if cert else None,
        )  # fmt: skip
    finally:
        controller.stop()


@pytest.fixture(scope="module", name="smtp_auth_server")
def smtp_auth_server_fixture() -> Iterator[SmtpServer]:
    """Plain SMTP with AUTH for SMTP_USER (shared by a module; reset per test)."""
    with running_smtp_server() as server:
        yield server


@pytest.fixture(name="smtp_server")
def smtp_server_fixture(smtp_auth_server) -> SmtpServer:
    """`smtp_auth_server` with its counters emptied for this test."""
    smtp_auth_server.reset()
    return smtp_auth_server


@pytest.fixture(scope="module", name="smtp_starttls_server")
def smtp_starttls_server_fixture(tmp_path_factory) -> Iterator[SmtpServer]:
    cert = self_signed_cert(tmp_path_factory.mktemp("starttls-cert"))
    with running_smtp_server(starttls_cert=cert) as server:
        yield server


@pytest.fixture(scope="module", name="smtp_tls_server")
def smtp_tls_server_fixture(tmp_path_factory) -> Iterator[SmtpServer]:
    cert = self_signed_cert(tmp_path_factory.mktemp("tls-cert"))
    with running_smtp_server(implicit_tls_cert=cert) as server:
        yield server
