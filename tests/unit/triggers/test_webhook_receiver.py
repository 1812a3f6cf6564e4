"""The receiver's answers, through real HTTP requests against the app, with a real SQLite store."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from fastapi.testclient import TestClient

from tests.support.webhook_payloads import (
    SECRET,
    SHA_AFTER,
    RecordingTrigger,
    body,
    github_headers,
    github_push,
    gitlab_push,
)
from tinymlops.triggers import DeliveryStore, WebhookConfig, create_app
from tinymlops.triggers.signature import github_signature

CONFIG = WebhookConfig(repositories=["octo-org/tinyml-app", "octo-group/tinyml-app"], branches=["main", "release/*"])


def make_client(db_url: str, trigger: RecordingTrigger, config: WebhookConfig = CONFIG) -> TestClient:
    return TestClient(create_app(config, SECRET, DeliveryStore(db_url), trigger))


def post_github(client: TestClient, payload: object, event: str = "push", delivery: str | None = None, sign=True):
    raw = payload if isinstance(payload, bytes) else body(payload)
    signature = github_signature(SECRET, raw) if sign else None
    return client.post("/webhooks/github", content=raw, headers=github_headers(signature, event, delivery))


@pytest.fixture
def trigger() -> RecordingTrigger:
    return RecordingTrigger()


@pytest.fixture
def client(db_url: str, trigger: RecordingTrigger) -> TestClient:
    return make_client(db_url, trigger)


def test_signed_push_to_main_triggers_one_run(client: TestClient, trigger: RecordingTrigger) -> None:
    reply = post_github(client, github_push())
    assert reply.status_code == 202
    assert reply.json() == {
        "status": "triggered",
        "run_id": "run-1",
        "deployment": "pipeline/manual",
        "repository": "octo-org/tinyml-app",
        "ref": "refs/heads/main",
        "sha": SHA_AFTER,
    }
    [event] = trigger.events
    assert (event.provider, event.repository, event.branch, event.sha) == (
        "github",
        "octo-org/tinyml-app",
        "main",
        SHA_AFTER,
    )


def test_branch_glob_matches(client: TestClient, trigger: RecordingTrigger) -> None:
    assert post_github(client, github_push(ref="refs/heads/release/1.2")).json()["status"] == "triggered"
    assert trigger.events[0].branch == "release/1.2"


@pytest.mark.parametrize("signature", [None, "sha256=" + "0" * 64, "garbage"], ids=["missing", "wrong", "malformed"])
def test_bad_signature_is_401_and_starts_nothing(client: TestClient, trigger: RecordingTrigger, signature) -> None:
    reply = client.post("/webhooks/github", content=body(github_push()), headers=github_headers(signature))
    assert reply.status_code == 401
    assert reply.json()["status"] == "rejected"
    assert trigger.events == []


def test_signature_of_another_body_is_401(client: TestClient, trigger: RecordingTrigger) -> None:
    signed = body(github_push())
    tampered = body(github_push(after="f" * 40))
    reply = client.post("/webhooks/github", content=tampered, headers=github_headers(github_signature(SECRET, signed)))
    assert reply.status_code == 401 and trigger.events == []


@pytest.mark.parametrize(
    ("payload", "event", "reason"),
    [
        (github_push(), "ping", "event 'ping' is not a push"),
        (github_push(), "pull_request", "event 'pull_request' is not a push"),
        (github_push(ref="refs/heads/feature/x"), "push", "branch 'feature/x' is not configured"),
        (github_push(ref="refs/tags/v1.0"), "push", "ref 'refs/tags/v1.0' is not a branch"),
        (github_push(after="0" * 40), "push", "branch 'main' was deleted"),
        (github_push(repository="someone/else"), "push", "repository 'someone/else' is not configured"),
    ],
    ids=["ping", "pull_request", "other_branch", "tag", "deleted_branch", "other_repository"],
)
def test_ignored_with_reason_and_no_run(client, trigger, payload, event, reason) -> None:
    reply = post_github(client, payload, event=event)
    assert reply.status_code == 202
    assert reply.json()["status"] == "ignored"
    assert reply.json()["reason"] == reason
    assert trigger.events == []


def test_body_over_limit_is_413_even_when_signed(db_url: str, trigger: RecordingTrigger) -> None:
    client = make_client(db_url, trigger, CONFIG.model_copy(update={"max_body_bytes": 2048}))
    payload = github_push()
    payload["commits"][0]["message"] = "x" * 4096
    reply = post_github(client, payload)
    assert reply.status_code == 413
    assert "2048" in reply.json()["reason"]
    assert trigger.events == []


def test_body_over_limit_without_content_length_is_413(db_url: str, trigger: RecordingTrigger) -> None:
    client = make_client(db_url, trigger, CONFIG.model_copy(update={"max_body_bytes": 2048}))
    chunks = iter([b"{" + b" " * 1500, b" " * 1500 + b"}"])  # streamed: chunked encoding, no length header
    reply = client.post("/webhooks/github", content=chunks, headers=github_headers("sha256=" + "0" * 64))
    assert reply.status_code == 413 and trigger.events == []


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"ref": "refs/heads/main", "after": ', "body is not valid JSON"),
        (b"[1, 2, 3]", "push payload: expected a JSON object"),
        (json.dumps({"ref": "refs/heads/main", "after": SHA_AFTER}).encode(), "missing field 'repository.full_name'"),
    ],
    ids=["truncated", "array", "no_repository"],
)
def test_malformed_body_is_400(client: TestClient, trigger: RecordingTrigger, raw: bytes, reason: str) -> None:
    reply = post_github(client, raw)
    assert reply.status_code == 400
    assert reason in reply.json()["reason"]
    assert trigger.events == []


def test_redelivery_is_recognised_after_a_restart(db_url: str, trigger: RecordingTrigger) -> None:
    delivery = str(uuid.uuid4())
    first = post_github(make_client(db_url, trigger), github_push(), delivery=delivery)
    assert first.json()["status"] == "triggered"
    restarted = make_client(db_url, trigger)  # a new app and engine over the same database file
    again = post_github(restarted, github_push(), delivery=delivery)
    assert again.status_code == 202
    assert again.json()["status"] == "duplicate"
    assert again.json()["run_id"] == "run-1"
    assert len(trigger.events) == 1
    # a new push (another commit) under a new delivery id runs; the same push replayed does not
    newer = github_push(after="1" * 40)
    assert post_github(restarted, newer, delivery=str(uuid.uuid4())).json()["status"] == "triggered"


def test_failed_trigger_is_502_and_a_redelivery_may_retry(db_url: str) -> None:
    delivery = str(uuid.uuid4())
    failing = make_client(db_url, RecordingTrigger(fail=True))
    reply = post_github(failing, github_push(), delivery=delivery)
    assert reply.status_code == 502 and reply.json()["status"] == "failed"
    assert SECRET not in reply.text
    working = RecordingTrigger()
    assert post_github(make_client(db_url, working), github_push(), delivery=delivery).json()["status"] == "triggered"
    assert len(working.events) == 1


def test_missing_delivery_id_is_400(client: TestClient, trigger: RecordingTrigger) -> None:
    raw = body(github_push())
    headers = github_headers(github_signature(SECRET, raw))
    del headers["X-GitHub-Delivery"]
    assert client.post("/webhooks/github", content=raw, headers=headers).status_code == 400
    assert trigger.events == []


def gitlab_headers(token: str | None, event: str = "Push Hook", uuid_: str | None = None) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "X-Gitlab-Event": event,
        "X-Gitlab-Event-UUID": uuid_ or str(uuid.uuid4()),
    }
    if token is not None:
        headers["X-Gitlab-Token"] = token
    return headers


def test_gitlab_push_with_token_triggers(client: TestClient, trigger: RecordingTrigger) -> None:
    reply = client.post("/webhooks/gitlab", content=body(gitlab_push()), headers=gitlab_headers(SECRET))
    assert reply.status_code == 202 and reply.json()["status"] == "triggered"
    assert trigger.events[0].repository == "octo-group/tinyml-app"
    assert trigger.events[0].provider == "gitlab"


def test_gitlab_rejections(client: TestClient, trigger: RecordingTrigger) -> None:
    raw = body(gitlab_push())
    assert client.post("/webhooks/gitlab", content=raw, headers=gitlab_headers("wrong")).status_code == 401
    assert client.post("/webhooks/gitlab", content=raw, headers=gitlab_headers(None)).status_code == 401
    tag = client.post("/webhooks/gitlab", content=raw, headers=gitlab_headers(SECRET, "Tag Push Hook"))
    assert tag.status_code == 202 and tag.json()["status"] == "ignored"
    delivery = str(uuid.uuid4())
    assert (
        client.post("/webhooks/gitlab", content=raw, headers=gitlab_headers(SECRET, uuid_=delivery)).status_code == 202
    )
    dup = client.post("/webhooks/gitlab", content=raw, headers=gitlab_headers(SECRET, uuid_=delivery))
    assert dup.json()["status"] == "duplicate"
    assert len(trigger.events) == 1


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


class SlowTrigger(RecordingTrigger):
    """Holds the trigger until released, like an orchestrator that answers late."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__(fail=fail)
        self.release = threading.Event()
        self.finished = threading.Event()

    def __call__(self, event) -> str:
        try:
            self.release.wait(timeout=30)
            return super().__call__(event)
        finally:
            self.finished.set()


