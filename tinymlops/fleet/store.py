"""The fleet store: SQLAlchemy 2 over SQLite (WAL, the default) or PostgreSQL (by URL).

Every method is one transaction. The rollout tick (load state → engine.step → apply actions →
save state) is one transaction too, guarded by a version number, so a crash or a second server
replica can never apply a group twice or lose a step.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Connection, Engine, and_, bindparam, create_engine, delete, event, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from tinymlops.fleet import FleetError
from tinymlops.fleet import models as m
from tinymlops.fleet.engine import Action, Counts, Observations, RolloutState
from tinymlops.fleet.engine import select_devices as _select
from tinymlops.fleet.telemetry import Aggregate, TelemetryAggregate, pack

MIGRATIONS = Path(__file__).resolve().parent / "alembic"
CHUNK = 500  # rows per IN (...) list / executemany batch


class StoreConflict(FleetError):
    """The write would duplicate or contradict what is stored (HTTP 409)."""


class NotFound(FleetError):
    """No such device, release or rollout (HTTP 404)."""


def utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything stored is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def make_engine(url: str) -> Engine:
    """An engine tuned per backend. SQLite: WAL, busy timeout, and BEGIN IMMEDIATE for writes so
    concurrent writers queue on the lock instead of failing on a read→write upgrade."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=16)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL keeps it consistent
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url, pool_size=16, max_overflow=16, pool_pre_ping=True)


