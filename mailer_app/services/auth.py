"""Accounts and sign-in: first-run owner, password hashing, browser sessions, roles.

Passwords are hashed with argon2id (argon2-cffi defaults, rehashed on sign-in when
those parameters change). Sign-in failures all raise the same `InvalidCredentials`
with the same message, and unknown emails still cost one hash verification, so
neither the answer nor its timing says whether an address has an account.

Session cookies are random tokens; only their SHA-256 is stored, so a copy of the
database does not let anyone sign in.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from email_validator import EmailNotValidError, validate_email
from sqlmodel import Session, select

from mailer_app.models import Membership, Role, Source, User, UserSession, Workspace, utcnow
from mailer_app.services import InvalidInput, ServiceError, audit
from mailer_app.services.workspaces import create_workspace, get_workspace

log = logging.getLogger(__name__)

PASSWORD_MIN_LENGTH = 10
# argon2 hashes any length, but a megabyte "password" is a cheap way to burn CPU.
PASSWORD_MAX_LENGTH = 1024
SESSION_LIFETIME = timedelta(days=14)
SESSION_TOKEN_BYTES = 32
# Any fixed integer: serializes concurrent first-run setups on PostgreSQL.
_FIRST_RUN_LOCK_ID = 0x6D61696C  # "mail"

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile
_dummy_hash: str | None = None


class AuthError(ServiceError):
    """Base of the errors this module raises."""


class InvalidCredentials(AuthError):
    """Sign-in failed. One message for every reason, on purpose."""

    def __init__(self, message: str = "Email or password is incorrect.") -> None:
        super().__init__(message)


class SetupAlreadyDone(AuthError):
    """create_owner after the first user exists."""


class PermissionDenied(AuthError):
    """The signed-in user's role does not allow this."""


@dataclass(frozen=True)
class CurrentUser:
    """Who is signed in, in which workspace, with which role (no secrets inside)."""

    user_id: int
    email: str
    display_name: str
    workspace_id: int
    workspace_name: str
    role: str


# --- passwords ----------------------------------------------------------------------


def hash_password(password: str) -> str:
    """An argon2id hash of `password` (after checking the password policy)."""
    check_password_policy(password)
    return _hasher.hash(password)


def check_password_policy(password: str) -> None:
    """Raise InvalidInput (field "password") with a plain-language reason."""
    if not isinstance(password, str) or len(password) < PASSWORD_MIN_LENGTH:
        raise InvalidInput(
            f"Use a password of at least {PASSWORD_MIN_LENGTH} characters.", field="password"
        )
    if len(password) > PASSWORD_MAX_LENGTH:
        raise InvalidInput(
            f"Use a password of at most {PASSWORD_MAX_LENGTH} characters.", field="password"
        )
    if not password.strip():
        raise InvalidInput("A password cannot be only spaces.", field="password")


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _dummy() -> str:
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
    return _dummy_hash


def normalize_email(email: str, *, field: str = "email") -> str:
    """The address, syntax-checked (no DNS) and lowercased; InvalidInput otherwise."""
    try:
        return validate_email((email or "").strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        raise InvalidInput(
            "Enter a valid email address, like name@example.com.", field=field
        ) from None


# --- first run and users --------------------------------------------------------------


def needs_first_run(*, session: Session) -> bool:
    """True while no user exists (the setup page is open)."""
    return session.exec(select(User.id).limit(1)).first() is None


def create_owner(
    *,
    session: Session,
    email: str,
    password: str,
    display_name: str,
    workspace_name: str,
    source: Source | str = Source.UI,
) -> tuple[User, Workspace]:
    """First run: create the workspace and its owner. Refused once any user exists."""
    _lock_first_run(session)
    if not needs_first_run(session=session):
        raise SetupAlreadyDone("This installation is already set up. Sign in instead.")
    email = normalize_email(email)
    password_hash = hash_password(password)
    workspace = create_workspace(session=session, name=workspace_name, source=source)
    user = User(
        email=email,
        display_name=_display_name(display_name, email),
        password_hash=password_hash,
        source=str(source),
    )
    session.add(user)
    session.flush()
    session.add(
        Membership(workspace_id=workspace.id, user_id=user.id, role=Role.OWNER, source=str(source))
    )
    session.flush()
    audit.record(
        session=session,
        action="workspace.create_owner",
        source=source,
        workspace_id=workspace.id,
        user_id=user.id,
        target_type="user",
        target_id=user.id,
        details={"email": email, "workspace": workspace.name, "slug": workspace.slug},
    )
    return user, workspace


def _lock_first_run(session: Session) -> None:
    # Two browsers submitting the setup form at once must not both create an owner.
    # PostgreSQL: a transaction-scoped advisory lock. SQLite allows one writer at a
    # time, so the second transaction fails instead of creating a second owner.
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _FIRST_RUN_LOCK_ID})


