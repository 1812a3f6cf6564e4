"""Push payloads shaped like the real ones (trimmed GitHub and GitLab documentation samples)."""

from __future__ import annotations

import json
import uuid

SHA_BEFORE = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
SHA_AFTER = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"


def github_push(repository: str = "octo-org/tinyml-app", ref: str = "refs/heads/main", after: str = SHA_AFTER) -> dict:
    owner, name = repository.split("/")
    return {
        "ref": ref,
        "before": SHA_BEFORE,
        "after": after,
        "repository": {
            "id": 186853002,
            "node_id": "MDEwOlJlcG9zaXRvcnkxODY4NTMwMDI=",
            "name": name,
            "full_name": repository,
            "private": False,
            "owner": {"name": owner, "login": owner, "id": 21031067, "type": "Organization"},
            "html_url": f"https://github.com/{repository}",
            "default_branch": "main",
        },
        "pusher": {"name": "codertocat", "email": "21031067+Codertocat@users.noreply.github.com"},
        "sender": {"login": "Codertocat", "id": 21031067, "type": "User"},
        "created": False,
        "deleted": after == "0" * 40,
        "forced": False,
        "base_ref": None,
        "compare": f"https://github.com/{repository}/compare/{SHA_BEFORE[:12]}...{after[:12]}",
        "commits": [
            {
                "id": after,
                "tree_id": "f9d2a07e9488b91af2641b26b9407fe22a451433",
                "distinct": True,
                "message": "Retrain on the new samples",
                "timestamp": "2026-11-24T21:00:00+01:00",
                "author": {"name": "Codertocat", "email": "codertocat@example.com", "username": "Codertocat"},
                "added": ["data/new.npz.dvc"],
                "removed": [],
                "modified": ["params.yaml"],
            }
        ],
        "head_commit": {"id": after, "message": "Retrain on the new samples"},
    }


def gitlab_push(project: str = "octo-group/tinyml-app", ref: str = "refs/heads/main", after: str = SHA_AFTER) -> dict:
    return {
        "object_kind": "push",
        "event_name": "push",
        "before": SHA_BEFORE,
        "after": after,
        "ref": ref,
        "ref_protected": True,
        "checkout_sha": after,
        "user_id": 4,
        "user_username": "jsmith",
        "project_id": 15,
        "project": {
            "id": 15,
            "name": project.split("/")[-1],
            "path_with_namespace": project,
            "default_branch": "main",
            "web_url": f"https://gitlab.example.com/{project}",
        },
        "commits": [{"id": after, "message": "Retrain on the new samples", "added": [], "modified": ["params.yaml"]}],
        "total_commits_count": 1,
    }


def body(payload: object) -> bytes:
    return json.dumps(payload).encode()


def github_headers(signature: str | None, event: str = "push", delivery: str | None = None) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/044aadd",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "292430182",
    }
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return headers


SECRET = "It's a Secret to Everybody"  # the secret of GitHub's documented test vector


class RecordingTrigger:
    """The injected trigger: records what it was asked to start and returns a run id."""

    def __init__(self, fail: bool = False) -> None:
        self.events: list = []
        self.fail = fail

    def __call__(self, event) -> str:
        if self.fail:
            raise ConnectionError("orchestrator unreachable")
        self.events.append(event)
        return f"run-{len(self.events)}"
