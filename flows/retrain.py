"""pipeline/retrain-on-drift: the whole pipeline, started by a drift alarm from the fleet server.

The fleet server emits a Prefect event per alarm (tinymlops.fleet.events); the deployment trigger in
prefect.yaml matches it and starts this flow with the alarm as a typed parameter (DriftAlarm, the
form the Prefect UI shows). The run is the pipeline itself, in this flow run (one flow run, one
MLflow parent run): tagged trigger=drift, with the alarm's id and dashboard link beside it, and it
ends, like any run, at a new candidate (rollout_devices=0: rolling it out stays a decision)."""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from pydantic import Field

import tinymlops  # noqa: F401  (TF_USE_LEGACY_KERAS before any TensorFlow import)
from flows.pipeline import DEFAULTS, pipeline
from flows.runners import task_runner_from_env
from tinymlops.fleet.monitoring import DriftAlarm
from tinymlops.pipeline.summary import PipelineSummary


@flow(name="pipeline", log_prints=True, task_runner=task_runner_from_env())
def retrain_on_drift(
    alarm: DriftAlarm,
    epochs: Annotated[int, Field(ge=1, le=10_000)] = DEFAULTS.train.epochs,
    rollout_devices: Annotated[int, Field(ge=0)] = 0,
    dry_run: bool = False,
) -> PipelineSummary:
    """Retrain on the project's current data because production drifted.

    Args:
        alarm: The fleet server's drift alarm (what drifted, on which class and model, by how much).
        epochs: Training epochs, an upper bound (params.yaml train.epochs).
        rollout_devices: Simulated fleet for a staged rollout at the end; 0 stops at the candidate.
        dry_run: Run and record everything, but leave the candidate alias where it is.
    """
    print(f"retraining: {alarm.summary} (alarm {alarm.id}, {alarm.devices} devices, {alarm.inferences} inferences)")
    return pipeline.fn(
        epochs=epochs,
        rollout_devices=rollout_devices,
        dry_run=dry_run,
        trigger="drift",
        alarm_id=alarm.id,
        alarm_url=alarm.url or "",
    )


if __name__ == "__main__":
    raise SystemExit("started by a drift alarm through prefect.yaml's trigger: see docs/monitoring.md")
