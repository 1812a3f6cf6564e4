"""boot count: the highest EAT bootcount seen in a device's verified evidence

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("devices", sa.Column("boot_count", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as b:
        b.drop_column("boot_count")
