"""sending: submission marks, append errors and bounces on send records, bounce events,
where bounce polling stopped per sender account

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bounce_event",
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sender_account_id", sa.Integer(), nullable=False),
        sa.Column("send_record_id", sa.Integer(), nullable=True),
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("status_code", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("diagnostic", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("dsn_key", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("received_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["user.id"],
        ),
        sa.ForeignKeyConstraint(
            ["send_record_id"],
            ["send_record.id"],
        ),
        sa.ForeignKeyConstraint(
            ["sender_account_id"],
            ["sender_account.id"],
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspace.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sender_account_id", "dsn_key"),
    )
    with op.batch_alter_table("bounce_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bounce_event_email"), ["email"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_bounce_event_send_record_id"), ["send_record_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_bounce_event_sender_account_id"), ["sender_account_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_bounce_event_workspace_id"), ["workspace_id"], unique=False
        )

    with op.batch_alter_table("send_record", schema=None) as batch_op:
        batch_op.create_index(
            "ix_send_record_ws_message_id", ["workspace_id", "message_id"], unique=False
        )
        batch_op.add_column(
            sa.Column("submitted_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
        batch_op.add_column(
            sa.Column("append_error", sqlmodel.sql.sqltypes.AutoString(), nullable=True)
        )
        batch_op.add_column(
            sa.Column("bounce_kind", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True)
        )
        batch_op.add_column(
            sa.Column("bounced_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )

    with op.batch_alter_table("sender_account", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("bounce_folder", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True)
        )
        batch_op.add_column(sa.Column("bounce_uidvalidity", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("bounce_last_uid", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("bounce_polled_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("sender_account", schema=None) as batch_op:
        batch_op.drop_column("bounce_polled_at")
        batch_op.drop_column("bounce_last_uid")
        batch_op.drop_column("bounce_uidvalidity")
        batch_op.drop_column("bounce_folder")

    with op.batch_alter_table("send_record", schema=None) as batch_op:
        batch_op.drop_index("ix_send_record_ws_message_id")
        batch_op.drop_column("bounced_at")
        batch_op.drop_column("bounce_kind")
        batch_op.drop_column("append_error")
        batch_op.drop_column("submitted_at")

    with op.batch_alter_table("bounce_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bounce_event_workspace_id"))
        batch_op.drop_index(batch_op.f("ix_bounce_event_sender_account_id"))
        batch_op.drop_index(batch_op.f("ix_bounce_event_send_record_id"))
        batch_op.drop_index(batch_op.f("ix_bounce_event_email"))

    op.drop_table("bounce_event")
