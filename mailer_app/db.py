"""Database engines, sessions and schema migrations.

Every process builds its own engine from the same URL setting (workers never import
the Reflex app). SQLite gets WAL mode, a busy timeout and foreign keys, which
Reflex does not set, so web, workers and the lab can share one file.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from mailer_app.settings import PROJECT_ROOT, ConfigurationError, get_settings

SQLITE_BUSY_TIMEOUT_MS = 10_000


def make_engine(url: str) -> Engine:
    """An engine for `url`, with the SQLite pragmas the app relies on."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        )
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@functools.cache
def _engine_for(url: str) -> Engine:
    return make_engine(url)


def get_engine() -> Engine:
    """The process-wide engine for the configured DATABASE_URL (created on first use)."""
    return _engine_for(get_settings().resolved_database_url())


@contextlib.contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine or get_engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


# --- migrations -------------------------------------------------------------------

ALEMBIC_DIR = PROJECT_ROOT / "alembic"


def alembic_config(url: str | None = None):
    from alembic.config import Config

    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.set_main_option(
        "sqlalchemy.url", (url or get_settings().resolved_database_url()).replace("%", "%%")
    )
    return config


def upgrade_to_head(url: str | None = None) -> None:
    """Apply every pending migration (the `migrate` command and dev start-up)."""
    from alembic import command

    command.upgrade(alembic_config(url), "head")


def schema_revisions(url: str | None = None) -> tuple[str | None, str | None]:
    """(revision the database is at, newest revision in the code)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = alembic_config(url)
    head = ScriptDirectory.from_config(config).get_current_head()
    engine = make_engine(config.get_main_option("sqlalchemy.url").replace("%%", "%"))
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    return current, head


class SchemaOutdatedError(ConfigurationError):
    pass


def ensure_schema(*, migrate: bool, url: str | None = None) -> None:
    """Migrate (development) or refuse to run on an outdated schema (production)."""
    if migrate:
        upgrade_to_head(url)
        return
    current, head = schema_revisions(url)
    if current != head:
        raise SchemaOutdatedError(
            f"The database schema is at revision {current or 'none'} but this version of "
            f"mailer_app needs {head}. Run `python -m mailer_app migrate` and start again."
        )


def sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    return None


def after_commit(session: Session, action: Callable[[], None]) -> None:
    """Run `action()` once the session's current transaction commits (never on rollback).

    Jobs that read rows a service just wrote must be enqueued after the commit, or
    a fast worker would look for rows that do not exist yet.
    """
    if not session.info.get("after_commit_hooked"):
        session.info["after_commit_hooked"] = True
        sa.event.listen(session, "after_commit", _run_after_commit)
        sa.event.listen(session, "after_transaction_end", _forget_after_rollback)
    session.info.setdefault("after_commit", []).append(action)


def _run_after_commit(session: Session) -> None:
    # after_commit fires for the outermost transaction only, never for a savepoint.
    for action in session.info.pop("after_commit", []):
        action()


def _forget_after_rollback(session: Session, transaction) -> None:
    # The outermost transaction ended without committing (a commit already emptied
    # the list): its actions must not run with a later transaction.
    if transaction.parent is None and not transaction.nested:
        session.info.pop("after_commit", None)
