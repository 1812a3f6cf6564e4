"""`tinymlops webhook serve`: the git-push webhook receiver (FastAPI under uvicorn)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Git-push webhooks that start pipeline runs.", no_args_is_help=True)


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="interface to listen on (0.0.0.0 in a container)"),
    port: int = typer.Option(8088, "--port", help="TCP port"),
    root: Path = typer.Option(Path("."), "--root", help="project directory holding configs/webhook.yaml"),
) -> None:
    """Receive GitHub/GitLab push webhooks and run the configured Prefect deployment for each.

    Needs TINYMLOPS_WEBHOOK_SECRET and a Prefect API (PREFECT_API_URL)."""
    import uvicorn

    from tinymlops.triggers import DeliveryStore, WebhookConfig, WebhookEnv, create_app
    from tinymlops.triggers.orchestrator import require_prefect

    config = WebhookConfig.load_from(root)
    env = WebhookEnv.from_env(root)
    require_prefect(env.prefect)  # refuse to start rather than answer 202 and lose the push
    from flows.webhook import deployment_trigger  # the CLI is the outer layer: it may reach flows/

    receiver = create_app(
        config, env.secret.get_secret_value(), DeliveryStore(env.db_url), deployment_trigger(config.deployment)
    )
    typer.echo(f"webhook receiver on http://{host}:{port}/webhooks/github (and /webhooks/gitlab) → {config.deployment}")
    uvicorn.run(receiver, host=host, port=port, log_level="info")
