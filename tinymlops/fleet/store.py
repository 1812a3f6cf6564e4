"""The fleet store: SQLAlchemy 2 over SQLite (WAL, the default) or PostgreSQL (by URL).

Persistence only: it reads and writes rows and raises domain errors (tinymlops.errors), never
decides what a rollout does and knows nothing of HTTP. Methods that take no connection are one
transaction each; those that take one (`c`) join the caller's, so the service's rollout tick (load
state → engine.step → carry out the actions → save state) is one transaction, guarded by a version
number: a crash or a second server replica can never apply a group twice or lose a step.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Connection, Engine, and_, bindparam, create_engine, delete, event, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from tinymlops.errors import Conflict, NotFound
from tinymlops.fleet import models as m
from tinymlops.fleet.engine import Counts, RolloutState
from tinymlops.fleet.point_read import PointReader
from tinymlops.fleet.telemetry import pack

MIGRATIONS = Path(__file__).resolve().parent / "alembic"
CHUNK = 500  # rows per IN (...) list / executemany batch


StoreConflict = Conflict  # the write would duplicate or contradict what is stored


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
        def _pragmas(dbapi_conn, _record) -> None:
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
        self._poll_read = PointReader(engine, _POLL_QUERY)

    @classmethod
    def open(cls, url: str, *, run_migrations: bool = True) -> Store:
        engine = make_engine(url)
        if run_migrations:
            migrate(engine)
        return cls(engine)

    def close(self) -> None:
        self._poll_read.close()
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

    def poll_row(self, device_id: str):
        """The hot path: one primary-key lookup joined to the device's one assignment row."""
        return self._poll_read(device_id=device_id)

    def set_device_state(self, device_id: str, sequence: int, slot_state: str) -> None:
        self.set_device_states([(device_id, sequence, slot_state)])

    def set_device_states(self, states: Sequence[tuple[str, int, str]]) -> None:
        """(device, running sequence, slot state) of many devices, one transaction."""
        with self.write() as c:
            c.execute(
                _SET_STATE,
                [{"device": d, "current_sequence": seq, "slot_state": slot} for d, seq, slot in states],
            )

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
            self.audit(c, actor, "upload_bundle", f"{release_id}/{device_class}", f"sequence {sequence}", now)

    def release(self, release_id: str):
        with self.read() as c:
            row = c.execute(select(m.releases).where(m.releases.c.id == release_id)).first()
            if row is None:
                raise NotFound(f"release {release_id} not found")
            bundles = c.execute(select(m.release_bundles).where(m.release_bundles.c.release_id == release_id)).all()
            return row, bundles

    def releases(
        self, *, model_version: str | None = None, limit: int = 1000, offset: int = 0
    ) -> tuple[int, list[dict]]:
        """(how many match, one page of them with the classes each has bundles for), by sequence."""
        where = [m.releases.c.model_version == model_version] if model_version else []
        with self.read() as c:
            total = c.execute(select(func.count()).select_from(m.releases).where(*where)).scalar_one()
            rows = c.execute(
                select(m.releases).where(*where).order_by(m.releases.c.sequence).limit(limit).offset(offset)
            ).all()
            ids = [r.id for r in rows]
            classes = c.execute(
                select(m.release_bundles.c.release_id, m.release_bundles.c.device_class).where(
                    m.release_bundles.c.release_id.in_(ids)
                )
            ).all()
        by_release: dict[str, list[str]] = {}
        for r in classes:
            by_release.setdefault(r.release_id, []).append(r.device_class)
        return total, [
            {**r._asdict(), "created_at": utc(r.created_at), "classes": sorted(by_release.get(r.id, []))} for r in rows
        ]

    def bundle(self, release_id: str, device_class: str):
        with self.engine.connect() as c:
            return c.execute(
                select(m.release_bundles).where(
                    m.release_bundles.c.release_id == release_id, m.release_bundles.c.device_class == device_class
                )
            ).first()

    # -- reports and telemetry -------------------------------------------------------------------
    def record_reports_of_many(
        self, batch: Sequence[tuple[str, Sequence[tuple[str, str, str, str | None]]]], now: datetime
    ) -> list[list[bool]]:
        """Devices' install logs, (idempotency key, release, stage, reason) each, in order, in one
        transaction (the server's group commit); → per log, per report, False when its key was seen
        before (that report changes nothing). The member's outcome becomes the last new stage of each
        release; a confirmed one moves the device on."""
        for attempt in range(2):
            try:
                with self.write() as c:
                    return [_record_reports(c, device_id, items, now) for device_id, items in batch]
            except IntegrityError:  # another replica stored one of these keys meanwhile: look again
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def add_telemetry_many(self, windows: Sequence[tuple]) -> None:
        """(device id, window, received at[, attested]) rows in one transaction: the server's group
        commit. `attested`: the window came signed by the device's enrolled key (default False)."""
        rows = [
            dict(
                device_id=w[0],
                sequence=w[1].sequence,
                window_start=w[1].window_start,
                window_end=w[1].window_end,
                received_at=w[2],
                body=w[1].model_dump_json(),
                packed=pack(w[1]),
                attested=bool(w[3]) if len(w) > 3 else False,
            )
            for w in windows
        ]
        with self.write() as c:
            for i in range(0, len(rows), CHUNK):
                c.execute(insert(m.telemetry), rows[i : i + CHUNK])

    # -- audit -----------------------------------------------------------------------------------
    @staticmethod
    def audit(c: Connection, actor: str, action: str, target: str, detail: str, now: datetime) -> None:
        """One audit entry, inside the caller's transaction."""
        c.execute(insert(m.audit).values(at=now, actor=actor, action=action, target=target, detail=detail))

    def audit_log(self, limit: int = 100, target: str | None = None) -> list[dict]:
        q = select(m.audit).order_by(m.audit.c.id.desc()).limit(limit)
        if target:
            q = q.where(m.audit.c.target == target)
        with self.read() as c:
            return [{**r._asdict(), "at": utc(r.at)} for r in c.execute(q).all()]

    # -- rollouts --------------------------------------------------------------------------------
    def create_rollout(self, c: Connection, state: RolloutState, actor: str, now: datetime) -> None:
        if c.execute(select(m.rollouts.c.id).where(m.rollouts.c.id == state.rollout_id)).first():
            raise StoreConflict(f"rollout {state.rollout_id} already exists")
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
        self.audit(c, actor, "create", state.rollout_id, f"release {state.release}", now)

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

    def telemetry_windows(
        self, c: Connection, state: RolloutState, since: datetime, until: datetime, attested_only: bool = False
    ) -> tuple[list[tuple[str, str, bytes, datetime, datetime]], list[tuple[str, str, bytes, datetime, datetime]], int]:
        """The windows a tick judges → (canary, control, control population).

        Canary: the rollout's members, on its release. Control: devices of the release's classes
        outside the rollout, on an older model. Only windows received since the rollout started
        that end inside [since, until] count: nothing sent before it, nothing dated in the future.
        Rows are (device id, class, packed counts, window start, window end)."""
        members = select(m.rollout_members.c.device_id).where(m.rollout_members.c.rollout_id == state.rollout_id)
        classes = select(m.release_bundles.c.device_class).where(m.release_bundles.c.release_id == state.release)
        t = m.telemetry.c
        cols = (t.device_id, m.devices.c.device_class, t.packed, t.window_start, t.window_end)
        inside: tuple = (t.received_at >= since, t.window_end >= since, t.window_end <= until)
        if attested_only:  # attestation on: only windows signed by the sender's enrolled key count
            inside = (*inside, t.attested.is_(True))
        joined = m.telemetry.join(m.devices, m.devices.c.id == t.device_id)
        canary = c.execute(
            select(*cols)
            .select_from(joined)
            .where(t.device_id.in_(members), t.sequence == state.release_sequence, *inside)
        ).all()
        control = c.execute(
            select(*cols)
            .select_from(joined)
            .where(
                m.devices.c.device_class.in_(classes),
                t.device_id.not_in(members),
                t.sequence < state.release_sequence,
                *inside,
            )
        ).all()
        population = c.execute(
            select(func.count())
            .select_from(m.devices)
            .where(m.devices.c.device_class.in_(classes), m.devices.c.id.not_in(members))
        ).scalar_one()
        return [tuple(r) for r in canary], [tuple(r) for r in control], population

    # -- what carrying out a rollout's actions needs (tinymlops.fleet.service decides) -------------
    @staticmethod
    def bundles_of(c: Connection, release_id: str) -> dict[str, tuple[str, int]]:
        """device class → (sha256, size) of a release's bundles."""
        rows = c.execute(
            select(m.release_bundles.c.device_class, m.release_bundles.c.sha256, m.release_bundles.c.size).where(
                m.release_bundles.c.release_id == release_id
            )
        ).all()
        return {r.device_class: (r.sha256, r.size) for r in rows}

    @staticmethod
    def fleet_of(c: Connection, classes: Sequence[str]) -> list[tuple[str, str, int]]:
        """(device id, class, running sequence) of every device of `classes`."""
        rows = c.execute(
            select(m.devices.c.id, m.devices.c.device_class, m.devices.c.current_sequence).where(
                m.devices.c.device_class.in_(list(classes))
            )
        ).all()
        return [(r.id, r.device_class, r.current_sequence) for r in rows]

    @staticmethod
    def members_of(c: Connection, rollout_id: str) -> list[tuple[str, str]]:
        """(device id, class) of every device a rollout took."""
        rows = c.execute(
            select(m.rollout_members.c.device_id, m.rollout_members.c.device_class).where(
                m.rollout_members.c.rollout_id == rollout_id
            )
        ).all()
        return [(r.device_id, r.device_class) for r in rows]

    @staticmethod
    def add_members(
        c: Connection, rollout_id: str, chosen: Sequence[tuple[str, str]], group_index: int, now: datetime
    ) -> None:
        members = [
            dict(rollout_id=rollout_id, device_id=d, device_class=k, group_index=group_index, assigned_at=now)
            for d, k in chosen
        ]
        for i in range(0, len(members), CHUNK):
            c.execute(insert(m.rollout_members), members[i : i + CHUNK])

    @staticmethod
    def cancel_pending(c: Connection, rollout_id: str, release_id: str) -> None:
        """Withdraw a rollout's assignments of `release_id` that no device has reported on yet."""
        acted = select(m.reports.c.device_id).where(m.reports.c.release_id == release_id)
        c.execute(
            delete(m.assignments).where(
                m.assignments.c.rollout_id == rollout_id,
                m.assignments.c.release_id == release_id,
                m.assignments.c.device_id.not_in(acted),
            )
        )

    @staticmethod
    def set_assignments(
        c: Connection,
        targets: Sequence[tuple[str, str]],
        release_id: str,
        sequence: int,
        bundles: dict[str, tuple[str, int]],
        rollout_id: str,
        now: datetime,
    ) -> None:
        """Each (device, class) of `targets` is to install `release_id` (its class's bundle)."""
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

    # -- lists (filtered, paginated) ---------------------------------------------------------------
    def list_rollouts(
        self, *, status: str | None, release_id: str | None, limit: int, offset: int
    ) -> tuple[int, list[dict]]:
        where = []
        if status:
            where.append(m.rollouts.c.status == status)
        if release_id:
            where.append(m.rollouts.c.release_id == release_id)
        cols = (m.rollouts.c.id, m.rollouts.c.release_id, m.rollouts.c.rollback_release_id, m.rollouts.c.status)
        q = select(*cols, m.rollouts.c.created_at, m.rollouts.c.updated_at).where(*where)
        with self.read() as c:
            total = c.execute(select(func.count()).select_from(m.rollouts).where(*where)).scalar_one()
            rows = c.execute(q.order_by(m.rollouts.c.created_at, m.rollouts.c.id).limit(limit).offset(offset)).all()
        return total, [{**r._asdict(), "created_at": utc(r.created_at), "updated_at": utc(r.updated_at)} for r in rows]

    def list_devices(
        self, *, device_class: str | None, sequence: int | None, limit: int, offset: int
    ) -> tuple[int, list[dict]]:
        where = []
        if device_class:
            where.append(m.devices.c.device_class == device_class)
        if sequence is not None:
            where.append(m.devices.c.current_sequence == sequence)
        cols = (m.devices.c.id, m.devices.c.device_class, m.devices.c.enrolled_at, m.devices.c.current_sequence)
        with self.read() as c:
            total = c.execute(select(func.count()).select_from(m.devices).where(*where)).scalar_one()
            rows = c.execute(
                select(*cols, m.devices.c.slot_state).where(*where).order_by(m.devices.c.id).limit(limit).offset(offset)
            ).all()
        return total, [{**r._asdict(), "enrolled_at": utc(r.enrolled_at)} for r in rows]

    def open_rollouts(self, c: Connection) -> list[tuple[str, str, str]]:
        """(rollout id, release id, status) of every rollout not final yet."""
        rows = c.execute(
            select(m.rollouts.c.id, m.rollouts.c.release_id, m.rollouts.c.status).where(
                m.rollouts.c.status.in_(("created", "running", "paused"))
            )
        ).all()
        return [(r.id, r.release_id, r.status) for r in rows]

    # -- production monitoring ---------------------------------------------------------------------
    def put_baseline(self, body: dict, actor: str, now: datetime) -> None:
        """A release's baseline for one class and model (sequence); a second upload replaces it."""
        key = and_(m.baselines.c.device_class == body["device_class"], m.baselines.c.sequence == body["sequence"])
        with self.write() as c:
            c.execute(delete(m.baselines).where(key))
            c.execute(
                insert(m.baselines).values(
                    device_class=body["device_class"],
                    sequence=body["sequence"],
                    release_id=body.get("release_id"),
                    body=json.dumps(body, default=str),
                    created_at=now,
                    created_by=actor,
                )
            )
            target = f"{body['device_class']}/{body['sequence']}"
            self.audit(c, actor, "upload_baseline", target, f"{body.get('samples')} samples", now)

    def baselines(self) -> list[dict]:
        with self.read() as c:
            rows = c.execute(select(m.baselines.c.body).order_by(m.baselines.c.device_class, m.baselines.c.sequence))
            return [json.loads(r.body) for r in rows]

    def running(self) -> dict[tuple[str, int], int]:
        """(class, running sequence) → how many devices run it (confirmed)."""
        with self.read() as c:
            rows = c.execute(
                select(m.devices.c.device_class, m.devices.c.current_sequence, func.count()).group_by(
                    m.devices.c.device_class, m.devices.c.current_sequence
                )
            ).all()
        return {(r[0], int(r[1])): int(r[2]) for r in rows}

    def production_windows(
        self, device_class: str, sequence: int, since: datetime, until: datetime
    ) -> list[tuple[str, str, bytes, datetime, datetime]]:
        """Production telemetry of one class and model: windows on `sequence` from devices of
        `device_class` that run it, received since `since` and ending inside [since, until]. A device
        runs it when its state says so and, if the server holds that model's release, it reported a
        confirmed install of it (a claim alone is not enough; a model the server never shipped is the
        factory image). Rows as RolloutService._windows reads them."""
        t = m.telemetry.c
        joined = m.telemetry.join(m.devices, m.devices.c.id == t.device_id)
        where = [
            m.devices.c.device_class == device_class,
            m.devices.c.current_sequence == sequence,
            t.sequence == sequence,
            t.received_at >= since,
            t.window_end >= since,
            t.window_end <= until,
        ]
        q = select(t.device_id, m.devices.c.device_class, t.packed, t.window_start, t.window_end).select_from(joined)
        with self.read() as c:
            release = c.execute(select(m.releases.c.id).where(m.releases.c.sequence == sequence)).scalar()
            if release is not None:
                installed = select(m.reports.c.device_id).where(
                    m.reports.c.release_id == release, m.reports.c.stage == "confirmed"
                )
                where.append(t.device_id.in_(installed))
            return [tuple(r) for r in c.execute(q.where(*where)).all()]

    def add_scores(self, rows: Sequence[dict]) -> None:
        if rows:
            with self.write() as c:
                c.execute(insert(m.drift_scores), list(rows))

    def drift_history(self, device_class: str, since: datetime) -> list[dict]:
        q = (
            select(m.drift_scores)
            .where(m.drift_scores.c.device_class == device_class, m.drift_scores.c.at >= since)
            .order_by(m.drift_scores.c.at)
        )
        with self.read() as c:
            return [{**r._asdict(), "at": utc(r.at)} for r in c.execute(q).all()]

    def open_alarm_kinds(self, device_class: str, sequence: int) -> set[str]:
        a = m.alarms.c
        with self.read() as c:
            rows = c.execute(
                select(a.kind).where(a.device_class == device_class, a.sequence == sequence, a.status != "resolved")
            )
            return set(rows.scalars())

    def add_alarms(self, alarms: Sequence[dict], now: datetime) -> list[dict]:
        """New alarms (DriftAlarm as JSON dicts), audited as raised by the monitor; → those stored.
        One alarm per class, model and kind stays open: a concurrent check (another replica, or the
        API's check beside the background one) that found the same drift adds nothing."""
        a = m.alarms.c
        added = []
        with self.write() as c:
            for alarm in alarms:
                same = (
                    a.device_class == alarm["device_class"],
                    a.sequence == alarm["sequence"],
                    a.kind == alarm["kind"],
                )
                if c.execute(select(a.id).where(*same, a.status != "resolved")).first():
                    continue
                if c.execute(select(a.id).where(a.id == alarm["id"])).first():
                    continue
                added.append(alarm)
                c.execute(
                    insert(m.alarms).values(
                        id=alarm["id"],
                        raised_at=now,
                        device_class=alarm["device_class"],
                        sequence=alarm["sequence"],
                        kind=alarm["kind"],
                        status=alarm["status"],
                        body=json.dumps(alarm, default=str),
                    )
                )
                detail = f"{alarm['kind']} {alarm['value']:.3g} > {alarm['threshold']:.3g}"
                self.audit(c, "monitor", "raise_alarm", alarm["id"], detail, now)
        return added

    def alarms(self, *, status: str | None = None, device_class: str | None = None, limit: int = 100) -> list[dict]:
        a = m.alarms.c
        q = select(m.alarms).order_by(a.raised_at.desc(), a.id).limit(limit)
        if status:
            q = q.where(a.status == status)
        if device_class:
            q = q.where(a.device_class == device_class)
        with self.read() as c:
            rows = c.execute(q).all()
        return [
            {
                **json.loads(r.body),
                "status": r.status,
                "emitted_at": utc(r.emitted_at),
                "event_error": r.event_error,
            }
            for r in rows
        ]

    def alarm(self, alarm_id: str) -> dict:
        with self.read() as c:
            row = c.execute(select(m.alarms).where(m.alarms.c.id == alarm_id)).first()
        if row is None:
            raise NotFound(f"alarm {alarm_id} not found")
        return {**json.loads(row.body), "status": row.status, "emitted_at": utc(row.emitted_at)}

    def unemitted_alarms(self) -> list[dict]:
        a = m.alarms.c
        with self.read() as c:
            rows = c.execute(select(a.body).where(a.emitted_at.is_(None), a.status == "open").order_by(a.raised_at))
            return [json.loads(r.body) for r in rows]

    def mark_emitted(self, alarm_id: str, now: datetime | None, error: str | None) -> None:
        with self.write() as c:
            c.execute(
                update(m.alarms)
                .where(m.alarms.c.id == alarm_id)
                .values(emitted_at=now, event_error=error[:255] if error else None)
            )

    def set_alarm_status(self, alarm_id: str, status: str, actor: str, now: datetime) -> None:
        with self.write() as c:
            done = c.execute(update(m.alarms).where(m.alarms.c.id == alarm_id).values(status=status))
            if done.rowcount != 1:
                raise NotFound(f"alarm {alarm_id} not found")
            self.audit(c, actor, f"alarm_{status}", alarm_id, "", now)

    def put_links(self, rollout_id: str, links: dict[str, str]) -> None:
        with self.write() as c:
            c.execute(delete(m.rollout_links).where(m.rollout_links.c.rollout_id == rollout_id))
            if links:
                rows = [dict(rollout_id=rollout_id, name=k, url=v) for k, v in links.items()]
                c.execute(insert(m.rollout_links), rows)

    def links(self, rollout_id: str) -> dict[str, str]:
        with self.read() as c:
            rows = c.execute(
                select(m.rollout_links.c.name, m.rollout_links.c.url).where(m.rollout_links.c.rollout_id == rollout_id)
            ).all()
        return {r.name: r.url for r in rows}

    def audit_entry(self, actor: str, action: str, target: str, detail: str, now: datetime) -> None:
        with self.write() as c:
            self.audit(c, actor, action, target, detail, now)

    # -- the dashboard's views ---------------------------------------------------------------------
    def fleet_view(
        self,
        *,
        device_class: str | None,
        slot_state: str | None,
        sequence: int | None,
        limit: int,
        offset: int,
    ) -> tuple[int, list[dict]]:
        """Devices with the model they run (release of their sequence) and when they were last heard
        of (their newest telemetry window or install report)."""
        d = m.devices.c
        where = []
        if device_class:
            where.append(d.device_class == device_class)
        if slot_state:
            where.append(d.slot_state == slot_state)
        if sequence is not None:
            where.append(d.current_sequence == sequence)
        seen_t = select(func.max(m.telemetry.c.received_at)).where(m.telemetry.c.device_id == d.id).scalar_subquery()
        seen_r = select(func.max(m.reports.c.received_at)).where(m.reports.c.device_id == d.id).scalar_subquery()
        joined = m.devices.outerjoin(m.releases, m.releases.c.sequence == d.current_sequence)
        q = (
            select(
                d.id,
                d.device_class,
                d.slot_state,
                d.current_sequence,
                d.enrolled_at,
                m.releases.c.id.label("release_id"),
                m.releases.c.model_name,
                m.releases.c.model_version,
                seen_t.label("seen_t"),
                seen_r.label("seen_r"),
            )
            .select_from(joined)
            .where(*where)
            .order_by(d.id)
            .limit(limit)
            .offset(offset)
        )
        with self.read() as c:
            total = c.execute(select(func.count()).select_from(m.devices).where(*where)).scalar_one()
            rows = c.execute(q).all()
        out = []
        for r in rows:
            seen = [utc(x) for x in (r.seen_t, r.seen_r) if x is not None]
            out.append(
                {
                    "id": r.id,
                    "device_class": r.device_class,
                    "slot_state": r.slot_state,
                    "current_sequence": r.current_sequence,
                    "enrolled_at": utc(r.enrolled_at),
                    "release_id": r.release_id,
                    "model": f"{r.model_name} v{r.model_version}" if r.model_name else None,
                    "last_seen": max(seen) if seen else None,  # type: ignore[type-var]  # all aware datetimes
                }
            )
        return total, out

    def fleet_summary(self) -> list[tuple[str, str, int, int]]:
        """(class, slot state, running sequence, devices)."""
        d = m.devices.c
        with self.read() as c:
            rows = c.execute(
                select(d.device_class, d.slot_state, d.current_sequence, func.count())
                .group_by(d.device_class, d.slot_state, d.current_sequence)
                .order_by(d.device_class, d.current_sequence)
            ).all()
        return [(r[0], r[1], int(r[2]), int(r[3])) for r in rows]

    def group_members(self, rollout_id: str) -> list[dict]:
        """Per group: members and their outcomes, with the time each outcome arrived (progress over time)."""
        rm = m.rollout_members.c
        with self.read() as c:
            rows = c.execute(
                select(rm.group_index, rm.device_class, rm.assigned_at, rm.outcome, rm.outcome_at).where(
                    rm.rollout_id == rollout_id
                )
            ).all()
        return [
            {
                "group_index": r.group_index,
                "device_class": r.device_class,
                "assigned_at": utc(r.assigned_at),
                "outcome": r.outcome,
                "outcome_at": utc(r.outcome_at),
            }
            for r in rows
        ]

    # -- server state ------------------------------------------------------------------------------
    def state_version(self, key: str) -> int | None:
        with self.read() as c:
            return c.execute(select(m.server_state.c.version).where(m.server_state.c.key == key)).scalar()

    def raise_state_version(self, key: str, version: int, now: datetime) -> int:
        """Keep the highest `version` seen under `key`; → the highest now stored."""
        with self.write() as c:
            stored = c.execute(select(m.server_state.c.version).where(m.server_state.c.key == key)).scalar()
            if stored is None:
                c.execute(insert(m.server_state).values(key=key, version=version, updated_at=now))
                return version
            if version > stored:
                c.execute(
                    update(m.server_state).where(m.server_state.c.key == key).values(version=version, updated_at=now)
                )
                return version
            return stored