def _display_name(display_name: str, email: str) -> str:
    name = (display_name or "").strip()[:200]
    return name or email.split("@", 1)[0]


def create_user(
    *,
    session: Session,
    workspace_id: int,
    email: str,
    password: str,
    role: Role | str,
    created_by_id: int | None,
    display_name: str = "",
    source: Source | str = Source.UI,
) -> User:
    """Add a new user to a workspace with `role` (invitations build on this)."""
    try:
        role = Role(role)
    except ValueError:
        raise InvalidInput("Choose one of the listed roles.", field="role") from None
    get_workspace(session=session, workspace_id=workspace_id)  # WorkspaceNotFound, not an FK error
    email = normalize_email(email)
    if session.exec(select(User.id).where(User.email == email)).first() is not None:
        raise InvalidInput("A user with this email address already exists.", field="email")
    user = User(
        email=email,
        display_name=_display_name(display_name, email),
        password_hash=hash_password(password),
        source=str(source),
    )
    session.add(user)
    session.flush()
    session.add(
        Membership(workspace_id=workspace_id, user_id=user.id, role=role, source=str(source))
    )
    session.flush()
    audit.record(
        session=session,
        action="user.create",
        source=source,
        workspace_id=workspace_id,
        user_id=created_by_id,
        target_type="user",
        target_id=user.id,
        details={"email": email, "role": role},
    )
    return user


# --- sign-in ------------------------------------------------------------------------


def authenticate(
    *, session: Session, email: str, password: str, source: Source | str = Source.UI
) -> User:
    """The active user with this email and password, or InvalidCredentials.

    Success updates last_login_at (and the hash, if argon2 parameters changed) in the
    caller's transaction. A failure is audited in its own short transaction, because
    the caller's transaction is rolled back by the exception; call this before making
    other writes in the same transaction.
    """
    dummy = _dummy()  # computed on the first call whatever happens, for even timing
    normalized = _address_or_none(email)
    user = None
    # Only something shaped like an address reaches the database: people type their
    # password into the email field, and a query parameter can end up in SQL logs.
    if normalized is not None:
        user = session.exec(select(User).where(User.email == normalized)).first()
    if user is None:
        _verify(dummy, password or "")
        _record_failure(
            session, email=normalized, user_id=None, reason="unknown_email", source=source
        )
        raise InvalidCredentials()
    if not _verify(user.password_hash, password or ""):
        _record_failure(
            session, email=normalized, user_id=user.id, reason="wrong_password", source=source
        )
        raise InvalidCredentials()
    if not user.is_active:
        _record_failure(
            session, email=normalized, user_id=user.id, reason="inactive_user", source=source
        )
        raise InvalidCredentials()
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.last_login_at = utcnow()
    session.add(user)
    session.flush()
    audit.record(
        session=session,
        action="user.sign_in",
        source=source,
        user_id=user.id,
        target_type="user",
        target_id=user.id,
    )
    return user


