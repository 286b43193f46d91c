"""the network over time: assets (hosts the scans have seen, their ports now and the ports' changes, the
scans that saw them), the state nmap gave the ports it did not list, an imported scan's source file

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("scans") as batch:
        batch.add_column(sa.Column("source", sa.String(length=255), nullable=True))
    with op.batch_alter_table("scan_hosts") as batch:
        batch.add_column(sa.Column("extra_state", sa.String(length=24), nullable=True))
    op.create_table(
        "assets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("sort_key", sa.String(length=33), nullable=False),
        sa.Column("hostnames", sa.JSON(), nullable=False),
        sa.Column("mac", sa.String(length=17), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("first_seen", TZ, nullable=False),
        sa.Column("last_seen", TZ, nullable=True),
        sa.Column("last_scan_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["last_scan_id"], ["scans.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("address"),
    )
    op.create_index(op.f("ix_assets_sort_key"), "assets", ["sort_key"], unique=False)
    op.create_index(op.f("ix_assets_last_seen"), "assets", ["last_seen"], unique=False)
    op.create_table(
        "asset_scans",
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("scan_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["asset_id"], ["assets.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["scan_id"], ["scans.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("asset_id", "scan_id"),
    )
    op.create_index(op.f("ix_asset_scans_scan_id"), "asset_scans", ["scan_id"], unique=False)
    op.create_table(
        "asset_ports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("sort_key", sa.String(length=33), nullable=False),
        sa.Column("protocol", sa.String(length=8), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("service", sa.String(length=128), nullable=True),
        sa.Column("product", sa.String(length=255), nullable=True),
        sa.Column("version", sa.String(length=255), nullable=True),
        sa.Column("first_seen", TZ, nullable=False),
        sa.Column("last_seen", TZ, nullable=False),
        sa.ForeignKeyConstraint(["asset_id"], ["assets.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("asset_id", "protocol", "port", name="uq_asset_ports"),
    )
    op.create_index("ix_asset_ports_port", "asset_ports", ["port", "state", "sort_key"], unique=False)
    op.create_index("ix_asset_ports_service", "asset_ports", ["service", "state", "sort_key"], unique=False)
    op.create_table(
        "asset_port_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("protocol", sa.String(length=8), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("change", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("previous", sa.String(length=24), nullable=True),
        sa.Column("scan_id", sa.Integer(), nullable=True),
        sa.Column("at", TZ, nullable=False),
        sa.ForeignKeyConstraint(["asset_id"], ["assets.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["scan_id"], ["scans.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_asset_port_changes_asset", "asset_port_changes", ["asset_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_table("asset_port_changes")
    op.drop_table("asset_ports")
    op.drop_table("asset_scans")
    op.drop_table("assets")
    with op.batch_alter_table("scan_hosts") as batch:
        batch.drop_column("extra_state")
    with op.batch_alter_table("scans") as batch:
        batch.drop_column("source")
