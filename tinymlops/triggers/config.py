"""What the receiver accepts (configs/webhook.yaml). Its secret and store come from the environment,
read by tinymlops.settings.WebhookEnv (re-exported here)."""

from __future__ import annotations

import fnmatch
from typing import ClassVar

from pydantic import Field

from tinymlops.errors import WebhookError
from tinymlops.settings import ConfigFile, WebhookEnv

__all__ = ["WebhookConfig", "WebhookEnv", "WebhookError"]


class WebhookConfig(ConfigFile):
    """configs/webhook.yaml: which pushes start a pipeline run."""

    FILE: ClassVar[str] = "webhook.yaml"
    repositories: list[str] = Field(
        default_factory=list,
        description="'owner/name' (GitHub) or 'group/project' (GitLab); empty accepts any signed repository",
    )
    branches: list[str] = Field(
        default_factory=lambda: ["main"], description="branch names or glob patterns (release/*)"
    )
    deployment: str = Field("pipeline/manual", description="Prefect deployment that a push runs")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="larger bodies are refused with 413")
    answer_within_seconds: float = Field(
        0.8, gt=0, le=9, description="answer 202 'accepted' if the run is not created by then (GitHub waits 10 s)"
    )
    retry_seconds: float = Field(30, gt=0, description="how often accepted pushes without a run are retried")

    def repository_allowed(self, repository: str) -> bool:
        return not self.repositories or repository.lower() in {r.lower() for r in self.repositories}

    def branch_allowed(self, branch: str) -> bool:
        return any(fnmatch.fnmatchcase(branch, pattern) for pattern in self.branches)
