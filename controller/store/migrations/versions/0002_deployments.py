"""deployments: job settings, in-memory secrets holder, trusted SSH host keys

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("settings", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("secrets_holder", sa.String(length=255), nullable=True))
    op.create_table(
        "host_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("key_type", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("host", "key_type", name="uq_host_keys_host_type"),
    )
    op.create_index("ix_host_keys_host", "host_keys", ["host"])


def downgrade() -> None:
    op.drop_index("ix_host_keys_host", table_name="host_keys")
    op.drop_table("host_keys")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("secrets_holder")
        batch.drop_column("settings")
