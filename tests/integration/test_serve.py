"""`tinymlops serve` for real: a Prefect server, a process worker and the deployments of
prefect.yaml, served from a project checkout. A UI-style run (the REST call the UI makes) and a
webhook-triggered run are executed by the worker and land in MLflow tagged with their trigger;
the second finds nothing changed and reuses the model. Ctrl-C stops everything."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

from tests.support.paths import REPO  # noqa: E402

SHA = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, what: str, timeout: float, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(1)
    pytest.fail(f"{what} within {timeout:.0f} s; serve log:\n{log.read_text()[-3000:]}")


def finished_run(api: str, run_id: str) -> dict | None:
    run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()
    if run["state_type"] in ("FAILED", "CRASHED", "CANCELLED"):
        pytest.fail(f"flow run {run_id} ended {run['state_type']}: {run['state']['message']}")
    return run if run["state_type"] == "COMPLETED" else None


def post_retrying(url: str, body: dict, attempts: int = 10) -> httpx.Response:
    """POST as Prefect's own client does: a 503 (SQLite briefly locked while the server's scheduler
    and the worker start up) is retried with backoff; anything else is returned as it is."""
    for attempt in range(attempts):
        response = httpx.post(url, json=body)
        if response.status_code != 503:
            return response
        time.sleep(0.5 * (attempt + 1))
    return response


def test_serve_runs_ui_and_webhook_runs_then_stops_cleanly(project: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from tinymlops.settings import Environment, TrackingConfig
    from tinymlops.tracking import Tag
    from tinymlops.triggers import PushEvent

    for name in ("flows", "tasks"):  # the checkout the deployments are served from
        shutil.copytree(REPO / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "prefect.yaml", project / "prefect.yaml")

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    log = tmp_path / "serve.log"
    cmd = [str(Path(sys.executable).parent / "tinymlops"), "serve", "--port", str(port), "--root", str(project)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=project, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: f"Prefect UI: http://127.0.0.1:{port}" in log.read_text(), "no UI URL printed", 180, log)
        deployments = httpx.post(f"{api}/deployments/filter", json={}).json()
        flow_name = lambda d: httpx.get(f"{api}/flows/{d['flow_id']}").json()["name"]  # noqa: E731
        by_name = {f"{flow_name(d)}/{d['name']}": d for d in deployments}
        assert set(by_name) == {
            "pipeline/manual",
            "pipeline/retrain-nightly",
            "rollout/manual",
            "pipeline/retrain-on-drift",
        }
        [nightly] = by_name["pipeline/retrain-nightly"]["schedules"]
        assert nightly["schedule"] == {"cron": "0 3 * * *", "timezone": "Europe/Berlin", "day_or": True}
        assert by_name["pipeline/manual"]["schedules"] == by_name["rollout/manual"]["schedules"] == []
        workers = lambda: httpx.post(f"{api}/work_pools/tinymlops-process/workers/filter", json={}).json()  # noqa: E731
        wait_for(workers, "no worker polling the pool", 60, log)

        # 1. a run created the way the UI creates one
        manual = by_name["pipeline/manual"]["id"]
        created = post_retrying(
            f"{api}/deployments/{manual}/create_flow_run",
            {"parameters": {"trigger": "ui", "rollout_devices": 0}},
        )
        assert created.status_code == 201, created.text
        ui_run = wait_for(lambda: finished_run(api, created.json()["id"]), "UI-style run not completed", 420, log)

        # 2. the receiver's trigger, as `tinymlops webhook serve` injects it
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from flows.webhook import deployment_trigger

        push = PushEvent(
            provider="github",
            delivery_id=str(uuid.uuid4()),
            repository="octo-org/tinyml-app",
            ref="refs/heads/main",
            sha=SHA,
        )
        with temporary_settings(updates={PREFECT_API_URL: api}):
            webhook_run_id = deployment_trigger("pipeline/manual")(push)
        webhook_run = wait_for(lambda: finished_run(api, webhook_run_id), "webhook run not completed", 420, log)

        # what landed in MLflow (the project's default SQLite store)
        env = Environment.from_env(project)
        client = MlflowClient(env.tracking_uri, registry_uri=env.tracking_uri)
        experiment = client.get_experiment_by_name(TrackingConfig.load_from(project).experiment)
        parents = [r for r in client.search_runs([experiment.experiment_id]) if Tag.FLOW_RUN_ID in r.data.tags]
        runs = {r.data.tags[Tag.FLOW_RUN_ID]: r for r in parents}  # nested runs (per device) carry no flow tag
        first, second = runs[ui_run["id"]], runs[webhook_run["id"]]
        assert first.info.status == second.info.status == "FINISHED"
        assert first.data.tags[Tag.TRIGGER] == "ui" and first.data.tags[Tag.TRAIN_CACHE_HIT] == "False"
        assert second.data.tags[Tag.TRIGGER] == "webhook"
        assert second.data.tags[Tag.TRIGGER_SHA] == SHA and second.data.tags[Tag.REPOSITORY] == "octo-org/tinyml-app"
        assert second.data.tags[Tag.TRAIN_CACHE_HIT] == "True"  # nothing changed: the model is reused
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        code = proc.wait(timeout=60)
    assert code == 0, log.read_text()[-3000:]
    assert "stopped: worker and Prefect server" in log.read_text()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{api}/health", timeout=2)
