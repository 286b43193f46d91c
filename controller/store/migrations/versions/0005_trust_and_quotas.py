"""trust and quotas: who established a host key (admin, or a job after its own successful connection, and
with which stored credential), the ports a stored credential may be used on, token expiry and per-token job
quotas, the per-role largest scan timeout, aggregated and unique audit entries

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("host_keys") as batch:
        batch.add_column(sa.Column("credential", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("added_by", sa.String(length=128), nullable=True))
    with op.batch_alter_table("credentials") as batch:
        batch.add_column(sa.Column("ports", sa.JSON(), nullable=True))
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("expires_at", TZ, nullable=True))
        batch.add_column(sa.Column("max_queued", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_running", sa.Integer(), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("quota_running", sa.Integer(), nullable=True))
    with op.batch_alter_table("policy") as batch:
        batch.add_column(sa.Column("token_max_queued", sa.Integer(), nullable=False, server_default="20"))
        batch.add_column(sa.Column("token_max_running", sa.Integer(), nullable=False, server_default="4"))
        batch.add_column(sa.Column("max_scan_timeout", sa.JSON(), nullable=True))
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("count", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("client_request_id", sa.String(length=64), nullable=True))
    # Request ids were the client's and could repeat: keep the first of each, then make them unique.
    op.execute(
        "UPDATE audit_log SET client_request_id = request_id, request_id = NULL "
        "WHERE id NOT IN (SELECT MIN(id) FROM audit_log WHERE request_id IS NOT NULL GROUP BY request_id)"
    )
    op.create_index("uq_audit_log_request_id", "audit_log", ["request_id"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_audit_log_request_id", table_name="audit_log")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("client_request_id")
        batch.drop_column("count")
    with op.batch_alter_table("policy") as batch:
        batch.drop_column("max_scan_timeout")
        batch.drop_column("token_max_running")
        batch.drop_column("token_max_queued")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("quota_running")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("max_running")
        batch.drop_column("max_queued")
        batch.drop_column("expires_at")
    with op.batch_alter_table("credentials") as batch:
        batch.drop_column("ports")
    with op.batch_alter_table("host_keys") as batch:
        batch.drop_column("added_by")
        batch.drop_column("credential")
