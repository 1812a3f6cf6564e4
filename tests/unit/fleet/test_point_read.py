"""The poll's point read: the same row as the ordinary SQLAlchemy query, on SQLite through its own
per-thread connections (never the engine's pool) and on PostgreSQL through the engine."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

from sqlalchemy import select

from tests.integration.test_fleet_server import db_url  # noqa: F401  (fixture: sqlite and postgresql)
from tinymlops.fleet import models as m
from tinymlops.fleet.store import _POLL_QUERY, Store

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _expected(store: Store, device_id: str):  # type: ignore[no-untyped-def]
    with store.read() as c:
        return c.execute(_POLL_QUERY.where(m.devices.c.id == device_id), {"device_id": device_id}).first()


def test_point_read_returns_the_row_the_query_gives(db_url: str) -> None:  # noqa: F811
    store = Store.open(db_url)
    try:
        store.enrol("dev-1", "m4", "digest-1", NOW)
        row = store.poll_row("dev-1")
        assert row is not None and tuple(row) == tuple(_expected(store, "dev-1"))
        assert (row.device_class, row.credential_hash, row.release_id) == ("m4", "digest-1", None)
        assert store.poll_row("nobody") is None
        store.set_device_state("dev-1", 7, "confirmed")  # a write is seen by the next read
        assert (store.poll_row("dev-1").current_sequence, store.poll_row("dev-1").slot_state) == (7, "confirmed")
        with store.read() as c:
            assert c.execute(select(m.devices.c.id)).scalars().all() == ["dev-1"]
    finally:
        store.close()


def test_many_reading_threads_never_drain_the_engine_pool(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Each thread keeps its own read connection; the writers' pool stays free (it once ran dry
    under 40 download threads and the server answered 500)."""
    store = Store.open(f"sqlite:///{tmp_path / 'fleet.db'}")
    try:
        store.enrol("dev-1", "m4", "digest-1", NOW)
        found: list[object] = []
        threads = [threading.Thread(target=lambda: found.append(store.poll_row("dev-1"))) for _ in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(found) == 40 and all(r is not None and r.device_class == "m4" for r in found)
        assert store.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        store.enrol("dev-2", "m4", "digest-2", NOW)  # writes still get a connection at once
    finally:
        store.close()
