"""dashboard: placement counts per hour (rollup), and triggers that mark changed hours

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The columns whose change moves a result from one rollup row to another.
_WATCHED = ("sent_at", "placement", "esp", "run_id", "workspace_id")

_SQLITE_HOUR = "substr({row}.sent_at, 1, 13) || ':00:00.000000'"
_SQLITE_MARK = (
    "INSERT INTO placement_rollup_dirty (workspace_id, hour) "
    "VALUES ({row}.workspace_id, " + _SQLITE_HOUR + ");"
)
_SQLITE_TRIGGERS = {
    "placement_result_rollup_insert": (
        "AFTER INSERT ON placement_result WHEN NEW.sent_at IS NOT NULL",
        _SQLITE_MARK.format(row="NEW"),
    ),
    "placement_result_rollup_delete": (
        "AFTER DELETE ON placement_result WHEN OLD.sent_at IS NOT NULL",
        _SQLITE_MARK.format(row="OLD"),
    ),
    "placement_result_rollup_update_old": (
        f"AFTER UPDATE OF {', '.join(_WATCHED)} ON placement_result "
        "WHEN OLD.sent_at IS NOT NULL AND ("
        + " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in _WATCHED)
        + ")",
        _SQLITE_MARK.format(row="OLD"),
    ),
    "placement_result_rollup_update_new": (
        f"AFTER UPDATE OF {', '.join(_WATCHED)} ON placement_result "
        "WHEN NEW.sent_at IS NOT NULL AND (OLD.sent_at IS NULL "
        "OR OLD.workspace_id IS NOT NEW.workspace_id "
        "OR substr(OLD.sent_at, 1, 13) IS NOT substr(NEW.sent_at, 1, 13))",
        _SQLITE_MARK.format(row="NEW"),
    ),
}

_PG_HOUR = "date_trunc('hour', {row}.sent_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
_PG_MARK = (
    "INSERT INTO placement_rollup_dirty (workspace_id, hour) "
    "VALUES ({row}.workspace_id, " + _PG_HOUR + ");"
)
_PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION placement_rollup_mark() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.sent_at IS NOT NULL THEN
            {_PG_MARK.format(row="OLD")}
        END IF;
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.sent_at IS NOT NULL AND ({
    " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in _WATCHED)
}) THEN
        {_PG_MARK.format(row="OLD")}
    END IF;
    IF NEW.sent_at IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.sent_at IS NULL
            OR OLD.workspace_id IS DISTINCT FROM NEW.workspace_id
            OR {_PG_HOUR.format(row="OLD")} IS DISTINCT FROM {_PG_HOUR.format(row="NEW")}) THEN
        {_PG_MARK.format(row="NEW")}
    END IF;
    RETURN NULL;
END
$$;
"""


def upgrade() -> None:
    op.create_table(
        "placement_rollup",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("hour", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("esp", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("placement", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspace.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_placement_rollup_ws_hour",
        "placement_rollup",
        ["workspace_id", "hour", "campaign_id", "esp", "placement", "count"],
        unique=False,
    )
    op.create_table(
        "placement_rollup_dirty",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("hour", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_placement_rollup_dirty_ws_hour",
        "placement_rollup_dirty",
        ["workspace_id", "hour"],
        unique=False,
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    hour = (_PG_HOUR if postgres else _SQLITE_HOUR).format(row="r")
    # The results already there, counted once (the SQL is built from constants only).
    op.execute(
        "INSERT INTO placement_rollup (workspace_id, hour, campaign_id, esp, placement, count) "  # noqa: S608
        f"SELECT r.workspace_id, {hour}, run.campaign_id, r.esp, r.placement, count(*) "
        "FROM placement_result r JOIN placement_run run ON run.id = r.run_id "
        f"WHERE r.sent_at IS NOT NULL GROUP BY r.workspace_id, {hour}, run.campaign_id, "
        "r.esp, r.placement"
    )
    if postgres:
        op.execute(_PG_FUNCTION)
        op.execute(
            "CREATE TRIGGER placement_result_rollup AFTER INSERT OR UPDATE OR DELETE "
            "ON placement_result FOR EACH ROW EXECUTE FUNCTION placement_rollup_mark()"
        )
        return
    for name, (when, action) in _SQLITE_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {when} BEGIN {action} END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS placement_result_rollup ON placement_result")
        op.execute("DROP FUNCTION IF EXISTS placement_rollup_mark()")
    else:
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_index("ix_placement_rollup_dirty_ws_hour", table_name="placement_rollup_dirty")
    op.drop_table("placement_rollup_dirty")
    op.drop_index("ix_placement_rollup_ws_hour", table_name="placement_rollup")
    op.drop_table("placement_rollup")
