"""Alembic environment for the fleet store. Run through tinymlops.fleet.store.migrate(), which
hands over an open connection in config.attributes["connection"]."""

from __future__ import annotations

from alembic import context

from tinymlops.fleet.models import metadata


def run_migrations_online() -> None:
    connection = context.config.attributes["connection"]
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():  # pragma: no cover - offline SQL generation is not offered
    raise SystemExit("tinymlops fleet migrations run online only")
run_migrations_online()
