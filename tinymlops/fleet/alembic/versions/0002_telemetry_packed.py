"""telemetry.packed: each window's counts as int64, so a tick sums windows without parsing JSON

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import json
import struct

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BATCH = 1000


def _pack(body: str) -> bytes:
    """tinymlops.fleet.telemetry.pack as of this revision, on the stored JSON (a migration keeps
    its own copy: the application's may change later)."""
    t = json.loads(body)
    e = t.get("errors") or {}
    values = (
        t.get("inference_count", 0),
        t.get("boot_count", 0),
        *(e.get(name, 0) for name in ("invoke", "input", "watchdog")),
        *t["latency_hist"],
        *t["confidence_hist"],
        *t.get("class_hist", []),
    )
    return struct.pack(f"<{len(values)}q", *values)


def upgrade() -> None:
    op.add_column("telemetry", sa.Column("packed", sa.LargeBinary, nullable=True))
    conn = op.get_bind()
    table = sa.table("telemetry", sa.column("id", sa.Integer), sa.column("body", sa.Text))
    packed = sa.table("telemetry", sa.column("id", sa.Integer), sa.column("packed", sa.LargeBinary))
    last = 0
    while rows := conn.execute(
        sa.select(table.c.id, table.c.body).where(table.c.id > last).order_by(table.c.id).limit(BATCH)
    ).all():
        conn.execute(
            packed.update().where(packed.c.id == sa.bindparam("row_id")).values(packed=sa.bindparam("value")),
            [{"row_id": r.id, "value": _pack(r.body)} for r in rows],
        )
        last = rows[-1].id
    with op.batch_alter_table("telemetry") as batch:
        batch.alter_column("packed", existing_type=sa.LargeBinary, nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("telemetry") as batch:
        batch.drop_column("packed")
