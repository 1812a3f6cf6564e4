"""initial fleet schema

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("device_class", sa.String(64), nullable=False),
        sa.Column("credential_hash", sa.String(64), nullable=False),
        sa.Column("enrolled_at", TS, nullable=False),
        sa.Column("current_sequence", sa.BigInteger, nullable=False),
        sa.Column("slot_state", sa.String(16), nullable=False),
    )
    op.create_index("ix_devices_device_class", "devices", ["device_class"])
    op.create_table(
        "releases",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("sequence", sa.BigInteger, nullable=False, unique=True),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
    )
    op.create_table(
        "release_bundles",
        sa.Column("release_id", sa.String(64), sa.ForeignKey("releases.id"), primary_key=True),
        sa.Column("device_class", sa.String(64), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("manifest", sa.Text, nullable=False),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("release_id", sa.String(64), sa.ForeignKey("releases.id"), nullable=False),
        sa.Column("rollback_release_id", sa.String(64), sa.ForeignKey("releases.id"), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_rollouts_status", "rollouts", ["status"])
    op.create_table(
        "assignments",
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.id"), primary_key=True),
        sa.Column("release_id", sa.String(64), sa.ForeignKey("releases.id"), nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("rollout_id", sa.String(64), nullable=True),
        sa.Column("assigned_at", TS, nullable=False),
    )
    op.create_table(
        "rollout_members",
        sa.Column("rollout_id", sa.String(64), sa.ForeignKey("rollouts.id"), primary_key=True),
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.id"), primary_key=True),
        sa.Column("device_class", sa.String(64), nullable=False),
        sa.Column("group_index", sa.Integer, nullable=False),
        sa.Column("assigned_at", TS, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("reason", sa.String(255), nullable=True),
        sa.Column("outcome_at", TS, nullable=True),
    )
    op.create_index("ix_rollout_members_device", "rollout_members", ["device_id"])
    op.create_table(
        "reports",
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.id"), primary_key=True),
        sa.Column("idempotency_key", sa.String(64), primary_key=True),
        sa.Column("release_id", sa.String(64), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(255), nullable=True),
        sa.Column("received_at", TS, nullable=False),
    )
    op.create_table(
        "telemetry",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.id"), nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("window_start", TS, nullable=False),
        sa.Column("window_end", TS, nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ix_telemetry_window_end", "telemetry", ["window_end"])
    op.create_index("ix_telemetry_device", "telemetry", ["device_id"])
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_at", "audit", ["at"])


def downgrade() -> None:
    for table in (
        "audit",
        "telemetry",
        "reports",
        "rollout_members",
        "assignments",
        "rollouts",
        "release_bundles",
        "releases",
        "devices",
    ):
        op.drop_table(table)
