"""Business rules, shared by the UI, the HTTP API, the CLI and the jobs.

Conventions every service module follows:

- Data functions are keyword-only and take the caller's `session`:
  `create_owner(*, session, email, password, ...)`.
- Services never commit. The caller owns the transaction (usually
  `mailer_app.db.session_scope()`, which commits on success and rolls back on error);
  services `session.flush()` when they need ids. The one documented exception is the
  audit entry of a *failed* sign-in, written in its own short transaction by
  `auth.authenticate` so it survives the rollback its own exception causes.
- Every query on workspace data filters on `workspace_id`.
- Errors are `ServiceError` subclasses whose message is plain language, safe to show
  to the person who caused it (never a value of a secret).
"""

from __future__ import annotations


class ServiceError(Exception):
    """A business rule said no. `str(error)` is a message a person can act on."""


class NotFoundError(ServiceError, LookupError):
    """The thing does not exist in this workspace (or at all: we do not say which)."""


class InvalidInput(ServiceError, ValueError):
    """A value was rejected. `field` names the form field the message belongs next to."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
