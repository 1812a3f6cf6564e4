"""`tinymlops rollout …`: rollouts on a fleet server — resume one after a crash (or after the flow
handed it to the server), list them."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Rollouts on a fleet server: resume, list.", no_args_is_help=True)
RootOpt = typer.Option(Path("."), "--root", help="project directory")
UrlOpt = typer.Option(None, "--fleet-url", help="fleet server base URL (default TINYMLOPS_FLEET_URL)")


def _fleet(root: Path, url: str | None):
    from tinymlops.errors import ConfigError
    from tinymlops.settings import Environment

    env = Environment.from_env(root)
    url = url or env.fleet_url
    if not url:
        raise ConfigError("no fleet server: pass --fleet-url or set TINYMLOPS_FLEET_URL")
    if env.fleet_admin_token is None:
        raise ConfigError(f"TINYMLOPS_FLEET_ADMIN_TOKEN is not set: the fleet server at {url} needs an admin token")
    return env, url


@app.command("resume")
def resume(
    root: Path = RootOpt,
    fleet_url: str | None = UrlOpt,
    rollout_id: str | None = typer.Option(None, "--rollout-id", help="default: the candidate release's rollout"),
    timeout: float = typer.Option(
        6 * 3600, "--timeout", min=1, help="seconds to follow before leaving it to the server"
    ),
    demo: bool = typer.Option(False, "--demo-policy", help="create it (if new) with the fast demo policy"),
) -> None:
    """Resume the candidate's rollout on the fleet server: the rollout flow again, which finds the
    same release (identical model bytes) and so the same rollout, uploads nothing new, follows it to
    a verdict (printing only its state changes) and moves `production` if it succeeded."""
    from tinymlops.cli.common import out
    from tinymlops.settings import use_local_prefect

    env, url = _fleet(root, fleet_url)
    use_local_prefect(env.prefect_home)  # Prefect's database stays with the local state, as for `run`
    from flows.rollout import RolloutRun, rollout  # the CLI is the outer layer: it may start flows

    result = rollout(
        RolloutRun(
            root=str(env.root), fleet_url=url, rollout_id=rollout_id, follow_timeout_seconds=timeout, demo_policy=demo
        )
    )
    out.print(result.summary, soft_wrap=True, highlight=False, markup=False)
    if result.status not in ("succeeded", "running", "paused"):
        raise typer.Exit(1)


@app.command("list")
def list_rollouts(
    root: Path = RootOpt,
    fleet_url: str | None = UrlOpt,
    status: str | None = typer.Option(None, "--status", help="created, running, paused, succeeded, aborted, …"),
) -> None:
    """The fleet server's rollouts, oldest first."""
    from rich.table import Table

    from tinymlops.cli.common import out
    from tinymlops.fleet.client import FleetAdmin

    env, url = _fleet(root, fleet_url)
    assert env.fleet_admin_token is not None
    with FleetAdmin(url, env.fleet_admin_token.get_secret_value()) as admin:
        rows = admin.rollouts(status=status)
    table = Table(title=f"rollouts on {url}", title_justify="left")
    for column in ("id", "release", "status", "created", "updated"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["id"], r["release_id"], r["status"], str(r["created_at"]), str(r["updated_at"]))
    out.print(table)
