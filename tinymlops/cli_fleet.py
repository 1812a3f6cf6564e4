"""`tinymlops fleet …`: the fleet server (uvicorn) and its schema migrations."""

from __future__ import annotations

import os
from pathlib import Path

import typer

app = typer.Typer(help="Fleet server and staged, ML-gated rollouts.", no_args_is_help=True)
RootOpt = typer.Option(Path("."), "--root", help="project directory (configs/rollout.yaml)")
DbOpt = typer.Option(None, "--db-url", help="SQLAlchemy URL; default TINYMLOPS_FLEET_DB_URL or SQLite under home")


def _settings(root: Path, db_url: str | None, **overrides: object):  # type: ignore[no-untyped-def]
    from tinymlops.fleet.policy import RolloutPolicy
    from tinymlops.fleet.server import FleetSettings
    from tinymlops.settings import Environment

    env = Environment.from_env(root)
    policy = RolloutPolicy.load_from(env.root)
    extra = {k: v for k, v in overrides.items() if v is not None}
    if db_url:
        extra["db_url"] = db_url
    return FleetSettings.from_env(env.home, policy=policy, **extra)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command("migrate")
def migrate(root: Path = RootOpt, db_url: str | None = DbOpt) -> None:
    """Create or upgrade the fleet database schema (Alembic) and print the revision."""
    from tinymlops.fleet.store import make_engine
    from tinymlops.fleet.store import migrate as run

    settings = _settings(root, db_url)
    engine = make_engine(settings.db_url)
    try:
        revision = run(engine)
    finally:
        engine.dispose()
    typer.echo(f"fleet database {_safe_url(settings.db_url)} at revision {revision}")


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="interface to listen on (0.0.0.0 in a container)"),
    port: int = typer.Option(8090, "--port", help="TCP port"),
    root: Path = RootOpt,
    db_url: str | None = DbOpt,
    trust: Path | None = typer.Option(None, "--trust", help="root public key bundles must chain to"),
    workers: int = typer.Option(1, "--workers", min=1, help="uvicorn worker processes"),
    tick_seconds: float = typer.Option(5.0, "--tick-seconds", help="rollout judging interval; 0 turns it off"),
) -> None:
    """Serve the device and admin APIs (OpenAPI at /docs and /openapi.json).

    Admin tokens: TINYMLOPS_FLEET_ADMIN_TOKENS="name:token,…"; devices enrol with
    TINYMLOPS_FLEET_PROVISIONING_TOKEN."""
    import uvicorn

    from tinymlops.errors import ConfigError
    from tinymlops.fleet.server import create_app
    from tinymlops.fleet.store import make_engine
    from tinymlops.fleet.store import migrate as run

    settings = _settings(root, db_url, trust_anchor=trust, tick_seconds=tick_seconds or None)
    if settings.trust_anchor is not None and not settings.trust_anchor.is_file():
        raise ConfigError(f"{settings.trust_anchor}: trust anchor file not found")
    if not settings.admin_tokens:
        typer.echo("warning: TINYMLOPS_FLEET_ADMIN_TOKENS is not set: the admin API refuses everyone", err=True)
    engine = make_engine(settings.db_url)
    try:
        run(engine)
    finally:
        engine.dispose()
    typer.echo(f"fleet server on http://{host}:{port} (OpenAPI: /docs), database {_safe_url(settings.db_url)}")
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
        return
    # Worker processes rebuild the app from the environment: pass the resolved options through it.
    os.environ["TINYMLOPS_FLEET_DB_URL"] = settings.db_url
    os.environ["TINYMLOPS_FLEET_TICK_SECONDS"] = str(tick_seconds)
    os.environ["TINYMLOPS_ROOT"] = str(Path(root).resolve())
    if trust is not None:
        os.environ["TINYMLOPS_FLEET_TRUST"] = str(trust.resolve())
    uvicorn.run(
        "tinymlops.fleet.server:app_from_env", factory=True, host=host, port=port, workers=workers, log_level="warning"
    )


COMMANDS = [("fleet", app)]
