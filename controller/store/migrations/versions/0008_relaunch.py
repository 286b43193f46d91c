"""relaunch, metrics and streams: the job a job runs again, when a job's first event was stored, cumulative
counters that job workers on any machine add to, and an index of jobs by their last change

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
        batch.add_column(sa.Column("first_event_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index(batch.f("ix_jobs_relaunched_from"), ["relaunched_from"], unique=False)
        batch.create_index("ix_jobs_updated", ["updated_at"], unique=False)
    op.create_table(
        "metric_counters",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("labels", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", "labels"),
    )


def downgrade() -> None:
    op.drop_table("metric_counters")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_updated")
        batch.drop_index(batch.f("ix_jobs_relaunched_from"))
        batch.drop_column("first_event_at")
        batch.drop_column("relaunched_from")
