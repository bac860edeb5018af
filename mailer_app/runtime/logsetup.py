"""Logging for the long-running processes (worker, scheduler, supervisor)."""

from __future__ import annotations

import logging


def process_log_format(process: str) -> str:
    return f"%(asctime)s {process}[%(process)d] %(levelname)s %(name)s: %(message)s"


def setup_process_logging(process: str, level: int = logging.INFO) -> None:
    """Use the app's logging setup (secret redaction) when it exists, else basicConfig.

    A process must still start and log when `mailer_app.logs` is missing or broken.
    """
    try:
        from mailer_app.logs import setup_logging
    except Exception:  # missing or broken: fall back, never stop a process for logs
        setup_logging = None
    if setup_logging is not None:
        try:
            setup_logging(level, fmt=process_log_format(process))
            return
        except Exception:
            logging.basicConfig(level=level, format=process_log_format(process))
            logging.getLogger(__name__).exception("mailer_app.logs.setup_logging failed")
            return
    logging.basicConfig(level=level, format=process_log_format(process))
