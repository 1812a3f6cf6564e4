"""The fleet server's schema (SQLAlchemy Core). Alembic migrations build exactly this; a test
compares the two so they cannot drift."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()
ID = 64  # device ids, release ids, rollout ids, idempotency keys
TS = DateTime(timezone=True)

devices = Table(
    "devices",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("device_class", String(ID), nullable=False, index=True),
    Column("credential_hash", String(64), nullable=False),  # sha256 of a 256-bit random token
    Column("enrolled_at", TS, nullable=False),
    Column("current_sequence", BigInteger, nullable=False, default=0),
    Column("slot_state", String(16), nullable=False, default="unknown"),
)

releases = Table(
    "releases",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("sequence", BigInteger, nullable=False, unique=True),
    Column("model_name", String(128), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("created_by", String(ID), nullable=False),
)

release_bundles = Table(
    "release_bundles",
    metadata,
    Column("release_id", String(ID), ForeignKey("releases.id"), primary_key=True),
    Column("device_class", String(ID), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("path", String(255), nullable=False),  # relative to the bundle directory
    Column("manifest", Text, nullable=False),  # JSON view, for display
)

rollouts = Table(
    "rollouts",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("release_id", String(ID), ForeignKey("releases.id"), nullable=False),
    Column("rollback_release_id", String(ID), ForeignKey("releases.id"), nullable=True),
    Column("status", String(16), nullable=False, index=True),
    Column("state", Text, nullable=False),  # engine.RolloutState as JSON: the rollout resumes from it
    Column("version", Integer, nullable=False),  # optimistic concurrency between server replicas
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)

# The one row a polling device needs: primary key lookup, joined to its device row.
assignments = Table(
    "assignments",
    metadata,
    Column("device_id", String(ID), ForeignKey("devices.id"), primary_key=True),
    Column("release_id", String(ID), ForeignKey("releases.id"), nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("rollout_id", String(ID), nullable=True),
    Column("assigned_at", TS, nullable=False),
)

# Who a rollout took, in which group: the primary key makes a second assignment impossible.
rollout_members = Table(
    "rollout_members",
    metadata,
    Column("rollout_id", String(ID), ForeignKey("rollouts.id"), primary_key=True),
    Column("device_id", String(ID), ForeignKey("devices.id"), primary_key=True),
    Column("device_class", String(ID), nullable=False),
    Column("group_index", Integer, nullable=False),
    Column("assigned_at", TS, nullable=False),
    Column("outcome", String(16), nullable=True),
    Column("reason", String(255), nullable=True),
    Column("outcome_at", TS, nullable=True),
    Index("ix_rollout_members_device", "device_id"),
)

reports = Table(
    "reports",
    metadata,
    Column("device_id", String(ID), ForeignKey("devices.id"), primary_key=True),
    Column("idempotency_key", String(ID), primary_key=True),
    Column("release_id", String(ID), nullable=False),
    Column("stage", String(16), nullable=False),
    Column("reason", String(255), nullable=True),
    Column("received_at", TS, nullable=False),
)

telemetry = Table(
    "telemetry",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(ID), ForeignKey("devices.id"), nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("window_start", TS, nullable=False),
    Column("window_end", TS, nullable=False),
    Column("received_at", TS, nullable=False),
    Column("body", Text, nullable=False),  # TelemetryAggregate as JSON
    Column("packed", LargeBinary, nullable=False),  # its counts as int64 (telemetry.pack): summed without parsing
    Index("ix_telemetry_window_end", "window_end"),
    Index("ix_telemetry_device", "device_id"),
)

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", TS, nullable=False),
    Column("actor", String(ID), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(ID * 2), nullable=False),
    Column("detail", Text, nullable=False),
    Index("ix_audit_at", "at"),
)
