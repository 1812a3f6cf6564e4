"""`tinymlops serve` (local Prefect server + worker + deployments) and `tinymlops deploy`."""

from __future__ import annotations

from pathlib import Path

import typer

RootOpt = typer.Option(None, "--root", help="checkout holding prefect.yaml and flows/ (default: this install's)")


def _root(root: Path | None) -> Path:
    from deploy.deployments import REPO, SPEC_FILE
    from tinymlops.errors import ConfigError

    root = (root or REPO).resolve()
    if not (root / SPEC_FILE).is_file():
        raise ConfigError(f"{root / SPEC_FILE}: file not found (pass --root, the checkout with prefect.yaml)")
    return root


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="interface for the Prefect server and UI"),
    port: int = typer.Option(4200, "--port", help="port of the Prefect server and UI"),
    root: Path | None = RootOpt,
) -> None:
    """Start a Prefect server and a process worker on this machine, register the deployments of
    prefect.yaml and print the UI URL. Ctrl-C stops all of it."""
    from tinymlops.settings import Environment, PrefectEnv

    root = _root(root)
    home = PrefectEnv.from_env().home or Environment.from_env(root).prefect_home
    from deploy.serve import serve_stack  # the CLI is the outer layer: it may start flows/

    serve_stack(root, host=host, port=port, home=home, say=lambda line: typer.echo(line))


def deploy(
    root: Path | None = RootOpt,
    pool: str | None = typer.Option(
        None,
        "--pool",
        help="send every deployment to this pool of prefect.yaml's definitions.work_pools, e.g. kubernetes"
        " (default: each deployment's own, the process pool)",
    ),
) -> None:
    """Register prefect.yaml's deployments with the Prefect server at PREFECT_API_URL (refused, in
    one line, when none answers: they would land in a throw-away local database)."""
    from tinymlops.triggers.orchestrator import require_prefect

    root = _root(root)
    require_prefect()
    from deploy.deployments import register

    for name, deployment_id in sorted(register(root, pool=pool).items()):
        typer.echo(f"{name}  {deployment_id}")