def _address_or_none(email: str) -> str | None:
    try:
        return validate_email((email or "").strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


def _record_failure(
    session: Session,
    *,
    email: str | None,
    user_id: int | None,
    reason: str,
    source: Source | str,
) -> None:
    # The typed "email" is kept only when it is shaped like an address, so the audit
    # log never holds a password typed into the wrong field.
    shown = email or "(not an email address)"
    try:
        with Session(session.get_bind()) as own:
            audit.record(
                session=own,
                action="user.sign_in_failed",
                source=source,
                user_id=user_id,
                details={"email": shown, "reason": reason},
            )
            own.commit()
    except Exception:
        # An audit write must not turn a wrong password into a server error.
        log.warning("could not record a failed sign-in (%s)", reason, exc_info=True)


# --- browser sessions ---------------------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def start_session(
    *,
    session: Session,
    user: User,
    workspace_id: int | None = None,
    source: Source | str = Source.UI,
) -> str:
    """A new cookie token for `user` in `workspace_id` (default: their first workspace).

    Only the token's SHA-256 is stored. PermissionDenied if the user is not a member.
    """
    query = select(Membership).where(Membership.user_id == user.id)
    if workspace_id is not None:
        query = query.where(Membership.workspace_id == workspace_id)
    membership = session.exec(query.order_by(Membership.workspace_id).limit(1)).first()
    if membership is None:
        raise PermissionDenied("You are not a member of this workspace.")
    token = secrets.token_urlsafe(SESSION_TOKEN_BYTES)
    row = UserSession(
        token_hash=_token_hash(token),
        user_id=user.id,
        workspace_id=membership.workspace_id,
        expires_at=utcnow() + SESSION_LIFETIME,
        source=str(source),
    )
    session.add(row)
    session.flush()
    audit.record(
        session=session,
        action="user.session_start",
        source=source,
        workspace_id=membership.workspace_id,
        user_id=user.id,
        target_type="user_session",
        target_id=row.id,
    )
    return token


def resolve_session(*, session: Session, token: str) -> CurrentUser | None:
    """Who this cookie token belongs to, or None (unknown, expired, revoked, inactive)."""
    if not token or len(token) > 256:
        return None
    row = session.exec(
        select(UserSession, User, Membership, Workspace)
        .join(User, User.id == UserSession.user_id)
        .join(
            Membership,
            (Membership.user_id == UserSession.user_id)
            & (Membership.workspace_id == UserSession.workspace_id),
        )
        .join(Workspace, Workspace.id == UserSession.workspace_id)
        .where(UserSession.token_hash == _token_hash(token))
    ).first()
    if row is None:
        return None
    user_session, user, membership, workspace = row
    if user_session.revoked_at is not None or user_session.expires_at <= utcnow():
        return None
    if not user.is_active:
        return None
    return CurrentUser(
        user_id=user.id,
        email=user.email,
        display_name=user.display_name,
        workspace_id=workspace.id,
        workspace_name=workspace.name,
        role=membership.role,
    )


def end_session(*, session: Session, token: str, source: Source | str = Source.UI) -> None:
    """Revoke the session behind this token (sign out). Unknown tokens are ignored."""
    if not token or len(token) > 256:
        return
    row = session.exec(
        select(UserSession).where(UserSession.token_hash == _token_hash(token))
    ).first()
    if row is None or row.revoked_at is not None:
        return
    row.revoked_at = utcnow()
    session.add(row)
    session.flush()
    audit.record(
        session=session,
        action="user.sign_out",
        source=source,
        workspace_id=row.workspace_id,
        user_id=row.user_id,
        target_type="user_session",
        target_id=row.id,
    )


# --- roles --------------------------------------------------------------------------


def require_role(current: CurrentUser | None, *roles: Role | str) -> CurrentUser:
    """`current` if their role is one of `roles` (owners always pass); else PermissionDenied."""
    if current is None:
        raise PermissionDenied("Sign in to continue.")
    allowed = {str(r) for r in roles} | {Role.OWNER.value}
    if current.role not in allowed:
        raise PermissionDenied("Your role does not allow this. Ask an owner or admin.")
    return current
