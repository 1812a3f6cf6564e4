"""Push payloads (GitHub, GitLab) reduced to what a pipeline run needs to know."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

BRANCH_PREFIX = "refs/heads/"
ZERO_SHA = "0" * 40


class PayloadError(ValueError):
    """A signed body that is not the push payload it claims to be (→ 400)."""


class PushEvent(BaseModel):
    provider: Literal["github", "gitlab"]
    delivery_id: str | None
    repository: str  # owner/name
    ref: str  # refs/heads/main
    sha: str  # the commit after the push
    deleted: bool = False

    @property
    def branch(self) -> str | None:
        return self.ref.removeprefix(BRANCH_PREFIX) if self.ref.startswith(BRANCH_PREFIX) else None


def _field(payload: dict[str, Any], *path: str) -> str:
    value: Any = payload
    for key in path:
        if not isinstance(value, dict) or key not in value:
            raise PayloadError(f"push payload: missing field '{'.'.join(path)}'")
        value = value[key]
    if not isinstance(value, str) or not value:
        raise PayloadError(f"push payload: field '{'.'.join(path)}' is not a non-empty string")
    return value


def github_push(payload: Any, delivery_id: str | None) -> PushEvent:
    if not isinstance(payload, dict):
        raise PayloadError("push payload: expected a JSON object")
    after = _field(payload, "after")
    return PushEvent(
        provider="github",
        delivery_id=delivery_id,
        repository=_field(payload, "repository", "full_name"),
        ref=_field(payload, "ref"),
        sha=after,
        deleted=bool(payload.get("deleted")) or after == ZERO_SHA,
    )


def gitlab_push(payload: Any, delivery_id: str | None) -> PushEvent:
    if not isinstance(payload, dict):
        raise PayloadError("push payload: expected a JSON object")
    after = _field(payload, "after")
    sha = payload.get("checkout_sha") or after
    return PushEvent(
        provider="gitlab",
        delivery_id=delivery_id,
        repository=_field(payload, "project", "path_with_namespace"),
        ref=_field(payload, "ref"),
        sha=sha,
        deleted=after == ZERO_SHA,
    )
