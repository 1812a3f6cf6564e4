"""The rollout: the candidate's signed bundles, staged across the fleet behind health gates,
rolled back automatically, promoted to `production` only when the last group passes.

With a fleet server (`fleet_url`, or TINYMLOPS_FLEET_URL) the rollout runs there and a re-run
resumes it from the server's state; without one, on a simulated fleet of `devices`."""

from __future__ import annotations

from prefect import flow, runtime
from pydantic import BaseModel, ConfigDict, Field

from tasks.context import PipelineRun, load_context
from tasks.rollout import RolloutPlan, fleet_rollout, plan_rollout, promote, staged_rollout
from tinymlops.fleet.remote import FollowedRollout
from tinymlops.fleet.simulation import SimulatedRollout
from tinymlops.fleet.simulator import Faults
from tinymlops.tracking import Tag, Tracker


class RolloutRun(BaseModel):
    """The rollout flow's parameters (a form in the Prefect UI)."""

    model_config = ConfigDict(extra="forbid")

    root: str = Field(".", description="project directory")
    fleet_url: str | None = Field(
        None, description="fleet server to roll out on (default TINYMLOPS_FLEET_URL); none: a simulated fleet"
    )
    rollout_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="fleet server: rollout id (default: release)"
    )
    follow_timeout_seconds: float = Field(
        6 * 3600, gt=0, description="fleet server: how long to follow before leaving the rollout to the server"
    )
    # simulated fleet only:
    devices: int = Field(400, ge=10, description="size of the simulated fleet")
    fail_install: float = Field(0.0, ge=0, le=1, description="share of devices whose install fails")
    power_loss: float = Field(0.0, ge=0, le=1, description="share losing power mid-download")
    slow: float = Field(0.0, ge=0, le=1, description="share running slower")
    drift: float = Field(0.0, ge=0, le=1, description="share seeing drifted inputs")


def _tracker(ctx, plan: RolloutPlan) -> Tracker:
    """A nested MLflow run under the candidate's pipeline run."""
    parent = Tracker(ctx.env.tracking_uri, plan.candidate_run_id)
    run = parent.client.create_run(
        parent.experiment_id,
        run_name=f"rollout-{plan.release_id}",
        tags={Tag.PARENT_RUN: plan.candidate_run_id, Tag.FLOW_RUN_ID: str(runtime.flow_run.id)},
    )
    return Tracker(ctx.env.tracking_uri, run.info.run_id)


@flow(name="rollout", log_prints=True)
def rollout(run: RolloutRun = RolloutRun()) -> SimulatedRollout | FollowedRollout:
    ctx = load_context(PipelineRun(root=run.root), f"rollout-{runtime.flow_run.id}")
    plan = plan_rollout(ctx)
    tracker = _tracker(ctx, plan)
    ok = False
    try:
        url = run.fleet_url or ctx.env.fleet_url
        if url:
            result = fleet_rollout(ctx, tracker, plan, url, run.rollout_id, run.follow_timeout_seconds)
        else:
            faults = Faults(fail_install=run.fail_install, power_loss=run.power_loss, slow=run.slow, drift=run.drift)
            result = staged_rollout(ctx, tracker, plan, run.devices, faults)
        promote(ctx, tracker, plan, result)
        ok = True
        return result
    finally:
        tracker.finish(ok)


if __name__ == "__main__":
    rollout()
