"""The webhook receiver under the red-team findings of issue 14, one test per attack."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.support.cli_helpers import run_cli
from tests.support.webhook_payloads import SECRET, RecordingTrigger, body, github_headers, github_push, gitlab_push
from tinymlops.triggers import DeliveryStore, WebhookConfig, create_app
from tinymlops.triggers.signature import github_signature

CONFIG = WebhookConfig(repositories=["octo-org/tinyml-app", "octo-group/tinyml-app"], branches=["main"])


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'webhook.db'}"


def signed(raw: bytes, delivery: str | None = None) -> dict[str, str]:
    return github_headers(github_signature(SECRET, raw), "push", delivery or str(uuid.uuid4()))


def test_captured_github_delivery_replayed_with_a_new_delivery_id_starts_nothing(db_url: str) -> None:
    trigger = RecordingTrigger()
    client = TestClient(create_app(CONFIG, SECRET, DeliveryStore(db_url), trigger))
    raw = body(github_push())
    first = client.post("/webhooks/github", content=raw, headers=signed(raw))
    assert first.json()["status"] == "triggered"
    for _ in range(3):  # the attacker's replays, each with a fresh X-GitHub-Delivery
        replay = client.post("/webhooks/github", content=raw, headers=signed(raw))
        assert replay.status_code == 202 and replay.json()["status"] == "duplicate"
        assert replay.json()["run_id"] == first.json()["run_id"]
    assert len(trigger.events) == 1


def test_gitlab_push_without_a_uuid_is_deduplicated(db_url: str) -> None:
    trigger = RecordingTrigger()
    client = TestClient(create_app(CONFIG, SECRET, DeliveryStore(db_url), trigger))
    raw = body(gitlab_push())
    headers = {"Content-Type": "application/json", "X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET}
    answers = [client.post("/webhooks/gitlab", content=raw, headers=headers).json()["status"] for _ in range(3)]
    assert answers == ["triggered", "duplicate", "duplicate"] and len(trigger.events) == 1


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 200_000 + b"]" * 200_000,
        b'{"ref": "refs/heads/main", "after": NaN}',
        b'{"ref": "refs/heads/main", "after": Infinity}',
    ],
    ids=["deeply_nested", "nan", "infinity"],
)
def test_deeply_nested_or_non_finite_json_with_a_valid_signature_is_400(db_url: str, raw: bytes) -> None:
    trigger = RecordingTrigger()
    config = CONFIG.model_copy(update={"max_body_bytes": 1_048_576})
    client = TestClient(create_app(config, SECRET, DeliveryStore(db_url), trigger))
    reply = client.post("/webhooks/github", content=raw, headers=signed(raw))
    assert reply.status_code == 400 and trigger.events == []


def test_accepted_push_whose_run_cannot_be_created_is_kept_and_retried(db_url: str) -> None:
    """202 "accepted" means stored: a trigger that fails after the answer leaves the push for the
    receiver's retry, which creates the run once the orchestrator is back."""
    import threading
    import time

    class Flaky(RecordingTrigger):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0
            self.gate = threading.Event()

        def __call__(self, event):  # type: ignore[no-untyped-def]
            self.calls += 1
            if self.calls == 1:
                self.gate.wait(5)
                raise ConnectionError("orchestrator away")
            return super().__call__(event)

    trigger = Flaky()
    config = CONFIG.model_copy(update={"answer_within_seconds": 0.05, "retry_seconds": 0.2})
    store = DeliveryStore(db_url)
    raw = body(github_push())
    with TestClient(create_app(config, SECRET, store, trigger)) as client:
        reply = client.post("/webhooks/github", content=raw, headers=signed(raw))
        assert reply.status_code == 202 and reply.json()["status"] == "accepted"
        trigger.gate.set()
        for _ in range(100):
            if trigger.events:
                break
            time.sleep(0.05)
    assert len(trigger.events) == 1
    assert store.run_of_push(trigger.events[0]) == "run-1"


def test_webhook_serve_without_a_reachable_prefect_server_refuses_to_start(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TINYMLOPS_WEBHOOK_SECRET", "s3cret")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    code, _, err = run_cli(monkeypatch, capsys, "webhook", "serve", "--root", project)
    assert code == 1 and err.count("\n") == 1 and "PREFECT_API_URL is not set" in err
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    code, _, err = run_cli(monkeypatch, capsys, "webhook", "serve", "--root", project)
    assert code == 1 and err.count("\n") == 1 and "no Prefect server reachable at http://127.0.0.1:9/api" in err


def test_deploy_without_a_reachable_prefect_server_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    code, _, err = run_cli(monkeypatch, capsys, "deploy")
    assert code == 1 and err.count("\n") == 1 and "no Prefect server reachable" in err
    monkeypatch.delenv("PREFECT_API_URL")
    code, _, err = run_cli(monkeypatch, capsys, "deploy")
    assert code == 1 and "PREFECT_API_URL is not set" in err


def test_webhook_openapi_documents_the_push_routes(db_url: str) -> None:
    client = TestClient(create_app(CONFIG, SECRET, DeliveryStore(db_url), RecordingTrigger()))
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/webhooks/github"]["post"]
    assert {"202", "400", "401", "413", "502"} <= set(op["responses"])
    assert "application/json" in op["requestBody"]["content"]
    assert json.dumps(spec)
