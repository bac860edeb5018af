"""The `mail_lab` fixture: a real mail lab (SMTP intake + Dovecot) on free loopback ports.

Use it from any test module with

    from tests.lab_fixtures import mail_lab_fixture  # noqa: F401

    def test_something(mail_lab):
        seed = mail_lab.add_account("gmail.lab")          # fresh address + password
        mail_lab.send(seed.email, subject="hello")        # through the SMTP intake
        assert mail_lab.folders_with(seed, "hello") == ["INBOX"]

The lab is shared by the tests of one module (it starts in about 0.1 s, but sharing
keeps large modules fast); every `add_account` call makes a new mailbox, so tests
do not see each other's mail.
"""

from __future__ import annotations

import contextlib
import secrets
import smtplib
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import pytest
from imapclient import IMAPClient

from mailer_app.lab import Lab, dovecot_available
from tests.conftest import IN_CI, free_port


@dataclass(frozen=True)
class LabMailbox:
    email: str
    password: str


@dataclass
class MailLab:
    """A running lab and helpers to provision, send and look over IMAP."""

    lab: Lab

    @property
    def smtp_port(self) -> int:
        return self.lab.smtp_port

    @property
    def imap_port(self) -> int:
        return self.lab.imap_port

    @property
    def lab_dir(self) -> Path:
        return self.lab.lab_dir

    @property
    def catchall(self) -> LabMailbox:
        return LabMailbox(self.lab.catchall_address, self.lab.catchall_password)

    def add_account(self, email: str, password: str | None = None) -> LabMailbox:
        """Provision a mailbox. `email` may be just a domain ("gmail.lab"): a fresh
        address there is made up. Without `password` a random one is used."""
        if "@" not in email:
            email = f"seed-{secrets.token_hex(4)}@{email}"
        password = password or secrets.token_urlsafe(12)
        self.lab.add_account(email, password)
        return LabMailbox(email.lower(), password)

    def message(
        self,
        to: str,
        *,
        subject: str = "Hello",
        body: str = "Just a friendly note.",
        sender: str = "news@sender.lab",
        headers: dict[str, str] | None = None,
        message_id: bool = True,
        date: bool = True,
    ) -> EmailMessage:
        """A plain message; `headers` are added as given."""
        msg = EmailMessage()
        msg["From"] = sender
        msg["To"] = to
        msg["Subject"] = subject
        if message_id:
            msg["Message-ID"] = make_msgid(domain="sender.lab")
        if date:
            msg["Date"] = formatdate(localtime=False)
        for name, value in (headers or {}).items():
            msg[name] = value
        msg.set_content(body)
        return msg

    def send(self, *recipients: str, msg: EmailMessage | None = None, **kwargs) -> dict:
        """Send through the intake with smtplib; returns smtplib's refused-recipients dict."""
        msg = msg or self.message(recipients[0], **kwargs)
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as smtp:
            return smtp.send_message(msg, to_addrs=list(recipients))

    @contextlib.contextmanager
    def imap(self, mailbox: LabMailbox) -> Iterator[IMAPClient]:
        """A logged-in IMAP session on the lab's Dovecot."""
        client = IMAPClient("127.0.0.1", port=self.imap_port, ssl=False, timeout=10)
        try:
            client.login(mailbox.email, mailbox.password)
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def folders_with(self, mailbox: LabMailbox, subject_token: str) -> list[str]:
        """Every folder of `mailbox` holding a message whose Subject contains the token."""
        found = []
        with self.imap(mailbox) as client:
            for flags, _, name in client.list_folders():
                if b"\\Noselect" in flags:
                    continue
                client.select_folder(name, readonly=True)
                if client.search(["SUBJECT", subject_token]):
                    found.append(name)
        return found

    def fetch_headers(self, mailbox: LabMailbox, folder: str, subject_token: str) -> str:
        """The header block of the (first) message with the token in `folder`."""
        with self.imap(mailbox) as client:
            client.select_folder(folder, readonly=True)
            ids = client.search(["SUBJECT", subject_token])
            assert ids, f"no message with {subject_token!r} in {folder}"
            data = client.fetch(ids[:1], ["BODY.PEEK[HEADER]"])[ids[0]]
            return data[b"BODY[HEADER]"].decode()


def require_dovecot() -> None:
    """Skip (locally) or fail (in CI) when Dovecot is not installed."""
    ok, why = dovecot_available()
    if not ok:
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="module", name="mail_lab")
def mail_lab_fixture(tmp_path_factory) -> Iterator[MailLab]:
    """A running lab (SMTP intake + Dovecot) in a temporary folder on free ports."""
    require_dovecot()
    lab = Lab(tmp_path_factory.mktemp("lab"), smtp_port=free_port(), imap_port=free_port())
    lab.start()
    try:
        yield MailLab(lab)
    finally:
        lab.stop()


# Both imports register the fixture named `mail_lab`. Importing `mail_lab_fixture`
# keeps ruff quiet (F811) in modules whose tests take a `mail_lab` argument.
mail_lab = mail_lab_fixture