def settled(store: DeliveryStore, delivery: str, expect_run: bool) -> None:
    for _ in range(200):  # the trigger's thread records after returning
        if (store.run_of("github", delivery) is not None) == expect_run:
            return
        time.sleep(0.02)
    raise AssertionError(f"delivery {delivery} not settled")


@pytest.mark.parametrize("fail", [False, True], ids=["run_recorded_later", "failure_releases_later"])
def test_slow_orchestrator_gets_accepted_and_the_thread_settles(db_url: str, fail: bool) -> None:
    trigger = SlowTrigger(fail=fail)
    config = CONFIG.model_copy(update={"answer_within_seconds": 0.05})
    store = DeliveryStore(db_url)
    delivery = str(uuid.uuid4())
    with TestClient(create_app(config, SECRET, store, trigger)) as client:
        reply = post_github(client, github_push(), delivery=delivery)
        assert reply.status_code == 202 and reply.json()["status"] == "accepted"
        assert "run_id" not in reply.json()
        trigger.release.set()
        assert trigger.finished.wait(timeout=30)
    if fail:  # released: a redelivery may start the run
        again = post_github(make_client(db_url, RecordingTrigger()), github_push(), delivery=delivery)
        assert again.json()["status"] == "triggered"
    else:
        settled(store, delivery, expect_run=True)
        again = post_github(make_client(db_url, RecordingTrigger()), github_push(), delivery=delivery)
        assert again.json()["status"] == "duplicate" and again.json()["run_id"] == "run-1"
