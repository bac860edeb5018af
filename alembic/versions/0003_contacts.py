"""contact imports: stored upload, progress, report, message; leaner contact indexes

The contact table loses its workspace and list indexes: every query names the list,
which the unique (list_id, email) index serves, and each index costs every imported row.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("contact") as batch:
        batch.drop_index("ix_contact_list_id")
        batch.drop_index("ix_contact_workspace_id")
    with op.batch_alter_table("contact_import") as batch:
        batch.add_column(
            sa.Column(
                "stored_name",
                sqlmodel.sql.sqltypes.AutoString(length=255),
                nullable=False,
                server_default="",
            )
        )
        batch.add_column(sa.Column("file_size", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("bytes_read", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("rows_updated", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("report_name", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True)
        )
        batch.add_column(
            sa.Column("message", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True)
        )
        batch.add_column(
            sa.Column("started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("contact") as batch:
        batch.create_index("ix_contact_workspace_id", ["workspace_id"], unique=False)
        batch.create_index("ix_contact_list_id", ["list_id"], unique=False)
    with op.batch_alter_table("contact_import") as batch:
        batch.drop_column("started_at")
        batch.drop_column("message")
        batch.drop_column("report_name")
        batch.drop_column("rows_updated")
        batch.drop_column("bytes_read")
        batch.drop_column("file_size")
        batch.drop_column("stored_name")