class IdentityStore:
    """Device keys, provisioning tokens, rollout nonces and usage counters (migration 0004), over
    the same engine and write lock as the Store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- provisioning tokens ----------------------------------------------------------------------
    def add_token(self, row: dict) -> None:
        try:
            with self.store.write() as c:
                c.execute(insert(m.provisioning_tokens).values(**row, uses=0))
        except IntegrityError:
            raise StoreConflict(f"provisioning token batch {row['batch']} exists") from None

    def token_by_hash(self, token_hash: str):
        with self.store.read() as c:
            return c.execute(
                select(m.provisioning_tokens).where(m.provisioning_tokens.c.token_hash == token_hash)
            ).first()

    def tokens(self) -> list[dict]:
        t = m.provisioning_tokens.c
        with self.store.read() as c:
            rows = c.execute(select(m.provisioning_tokens).order_by(t.created_at)).mappings().all()
        return [{k: v for k, v in r.items() if k != "token_hash"} for r in rows]

    def revoke_token(self, batch: str, now: datetime) -> None:
        t = m.provisioning_tokens.c
        with self.store.write() as c:
            done = c.execute(update(m.provisioning_tokens).where(t.batch == batch).values(revoked_at=now))
            if not done.rowcount:
                raise NotFound(f"provisioning token batch {batch} not found")

    # -- enrolment --------------------------------------------------------------------------------
    def enrol(self, device: dict, batch: str | None, now: datetime) -> None:
        """Insert the device and count one use of its token batch, in one transaction; the token's
        limits are checked again inside it, so two enrolments cannot both take the last use."""
        t = m.provisioning_tokens.c
        try:
            with self.store.write() as c:
                if batch is not None:
                    tok = c.execute(select(m.provisioning_tokens).where(t.batch == batch)).first()
                    if (
                        tok is None
                        or tok.revoked_at is not None
                        or (utc(tok.expires_at) or now) <= now
                        or tok.uses >= tok.max_uses
                    ):
                        raise StoreConflict("provisioning token no longer valid")
                    c.execute(update(m.provisioning_tokens).where(t.batch == batch).values(uses=t.uses + 1))
                c.execute(insert(m.devices).values(**device, enrolled_at=now, current_sequence=0, slot_state="unknown"))
        except IntegrityError:
            raise StoreConflict(f"device {device['id']} (or its public key) is already enrolled") from None

    def identity(self, device_id: str):
        d = m.devices.c
        with self.store.read() as c:
            return c.execute(
                select(d.id, d.device_class, d.public_key, d.ueid, d.customer, d.challenge, d.inference_count,
                       d.state_record, d.boot_count, d.counter_alarm).where(d.id == device_id)
            ).first()  # fmt: skip

    # -- nonces -----------------------------------------------------------------------------------
    @staticmethod
    def set_rollout_nonce(c: Connection, rollout_id: str, nonce: str) -> None:
        c.execute(insert(m.rollout_nonces).values(rollout_id=rollout_id, nonce=nonce))

    def rollout_nonce(self, rollout_id: str) -> str | None:
        with self.store.read() as c:
            return c.execute(
                select(m.rollout_nonces.c.nonce).where(m.rollout_nonces.c.rollout_id == rollout_id)
            ).scalar()

    def assignment_rollout(self, device_id: str) -> str | None:
        with self.store.read() as c:
            return c.execute(select(m.assignments.c.rollout_id).where(m.assignments.c.device_id == device_id)).scalar()

    def set_challenge(self, device_id: str, nonce: str | None) -> None:
        with self.store.write() as c:
            c.execute(update(m.devices).where(m.devices.c.id == device_id).values(challenge=nonce))

    def take_challenge(self, device_id: str, nonce: str) -> bool:
        """Consume the device's one-time challenge if it is `nonce`."""
        d = m.devices.c
        with self.store.write() as c:
            done = c.execute(update(m.devices).where(d.id == device_id, d.challenge == nonce).values(challenge=None))
            return bool(done.rowcount)

    # -- usage ------------------------------------------------------------------------------------
    def note_counter(self, device_id: str, count: int, record: int, boots: int, now: datetime) -> str | None:
        """Record the counters of a verified evidence report. → an alarm when any went backwards
        against the highest seen (an old flash image restored, or the key used by two devices)."""
        d = m.devices.c
        with self.store.write() as c:
            row = c.execute(select(d.inference_count, d.state_record, d.boot_count).where(d.id == device_id)).first()
            if row is None:
                raise NotFound(f"device {device_id} not found")
            seen = (row.inference_count or 0, row.state_record or 0, row.boot_count or 0)
            now_ = (count, record, boots)
            names = ("inference counter", "state record", "boot count")
            back = [f"{n} {v} (highest seen {s})" for n, v, s in zip(names, now_, seen, strict=True) if v < s]
            if back:
                alarm = "counter_rollback: " + ", ".join(back)
                c.execute(update(m.devices).where(d.id == device_id).values(counter_alarm=alarm[:255]))
                Store.audit(c, "attestation", "counter_rollback", device_id, alarm, now)
                return alarm
            c.execute(
                update(m.devices)
                .where(d.id == device_id)
                .values(inference_count=count, state_record=record, boot_count=boots, evidence_at=now)
            )
            return None

    def usage(self, customer: str | None = None) -> list[dict]:
        d = m.devices.c
        q = select(d.id, d.device_class, d.customer, d.inference_count, d.boot_count, d.evidence_at, d.counter_alarm)
        if customer is not None:
            q = q.where(d.customer == customer)
        with self.store.read() as c:
            return [dict(r) for r in c.execute(q.order_by(d.id)).mappings().all()]


