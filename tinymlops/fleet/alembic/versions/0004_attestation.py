"""attestation: device keys bound at enrolment, per-batch provisioning tokens, rollout nonces,
attested telemetry, the usage counters seen in evidence

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # plain ADD COLUMNs (no table rebuild: SQLite would refuse to drop a referenced table)
    op.add_column("devices", sa.Column("public_key", sa.String(64), nullable=True))
    op.add_column("devices", sa.Column("ueid", sa.String(32), nullable=True))
    op.add_column("devices", sa.Column("customer", sa.String(64), nullable=True))
    op.add_column("devices", sa.Column("challenge", sa.String(128), nullable=True))
    op.add_column("devices", sa.Column("inference_count", sa.BigInteger(), nullable=True))
    op.add_column("devices", sa.Column("state_record", sa.BigInteger(), nullable=True))
    op.add_column("devices", sa.Column("evidence_at", TS, nullable=True))
    op.add_column("devices", sa.Column("counter_alarm", sa.String(255), nullable=True))
    op.create_index("ix_devices_public_key", "devices", ["public_key"], unique=True)
    op.add_column("telemetry", sa.Column("attested", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "provisioning_tokens",
        sa.Column("batch", sa.String(64), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("classes", sa.Text(), nullable=False),
        sa.Column("customer", sa.String(64), nullable=True),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("max_uses", sa.Integer(), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "rollout_nonces",
        sa.Column("rollout_id", sa.String(64), sa.ForeignKey("rollouts.id"), primary_key=True),
        sa.Column("nonce", sa.String(128), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rollout_nonces")
    op.drop_table("provisioning_tokens")
    op.drop_index("ix_devices_public_key", "devices")
    with op.batch_alter_table("telemetry") as b:
        b.drop_column("attested")
    with op.batch_alter_table("devices") as b:
        for name in ("counter_alarm", "evidence_at", "state_record", "inference_count", "challenge", "customer",
                     "ueid", "public_key"):  # fmt: skip
            b.drop_column(name)
