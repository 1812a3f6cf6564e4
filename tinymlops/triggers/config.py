"""What the receiver accepts (configs/webhook.yaml) and where its secret and store come from (env)."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr

from tinymlops.errors import TinyMLOpsError
from tinymlops.settings import ConfigFile, Strict

SECRET_ENV = "TINYMLOPS_WEBHOOK_SECRET"
DB_URL_ENV = "TINYMLOPS_WEBHOOK_DB_URL"


class WebhookError(TinyMLOpsError):
    """The webhook receiver cannot start (missing secret, unusable store)."""


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

    def repository_allowed(self, repository: str) -> bool:
        return not self.repositories or repository.lower() in {r.lower() for r in self.repositories}

    def branch_allowed(self, branch: str) -> bool:
        return any(fnmatch.fnmatchcase(branch, pattern) for pattern in self.branches)


class WebhookEnv(Strict):
    """The receiver's machine-local settings, from the environment."""

    secret: SecretStr  # never printed: SecretStr's repr is '**********'
    db_url: str

    @classmethod
    def from_env(cls) -> WebhookEnv:
        secret = os.environ.get(SECRET_ENV, "")
        if not secret.strip():
            raise WebhookError(f"{SECRET_ENV} is not set: the receiver refuses unsigned deliveries")
        home = Path(os.environ.get("TINYMLOPS_HOME", ".tinymlops")).resolve()
        url = os.environ.get(DB_URL_ENV) or f"sqlite:///{home / 'webhook.db'}"
        return cls(secret=SecretStr(secret), db_url=url)