def _record_reports(
    c: Connection, device_id: str, items: Sequence[tuple[str, str, str, str | None]], now: datetime
) -> list[bool]:
    r = m.reports.c
    seen = set(
        c.execute(
            select(r.idempotency_key).where(r.device_id == device_id, r.idempotency_key.in_([k for k, *_ in items]))
        ).scalars()
    )
    new: list[bool] = []
    last: dict[str, tuple[str, str | None]] = {}
    rows = []
    for key, release_id, stage, reason in items:
        fresh = key not in seen
        new.append(fresh)
        if fresh:
            seen.add(key)
            last[release_id] = (stage, reason)
            rows.append(
                dict(
                    device_id=device_id,
                    idempotency_key=key,
                    release_id=release_id,
                    stage=stage,
                    reason=reason,
                    received_at=now,
                )
            )
    if rows:
        c.execute(insert(m.reports), rows)
    confirmed = {rid for (_, rid, stage, _), fresh in zip(items, new, strict=True) if fresh and stage == "confirmed"}
    for release_id, (stage, reason) in last.items():
        rel = c.execute(select(m.releases.c.sequence).where(m.releases.c.id == release_id)).first()
        if rel is None:
            raise NotFound(f"release {release_id} not found")
        ours = select(m.rollouts.c.id).where(m.rollouts.c.release_id == release_id).scalar_subquery()
        c.execute(
            update(m.rollout_members)
            .where(m.rollout_members.c.device_id == device_id, m.rollout_members.c.rollout_id.in_(ours))
            .values(outcome=stage, reason=reason, outcome_at=now)
        )
        if release_id in confirmed:
            c.execute(
                update(m.devices)
                .where(m.devices.c.id == device_id)
                .values(current_sequence=rel.sequence, slot_state="confirmed")
            )
    return new


_SET_STATE = update(m.devices).where(m.devices.c.id == bindparam("device"))

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

__all__ = ["IdentityStore", "NotFound", "Store", "StoreConflict", "make_engine", "migrate", "utc"]
