"""`python -m mailer_app.lab`: run the mail lab in the foreground until SIGTERM/SIGINT.

Ports and folder come from the settings (LAB_SMTP_PORT, LAB_IMAP_PORT, DATA_DIR).
Exit status: 0 after a clean stop, 1 when the lab cannot start or Dovecot dies.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from mailer_app.lab.dovecot import LabError
from mailer_app.lab.runner import Lab
from mailer_app.logs import setup_logging
from mailer_app.settings import get_settings

log = logging.getLogger("mailer_app.lab")

# How often the foreground loop checks that Dovecot is still alive.
WATCH_INTERVAL = 1.0


def main() -> int:
    """Run the lab until a signal arrives; returns the exit status."""
    setup_logging()
    # aiosmtpd logs every SMTP command at INFO; the lab logs one line per copy instead.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    settings = get_settings()
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        log.info("mail lab: %s received, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    lab = Lab.from_settings(settings, die_with_parent=True)
    try:
        lab.start()
    except LabError as exc:
        log.error("mail lab cannot start: %s", exc)
        return 1
    log.info(lab.describe())
    status = 0
    try:
        while not stop.wait(WATCH_INTERVAL):
            if lab.dovecot is not None and not lab.dovecot.running():
                log.error("Dovecot stopped unexpectedly:\n%s", lab.dovecot.log_tail())
                status = 1
                break
    finally:
        lab.stop()
        log.info("mail lab stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
