"""Deliveries already acted on, in SQL (SQLite by default, PostgreSQL by URL), so a redelivery
is recognised even after the receiver restarts. The primary key makes the claim atomic across
replicas sharing one database."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import DateTime, String, create_engine, delete, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from tinymlops.triggers.events import PushEvent


class _Base(DeclarativeBase):
    pass


class Delivery(_Base):
    __tablename__ = "webhook_deliveries"

    provider: Mapped[str] = mapped_column(String(16), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    repository: Mapped[str] = mapped_column(String(256))
    ref: Mapped[str] = mapped_column(String(256))
    sha: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class DeliveryStore:
    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(url, pool_pre_ping=True)
        _Base.metadata.create_all(self.engine)

    def claim(self, event: PushEvent) -> bool:
        """Record the delivery; False when it was recorded before (a redelivery)."""
        row = Delivery(
            provider=event.provider,
            delivery_id=event.delivery_id,
            received_at=datetime.now(timezone.utc),
            repository=event.repository,
            ref=event.ref,
            sha=event.sha,
        )
        try:
            with Session(self.engine) as session, session.begin():
                session.add(row)
        except IntegrityError:
            return False
        return True

    def release(self, event: PushEvent) -> None:
        """Forget a claim whose run could not be started, so a redelivery may try again."""
        with Session(self.engine) as session, session.begin():
            session.execute(delete(Delivery).where(*self._key(event)))

    def record_run(self, event: PushEvent, run_id: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(update(Delivery).where(*self._key(event)).values(run_id=run_id))

    def run_of(self, provider: str, delivery_id: str) -> str | None:
        with Session(self.engine) as session:
            found = session.execute(
                select(Delivery.run_id).where(Delivery.provider == provider, Delivery.delivery_id == delivery_id)
            ).first()
        return found[0] if found else None

    def close(self) -> None:
        self.engine.dispose()

    @staticmethod
    def _key(event: PushEvent):
        return Delivery.provider == event.provider, Delivery.delivery_id == event.delivery_id
