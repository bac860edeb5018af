"""campaign wizard: a campaign's description; a version's sender, seed list and saved steps

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaign") as batch:
        batch.add_column(
            sa.Column(
                "description",
                sqlmodel.sql.sqltypes.AutoString(length=1000),
                nullable=False,
                server_default="",
            )
        )
    with op.batch_alter_table("campaign_version") as batch:
        batch.add_column(sa.Column("steps_done", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("sender_account_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("seed_list_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_campaign_version_sender_account_id",
            "sender_account",
            ["sender_account_id"],
            ["id"],
        )
        batch.create_foreign_key(
            "fk_campaign_version_seed_list_id", "seed_list", ["seed_list_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("campaign_version") as batch:
        batch.drop_constraint("fk_campaign_version_seed_list_id", type_="foreignkey")
        batch.drop_constraint("fk_campaign_version_sender_account_id", type_="foreignkey")
        batch.drop_column("seed_list_id")
        batch.drop_column("sender_account_id")
        batch.drop_column("steps_done")
    with op.batch_alter_table("campaign") as batch:
        batch.drop_column("description")
