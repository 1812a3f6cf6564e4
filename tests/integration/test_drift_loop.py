"""The closed loop, end to end, on a real Prefect server: simulated devices start seeing drifted
inputs → the fleet server's monitor raises a drift alarm → it POSTs a Prefect event → the deployment
trigger of prefect.yaml starts `pipeline/retrain-on-drift` with the alarm as its typed parameter →
a process worker runs it in the project → a new candidate in MLflow, its run tagged trigger=drift
and linked to the alarm. The time from the injected drift to the started retraining run is printed
(and kept in the test's temp folder as drift_loop.json)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.fleet_world import fleet_world
from tests.support.paths import REPO

pytestmark = pytest.mark.slow


def flow_runs(api: str, deployment_id: str) -> list[dict]:
    body = {"deployments": {"id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC"}
    return httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()


def wait_for(predicate, what: str, timeout: float, every: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(every)
    pytest.fail(f"{what} within {timeout:.0f} s")


def test_drift_alarm_starts_a_retraining_run_that_ends_at_a_candidate(
    project: Path, tmp_path: Path, prefect_server
) -> None:
    from mlflow import MlflowClient
    from prefect.settings import PREFECT_API_URL

    from deploy.deployments import register
    from tinymlops.fleet.monitoring import DriftAlarm
    from tinymlops.settings import Environment, TrackingConfig
    from tinymlops.tracking import Tag

    for name in ("flows", "tasks"):  # the checkout the deployment runs from
        shutil.copytree(REPO / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    # The shipped trigger, with one epoch: the loop is under test here, not the model's accuracy.
    spec = (REPO / "prefect.yaml").read_text()
    assert "          rollout_devices: 0\n" in spec
    (project / "prefect.yaml").write_text(
        spec.replace("          rollout_devices: 0\n", "          rollout_devices: 0\n          epochs: 1\n")
    )
    api = PREFECT_API_URL.value()
    deployment_id = str(register(project, only={"retrain-on-drift"})["pipeline/retrain-on-drift"])
    deployment = httpx.get(f"{api}/deployments/{deployment_id}").json()
    assert "DriftAlarm" in json.dumps(deployment["parameter_openapi_schema"])  # the alarm is a typed parameter

    log = tmp_path / "worker.log"
    env = {
        **os.environ,
        "PREFECT_API_URL": api,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "1",
    }
    prefect = str(Path(sys.executable).parent / "prefect")
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [prefect, "worker", "start", "--pool", "tinymlops-process", "--type", "process", "--limit", "1"],
            env=env,
            cwd=project,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with fleet_world(tmp_path / "fleet", events_url=api) as world:
            world.round()
            time.sleep(2)  # clean fleet: the background checks find nothing
            assert world.admin.alarms() == []
            assert flow_runs(api, deployment_id) == []

            injected = time.monotonic()
            world.drift()

            def alarmed() -> list[dict]:
                world.round()
                return world.admin.alarms()

            alarms = wait_for(alarmed, "a drift alarm", 60, every=0.5)
            alarm_at = time.monotonic() - injected
            sent = wait_for(lambda: [a for a in world.admin.alarms() if a["emitted_at"]], "the alarm's event sent", 30)
            runs = wait_for(lambda: flow_runs(api, deployment_id), "a flow run from the trigger", 60)
            created_at = time.monotonic() - injected
            started = wait_for(
                lambda: [r for r in flow_runs(api, deployment_id) if r["state_type"] in ("RUNNING", "COMPLETED")],
                "the retraining run started by the worker",
                300,  # the worker's process imports the flow (and TensorFlow) first: slow on a busy machine
            )
            started_at = time.monotonic() - injected
        run = started[0]
        alarm = DriftAlarm.model_validate(run["parameters"]["alarm"])  # the typed parameter, as sent
        assert alarm.id in {a["id"] for a in alarms} | {a["id"] for a in sent}
        assert alarm.kind == "classes" and alarm.value > alarm.threshold
        assert run["parameters"]["rollout_devices"] == 0 and len(runs) >= 1

        def finished() -> dict | None:
            state = httpx.get(f"{api}/flow_runs/{run['id']}", timeout=10).json()
            if state["state_type"] in ("FAILED", "CRASHED", "CANCELLED"):
                pytest.fail(f"retraining run ended {state['state_type']}: {log.read_text()[-4000:]}")
            return state if state["state_type"] == "COMPLETED" else None

        wait_for(finished, "the retraining run to finish", 900, every=2)
        done_at = time.monotonic() - injected
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()

    env_ = Environment.from_env(project)
    client = MlflowClient(env_.tracking_uri, registry_uri=env_.tracking_uri)
    experiment = client.get_experiment_by_name(TrackingConfig.load_from(project).experiment)
    [parent] = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{Tag.DRIFT_ALARM}` = '{alarm.id}'")
    assert parent.data.tags[Tag.TRIGGER] == "drift"
    assert parent.data.tags[Tag.DRIFT_ALARM_URL] == alarm.url and alarm.url.endswith(f"#{alarm.id}")
    assert parent.data.tags[Tag.FLOW_RUN_ID] == run["id"]
    config = TrackingConfig.load_from(project)
    candidate = client.get_model_version_by_alias(config.registered_model, config.candidate_alias)
    # A drift-started retraining run made the candidate. A drifting fleet may raise more than one
    # alarm, and a later run on the same data reuses the model (same bytes, same version), so the
    # version can belong to the first of them rather than to the one followed here.
    maker = client.get_run(candidate.run_id).data.tags
    assert maker[Tag.TRIGGER] == "drift" and maker[Tag.DRIFT_ALARM], maker
    # and recorded the new model's monitoring baselines beside its bundles
    logged = [f.path for f in client.list_artifacts(parent.info.run_id, "bundles")]
    assert "bundles/baselines.json" in logged, logged

    timings = {
        "drift_to_alarm_s": round(alarm_at, 2),
        "drift_to_flow_run_created_s": round(created_at, 2),
        "drift_to_retraining_started_s": round(started_at, 2),
        "drift_to_candidate_s": round(done_at, 2),
        "alarm": alarm.id,
        "flow_run": run["id"],
        "id": str(uuid.uuid4()),
    }
    (tmp_path / "drift_loop.json").write_text(json.dumps(timings, indent=2))
    print("\n" + json.dumps(timings, indent=2))
