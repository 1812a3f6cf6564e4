"""The webhook receiver's machine-local settings, and where the Prefect API is, from the environment."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import SecretStr

from tinymlops.errors import WebhookError
from tinymlops.settings.environment import Environment
from tinymlops.settings.files import Strict

SECRET_ENV = "TINYMLOPS_WEBHOOK_SECRET"
DB_URL_ENV = "TINYMLOPS_WEBHOOK_DB_URL"
PREFECT_API_ENV = "PREFECT_API_URL"


class PrefectEnv(Strict):
    """The Prefect API that runs are queued on (PREFECT_API_URL); None: only an ephemeral one."""

    api_url: str | None = None
    home: Path | None = None  # PREFECT_HOME, where set

    @classmethod
    def from_env(cls) -> PrefectEnv:
        home = os.environ.get("PREFECT_HOME")
        return cls(api_url=os.environ.get(PREFECT_API_ENV) or None, home=Path(home) if home else None)


class WebhookEnv(Strict):
    """The receiver's machine-local settings. The home folder is resolved like Environment does,
    from --root (TINYMLOPS_HOME, else <root>/.tinymlops), never from the working directory."""

    secret: SecretStr  # never printed: SecretStr's repr is '**********'
    db_url: str
    prefect: PrefectEnv = PrefectEnv()

    @classmethod
    def from_env(cls, root: Path | str = ".") -> WebhookEnv:
        secret = os.environ.get(SECRET_ENV, "")
        if not secret.strip():
            raise WebhookError(f"{SECRET_ENV} is not set: the receiver refuses unsigned deliveries")
        home = Environment.from_env(root).home
        url = os.environ.get(DB_URL_ENV) or f"sqlite:///{home / 'webhook.db'}"
        return cls(secret=SecretStr(secret), db_url=url, prefect=PrefectEnv.from_env())