def migrate(engine: Engine) -> str:
    """Bring the schema to the newest revision (idempotent); returns the revision now current."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect().execution_options(write=True) as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        conn.commit()
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision() or ""


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # SQLite has one writer at a time anyway; queueing writers on a lock here avoids its busy
        # handler, which sleeps in coarse steps and turns contention into long stalls.
        self._write_lock = threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()

    @classmethod
    def open(cls, url: str, *, run_migrations: bool = True) -> Store:
        engine = make_engine(url)
        if run_migrations:
            migrate(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self._write_lock, self.engine.connect().execution_options(write=True) as conn, conn.begin():
            yield conn

    # -- devices ---------------------------------------------------------------------------------
    def enrol(self, device_id: str, device_class: str, credential_hash: str, now: datetime) -> None:
        try:
            with self.write() as c:
                c.execute(
                    insert(m.devices).values(
                        id=device_id,
                        device_class=device_class,
                        credential_hash=credential_hash,
                        enrolled_at=now,
                        current_sequence=0,
                        slot_state="unknown",
                    )
                )
        except IntegrityError:
            raise StoreConflict(f"device {device_id} is already enrolled") from None

    def poll_row(self, device_id: str):  # type: ignore[no-untyped-def]
        """The hot path: one primary-key lookup joined to the device's one assignment row."""
        with self.engine.connect() as c:
            return c.execute(_POLL_QUERY, {"device_id": device_id}).first()

    def set_device_state(self, device_id: str, sequence: int, slot_state: str) -> None:
        with self.write() as c:
            c.execute(
                update(m.devices)
                .where(m.devices.c.id == device_id)
                .values(current_sequence=sequence, slot_state=slot_state)
            )

    def device(self, device_id: str):  # type: ignore[no-untyped-def]
        with self.engine.connect() as c:
            return c.execute(select(m.devices).where(m.devices.c.id == device_id)).first()

    # -- releases --------------------------------------------------------------------------------
    def add_bundle(
        self,
        release_id: str,
        device_class: str,
        *,
        sequence: int,
        model_name: str,
        model_version: str,
        sha256: str,
        size: int,
        path: str,
        manifest: dict,
        actor: str,
        now: datetime,
    ) -> None:
        with self.write() as c:
            existing = c.execute(select(m.releases).where(m.releases.c.id == release_id)).first()
            if existing is None:
                clash = c.execute(select(m.releases.c.id).where(m.releases.c.sequence == sequence)).first()
                if clash:
                    raise StoreConflict(f"sequence {sequence} already belongs to release {clash.id}")
                c.execute(
                    insert(m.releases).values(
                        id=release_id,
                        sequence=sequence,
                        model_name=model_name,
                        model_version=model_version,
                        created_at=now,
                        created_by=actor,
                    )
                )
            elif existing.sequence != sequence:
                raise StoreConflict(
                    f"release {release_id} has sequence {existing.sequence}, this bundle says {sequence}"
                )
            key = and_(m.release_bundles.c.release_id == release_id, m.release_bundles.c.device_class == device_class)
            if c.execute(select(m.release_bundles.c.sha256).where(key)).first():
                raise StoreConflict(f"release {release_id} already has a bundle for class {device_class}")
            c.execute(
                insert(m.release_bundles).values(
                    release_id=release_id,
                    device_class=device_class,
                    sha256=sha256,
                    size=size,
                    path=path,
                    manifest=json.dumps(manifest, default=str),
                )
            )
            self._audit(c, actor, "upload_bundle", f"{release_id}/{device_class}", f"sequence {sequence}", now)

    def release(self, release_id: str):  # type: ignore[no-untyped-def]
        with self.read() as c:
            row = c.execute(select(m.releases).where(m.releases.c.id == release_id)).first()
            if row is None:
                raise NotFound(f"release {release_id} not found")
            bundles = c.execute(select(m.release_bundles).where(m.release_bundles.c.release_id == release_id)).all()
            return row, bundles

    def releases(self) -> list[dict]:
        with self.read() as c:
            rows = c.execute(select(m.releases).order_by(m.releases.c.sequence)).all()
            classes = c.execute(select(m.release_bundles.c.release_id, m.release_bundles.c.device_class)).all()
        by_release: dict[str, list[str]] = {}
        for r in classes:
            by_release.setdefault(r.release_id, []).append(r.device_class)
        return [
            {**r._asdict(), "created_at": utc(r.created_at), "classes": sorted(by_release.get(r.id, []))} for r in rows
        ]

    def bundle(self, release_id: str, device_class: str):  # type: ignore[no-untyped-def]
        with self.engine.connect() as c:
            return c.execute(
                select(m.release_bundles).where(
                    m.release_bundles.c.release_id == release_id, m.release_bundles.c.device_class == device_class
                )
            ).first()

    # -- reports and telemetry -------------------------------------------------------------------
    def record_report(
        self, device_id: str, key: str, release_id: str, stage: str, reason: str | None, now: datetime
    ) -> bool:
        """False when this idempotency key was seen before (the retry changes nothing)."""
        try:
            with self.write() as c:
                c.execute(
                    insert(m.reports).values(
                        device_id=device_id,
                        idempotency_key=key,
                        release_id=release_id,
                        stage=stage,
                        reason=reason,
                        received_at=now,
                    )
                )
                rel = c.execute(select(m.releases.c.sequence).where(m.releases.c.id == release_id)).first()
                if rel is None:
                    raise NotFound(f"release {release_id} not found")
                ours = select(m.rollouts.c.id).where(m.rollouts.c.release_id == release_id).scalar_subquery()
                c.execute(
                    update(m.rollout_members)
                    .where(m.rollout_members.c.device_id == device_id, m.rollout_members.c.rollout_id.in_(ours))
                    .values(outcome=stage, reason=reason, outcome_at=now)
                )
                if stage == "confirmed":
                    c.execute(
                        update(m.devices)
                        .where(m.devices.c.id == device_id)
                        .values(current_sequence=rel.sequence, slot_state="confirmed")
                    )
            return True
        except IntegrityError:
            return False

    def add_telemetry(self, device_id: str, t: TelemetryAggregate, now: datetime) -> None:
        self.add_telemetry_many([(device_id, t, now)])

    def add_telemetry_many(self, windows: Sequence[tuple[str, TelemetryAggregate, datetime]]) -> None:
        """(device id, window, received at) rows in one transaction: the server's group commit."""
        rows = [
            dict(
                device_id=device_id,
                sequence=t.sequence,
                window_start=t.window_start,
                window_end=t.window_end,
                received_at=now,
                body=t.model_dump_json(),
                packed=pack(t),
            )
            for device_id, t, now in windows
        ]
        with self.write() as c:
            for i in range(0, len(rows), CHUNK):
                c.execute(insert(m.telemetry), rows[i : i + CHUNK])

    # -- audit -----------------------------------------------------------------------------------
    @staticmethod
    def _audit(c: Connection, actor: str, action: str, target: str, detail: str, now: datetime) -> None:
        c.execute(insert(m.audit).values(at=now, actor=actor, action=action, target=target, detail=detail))

    def audit(self, actor: str, action: str, target: str, detail: str, now: datetime) -> None:
        with self.write() as c:
            self._audit(c, actor, action, target, detail, now)

    def audit_log(self, limit: int = 100, target: str | None = None) -> list[dict]:
        q = select(m.audit).order_by(m.audit.c.id.desc()).limit(limit)
        if target:
            q = q.where(m.audit.c.target == target)
        with self.read() as c:
            return [{**r._asdict(), "at": utc(r.at)} for r in c.execute(q).all()]

    # -- rollouts --------------------------------------------------------------------------------
    def create_rollout(self, state: RolloutState, actor: str, now: datetime) -> None:
        try:
            with self.write() as c:
                c.execute(
                    insert(m.rollouts).values(
                        id=state.rollout_id,
                        release_id=state.release,
                        rollback_release_id=state.rollback_release,
                        status=state.status,
                        state=state.model_dump_json(),
                        version=1,
                        created_at=now,
                        updated_at=now,
                    )
                )
                self._audit(c, actor, "create", state.rollout_id, f"release {state.release}", now)
        except IntegrityError:
            raise StoreConflict(f"rollout {state.rollout_id} already exists") from None

    def rollout_ids(self, statuses: Sequence[str] | None = None) -> list[str]:
        q = select(m.rollouts.c.id).order_by(m.rollouts.c.created_at)
        if statuses:
            q = q.where(m.rollouts.c.status.in_(statuses))
        with self.read() as c:
            return list(c.execute(q).scalars())

    def load_rollout(self, c: Connection, rollout_id: str) -> tuple[RolloutState, int]:
        row = c.execute(select(m.rollouts.c.state, m.rollouts.c.version).where(m.rollouts.c.id == rollout_id)).first()
        if row is None:
            raise NotFound(f"rollout {rollout_id} not found")
        return RolloutState.model_validate_json(row.state), row.version

    def save_rollout(self, c: Connection, state: RolloutState, version: int, now: datetime) -> None:
        done = c.execute(
            update(m.rollouts)
            .where(m.rollouts.c.id == state.rollout_id, m.rollouts.c.version == version)
            .values(status=state.status, state=state.model_dump_json(), version=version + 1, updated_at=now)
        )
        if done.rowcount != 1:
            raise StoreConflict(f"rollout {state.rollout_id} changed under us (version {version}); retry")

    def counts(self, c: Connection, rollout_id: str) -> Counts:
        rows = c.execute(
            select(m.rollout_members.c.outcome, func.count())
            .where(m.rollout_members.c.rollout_id == rollout_id)
            .group_by(m.rollout_members.c.outcome)
        ).all()
        by = {outcome: n for outcome, n in rows}
        return Counts(
            assigned=sum(by.values()),
            confirmed=by.get("confirmed", 0),
            failed=by.get("failed", 0),
            reverted=by.get("reverted", 0),
        )

    def observations(self, c: Connection, state: RolloutState) -> Observations:
        """Counts, and canary vs control telemetry over the same window (since the rollout began).
        Sums the windows' packed counts: a tick late in a big rollout reads ~100k of them."""
        since = next((t.at for t in state.history if t.event == "start"), None)
        counts = self.counts(c, state.rollout_id)
        if since is None:
            return Observations(counts=counts)
        members = select(m.rollout_members.c.device_id).where(m.rollout_members.c.rollout_id == state.rollout_id)
        classes = select(m.release_bundles.c.device_class).where(m.release_bundles.c.release_id == state.release)
        canary_rows = c.execute(
            select(m.telemetry.c.device_id, m.telemetry.c.packed).where(
                m.telemetry.c.device_id.in_(members),
                m.telemetry.c.sequence == state.release_sequence,
                m.telemetry.c.window_end >= since,
            )
        ).all()
        control_rows = c.execute(
            select(m.telemetry.c.packed)
            .join(m.devices, m.devices.c.id == m.telemetry.c.device_id)
            .where(
                m.devices.c.device_class.in_(classes),
                m.telemetry.c.device_id.not_in(members),
                m.telemetry.c.sequence < state.release_sequence,
                m.telemetry.c.window_end >= since,
            )
        ).all()
        control_devices = c.execute(
            select(func.count())
            .select_from(m.devices)
            .where(m.devices.c.device_class.in_(classes), m.devices.c.id.not_in(members))
        ).scalar_one()
        return Observations(
            counts=counts,
            canary=Aggregate.of_packed((r.packed for r in canary_rows), len({r.device_id for r in canary_rows})),
            control=Aggregate.of_packed((r.packed for r in control_rows), control_devices),
        )

    def apply_actions(self, c: Connection, state: RolloutState, actions: Iterable[Action], now: datetime) -> None:
        for action in actions:
            if action.kind == "assign_group":
                self._assign_group(c, state, action, now)
            elif action.kind == "rollback":
                self._assign_rollback(c, state, action, now)
            elif action.kind == "cancel_pending":
                self._cancel_pending(c, state)
            # "promote" changes nothing here: the rollout's status says succeeded; moving the
            # MLflow alias is the flow's job.

    def _bundles(self, c: Connection, release_id: str) -> dict[str, tuple[str, int]]:
        rows = c.execute(
            select(m.release_bundles.c.device_class, m.release_bundles.c.sha256, m.release_bundles.c.size).where(
                m.release_bundles.c.release_id == release_id
            )
        ).all()
        return {r.device_class: (r.sha256, r.size) for r in rows}

    def _assign_group(self, c: Connection, state: RolloutState, action: Action, now: datetime) -> None:
        bundles = self._bundles(c, state.release)
        fleet = c.execute(
            select(m.devices.c.id, m.devices.c.device_class, m.devices.c.current_sequence).where(
                m.devices.c.device_class.in_(list(bundles))
            )
        ).all()
        already = set(
            c.execute(
                select(m.rollout_members.c.device_id).where(m.rollout_members.c.rollout_id == state.rollout_id)
            ).scalars()
        )
        # Devices already past this sequence would refuse it (anti-rollback); members stay in the
        # ranking whatever they run now, so the shares stay shares of the same population.
        eligible = [
            (r.id, r.device_class) for r in fleet if r.id in already or r.current_sequence < state.release_sequence
        ]
        chosen = _select(state.rollout_id, eligible, action.percent, already)
        members = [
            dict(
                rollout_id=state.rollout_id,
                device_id=d,
                device_class=k,
                group_index=action.group_index,
                assigned_at=now,
            )
            for d, k in chosen
        ]
        for i in range(0, len(members), CHUNK):
            c.execute(insert(m.rollout_members), members[i : i + CHUNK])
        self._set_assignments(c, chosen, state.release, state.release_sequence, bundles, state.rollout_id, now)

    def _assign_rollback(self, c: Connection, state: RolloutState, action: Action, now: datetime) -> None:
        assert state.rollback_release is not None and state.rollback_sequence is not None
        bundles = self._bundles(c, state.rollback_release)
        got_it = c.execute(
            select(m.rollout_members.c.device_id, m.rollout_members.c.device_class).where(
                m.rollout_members.c.rollout_id == state.rollout_id
            )
        ).all()
        targets = [(r.device_id, r.device_class) for r in got_it if r.device_class in bundles]
        self._set_assignments(
            c, targets, state.rollback_release, state.rollback_sequence, bundles, state.rollout_id, now
        )

    @staticmethod
    def _cancel_pending(c: Connection, state: RolloutState) -> None:
        """An aborted rollout hands out nothing more: devices that have not reported any progress
        on the release lose its assignment (their next poll answers 204); the rest finish."""
        acted = select(m.reports.c.device_id).where(m.reports.c.release_id == state.release)
        c.execute(
            delete(m.assignments).where(
                m.assignments.c.rollout_id == state.rollout_id,
                m.assignments.c.release_id == state.release,
                m.assignments.c.device_id.not_in(acted),
            )
        )

    @staticmethod
    def _set_assignments(
        c: Connection,
        targets: list[tuple[str, str]],
        release_id: str,
        sequence: int,
        bundles: dict[str, tuple[str, int]],
        rollout_id: str,
        now: datetime,
    ) -> None:
        for i in range(0, len(targets), CHUNK):
            part = targets[i : i + CHUNK]
            c.execute(delete(m.assignments).where(m.assignments.c.device_id.in_([d for d, _ in part])))
            c.execute(
                insert(m.assignments),
                [
                    dict(
                        device_id=d,
                        release_id=release_id,
                        sequence=sequence,
                        sha256=bundles[k][0],
                        size=bundles[k][1],
                        rollout_id=rollout_id,
                        assigned_at=now,
                    )
                    for d, k in part
                ],
            )

    def members(self, rollout_id: str) -> list[dict]:
        with self.read() as c:
            rows = c.execute(select(m.rollout_members).where(m.rollout_members.c.rollout_id == rollout_id)).all()
        return [r._asdict() for r in rows]


_POLL_QUERY = (
    select(
        m.devices.c.credential_hash,
        m.devices.c.device_class,
        m.devices.c.current_sequence,
        m.devices.c.slot_state,
        m.assignments.c.release_id,
        m.assignments.c.sequence,
        m.assignments.c.sha256,
        m.assignments.c.size,
    )
    .select_from(m.devices.outerjoin(m.assignments, m.assignments.c.device_id == m.devices.c.id))
    .where(m.devices.c.id == bindparam("device_id"))
)

__all__ = ["Store", "StoreConflict", "NotFound", "make_engine", "migrate", "utc"]
