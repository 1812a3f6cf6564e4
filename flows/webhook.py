"""The webhook receiver's trigger: a push becomes a flow run of the `pipeline/manual` deployment.

Lives outside the library because it calls Prefect; `tinymlops webhook serve` injects it.
"""

from __future__ import annotations

from collections.abc import Callable

from tinymlops.triggers import PushEvent


def run_parameters(event: PushEvent) -> dict[str, object]:
    """The flow's parameters for a push (flat: the pipeline flow's own keyword parameters)."""
    return {"trigger": "webhook", "git_ref": event.ref, "git_sha": event.sha, "repository": event.repository}


def deployment_trigger(deployment: str = "pipeline/manual") -> Callable[[PushEvent], str]:
    from prefect.deployments import run_deployment  # imported now, not on the first push

    def trigger(event: PushEvent) -> str:
        flow_run = run_deployment(
            deployment,
            parameters=run_parameters(event),
            timeout=0,  # create the run and return; a worker executes it
            as_subflow=False,
            tags=["webhook", event.provider],
            # Prefect refuses a second run with the same key: a last guard against double runs
            idempotency_key=f"{event.provider}:{event.delivery_id}" if event.delivery_id else None,
        )
        return str(flow_run.id)

    return trigger
