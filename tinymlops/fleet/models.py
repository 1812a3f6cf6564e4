"""The fleet server's schema (SQLAlchemy Core). Alembic migrations build exactly this; a test
compares the two so they cannot drift."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
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
    # identity and attestation (migration 0004): the device key bound to name and class at enrolment
    Column("public_key", String(64), nullable=True),  # Ed25519, hex; one device per key (unique index)
    Column("ueid", String(32), nullable=True),  # the 16-byte device id of its provisioning page, hex
    Column("customer", String(ID), nullable=True),  # from the provisioning token's batch
    Column("challenge", String(128), nullable=True),  # one-time nonce for usage evidence, hex
    Column("inference_count", BigInteger, nullable=True),  # highest counter seen in verified evidence
    Column("state_record", BigInteger, nullable=True),  # its state record number
    Column("boot_count", BigInteger, nullable=True),  # highest EAT bootcount seen (migration 0006)
    Column("evidence_at", TS, nullable=True),
    Column("counter_alarm", String(255), nullable=True),  # set when a counter went backwards
    Index("ix_devices_public_key", "public_key", unique=True),
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
    Column("attested", Boolean, nullable=False, default=False, server_default=false()),  # signed by the device key
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

# Small named values kept across restarts and replicas: "revocations" → the highest list version seen.
server_state = Table(
    "server_state",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("updated_at", TS, nullable=False),
)

# Per-batch provisioning tokens (migration 0004): only the digest is stored.
provisioning_tokens = Table(
    "provisioning_tokens",
    metadata,
    Column("batch", String(ID), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("classes", Text, nullable=False),  # JSON list of the device classes it may enrol
    Column("customer", String(ID), nullable=True),
    Column("expires_at", TS, nullable=False),
    Column("max_uses", Integer, nullable=False),
    Column("uses", Integer, nullable=False, default=0),
    Column("revoked_at", TS, nullable=True),
    Column("created_by", String(ID), nullable=False),
    Column("created_at", TS, nullable=False),
)

# The nonce a rollout's "confirmed" evidence must carry (migration 0004).
rollout_nonces = Table(
    "rollout_nonces",
    metadata,
    Column("rollout_id", String(ID), ForeignKey("rollouts.id"), primary_key=True),
    Column("nonce", String(128), nullable=False),
)

# Production monitoring (tinymlops.fleet.monitoring): what a release measured at release time, per
# class and model (sequence); every scored check; the alarms raised.
baselines = Table(
    "baselines",
    metadata,
    Column("device_class", String(ID), primary_key=True),
    Column("sequence", BigInteger, primary_key=True),
    Column("release_id", String(ID), nullable=True),
    Column("body", Text, nullable=False),  # monitoring.Baseline as JSON
    Column("created_at", TS, nullable=False),
    Column("created_by", String(ID), nullable=False),
)

drift_scores = Table(
    "drift_scores",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", TS, nullable=False),
    Column("device_class", String(ID), nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("value", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("devices", Integer, nullable=False),
    Column("inferences", BigInteger, nullable=False),
    Index("ix_drift_scores_class_at", "device_class", "at"),
)

alarms = Table(
    "alarms",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("raised_at", TS, nullable=False),
    Column("device_class", String(ID), nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),  # open | acknowledged | resolved
    Column("body", Text, nullable=False),  # monitoring.DriftAlarm as JSON
    Column("emitted_at", TS, nullable=True),  # when its Prefect event was accepted
    Column("event_error", String(255), nullable=True),  # why it was not (retried on the next check)
    Index("ix_alarms_raised_at", "raised_at"),
    Index("ix_alarms_open", "device_class", "sequence", "status"),
)

# Where a rollout came from, as its creator named it: the MLflow run, the Prefect flow run (the
# dashboard's rollout page links back to them).
rollout_links = Table(
    "rollout_links",
    metadata,
    Column("rollout_id", String(ID), ForeignKey("rollouts.id"), primary_key=True),
    Column("name", String(ID), primary_key=True),
    Column("url", String(1024), nullable=False),
)
