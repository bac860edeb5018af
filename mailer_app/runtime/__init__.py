"""Process management: the development supervisor and its helpers.

The public API lives in `mailer_app.runtime.supervisor` (ensure_supervisor,
find_watch_pid, supervisor_status). This package imports nothing on purpose, so
`python -m mailer_app.runtime.supervisor` runs without a double import.
"""
