"""The rollout: the candidate's signed bundles, staged across the fleet behind health gates,
rolled back automatically; when the last group passes, `production` moves (a fleet server) or
`simulated-ok` (a simulated fleet: a simulation never moves production).

With a fleet server (`fleet_url`, or TINYMLOPS_FLEET_URL) the rollout runs there and a re-run
resumes it from the server's state; without one, on a simulated fleet of `devices`."""

from __future__ import annotations

from prefect import flow, runtime
from pydantic import BaseModel, ConfigDict, Field

from tasks.context import PipelineRun, load_context
from tasks.rollout import RolloutPlan, fleet_rollout, plan_rollout, promote, staged_rollout
from tinymlops.fleet.remote import FollowedRollout
from tinymlops.fleetsim.simulation import SimulatedRollout
from tinymlops.fleetsim.simulator import Faults
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
    instance_id: int | None = Field(
        None, ge=0, description="ship this fleet its own watermark instance (built by the pipeline); none: the base"
    )
    follow: bool = Field(
        True,
        description="fleet server: follow to a verdict; false: hand the rollout to the server and return"
        " (`tinymlops rollout resume` follows it later and promotes)",
    )
    demo_policy: bool = Field(
        False, description="fleet server: the fast demo policy (30 s soaks, 2 devices) instead of configs/rollout.yaml"
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
    return parent.child(f"rollout-{plan.release_id}", {Tag.FLOW_RUN_ID: str(runtime.flow_run.id)})


@flow(name="rollout", log_prints=True)
def rollout(run: RolloutRun = RolloutRun()) -> SimulatedRollout | FollowedRollout:
    ctx = load_context(PipelineRun(root=run.root), f"rollout-{runtime.flow_run.id}")
    url = run.fleet_url or ctx.env.fleet_url
    plan = plan_rollout(ctx, simulated=not url, instance_id=run.instance_id)
    tracker = _tracker(ctx, plan)
    ok = False
    try:
        result: SimulatedRollout | FollowedRollout
        if url:
            result = fleet_rollout(
                ctx, tracker, plan, url, run.rollout_id, run.follow_timeout_seconds, run.follow, run.demo_policy
            )
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
