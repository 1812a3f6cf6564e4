"""Webhook and UI runs end to end: `tinymlops webhook serve` as a real process on 127.0.0.1,
real HTTP, a real temporary Prefect server holding the `pipeline/manual` deployment registered
from prefect.yaml. A push must create a flow run of that deployment carrying its git origin; a
UI-style run (the REST call the UI makes) must be validated against the typed parameter form.
No worker runs here: what is checked is that the right runs are created with the right parameters."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.paths import REPO  # noqa: E402
from tests.support.webhook_payloads import SHA_AFTER, body, github_headers, github_push  # noqa: E402
from tinymlops.triggers.signature import github_signature  # noqa: E402

SECRET = "e2e-" + uuid.uuid4().hex


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def manual_deployment(prefect_server) -> str:
    from deploy.deployments import register

    ids = register(REPO, only={"pipeline/manual"})
    return str(ids["pipeline/manual"])


@pytest.fixture
def receiver(project: Path, tmp_path: Path, prefect_server):
    from prefect.settings import PREFECT_API_URL

    port = free_port()
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "TINYMLOPS_WEBHOOK_SECRET": SECRET,
        "TINYMLOPS_WEBHOOK_DB_URL": f"sqlite:///{tmp_path / 'deliveries.db'}",
    }
    tinymlops = Path(sys.executable).parent / "tinymlops"
    cmd = [str(tinymlops), "webhook", "serve", "--host", "127.0.0.1", "--port", str(port), "--root", str(project)]
    log = tmp_path / "receiver.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=project, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "receiver did not start: " + log.read_text()
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert SECRET not in log.read_text()  # the secret never reaches the logs


def read_flow_run(run_id: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(run_id))


def run_id_of_redelivery(receiver: str, raw: bytes, headers: dict[str, str]) -> str:
    """GitHub's "Redeliver": answered as a duplicate naming the run, once the trigger has settled."""
    for _ in range(100):
        again = httpx.post(f"{receiver}/webhooks/github", content=raw, headers=headers, timeout=30).json()
        assert again["status"] == "duplicate", again
        if again["run_id"]:
            return again["run_id"]
        time.sleep(0.2)
    raise AssertionError("the accepted delivery never recorded its run")


def test_signed_push_creates_a_run_of_the_manual_deployment(receiver: str, manual_deployment: str) -> None:
    raw = body(github_push(repository="octo-org/tinyml-app"))
    delivery = str(uuid.uuid4())
    headers = github_headers(github_signature(SECRET, raw), delivery=delivery)
    reply = httpx.post(f"{receiver}/webhooks/github", content=raw, headers=headers, timeout=30)
    assert reply.status_code == 202, reply.text
    # "accepted": Prefect took longer than answer_within_seconds; the run is created all the same
    assert reply.json()["status"] in ("triggered", "accepted")
    run_id = reply.json().get("run_id") or run_id_of_redelivery(receiver, raw, headers)

    flow_run = read_flow_run(run_id)
    assert str(flow_run.deployment_id) == manual_deployment
    assert flow_run.parameters == {
        "trigger": "webhook",
        "git_ref": "refs/heads/main",
        "git_sha": SHA_AFTER,
        "repository": "octo-org/tinyml-app",
    }
    assert flow_run.state.is_scheduled()  # created, waiting for a worker
    assert {"webhook", "github"} <= set(flow_run.tags)

    again = httpx.post(f"{receiver}/webhooks/github", content=raw, headers=headers, timeout=30)
    assert again.status_code == 202
    assert again.json()["status"] == "duplicate"
    assert again.json()["run_id"] == run_id  # the redelivery names the run it already started


def test_rejected_push_creates_no_run(receiver: str, manual_deployment: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    def runs() -> int:
        with get_client(sync_client=True) as client:
            flt = DeploymentFilter(id=DeploymentFilterId(any_=[uuid.UUID(manual_deployment)]))
            return len(client.read_flow_runs(deployment_filter=flt))

    before = runs()
    raw = body(github_push())
    bad = httpx.post(f"{receiver}/webhooks/github", content=raw, headers=github_headers("sha256=" + "0" * 64))
    assert bad.status_code == 401
    other = body(github_push(ref="refs/heads/experiment"))
    ignored = httpx.post(
        f"{receiver}/webhooks/github", content=other, headers=github_headers(github_signature(SECRET, other))
    )
    assert ignored.status_code == 202 and ignored.json()["status"] == "ignored"
    assert runs() == before


def test_ui_style_run_through_the_rest_api(manual_deployment: str) -> None:
    """What the UI does: read the deployment's parameter schema, POST create_flow_run."""
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    deployment = httpx.get(f"{api}/deployments/{manual_deployment}").json()
    schema = deployment["parameter_openapi_schema"]
    form = schema["properties"]  # the form the UI renders: flat parameters
    for field in ("dataset", "epochs", "quantization", "dry_run", "git_ref", "git_sha", "repository", "trigger"):
        assert form[field].get("description"), field
    assert deployment["parameters"] == {"trigger": "ui"}

    run = {"trigger": "ui", "epochs": 3, "quantization": "qat", "dry_run": True, "dataset": "digits"}
    created = httpx.post(f"{api}/deployments/{manual_deployment}/create_flow_run", json={"parameters": run})
    assert created.status_code == 201, created.text
    assert created.json()["parameters"] == run
    assert created.json()["deployment_id"] == manual_deployment

    wrong = {"epochs": 0, "quantization": "fp16"}  # the form's constraints hold on the server too
    refused = httpx.post(f"{api}/deployments/{manual_deployment}/create_flow_run", json={"parameters": wrong})
    assert refused.status_code in (409, 422), refused.text
