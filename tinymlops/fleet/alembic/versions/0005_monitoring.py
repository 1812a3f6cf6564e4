"""monitoring: release baselines, drift scores over time, drift alarms; links from a rollout to the
pipeline run that made it (MLflow run, Prefect flow run)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "baselines",
        sa.Column("device_class", sa.String(64), primary_key=True),
        sa.Column("sequence", sa.BigInteger(), primary_key=True),
        sa.Column("release_id", sa.String(64), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
    )
    op.create_table(
        "drift_scores",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("device_class", sa.String(64), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("devices", sa.Integer(), nullable=False),
        sa.Column("inferences", sa.BigInteger(), nullable=False),
        sa.Index("ix_drift_scores_class_at", "device_class", "at"),
    )
    op.create_table(
        "alarms",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("raised_at", TS, nullable=False),
        sa.Column("device_class", sa.String(64), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("emitted_at", TS, nullable=True),
        sa.Column("event_error", sa.String(255), nullable=True),
        sa.Index("ix_alarms_raised_at", "raised_at"),
        sa.Index("ix_alarms_open", "device_class", "sequence", "status"),
    )

    op.create_table(
        "rollout_links",
        sa.Column("rollout_id", sa.String(64), sa.ForeignKey("rollouts.id"), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("url", sa.String(1024), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rollout_links")
    op.drop_table("alarms")
    op.drop_table("drift_scores")
    op.drop_table("baselines")
