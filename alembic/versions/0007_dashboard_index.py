"""dashboard: a covering index on placement results by workspace and send time

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("placement_result", schema=None) as batch_op:
        batch_op.create_index(
            "ix_placement_result_ws_sent",
            ["workspace_id", "sent_at", "esp", "placement"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("placement_result", schema=None) as batch_op:
        batch_op.drop_index("ix_placement_result_ws_sent")
