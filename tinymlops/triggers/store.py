"""Pushes already acted on, in SQL (SQLite by default, PostgreSQL by URL), so a redelivery — or a
captured delivery replayed under a new delivery id — is recognised even after the receiver
restarts. A push is known by (provider, repository, ref, after-sha) and by every delivery id it
came with; primary keys make the claim atomic across replicas sharing one database.

A push's state: `starting` (claimed, its run being created), `triggered` (run id recorded), `retry`
(accepted, but its run could not be created yet: the receiver retries it, and so does a redelivery).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import DateTime, Integer, String, create_engine, delete, or_, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from tinymlops.triggers.events import PushEvent

STALE = timedelta(minutes=10)  # a push still `starting` this long after: its receiver died mid-trigger


class _Base(DeclarativeBase):
    pass


class Push(_Base):
    __tablename__ = "webhook_pushes"

    provider: Mapped[str] = mapped_column(String(16), primary_key=True)
    repository: Mapped[str] = mapped_column(String(256), primary_key=True)
    ref: Mapped[str] = mapped_column(String(256), primary_key=True)
    sha: Mapped[str] = mapped_column(String(64), primary_key=True)
    delivery_id: Mapped[str | None] = mapped_column(String(128), nullable=True)  # the first one
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Delivery(_Base):
    __tablename__ = "webhook_delivery_ids"

    provider: Mapped[str] = mapped_column(String(16), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    repository: Mapped[str] = mapped_column(String(256))
    ref: Mapped[str] = mapped_column(String(256))
    sha: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _key(event: PushEvent):
    return (
        Push.provider == event.provider,
        Push.repository == event.repository,
        Push.ref == event.ref,
        Push.sha == event.sha,
    )


class DeliveryStore:
    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(url, pool_pre_ping=True)
        _Base.metadata.create_all(self.engine)

    def claim(self, event: PushEvent) -> bool:
        """Claim the push for a run; False when it was seen before (by its delivery id, or as the
        same repository, ref and sha) and is not waiting for a retry. The claim is durable when
        this returns."""
        now = _now()
        try:
            with Session(self.engine) as session, session.begin():
                known = session.execute(select(Push).where(*_key(event))).scalar_one_or_none()
                if event.delivery_id is not None:
                    seen = session.get(Delivery, (event.provider, event.delivery_id))
                    if seen is None:
                        session.add(
                            Delivery(
                                provider=event.provider,
                                delivery_id=event.delivery_id,
                                repository=event.repository,
                                ref=event.ref,
                                sha=event.sha,
                                received_at=now,
                            )
                        )
                    elif known is None:
                        return False  # the delivery id of another push: a forged replay
                if known is not None:
                    if known.state != "retry":
                        return False
                    known.state, known.attempts, known.updated_at = "starting", known.attempts + 1, now
                    return True
                session.add(
                    Push(
                        provider=event.provider,
                        repository=event.repository,
                        ref=event.ref,
                        sha=event.sha,
                        delivery_id=event.delivery_id,
                        state="starting",
                        attempts=1,
                        received_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:  # another replica claimed it at the same moment
            return False
        return True

    def release(self, event: PushEvent) -> None:
        """Forget a claim whose run could not be started and was not accepted, so a redelivery
        may try again."""
        with Session(self.engine) as session, session.begin():
            session.execute(delete(Push).where(*_key(event)))
            session.execute(
                delete(Delivery).where(
                    Delivery.provider == event.provider,
                    Delivery.repository == event.repository,
                    Delivery.ref == event.ref,
                    Delivery.sha == event.sha,
                )
            )

    def defer(self, event: PushEvent) -> None:
        """An accepted push whose run could not be created yet: keep it for a retry."""
        with Session(self.engine) as session, session.begin():
            session.execute(update(Push).where(*_key(event)).values(state="retry", updated_at=_now()))

    def record_run(self, event: PushEvent, run_id: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(Push).where(*_key(event)).values(state="triggered", run_id=run_id, updated_at=_now())
            )

    def retake(self, event: PushEvent) -> bool:
        """Claim a push waiting for a retry (False: someone else took it, or it is done)."""
        with Session(self.engine) as session, session.begin():
            done = session.execute(
                update(Push)
                .where(*_key(event), Push.state.in_(("retry", "starting")))
                .values(state="starting", attempts=Push.attempts + 1, updated_at=_now())
            )
            return done.rowcount == 1  # type: ignore[attr-defined]  # an UPDATE's CursorResult has it

    def pending(self, limit: int = 20) -> list[PushEvent]:
        """Accepted pushes still without a run: waiting for a retry, or stuck `starting`."""
        stale = _now() - STALE
        with Session(self.engine) as session:
            rows = session.execute(
                select(Push)
                .where(or_(Push.state == "retry", (Push.state == "starting") & (Push.updated_at < stale)))
                .order_by(Push.received_at)
                .limit(limit)
            ).scalars()
            return [
                PushEvent(provider=r.provider, delivery_id=r.delivery_id, repository=r.repository, ref=r.ref, sha=r.sha)
                for r in rows
            ]

    def run_of(self, provider: str, delivery_id: str) -> str | None:
        with Session(self.engine) as session:
            seen = session.get(Delivery, (provider, delivery_id))
            if seen is None:
                return None
            return session.execute(
                select(Push.run_id).where(
                    Push.provider == provider,
                    Push.repository == seen.repository,
                    Push.ref == seen.ref,
                    Push.sha == seen.sha,
                )
            ).scalar()

    def run_of_push(self, event: PushEvent) -> str | None:
        with Session(self.engine) as session:
            return session.execute(select(Push.run_id).where(*_key(event))).scalar()

    def close(self) -> None:
        self.engine.dispose()
