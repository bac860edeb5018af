"""placement run content: the subject and bodies each seed copy carries

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("placement_run") as batch:
        batch.add_column(sa.Column("subject", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch.add_column(sa.Column("html_body", sa.Text(), nullable=True))
        batch.add_column(sa.Column("text_body", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("placement_run") as batch:
        batch.drop_column("text_body")
        batch.drop_column("html_body")
        batch.drop_column("subject")
