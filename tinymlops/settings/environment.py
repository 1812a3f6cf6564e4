"""The machine-local environment: the one place that reads os.environ."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

from tinymlops.errors import ConfigError
from tinymlops.settings.files import Strict

KEY_PASSPHRASE_ENV = "TINYMLOPS_KEY_PASSPHRASE"
TASK_RUNNER_ENV = "TINYMLOPS_TASK_RUNNER"
TASK_WORKERS_ENV = "TINYMLOPS_TASK_WORKERS"
DASK_ADDRESS_ENV = "TINYMLOPS_DASK_ADDRESS"


class TaskRunnerSettings(Strict):
    """Which Prefect task runner fans tasks out: threads on one machine, Dask at scale."""

    kind: Literal["thread", "dask"] = "thread"
    workers: int | None = None  # None: the runner's default
    dask_address: str | None = None  # a running scheduler (tcp://host:8786); None: a LocalCluster

    @classmethod
    def from_env(cls) -> TaskRunnerSettings:
        kind = os.environ.get(TASK_RUNNER_ENV, "thread").strip().lower() or "thread"
        if kind not in ("thread", "dask"):
            raise ConfigError(f"{TASK_RUNNER_ENV}: expected 'thread' or 'dask', got {kind!r}")
        workers = os.environ.get(TASK_WORKERS_ENV)
        if workers is not None and not (workers.isdigit() and int(workers) > 0):
            raise ConfigError(f"{TASK_WORKERS_ENV}: expected a positive integer, got {workers!r}")
        return cls.model_validate(
            {
                "kind": kind,
                "workers": int(workers) if workers else None,
                "dask_address": os.environ.get(DASK_ADDRESS_ENV) or None,
            }
        )


def key_passphrase() -> str | None:
    """The passphrase of the local signing keys, if they are protected (a secret: never printed)."""
    return os.environ.get(KEY_PASSPHRASE_ENV) or None


def use_local_prefect(home: Path) -> None:
    """Point Prefect (which reads its settings from the environment) at this project's local
    database, unless the user chose another. Its home must exist; its first migration can outlast
    the default ephemeral start-up wait on a small machine; telemetry cannot reach anyone from a
    closed network and races that migration for SQLite."""
    os.environ.setdefault("PREFECT_HOME", str(home))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


class Environment(Strict):
    """Machine-local locations, from the environment. Nothing here changes the model."""

    root: Path
    home: Path
    tracking_uri: str
    dvc_remote: str | None = None
    fleet_url: str | None = None  # a fleet server to roll out on; None: a simulated fleet per rollout
    fleet_admin_token: SecretStr | None = None  # its admin token (a secret: never printed)

    @classmethod
    def from_env(cls, root: Path | str = ".") -> Environment:
        root = Path(root).resolve()
        home = Path(os.environ.get("TINYMLOPS_HOME", root / ".tinymlops")).resolve()
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
        token = os.environ.get("TINYMLOPS_FLEET_ADMIN_TOKEN")
        return cls(
            root=root,
            home=home,
            tracking_uri=uri,
            dvc_remote=os.environ.get("TINYMLOPS_DVC_REMOTE"),
            fleet_url=os.environ.get("TINYMLOPS_FLEET_URL") or None,
            fleet_admin_token=SecretStr(token) if token else None,
        )

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"
