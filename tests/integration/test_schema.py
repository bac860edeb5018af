"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import mailer_app.models  # noqa: F401
from mailer_app.db import SchemaOutdatedError, ensure_schema, make_engine, schema_revisions


def test_migrated_schema_has_no_drift_from_models(db_url):
    engine = make_engine(db_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, SQLModel.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations disagree: {diff}"


def test_every_model_table_exists_after_migration(db_url):
    engine = make_engine(db_url)
    tables = set(sa.inspect(engine).get_table_names())
    engine.dispose()
    assert set(SQLModel.metadata.tables) <= tables


def test_unique_constraints_the_spec_names(db_url):
    engine = make_engine(db_url)
    inspector = sa.inspect(engine)

    def uniques(table):
        found = {tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)}
        found |= {tuple(i["column_names"]) for i in inspector.get_indexes(table) if i["unique"]}
        return found

    assert ("workspace_id", "email") in uniques("seed_account")
    assert ("run_id", "seed_id") in uniques("placement_result")
    assert ("run_id", "email") in uniques("send_record")
    engine.dispose()


def test_production_refuses_an_outdated_schema_and_names_the_command(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    make_engine(url).dispose()
    with pytest.raises(SchemaOutdatedError, match="python -m mailer_app migrate"):
        ensure_schema(migrate=False, url=url)
    ensure_schema(migrate=True, url=url)
    current, head = schema_revisions(url)
    assert current == head is not None
    ensure_schema(migrate=False, url=url)  # now it starts
