"""Alembic environment: the target is SQLModel.metadata with every mailer_app table.

The URL comes from the caller's config when set (tests, `python -m mailer_app
migrate`), otherwise from the app settings (DATABASE_URL or the SQLite default).
"""

from logging.config import fileConfig

from alembic import context
from sqlmodel import SQLModel

import mailer_app.models  # noqa: F401  (registers every table on the metadata)
from mailer_app.db import make_engine
from mailer_app.settings import get_settings

config = context.config
if config.config_file_name is not None and not config.attributes.get("skip_logging_setup"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = SQLModel.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if not url or url.startswith("driver://"):
        url = get_settings().resolved_database_url()
    return url


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=True,  # SQLite can only ALTER through table copies
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
