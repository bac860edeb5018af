"""The whole lab as one object: SMTP intake + Dovecot, started and stopped together.

    with Lab(lab_dir, smtp_port=2525, imap_port=1143) as lab:
        lab.add_account("alice@gmail.lab", "secret")
        ...  # send to 127.0.0.1:2525, read over IMAP at 127.0.0.1:1143

Tests, the dev supervisor (`python -m mailer_app.lab`) and the app's /health use
this module; `lab_status` only probes the ports, so it works from any process.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from pathlib import Path

from mailer_app.lab.accounts import LabAccount, ensure_lab_account
from mailer_app.lab.dovecot import DovecotServer, LabError, dovecot_available
from mailer_app.lab.intake import CATCHALL_ADDRESS, make_controller

log = logging.getLogger(__name__)

UP, DOWN, OFF = "up", "down", "off"
CATCHALL_PASSWORD_FILE = "catchall-password"  # noqa: S105 - a file name


class Lab:
    """The local mail lab on 127.0.0.1: `start()`/`stop()` or use as a context manager.

    With `imap=False`, or when Dovecot is not installed, only the SMTP intake runs
    and `imap_state` says why IMAP is off.
    """

    def __init__(
        self,
        lab_dir: Path,
        smtp_port: int,
        imap_port: int,
        *,
        imap: bool = True,
        die_with_parent: bool = False,
    ):
        self.lab_dir = Path(lab_dir)
        self.smtp_port = smtp_port
        self.imap_port = imap_port
        self.want_imap = imap
        self.dovecot: DovecotServer | None = None
        self.imap_off_reason: str | None = None
        self._die_with_parent = die_with_parent
        self._controller = None

    @classmethod
    def from_settings(cls, settings, **kwargs) -> Lab:
        """A Lab on the ports and folder of the app's settings."""
        return cls(settings.lab_dir, settings.lab_smtp_port, settings.lab_imap_port, **kwargs)

    @property
    def catchall_address(self) -> str:
        return CATCHALL_ADDRESS

    @property
    def catchall_password(self) -> str:
        """The catch-all mailbox's password, made once and kept (0600) in the lab folder."""
        path = self.lab_dir / CATCHALL_PASSWORD_FILE
        if not path.exists():
            self.lab_dir.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it first; read theirs
            else:
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_urlsafe(12) + "\n")
        return path.read_text().strip()

    @property
    def imap_state(self) -> str:
        """ "up", "down", or "off: <reason>"."""
        if self.imap_off_reason:
            return f"{OFF}: {self.imap_off_reason}"
        return UP if self.dovecot and self.dovecot.running() else DOWN

    def start(self) -> None:
        """Start the SMTP intake and Dovecot; LabError (and nothing left running) on failure."""
        self.lab_dir.mkdir(parents=True, exist_ok=True)
        ensure_lab_account(self.lab_dir, CATCHALL_ADDRESS, self.catchall_password)
        self._start_intake()
        try:
            self._start_imap()
        except BaseException:
            self._stop_intake()
            raise

    def stop(self) -> None:
        """Stop Dovecot (and all its processes) and the SMTP intake. Safe to call twice."""
        try:
            if self.dovecot is not None:
                self.dovecot.stop()
        finally:
            self._stop_intake()

    def add_account(self, email: str, password: str) -> LabAccount:
        """Provision a lab mailbox (see `ensure_lab_account`)."""
        return ensure_lab_account(self.lab_dir, email, password)

    def describe(self) -> str:
        """One line for the log: where the lab listens and how to read the catch-all."""
        imap = (
            f"IMAP on 127.0.0.1:{self.imap_port}"
            if self.imap_off_reason is None
            else f"IMAP is off ({self.imap_off_reason})"
        )
        return (
            f"mail lab: SMTP intake on 127.0.0.1:{self.smtp_port}, {imap}; mail for "
            f"addresses that are not lab mailboxes goes to {CATCHALL_ADDRESS} (password in "
            f"{self.lab_dir / CATCHALL_PASSWORD_FILE}); files in {self.lab_dir}"
        )

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _start_intake(self) -> None:
        controller = make_controller(self.lab_dir, self.smtp_port)
        try:
            controller.start()
        except Exception as exc:
            raise LabError(
                f"the lab SMTP intake cannot listen on 127.0.0.1:{self.smtp_port} ({exc}): "
                "stop what listens there or set LAB_SMTP_PORT to a free port"
            ) from exc
        self._controller = controller
        log.info("lab SMTP intake listening on 127.0.0.1:%s", self.smtp_port)

    def _stop_intake(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def _start_imap(self) -> None:
        if not self.want_imap:
            self.imap_off_reason = "IMAP turned off for this lab"
            return
        ok, why = dovecot_available()
        if not ok:
            self.imap_off_reason = why
            log.warning("lab IMAP is off: %s", why)
            return
        self.imap_off_reason = None
        self.dovecot = DovecotServer(
            self.lab_dir, self.imap_port, die_with_parent=self._die_with_parent
        )
        self.dovecot.start()


def lab_status(settings) -> dict[str, str]:
    """{"smtp": "up"|"down", "imap": "up"|"down"|"off: <reason>"} by probing the ports.

    Cheap and bounded (short connect timeouts), for the app's /health.
    """
    smtp = UP if _port_open(settings.lab_smtp_port) else DOWN
    if _port_open(settings.lab_imap_port):
        imap = UP
    else:
        ok, why = dovecot_available()
        imap = DOWN if ok else f"{OFF}: {why}"
    return {"smtp": smtp, "imap": imap}


def _port_open(port: int, timeout: float = 0.3) -> bool:
    with socket.socket() as s:
        s.settimeout(timeout)
        return s.connect_ex(("127.0.0.1", port)) == 0


__all__ = ["Lab", "LabError", "lab_status"]
