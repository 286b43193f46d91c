"""relaunch: the job a job runs again, for some of its hosts

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("relaunched_from", sa.String(length=36), nullable=True))
        batch.create_index(batch.f("ix_jobs_relaunched_from"), ["relaunched_from"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index(batch.f("ix_jobs_relaunched_from"))
        batch.drop_column("relaunched_from")
